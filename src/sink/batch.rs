//! The open batch of a sink worker: the rows read since the last commit, the records they came
//! from, and each partition's end (the offset after its last record, with the epoch it was read
//! under), which is what the batch's transaction stores as the partitions' next offsets.
//!
//! Invariants: row `i` came from record `sources[origin[i]]` (a record gives zero or more rows;
//! only records with rows are kept in `sources`); a source holds the record's coordinates, and
//! its bytes (key, value, headers) only when the worker keeps them for dead letters
//! (`poison_policy = "dead_letter"`): under `fail` and `skip` a rejected row needs only where
//! it came from, so the batch copies no record (measured in docs/BENCHMARKS.md); every
//! record read, poison included, moves its partition's end, so a skipped or dead-lettered record
//! commits with the batch; a partition given up (revoked, lost) leaves the batch entirely (rows,
//! records and end), since its records were not committed and its next owner reads them again.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::OwnedMessage;

use super::mapping::Row;
use super::rows::RecordRows;
use super::write::PartitionEnd;

/// The open batch: rows, the records they came from, and each partition's end.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// When its first record arrived (`None`: empty).
    pub(super) started: Option<Instant>,
    /// How old its first record was when it arrived: the wall clock then minus the record's
    /// Kafka timestamp (ms; `None`: no timestamp). For the per-batch timings only.
    pub(super) first_age_ms: Option<i64>,
    /// Records read, poison included.
    pub(super) records: usize,
    /// The rows to write, in record order.
    pub(super) rows: Vec<Row>,
    /// The index in `sources` of each row's record (same index as `rows`).
    pub(super) origin: Vec<usize>,
    /// The records that gave rows, for the poison policy of rejected rows.
    pub(super) sources: Vec<Source>,
    /// The topics read (one shared name each, so a source costs no allocation for its topic).
    topics: Vec<Arc<str>>,
    /// Per partition read, the offset after its last record and the epoch it was read under.
    pub(super) ends: Vec<PartitionEnd>,
}

/// Where a row's record came from, and (kept for dead letters only) the record itself.
#[derive(Debug)]
pub(super) struct Source {
    /// The input topic.
    pub(super) topic: Arc<str>,
    /// The input partition.
    pub(super) partition: i32,
    /// The record's offset.
    pub(super) offset: i64,
    /// The record (key, value, headers), under `poison_policy = "dead_letter"` only.
    pub(super) message: Option<OwnedMessage>,
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

    /// Adds the rows of the record at `topic/partition@offset` (none: nothing but its end, as
    /// for poison); `message`: its copy, kept for dead letters (else only its coordinates).
    pub(super) fn add(
        &mut self,
        (topic, partition, offset): (&str, i32, i64),
        message: Option<OwnedMessage>,
        rows: RecordRows,
    ) {
        let count = rows.len();
        if count == 0 {
            return;
        }
        let topic = match self.topics.iter().find(|t| ***t == *topic) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(topic);
                self.topics.push(Arc::clone(&shared));
                shared
            }
        };
        let index = self.sources.len();
        self.origin.extend(std::iter::repeat_n(index, count));
        match rows {
            RecordRows::One(row) => self.rows.push(row),
            RecordRows::Many(rows) => self.rows.extend(rows),
        }
        self.sources.push(Source {
            topic,
            partition,
            offset,
            message,
        });
    }

    /// The record a row came from.
    pub(super) fn source_of(&self, row: usize) -> Option<&Source> {
        self.origin.get(row).and_then(|&m| self.sources.get(m))
    }

    /// Drops what the batch read from partitions given up (they were not committed).
    pub(super) fn drop_partitions(&mut self, given_up: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            given_up.iter().any(|(t, p)| *p == partition && t == topic)
        };
        let before = self.rows.len();
        // New index of each kept message.
        let mut kept = 0;
        let renumber: Vec<Option<usize>> = self
            .sources
            .iter()
            .map(|m| {
                (!gone(&m.topic, m.partition)).then(|| {
                    kept += 1;
                    kept - 1
                })
            })
            .collect();
        let rows = std::mem::take(&mut self.rows);
        let origin = std::mem::take(&mut self.origin);
        for (row, from) in rows.into_iter().zip(origin) {
            if let Some(Some(to)) = renumber.get(from) {
                self.rows.push(row);
                self.origin.push(*to);
            }
        }
        let mut flags = renumber.iter();
        self.sources
            .retain(|_| flags.next().is_some_and(Option::is_some));
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
    use rdkafka::message::{Message, OwnedMessage, Timestamp};

    use super::*;

    fn read(batch: &mut Batch, topic: &str, partition: i32, offset: i64, epoch: i64) {
        batch.note(topic, partition, offset, epoch);
        let row = |table| Row {
            table,
            values: vec![Some(format!("{partition}@{offset}"))],
        };
        // Odd offsets keep the record's copy (as for dead letters), even ones only coordinates.
        let message = (offset % 2 == 1).then(|| {
            OwnedMessage::new(
                None,
                None,
                topic.to_string(),
                Timestamp::NotAvailable,
                partition,
                offset,
                None,
            )
        });
        // Two rows per record (two tables), as a sink topology may give.
        batch.add(
            (topic, partition, offset),
            message,
            RecordRows::Many(vec![row(0), row(1)]),
        );
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
        assert_eq!((batch.records, batch.rows.len()), (4, 6));
        let source = batch.source_of(5).expect("row 5's record");
        assert_eq!(
            (&*source.topic, source.partition, source.offset),
            ("t", 0, 11)
        );
        assert_eq!(source.message.as_ref().map(Message::offset), Some(11));
        let source = batch.source_of(0).expect("row 0's record");
        assert_eq!((source.offset, source.message.is_none()), (10, true));
    }

    #[test]
    fn a_partition_given_up_leaves_the_batch_entirely() {
        let mut batch = Batch::default();
        read(&mut batch, "t", 0, 10, 1);
        read(&mut batch, "t", 1, 20, 1);
        read(&mut batch, "t", 0, 11, 1);
        batch.drop_partitions(&[("t".to_string(), 0)]);
        let rows: Vec<_> = batch
            .rows
            .iter()
            .map(|r| (r.table, r.values.clone()))
            .collect();
        let value = Some("1@20".to_string());
        assert_eq!(rows, vec![(0, vec![value.clone()]), (1, vec![value])]);
        assert_eq!(batch.sources.len(), 1);
        assert_eq!(batch.origin, vec![0, 0]);
        assert_eq!(batch.source_of(1).map(|s| s.offset), Some(20));
        assert_eq!(batch.ends.len(), 1);
        assert_eq!(batch.records, 1);
        assert!(batch.started.is_some());

        batch.drop_partitions(&[("t".to_string(), 1)]);
        assert!(batch.started.is_none() && batch.rows.is_empty() && batch.ends.is_empty());
    }
}
