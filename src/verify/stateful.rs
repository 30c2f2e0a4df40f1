//! `kstage verify --expect count|windowed-count|dedupe|order-totals`: the outputs of the stateful built-in
//! topologies, checked against what the input says they must be, computed here from the input
//! alone (no code shared with the engine or the topologies).
//!
//! ```text
//!   input (read_committed, offset order per partition) ──► expected, by the topology's rule
//!   output (read_committed)                            ──► what was emitted
//!   compare: count          per key, the updates are exactly 1, 2, ..., n in order
//!            windowed-count per (key, window) exactly one result with the expected count
//!            dedupe         exactly the first occurrences within the retention, each once
//!            order-totals   per customer, totals 1..n orders in order, each with the running
//!                           sum of the amounts (the `order_totals` module)
//! ```
//!
//! The rules, restated: stream time is per input partition, the largest timestamp so far,
//! this record's included. A window `[s, s + size)` (tumbling) is closed once stream time
//! reaches `s + size + grace`; a record of a closed window is late and counts nowhere; a
//! window is emitted when it closes, so windows still open at the input's end are not
//! expected, unless the stage closes quiet partitions' windows (`idle_close`): then they are
//! expected too. The verifier cannot know when the stage was idle, so it assumes what a run
//! that drains its input and then idles gives: no record arrived for a window after its
//! partition closed it on idle (such a record would be late, and its window's count short:
//! `wrong`). Dedupe forwards a record unless its id was forwarded less than `retention` ms
//! (event time) before it; outputs are traced to inputs by the provenance headers.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use serde::Serialize;

use super::read::{Bounds, Client, Isolation, NoProgress};
use super::VerifyError;
use crate::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION};

/// What the output of a stateful topology must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// `count`: a running count per key.
    Count,
    /// `windowed-count` with tumbling windows.
    WindowedCount {
        /// Window length, ms.
        size: i64,
        /// Grace period, ms.
        grace: i64,
        /// `idle_close` (wall ms), if the stage closes quiet partitions' windows: then the
        /// windows still open at the input's end are expected too.
        idle_close: Option<i64>,
    },
    /// `order-totals` (JSON values): a running total per customer.
    OrderTotals,
    /// `dedupe`.
    Dedupe {
        /// How long an id is remembered, ms of event time.
        retention: i64,
        /// The JSON value field holding the id; `None`: the key.
        id_field: Option<String>,
    },
}

/// One record as the stateful checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its timestamp, ms.
    pub timestamp: Option<i64>,
    /// `kstage.source.partition` and `kstage.source.offset`, if the record has them.
    pub source: Option<(i32, i64)>,
}

/// What a stateful check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatefulReport {
    /// Keys, windows or first occurrences expected.
    pub expected: usize,
    /// Output records read.
    pub outputs: usize,
    /// Expected but never emitted.
    pub missing: usize,
    /// Emitted more than once (or, for counts, not 1..n in order).
    pub duplicated: usize,
    /// Emitted once with a wrong value.
    pub wrong: usize,
    /// Emitted but not expected.
    pub unexpected: usize,
    /// A few examples of what was wrong.
    pub examples: Vec<String>,
}

impl StatefulReport {
    /// Whether the output is exactly what the input says.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.wrong == 0 && self.unexpected == 0
    }

    pub(super) fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

impl std::fmt::Display for StatefulReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} expected, {} outputs: {} missing, {} duplicated, {} wrong, {} unexpected{}",
            self.expected,
            self.outputs,
            self.missing,
            self.duplicated,
            self.wrong,
            self.unexpected,
            if self.examples.is_empty() {
                String::new()
            } else {
                format!("; e.g. {}", self.examples.join("; "))
            }
        )
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks `output` against `input` (each in offset order per partition).
pub fn check(
    expect: &Expectation,
    input: &[TimedRecord],
    output: &[TimedRecord],
) -> StatefulReport {
    match expect {
        Expectation::Count => check_count(input, output),
        Expectation::WindowedCount {
            size,
            grace,
            idle_close,
        } => check_windows(*size, *grace, idle_close.is_some(), input, output),
        Expectation::OrderTotals => super::order_totals::check(input, output),
        Expectation::Dedupe {
            retention,
            id_field,
        } => check_dedupe(*retention, id_field.as_deref(), input, output),
    }
}

fn check_count(input: &[TimedRecord], output: &[TimedRecord]) -> StatefulReport {
    let mut truth: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for record in input {
        if let Some(key) = &record.key {
            *truth.entry(key.clone()).or_insert(0) += 1;
        }
    }
    let mut seen: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for record in output {
        let count = record
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        seen.entry(record.key.clone().unwrap_or_default())
            .or_default()
            .push(count);
    }
    let mut report = StatefulReport {
        expected: truth.len(),
        outputs: output.len(),
        ..StatefulReport::default()
    };
    for (key, n) in &truth {
        match seen.remove(key) {
            None => report.missing += 1,
            Some(updates) if updates.iter().copied().eq(1..=*n) => {}
            Some(updates) => {
                if updates.last().copied() == Some(*n) {
                    report.duplicated += 1;
                } else {
                    report.wrong += 1;
                }
                let last = updates.last().copied().unwrap_or(0);
                report.example(format!(
                    "key {:?}: {} updates ending at {last}, expected 1..{n}",
                    text(key),
                    updates.len()
                ));
            }
        }
    }
    report.unexpected = seen.len();
    report
}

fn check_windows(
    size: i64,
    grace: i64,
    idle_close: bool,
    input: &[TimedRecord],
    output: &[TimedRecord],
) -> StatefulReport {
    let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
    let mut counts: BTreeMap<(Vec<u8>, i64, i32), u64> = BTreeMap::new();
    for record in input {
        let Some(ts) = record.timestamp else { continue };
        let now = stream_time.entry(record.partition).or_insert(i64::MIN);
        *now = (*now).max(ts);
        let start = ts.div_euclid(size) * size;
        if *now < start + size + grace {
            let key = record.key.clone().unwrap_or_default();
            *counts.entry((key, start, record.partition)).or_insert(0) += 1;
        }
    }
    // Only windows closed by the input's end are emitted; with idle_close, the stage closes
    // the rest once the input stops.
    let expected: BTreeMap<(Vec<u8>, i64), u64> = counts
        .into_iter()
        .filter(|((_, start, partition), _)| {
            idle_close
                || stream_time
                    .get(partition)
                    .is_some_and(|now| *now >= start + size + grace)
        })
        .map(|((key, start, _), n)| ((key, start), n))
        .collect();
    let mut seen: BTreeMap<(Vec<u8>, i64), Vec<u64>> = BTreeMap::new();
    for record in output {
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default()).unwrap_or_default();
        let key = value
            .get("key")
            .unwrap_or(&serde_json::Value::Null)
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        let start = value
            .get("start")
            .unwrap_or(&serde_json::Value::Null)
            .as_i64()
            .unwrap_or(i64::MIN);
        seen.entry((key, start)).or_default().push(
            value
                .get("count")
                .unwrap_or(&serde_json::Value::Null)
                .as_u64()
                .unwrap_or(0),
        );
    }
    let mut report = StatefulReport {
        expected: expected.len(),
        outputs: output.len(),
        ..StatefulReport::default()
    };
    for ((key, start), n) in &expected {
        match seen.remove(&(key.clone(), *start)).as_deref() {
            None | Some([]) => report.missing += 1,
            Some([got]) if got == n => {}
            Some([got]) => {
                report.wrong += 1;
                report.example(format!(
                    "key {:?} window {start}: count {got}, expected {n}",
                    text(key)
                ));
            }
            Some(many) => {
                report.duplicated += 1;
                report.example(format!(
                    "key {:?} window {start}: emitted {} times",
                    text(key),
                    many.len()
                ));
            }
        }
    }
    report.unexpected = seen.len();
    report
}

fn dedupe_id(record: &TimedRecord, field: Option<&str>) -> Option<Vec<u8>> {
    let Some(field) = field else {
        return record.key.clone();
    };
    let value: serde_json::Value = serde_json::from_slice(record.value.as_deref()?).ok()?;
    match value.get(field)? {
        serde_json::Value::String(id) => Some(id.as_bytes().to_vec()),
        serde_json::Value::Number(id) => Some(id.to_string().into_bytes()),
        _ => None,
    }
}

fn check_dedupe(
    retention: i64,
    field: Option<&str>,
    input: &[TimedRecord],
    output: &[TimedRecord],
) -> StatefulReport {
    let mut first_seen: BTreeMap<(i32, Vec<u8>), i64> = BTreeMap::new();
    let mut forwarded: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    for record in input {
        let (Some(id), Some(ts)) = (dedupe_id(record, field), record.timestamp) else {
            continue;
        };
        let slot = first_seen.entry((record.partition, id)).or_insert(i64::MIN);
        if *slot == i64::MIN || ts >= slot.saturating_add(retention) {
            *slot = ts;
            forwarded.insert((record.partition, record.offset), 0);
        }
    }
    let mut report = StatefulReport {
        expected: forwarded.len(),
        outputs: output.len(),
        ..StatefulReport::default()
    };
    for record in output {
        match record.source.and_then(|s| forwarded.get_mut(&s)) {
            Some(seen) => *seen += 1,
            None => {
                report.unexpected += 1;
                report.example(format!(
                    "output {}@{} (source {:?}) is not a first occurrence",
                    record.partition, record.offset, record.source
                ));
            }
        }
    }
    for ((partition, offset), seen) in forwarded {
        match seen {
            0 => {
                report.missing += 1;
                report.example(format!("input {partition}@{offset} was not forwarded"));
            }
            1 => {}
            _ => report.duplicated += 1,
        }
    }
    report
}

/// Reads a whole topic read_committed, in offset order per partition.
pub fn read_timed(client: &Client, topic: &str) -> Result<Vec<TimedRecord>, VerifyError> {
    let consumer = client.consumer(Isolation::ReadCommitted, None)?;
    let partitions = client.partitions(&consumer, topic)?;
    let bounds = Bounds::whole(client.watermarks(&consumer, topic, partitions)?);
    let mut records = Vec::new();
    client.read(topic, Isolation::ReadCommitted, &bounds, &NoProgress, |m| {
        let header = |name: &str| -> Option<i64> {
            let headers = m.headers()?;
            let found = headers.iter().find(|h| h.key == name)?;
            std::str::from_utf8(found.value?).ok()?.parse().ok()
        };
        let source = match (header(SOURCE_PARTITION), header(SOURCE_OFFSET)) {
            (Some(p), Some(o)) => i32::try_from(p).ok().map(|p| (p, o)),
            _ => None,
        };
        records.push(TimedRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            source,
        });
    })?;
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Parses `--expect`: `count`, `windowed-count:SIZE[:GRACE[:IDLE_CLOSE]]`,
/// `dedupe[:RETENTION[:ID_FIELD]]`, `order-totals`.
pub fn parse_expectation(raw: &str) -> Result<Expectation, String> {
    let millis = |text: &str| -> Result<i64, String> {
        humantime::parse_duration(text)
            .map(|d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .map_err(|e| format!("{text:?} is not a duration ({e})"))
    };
    let mut parts = raw.split(':');
    match parts.next() {
        Some("count") => Ok(Expectation::Count),
        Some("order-totals") if parts.next().is_none() => Ok(Expectation::OrderTotals),
        Some("windowed-count") => {
            let size = millis(parts.next().ok_or(
                "windowed-count:SIZE[:GRACE[:IDLE_CLOSE]], e.g. windowed-count:1m:10s:30s",
            )?)?;
            let grace = parts.next().map(millis).transpose()?.unwrap_or(0);
            let idle_close = parts.next().map(millis).transpose()?;
            if size <= 0 || idle_close.is_some_and(|idle| idle <= 0) {
                return Err(format!(
                    "{raw:?}: SIZE and IDLE_CLOSE must be longer than 0 ms, e.g. \
                     windowed-count:1m:10s:30s"
                ));
            }
            Ok(Expectation::WindowedCount {
                size,
                grace,
                idle_close,
            })
        }
        Some("dedupe") => Ok(Expectation::Dedupe {
            retention: parts.next().map(millis).transpose()?.unwrap_or(3_600_000),
            id_field: parts.next().map(str::to_string),
        }),
        _ => Err(format!(
            "{raw:?}: expected count, windowed-count:SIZE[:GRACE[:IDLE_CLOSE]], \
             dedupe[:RETENTION[:ID_FIELD]] or order-totals"
        )),
    }
}

#[cfg(test)]
#[path = "stateful_tests.rs"]
mod tests;
