//! Unit tests of the pure checks: each test names the pipeline fault the check must catch, and
//! one test shows a legitimate interleaving it must not flag.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::verify::lineage::PartitionView;

const LIMIT: usize = 10;

struct Fixture {
    topics: Topics,
    input: u16,
    output: u16,
    views: HashMap<u16, TopicView>,
    inputs: HashSet<u16>,
}

/// One input topic "in" with one partition holding offsets 0..n.
fn fixture(n: i64) -> Fixture {
    let mut topics = Topics::default();
    let input = topics.intern("in");
    let output = topics.intern("out");
    let mut view = TopicView::default();
    view.partitions.insert(
        0,
        PartitionView {
            offsets: (0..n).collect(),
            sources: Vec::new(),
        },
    );
    Fixture {
        topics,
        input,
        output,
        views: HashMap::from([(input, view)]),
        inputs: HashSet::from([input]),
    }
}

impl Fixture {
    fn at(&self, offset: i64) -> Coord {
        Coord {
            tp: Tp {
                topic: self.input,
                partition: 0,
            },
            offset,
        }
    }

    /// Output partition 0 holding, at offsets 0.., the outputs of these input offsets.
    fn outputs(&self, input_offsets: &[i64]) -> Vec<Seen> {
        input_offsets
            .iter()
            .zip(0..)
            .map(|(&i, offset)| Seen {
                out: Tp {
                    topic: self.output,
                    partition: 0,
                },
                offset,
                resolved: Resolved::Input {
                    at: self.at(i),
                    via: None,
                },
            })
            .collect()
    }

    fn tally(&self, seen: &[Seen]) -> Tally {
        tally(seen, &self.views, &self.inputs, &self.topics, LIMIT)
    }

    fn out(&self) -> Tp {
        Tp {
            topic: self.output,
            partition: 0,
        }
    }
}

#[test]
fn every_input_record_once_passes_every_count() {
    let f = fixture(4);
    let t = f.tally(&f.outputs(&[0, 1, 2, 3]));
    assert!(t.lost.ok() && t.duplicated.ok() && t.unexpected.ok() && t.aborted_visible.ok());
}

#[test]
fn a_missing_output_is_reported_lost_with_its_input_coordinates() {
    let f = fixture(4);
    let t = f.tally(&f.outputs(&[0, 1, 3]));
    assert_eq!(t.lost.count, 1);
    assert_eq!(t.lost.examples, ["in[0]@2"]);
}

#[test]
fn a_replayed_output_counts_each_extra_copy() {
    let f = fixture(3);
    let t = f.tally(&f.outputs(&[0, 1, 2, 1, 2, 1]));
    assert_eq!(t.duplicated.count, 3, "record 1 twice extra, record 2 once");
    assert!(t.lost.ok());
}

#[test]
fn outputs_from_unknown_or_aborted_sources_are_reported() {
    let f = fixture(1);
    let mut seen = f.outputs(&[0]);
    seen.push(Seen {
        out: f.out(),
        offset: 1,
        resolved: Resolved::Unknown("no provenance headers".into()),
    });
    seen.push(Seen {
        out: f.out(),
        offset: 2,
        resolved: Resolved::Aborted(Some(f.at(0))),
    });
    let t = f.tally(&seen);
    assert_eq!(t.unexpected.count, 1);
    assert!(t.unexpected.examples[0].contains("no provenance headers"));
    assert_eq!(t.aborted_visible.count, 1);
    assert!(
        t.duplicated.ok(),
        "an aborted-derived record is not counted twice"
    );
}

#[test]
fn order_is_checked_per_lane_and_a_repeat_is_a_violation() {
    let f = fixture(5);
    let (lanes, ok) = order(&f.outputs(&[0, 1, 2, 3, 4]), &f.topics, LIMIT);
    assert_eq!((lanes, ok.count), (1, 0));
    let (_, swapped) = order(&f.outputs(&[0, 2, 1, 3]), &f.topics, LIMIT);
    assert_eq!(swapped.count, 1);
    let (_, repeated) = order(&f.outputs(&[0, 1, 1, 2]), &f.topics, LIMIT);
    assert_eq!(repeated.count, 1);
}

fn run(f: &Fixture, records: &[(i64, bool, i64)]) -> Vec<RunRecord> {
    records
        .iter()
        .map(|&(offset, committed, source)| RunRecord {
            offset,
            committed,
            source: Some(f.at(source)),
        })
        .collect()
}

#[test]
fn a_partly_visible_transaction_is_torn() {
    let f = fixture(10);
    // Offsets 0..=2: one transaction (sources 0, 1, 2), marker at 3; then 4..=5, marker at 6.
    let records = run(
        &f,
        &[
            (0, true, 0),
            (1, false, 1),
            (2, true, 2),
            (4, true, 3),
            (5, true, 4),
        ],
    );
    let mut finding = Finding::default();
    let checked = torn(f.out(), &records, &f.topics, LIMIT, &mut finding);
    assert_eq!(checked, 2);
    assert_eq!(finding.count, 1);
    assert!(finding.examples[0].contains("offsets 0..=2"), "{finding:?}");
}

#[test]
fn an_aborted_then_retried_transaction_is_not_torn() {
    let f = fixture(10);
    // Aborted attempt at 0..=2 (marker 3), committed retry of the same sources at 4..=6.
    let records = run(
        &f,
        &[
            (0, false, 0),
            (1, false, 1),
            (2, false, 2),
            (4, true, 0),
            (5, true, 1),
            (6, true, 2),
        ],
    );
    let mut finding = Finding::default();
    assert_eq!(torn(f.out(), &records, &f.topics, LIMIT, &mut finding), 2);
    assert!(finding.ok(), "{finding:?}");
}

#[test]
fn interleaved_producers_are_not_judged() {
    let f = fixture(10);
    // A zombie's aborted records and its successor's committed records of the same source
    // partition, interleaved in one run: source offsets repeat, so the run is not attributable.
    let records = run(
        &f,
        &[(0, false, 5), (1, true, 5), (2, false, 6), (3, true, 6)],
    );
    let mut finding = Finding::default();
    assert_eq!(torn(f.out(), &records, &f.topics, LIMIT, &mut finding), 0);
    assert!(finding.ok());
}

#[test]
fn interleaved_lanes_are_judged_each_on_its_own() {
    let mut f = fixture(10);
    let other = f.topics.intern("in2");
    let lane2 = |offset| Coord {
        tp: Tp {
            topic: other,
            partition: 0,
        },
        offset,
    };
    let record = |offset, committed, source| RunRecord {
        offset,
        committed,
        source: Some(source),
    };
    // One run: a committed transaction from in[0] interleaved with an aborted one from in2[0].
    let mut records = vec![
        record(0, true, f.at(0)),
        record(1, false, lane2(0)),
        record(2, true, f.at(1)),
        record(3, false, lane2(1)),
    ];
    let mut finding = Finding::default();
    assert_eq!(torn(f.out(), &records, &f.topics, LIMIT, &mut finding), 2);
    assert!(finding.ok(), "{finding:?}");
    // The in2[0] transaction partly visible: torn.
    records[3].committed = true;
    assert_eq!(torn(f.out(), &records, &f.topics, LIMIT, &mut finding), 2);
    assert_eq!(finding.count, 1);
    assert!(finding.examples[0].contains("from in2[0]"), "{finding:?}");
}
