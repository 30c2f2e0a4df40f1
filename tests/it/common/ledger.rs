//! The poison ledger: every input record a test wrote and where it should end up (default
//! output, `invalid` output, as a tombstone, or in the dead-letter topic with an error class).
//!
//! Counting is the library verifier's: [`Ledger::account`] runs `kstage::verify::check_records`
//! over the three destinations (one record per input record across them, traced by the
//! provenance headers `kstage.source.*`) and `kstage::verify::check_dead_letters` over the
//! dead-letter topic (faithful copies with error headers). The ledger adds what only the test
//! knows: each record's fate (which destination, tombstone or not, which error class or invalid
//! reason) and, through a [`ValueCheck`], its value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kstage::topology::headers::ERROR_CLASS;
use kstage::verify::{
    check_dead_letters, check_records, Finding, Identity, Record, Report, TopicRecords,
};

use super::raw::{Coordinates, RawRecord};
use super::read::ReadRecord;

/// The header the `orders` topologies give a record routed to `invalid` (a topology's own
/// header, not one of `kstage::topology::headers`).
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
    let record = record.to_record();
    let (topic, partition, offset) = kstage::verify::dead_letter::provenance(&record)?;
    Some((topic.to_string(), Coordinates { partition, offset }))
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
    /// The verifier's counts over the three destinations: lost, duplicated, unexpected.
    pub report: Report,
    /// Dead letters that are not faithful copies of their input record.
    pub dead_letters: Finding,
    /// Records whose fate differs from the ledger's: wrong place, headers or values.
    pub problems: Vec<String>,
    /// Records per destination.
    pub totals: BTreeMap<Destination, usize>,
}

impl Accounting {
    pub fn is_exactly_once(&self) -> bool {
        self.report.is_exactly_once() && self.dead_letters.ok() && self.problems.is_empty()
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
            "totals {:?}; lost {} {:?}; {} extra copies {:?}; {} unexpected {:?}; {} unfaithful \
             dead letters {:?}; {} problems:\n  {}",
            self.totals,
            self.report.lost.count,
            self.report.lost.examples,
            self.report.duplicated.count,
            self.report.duplicated.examples,
            self.report.unexpected.count,
            self.report.unexpected.examples,
            self.dead_letters.count,
            self.dead_letters.examples,
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

    /// The ledger with only the good records (those not expected in the dead-letter topic):
    /// for a policy that drops the bad ones, which must then appear nowhere.
    pub fn good_only(&self) -> Self {
        Self {
            input: self.input.clone(),
            entries: self
                .entries
                .iter()
                .filter(|(_, (_, expect))| !expect.is_bad())
                .map(|(at, entry)| (*at, entry.clone()))
                .collect(),
        }
    }

    /// The ledger's input records as the verifier takes them.
    fn records(&self) -> Vec<Record> {
        self.entries
            .iter()
            .map(|(at, (raw, _))| Record {
                partition: at.partition,
                offset: at.offset,
                key: raw.key.clone(),
                value: raw.value.clone(),
                headers: raw
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            })
            .collect()
    }

    /// Accounts for the records of the three destinations: the verifier counts them against
    /// the ledger's input records and checks the dead letters' fidelity; then each record that
    /// names a ledger entry is checked against its expected fate, and `check_value` checks the
    /// values of output and invalid records.
    pub fn account(
        &self,
        output: &[ReadRecord],
        invalid: &[ReadRecord],
        dead_letters: &[ReadRecord],
        check_value: ValueCheck<'_>,
    ) -> Accounting {
        let inputs = self.records();
        let input = TopicRecords {
            topic: &self.input,
            records: &inputs,
        };
        let sources = [
            (Destination::Output, output),
            (Destination::Invalid, invalid),
            (Destination::DeadLetter, dead_letters),
        ];
        let as_records: Vec<Vec<Record>> = sources
            .iter()
            .map(|(_, records)| records.iter().map(ReadRecord::to_record).collect())
            .collect();
        let names = ["output", "invalid", "dead letters"];
        let outputs: Vec<TopicRecords<'_>> = names
            .iter()
            .zip(&as_records)
            .map(|(topic, records)| TopicRecords { topic, records })
            .collect();
        let mut accounting = Accounting {
            report: check_records(&Identity::Provenance, &[input], &outputs, 12),
            dead_letters: check_dead_letters(input, &as_records[2], 12),
            ..Accounting::default()
        };
        for (destination, records) in sources {
            accounting.totals.insert(destination, records.len());
            for record in records {
                let place = format!("{destination:?}[{}]@{}", record.partition, record.offset);
                // Records naming no ledger entry are the verifier's "unexpected".
                let Some((at, (input, expect))) = provenance(record)
                    .filter(|(topic, _)| *topic == self.input)
                    .and_then(|(_, at)| self.entries.get(&at).map(|entry| (at, entry)))
                else {
                    continue;
                };
                let verdict = match destination {
                    Destination::DeadLetter => check_dead_letter(expect, record),
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

/// A dead letter is where the ledger expects it and has the expected error class (the rest of
/// its form is `kstage::verify::check_dead_letters`'s).
fn check_dead_letter(expect: &Expect, record: &ReadRecord) -> Result<(), String> {
    let Expect::DeadLetter { class, .. } = expect else {
        return Err("a good record was dead-lettered".into());
    };
    let got = record
        .header(ERROR_CLASS)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    if got.as_deref() != Some(class) {
        return Err(format!("error class {got:?}, expected {class}"));
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
