//! The exactly-once checker: compares what was written to the input with what a reader saw in the
//! output, and reports missing ids, duplicated ids, unexpected records and order violations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::input::InputRecord;
use super::read::ReadRecord;

/// Where an output record came from, parsed from its (passthrough-copied) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub id: String,
    pub partition: i32,
    pub seq: i64,
}

/// Parses the input JSON carried in an output record's value.
pub fn origin(record: &ReadRecord) -> Option<Origin> {
    let value: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    Some(Origin {
        id: value.get("id")?.as_str()?.to_string(),
        partition: i32::try_from(value.get("partition")?.as_i64()?).ok()?,
        seq: value.get("seq")?.as_i64()?,
    })
}

/// What a reader saw, compared with what was written.
#[derive(Debug, Default)]
pub struct Report {
    /// Records the reader saw.
    pub seen: usize,
    /// Ids written but never seen.
    pub missing: Vec<String>,
    /// Ids seen more than once, with how often.
    pub duplicated: Vec<(String, usize)>,
    /// Records that are not any written record (unparseable, or an unknown id).
    pub unexpected: Vec<String>,
    /// Records of one input partition that landed in one output partition out of sequence order.
    pub order_violations: Vec<String>,
}

impl Report {
    /// No loss, no duplicates, nothing foreign.
    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }

    /// Extra copies seen beyond the first of each id.
    pub fn duplicate_count(&self) -> usize {
        self.duplicated.iter().map(|(_, n)| n - 1).sum()
    }

    /// Fails the test unless exactly once and in order; `context` says what was checked.
    pub fn assert_exactly_once_in_order(&self, context: &str) {
        assert!(
            self.is_exactly_once() && self.order_violations.is_empty(),
            "{context}: not exactly once in order: {self}"
        );
    }

    /// Fails the test unless exactly once (order not checked).
    pub fn assert_exactly_once(&self, context: &str) {
        assert!(
            self.is_exactly_once(),
            "{context}: not exactly once: {self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn first<T: fmt::Debug>(items: &[T]) -> String {
            format!(
                "{:?}{}",
                &items[..items.len().min(10)],
                if items.len() > 10 { " ..." } else { "" }
            )
        }
        write!(
            f,
            "seen {} records; {} missing {}; {} duplicated ids ({} extra copies) {}; {} unexpected {}; \
             {} order violations {}",
            self.seen,
            self.missing.len(),
            first(&self.missing),
            self.duplicated.len(),
            self.duplicate_count(),
            first(&self.duplicated),
            self.unexpected.len(),
            first(&self.unexpected),
            self.order_violations.len(),
            first(&self.order_violations),
        )
    }
}

/// Compares `output` (one topic, as read, in offset order per partition) with `written`.
///
/// Order: records from the same input partition that land in the same output partition must keep
/// their input sequence order (strictly increasing; a repeat counts as a violation too).
pub fn check(written: &[InputRecord], output: &[ReadRecord]) -> Report {
    let expected: HashSet<&str> = written.iter().map(|r| r.id.as_str()).collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut last_seq: HashMap<(i32, i32), i64> = HashMap::new();
    let mut report = Report {
        seen: output.len(),
        ..Report::default()
    };
    for record in output {
        let Some(origin) = origin(record) else {
            report.unexpected.push(format!(
                "[{}]@{}: {:?}",
                record.partition,
                record.offset,
                record.value_str()
            ));
            continue;
        };
        if !expected.contains(origin.id.as_str()) {
            report.unexpected.push(format!(
                "[{}]@{}: {}",
                record.partition, record.offset, origin.id
            ));
            continue;
        }
        *counts.entry(origin.id.clone()).or_default() += 1;
        let lane = (origin.partition, record.partition);
        if let Some(previous) = last_seq.insert(lane, origin.seq) {
            if origin.seq <= previous {
                report.order_violations.push(format!(
                    "input partition {} seq {} after seq {previous} in output partition {} (offset {})",
                    origin.partition, origin.seq, record.partition, record.offset
                ));
            }
        }
    }
    report.missing = written
        .iter()
        .filter(|r| !counts.contains_key(&r.id))
        .map(|r| r.id.clone())
        .collect();
    let mut duplicated: Vec<(String, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
    duplicated.sort();
    report.duplicated = duplicated;
    report
}

/// The written records an input-offset boundary selects: those with `seq < committed[partition]`
/// (seq is the offset on a fresh input topic written only by the test's writer).
pub fn below_committed(written: &[InputRecord], committed: &[Option<i64>]) -> Vec<InputRecord> {
    written
        .iter()
        .filter(|r| {
            r.seq
                < committed
                    .get(r.partition as usize)
                    .copied()
                    .flatten()
                    .unwrap_or(0)
        })
        .cloned()
        .collect()
}

/// Counts output records per input partition (for diagnostics).
pub fn per_input_partition(output: &[ReadRecord]) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for origin in output.iter().filter_map(origin) {
        *counts.entry(origin.partition).or_default() += 1;
    }
    counts
}
