//! The `windowed-count` side of the stateful fixture: keyed input with event times (some
//! records deliberately late), the expected final count per (key, window) computed here from the
//! input alone, and the check that every closed window was emitted exactly once with its count.

use std::collections::BTreeMap;

use crate::common::raw::{RawRecord, RawWriter};
use crate::common::read::{read_topic, Isolation};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Tumbling windows of `size` ms with `grace` ms, as the stage is configured.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub size: i64,
    pub grace: i64,
}

/// The input a windowed test writes and what it must produce.
#[derive(Debug, Default)]
pub struct WindowedInput {
    /// Per partition: the stream time so far (largest timestamp written).
    stream_time: BTreeMap<i32, i64>,
    /// Per partition: the next timestamp of the regular clock.
    clock: BTreeMap<i32, i64>,
    /// (key, window start) -> count, over records that were not late.
    pub expected: BTreeMap<(String, i64), u64>,
    /// Records that were late when written (the stage skips them: poison policy skip).
    pub late: u64,
}

impl WindowedInput {
    /// Writes `records` records over `keys` keys (key n always in partition n % partitions),
    /// timestamps advancing 5 ms per record per partition with a jitter inside the grace period;
    /// about one record in 200 is late by more than the grace period.
    pub fn write(&mut self, writer: &mut RawWriter, windows: Windows, records: usize, keys: usize) {
        let partitions = writer.partitions();
        for _ in 0..records {
            let n = rand::random_range(0..keys);
            let partition = (n as i32) % partitions;
            // Event time starts now: timestamps far in the past would be deleted by the
            // topics' time-based retention (7 days by default) as soon as a segment rolls.
            let clock = self.clock.entry(partition).or_insert_with(now_ms);
            *clock += 5;
            let ts = if rand::random_range(0..200) == 0 {
                *clock - windows.size - windows.grace - 50
            } else {
                *clock - rand::random_range(0..windows.grace.max(1))
            };
            self.note(partition, &format!("k{n}"), ts, windows);
            writer.write(
                partition,
                RawRecord::new(Some(&format!("k{n}")), Some(b"v".to_vec())).at(ts),
            );
        }
        writer.flush();
    }

    /// Writes one record per partition far in the future: every window before it closes.
    pub fn flush_windows(&mut self, writer: &mut RawWriter, windows: Windows) {
        for partition in 0..writer.partitions() {
            let ts = self.stream_time.get(&partition).copied().unwrap_or(0) + 100 * windows.size;
            writer.write(
                partition,
                RawRecord::new(Some("flush"), Some(b"v".to_vec())).at(ts),
            );
            self.stream_time.insert(partition, ts);
        }
        writer.flush();
    }

    /// The stage's rule, replayed: stream time is the largest timestamp of the partition so
    /// far (this record's included); a record whose window closed (stream time >= end + grace)
    /// is late.
    fn note(&mut self, partition: i32, key: &str, ts: i64, windows: Windows) {
        let now = self.stream_time.entry(partition).or_insert(i64::MIN);
        *now = (*now).max(ts);
        let start = ts.div_euclid(windows.size) * windows.size;
        if *now >= start + windows.size + windows.grace {
            self.late += 1;
        } else {
            *self.expected.entry((key.to_string(), start)).or_insert(0) += 1;
        }
    }
}

/// What the check of a windowed-count output found.
#[derive(Debug, Default)]
pub struct WindowReport {
    pub results: usize,
    /// Windows never emitted.
    pub missing: usize,
    /// Windows emitted more than once.
    pub duplicated: usize,
    /// Windows emitted once with another count: (key, start, expected, got).
    pub wrong: Vec<(String, i64, u64, u64)>,
    /// Windows emitted that should not exist.
    pub unexpected: usize,
}

impl WindowReport {
    pub fn exact(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.wrong.is_empty() && self.unexpected == 0
    }
}

impl std::fmt::Display for WindowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} results: {} windows missing, {} emitted more than once, {} with a wrong count \
             (first: {:?}), {} unexpected",
            self.results,
            self.missing,
            self.duplicated,
            self.wrong.len(),
            self.wrong.first(),
            self.unexpected
        )
    }
}

/// Checks a windowed-count output topic (read_committed) against the expected windows.
pub fn check_windows(
    bootstrap: &str,
    output: &str,
    expected: &BTreeMap<(String, i64), u64>,
) -> WindowReport {
    let mut seen: BTreeMap<(String, i64), Vec<u64>> = BTreeMap::new();
    let records = read_topic(bootstrap, output, Isolation::ReadCommitted);
    let mut report = WindowReport {
        results: records.len(),
        ..WindowReport::default()
    };
    for record in records {
        let value: serde_json::Value =
            serde_json::from_slice(&record.value).expect("a windowed-count result is JSON");
        let key = value["key"].as_str().unwrap_or_default().to_string();
        let start = value["start"].as_i64().expect("start");
        let count = value["count"].as_u64().expect("count");
        seen.entry((key, start)).or_default().push(count);
    }
    for (window, count) in expected {
        match seen.remove(window).as_deref() {
            None | Some([]) => report.missing += 1,
            Some([got]) if got == count => {}
            Some([got]) => report
                .wrong
                .push((window.0.clone(), window.1, *count, *got)),
            Some(_) => report.duplicated += 1,
        }
    }
    report.unexpected = seen.len();
    report
}
