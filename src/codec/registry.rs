//! Schema registry settings and the client built from them.

use std::path::PathBuf;
use std::time::Duration;

use schema_registry_converter::blocking::schema_registry::SrSettings;
use serde::{Deserialize, Serialize};

/// How Avro subjects are named (Confluent's subject name strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value`: one schema per topic. The default, as in Confluent's
    /// serializers.
    #[default]
    TopicName,
    /// The record's full name: one schema per record type, across topics.
    RecordName,
    /// `<topic>-<record full name>`: several record types per topic.
    TopicRecordName,
}

/// How to reach a Confluent-compatible schema registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API, e.g. `http://registry:8081` (Confluent) or
    /// `http://registry:8080/apis/ccompat/v7` (Apicurio).
    pub url: String,
    /// Basic-auth user name (for Confluent Cloud: the API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password (for Confluent Cloud: the API secret). Never logged or printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the registry's certificate (default: the system's CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_location: Option<PathBuf>,
    /// PEM file of a client certificate, for mutual TLS (with `key_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_location: Option<PathBuf>,
    /// PEM file of the client certificate's PKCS#8 private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_location: Option<PathBuf>,
    /// How output subjects are named.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
    /// Timeout of one HTTP request (connect and read).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an unreachable registry is retried, with backoff, before the stage stops with an
    /// error. Must stay below `transaction_timeout`, since the open transaction waits meanwhile.
    #[serde(default = "default_unavailable_timeout", with = "humantime_serde")]
    pub unavailable_timeout: Duration,
}

/// 10 s: long enough for a loaded registry, short enough to retry a dead connection soon.
pub(crate) fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 30 s: half of the default transaction timeout.
pub(crate) fn default_unavailable_timeout() -> Duration {
    Duration::from_secs(30)
}

impl RegistryConfig {
    /// Settings for `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            subject_name_strategy: SubjectNameStrategy::default(),
            request_timeout: default_request_timeout(),
            unavailable_timeout: default_unavailable_timeout(),
        }
    }

    /// The client settings; errors name the config key at fault.
    pub(crate) fn client(&self) -> Result<SrSettings, String> {
        let url = self.url.trim_end_matches('/').to_string();
        let mut builder = SrSettings::new_builder(url);
        builder.set_timeout(self.request_timeout);
        if let Some(user) = &self.username {
            builder.set_basic_authorization(user, self.password.as_deref());
        }
        let mut http = reqwest::blocking::Client::builder();
        if let Some(path) = &self.ca_location {
            let pem = read(path, "schema_registry.ca_location")?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("schema_registry.ca_location: {}: {e}", path.display()))?;
            http = http.add_root_certificate(ca);
        }
        match (&self.certificate_location, &self.key_location) {
            (Some(cert), Some(key)) => {
                let cert_pem = read(cert, "schema_registry.certificate_location")?;
                let key_pem = read(key, "schema_registry.key_location")?;
                let identity = reqwest::Identity::from_pkcs8_pem(&cert_pem, &key_pem)
                    .map_err(|e| format!("schema_registry.key_location: {e}"))?;
                http = http.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(
                    "schema_registry.certificate_location and key_location go together".to_string(),
                )
            }
        }
        builder
            .build_with(http)
            .map_err(|e| format!("schema_registry.url: {e}"))
    }
}

fn read(path: &PathBuf, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::config::REDACTED),
            )
            .field("subject_name_strategy", &self.subject_name_strategy)
            .field("request_timeout", &self.request_timeout)
            .field("unavailable_timeout", &self.unavailable_timeout)
            .finish_non_exhaustive()
    }
}
