//! Reading topics for the verifier: partition counts, watermarks as each isolation level sees
//! them, and bounded reads of whole partitions with a progress callback.
//!
//! Every client here is assign-only: it never joins a consumer group (the group-offset check
//! creates a consumer *with* the stage's `group.id` to ask for committed offsets, but it never
//! subscribes, so it never joins or disturbs the group).
//!
//! Reads are bounded by end offsets taken *before* the read starts: the verifier compares
//! snapshots, so a pipeline still writing does not make a read chase a moving end. The
//! `read_committed` end of a partition is its last stable offset (LSO): librdkafka's ListOffsets
//! request carries the client's `isolation.level`, so [`Client::watermarks`] with
//! [`Isolation::ReadCommitted`] returns the LSO where a `read_uncommitted` client gets the high
//! watermark.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::VerifyError;

/// How long a read may go without receiving anything before it fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one metadata, watermark or committed-offset request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Which records a reader sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Records of committed transactions and non-transactional records; reads end at the LSO.
    ReadCommitted,
    /// Everything in the log, records of aborted and open transactions included; reads end at
    /// the high watermark.
    ReadUncommitted,
}

impl Isolation {
    /// The librdkafka `isolation.level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Told how a long read is going; the CLI draws a progress bar with it.
pub trait Progress {
    /// A read of `total` records (an upper bound: aborted records and markers count) begins.
    fn begin(&self, what: &str, total: u64);
    /// `records` more records were read.
    fn advance(&self, records: u64);
    /// The current read is over.
    fn end(&self);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

/// The offsets bounding a read of one partition: from `start` (inclusive) to `end` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// Offset to stop before.
    pub end: i64,
}

impl Bounds {
    /// The bounds of whole partitions, from `(start, end)` watermarks listed by partition
    /// number (partition 0 first), as [`VerifyClient::watermarks`] returns them.
    pub fn whole(watermarks: Vec<(i64, i64)>) -> Vec<Self> {
        watermarks
            .into_iter()
            .zip(0..)
            .map(|((start, end), partition)| Self {
                partition,
                start,
                end,
            })
            .collect()
    }
}

/// The verifier's client context: end-of-partition events are expected (reads stop there), so
/// they are not logged as errors; other client errors are warnings, since librdkafka retries
/// and a read that gets nowhere fails on its own ([`STALL_TIMEOUT`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyContext;

impl ClientContext for VerifyContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(%error, reason, "The Kafka client reported an error; retrying.");
    }
}

impl ConsumerContext for VerifyContext {}

/// A consumer of the verifier.
pub type VerifyConsumer = BaseConsumer<VerifyContext>;

/// Creates the verifier's Kafka clients from the bootstrap servers and extra librdkafka settings.
#[derive(Clone, Debug)]
pub struct Client {
    base: ClientConfig,
}

impl Client {
    /// A client factory for `bootstrap_servers`, with `extra` librdkafka settings (security and
    /// the like) applied on top of the verifier's own.
    pub fn new(bootstrap_servers: &str, extra: &[(String, String)]) -> Self {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", bootstrap_servers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("log_level", "3");
        for (key, value) in extra {
            base.set(key, value);
        }
        Self { base }
    }

    /// A consumer with `isolation`; `group` only names the group whose offsets it may query.
    pub fn consumer(
        &self,
        isolation: Isolation,
        group: Option<&str>,
    ) -> Result<VerifyConsumer, VerifyError> {
        let mut config = self.base.clone();
        config
            .set("isolation.level", isolation.as_str())
            .set("group.id", group.unwrap_or("kstage-verify"));
        config
            .create_with_context(VerifyContext)
            .map_err(|source| VerifyError::kafka("creating a consumer", source))
    }

    /// The number of partitions of `topic`; an error if the topic does not exist.
    pub fn partitions(&self, consumer: &VerifyConsumer, topic: &str) -> Result<i32, VerifyError> {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|source| VerifyError::kafka(format!("metadata of {topic}"), source))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                i32::try_from(t.partitions().len())
                    .map_err(|_| VerifyError::Config(format!("{topic} has too many partitions")))
            }
            _ => Err(VerifyError::MissingTopic(topic.to_string())),
        }
    }

    /// `(low watermark, end)` of partitions `0..partitions` of `topic`, where the end is the LSO
    /// for a read_committed `consumer` and the high watermark for a read_uncommitted one.
    pub fn watermarks(
        &self,
        consumer: &VerifyConsumer,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<(i64, i64)>, VerifyError> {
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .map_err(|source| {
                        VerifyError::kafka(format!("watermarks of {topic}[{p}]"), source)
                    })
            })
            .collect()
    }

    /// Reads `topic` within `bounds` with `isolation`, calling `each` for every record in offset
    /// order per partition (partitions interleave). Returns the number of records read.
    ///
    /// A partition is done when a record at or past `end - 1` arrives or the reader reaches the
    /// partition's end (the last offsets before `end` may be transaction markers, which no
    /// consumer receives). Fails if nothing arrives for [`STALL_TIMEOUT`].
    pub fn read(
        &self,
        topic: &str,
        isolation: Isolation,
        bounds: &[Bounds],
        progress: &dyn Progress,
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<u64, VerifyError> {
        let wanted: Vec<Bounds> = bounds.iter().copied().filter(|b| b.start < b.end).collect();
        let total: i64 = wanted.iter().map(|b| b.end - b.start).sum();
        progress.begin(
            &format!("{topic} ({})", isolation.as_str()),
            u64::try_from(total).unwrap_or(0),
        );
        let result = self.read_bounded(topic, isolation, &wanted, progress, &mut each);
        progress.end();
        result
    }

    fn read_bounded(
        &self,
        topic: &str,
        isolation: Isolation,
        wanted: &[Bounds],
        progress: &dyn Progress,
        each: &mut dyn FnMut(&BorrowedMessage<'_>),
    ) -> Result<u64, VerifyError> {
        if wanted.is_empty() {
            return Ok(0);
        }
        let consumer = self.consumer(isolation, None)?;
        let mut assignment = TopicPartitionList::new();
        for b in wanted {
            assignment
                .add_partition_offset(topic, b.partition, Offset::Offset(b.start))
                .map_err(|source| VerifyError::kafka(format!("assigning {topic}"), source))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| VerifyError::kafka(format!("assigning {topic}"), source))?;
        let mut open: Vec<Bounds> = wanted.to_vec();
        let mut read = 0u64;
        let mut pending = 0u64;
        let mut last_news = Instant::now();
        while !open.is_empty() {
            let event = consumer.poll(Duration::from_millis(200));
            match event {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_news = Instant::now();
                    open.retain(|b| b.partition != partition);
                }
                Some(Err(error)) => {
                    // librdkafka retries broker errors itself; a stall shows up as the timeout.
                    tracing::debug!(%topic, %error, "Reading: the client reported an error.");
                }
                Some(Ok(message)) => {
                    last_news = Instant::now();
                    let (partition, offset) = (message.partition(), message.offset());
                    let Some(b) = open.iter().find(|b| b.partition == partition).copied() else {
                        continue;
                    };
                    if offset < b.end {
                        each(&message);
                        read += 1;
                        pending += 1;
                    }
                    if offset >= b.end - 1 {
                        open.retain(|b| b.partition != partition);
                    }
                }
            }
            if pending >= 1000 || open.is_empty() {
                progress.advance(pending);
                pending = 0;
            }
            if last_news.elapsed() > STALL_TIMEOUT {
                return Err(VerifyError::Stalled {
                    topic: topic.to_string(),
                    isolation: isolation.as_str(),
                    partitions: open.iter().map(|b| b.partition).collect(),
                    secs: STALL_TIMEOUT.as_secs(),
                });
            }
        }
        progress.advance(pending);
        Ok(read)
    }
}
