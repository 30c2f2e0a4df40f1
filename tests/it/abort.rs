//! Aborted transactions: a poison record under policy `fail` aborts the open transaction and stops
//! the stage with exit 1; random injected aborts are rewound and retried. Either way nothing of an
//! aborted transaction reaches read_committed readers, and nothing is lost.

use crate::common;
use common::orders_stage::stop_cleanly;

use common::below_committed;
use common::read::{seen_but_not_settled, LiveReader};
use common::stage::exit_code;
use common::{Isolation, Pipeline, Verdict, PATIENCE};

fn poison_record_aborts_the_open_transaction_and_exits_1() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let marker = common::unique_name("poison");
    let mut writer = pipeline.writer();
    writer.write(3_000);
    let poison = writer.write_marked(&marker);
    writer.write(3_000);
    writer.flush();
    pipeline.assert_seq_is_offset(&writer.written);

    // A long commit interval and no record limit: the poison record is processed mid-transaction,
    // after records of the same transaction were already produced.
    let spec = pipeline
        .stage("fail-on")
        .instance("p")
        .arg("--param", &format!("marker={marker}"))
        .arg("--commit-interval", "5s")
        .arg("--max-records-per-txn", "1000000")
        .arg("--poison-policy", "fail");
    let mut failing = spec.spawn();
    let status = failing.wait_exit(PATIENCE);
    if exit_code(status) != Some(1) {
        failing.fail(&format!(
            "a poison record under policy `fail` should exit 1, got {status}"
        ));
    }
    let stderr = failing.stderr();
    eprintln!(
        "the failing stage's last words:\n{}",
        failing.stderr_tail(4)
    );
    let offset = poison.seq.to_string();
    let coordinates = format!("{}/{}@{offset}", pipeline.input, poison.partition);
    if !stderr.contains(&coordinates) {
        failing.fail(&format!(
            "the error should name topic {}, partition {} and offset {offset}",
            pipeline.input, poison.partition
        ));
    }

    // Nothing after the last commit is visible: the read_committed output is exactly the input
    // below the committed offsets, and the poison record's offset was not committed.
    let committed = pipeline.group_offsets(true).committed();
    let poison_committed = committed[poison.partition as usize].unwrap_or(0);
    assert!(
        poison_committed <= poison.seq,
        "the group committed offset {poison_committed} past the poison record at {}",
        poison.seq
    );
    let visible = pipeline.read_output(Isolation::ReadCommitted);
    let report = common::check(&below_committed(&writer.written, &committed), &visible);
    report
        .assert_exactly_once_in_order("read_committed output must be exactly the committed input");
    // The aborted transaction's records were written, and are only in the uncommitted view.
    let everything = pipeline.read_output(Isolation::ReadUncommitted);
    assert!(
        everything.len() > visible.len(),
        "the read_uncommitted view ({} records) shows nothing beyond the read_committed view ({}): \
         the aborted transaction left no trace, so this test could not tell",
        everything.len(),
        visible.len()
    );
    assert!(
        pipeline.output_settled(),
        "the aborted transaction is still open"
    );

    // A healthy instance in the same group (same transactional id) processes the rest.
    let mut healthy = pipeline.stage("passthrough").instance("p").spawn();
    pipeline.wait_drained(&mut healthy, &writer.end_offsets());
    stop_cleanly(&mut healthy);
    let report = pipeline.check_committed(&writer.written);
    report.assert_exactly_once_in_order("read_committed output after the healthy instance drained");
}

fn random_aborts_leave_every_record_exactly_once() {
    random_aborts_leave_every_record_exactly_once_with(&[]);
}

/// The same with pipelined commits: an abort then also throws away the batch held while the
/// aborted transaction was committing.
fn random_aborts_leave_every_record_exactly_once_with_pipelined_commits() {
    random_aborts_leave_every_record_exactly_once_with(&[("--pipelined-commits", "true")]);
}

/// The same with back-to-back commits (many small transactions; blocking commits here, the
/// pipelined ones in `crash::` and in the full reliability run).
fn random_aborts_leave_every_record_exactly_once_with_back_to_back_commits() {
    random_aborts_leave_every_record_exactly_once_with(&[("--commit-policy", "back_to_back")]);
}

/// The same with commits closed by a latency target.
fn random_aborts_leave_every_record_exactly_once_with_a_target_latency() {
    random_aborts_leave_every_record_exactly_once_with(&[
        ("--commit-policy", "target_latency"),
        ("--target-latency", "10ms"),
    ]);
}

/// `extra`: further stage flags.
fn random_aborts_leave_every_record_exactly_once_with(extra: &[(&str, &str)]) {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(20_000);
    let ends = writer.end_offsets();

    let live = LiveReader::start(
        &pipeline.bootstrap,
        &pipeline.output,
        Isolation::ReadCommitted,
    );
    // Small transactions, 30 % of them aborted: many aborts, and still progress.
    let mut spec = pipeline
        .stage("passthrough")
        .instance("aborty")
        .arg("--max-records-per-txn", "200")
        .arg("--commit-interval", "50ms")
        .env("FAILPOINTS", "kstage::inject_abort=30%return");
    for (flag, value) in extra {
        spec = spec.arg(flag, value);
    }
    let mut stage = spec.spawn();
    pipeline.wait_drained(&mut stage, &ends);
    stop_cleanly(&mut stage);

    let settled = pipeline.read_output(Isolation::ReadCommitted);
    let committed = common::check(&writer.written, &settled);
    committed.assert_exactly_once_in_order("read_committed output with random aborts");
    let live = live.stop();
    let unsettled = seen_but_not_settled(&live, &settled);
    assert!(
        !live.is_empty() && unsettled.is_empty(),
        "a read_committed reader following the run saw {} records, {} of them not in the final \
         output (aborted?), e.g. {:?}",
        live.len(),
        unsettled.len(),
        &unsettled[..unsettled.len().min(10)]
    );
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    assert!(
        uncommitted.duplicated.count > 0,
        "the read_uncommitted view shows no duplicates, so no aborted transaction was written and \
         this test could not tell: {uncommitted}"
    );
    assert!(
        pipeline.output_settled(),
        "an output partition still has an open transaction"
    );
}

trials! {
    poison_record_aborts_the_open_transaction_and_exits_1 => [Broker],
    random_aborts_leave_every_record_exactly_once => [Broker],
    random_aborts_leave_every_record_exactly_once_with_pipelined_commits => [Broker],
    random_aborts_leave_every_record_exactly_once_with_back_to_back_commits => [Broker],
    random_aborts_leave_every_record_exactly_once_with_a_target_latency => [Broker],
}
