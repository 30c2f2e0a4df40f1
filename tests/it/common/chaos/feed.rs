//! The input end of a scenario, running beside the stages: the [`Feeder`] writing the input at a
//! steady rate through the shared [`InputWriter`] (the output end, a read_committed reader
//! following the final output the whole time, is `common::read::LiveReader`).
//!
//! Also the progress probes: committed progress of a group, and whether a group has drained
//! its topic (nothing visible read_committed at or after its committed offsets).

use std::collections::HashMap;
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

/// Partitions assigned to each member of `group` (by client id), as ConsumerGroupDescribe
/// reports them through Kafka's `kafka-consumer-groups.sh --describe --members`
/// (`ConsumerGroupCommand`, a JVM start per call): this describes consumer-protocol (KIP-848)
/// groups too, which the classic DescribeGroups of [`assignment`] does not. `None` on an error.
pub fn described_owners(bootstrap: &str, group: &str) -> Option<HashMap<String, usize>> {
    let output = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"),
    )
    .args([
        "tool",
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        bootstrap,
        "--describe",
        "--group",
        group,
        "--members",
    ])
    .output()
    .ok()?;
    if !output.status.success() {
        return None;
    }
    members_table(&String::from_utf8_lossy(&output.stdout))
}

/// The CLIENT-ID and #PARTITIONS columns of `--describe --members` output.
fn members_table(text: &str) -> Option<HashMap<String, usize>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .find(|l| l.contains("CLIENT-ID"))?
        .split_whitespace()
        .collect();
    let client = header.iter().position(|h| *h == "CLIENT-ID")?;
    let count = header.iter().position(|h| *h == "#PARTITIONS")?;
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A member's columns line up with the header's (HOST is "/127.0.0.1", no spaces).
            (fields.len() == header.len())
                .then(|| Some((fields[client].to_string(), fields[count].parse().ok()?)))?
        })
        .collect()
}
