//! What a batch read, the positions it commits, and the rewind after an abort.
//!
//! A batch remembers, per input partition it read from, the first offset it consumed. Commits
//! send the consumer's *positions* (next offset to read) for exactly those partitions. After an
//! abort the consumer has moved past records whose outputs were thrown away, so every assigned
//! partition is sought back to its committed offset; a partition with no committed offset yet
//! goes back to the first offset the aborted batch read from it.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::EngineError;

/// How long a committed-offsets lookup or a seek may block.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An input partition a batch read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadPartition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The first offset the batch consumed from it.
    pub(crate) first_offset: i64,
    /// Records and key + value bytes the batch consumed from it.
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// Records and bytes a batch wrote to one output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) topic: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// The records of one open batch (one transaction in exactly_once mode). Counting here, on the
/// worker's thread, keeps metrics off the per-record path: they are updated once per commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// When the batch's first record was consumed.
    pub(crate) started: Instant,
    /// Input records in the batch.
    pub(crate) records: usize,
    /// Per input partition read.
    pub(crate) read: Vec<ReadPartition>,
    /// Per output topic written.
    pub(crate) written: Vec<Written>,
}

impl Batch {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            records: 0,
            read: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Notes a consumed record. Linear scans: a worker reads and writes few partitions, and this
    /// avoids hashing a topic name per record.
    pub(crate) fn note(&mut self, topic: &str, partition: i32, offset: i64, bytes: usize) {
        self.records += 1;
        let bytes = bytes as u64;
        match self
            .read
            .iter_mut()
            .find(|r| r.partition == partition && r.topic == topic)
        {
            Some(read) => {
                read.records += 1;
                read.bytes += bytes;
            }
            None => self.read.push(ReadPartition {
                topic: topic.to_string(),
                partition,
                first_offset: offset,
                records: 1,
                bytes,
            }),
        }
    }

    /// Notes a record sent to an output topic.
    pub(crate) fn note_written(&mut self, topic: &str, bytes: usize) {
        let bytes = bytes as u64;
        match self.written.iter_mut().find(|w| w.topic == topic) {
            Some(written) => {
                written.records += 1;
                written.bytes += bytes;
            }
            None => self.written.push(Written {
                topic: topic.to_string(),
                records: 1,
                bytes,
            }),
        }
    }

    /// Adds a later batch (the one held while this one committed) to this one, for the rewind
    /// after both are aborted: this batch's first offsets win, the later batch adds the
    /// partitions only it read.
    pub(crate) fn absorb(&mut self, later: Batch) {
        self.records += later.records;
        for read in later.read {
            match self
                .read
                .iter_mut()
                .find(|r| r.partition == read.partition && r.topic == read.topic)
            {
                Some(mine) => {
                    mine.records += read.records;
                    mine.bytes += read.bytes;
                }
                None => self.read.push(read),
            }
        }
        for written in later.written {
            match self.written.iter_mut().find(|w| w.topic == written.topic) {
                Some(mine) => {
                    mine.records += written.records;
                    mine.bytes += written.bytes;
                }
                None => self.written.push(written),
            }
        }
    }

    /// The first offset this batch consumed from a partition.
    pub(crate) fn first_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.read
            .iter()
            .find(|r| r.partition == partition && r.topic == topic)
            .map(|r| r.first_offset)
    }

    /// The partitions this batch read from.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = (&str, i32)> {
        self.read.iter().map(|r| (r.topic.as_str(), r.partition))
    }
}

/// The consumer's positions for the partitions `batch` read from.
pub(crate) fn positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    batch: &Batch,
) -> Result<TopicPartitionList, EngineError> {
    let all = consumer.position().map_err(|source| EngineError::Kafka {
        operation: "reading consumer positions",
        source,
    })?;
    let mut wanted = TopicPartitionList::with_capacity(batch.read.len());
    for (topic, partition) in batch.partitions() {
        let position = all
            .find_partition(topic, partition)
            .map(|elem| elem.offset())
            .filter(|offset| matches!(offset, Offset::Offset(_)));
        // A partition we read from but no longer hold (revoked and already committed by the
        // rebalance handler, or lost) has no position: leave it to its new owner.
        if let Some(offset) = position {
            wanted
                .add_partition_offset(topic, partition, offset)
                .map_err(|source| EngineError::Kafka {
                    operation: "building the offsets to commit",
                    source,
                })?;
        }
    }
    Ok(wanted)
}

/// Seeks every assigned partition back to its committed offset (or, without one, to the first
/// offset the aborted batch read from it).
pub(crate) fn rewind<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    aborted: &Batch,
) -> Result<(), EngineError> {
    if super::broken::Broken::NoRewind.active() {
        tracing::warn!("KSTAGE_BROKEN_MODE: not rewinding after an abort (negative control)");
        return Ok(());
    }
    let committed = consumer
        .committed(LOOKUP_TIMEOUT)
        .map_err(|source| EngineError::Kafka {
            operation: "reading committed offsets",
            source,
        })?;
    let mut sought = 0;
    for elem in committed.elements() {
        let target = match elem.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => aborted.first_offset(elem.topic(), elem.partition()),
        };
        if let Some(offset) = target {
            consumer
                .seek(
                    elem.topic(),
                    elem.partition(),
                    Offset::Offset(offset),
                    LOOKUP_TIMEOUT,
                )
                .map_err(|source| EngineError::Kafka {
                    operation: "rewinding a partition",
                    source,
                })?;
            sought += 1;
        }
    }
    tracing::info!(
        partitions = sought,
        "Rewound the consumer to the committed offsets."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absorbed_batch_keeps_the_earlier_first_offsets_and_adds_its_own_partitions() {
        let mut earlier = Batch::new(Instant::now());
        earlier.note("a", 0, 10, 100);
        earlier.note_written("out", 20);
        let mut held = Batch::new(Instant::now());
        held.note("a", 0, 11, 50);
        held.note("a", 1, 3, 5);
        held.note_written("out", 30);
        held.note_written("dlq", 7);
        earlier.absorb(held);
        assert_eq!(earlier.records, 3);
        assert_eq!(earlier.first_offset("a", 0), Some(10));
        assert_eq!(earlier.first_offset("a", 1), Some(3));
        assert_eq!((earlier.read[0].records, earlier.read[0].bytes), (2, 150));
        assert_eq!(
            earlier.written,
            vec![
                Written {
                    topic: "out".into(),
                    records: 2,
                    bytes: 50
                },
                Written {
                    topic: "dlq".into(),
                    records: 1,
                    bytes: 7
                }
            ]
        );
    }

    #[test]
    fn batch_remembers_the_first_offset_per_partition() {
        let mut batch = Batch::new(Instant::now());
        batch.note("a", 0, 10, 100);
        batch.note("a", 0, 11, 50);
        batch.note("a", 1, 5, 1);
        batch.note("b", 0, 7, 1);
        batch.note_written("out", 20);
        batch.note_written("out", 30);
        assert_eq!(batch.records, 4);
        assert_eq!(batch.first_offset("a", 0), Some(10));
        assert_eq!(batch.first_offset("a", 1), Some(5));
        assert_eq!(batch.first_offset("b", 0), Some(7));
        assert_eq!(batch.first_offset("b", 1), None);
        assert_eq!(batch.partitions().count(), 3);
        assert_eq!((batch.read[0].records, batch.read[0].bytes), (2, 150));
        assert_eq!(
            batch.written,
            vec![Written {
                topic: "out".into(),
                records: 2,
                bytes: 50
            }]
        );
    }
}
