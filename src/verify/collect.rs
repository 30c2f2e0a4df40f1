//! Reading the pipeline's topics into compact views, resolving every output record to its input
//! record, and running the record-level checks.
//!
//! Read order: outputs first (both views, to the LSO snapshot the hanging check left), then
//! through topics, then inputs. Whatever an output names upstream was written before the output
//! was, so reading upstream afterwards never misses a source; a read_uncommitted view of an
//! upstream topic is only read when a lookup misses in its read_committed view.

use std::collections::{HashMap, HashSet};

use rdkafka::Message;

use super::checks::{self, RunRecord, Seen};
use super::lineage::{
    self, Coord, Identity, PartitionView, Resolved, Resolver, Source, TopicView, Topics, Tp,
    Uncommitted,
};
use super::read::{Bounds, Client, Isolation, Progress, VerifyConsumer};
use super::report::{PartitionEnds, Report, TopicSummary};
use super::{VerifyConfig, VerifyError};

/// An output record as read: where it is, and what it says about its source.
struct OutRecord {
    at: Coord,
    source: Source,
    /// Nearest-hop provenance, for the torn-transaction check.
    hop: Option<Coord>,
}

/// Runs the record-level checks; the caller adds the offset checks.
pub(crate) fn run_checks(
    config: &VerifyConfig,
    client: &Client,
    partitions: &HashMap<String, i32>,
    ends: &[PartitionEnds],
    progress: &dyn Progress,
) -> Result<Report, VerifyError> {
    let limit = config.examples;
    let identity = &config.identity;
    let mut topics = Topics::default();
    for topic in config
        .inputs
        .iter()
        .chain(&config.through)
        .chain(&config.outputs)
    {
        topics.intern(topic);
    }
    let lows = client.consumer(Isolation::ReadUncommitted, None)?;
    let mut report = Report::default();

    // Outputs: both views up to the same LSO.
    let mut committed: Vec<OutRecord> = Vec::new();
    let mut uncommitted: Vec<OutRecord> = Vec::new();
    for topic in &config.outputs {
        let n = partitions.get(topic).copied().unwrap_or(0);
        let bounds = bounds_to(client, &lows, topic, n, |p| lso(ends, topic, p))?;
        let mut summary = summary(topic, n);
        for (isolation, into) in [
            (Isolation::ReadCommitted, &mut committed),
            (Isolation::ReadUncommitted, &mut uncommitted),
        ] {
            let read = client.read(topic, isolation, &bounds, progress, |m| {
                into.push(out_record(m, identity, &mut topics));
            })?;
            match isolation {
                Isolation::ReadCommitted => summary.read_committed = read,
                Isolation::ReadUncommitted => summary.read_uncommitted = Some(read),
            }
        }
        report.outputs.push(summary);
    }

    // Through topics: read_committed, with each record's own provenance.
    let mut views: HashMap<u16, TopicView> = HashMap::new();
    for topic in &config.through {
        let n = partitions.get(topic).copied().unwrap_or(0);
        let bounds = bounds_to(client, &lows, topic, n, |p| lso(ends, topic, p))?;
        let mut view = TopicView::default();
        let read = client.read(topic, Isolation::ReadCommitted, &bounds, progress, |m| {
            let p = view.partitions.entry(m.partition()).or_default();
            p.offsets.push(m.offset());
            p.sources
                .push(lineage::source(m, &Identity::Provenance, &mut topics));
        })?;
        report.through.push(TopicSummary {
            read_committed: read,
            ..summary(topic, n)
        });
        views.insert(topics.intern(topic), view);
    }

    // Inputs: read_committed up to their current LSO.
    let mut inputs: HashSet<u16> = HashSet::new();
    let mut duplicate_ids = crate::verify::Finding::default();
    let committed_reader = client.consumer(Isolation::ReadCommitted, None)?;
    for topic in &config.inputs {
        let n = partitions.get(topic).copied().unwrap_or(0);
        let lsos = client.watermarks(&committed_reader, topic, n)?;
        let bounds = bounds_to(client, &lows, topic, n, |p| {
            lsos.get(usize::try_from(p).unwrap_or(usize::MAX))
                .map(|w| w.1)
        })?;
        let id = topics.intern(topic);
        let mut view = TopicView::default();
        let read = client.read(topic, Isolation::ReadCommitted, &bounds, progress, |m| {
            let at = Coord {
                tp: Tp {
                    topic: id,
                    partition: m.partition(),
                },
                offset: m.offset(),
            };
            view.partitions
                .entry(m.partition())
                .or_insert_with(PartitionView::default)
                .offsets
                .push(m.offset());
            if *identity != Identity::Provenance {
                if let Source::Id(key) = lineage::source(m, identity, &mut topics) {
                    if let Some(first) = view.ids.insert(key, at) {
                        let (first, again) = (topics.show(first), topics.show(at));
                        duplicate_ids.add(limit, || {
                            format!("input id at {first} repeats at {again} (ids must be unique)")
                        });
                    }
                }
            }
        })?;
        report.inputs.push(TopicSummary {
            read_committed: read,
            ..summary(topic, n)
        });
        inputs.insert(id);
        views.insert(id, view);
    }

    // Resolve, loading read_uncommitted views of upstream topics while lookups miss.
    let mut resolved: Vec<Resolved> = Vec::with_capacity(committed.len());
    loop {
        let resolver = Resolver {
            topics: &topics,
            views: &views,
            inputs: &inputs,
            identity,
        };
        resolved.clear();
        resolved.extend(committed.iter().map(|r| resolver.resolve(&r.source)));
        let needed: HashSet<u16> = resolved
            .iter()
            .filter_map(|r| match r {
                Resolved::NeedsUncommitted(topic) => Some(*topic),
                _ => None,
            })
            .collect();
        if needed.is_empty() {
            break;
        }
        for topic in needed {
            let name = topics.name(topic).to_string();
            let n = partitions.get(&name).copied().unwrap_or(0);
            let loaded =
                load_uncommitted(client, &lows, &name, n, identity, &mut topics, progress)?;
            let count = loaded.coords.len() as u64;
            for summary in report.inputs.iter_mut().chain(report.through.iter_mut()) {
                if summary.topic == name {
                    summary.read_uncommitted = Some(count);
                }
            }
            if let Some(view) = views.get_mut(&topic) {
                view.uncommitted = Some(loaded);
            }
        }
    }

    let seen: Vec<Seen> = committed
        .iter()
        .zip(resolved)
        .map(|(r, resolved)| Seen {
            out: r.at.tp,
            offset: r.at.offset,
            resolved,
        })
        .collect();
    let tally = checks::tally(&seen, &views, &inputs, &topics, limit);
    report.lost = tally.lost;
    report.duplicated = tally.duplicated;
    report.unexpected = tally.unexpected;
    report.unexpected.count += duplicate_ids.count;
    report.unexpected.examples.extend(duplicate_ids.examples);
    report.aborted_visible = tally.aborted_visible;
    let (lanes, order) = checks::order(&seen, &topics, limit);
    report.order_lanes = lanes;
    report.order_violations = order;

    // Torn transactions, per output partition, over the read_uncommitted view.
    let visible: HashSet<Coord> = committed.iter().map(|r| r.at).collect();
    report.aborted_records = (uncommitted.len() - visible.len().min(uncommitted.len())) as u64;
    let resolver = Resolver {
        topics: &topics,
        views: &views,
        inputs: &inputs,
        identity,
    };
    let mut by_partition: HashMap<Tp, Vec<RunRecord>> = HashMap::new();
    for r in &uncommitted {
        let source = r.hop.or_else(|| match resolver.resolve(&r.source) {
            Resolved::Input { at, .. } => Some(at),
            _ => None,
        });
        by_partition.entry(r.at.tp).or_default().push(RunRecord {
            offset: r.at.offset,
            committed: visible.contains(&r.at),
            source,
        });
    }
    let mut partitions_sorted: Vec<_> = by_partition.into_iter().collect();
    partitions_sorted.sort_by_key(|(tp, _)| *tp);
    for (tp, mut records) in partitions_sorted {
        records.sort_by_key(|r| r.offset);
        report.runs_checked +=
            checks::torn(tp, &records, &topics, limit, &mut report.torn_transactions);
    }
    Ok(report)
}

fn out_record(
    message: &rdkafka::message::BorrowedMessage<'_>,
    identity: &Identity,
    topics: &mut Topics,
) -> OutRecord {
    let at = Coord {
        tp: Tp {
            topic: topics.intern(message.topic()),
            partition: message.partition(),
        },
        offset: message.offset(),
    };
    let hop = lineage::provenance(message, topics);
    let source = match (identity, hop) {
        (Identity::Provenance, Some(hop)) => Source::At(hop),
        _ => lineage::source(message, identity, topics),
    };
    OutRecord { at, source, hop }
}

fn summary(topic: &str, partitions: i32) -> TopicSummary {
    TopicSummary {
        topic: topic.to_string(),
        partitions,
        ..TopicSummary::default()
    }
}

fn lso(ends: &[PartitionEnds], topic: &str, partition: i32) -> Option<i64> {
    ends.iter()
        .find(|e| e.topic == topic && e.partition == partition)
        .map(|e| e.last_stable_offset)
}

/// From each partition's low watermark to `end(partition)`.
fn bounds_to(
    client: &Client,
    lows: &VerifyConsumer,
    topic: &str,
    partitions: i32,
    end: impl Fn(i32) -> Option<i64>,
) -> Result<Vec<Bounds>, VerifyError> {
    let marks = client.watermarks(lows, topic, partitions)?;
    Ok((0..partitions)
        .zip(marks)
        .map(|(partition, (low, high))| Bounds {
            partition,
            start: low,
            end: end(partition).unwrap_or(high),
        })
        .collect())
}

/// The read_uncommitted view of an upstream topic, up to its high watermark.
fn load_uncommitted(
    client: &Client,
    lows: &VerifyConsumer,
    topic: &str,
    partitions: i32,
    identity: &Identity,
    topics: &mut Topics,
    progress: &dyn Progress,
) -> Result<Uncommitted, VerifyError> {
    let bounds = bounds_to(client, lows, topic, partitions, |_| None)?;
    let mut seen = Uncommitted::default();
    client.read(topic, Isolation::ReadUncommitted, &bounds, progress, |m| {
        seen.coords.insert((m.partition(), m.offset()));
        if *identity != Identity::Provenance {
            if let Source::Id(id) = lineage::source(m, identity, topics) {
                seen.ids.insert(id);
            }
        }
    })?;
    Ok(seen)
}
