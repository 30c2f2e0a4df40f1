//! How a stage connects to Kafka: TLS and SASL, mapped onto librdkafka's `security.protocol`,
//! `sasl.*` and `ssl.*` settings for both clients.

use std::path::PathBuf;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::REDACTED;

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL (librdkafka's default).
    #[default]
    Plaintext,
    /// TLS, optionally with a client certificate (mutual TLS).
    Ssl,
    /// SASL without TLS: credentials cross the network in the clear with PLAIN.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// The SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SaslMechanism {
    /// User name and password sent as they are (use with TLS).
    #[serde(rename = "PLAIN")]
    #[value(name = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The `[security]` section.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// The SASL mechanism; required with the `sasl_*` protocols.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SASL password. Never logged or printed; prefer `KSTAGE_SASL_PASSWORD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (default: the system's CAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_location: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_location: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_location: Option<PathBuf>,
    /// Password of the private key, if it is encrypted. Never logged or printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_password: Option<String>,
}

/// librdkafka settings that `[security]` owns: giving them in `kafka`, `consumer` or `producer`
/// as well is ambiguous and refused.
pub const SECURITY_KAFKA_KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
];

impl SecurityConfig {
    /// Whether any setting differs from plaintext defaults.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Adds the librdkafka settings.
    pub(crate) fn apply(&self, client: &mut ClientConfig) {
        if !self.is_set() {
            return;
        }
        client.set("security.protocol", self.protocol.librdkafka());
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let settings = [
            (
                "sasl.mechanism",
                self.sasl_mechanism.map(|m| m.librdkafka().to_string()),
            ),
            ("sasl.username", self.username.clone()),
            ("sasl.password", self.password.clone()),
            ("ssl.ca.location", self.ca_location.as_ref().map(path)),
            (
                "ssl.certificate.location",
                self.certificate_location.as_ref().map(path),
            ),
            ("ssl.key.location", self.key_location.as_ref().map(path)),
            ("ssl.key.password", self.key_password.clone()),
        ];
        for (key, value) in settings {
            if let Some(value) = value {
                client.set(key, value);
            }
        }
    }

    /// Cross-field rules.
    pub(crate) fn check(&self, errors: &mut Vec<ConfigError>) {
        if self.protocol.uses_sasl() {
            if self.sasl_mechanism.is_none() {
                errors.push(ConfigError::new(
                    "security.sasl_mechanism",
                    "missing; the sasl_* protocols need PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
            if self.username.as_deref().is_none_or(str::is_empty) {
                errors.push(ConfigError::new(
                    "security.username",
                    "missing; SASL needs a user",
                ));
            }
            if self.password.is_none() {
                errors.push(ConfigError::new(
                    "security.password",
                    "missing; SASL needs a password (set KSTAGE_SASL_PASSWORD)",
                ));
            }
        } else if self.sasl_mechanism.is_some() || self.username.is_some() {
            errors.push(ConfigError::new(
                "security.protocol",
                format!(
                    "is {}, but SASL settings are given; use sasl_ssl or sasl_plaintext",
                    self.protocol.librdkafka()
                ),
            ));
        }
        let tls_files = [
            &self.ca_location,
            &self.certificate_location,
            &self.key_location,
        ];
        if !self.protocol.uses_tls() && tls_files.iter().any(|f| f.is_some()) {
            errors.push(ConfigError::new(
                "security.protocol",
                format!(
                    "is {}, but TLS files are given; use ssl or sasl_ssl",
                    self.protocol.librdkafka()
                ),
            ));
        }
        if self.certificate_location.is_some() != self.key_location.is_some() {
            errors.push(ConfigError::new(
                "security.key_location",
                "certificate_location and key_location go together (mutual TLS)",
            ));
        }
        for (key, file) in [
            ("security.ca_location", &self.ca_location),
            ("security.certificate_location", &self.certificate_location),
            ("security.key_location", &self.key_location),
        ] {
            if let Some(path) = file {
                if !path.is_file() {
                    errors.push(ConfigError::new(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
    }

    /// A copy with the passwords replaced.
    pub(crate) fn redacted(&self) -> Self {
        let hide = |secret: &Option<String>| secret.as_ref().map(|_| REDACTED.to_string());
        Self {
            password: hide(&self.password),
            key_password: hide(&self.key_password),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.redacted();
        f.debug_struct("SecurityConfig")
            .field("protocol", &shown.protocol)
            .field("sasl_mechanism", &shown.sasl_mechanism)
            .field("username", &shown.username)
            .field("password", &shown.password)
            .field("ca_location", &shown.ca_location)
            .field("certificate_location", &shown.certificate_location)
            .field("key_location", &shown.key_location)
            .field("key_password", &shown.key_password)
            .finish()
    }
}
