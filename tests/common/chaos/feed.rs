//! The two ends of a scenario that run beside the stages: the [`Feeder`] writing the input at a
//! steady rate through an idempotent producer, and the [`LiveTail`], a read_committed consumer
//! following the final output the whole time, as a downstream application would.
//!
//! Also the progress probes: committed progress of a group, and whether a group has drained
//! its topic (nothing visible read_committed at or after its committed offsets).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kstage::verify::read::{Bounds, Client};
use kstage::verify::{Isolation as VerifyIsolation, NoProgress};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::common::broker::client_config;
use crate::common::read::{partition_count, GroupOffsets};
use crate::common::InputWriter;

/// Writes `total` input records, `rate` per second (0: as fast as possible), in a thread.
pub struct Feeder {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<InputWriter>>,
}

impl Feeder {
    pub fn start(mut writer: InputWriter, total: u64, rate: u64) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, flag) = (Arc::clone(&written), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut done = 0u64;
            while done < total && !flag.load(Ordering::Relaxed) {
                let due = if rate == 0 {
                    total
                } else {
                    let elapsed = started.elapsed().as_secs_f64();
                    ((elapsed * rate as f64) as u64 + rate / 20).min(total)
                };
                let batch = due.saturating_sub(done).min(5_000);
                if batch == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                writer.write(batch as usize);
                done += batch;
                count.store(done, Ordering::Relaxed);
            }
            writer.flush();
            writer
        });
        Self {
            written,
            stop,
            thread: Some(thread),
        }
    }

    /// Records handed to the producer so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// True once the thread has written everything and flushed.
    pub fn is_done(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops writing (if not done yet), flushes, and hands back the writer.
    pub fn stop(self) -> InputWriter {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    /// Waits for the last record to be acknowledged and hands back the writer.
    pub fn finish(mut self) -> InputWriter {
        self.thread
            .take()
            .expect("feeder already finished")
            .join()
            .expect("the input feeder panicked (a delivery failed?)")
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A record as the live tail saw it: where, and a hash of its value.
pub type Sighting = ((i32, i64), u64);

fn value_hash(value: Option<&[u8]>) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A read_committed consumer following a topic from the beginning until stopped.
pub struct LiveTail {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sighting>>>,
}

impl LiveTail {
    pub fn start(bootstrap: &str, topic: &str) -> Self {
        let partitions = partition_count(bootstrap, topic);
        let consumer: BaseConsumer = client_config(bootstrap)
            .set("group.id", "kstage-live-tail")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("create the live tail consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .expect("add partition");
        }
        consumer.assign(&assignment).expect("assign the live tail");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        seen.push(((m.partition(), m.offset()), value_hash(m.payload())))
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(_)) => {}
                }
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops following; returns what it saw.
    pub fn stop(mut self) -> Vec<Sighting> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("live tail already stopped")
            .join()
            .expect("the live tail panicked")
    }
}

impl Drop for LiveTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Records the live tail saw that the settled read_committed view of `topic` does not hold at
/// the same offset with the same value: what a downstream reader saw and should never have.
pub fn unsettled(bootstrap: &str, topic: &str, live: &[Sighting]) -> Vec<String> {
    let client = Client::new(bootstrap, &[]);
    let consumer = client
        .consumer(VerifyIsolation::ReadCommitted, None)
        .expect("consumer");
    let partitions = client.partitions(&consumer, topic).expect("partitions");
    let marks = client
        .watermarks(&consumer, topic, partitions)
        .expect("watermarks");
    let bounds: Vec<Bounds> = (0..partitions)
        .zip(marks)
        .map(|(partition, (start, end))| Bounds {
            partition,
            start,
            end,
        })
        .collect();
    let mut settled: HashMap<(i32, i64), u64> = HashMap::new();
    client
        .read(
            topic,
            VerifyIsolation::ReadCommitted,
            &bounds,
            &NoProgress,
            |m| {
                settled.insert((m.partition(), m.offset()), value_hash(m.payload()));
            },
        )
        .expect("read the settled output");
    live.iter()
        .filter(|(at, hash)| settled.get(at) != Some(hash))
        .map(|((p, o), _)| format!("{topic}[{p}]@{o}"))
        .collect()
}

/// Committed progress of `group` on `topic` (sum of committed offsets; 0 while unreadable).
pub struct Progress {
    offsets: GroupOffsets,
    best: i64,
}

impl Progress {
    pub fn new(bootstrap: &str, group: &str, topic: &str) -> Self {
        Self {
            offsets: GroupOffsets::new(bootstrap, group, topic, false),
            best: 0,
        }
    }

    /// The highest committed progress seen so far.
    pub fn get(&mut self) -> i64 {
        self.best = self.best.max(self.offsets.progress());
        self.best
    }

    /// Committed offset per partition right now (`None` on an error).
    pub fn per_partition(&self) -> Option<Vec<i64>> {
        self.offsets
            .try_committed()
            .ok()
            .map(|o| o.into_iter().map(|c| c.unwrap_or(0)).collect())
    }
}

/// True when `group` has nothing left to read on `topic`: no record visible read_committed at
/// or after its committed offset (the last offsets of a transactional topic are markers, which
/// a position may or may not have stepped over).
pub fn drained(bootstrap: &str, group: &str, topic: &str) -> bool {
    let offsets = GroupOffsets::new(bootstrap, group, topic, false);
    let Ok(committed) = offsets.try_committed() else {
        return false;
    };
    let client = Client::new(bootstrap, &[]);
    let Ok(consumer) = client.consumer(VerifyIsolation::ReadCommitted, None) else {
        return false;
    };
    let Ok(marks) = client.watermarks(&consumer, topic, committed.len() as i32) else {
        return false;
    };
    let bounds: Vec<Bounds> = (0..)
        .zip(committed.iter().zip(marks))
        .map(|(partition, (c, (low, lso)))| Bounds {
            partition,
            start: c.unwrap_or(low).max(low),
            end: lso,
        })
        .collect();
    let mut left = 0u64;
    client
        .read(
            topic,
            VerifyIsolation::ReadCommitted,
            &bounds,
            &NoProgress,
            |_| left += 1,
        )
        .is_ok_and(|_| left == 0)
}

/// Partitions assigned to each member of `group` (by client id: a stage's is its transactional
/// id), as the group coordinator describes it; `None` unless the group is stable.
pub fn assignment(bootstrap: &str, group: &str) -> Option<HashMap<String, usize>> {
    let consumer: BaseConsumer = client_config(bootstrap).create().ok()?;
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    if info.state() != "Stable" {
        return None;
    }
    info.members()
        .iter()
        .map(|m| {
            Some((
                m.client_id().to_string(),
                assigned_partitions(m.assignment()?)?,
            ))
        })
        .collect()
}

/// The partition count of a consumer-protocol assignment: version (i16), then per topic a
/// name (i16 length + bytes) and partitions (i32 count + i32 each), then user data.
fn assigned_partitions(bytes: &[u8]) -> Option<usize> {
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let slice = bytes.get(*at..*at + n)?;
        *at += n;
        Some(slice)
    };
    let mut at = 2;
    let i32_at =
        |at: &mut usize| -> Option<i32> { Some(i32::from_be_bytes(take(at, 4)?.try_into().ok()?)) };
    let topics = i32_at(&mut at)?;
    let mut total = 0;
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?);
        take(&mut at, usize::try_from(len.max(0)).ok()?)?;
        let partitions = usize::try_from(i32_at(&mut at)?.max(0)).ok()?;
        take(&mut at, 4 * partitions)?;
        total += partitions;
    }
    Some(total)
}
