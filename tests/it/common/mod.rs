//! Shared fixture for the integration tests: a real broker, fresh names, input writers, the stage as a
//! child process, readers for both isolation levels, and [`check`]: the library's verifier
//! (`kstage::verify::check_records`) over one view of the output.
//!
//! Tests never assert on timings: they wait on conditions with generous deadlines, and a timeout
//! fails with the stage's stderr tail.
#![allow(dead_code, unused_imports, unused_macros)]

#[macro_use]
pub mod broker;
pub mod chaos;
pub mod http;
pub mod input;
pub mod kills;
pub mod ledger;
pub mod mix;
pub mod orders;
pub mod orders_stage;
pub mod raw;
pub mod read;
#[macro_use]
pub mod registry;
#[macro_use]
pub mod secure;
pub mod sink;
pub mod stage;
pub mod state;
pub mod values;

use std::time::{Duration, Instant};

pub use broker::{broker, create_topic, unique_name, Broker};
pub use input::{below_committed, origin, seed, BackgroundWriter, InputRecord, InputWriter};
pub use kstage::verify::Report;
pub use read::{end_offsets, no_open_transaction, read_topic, GroupOffsets, Isolation, ReadRecord};
pub use stage::{Stage, StageSpec};

/// Checks one view of a passthrough pipeline's output (`output`: records of one topic as one
/// reader saw them, in offset order per partition) against `written`, with the library's
/// verifier: every written record exactly once (none lost, none duplicated, nothing else), and
/// per lane (input partition, output partition) in input order. Output records are traced by
/// the id in their (copied) JSON value.
pub fn check(written: &[InputRecord], output: &[ReadRecord]) -> Report {
    let inputs: Vec<kstage::verify::Record> = written.iter().map(InputRecord::to_record).collect();
    let outputs: Vec<kstage::verify::Record> = output.iter().map(ReadRecord::to_record).collect();
    kstage::verify::check_records(
        &kstage::verify::Identity::Field("id".into()),
        &[kstage::verify::TopicRecords {
            topic: "input",
            records: &inputs,
        }],
        &[kstage::verify::TopicRecords {
            topic: "output",
            records: &outputs,
        }],
        10,
    )
}

/// The assertions the tests make on a [`Report`] of [`check`].
pub trait Verdict {
    /// Fails the test unless exactly once and in order; `context` says what was checked.
    fn assert_exactly_once_in_order(&self, context: &str);
    /// Fails the test unless exactly once (order not checked).
    fn assert_exactly_once(&self, context: &str);
}

impl Verdict for Report {
    fn assert_exactly_once_in_order(&self, context: &str) {
        assert!(
            self.is_exactly_once() && self.order_violations.ok(),
            "{context}: not exactly once in order: {self}"
        );
    }

    fn assert_exactly_once(&self, context: &str) {
        assert!(
            self.is_exactly_once(),
            "{context}: not exactly once: {self}"
        );
    }
}

/// The generous deadline for anything the stage should do "soon": drain an input, exit, rebalance.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `condition` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One test's topics and names: an input and an output topic, and the app id (= group id).
pub struct Pipeline {
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub app_id: String,
    pub partitions: i32,
}

impl Pipeline {
    /// Fresh input and output topics with `partitions` partitions each, and a fresh app id.
    pub fn new(broker: &Broker, partitions: i32) -> Self {
        let pipeline = Self {
            bootstrap: broker.bootstrap.clone(),
            input: unique_name("in"),
            output: unique_name("out"),
            app_id: unique_name("app"),
            partitions,
        };
        create_topic(&pipeline.bootstrap, &pipeline.input, partitions);
        create_topic(&pipeline.bootstrap, &pipeline.output, partitions);
        pipeline
    }

    /// Like [`Pipeline::new`], but the output topic is compacted (the broker rejects a keyless
    /// record there: INVALID_RECORD); also returns a fresh one-partition dead-letter topic.
    pub fn with_compacted_output(broker: &Broker, partitions: i32) -> (Self, String) {
        let pipeline = Self {
            bootstrap: broker.bootstrap.clone(),
            input: unique_name("in"),
            output: unique_name("compacted"),
            app_id: unique_name("app"),
            partitions,
        };
        create_topic(&pipeline.bootstrap, &pipeline.input, partitions);
        broker::create_topic_with(
            &pipeline.bootstrap,
            &pipeline.output,
            partitions,
            &[("cleanup.policy", "compact")],
        );
        let dead_letters = unique_name("dlq");
        create_topic(&pipeline.bootstrap, &dead_letters, 1);
        (pipeline, dead_letters)
    }

    /// A stage spec for `topology` from this pipeline's input to its output, in its group.
    pub fn stage(&self, topology: &str) -> StageSpec {
        StageSpec::new(
            &self.bootstrap,
            topology,
            &self.input,
            &self.output,
            &self.app_id,
        )
    }

    pub fn writer(&self) -> InputWriter {
        InputWriter::new(&self.bootstrap, &self.input, self.partitions)
    }

    /// Writes and flushes `count` records.
    pub fn seed(&self, count: usize) -> InputWriter {
        seed(&self.bootstrap, &self.input, self.partitions, count)
    }

    /// Committed offsets of this pipeline's group on its input (`stable`: see [`GroupOffsets::new`]).
    pub fn group_offsets(&self, stable: bool) -> GroupOffsets {
        GroupOffsets::new(&self.bootstrap, &self.app_id, &self.input, stable)
    }

    pub fn read_output(&self, isolation: Isolation) -> Vec<ReadRecord> {
        read_topic(&self.bootstrap, &self.output, isolation)
    }

    /// Reads the output read_committed and checks it against `written`.
    pub fn check_committed(&self, written: &[InputRecord]) -> Report {
        check(written, &self.read_output(Isolation::ReadCommitted))
    }

    /// Reads the output read_uncommitted (aborted and open transactions included) and checks it.
    pub fn check_uncommitted(&self, written: &[InputRecord]) -> Report {
        check(written, &self.read_output(Isolation::ReadUncommitted))
    }

    /// True when no output partition has an open transaction (LSO == high watermark).
    pub fn output_settled(&self) -> bool {
        no_open_transaction(&self.bootstrap, &self.output)
    }

    /// Asserts the end state of a run that stopped cleanly: no transaction is left open on the
    /// output (last stable offset = high watermark on every partition), and the group's stable
    /// committed offsets are the input's end offsets `ends`.
    pub fn assert_settled_at(&self, ends: &[i64]) {
        let lso = end_offsets(&self.bootstrap, &self.output, Isolation::ReadCommitted);
        let hw = end_offsets(&self.bootstrap, &self.output, Isolation::ReadUncommitted);
        assert_eq!(
            lso, hw,
            "an output partition has an open transaction (last stable offset < high watermark)"
        );
        let committed: Vec<i64> = self
            .group_offsets(true)
            .committed()
            .iter()
            .map(|o| o.unwrap_or(0))
            .collect();
        assert_eq!(
            committed, ends,
            "the group's committed offsets must equal the input's end offsets"
        );
    }

    /// Sum of the output's high watermarks (records, aborted ones and transaction markers).
    pub fn output_size(&self) -> i64 {
        end_offsets(&self.bootstrap, &self.output, Isolation::ReadUncommitted)
            .iter()
            .sum()
    }

    /// Waits until the group has committed the whole input (`ends`), failing with `stage`'s stderr.
    pub fn wait_drained(&self, stage: &mut Stage, ends: &[i64]) {
        let offsets = self.group_offsets(false);
        stage.wait_until(PATIENCE, "the group has committed the whole input", || {
            offsets.caught_up(ends)
        });
    }

    /// Checks that the input topic holds exactly what `written` says, with `seq` == offset: the
    /// assumption [`below_committed`] rests on.
    pub fn assert_seq_is_offset(&self, written: &[InputRecord]) {
        let input = read_topic(&self.bootstrap, &self.input, Isolation::ReadUncommitted);
        assert_eq!(
            input.len(),
            written.len(),
            "input topic holds a different number of records"
        );
        for record in &input {
            let origin = origin(record).expect("input record parses");
            assert_eq!(
                (origin.partition, origin.seq),
                (record.partition, record.offset),
                "input record {} is not at the offset its seq says",
                origin.id
            );
        }
    }
}
