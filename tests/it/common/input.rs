//! Writing test input: records with unique ids, produced round-robin to explicit partitions by the
//! idempotent [`RawWriter`], so each record's input partition and its sequence number within that
//! partition are known (on a fresh topic written only by this writer, `seq` is also the offset).
//!
//! Record layout: key = id; value = `{"id":"id-000000042","partition":0,"seq":14}` (plus `"note"`
//! for a marked record); header `kstage-test-id` = id.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kstage::verify::Record;
use rdkafka::client::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;

use super::raw::{Coordinates, RawRecord, RawWriter};
use super::read::ReadRecord;

/// The header every input record carries, holding its id.
pub const ID_HEADER: &str = "kstage-test-id";

/// What the test wrote: one input record.
#[derive(Clone, Debug)]
pub struct InputRecord {
    pub id: String,
    pub partition: i32,
    pub seq: i64,
}

/// Counts failed deliveries, so a seed that silently lost records fails the test.
#[derive(Default)]
pub struct DeliveryCheck {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryCheck {
    /// Deliveries that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first delivery error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Writes input records with unique ids round-robin over a topic's partitions, through the
/// shared [`RawWriter`].
pub struct InputWriter {
    raw: RawWriter,
    next_id: u64,
    /// Every record written so far, in write order.
    pub written: Vec<InputRecord>,
}

impl InputWriter {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        Self {
            raw: RawWriter::bulk(bootstrap, topic, partitions),
            next_id: 0,
            written: Vec::new(),
        }
    }

    /// Writes `count` more records (not yet flushed).
    pub fn write(&mut self, count: usize) {
        for _ in 0..count {
            self.write_one(None);
        }
    }

    /// Writes one record whose value contains `note`; returns it.
    pub fn write_marked(&mut self, note: &str) -> InputRecord {
        self.write_one(Some(note))
    }

    fn write_one(&mut self, note: Option<&str>) -> InputRecord {
        let n = self.next_id;
        self.next_id += 1;
        let id = format!("id-{n:09}");
        let partitions = u64::try_from(self.raw.partitions()).expect("positive partition count");
        let partition = i32::try_from(n % partitions).expect("partition fits in i32");
        let seq = self.raw.next_offset(partition);
        let mut value = serde_json::json!({ "id": id, "partition": partition, "seq": seq });
        if let Some(note) = note {
            value["note"] = serde_json::Value::String(note.to_string());
        }
        let record =
            RawRecord::new(Some(&id), Some(value.to_string().into_bytes())).header(ID_HEADER, &id);
        let at = self.raw.write(partition, record);
        debug_assert_eq!(at.offset, seq);
        let written = InputRecord { id, partition, seq };
        self.written.push(written.clone());
        written
    }

    /// Writes a record of the test's own making to `partition`, outside `written` (a record the
    /// stage is expected not to copy, e.g. one it dead-letters).
    pub fn write_raw(&mut self, partition: i32, record: RawRecord) -> Coordinates {
        self.raw.write(partition, record)
    }

    /// Waits until every record is acknowledged; fails the test if any delivery failed.
    pub fn flush(&mut self) {
        self.raw.flush();
    }

    /// End offsets of the input as written (next seq per partition).
    pub fn end_offsets(&self) -> Vec<i64> {
        self.raw.end_offsets()
    }
}

/// Writes `count` records to the existing `topic` and flushes them.
pub fn seed(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> InputWriter {
    let mut writer = InputWriter::new(bootstrap, topic, partitions);
    writer.write(count);
    writer.flush();
    writer
}

/// An [`InputWriter`] producing in a background thread, `batch` records every `pause`, until stopped.
pub struct BackgroundWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<InputWriter>>,
}

impl BackgroundWriter {
    pub fn start(mut writer: InputWriter, batch: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                writer.write(batch);
                std::thread::sleep(pause);
            }
            writer.flush();
            writer
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops producing, flushes, and hands the writer back (with everything it wrote).
    pub fn stop(mut self) -> InputWriter {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("background writer already stopped")
            .join()
            .expect("background input writer panicked")
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where an output record came from, parsed from the input JSON its (passthrough-copied) value
/// carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub id: String,
    pub partition: i32,
    pub seq: i64,
}

/// Parses the input JSON carried in a record's value (an input record, or a passthrough copy).
pub fn origin(record: &ReadRecord) -> Option<Origin> {
    let value: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    Some(Origin {
        id: value.get("id")?.as_str()?.to_string(),
        partition: i32::try_from(value.get("partition")?.as_i64()?).ok()?,
        seq: value.get("seq")?.as_i64()?,
    })
}

/// The written records an input-offset boundary selects: those with `seq < committed[partition]`
/// (seq is the offset on a fresh input topic written only by the test's writer).
pub fn below_committed(written: &[InputRecord], committed: &[Option<i64>]) -> Vec<InputRecord> {
    written
        .iter()
        .filter(|r| {
            r.seq
                < committed
                    .get(r.partition as usize)
                    .copied()
                    .flatten()
                    .unwrap_or(0)
        })
        .cloned()
        .collect()
}

impl InputRecord {
    /// The record as the verifier sees an input record: at `(partition, seq)`, key and JSON id
    /// field both the id (what [`super::check`] traces output records by).
    pub fn to_record(&self) -> Record {
        Record {
            partition: self.partition,
            offset: self.seq,
            key: Some(self.id.clone().into_bytes()),
            value: Some(
                serde_json::json!({ "id": self.id })
                    .to_string()
                    .into_bytes(),
            ),
            headers: Vec::new(),
        }
    }
}
