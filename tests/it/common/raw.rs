//! Writing arbitrary records (any key, value and headers bytes, tombstones, missing keys) to chosen
//! partitions of a fresh topic, remembering where each landed: on a topic written only by this
//! idempotent writer, the n-th record of a partition is at offset n.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::broker::client_config;
use super::input::DeliveryCheck;
use super::read::{read_topic, Isolation};

/// One record to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp (ms); `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

impl RawRecord {
    pub fn new(key: Option<&str>, value: Option<Vec<u8>>) -> Self {
        Self {
            key: key.map(|k| k.as_bytes().to_vec()),
            value,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the record's timestamp (ms).
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }
}

/// Where a written record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coordinates {
    pub partition: i32,
    pub offset: i64,
}

/// Writes [`RawRecord`]s to explicit partitions of one topic: the one input writer of the tests
/// (`InputWriter` writes its id records through it).
pub struct RawWriter {
    producer: BaseProducer<DeliveryCheck>,
    bootstrap: String,
    topic: String,
    next_offset: Vec<i64>,
    /// Keep every record and check on flush that each landed where this writer said.
    checked: bool,
    /// Every record written, with where it landed, in write order (checked writers only).
    pub written: Vec<(Coordinates, RawRecord)>,
}

impl RawWriter {
    /// A writer that keeps what it wrote and checks on [`flush`](Self::flush) that every record
    /// sits where it said (reading the topic back).
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        Self::with_check(bootstrap, topic, partitions, true)
    }

    /// A writer for bulk input: it keeps nothing and checks only deliveries (the caller knows
    /// what it wrote).
    pub fn bulk(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        Self::with_check(bootstrap, topic, partitions, false)
    }

    fn with_check(bootstrap: &str, topic: &str, partitions: i32, checked: bool) -> Self {
        let producer = client_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000")
            .set("message.max.bytes", "2000000")
            .set("message.timeout.ms", "60000")
            .create_with_context(DeliveryCheck::default())
            .expect("create input producer");
        Self {
            producer,
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            next_offset: vec![0; partitions as usize],
            checked,
            written: Vec::new(),
        }
    }

    /// The number of partitions written to.
    pub fn partitions(&self) -> i32 {
        i32::try_from(self.next_offset.len()).expect("partition count fits in i32")
    }

    /// The offset the next record written to `partition` will land at.
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.next_offset[partition as usize]
    }

    /// Writes `record` to `partition` (not yet flushed); returns where it will land.
    pub fn write(&mut self, partition: i32, record: RawRecord) -> Coordinates {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic)
            .partition(partition)
            .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        if let Some(timestamp) = record.timestamp {
            base = base.timestamp(timestamp);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce a raw record to {}: {e}", self.topic),
            }
        }
        self.producer.poll(Duration::ZERO);
        let slot = &mut self.next_offset[partition as usize];
        let at = Coordinates {
            partition,
            offset: *slot,
        };
        *slot += 1;
        if self.checked {
            self.written.push((at, record));
        }
        at
    }

    /// Writes `records` round-robin over the partitions; returns where each landed.
    pub fn write_all(&mut self, records: Vec<RawRecord>) -> Vec<Coordinates> {
        let partitions = self.next_offset.len();
        records
            .into_iter()
            .enumerate()
            .map(|(n, record)| {
                let partition = i32::try_from(n % partitions).expect("partition fits in i32");
                self.write(partition, record)
            })
            .collect()
    }

    /// Waits until every record is acknowledged (fails the test if any delivery failed); a
    /// checked writer then checks that each sits at the offset this writer assigned it (reading
    /// the topic back).
    pub fn flush(&mut self) {
        self.producer
            .flush(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("flush input to {}: {e}", self.topic));
        let context = self.producer.context();
        let failed = context.failed();
        assert_eq!(
            failed,
            0,
            "{failed} input records to {} failed delivery, first error: {:?}",
            self.topic,
            context.first_error()
        );
        if !self.checked {
            return;
        }
        let stored = read_topic(&self.bootstrap, &self.topic, Isolation::ReadUncommitted);
        assert_eq!(
            stored.len(),
            self.written.len(),
            "records on {}",
            self.topic
        );
        for (at, record) in &self.written {
            let found = stored
                .iter()
                .find(|r| r.partition == at.partition && r.offset == at.offset)
                .unwrap_or_else(|| panic!("no record at {at:?} of {}", self.topic));
            assert_eq!(
                found.value,
                record.value.clone().unwrap_or_default(),
                "record at {at:?} of {} is not the one written there",
                self.topic
            );
        }
    }

    /// End offsets of the topic as written.
    pub fn end_offsets(&self) -> Vec<i64> {
        self.next_offset.clone()
    }
}
