//! Writing test input: records with unique ids, produced round-robin to explicit partitions by an
//! idempotent producer, so each record's input partition and its sequence number within that
//! partition are known (on a fresh topic written only by this writer, `seq` is also the offset).
//!
//! Record layout: key = id; value = `{"id":"id-000000042","partition":0,"seq":14}` (plus `"note"`
//! for a marked record); header `kstage-test-id` = id.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::broker::client_config;

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

/// Writes input records with unique ids round-robin over a topic's partitions.
pub struct InputWriter {
    producer: BaseProducer<DeliveryCheck>,
    topic: String,
    partitions: i32,
    next_id: u64,
    next_seq: Vec<i64>,
    /// Every record written so far, in write order.
    pub written: Vec<InputRecord>,
}

impl InputWriter {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        let producer = client_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "60000")
            .create_with_context(DeliveryCheck::default())
            .expect("create input producer");
        Self {
            producer,
            topic: topic.to_string(),
            partitions,
            next_id: 0,
            next_seq: vec![0; partitions as usize],
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
        let partition = i32::try_from(n % self.partitions as u64).expect("partition fits in i32");
        let seq = self.next_seq[partition as usize];
        self.next_seq[partition as usize] += 1;
        let mut value = serde_json::json!({ "id": id, "partition": partition, "seq": seq });
        if let Some(note) = note {
            value["note"] = serde_json::Value::String(note.to_string());
        }
        let payload = value.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: ID_HEADER,
            value: Some(&id),
        });
        let mut record = BaseRecord::to(&self.topic)
            .partition(partition)
            .key(&id)
            .payload(&payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce input record {id}: {e}"),
            }
        }
        self.producer.poll(Duration::ZERO);
        let written = InputRecord { id, partition, seq };
        self.written.push(written.clone());
        written
    }

    /// Waits until every record is acknowledged; fails the test if any delivery failed.
    pub fn flush(&mut self) {
        self.producer
            .flush(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("flush input to {}: {e}", self.topic));
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        assert_eq!(
            failed,
            0,
            "{failed} input records failed delivery, first error: {:?}",
            context.first_error.lock().map(|e| e.clone())
        );
    }

    /// End offsets of the input as written (next seq per partition).
    pub fn end_offsets(&self) -> Vec<i64> {
        self.next_seq.clone()
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
