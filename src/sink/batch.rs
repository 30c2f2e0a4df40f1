//! The open batch of a sink worker: the rows read since the last commit, the records they came
//! from, and each partition's end (the offset after its last record, with the epoch it was read
//! under), which is what the batch's transaction stores as the partitions' next offsets.
//!
//! Invariants: `rows` and `messages` are index-aligned (row `i` came from record `i`); every
//! record read, poison included, moves its partition's end, so a skipped or dead-lettered record
//! commits with the batch; a partition given up (revoked, lost) leaves the batch entirely (rows,
//! records and end), since its records were not committed and its next owner reads them again.

use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};

use super::mapping::Row;
use super::write::PartitionEnd;

/// The open batch: rows, the messages they came from, and each partition's end.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// When its first record arrived (`None`: empty).
    pub(super) started: Option<Instant>,
    /// Records read, poison included.
    pub(super) records: usize,
    /// The rows to write, in record order.
    pub(super) rows: Vec<Row>,
    /// The record of each row (same index), for dead letters of rejected rows.
    pub(super) messages: Vec<OwnedMessage>,
    /// Per partition read, the offset after its last record and the epoch it was read under.
    pub(super) ends: Vec<PartitionEnd>,
}

impl Batch {
    /// Counts a record of `topic/partition` at `offset` (a row or poison) into the ends.
    pub(super) fn note(&mut self, topic: &str, partition: i32, offset: i64, epoch: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.records += 1;
        match self
            .ends
            .iter_mut()
            .find(|e| e.partition == partition && e.topic == topic)
        {
            Some(end) => {
                end.next_offset = offset + 1;
                end.records += 1;
            }
            None => self.ends.push(PartitionEnd {
                topic: topic.to_string(),
                partition,
                next_offset: offset + 1,
                epoch,
                records: 1,
            }),
        }
    }

    /// Drops what the batch read from partitions given up (they were not committed).
    pub(super) fn drop_partitions(&mut self, given_up: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            given_up.iter().any(|(t, p)| *p == partition && t == topic)
        };
        let before = self.rows.len();
        let keep: Vec<bool> = self
            .messages
            .iter()
            .map(|m| !gone(m.topic(), m.partition()))
            .collect();
        let mut flags = keep.iter();
        self.rows.retain(|_| *flags.next().unwrap_or(&true));
        let mut flags = keep.iter();
        self.messages.retain(|_| *flags.next().unwrap_or(&true));
        self.ends.retain(|e| !gone(&e.topic, e.partition));
        self.records = self
            .ends
            .iter()
            .map(|e| usize::try_from(e.records).unwrap_or(usize::MAX))
            .sum();
        if self.ends.is_empty() {
            *self = Self::default();
        }
        if before != self.rows.len() {
            tracing::info!(
                dropped = before - self.rows.len(),
                "Dropped the open batch's rows of revoked partitions."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    fn read(batch: &mut Batch, topic: &str, partition: i32, offset: i64, epoch: i64) {
        batch.note(topic, partition, offset, epoch);
        batch.rows.push(Row {
            values: vec![Some(format!("{partition}@{offset}"))],
        });
        batch.messages.push(OwnedMessage::new(
            None,
            None,
            topic.to_string(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        ));
    }

    #[test]
    fn each_partition_ends_after_its_last_record_with_its_epoch() {
        let mut batch = Batch::default();
        read(&mut batch, "t", 0, 10, 3);
        read(&mut batch, "t", 1, 5, 4);
        read(&mut batch, "t", 0, 11, 3);
        batch.note("t", 1, 6, 4); // poison: no row, but its offset commits with the batch
        let ends: Vec<(i32, i64, i64, u64)> = batch
            .ends
            .iter()
            .map(|e| (e.partition, e.next_offset, e.epoch, e.records))
            .collect();
        assert_eq!(ends, vec![(0, 12, 3, 2), (1, 7, 4, 2)]);
        assert_eq!((batch.records, batch.rows.len()), (4, 3));
    }

    #[test]
    fn a_partition_given_up_leaves_the_batch_entirely() {
        let mut batch = Batch::default();
        read(&mut batch, "t", 0, 10, 1);
        read(&mut batch, "t", 1, 20, 1);
        read(&mut batch, "t", 0, 11, 1);
        batch.drop_partitions(&[("t".to_string(), 0)]);
        let rows: Vec<_> = batch.rows.iter().map(|r| r.values.clone()).collect();
        assert_eq!(rows, vec![vec![Some("1@20".to_string())]]);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.ends.len(), 1);
        assert_eq!(batch.records, 1);
        assert!(batch.started.is_some());

        batch.drop_partitions(&[("t".to_string(), 1)]);
        assert!(batch.started.is_none() && batch.rows.is_empty() && batch.ends.is_empty());
    }
}
