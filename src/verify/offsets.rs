//! The offset checks: hanging transactions (last stable offset below the high watermark) and
//! consumer-group progress (committed offsets against what is left to read).
//!
//! An open transaction holds a partition's LSO at its first record; a crashed producer's
//! transaction stays open until its coordinator aborts it (`transaction.timeout.ms`) or a new
//! producer with the same `transactional.id` fences it. So the hanging check first waits up to
//! the settle timeout for LSO == high watermark on every partition, and reports the partitions
//! that did not get there.
//!
//! Committed offsets are asked for as *stable* offsets (KIP-447: librdkafka sets
//! `require_stable` for a read_committed client), so an offset commit still inside an open
//! transaction is waited for rather than read half-done. A group passes when no record is
//! visible read_committed at or after its committed offset on any partition. Comparing with the
//! end offset instead would be wrong for transactional topics: the last offsets are commit
//! markers, which a consumer's position may or may not have stepped over.

use std::thread::sleep;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::read::{Bounds, Client, Isolation, Progress};
use super::report::{Finding, GroupPartition, PartitionEnds};
use super::{GroupSpec, VerifyError};

/// Waits until every partition of `topics` has LSO == high watermark, or `timeout` passes.
/// Returns every partition's ends and the partitions still hanging.
pub(crate) fn settle(
    client: &Client,
    topics: &[(String, i32)],
    timeout: Duration,
    limit: usize,
) -> Result<(Vec<PartitionEnds>, Finding), VerifyError> {
    let committed = client.consumer(Isolation::ReadCommitted, None)?;
    let uncommitted = client.consumer(Isolation::ReadUncommitted, None)?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut ends = Vec::new();
        for (topic, partitions) in topics {
            let lso = client.watermarks(&committed, topic, *partitions)?;
            let hw = client.watermarks(&uncommitted, topic, *partitions)?;
            for (partition, ((_, lso), (_, hw))) in (0..).zip(lso.into_iter().zip(hw)) {
                ends.push(PartitionEnds {
                    topic: topic.clone(),
                    partition,
                    last_stable_offset: lso,
                    high_watermark: hw,
                });
            }
        }
        let hanging: Vec<&PartitionEnds> = ends
            .iter()
            .filter(|e| e.last_stable_offset < e.high_watermark)
            .collect();
        if hanging.is_empty() || Instant::now() >= deadline {
            let mut finding = Finding::default();
            for e in hanging {
                finding.add(limit, || {
                    format!(
                        "{}[{}]: last stable offset {} < high watermark {} after {} s",
                        e.topic,
                        e.partition,
                        e.last_stable_offset,
                        e.high_watermark,
                        timeout.as_secs()
                    )
                });
            }
            return Ok((ends, finding));
        }
        sleep(Duration::from_millis(500));
    }
}

/// Checks `spec`'s committed offsets on each of its topics (`topics`: name and partitions).
pub(crate) fn group_lag(
    client: &Client,
    spec: &GroupSpec,
    topics: &[(String, i32)],
    timeout: Duration,
    progress: &dyn Progress,
    limit: usize,
) -> Result<(Vec<GroupPartition>, Finding), VerifyError> {
    let consumer = client.consumer(Isolation::ReadCommitted, Some(&spec.group))?;
    let mut rows = Vec::new();
    let mut finding = Finding::default();
    for (topic, partitions) in topics {
        let committed = committed_offsets(&consumer, &spec.group, topic, *partitions, timeout)?;
        let ends = client.watermarks(&consumer, topic, *partitions)?;
        let bounds: Vec<Bounds> = (0..*partitions)
            .zip(&ends)
            .zip(&committed)
            .map(|((partition, (low, lso)), committed)| Bounds {
                partition,
                start: committed.unwrap_or(*low).max(*low),
                end: *lso,
            })
            .collect();
        let mut left = vec![0u64; usize::try_from(*partitions).unwrap_or(0)];
        client.read(
            topic,
            Isolation::ReadCommitted,
            &bounds,
            progress,
            |message| {
                if let Some(n) = usize::try_from(rdkafka::Message::partition(message))
                    .ok()
                    .and_then(|p| left.get_mut(p))
                {
                    *n += 1;
                }
            },
        )?;
        for (partition, ((committed, (_, lso)), unconsumed)) in
            (0..).zip(committed.into_iter().zip(ends).zip(left))
        {
            let beyond = committed.is_some_and(|c| c > lso);
            if unconsumed > 0 || beyond {
                finding.add(limit, || match committed {
                    Some(c) if beyond => format!(
                        "{} on {topic}[{partition}]: committed {c} beyond the last stable offset \
                         {lso}",
                        spec.group
                    ),
                    _ => format!(
                        "{} on {topic}[{partition}]: committed {}, {unconsumed} records left \
                         before the last stable offset {lso}",
                        spec.group,
                        committed.map_or("nothing".into(), |c| c.to_string())
                    ),
                });
            }
            rows.push(GroupPartition {
                group: spec.group.clone(),
                topic: topic.clone(),
                partition,
                committed,
                last_stable_offset: lso,
                unconsumed,
            });
        }
    }
    Ok((rows, finding))
}

/// Stable committed offsets of `group` on `topic`, retrying broker errors until `timeout`
/// (an open transaction holding offsets makes the broker answer "unstable" until it ends).
fn committed_offsets(
    consumer: &super::read::VerifyConsumer,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, VerifyError> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.committed_offsets(tpl.clone(), super::read::REQUEST_TIMEOUT) {
            Ok(list) => {
                return Ok((0..partitions)
                    .map(
                        |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => Some(o),
                            _ => None,
                        },
                    )
                    .collect());
            }
            Err(source) if Instant::now() >= deadline => {
                return Err(VerifyError::kafka(
                    format!("committed offsets of group {group} on {topic}"),
                    source,
                ));
            }
            Err(error) => {
                tracing::debug!(%group, %topic, %error, "Committed offsets: retrying.");
                sleep(Duration::from_millis(500));
            }
        }
    }
}
