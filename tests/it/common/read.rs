//! Reading what the stage wrote, and where the group stands: whole-topic readers for both isolation
//! levels, end offsets (high watermark or last stable offset), committed group offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::broker::{client_config, unique_name};

/// Which records a reader sees: the library's own isolation levels.
pub use kstage::verify::Isolation;

/// One record read back from a topic.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The value's bytes (empty for a tombstone: see `tombstone`).
    pub value: Vec<u8>,
    /// True when the record has no value at all.
    pub tombstone: bool,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ReadRecord {
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The record as the library's verifier takes it (`kstage::verify::check_records`).
    pub fn to_record(&self) -> kstage::verify::Record {
        kstage::verify::Record {
            partition: self.partition,
            offset: self.offset,
            key: self.key.clone().map(String::into_bytes),
            value: (!self.tombstone).then(|| self.value.clone()),
            headers: self.headers.clone(),
        }
    }
}

/// A consumer outside any group, for assign-only reading and offset queries.
fn standalone_consumer(bootstrap: &str, isolation: Isolation) -> BaseConsumer {
    client_config(bootstrap)
        // A group id is harmless for assign-only use, and some librdkafka paths want one.
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation.as_str())
        .create()
        .expect("create reader consumer")
}

/// Number of partitions of `topic`.
pub fn partition_count(bootstrap: &str, topic: &str) -> i32 {
    let consumer = standalone_consumer(bootstrap, Isolation::ReadUncommitted);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("topic {topic} missing from metadata"));
    i32::try_from(t.partitions().len()).expect("partition count fits in i32")
}

/// A standalone consumer assigned every partition of `topic` from the beginning, and the
/// partition count.
fn from_the_beginning(bootstrap: &str, topic: &str, isolation: Isolation) -> (i32, BaseConsumer) {
    let partitions = partition_count(bootstrap, topic);
    let consumer = standalone_consumer(bootstrap, isolation);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition to assignment");
    }
    consumer.assign(&assignment).expect("assign partitions");
    (partitions, consumer)
}

/// Reads `topic` from the beginning to its current end as `isolation` sees it (the high
/// watermark for read_uncommitted, the last stable offset for read_committed), every partition.
/// Records are returned per partition in offset order.
pub fn read_topic(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<ReadRecord> {
    let (partitions, consumer) = from_the_beginning(bootstrap, topic, isolation);

    // A deadline on silence, not on the whole read: a large output (the soak's) takes longer.
    let timeout = Duration::from_secs(120);
    let mut deadline = Instant::now() + timeout;
    let mut records: BTreeMap<i32, Vec<ReadRecord>> = BTreeMap::new();
    let mut at_end = vec![false; partitions as usize];
    while at_end.iter().any(|done| !done) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} ({isolation:?}) did not reach the end of partitions {:?}: nothing \
             received for {timeout:?}",
            (0..partitions)
                .filter(|p| !at_end[*p as usize])
                .collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(done) = at_end.get_mut(p as usize) {
                    *done = true;
                }
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e} (retrying)"),
            Some(Ok(message)) => {
                deadline = Instant::now() + timeout;
                let headers = message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(done) = at_end.get_mut(message.partition() as usize) {
                    // EOF is emitted again if more records arrive after it; keep reading.
                    *done = false;
                }
                records
                    .entry(message.partition())
                    .or_default()
                    .push(ReadRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        tombstone: message.payload().is_none(),
                        headers,
                    });
            }
        }
    }
    records.into_values().flatten().collect()
}

/// End offset of every partition of `topic` as `isolation` sees it: the high watermark for
/// read_uncommitted, the last stable offset for read_committed (librdkafka's ListOffsets uses the
/// client's isolation level).
pub fn end_offsets(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<i64> {
    let partitions = partition_count(bootstrap, topic);
    let consumer = standalone_consumer(bootstrap, isolation);
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"))
                .1
        })
        .collect()
}

/// True when no partition of `topic` has an open transaction: last stable offset == high watermark.
pub fn no_open_transaction(bootstrap: &str, topic: &str) -> bool {
    end_offsets(bootstrap, topic, Isolation::ReadCommitted)
        == end_offsets(bootstrap, topic, Isolation::ReadUncommitted)
}

/// Reads a group's committed offsets.
pub struct GroupOffsets {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl GroupOffsets {
    /// `stable = true` asks for stable offsets (KIP-447 `require_stable`: the broker waits while a
    /// transaction holding offsets for the group is pending); use it for final checks. Progress
    /// probes during a run use `stable = false`, which never waits.
    pub fn new(bootstrap: &str, group: &str, topic: &str, stable: bool) -> Self {
        let isolation = if stable {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        };
        // This consumer never subscribes, so it never joins the group it reads offsets of.
        let consumer: BaseConsumer = client_config(bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation.as_str())
            .create()
            .expect("create offsets consumer");
        let partitions = partition_count(bootstrap, topic);
        Self {
            consumer,
            topic: topic.to_string(),
            partitions,
        }
    }

    /// Committed offset per partition (`None`: nothing committed yet). `Err` on a broker error,
    /// e.g. while a transaction is pending and stable offsets were asked for.
    pub fn try_committed(&self) -> Result<Vec<Option<i64>>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))?;
        Ok((0..self.partitions)
            .map(
                |p| match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect())
    }

    /// Committed offsets, retrying broker errors for up to 60 s.
    pub fn committed(&self) -> Vec<Option<i64>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_committed() {
                Ok(offsets) => return offsets,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("committed offsets of {}: {e} (retrying)", self.topic);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("committed offsets of {}: {e}", self.topic),
            }
        }
    }

    /// Sum of committed offsets (records consumed-and-committed, on a fresh input topic); 0 on error.
    pub fn progress(&self) -> i64 {
        self.try_committed()
            .map(|offsets| offsets.iter().map(|o| o.unwrap_or(0)).sum())
            .unwrap_or(0)
    }

    /// True when the committed offsets equal `ends` (the input's end offsets; an empty partition
    /// counts as caught up with nothing committed).
    pub fn caught_up(&self, ends: &[i64]) -> bool {
        self.try_committed()
            .map(|offsets| offsets.iter().zip(ends).all(|(c, e)| c.unwrap_or(0) == *e))
            .unwrap_or(false)
    }
}

/// A reader that follows a topic from the beginning while a test runs (e.g. across crashes), the
/// way a downstream consumer would; [`LiveReader::stop`] hands back everything it saw.
pub struct LiveReader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<ReadRecord>>>,
}

impl LiveReader {
    pub fn start(bootstrap: &str, topic: &str, isolation: Isolation) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_, consumer) = from_the_beginning(bootstrap, topic, isolation);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let topic = topic.to_string();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => eprintln!("live reader of {topic}: {e}"),
                    Some(Ok(message)) => seen.push(ReadRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        tombstone: message.payload().is_none(),
                        headers: Vec::new(),
                    }),
                }
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops following and returns every record seen, in the order seen.
    pub fn stop(mut self) -> Vec<ReadRecord> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("live reader already stopped")
            .join()
            .expect("live reader panicked")
    }
}

impl Drop for LiveReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Records `live` saw that are not, at the same partition and offset with the same value, in
/// `settled` (a full read after the run): what a reader saw during the run and should not have,
/// e.g. a record of a transaction that was later aborted.
pub fn seen_but_not_settled(live: &[ReadRecord], settled: &[ReadRecord]) -> Vec<String> {
    let settled: std::collections::HashMap<(i32, i64), &[u8]> = settled
        .iter()
        .map(|r| ((r.partition, r.offset), r.value.as_slice()))
        .collect();
    live.iter()
        .filter(|r| settled.get(&(r.partition, r.offset)) != Some(&r.value.as_slice()))
        .map(|r| format!("[{}]@{}: {}", r.partition, r.offset, r.value_str()))
        .collect()
}
