//! Keeps secrets out of logs and printed configuration.

use std::collections::BTreeMap;

use super::StageConfig;

/// Fragments of setting names whose values are secrets (librdkafka's `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`,
/// registry credentials, ...).
const SECRET_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "secret",
    "jaas",
    "key.pem",
    "token",
    "credential",
    "basic.auth",
];

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether a setting's value must never be shown.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS
        .iter()
        .any(|fragment| key.contains(fragment))
}

/// A copy of the config with every secret value replaced by [`REDACTED`], safe to log or print.
pub fn redacted(config: &StageConfig) -> StageConfig {
    let scrub = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) {
                    REDACTED.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    };
    StageConfig {
        params: scrub(&config.params),
        kafka: scrub(&config.kafka),
        consumer: scrub(&config.consumer),
        producer: scrub(&config.producer),
        security: config.security.redacted(),
        sink: config.sink.as_ref().map(crate::sink::SinkConfig::redacted),
        schema_registry: config.schema_registry.clone().map(|mut registry| {
            if registry.password.is_some() {
                registry.password = Some(REDACTED.to_string());
            }
            registry
        }),
        ..config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let mut config = StageConfig::default();
        config
            .kafka
            .insert("sasl.password".into(), "hunter2".into());
        config.kafka.insert("sasl.username".into(), "alice".into());
        config
            .producer
            .insert("ssl.key.password".into(), "s3cret".into());
        config.params.insert("api_token".into(), "t0k".into());
        config.security.password = Some("sasl-pw".into());
        config.security.key_password = Some("key-pw".into());
        let mut registry = crate::codec::RegistryConfig::new("http://registry");
        registry.password = Some("r3g".into());
        config.schema_registry = Some(registry);
        let shown = format!("{:?}", redacted(&config));
        for secret in ["hunter2", "s3cret", "t0k", "r3g", "sasl-pw", "key-pw"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("alice"));
    }
}
