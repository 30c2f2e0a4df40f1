//! Stage configuration: the pipeline (topology, topics, delivery mode) and the Kafka settings.
//!
//! A stage's settings come from, lowest precedence first: the defaults below, a TOML file
//! (`--config FILE`), environment variables (`KSTAGE_...`) and command-line flags. Each layer only
//! sets what it names, so a stage can run from flags alone or from a file alone. Once merged, the
//! whole configuration goes through [`StageConfig::validate`], which reports every problem with the
//! key it concerns and what would be valid; the binary exits with code 2 on any of them.
//!
//! Every default is a named function whose comment says where the value comes from.

mod redact;
mod security;
mod validate;

pub use redact::REDACTED;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{RegistryConfig, TopicFormat};

pub use redact::redacted;
pub use security::{SaslMechanism, SecurityConfig, SecurityProtocol, SECURITY_KAFKA_KEYS};
pub use validate::{ConfigError, ConfigErrors, RESERVED_KAFKA_KEYS};

/// How input offsets are committed relative to the output records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Outputs and input offsets commit in one Kafka transaction: every input record is reflected
    /// exactly once for `read_committed` readers. The default.
    #[default]
    ExactlyOnce,
    /// Outputs are flushed, then offsets are committed: after a crash some outputs repeat.
    AtLeastOnce,
    /// Offsets are committed, then outputs are produced: after a crash some outputs are missing.
    AtMostOnce,
}

impl DeliveryMode {
    /// The mode as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly_once",
            Self::AtLeastOnce => "at_least_once",
            Self::AtMostOnce => "at_most_once",
        }
    }
}

/// When a transaction is closed, within `commit_interval` and `max_records_per_txn`
/// (see `engine/policy.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum CommitPolicy {
    /// Commit when the batch is `commit_interval` old or holds `max_records_per_txn` records.
    #[default]
    Interval,
    /// Commit as soon as records are waiting and no commit is running (back-to-back commits):
    /// small transactions at low load, growing ones at full load.
    BackToBack,
    /// Commit when the batch's age plus the expected commit time reaches `target_latency`.
    TargetLatency,
}

impl CommitPolicy {
    /// The policy as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interval => "interval",
            Self::BackToBack => "back_to_back",
            Self::TargetLatency => "target_latency",
        }
    }
}

/// What a stage does with a record it cannot process (it fails to decode, or the topology returns
/// an error for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum PoisonPolicy {
    /// Abort the open transaction and stop with an error naming the record's topic, partition and
    /// offset. Its offset is not committed, so a restart meets the same record again.
    #[default]
    Fail,
    /// Count the record, log it once with its coordinates, and commit past it.
    Skip,
    /// Write the record's original key, value and headers to `dead_letter_topic`, with headers
    /// naming the error and the source, inside the same transaction as the offsets.
    DeadLetter,
}

impl PoisonPolicy {
    /// The policy as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// The whole configuration of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// The registered topology to run (`kstage topologies` lists them).
    pub topology: String,
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// The topics to read. Records of all of them go through the same topology.
    pub inputs: Vec<String>,
    /// Output name -> topic. The topology's `default` output and every named output it declares
    /// must be routed.
    pub outputs: BTreeMap<String, String>,
    /// The application id: the consumer group, and the prefix of the transactional id. Every
    /// instance of one stage shares it.
    pub app_id: String,
    /// This instance's id, stable across restarts and distinct between the instances of a stage
    /// (a StatefulSet ordinal, say). The transactional id is `<app_id>-<instance_id>`, so a
    /// restarted instance fences its predecessor at once instead of waiting for its transaction
    /// to time out.
    pub instance_id: String,
    /// How input offsets are committed relative to outputs.
    pub delivery: DeliveryMode,
    /// How long a transaction (or, in the other modes, a batch) collects records before it is
    /// committed. Lower means lower end-to-end latency and more commits.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Commit early once a transaction holds this many input records.
    pub max_records_per_txn: usize,
    /// When a transaction closes within `commit_interval` (the maximum) and
    /// `max_records_per_txn`: `interval` waits for them, `back_to_back` commits as soon as
    /// records are waiting and no commit is running, `target_latency` when a record would
    /// otherwise wait longer than `target_latency`. Not used by `kstage sink`.
    pub commit_policy: CommitPolicy,
    /// `commit_policy = "target_latency"` only: how long a record may wait for its commit, from
    /// its consumption to the commit's end (e.g. 20ms). At most `commit_interval`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub target_latency: Option<Duration>,
    /// exactly_once only: commit each transaction on a commit thread while the worker goes on
    /// reading and processing, holding the next transaction's outputs in memory until it begins.
    /// Off by default: on the 2-core benchmark machine it cost throughput (docs/BENCHMARKS.md,
    /// "Pipelined commits"); it is meant for stages whose commits wait on a distant broker.
    pub pipelined_commits: bool,
    /// exactly_once only: static group membership (KIP-345). Each worker's consumer joins with
    /// `group.instance.id` = its transactional id (`<app_id>-<instance_id>[-<worker>]`), so an
    /// instance restarted within `session.timeout.ms` gets its partitions back without a
    /// rebalance, and `session.timeout.ms` defaults to [`STATIC_SESSION_TIMEOUT_MS`] instead
    /// of librdkafka's 45 s (an instance that does not come back loses its partitions after
    /// that). A static member does not leave the group when it stops: a scale-in moves its
    /// partitions after `session.timeout.ms`. Two live instances with the same instance_id are
    /// refused by the group (FENCED_INSTANCE_ID): the older one stops with exit 1. On by default;
    /// a `group.instance.id` or `session.timeout.ms` in `kafka`/`consumer` wins.
    pub static_membership: bool,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open longer than this (a
    /// crashed or paused instance). Must stay below `max.poll.interval.ms`.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Workers in this instance, each a consumer and a transactional producer on its own thread
    /// (transactional ids `<app_id>-<instance_id>-<n>` when more than one). More workers help
    /// only with spare cores and more input partitions than instances.
    pub workers: usize,
    /// What to do with a record that cannot be processed.
    pub poison_policy: PoisonPolicy,
    /// Where `poison_policy = "dead_letter"` writes records; required by that policy only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Whether every output record carries `kstage.source.topic`, `kstage.source.partition` and
    /// `kstage.source.offset` headers, so downstream systems can check or de-duplicate.
    pub provenance_headers: bool,
    /// Input values larger than this many bytes are poison records (they would not fit the
    /// output). Keep it at or below the producer's `message.max.bytes`.
    pub max_value_bytes: usize,
    /// Key and value formats of topics without an entry in `formats` (typed topologies, and
    /// the values a sink maps).
    pub default_format: TopicFormat,
    /// Key and value formats per topic (typed topologies, and the values a sink maps).
    pub formats: BTreeMap<String, TopicFormat>,
    /// The schema registry, required when any format is `avro`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<RegistryConfig>,
    /// Parameters for the topology's constructor.
    pub params: BTreeMap<String, String>,
    /// Topic -> partition count the stage expects; checked at start-up, so a topic re-created with
    /// another count (which would move keys between partitions) stops the stage with a clear
    /// error instead of silently re-partitioning. Topics not listed are not checked.
    pub expected_partitions: BTreeMap<String, usize>,
    /// TLS and SASL for the connection to Kafka.
    pub security: SecurityConfig,
    /// Raw librdkafka settings for both the consumer and the producer (`security.protocol`,
    /// `session.timeout.ms`, ...). Settings exactly-once depends on are refused; see
    /// [`RESERVED_KAFKA_KEYS`].
    pub kafka: BTreeMap<String, String>,
    /// Raw librdkafka settings for the consumer only; they win over `kafka`.
    pub consumer: BTreeMap<String, String>,
    /// Raw librdkafka settings for the producer only; they win over `kafka`.
    pub producer: BTreeMap<String, String>,
    /// Stateful topologies: the directory of the local state stores, one file per input
    /// partition under `<state_dir>/<transactional id>/`. The stores are a cache of their
    /// changelog topics: deleting the directory while the stage is stopped costs a full restore,
    /// nothing else.
    pub state_dir: std::path::PathBuf,
    /// A database sink (`kstage sink`): where rows go and how records become rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<crate::sink::SinkConfig>,
}

/// 10 s: the `session.timeout.ms` of static members unless set (librdkafka's default is 45 s).
/// A restart within it keeps the assignment; an instance gone for good loses its partitions
/// after it. Kafka's broker-side `group.min.session.timeout.ms` is 6 s by default.
pub const STATIC_SESSION_TIMEOUT_MS: u32 = 10_000;

/// 100 ms: the commit interval Kafka Streams uses under exactly-once.
pub fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}

/// 100,000 records: bounds the work redone after an abort and matches librdkafka's local queue
/// (`queue.buffering.max.messages`); at the default commit interval it is only reached above 1M
/// records/s. A lower cap makes a busy stage commit more often than `commit_interval`: 10,000
/// cost a third of the throughput in the benchmark (docs/BENCHMARKS.md, "Tuning").
pub fn default_max_records_per_txn() -> usize {
    100_000
}

/// 60 s: librdkafka's default `transaction.timeout.ms`.
pub fn default_transaction_timeout() -> Duration {
    Duration::from_secs(60)
}

/// 1,000,000 bytes: librdkafka's default `message.max.bytes`, the largest record the producer
/// writes.
pub fn default_max_value_bytes() -> usize {
    1_000_000
}

/// A TOML syntax or type error, with the key it names when it names one.
fn toml_error(error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().to_string();
    // toml names an unknown field as "unknown field `x`"; surface it as the key.
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field"))
        .unwrap_or("config")
        .to_string();
    ConfigError::new(key, message)
}

/// `kstage-state`, relative to the working directory (as Kafka Streams' `state.dir` is a fixed
/// local directory).
pub fn default_state_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("kstage-state")
}

/// 300 s: librdkafka's (and Kafka's) default `max.poll.interval.ms`.
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            topology: String::new(),
            bootstrap_servers: String::new(),
            inputs: Vec::new(),
            outputs: BTreeMap::new(),
            app_id: String::new(),
            instance_id: String::new(),
            delivery: DeliveryMode::default(),
            commit_interval: default_commit_interval(),
            max_records_per_txn: default_max_records_per_txn(),
            commit_policy: CommitPolicy::default(),
            target_latency: None,
            pipelined_commits: false,
            static_membership: true,
            transaction_timeout: default_transaction_timeout(),
            workers: 1,
            poison_policy: PoisonPolicy::default(),
            dead_letter_topic: None,
            provenance_headers: true,
            max_value_bytes: default_max_value_bytes(),
            default_format: TopicFormat::default(),
            formats: BTreeMap::new(),
            schema_registry: None,
            params: BTreeMap::new(),
            expected_partitions: BTreeMap::new(),
            security: SecurityConfig::default(),
            kafka: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            state_dir: default_state_dir(),
            sink: None,
        }
    }
}

impl StageConfig {
    /// Reads a TOML config file. Unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_table(Self::read_table(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads a TOML config file as a table, so other layers (flags, environment variables) can
    /// be written over it before [`StageConfig::from_table`] reads it. Only the TOML syntax is
    /// checked here.
    pub fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        text.parse::<toml::Table>()
            .map_err(|e| toml_error(&e).in_file(path))
    }

    /// Parses a TOML config. Unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| toml_error(&e))
    }

    /// Reads a config from its TOML table (a file's, with any other layers written over it).
    /// Unknown keys are errors; missing keys take their defaults.
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        table.try_into().map_err(|e| toml_error(&e))
    }

    /// The transactional id of this instance (with one worker; worker `n` of several appends
    /// `-n`).
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.app_id, self.instance_id)
    }

    /// The effective `max.poll.interval.ms` of the consumer.
    pub fn max_poll_interval_ms(&self) -> Result<u64, ConfigError> {
        match self.consumer_setting("max.poll.interval.ms") {
            None => Ok(DEFAULT_MAX_POLL_INTERVAL_MS),
            Some((section, raw)) => raw.parse().map_err(|_| {
                ConfigError::new(
                    format!("{section}.max.poll.interval.ms"),
                    format!("{raw:?} is not a number of milliseconds"),
                )
            }),
        }
    }

    /// A consumer setting and the section it came from (`consumer` wins over `kafka`).
    fn consumer_setting(&self, key: &str) -> Option<(&'static str, &str)> {
        self.consumer
            .get(key)
            .map(|v| ("consumer", v.as_str()))
            .or_else(|| self.kafka.get(key).map(|v| ("kafka", v.as_str())))
    }

    /// A producer setting and the section it came from (`producer` wins over `kafka`).
    fn producer_setting(&self, key: &str) -> Option<(&'static str, &str)> {
        self.producer
            .get(key)
            .map(|v| ("producer", v.as_str()))
            .or_else(|| self.kafka.get(key).map(|v| ("kafka", v.as_str())))
    }
}
