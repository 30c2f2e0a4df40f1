//! librdkafka client settings for a worker's consumer and producer, and the start-up check.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use super::broken::Broken;
use crate::config::{DeliveryMode, StageConfig};
use crate::error::EngineError;

/// The consumer's settings: user settings first, then the ones exactly-once depends on (which
/// validation has already refused in user settings).
pub(crate) fn consumer_config(config: &StageConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    // Defaults a user may change.
    client
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("auto.offset.reset", "earliest")
        .set("client.id", config.transactional_id());
    for (key, value) in config.kafka.iter().chain(&config.consumer) {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.app_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    if Broken::ReadUncommitted.active() {
        tracing::warn!("KSTAGE_BROKEN_MODE: reading read_uncommitted (negative control)");
        client.set("isolation.level", "read_uncommitted");
    }
    client
}

/// The producer's settings, transactional in exactly_once mode.
pub(crate) fn producer_config(config: &StageConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        // Where Java producers and Kafka Streams would put a key (librdkafka's default differs).
        .set("partitioner", "murmur2_random")
        .set("client.id", config.transactional_id());
    for (key, value) in config.kafka.iter().chain(&config.producer) {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout.as_millis().to_string(),
        );
    if config.delivery == DeliveryMode::ExactlyOnce {
        client.set("transactional.id", config.transactional_id());
    }
    client
}

/// Waits until the cluster answers, then checks that every input and output topic exists.
/// An unreachable cluster is retried with backoff until `timeout`; a missing topic fails at once.
pub(crate) fn preflight<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    config: &StageConfig,
    timeout: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(200);
    let metadata = loop {
        match consumer.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(metadata) => break metadata,
            Err(error) if Instant::now() + backoff < deadline => {
                tracing::warn!(%error, bootstrap_servers = %config.bootstrap_servers,
                    "The Kafka cluster does not answer yet; retrying.");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                return Err(EngineError::Startup(format!(
                    "the Kafka cluster at {} did not answer within {} s: {error}",
                    config.bootstrap_servers,
                    timeout.as_secs()
                )))
            }
        }
    };
    let exists = |name: &str| {
        metadata
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none())
    };
    let missing: Vec<String> = config
        .inputs
        .iter()
        .map(|t| ("input", t))
        .chain(config.outputs.values().map(|t| ("output", t)))
        .chain(config.dead_letter_topic.iter().map(|t| ("dead-letter", t)))
        .filter(|(_, topic)| !exists(topic))
        .map(|(role, topic)| format!("{role} topic {topic:?}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Startup(format!(
            "{} does not exist on {}; create it first (kstage does not create topics)",
            missing.join(", "),
            config.bootstrap_servers
        )))
    }
}
