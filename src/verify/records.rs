//! The record-level checks of [`verify`](super::verify) over records the caller has already
//! read, for callers that hold one particular view of a topic: a read_uncommitted view, what a
//! live reader saw while the pipeline ran, or the input records below some committed offsets.
//!
//! ```text
//!  input records (any subset) ──┐
//!                               ├──► lineage (Identity) ──► lost, duplicated, unexpected, order
//!  one view of the output(s) ───┘
//! ```
//!
//! The same lineage and the same counting and order checks as the verifier's (the `lineage` and
//! `checks` modules), so a test and `kstage verify` cannot disagree about what exactly once
//! means. What needs Kafka itself (aborted-visible, torn and hanging transactions, group
//! offsets) is left out: those findings stay empty here. An output record whose source is not
//! among the given input records is *unexpected* (the caller's input set is the whole truth;
//! there is no read_uncommitted input view to call it aborted).

use std::collections::{HashMap, HashSet};

use super::checks::{self, Seen};
use super::lineage::{self, Coord, Identity, Resolver, Source, TopicView, Topics, Tp, Uncommitted};
use super::report::{Finding, Report, TopicSummary};

/// A record as read from a topic (or as written to it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers, in record order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One topic's records, in offset order per partition.
#[derive(Clone, Copy, Debug)]
pub struct TopicRecords<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Its records.
    pub records: &'a [Record],
}

impl Record {
    fn source(&self, identity: &Identity, topics: &mut Topics) -> Source {
        let mut headers = self
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()));
        lineage::source_of(
            self.key.as_deref(),
            self.value.as_deref(),
            Some(&mut headers),
            identity,
            topics,
        )
    }
}

/// Checks that `outputs` hold every record of `inputs` exactly once (one output record per
/// input record, across all output topics) and, per lane, in input order. `examples` caps the
/// examples kept per check. The report's `passed` covers these checks only.
pub fn check_records(
    identity: &Identity,
    inputs: &[TopicRecords<'_>],
    outputs: &[TopicRecords<'_>],
    examples: usize,
) -> Report {
    let limit = examples.max(1);
    let mut topics = Topics::default();
    let mut report = Report::default();
    let mut views: HashMap<u16, TopicView> = HashMap::new();
    let mut input_ids: HashSet<u16> = HashSet::new();
    let mut duplicate_ids = Finding::default();
    for input in inputs {
        let id = topics.intern(input.topic);
        let view = views.entry(id).or_default();
        let mut records: Vec<&Record> = input.records.iter().collect();
        records.sort_by_key(|r| (r.partition, r.offset));
        for record in records {
            let at = Coord {
                tp: Tp {
                    topic: id,
                    partition: record.partition,
                },
                offset: record.offset,
            };
            let partition = view.partitions.entry(record.partition).or_default();
            if partition.offsets.last() == Some(&record.offset) {
                continue;
            }
            partition.offsets.push(record.offset);
            if *identity != Identity::Provenance {
                if let Source::Id(key) = record.source(identity, &mut topics) {
                    if let Some(first) = view.ids.insert(key, at) {
                        let (first, again) = (topics.show(first), topics.show(at));
                        duplicate_ids.add(limit, || {
                            format!("input id at {first} repeats at {again} (ids must be unique)")
                        });
                    }
                }
            }
        }
        // No read_uncommitted input view: a source not given is unknown, not aborted.
        view.uncommitted = Some(Uncommitted::default());
        input_ids.insert(id);
        report.inputs.push(TopicSummary {
            topic: input.topic.to_string(),
            read_committed: input.records.len() as u64,
            ..TopicSummary::default()
        });
    }

    let mut seen: Vec<Seen> = Vec::new();
    for output in outputs {
        let id = topics.intern(output.topic);
        let mut records: Vec<&Record> = output.records.iter().collect();
        records.sort_by_key(|r| (r.partition, r.offset));
        for record in records {
            let source = record.source(identity, &mut topics);
            let resolver = Resolver {
                topics: &topics,
                views: &views,
                inputs: &input_ids,
                identity,
            };
            seen.push(Seen {
                out: Tp {
                    topic: id,
                    partition: record.partition,
                },
                offset: record.offset,
                resolved: resolver.resolve(&source),
            });
        }
        report.outputs.push(TopicSummary {
            topic: output.topic.to_string(),
            read_committed: output.records.len() as u64,
            ..TopicSummary::default()
        });
    }

    let tally = checks::tally(&seen, &views, &input_ids, &topics, limit);
    report.lost = tally.lost;
    report.duplicated = tally.duplicated;
    report.unexpected = tally.unexpected;
    report.unexpected.count += duplicate_ids.count;
    report.unexpected.examples.extend(duplicate_ids.examples);
    report.aborted_visible = tally.aborted_visible;
    let (lanes, order) = checks::order(&seen, &topics, limit);
    report.order_lanes = lanes;
    report.order_violations = order;
    report.identity = Some(identity.clone());
    report.conclude();
    report
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
