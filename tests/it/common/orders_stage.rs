//! An `orders-avro` pipeline: input, default output, `invalid` output and dead-letter topics, the
//! stage spec with its formats, and helpers to run it to the end of its input and account for
//! what it wrote.

use std::time::Duration;

use super::broker::{create_topic, unique_name, Broker};
use super::ledger::{Accounting, Ledger, ValueCheck};
use super::raw::{RawRecord, RawWriter};
use super::read::{no_open_transaction, read_topic, GroupOffsets, Isolation, ReadRecord};
use super::stage::{exit_code, Stage, StageSpec};
use super::{Pipeline, PATIENCE};

/// Value format of the pipeline's topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// JSON in, JSON out (`--format IN=string:json`, the default for the outputs).
    Json,
    /// Avro everywhere, against a registry.
    Avro,
}

/// The topics and names of one `orders-avro` test.
pub struct OrdersPipeline {
    /// Input, default output and app id.
    pub base: Pipeline,
    /// The `invalid` output.
    pub invalid: String,
    /// The dead-letter topic.
    pub dead_letters: String,
}

impl OrdersPipeline {
    /// Fresh topics (all with `partitions` partitions) and a fresh app id.
    pub fn new(broker: &Broker, partitions: i32) -> Self {
        let base = Pipeline::new(broker, partitions);
        let invalid = unique_name("invalid");
        let dead_letters = unique_name("dlq");
        create_topic(&base.bootstrap, &invalid, partitions);
        create_topic(&base.bootstrap, &dead_letters, partitions);
        Self {
            base,
            invalid,
            dead_letters,
        }
    }

    pub fn input(&self) -> &str {
        &self.base.input
    }

    pub fn output(&self) -> &str {
        &self.base.output
    }

    /// `orders-avro` from the input to the output, `invalid` routed, values in `format`
    /// (`registry`: the schema registry URL, needed for Avro), `--max-value-bytes 2000`, no
    /// metrics endpoint.
    pub fn stage(&self, format: ValueFormat, registry: Option<&str>) -> StageSpec {
        let mut spec = self
            .base
            .stage("orders-avro")
            .arg("--route", &format!("invalid={}", self.invalid))
            .arg("--max-value-bytes", super::mix::MAX_VALUE_BYTES)
            // Parallel stages (and other tests') must not compete for the default metrics port.
            .arg("--metrics-address", "off");
        match format {
            ValueFormat::Json => {
                spec = spec.arg("--format", &format!("{}=string:json", self.input()));
            }
            ValueFormat::Avro => {
                for topic in [self.input(), self.output(), &self.invalid] {
                    spec = spec.arg("--format", &format!("{topic}=string:avro"));
                }
            }
        }
        if let Some(url) = registry {
            spec = spec.arg("--schema-registry-url", url);
        }
        spec
    }

    /// [`OrdersPipeline::stage`] with `--poison-policy dead_letter` into this pipeline's topic.
    pub fn dead_letter_stage(&self, format: ValueFormat, registry: Option<&str>) -> StageSpec {
        self.stage(format, registry)
            .arg("--poison-policy", "dead_letter")
            .arg("--dead-letter-topic", &self.dead_letters)
    }

    /// A writer for the input topic.
    pub fn writer(&self) -> RawWriter {
        RawWriter::new(&self.base.bootstrap, self.input(), self.base.partitions)
    }

    /// Writes `records` round-robin over the input partitions, flushes, and adds them to `ledger`.
    pub fn write(
        &self,
        writer: &mut RawWriter,
        ledger: &mut Ledger,
        records: Vec<(RawRecord, super::ledger::Expect)>,
    ) {
        let (raw, expects): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let places = writer.write_all(raw.clone());
        writer.flush();
        for ((at, record), expect) in places.into_iter().zip(raw).zip(expects) {
            ledger.add(at, record, expect);
        }
    }

    /// Committed offsets of the group on the input.
    pub fn group_offsets(&self, stable: bool) -> GroupOffsets {
        self.base.group_offsets(stable)
    }

    /// Starts `spec`, waits until the group has committed all of `ends`, stops it with SIGTERM
    /// and expects exit code 0. Returns the stopped stage (for its log).
    pub fn run_to_end(&self, spec: &StageSpec, ends: &[i64]) -> Stage {
        let mut stage = spec.spawn();
        self.base.wait_drained(&mut stage, ends);
        stop_cleanly(&mut stage);
        stage
    }

    /// Reads the three destinations as `isolation` sees them.
    pub fn read_all(&self, isolation: Isolation) -> [Vec<ReadRecord>; 3] {
        let bootstrap = &self.base.bootstrap;
        [
            read_topic(bootstrap, self.output(), isolation),
            read_topic(bootstrap, &self.invalid, isolation),
            read_topic(bootstrap, &self.dead_letters, isolation),
        ]
    }

    /// Accounts for the three destinations (read with `isolation`) against `ledger`.
    pub fn account(
        &self,
        ledger: &Ledger,
        isolation: Isolation,
        check_value: ValueCheck<'_>,
    ) -> Accounting {
        let [output, invalid, dead_letters] = self.read_all(isolation);
        ledger.account(&output, &invalid, &dead_letters, check_value)
    }

    /// True when none of the three destinations has an open transaction.
    pub fn settled(&self) -> bool {
        [self.output(), &self.invalid, &self.dead_letters]
            .iter()
            .all(|topic| no_open_transaction(&self.base.bootstrap, topic))
    }
}

/// SIGTERM, then expects exit 0 and the "Stage stopped cleanly." line.
pub fn stop_cleanly(stage: &mut Stage) {
    stage.sigterm();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(0) {
        stage.fail(&format!("SIGTERM should exit 0, got {status}"));
    }
    if !stage.stderr().contains("Stage stopped cleanly.") {
        stage.fail("no \"Stage stopped cleanly.\" line after SIGTERM");
    }
}

/// Waits for the stage to exit on its own and returns its exit code (`None`: killed by a signal).
pub fn wait_exit_code(stage: &mut Stage, timeout: Duration) -> Option<i32> {
    exit_code(stage.wait_exit(timeout))
}

/// A field `name=value` of the last log line containing `message` (text log format).
pub fn log_field(log: &str, message: &str, name: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(message))?;
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_string())
}
