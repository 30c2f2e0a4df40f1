//! The checks proper, as pure functions over what was read: counting (lost, duplicated,
//! unexpected, aborted-visible), order per lane, and torn transactions.
//!
//! # Torn transactions: what is checkable
//!
//! Consumers never see transaction boundaries, but they see where the markers are: a commit or
//! abort marker takes an offset that no consumer receives, so a read_uncommitted read of an
//! output partition has a gap at every marker. A *run* is a maximal stretch of consecutive
//! offsets between two gaps. The next transaction of a producer only starts after its marker is
//! written, so within a run each producer contributes records of at most one transaction. Runs
//! interleave producers, though (every stage instance writes every output partition), and one
//! may commit where another aborts. So the check splits each run by *lane*, the source
//! partition of the nearest hop (provenance headers, else the resolved input record): a source
//! partition is processed by one instance at a time, and two instances overlapping on it (a
//! zombie and its successor) both start at its committed offset, so their interleaved records
//! repeat or reverse a source offset. A lane's records in a run, at least two, with strictly
//! increasing source offsets are therefore one producer's, in one transaction, and must be all
//! visible read_committed or all invisible; partly visible is a torn transaction. Lanes that
//! repeat or reverse a source offset are not judged. This rests on a source record always going
//! to the same output partition (keyed records: the harness's are); with random partitioning
//! of keyless records, two overlapping producers could interleave without a repeat. In a
//! one-to-one pipeline a torn commit also shows up as lost records and a torn abort as
//! duplicates; this check names the cause.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::lineage::{Coord, Resolved, TopicView, Topics, Tp};
use super::report::Finding;

/// One output record read_committed, and where it leads.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) out: Tp,
    pub(crate) offset: i64,
    pub(crate) resolved: Resolved,
}

/// The counting checks' findings.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) lost: Finding,
    pub(crate) duplicated: Finding,
    pub(crate) unexpected: Finding,
    pub(crate) aborted_visible: Finding,
}

/// Counts output records per input record: none is lost, more than one is duplicated.
pub(crate) fn tally(
    seen: &[Seen],
    views: &HashMap<u16, TopicView>,
    inputs: &HashSet<u16>,
    topics: &Topics,
    limit: usize,
) -> Tally {
    let mut counts: BTreeMap<Tp, Vec<u32>> = BTreeMap::new();
    for &topic in inputs {
        if let Some(view) = views.get(&topic) {
            for (&partition, p) in &view.partitions {
                counts.insert(Tp { topic, partition }, vec![0; p.offsets.len()]);
            }
        }
    }
    let mut tally = Tally::default();
    for s in seen {
        let out = Coord {
            tp: s.out,
            offset: s.offset,
        };
        match &s.resolved {
            Resolved::Input { at, .. } => {
                let slot = views
                    .get(&at.tp.topic)
                    .and_then(|v| v.partitions.get(&at.tp.partition))
                    .and_then(|p| p.position(at.offset))
                    .and_then(|i| counts.get_mut(&at.tp).and_then(|c| c.get_mut(i)));
                match slot {
                    Some(n) => *n += 1,
                    None => tally.unexpected.add(limit, || {
                        format!("{} -> {} (not counted)", topics.show(out), topics.show(*at))
                    }),
                }
            }
            Resolved::Aborted(source) => tally.aborted_visible.add(limit, || match source {
                Some(at) => format!(
                    "{} derives from aborted {}",
                    topics.show(out),
                    topics.show(*at)
                ),
                None => format!(
                    "{}: its id is only in aborted input records",
                    topics.show(out)
                ),
            }),
            Resolved::Unknown(why) => tally
                .unexpected
                .add(limit, || format!("{}: {why}", topics.show(out))),
            Resolved::NeedsUncommitted(_) => tally.unexpected.add(limit, || {
                format!("{}: source not resolved", topics.show(out))
            }),
        }
    }
    for (tp, partition_counts) in &counts {
        let offsets = views
            .get(&tp.topic)
            .and_then(|v| v.partitions.get(&tp.partition))
            .map(|p| p.offsets.as_slice())
            .unwrap_or_default();
        for (&n, &offset) in partition_counts.iter().zip(offsets) {
            let at = Coord { tp: *tp, offset };
            match n {
                0 => tally.lost.add(limit, || topics.show(at)),
                1 => {}
                n => tally.duplicated.add_n(u64::from(n - 1), limit, || {
                    format!("{} seen {n} times", topics.show(at))
                }),
            }
        }
    }
    tally
}

/// Input offsets must strictly increase, in output offset order, within each lane (input
/// partition, through partition, output partition). `seen` is in output offset order per
/// output partition. Returns the number of lanes and the violations.
pub(crate) fn order(seen: &[Seen], topics: &Topics, limit: usize) -> (u64, Finding) {
    let mut last: HashMap<(Tp, Option<Tp>, Tp), i64> = HashMap::new();
    let mut finding = Finding::default();
    for s in seen {
        let Resolved::Input { at, via } = &s.resolved else {
            continue;
        };
        let lane = (at.tp, *via, s.out);
        if let Some(previous) = last.insert(lane, at.offset) {
            if at.offset <= previous {
                finding.add(limit, || {
                    format!(
                        "{} (from {}) after input offset {previous}",
                        topics.show(Coord {
                            tp: s.out,
                            offset: s.offset
                        }),
                        topics.show(*at)
                    )
                });
            }
        }
    }
    (last.len() as u64, finding)
}

/// One output record read_uncommitted below the LSO, for the torn-transaction check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunRecord {
    pub(crate) offset: i64,
    /// Also visible read_committed.
    pub(crate) committed: bool,
    /// Nearest-hop source (provenance), or the resolved input record.
    pub(crate) source: Option<Coord>,
}

/// Checks the runs of one output partition (records in offset order); see the module docs.
/// Returns how many lanes of runs were attributable to one transaction, and adds torn ones to
/// `finding`.
pub(crate) fn torn(
    out: Tp,
    records: &[RunRecord],
    topics: &Topics,
    limit: usize,
    finding: &mut Finding,
) -> u64 {
    let mut checked = 0;
    // Runs of consecutive output offsets: one transaction's records are adjacent.
    let runs = records.chunk_by(|a, b| b.offset == a.offset + 1);
    for run in runs {
        let mut lanes: BTreeMap<Tp, Vec<&RunRecord>> = BTreeMap::new();
        for record in run {
            if let Some(source) = record.source {
                lanes.entry(source.tp).or_default().push(record);
            }
        }
        for (lane, records) in lanes {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                continue;
            };
            if records.len() < 2 || !increasing(&records) {
                continue;
            }
            checked += 1;
            let visible = records.iter().filter(|r| r.committed).count();
            if visible != 0 && visible != records.len() {
                finding.add(limit, || {
                    format!(
                        "{}[{}] offsets {}..={}: {visible} of {} records from {}[{}] visible \
                         read_committed",
                        topics.name(out.topic),
                        out.partition,
                        first.offset,
                        last.offset,
                        records.len(),
                        topics.name(lane.topic),
                        lane.partition
                    )
                });
            }
        }
    }
    checked
}

/// Strictly increasing source offsets.
fn increasing(records: &[&RunRecord]) -> bool {
    records.windows(2).all(|pair| match pair {
        [a, b] => match (a.source, b.source) {
            (Some(a), Some(b)) => b.offset > a.offset,
            _ => false,
        },
        _ => false,
    })
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
