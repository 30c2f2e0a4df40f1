//! Fixture of the stateful tests: a pipeline with its changelog topics and a private state
//! directory, an input of keyed records whose true count per key the test knows, and the check
//! of the `count` topology's output against it.
//!
//! The check is stricter than "the last count per key is right": in the read_committed output,
//! the updates of each key must be exactly 1, 2, ..., n in order (n its true count). A lost
//! record shows as a gap or a short final count; a record counted twice as a repeat or an
//! over-count; an update of an aborted transaction leaking as a repeat.

pub mod totals;
pub mod windows;

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::broker::create_topic_with;
use super::raw::{RawRecord, RawWriter};
use super::read::{read_topic, Isolation};
use super::{Broker, Pipeline, StageSpec};

/// A pipeline for a stateful topology: input, output, the changelogs of `stores`, and a
/// state directory removed with it.
pub struct StatePipeline {
    pub pipeline: Pipeline,
    pub stores: Vec<String>,
    pub state_dir: tempfile::TempDir,
}

impl StatePipeline {
    pub fn new(broker: &Broker, partitions: i32, stores: &[&str]) -> Self {
        let pipeline = Pipeline::new(broker, partitions);
        for store in stores {
            create_topic_with(
                &pipeline.bootstrap,
                &changelog(&pipeline.app_id, store),
                partitions,
                &[("cleanup.policy", "compact")],
            );
        }
        Self {
            pipeline,
            stores: stores.iter().map(|s| s.to_string()).collect(),
            state_dir: tempfile::tempdir().expect("a state directory"),
        }
    }

    /// A spec of `topology` with this pipeline's state directory and small transactions, so
    /// that kills land between many commits.
    pub fn stage(&self, topology: &str) -> StageSpec {
        self.stage_with_batch(topology, 2000)
    }

    /// [`Self::stage`] with at most `records` input records per transaction.
    pub fn stage_with_batch(&self, topology: &str, records: usize) -> StageSpec {
        self.pipeline
            .stage(topology)
            .arg("--state-dir", &self.state_dir.path().display().to_string())
            .arg("--commit-interval", "50ms")
            .arg("--max-records-per-txn", &records.to_string())
    }

    /// The local state directory of one instance (`<state_dir>/<app_id>-<instance>`).
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.state_dir
            .path()
            .join(format!("{}-{instance}", self.pipeline.app_id))
    }
}

/// The changelog topic of `store`.
pub fn changelog(app_id: &str, store: &str) -> String {
    format!("{app_id}-{store}-changelog")
}

/// Keyed input: `records` records over `keys` keys (`k<n>`), each key always in partition
/// `n % partitions`, keys in random order. Returns the true count per key.
pub fn write_keyed(writer: &mut RawWriter, records: usize, keys: usize) -> BTreeMap<String, u64> {
    let partitions = writer.partitions() as usize;
    let mut truth = BTreeMap::new();
    for i in 0..records {
        let n = rand::random_range(0..keys);
        let key = format!("k{n}");
        writer.write(
            (n % partitions) as i32,
            RawRecord::new(Some(&key), Some(format!("r{i}").into_bytes())),
        );
        *truth.entry(key).or_insert(0) += 1;
    }
    writer.flush();
    truth
}

/// What the check of a count output found.
#[derive(Debug, Default)]
pub struct CountReport {
    /// Keys whose last update differs from the true count: (key, true, last seen).
    pub wrong_final: Vec<(String, u64, u64)>,
    /// Keys whose updates are not exactly 1..=n in order.
    pub not_sequential: usize,
    /// Keys counted more often than written (the final count above the true one).
    pub over_counted: usize,
    /// Updates read.
    pub updates: usize,
}

impl CountReport {
    pub fn exact(&self) -> bool {
        self.wrong_final.is_empty() && self.not_sequential == 0
    }
}

impl std::fmt::Display for CountReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} updates; {} keys with a wrong final count ({} over-counted), {} keys not \
             counted 1..n in order; first wrong: {:?}",
            self.updates,
            self.wrong_final.len(),
            self.over_counted,
            self.not_sequential,
            self.wrong_final.iter().take(5).collect::<Vec<_>>()
        )
    }
}

/// Checks a `count` output topic, read with `isolation`, against the true counts.
pub fn check_counts(
    bootstrap: &str,
    output: &str,
    isolation: Isolation,
    truth: &BTreeMap<String, u64>,
) -> CountReport {
    let mut updates: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let records = read_topic(bootstrap, output, isolation);
    let mut report = CountReport {
        updates: records.len(),
        ..CountReport::default()
    };
    for record in records {
        let key = record.key.clone().unwrap_or_default();
        let count: u64 = record
            .value_str()
            .parse()
            .unwrap_or_else(|_| panic!("a count output is not a number: {record:?}"));
        updates.entry(key).or_default().push(count);
    }
    for (key, expected) in truth {
        let seen = updates.remove(key).unwrap_or_default();
        let last = seen.last().copied().unwrap_or(0);
        if last != *expected {
            report.wrong_final.push((key.clone(), *expected, last));
            if last > *expected {
                report.over_counted += 1;
            }
        }
        if !seen.iter().copied().eq(1..=*expected) {
            report.not_sequential += 1;
        }
    }
    for (key, seen) in updates {
        report
            .wrong_final
            .push((key, 0, seen.last().copied().unwrap_or(0)));
    }
    report
}

/// `kstage verify --expect EXPECT` on a pipeline's input and output: its exit code (0: the
/// output is what the input says, 1: it is not) and what it printed.
pub fn verify_expect(p: &Pipeline, expect: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kstage"))
        .args(["verify", "--expect", expect, "--no-progress"])
        .args([
            "--bootstrap-servers",
            &p.bootstrap,
            "--input",
            &p.input,
            "--output",
            &p.output,
        ])
        .output()
        .expect("run kstage verify");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}
