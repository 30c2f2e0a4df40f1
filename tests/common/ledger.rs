//! The poison ledger: every input record a test wrote, where it should end up (default output,
//! `invalid` output, as a tombstone, or in the dead-letter topic with an error class), and an
//! accounting of what the stage's topics actually hold, matched back to the input through the
//! provenance headers (`kstage.source.*`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::raw::{Coordinates, RawRecord};
use super::read::ReadRecord;

/// Header names the stage writes.
pub const SOURCE_TOPIC: &str = "kstage.source.topic";
pub const SOURCE_PARTITION: &str = "kstage.source.partition";
pub const SOURCE_OFFSET: &str = "kstage.source.offset";
pub const SOURCE_TIMESTAMP: &str = "kstage.source.timestamp";
pub const ERROR_CLASS: &str = "kstage.error.class";
pub const ERROR_MESSAGE: &str = "kstage.error.message";
pub const INVALID_REASON: &str = "kstage.invalid.reason";

/// Where an input record should end up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Enriched, on the default output.
    Output,
    /// A tombstone for the same key on the default output.
    Tombstone,
    /// Unchanged on the `invalid` output, with a reason containing this text.
    Invalid(&'static str),
    /// In the dead-letter topic with this `kstage.error.class`; `what` names the bad kind.
    DeadLetter {
        class: &'static str,
        what: &'static str,
    },
}

impl Expect {
    pub fn is_bad(&self) -> bool {
        matches!(self, Expect::DeadLetter { .. })
    }
}

/// Which of the stage's topics a record was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    Output,
    Invalid,
    DeadLetter,
}

/// The input coordinates a record's `kstage.source.*` headers name, with the topic.
pub fn provenance(record: &ReadRecord) -> Option<(String, Coordinates)> {
    let text = |name: &str| {
        record
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some((
        text(SOURCE_TOPIC)?,
        Coordinates {
            partition: text(SOURCE_PARTITION)?.parse().ok()?,
            offset: text(SOURCE_OFFSET)?.parse().ok()?,
        },
    ))
}

/// Every input record of one topic and its expected fate.
pub struct Ledger {
    pub input: String,
    pub entries: BTreeMap<Coordinates, (RawRecord, Expect)>,
}

/// A check the test adds on top of the ledger's: the value of `output` (read from `destination`)
/// for `input`. Returns what is wrong.
pub type ValueCheck<'a> = &'a dyn Fn(Destination, &RawRecord, &ReadRecord) -> Result<(), String>;

/// What an accounting found.
#[derive(Debug, Default)]
pub struct Accounting {
    /// How often each input record was seen, per destination.
    pub seen: BTreeMap<Coordinates, Vec<Destination>>,
    /// Everything wrong besides counts: wrong place, wrong headers, wrong values, foreign records.
    pub problems: Vec<String>,
    /// Input records not seen anywhere.
    pub missing: Vec<Coordinates>,
    /// Extra copies beyond the first.
    pub duplicates: usize,
    /// Records per destination.
    pub totals: BTreeMap<Destination, usize>,
}

impl Accounting {
    pub fn is_exactly_once(&self) -> bool {
        self.problems.is_empty() && self.missing.is_empty() && self.duplicates == 0
    }

    pub fn assert_exactly_once(&self, context: &str) {
        assert!(self.is_exactly_once(), "{context}: {self}");
    }
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = |items: &[String]| items[..items.len().min(12)].join("\n  ");
        write!(
            f,
            "totals {:?}; {} missing {:?}; {} extra copies; {} problems:\n  {}",
            self.totals,
            self.missing.len(),
            &self.missing[..self.missing.len().min(12)],
            self.duplicates,
            self.problems.len(),
            first(&self.problems)
        )
    }
}

impl Ledger {
    pub fn new(input: &str) -> Self {
        Self {
            input: input.to_string(),
            entries: BTreeMap::new(),
        }
    }

    /// Records that `record` was written at `at` and should end up as `expect`.
    pub fn add(&mut self, at: Coordinates, record: RawRecord, expect: Expect) {
        assert!(
            self.entries.insert(at, (record, expect)).is_none(),
            "two records at {at:?}"
        );
    }

    pub fn count_bad(&self) -> usize {
        self.entries.values().filter(|(_, e)| e.is_bad()).count()
    }

    pub fn count_good(&self) -> usize {
        self.entries.len() - self.count_bad()
    }

    /// Matches the records of the three destinations back to the input and checks each against
    /// its expectation; `check_value` adds value checks for output and invalid records.
    pub fn account(
        &self,
        output: &[ReadRecord],
        invalid: &[ReadRecord],
        dead_letters: &[ReadRecord],
        check_value: ValueCheck<'_>,
    ) -> Accounting {
        let mut accounting = Accounting::default();
        let sources = [
            (Destination::Output, output),
            (Destination::Invalid, invalid),
            (Destination::DeadLetter, dead_letters),
        ];
        for (destination, records) in sources {
            accounting.totals.insert(destination, records.len());
            for record in records {
                let place = format!("{destination:?}[{}]@{}", record.partition, record.offset);
                let Some((topic, at)) = provenance(record) else {
                    accounting
                        .problems
                        .push(format!("{place}: no provenance headers"));
                    continue;
                };
                let Some((input, expect)) = self.entries.get(&at).filter(|_| topic == self.input)
                else {
                    accounting.problems.push(format!(
                        "{place}: names {topic} {at:?}, not a written record"
                    ));
                    continue;
                };
                accounting.seen.entry(at).or_default().push(destination);
                let verdict = match destination {
                    Destination::DeadLetter => check_dead_letter(input, expect, record),
                    _ => check_destination(destination, input, expect, record)
                        .and_then(|()| check_value(destination, input, record)),
                };
                if let Err(problem) = verdict {
                    accounting
                        .problems
                        .push(format!("{place} (input {at:?}, {expect:?}): {problem}"));
                }
            }
        }
        for at in self.entries.keys() {
            match accounting.seen.get(at).map_or(0, Vec::len) {
                0 => accounting.missing.push(*at),
                n => accounting.duplicates += n - 1,
            }
        }
        accounting
    }
}

fn check_destination(
    destination: Destination,
    input: &RawRecord,
    expect: &Expect,
    record: &ReadRecord,
) -> Result<(), String> {
    let wanted = match expect {
        Expect::Output | Expect::Tombstone => Destination::Output,
        Expect::Invalid(_) => Destination::Invalid,
        Expect::DeadLetter { .. } => Destination::DeadLetter,
    };
    if destination != wanted {
        return Err(format!("expected in {wanted:?}"));
    }
    let input_key = input.key.as_deref().map(String::from_utf8_lossy);
    if record.key.as_deref() != input_key.as_deref() {
        return Err(format!("key {:?}, input key {input_key:?}", record.key));
    }
    match expect {
        Expect::Tombstone if !record.tombstone => Err("expected a tombstone".into()),
        Expect::Output if record.tombstone => Err("unexpected tombstone".into()),
        Expect::Invalid(reason) => {
            let got = record
                .header(INVALID_REASON)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if got.contains(reason) {
                Ok(())
            } else {
                Err(format!("reason header {got:?} does not mention {reason:?}"))
            }
        }
        _ => Ok(()),
    }
}

/// A dead letter holds the original key, value and headers (first, in order), then the error
/// headers.
fn check_dead_letter(
    input: &RawRecord,
    expect: &Expect,
    record: &ReadRecord,
) -> Result<(), String> {
    let Expect::DeadLetter { class, .. } = expect else {
        return Err("a good record was dead-lettered".into());
    };
    let header = |name: &str| {
        record
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    if header(ERROR_CLASS).as_deref() != Some(class) {
        return Err(format!(
            "error class {:?}, expected {class}",
            header(ERROR_CLASS)
        ));
    }
    if header(ERROR_MESSAGE).is_none_or(|m| m.trim().is_empty()) {
        return Err("empty or missing error message".into());
    }
    if header(SOURCE_TIMESTAMP)
        .and_then(|t| t.parse::<i64>().ok())
        .is_none()
    {
        return Err(format!("source timestamp {:?}", header(SOURCE_TIMESTAMP)));
    }
    let input_key = input.key.as_deref().map(String::from_utf8_lossy);
    if record.key.as_deref() != input_key.as_deref() {
        return Err(format!("key {:?}, original {input_key:?}", record.key));
    }
    if record.tombstone != input.value.is_none()
        || record.value != input.value.clone().unwrap_or_default()
    {
        return Err(format!(
            "value of {} bytes differs from the original {} bytes",
            record.value.len(),
            input.value.as_ref().map_or(0, Vec::len)
        ));
    }
    let original: Vec<(String, Option<Vec<u8>>)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    if record.headers.len() < original.len() || record.headers[..original.len()] != original[..] {
        return Err(format!(
            "headers {:?} do not start with the original {:?}",
            record.headers, original
        ));
    }
    Ok(())
}

/// Counts, per input coordinate, how many times a record naming it appears in `records` (for
/// read_uncommitted views, where aborted copies show up).
pub fn copies(records: &[ReadRecord]) -> HashMap<Coordinates, usize> {
    let mut counts = HashMap::new();
    for (_, at) in records.iter().filter_map(provenance) {
        *counts.entry(at).or_default() += 1;
    }
    counts
}
