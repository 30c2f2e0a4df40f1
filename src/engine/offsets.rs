//! What a batch read (its tally, for metrics and the batch-due check), the positions it commits,
//! and the rewind after an abort.
//!
//! A batch's [`Span`] (in the transaction state) remembers, per input partition it read from,
//! the first offset it consumed. Commits send the consumer's *positions* (next offset to read)
//! for exactly those partitions, and the rewind after an abort seeks exactly those partitions
//! (the ones still assigned) back to those first offsets: after an abort the consumer has moved
//! past records whose outputs were thrown away, and the first offset is where uncommitted
//! reading began.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::EngineError;

/// How long a seek may block.
const SEEK_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// Notes a consumed record; returns whether its partition is new to the batch. Linear
    /// scans: a worker reads and writes few partitions, and this avoids hashing a topic name per
    /// record.
    pub(crate) fn note(&mut self, topic: &str, partition: i32, offset: i64, bytes: usize) -> bool {
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
                false
            }
            None => {
                self.read.push(ReadPartition {
                    topic: topic.to_string(),
                    partition,
                    first_offset: offset,
                    records: 1,
                    bytes,
                });
                true
            }
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
}

/// An input partition a batch read from, and the first offset it read there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionStart {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) first_offset: i64,
    /// Whether the batch consumed a record of it. `false`: only wall-clock timers fired for it
    /// (see [`crate::state`]), and `first_offset` is where its consumer stands; the commit
    /// sends that offset if the consumer has no position yet (no record consumed since the
    /// assignment).
    pub(crate) consumed: bool,
}

/// The input partitions of one batch: what its commit sends positions for and where its rewind
/// seeks back to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) read: Vec<PartitionStart>,
    /// Rewind to the group's committed offsets (where known), not to the first offsets: set
    /// for a batch that was in doubt until a re-created producer's `init_transactions` settled
    /// it, so that only the committed offsets say whether it committed.
    pub(crate) to_committed: bool,
}

impl Span {
    #[cfg(test)]
    pub(crate) fn add(&mut self, topic: &str, partition: i32, offset: i64) {
        self.add_with(topic, partition, offset, true);
    }

    /// Adds a partition (`consumed`: a record of it was read, not only timers fired) unless the
    /// span has it already; its first offset stays, and it is consumed once a record was read.
    pub(crate) fn add_with(&mut self, topic: &str, partition: i32, offset: i64, consumed: bool) {
        match self
            .read
            .iter_mut()
            .find(|r| r.partition == partition && r.topic == topic)
        {
            Some(read) => read.consumed |= consumed,
            None => self.read.push(PartitionStart {
                topic: topic.to_string(),
                partition,
                first_offset: offset,
                consumed,
            }),
        }
    }

    /// This span with a later one: this span's first offsets win, the later adds its own
    /// partitions (the rewind after a failed commit covers both).
    pub(crate) fn merged(mut self, later: Option<Span>) -> Self {
        if let Some(later) = later {
            self.to_committed |= later.to_committed;
            for read in later.read {
                self.add_with(
                    &read.topic,
                    read.partition,
                    read.first_offset,
                    read.consumed,
                );
            }
        }
        self
    }
}

/// The consumer's positions for the partitions a batch read.
#[derive(Debug)]
pub(crate) enum Positions {
    /// One position for every partition the batch read.
    Complete(TopicPartitionList),
    /// A partition the batch read has no position (it is no longer assigned): committing the
    /// others and leaving it out would let its records be read again by a new owner while this
    /// batch's outputs of them commit, so the batch must abort instead.
    Missing { topic: String, partition: i32 },
}

/// The consumer's positions for the partitions `span` read from.
pub(crate) fn positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    span: &Span,
) -> Result<Positions, EngineError> {
    let all = consumer.position().map_err(|source| EngineError::Kafka {
        operation: "reading consumer positions",
        source,
    })?;
    let mut wanted = TopicPartitionList::with_capacity(span.read.len());
    let hidden = hidden_position();
    for read in &span.read {
        let (topic, partition) = (read.topic.as_str(), read.partition);
        let position = all
            .find_partition(topic, partition)
            .map(|elem| elem.offset())
            .filter(|offset| matches!(offset, Offset::Offset(_)))
            .filter(|_| hidden != Some(partition))
            // Only timers fired for it, and no record was consumed since the assignment: the
            // consumer stands at the offset the timers were fired at (the committed one).
            .or((!read.consumed).then_some(Offset::Offset(read.first_offset)));
        let Some(offset) = position else {
            return Ok(Positions::Missing {
                topic: topic.to_string(),
                partition,
            });
        };
        wanted
            .add_partition_offset(topic, partition, offset)
            .map_err(|source| EngineError::Kafka {
                operation: "building the offsets to commit",
                source,
            })?;
    }
    Ok(Positions::Complete(wanted))
}

/// With `fault-injection` and `FAILPOINTS=kstage::position_missing=1*return(<partition>)`, the
/// consumer's position for that partition is treated as absent once, as librdkafka reports a
/// partition it no longer fetches (the test of a batch whose positions are incomplete).
fn hidden_position() -> Option<i32> {
    fail::fail_point!("kstage::position_missing", |arg: Option<String>| arg
        .and_then(|partition| partition.parse().ok()));
    None
}

/// Seeks each partition the aborted batch read, and that is still assigned, back to the first
/// offset the batch read from it: where uncommitted reading began. No committed-offset lookup
/// is needed, so a predecessor's pending transaction on a newly assigned partition cannot block
/// the rewind, and a partition the batch never read (whose fetcher may not have started) is not
/// touched.
///
/// A span settled by a re-created producer (`to_committed`) is rewound to the group's committed
/// offsets instead, where the group has one (else to the first offset: nothing was ever
/// committed there, so the settled transaction did not commit either). The lookup cannot wait
/// on a pending transaction of ours: the new producer's `init_transactions` has completed it.
pub(crate) fn rewind<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    aborted: &Span,
) -> Result<(), EngineError> {
    if super::broken::Broken::NoRewind.active() {
        tracing::warn!("KSTAGE_BROKEN_MODE: not rewinding after an abort (negative control)");
        return Ok(());
    }
    let assigned = consumer.assignment().map_err(|source| EngineError::Kafka {
        operation: "reading the assignment",
        source,
    })?;
    let committed = if aborted.to_committed {
        Some(committed_offsets(consumer, aborted, &assigned)?)
    } else {
        None
    };
    let mut sought = 0;
    for read in &aborted.read {
        if assigned
            .find_partition(&read.topic, read.partition)
            .is_none()
        {
            continue;
        }
        let offset = committed
            .as_ref()
            .and_then(|list| list.find_partition(&read.topic, read.partition))
            .and_then(|elem| match elem.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .unwrap_or(read.first_offset);
        consumer
            .seek(
                &read.topic,
                read.partition,
                Offset::Offset(offset),
                SEEK_TIMEOUT,
            )
            .map_err(|source| EngineError::Kafka {
                operation: "rewinding a partition",
                source,
            })?;
        sought += 1;
    }
    if aborted.to_committed {
        tracing::info!(
            partitions = sought,
            "Rewound the consumer to the committed offsets of the settled batch."
        );
    } else {
        tracing::info!(
            partitions = sought,
            "Rewound the consumer to where the aborted batch began."
        );
    }
    Ok(())
}

/// The group's committed offsets of the span's partitions that are still assigned.
fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    span: &Span,
    assigned: &TopicPartitionList,
) -> Result<TopicPartitionList, EngineError> {
    let mut wanted = TopicPartitionList::with_capacity(span.read.len());
    for read in &span.read {
        if assigned
            .find_partition(&read.topic, read.partition)
            .is_some()
        {
            wanted.add_partition(&read.topic, read.partition);
        }
    }
    consumer
        .committed_offsets(wanted, SEEK_TIMEOUT)
        .map_err(|source| EngineError::Kafka {
            operation: "reading the committed offsets of a settled batch",
            source,
        })
}

/// Seeks one partition back to `offset` (a record polled but not processed: it is read again).
pub(crate) fn seek_to<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), EngineError> {
    consumer
        .seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)
        .map_err(|source| EngineError::Kafka {
            operation: "seeking back to an unprocessed record",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_tallies_records_and_bytes_per_partition_and_output() {
        let mut batch = Batch::new(Instant::now());
        assert!(batch.note("a", 0, 10, 100), "a new partition");
        assert!(!batch.note("a", 0, 11, 50), "a partition already read");
        assert!(batch.note("a", 1, 5, 1));
        assert!(batch.note("b", 0, 7, 1));
        batch.note_written("out", 20);
        batch.note_written("out", 30);
        assert_eq!(batch.records, 4);
        let first: Vec<i64> = batch.read.iter().map(|r| r.first_offset).collect();
        assert_eq!(first, vec![10, 5, 7]);
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
