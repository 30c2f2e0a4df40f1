//! librdkafka client settings for a worker's consumer and producer, and the start-up check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::broken::Broken;
use super::rebalance::StageContext;
use crate::config::{DeliveryMode, StageConfig};
use crate::error::is_authorization;
use crate::error::EngineError;

/// The consumer's settings: user settings first, then the ones exactly-once depends on (which
/// validation has already refused in user settings).
pub(crate) fn consumer_config(config: &StageConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    // KIP-848 (`group.protocol=consumer`): the broker assigns (sticky, incremental) and owns the
    // session timeout; librdkafka refuses a consumer that sets the classic-only settings.
    let next_gen = config
        .consumer
        .get("group.protocol")
        .or_else(|| config.kafka.get("group.protocol"))
        .is_some_and(|protocol| protocol == "consumer");
    if !next_gen {
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    // Defaults a user may change.
    client
        .set("auto.offset.reset", "earliest")
        // Consumer lag for the metrics.
        .set("statistics.interval.ms", "5000")
        // The prefetch queue, measured with scripts/bench.sh (docs/BENCHMARKS.md, "Tuning"):
        // librdkafka postpones a partition's next fetch by fetch.queue.backoff.ms (1 s by
        // default) once its queue holds queued.min.messages (100,000), so a stage that drains the
        // queue faster than that stalls in bursts; and a queue of 100,000 records per partition
        // (capped at 64 MiB) costs memory and allocator time without adding throughput. 10 ms,
        // 10,000 records and 16 MiB: about twice the throughput at about half the peak RSS.
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", fetch_max_bytes(config))
        .set("client.id", client_id);
    if config.delivery == DeliveryMode::ExactlyOnce && config.static_membership {
        // KIP-345: the worker's stable id (its transactional id) as its member id.
        client.set("group.instance.id", client_id);
        if !next_gen {
            client.set(
                "session.timeout.ms",
                crate::config::STATIC_SESSION_TIMEOUT_MS.to_string(),
            );
        }
    }
    config.security.apply(&mut client);
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

/// The consumer's `fetch.max.bytes`: the most one fetch response may carry, over all of the
/// broker's partitions (librdkafka's default: 52,428,800, cut to `queued.max.messages.kbytes`,
/// here 16 MiB). librdkafka turns every fetched record into a 304-byte op (`rd_kafka_op_t` with
/// its fetch payload, 2.12.1) that stays allocated until the stage has taken it, and the queue
/// bounds (`queued.min.messages`, `queued.max.messages.kbytes`, which counts values' bytes
/// only) are checked only before a fetch, never on what it brings: a response of 1 MiB per
/// partition of ~20-byte records is about 50,000 ops (15 MiB) per partition. Measured on the
/// state benchmark (docs/BENCHMARKS.md, "Stateful", "Where the RSS goes"): the peak RSS of
/// `count` fell from 154-160 to 53-57 MiB and of `windowed-count` from 175-176 to 75 MiB with
/// no loss of throughput (two rounds), and the stateless benchmark lost none either (after ÷ before 1.16,
/// median of 6 interleaved rounds). A fetch still returns a record batch larger than
/// this whole (Kafka's rule), and a partition's share is still `max.partition.fetch.bytes`.
pub(crate) const FETCH_MAX_BYTES: u64 = 1_048_576;

/// `fetch.max.bytes` for the consumer: [`FETCH_MAX_BYTES`], or the user's `message.max.bytes`
/// if larger (librdkafka refuses a `fetch.max.bytes` set below it). A user's own
/// `fetch.max.bytes` is applied after this and wins.
fn fetch_max_bytes(config: &StageConfig) -> String {
    let message_max = config
        .consumer
        .get("message.max.bytes")
        .or_else(|| config.kafka.get("message.max.bytes"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    FETCH_MAX_BYTES.max(message_max).to_string()
}

/// The producer's `retry.backoff.ms` (librdkafka's default: 100).
pub(crate) const RETRY_BACKOFF_MS: &str = "10";
/// The producer's `retry.backoff.max.ms` (librdkafka's default: 1000).
pub(crate) const RETRY_BACKOFF_MAX_MS: &str = "50";

/// The producer's settings, transactional in exactly_once mode.
pub(crate) fn producer_config(config: &StageConfig, transactional_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        // Where Java producers and Kafka Streams would put a key (librdkafka's default differs).
        .set("partitioner", "murmur2_random")
        .set("client.id", transactional_id)
        // A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
        // coordinator has written the previous one's markers. librdkafka 2.12.1 retries
        // AddOffsetsToTxn after retry.backoff.ms, doubling up to retry.backoff.max.ms
        // (rdkafka_txnmgr.c, rd_kafka_txn_handle_AddOffsetsToTxn; rdkafka_broker.c,
        // rd_kafka_broker_buf_retry), so at its defaults (100 ms / 1 s) every back-to-back
        // send_offsets_to_transaction took about 110 ms. Measured in docs/BENCHMARKS.md ("The
        // commit's own cost"); a user's producer settings still win.
        .set("retry.backoff.ms", RETRY_BACKOFF_MS)
        .set("retry.backoff.max.ms", RETRY_BACKOFF_MAX_MS);
    config.security.apply(&mut client);
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
        client.set("transactional.id", transactional_id);
    }
    client
}

/// Waits until the cluster answers, then checks that every topic the stage uses exists and may be
/// described. An unreachable cluster is retried with backoff until `timeout`; a failed login, a
/// missing topic or a refused topic fails at once, with what to fix.
///
/// Returns `Ok(false)` when `shutdown` is set meanwhile: the stage stops before it started.
pub(crate) fn preflight(
    consumer: &BaseConsumer<StageContext>,
    config: &StageConfig,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> Result<bool, EngineError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(200);
    let login_failed = |detail: String| {
        EngineError::Startup(format!(
            "cannot log in to Kafka at {}: {detail}; check security.protocol, sasl_mechanism, \
             username and password",
            config.bootstrap_servers
        ))
    };
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let result = consumer.fetch_metadata(None, Duration::from_secs(10));
        // Serves librdkafka's error events, where a failed SASL login is reported; they are
        // only delivered by a poll that waits a little.
        let _ = consumer.poll(Duration::from_millis(100));
        if let Some(detail) = consumer.context().take_authentication_failure() {
            return Err(login_failed(detail));
        }
        match result {
            Ok(_) => break,
            Err(error) if is_authorization(&error) => return Err(login_failed(error.to_string())),
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
    }
    let topics = config
        .inputs
        .iter()
        .map(|t| ("input", t, "Read"))
        .chain(config.outputs.values().map(|t| ("output", t, "Write")))
        .chain(
            config
                .dead_letter_topic
                .iter()
                .map(|t| ("dead-letter", t, "Write")),
        );
    let mut problems = Vec::new();
    for (role, topic, operation) in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| EngineError::Kafka {
                operation: "reading topic metadata",
                source,
            })?;
        let topic_metadata = metadata.topics().first();
        let error = topic_metadata
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from);
        match error {
            None => {
                let found = topic_metadata.map_or(0, |t| t.partitions().len());
                match config.expected_partitions.get(topic.as_str()) {
                    Some(&expected) if expected != found => problems.push(format!(
                        "{role} topic {topic:?} has {found} partitions, expected_partitions says \
                         {expected}"
                    )),
                    _ => {}
                }
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => problems.push(format!(
                "{role} topic {topic:?} is not authorised for this principal (grant {operation} \
                 and Describe on it)"
            )),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => problems.push(format!(
                "{role} topic {topic:?} does not exist (create it first; kstage does not create \
                 topics)"
            )),
            Some(other) => problems.push(format!("{role} topic {topic:?}: {other}")),
        }
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(EngineError::Startup(format!(
            "{} on {}",
            problems.join("; "),
            config.bootstrap_servers
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StageConfig {
        StageConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            app_id: "app".into(),
            instance_id: "0".into(),
            ..StageConfig::default()
        }
    }

    #[test]
    fn exactly_once_joins_as_a_static_member_with_its_transactional_id() {
        let client = consumer_config(&config(), "app-0");
        assert_eq!(client.get("group.instance.id"), Some("app-0"));
        assert_eq!(client.get("session.timeout.ms"), Some("10000"));
    }

    #[test]
    fn user_settings_win_and_static_membership_can_be_turned_off() {
        let mut config = config();
        config
            .kafka
            .insert("session.timeout.ms".into(), "6000".into());
        let client = consumer_config(&config, "app-0");
        assert_eq!(client.get("session.timeout.ms"), Some("6000"));
        config.static_membership = false;
        assert_eq!(
            consumer_config(&config, "app-0").get("group.instance.id"),
            None
        );
        let mut at_least_once = self::tests::config();
        at_least_once.delivery = DeliveryMode::AtLeastOnce;
        assert_eq!(
            consumer_config(&at_least_once, "app-0").get("group.instance.id"),
            None
        );
    }

    #[test]
    fn producer_retries_quickly_by_default_and_user_settings_win() {
        let client = producer_config(&config(), "app-0");
        assert_eq!(client.get("retry.backoff.ms"), Some(RETRY_BACKOFF_MS));
        assert_eq!(
            client.get("retry.backoff.max.ms"),
            Some(RETRY_BACKOFF_MAX_MS)
        );
        assert_ne!(RETRY_BACKOFF_MS, "100", "not librdkafka's default");
        let mut config = config();
        config
            .producer
            .insert("retry.backoff.ms".into(), "100".into());
        config
            .kafka
            .insert("retry.backoff.max.ms".into(), "1000".into());
        let client = producer_config(&config, "app-0");
        assert_eq!(client.get("retry.backoff.ms"), Some("100"));
        assert_eq!(client.get("retry.backoff.max.ms"), Some("1000"));
        assert!(
            client.create::<rdkafka::producer::BaseProducer>().is_ok(),
            "librdkafka accepts the settings"
        );
    }

    #[test]
    fn consumer_bounds_a_fetch_and_user_settings_win() {
        let client = consumer_config(&config(), "app-0");
        let default = FETCH_MAX_BYTES.to_string();
        assert_eq!(client.get("fetch.max.bytes"), Some(default.as_str()));
        assert_ne!(default, "52428800", "not librdkafka's default");
        assert!(
            client.create::<BaseConsumer>().is_ok(),
            "librdkafka accepts it"
        );
        // A larger message.max.bytes lifts the bound (librdkafka refuses fetch.max.bytes below it).
        let mut large = config();
        large
            .kafka
            .insert("message.max.bytes".into(), "5000000".into());
        let client = consumer_config(&large, "app-0");
        assert_eq!(client.get("fetch.max.bytes"), Some("5000000"));
        assert!(
            client.create::<BaseConsumer>().is_ok(),
            "librdkafka accepts it"
        );
        // The user's own value wins.
        let mut own = config();
        own.consumer
            .insert("fetch.max.bytes".into(), "52428800".into());
        let client = consumer_config(&own, "app-0");
        assert_eq!(client.get("fetch.max.bytes"), Some("52428800"));
    }

    #[test]
    fn the_next_generation_protocol_gets_no_classic_only_settings() {
        let mut config = config();
        config
            .consumer
            .insert("group.protocol".into(), "consumer".into());
        let client = consumer_config(&config, "app-0");
        assert_eq!(client.get("partition.assignment.strategy"), None);
        assert_eq!(client.get("session.timeout.ms"), None);
        assert_eq!(client.get("group.instance.id"), Some("app-0"));
        assert!(
            client.create::<BaseConsumer>().is_ok(),
            "librdkafka accepts the settings"
        );
    }
}
