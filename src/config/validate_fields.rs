//! The per-field checks behind [`StageConfig::static_errors`]: the commit policy, the poison
//! policy, the codecs, the timeouts (and the commit watchdog against `max.poll.interval.ms`) and
//! the librdkafka maps. Each pushes a [`ConfigError`] that names its key and what would be valid;
//! none stops at the first problem.

use std::time::Duration;

use super::{check_topic_name, ConfigError, RESERVED_KAFKA_KEYS};
use crate::codec::Format;
use crate::config::{CommitPolicy, DeliveryMode, PoisonPolicy, StageConfig};
use crate::engine::WATCHDOG_FACTOR;

impl StageConfig {
    /// `target_latency` goes with `commit_policy = "target_latency"`, and no further than
    /// `commit_interval`, which bounds every transaction anyway.
    pub(super) fn check_commit_policy(&self, errors: &mut Vec<ConfigError>) {
        let policy = self.commit_policy;
        match (policy, self.target_latency) {
            (CommitPolicy::TargetLatency, None) => errors.push(ConfigError::new(
                "target_latency",
                "is required by commit_policy = \"target_latency\" (e.g. 20ms)",
            )),
            (CommitPolicy::TargetLatency, Some(target)) => {
                if target.is_zero() {
                    errors.push(ConfigError::new(
                        "target_latency",
                        "must be greater than 0 (e.g. 20ms)",
                    ));
                } else if target > self.commit_interval {
                    errors.push(ConfigError::new(
                        "target_latency",
                        format!(
                            "{} is above commit_interval ({}), the longest any transaction \
                             stays open; lower it or raise commit_interval",
                            humantime::format_duration(target),
                            humantime::format_duration(self.commit_interval)
                        ),
                    ));
                }
            }
            (_, Some(_)) => errors.push(ConfigError::new(
                "target_latency",
                format!(
                    "applies to commit_policy = \"target_latency\" only (commit_policy is \
                     \"{}\"); set commit_policy = \"target_latency\" or remove it",
                    policy.as_str()
                ),
            )),
            (_, None) => {}
        }
    }

    pub(super) fn check_poison_policy(&self, errors: &mut Vec<ConfigError>) {
        match (self.poison_policy, &self.dead_letter_topic) {
            (PoisonPolicy::DeadLetter, None) => errors.push(ConfigError::new(
                "dead_letter_topic",
                "missing; poison_policy dead_letter needs a topic (--dead-letter-topic TOPIC)",
            )),
            (PoisonPolicy::DeadLetter, Some(topic)) => {
                if let Err(message) = check_topic_name(topic) {
                    errors.push(ConfigError::new("dead_letter_topic", message));
                }
                if self.inputs.contains(topic) || self.outputs.values().any(|t| t == topic) {
                    errors.push(ConfigError::new(
                        "dead_letter_topic",
                        format!("{topic:?} is also an input or output topic; give it its own"),
                    ));
                }
            }
            (policy, Some(_)) => errors.push(ConfigError::new(
                "dead_letter_topic",
                format!(
                    "is set, but poison_policy is {}; set poison_policy = \"dead_letter\" or \
                     remove it",
                    policy.as_str()
                ),
            )),
            (_, None) => {}
        }
        for (topic, count) in &self.expected_partitions {
            let used = self.inputs.contains(topic)
                || self.outputs.values().any(|t| t == topic)
                || self.dead_letter_topic.as_ref() == Some(topic);
            if !used || *count == 0 {
                errors.push(ConfigError::new(
                    format!("expected_partitions.{topic}"),
                    "must name an input, output or dead-letter topic of this stage, with a count \
                     of at least 1",
                ));
            }
        }
        if self.max_value_bytes == 0 {
            errors.push(ConfigError::new("max_value_bytes", "must be at least 1"));
        }
    }

    pub(super) fn check_codecs(&self, errors: &mut Vec<ConfigError>) {
        let uses_avro = std::iter::once(&self.default_format)
            .chain(self.formats.values())
            .any(|f| f.key == Format::Avro || f.value == Format::Avro);
        match &self.schema_registry {
            None if uses_avro => errors.push(ConfigError::new(
                "schema_registry.url",
                "missing; an avro format needs a schema registry (--schema-registry-url URL)",
            )),
            None => {}
            Some(registry) => {
                if !(registry.url.starts_with("http://") || registry.url.starts_with("https://")) {
                    errors.push(ConfigError::new(
                        "schema_registry.url",
                        format!("{:?} is not an http:// or https:// URL", registry.url),
                    ));
                }
                if registry.unavailable_timeout >= self.transaction_timeout {
                    errors.push(ConfigError::new(
                        "schema_registry.unavailable_timeout",
                        format!(
                            "{} must be below transaction_timeout ({}): the open transaction \
                             waits while the registry is retried",
                            humantime::format_duration(registry.unavailable_timeout),
                            humantime::format_duration(self.transaction_timeout)
                        ),
                    ));
                }
            }
        }
    }

    pub(super) fn check_timeouts(&self, errors: &mut Vec<ConfigError>) {
        let txn_ms = self.transaction_timeout.as_millis();
        if self.transaction_timeout < Duration::from_secs(1) {
            errors.push(ConfigError::new(
                "transaction_timeout",
                "must be at least 1s (librdkafka's minimum transaction.timeout.ms is 1000)",
            ));
        }
        if self.commit_interval >= self.transaction_timeout {
            errors.push(ConfigError::new(
                "commit_interval",
                format!(
                    "{} must be shorter than transaction_timeout ({}), or every transaction \
                     times out before it commits",
                    humantime::format_duration(self.commit_interval),
                    humantime::format_duration(self.transaction_timeout)
                ),
            ));
        }
        match self.max_poll_interval_ms() {
            Err(e) => errors.push(e),
            Ok(max_poll) if txn_ms >= u128::from(max_poll) => errors.push(ConfigError::new(
                "transaction_timeout",
                format!(
                    "{txn_ms} ms must be below max.poll.interval.ms ({max_poll} ms): a stage that \
                     stops polling must lose its partitions before its transaction can be \
                     aborted by the broker"
                ),
            )),
            // The worker does not poll while it waits for a transactional call, which the
            // watchdog bounds at WATCHDOG_FACTOR transaction timeouts: past max.poll.interval.ms
            // the consumer would leave the group in the middle of every slow commit.
            Ok(max_poll)
                if self.delivery == DeliveryMode::ExactlyOnce
                    && txn_ms * u128::from(WATCHDOG_FACTOR) >= u128::from(max_poll) =>
            {
                errors.push(ConfigError::new(
                    "transaction_timeout",
                    format!(
                        "{txn_ms} ms is more than 1/{WATCHDOG_FACTOR} of max.poll.interval.ms \
                         ({max_poll} ms): the worker waits up to {WATCHDOG_FACTOR} transaction \
                         timeouts for a transactional call (the commit watchdog) without \
                         polling, and must not leave the group meanwhile; lower \
                         transaction_timeout or raise max.poll.interval.ms"
                    ),
                ))
            }
            Ok(_) => {}
        }
        if let Some((section, raw)) = self.producer_setting("message.timeout.ms") {
            match raw.parse::<u128>() {
                Ok(ms) if ms > txn_ms => errors.push(ConfigError::new(
                    format!("{section}.message.timeout.ms"),
                    format!("{ms} ms must not exceed transaction_timeout ({txn_ms} ms)"),
                )),
                Ok(_) => {}
                Err(_) => errors.push(ConfigError::new(
                    format!("{section}.message.timeout.ms"),
                    format!("{raw:?} is not a number of milliseconds"),
                )),
            }
        }
    }

    pub(super) fn check_kafka_maps(&self, errors: &mut Vec<ConfigError>) {
        let sections = [
            ("kafka", &self.kafka),
            ("consumer", &self.consumer),
            ("producer", &self.producer),
        ];
        for (section, map) in sections {
            for key in map.keys() {
                if let Some((_, why)) = RESERVED_KAFKA_KEYS.iter().find(|(k, _)| k == key) {
                    errors.push(ConfigError::new(
                        format!("{section}.{key}"),
                        format!("kstage sets this itself ({why}); remove it"),
                    ));
                }
                if self.security.is_set()
                    && crate::config::SECURITY_KAFKA_KEYS.contains(&key.as_str())
                {
                    errors.push(ConfigError::new(
                        format!("{section}.{key}"),
                        "is also set by [security]; give it in one place only",
                    ));
                }
            }
        }
    }
}
