//! `kstage verify`: proves (or disproves) that a pipeline delivered its input exactly once, by
//! reading both ends from Kafka.
//!
//! ```text
//!  input topic(s) ──► stage ──► [through topic ──► stage ──►] output topic(s)
//!   read_committed               read_committed (+ lazily       read_committed and
//!   (+ lazily uncommitted)       uncommitted)                   read_uncommitted, to one LSO
//! ```
//!
//! Every output record is traced back to one input record ([`Identity`]: provenance headers by
//! default, or the key, or a JSON field; the `lineage` module explains how chains are followed),
//! then the checks run:
//!
//! | check | fails when |
//! |---|---|
//! | lost | an input record has no output record visible read_committed |
//! | duplicated | an input record has more than one |
//! | unexpected | an output record traces to no input record |
//! | order | within a lane (input partition → through partition → output partition), input offsets do not strictly increase with output offsets |
//! | aborted visible | a read_committed output record derives from a record of an aborted upstream transaction (a source seen only read_uncommitted) |
//! | torn transactions | an output run attributable to one transaction is partly visible (the `checks` module says precisely what is checkable) |
//! | hanging transactions | an output or through partition's LSO stays below its high watermark for the settle timeout |
//! | group offsets | a consumer group has records left after its committed (stable) offset |
//!
//! The expectation is one output record per input record, across all output topics (a
//! topology that routes each record to one of several outputs passes; one that filters or fans
//! out does not fit these checks). Both output views are read up to the same LSO snapshot,
//! taken after the hanging check waited for open transactions to settle, so the records seen
//! read_uncommitted only are exactly those of aborted transactions
//! ([`Report::aborted_records`], informational).
//!
//! The verifier only reads: assign-only consumers, never joining a group.
//!
//! [`verify_table`] (`kstage verify --sink FILE`) compares a sink's PostgreSQL table with its
//! input topics instead (the `table` module says how), and [`verify_topology_tables`] each
//! table a typed sink topology writes, by running the topology again (`table_topology`).
//!
//! [`check_records`] runs the same record-level checks over records a caller already read (one
//! view of a topic: read_uncommitted, or what a live reader saw); the integration tests use it.

mod checks;
mod collect;
pub mod dead_letter;
mod lineage;
mod offsets;
mod order_totals;
pub mod read;
pub mod records;
mod report;
pub mod stateful;
mod table;
mod table_db;
mod table_report;
mod table_topology;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

pub use dead_letter::check_dead_letters;
pub use lineage::Identity;
pub use read::{Client, Isolation, NoProgress, Progress};
pub use records::{check_records, Record, TopicRecords};
pub use report::{Finding, GroupPartition, PartitionEnds, Report, TopicSummary};
pub use table::verify_table;
pub use table_report::TableReport;
pub use table_topology::{verify_topology_tables, TablesReport};

/// Default number of examples kept per check.
pub const DEFAULT_EXAMPLES: usize = 10;

/// A consumer group whose committed offsets must have reached the end of its topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// The group id (a kstage stage's `app_id`).
    pub group: String,
    /// The topics it consumes; empty means the verifier's input topics.
    pub topics: Vec<String>,
}

/// What to verify.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    /// `host:port[,...]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka settings for the verifier's clients (security, timeouts).
    pub kafka: Vec<(String, String)>,
    /// The pipeline's input topics.
    pub inputs: Vec<String>,
    /// The pipeline's final output topics.
    pub outputs: Vec<String>,
    /// Middle topics of a chain, followed by provenance (provenance identity only).
    pub through: Vec<String>,
    /// How output records name their input record.
    pub identity: Identity,
    /// Groups whose committed offsets are checked.
    pub groups: Vec<GroupSpec>,
    /// How long to wait for open transactions to end before calling them hanging (and for
    /// stable committed offsets).
    pub settle_timeout: Duration,
    /// Examples kept per check.
    pub examples: usize,
}

/// Why a verification could not be carried out (as opposed to a check failing).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The settings are inconsistent.
    #[error("{0}")]
    Config(String),
    /// A topic to read does not exist.
    #[error("topic {0} does not exist")]
    MissingTopic(String),
    /// A database request failed (`kstage verify --sink`).
    #[error("{operation}: {message}")]
    Database {
        /// What the verifier was doing.
        operation: String,
        /// The database's message.
        message: String,
    },
    /// A Kafka request failed.
    #[error("{operation}: {source}")]
    Kafka {
        /// What the verifier was doing.
        operation: String,
        /// The client's error.
        source: KafkaError,
    },
    /// A read received nothing for too long.
    #[error(
        "reading {topic} ({isolation}) stalled: nothing received for {secs} s on partitions \
         {partitions:?}"
    )]
    Stalled {
        /// The topic.
        topic: String,
        /// The isolation level of the read.
        isolation: &'static str,
        /// Partitions not finished.
        partitions: Vec<i32>,
        /// How long nothing arrived.
        secs: u64,
    },
}

impl VerifyError {
    pub(crate) fn kafka(operation: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            operation: operation.into(),
            source,
        }
    }
}

impl VerifyConfig {
    /// Checks the settings' consistency (no Kafka access).
    pub fn validate(&self) -> Result<(), VerifyError> {
        let fail = |m: String| Err(VerifyError::Config(m));
        if self.bootstrap_servers.trim().is_empty() {
            return fail("--bootstrap-servers is required".into());
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return fail("at least one --input and one --output topic are required".into());
        }
        if !self.through.is_empty() && self.identity != Identity::Provenance {
            return fail(format!(
                "--through follows provenance headers; it cannot be used with identity {}",
                self.identity
            ));
        }
        let mut roles: HashMap<&str, &str> = HashMap::new();
        for (role, topics) in [
            ("--input", &self.inputs),
            ("--through", &self.through),
            ("--output", &self.outputs),
        ] {
            for topic in topics {
                if let Some(other) = roles.insert(topic, role) {
                    return fail(format!("topic {topic} is given as both {other} and {role}"));
                }
            }
        }
        if self.examples == 0 {
            return fail("--examples must be at least 1".into());
        }
        Ok(())
    }
}

/// Reads the pipeline's topics and runs every check. `Err` only when the verification could not
/// be carried out; failed checks are in the [`Report`].
pub fn verify(config: &VerifyConfig, progress: &dyn Progress) -> Result<Report, VerifyError> {
    let started = Instant::now();
    config.validate()?;
    let client = Client::new(&config.bootstrap_servers, &config.kafka);
    let limit = config.examples;
    let metadata = client.consumer(Isolation::ReadUncommitted, None)?;
    let mut partitions: HashMap<String, i32> = HashMap::new();
    let group_topics = config.groups.iter().flat_map(|g| &g.topics);
    for topic in config
        .inputs
        .iter()
        .chain(&config.through)
        .chain(&config.outputs)
        .chain(group_topics)
    {
        if !partitions.contains_key(topic) {
            let n = client.partitions(&metadata, topic)?;
            partitions.insert(topic.clone(), n);
        }
    }
    let with_partitions = |topics: &[String]| -> Vec<(String, i32)> {
        topics
            .iter()
            .map(|t| (t.clone(), partitions.get(t).copied().unwrap_or(0)))
            .collect()
    };

    let settle_topics = with_partitions(&[config.outputs.clone(), config.through.clone()].concat());
    let (ends, hanging) = offsets::settle(&client, &settle_topics, config.settle_timeout, limit)?;
    let mut report = collect::run_checks(config, &client, &partitions, &ends, progress)?;
    report.hanging_transactions = hanging;
    report.partitions = ends;

    for spec in &config.groups {
        let topics = if spec.topics.is_empty() {
            &config.inputs
        } else {
            &spec.topics
        };
        let (rows, lag) = offsets::group_lag(
            &client,
            spec,
            &with_partitions(topics),
            config.settle_timeout,
            progress,
            limit,
        )?;
        report.groups.extend(rows);
        report.group_lag.count += lag.count;
        let room = limit.saturating_sub(report.group_lag.examples.len());
        report
            .group_lag
            .examples
            .extend(lag.examples.into_iter().take(room));
    }
    report.identity = Some(config.identity.clone());
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.conclude();
    Ok(report)
}
