//! Re-creating the transactional producer (src/engine/txn/renew.rs): a commit or abort that hangs
//! past the watchdog (a fail point that sleeps in the commit thread, as librdkafka#5456's hung
//! calls do) is settled by a new producer with the same transactional id, and the stage goes on
//! without an exit. The output stays exactly once for read_committed readers; the
//! read_uncommitted view shows the aborted attempt (so the check could fail), and the negative
//! control `KSTAGE_BROKEN_MODE=no_recreate` stops with the batch in doubt, as the engine did
//! before re-creation (run against an older build with `KSTAGE_TEST_BINARY`, the same happens).

use crate::common;
use common::orders_stage::stop_cleanly;

use common::stage::exit_code;
use common::{Pipeline, StageSpec, Verdict, PATIENCE};

/// The stages' transaction timeout: the watchdog gives a hung call up after twice this.
const TRANSACTION_TIMEOUT: &str = "4s";
/// How long the fail point blocks the call: well past the watchdog (8 s).
const HANG: &str = "sleep(20000)";
/// How long the abort's fail point blocks: past the test's whole patience (120 s), so only a
/// bounded abort lets the stage drain. Before the abort had a watchdog (issue 11, item 10) it ran
/// unbounded on the worker thread and this hang stopped the stage for good.
const ENDLESS_HANG: &str = "sleep(600000)";
/// What a re-creation logs.
const RECREATED: &str = "Re-created the transactional producer";

fn hanging_stage(pipeline: &Pipeline, instance: &str, failpoints: &str) -> StageSpec {
    pipeline
        .stage("passthrough")
        .instance(instance)
        .arg("--transaction-timeout", TRANSACTION_TIMEOUT)
        .arg("--commit-interval", "100ms")
        .arg("--max-records-per-txn", "500")
        .env("FAILPOINTS", failpoints)
}

/// Runs a stage whose first commit (or abort) hangs; it must re-create its producer, drain the
/// whole input without exiting, and leave every record exactly once.
fn hung_call_is_settled_without_an_exit(failpoints: &str) {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(5_000);
    let ends = writer.end_offsets();
    let mut stage = hanging_stage(&pipeline, "hung", failpoints).spawn();
    pipeline.wait_drained(&mut stage, &ends);
    if !stage.stderr().contains(RECREATED) {
        stage.fail("the hung call should have been settled by a re-created producer");
    }
    stop_cleanly(&mut stage);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after a hung call was settled");
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    assert!(
        uncommitted.duplicated.count > 0,
        "the read_uncommitted view shows no duplicates: the hung transaction's records were not \
         written, so this test could not tell: {uncommitted}"
    );
    assert!(
        pipeline.output_settled(),
        "an output partition still has an open transaction"
    );
}

fn a_commit_that_hangs_past_the_watchdog_is_settled_by_a_new_producer() {
    hung_call_is_settled_without_an_exit(&format!("kstage::before_commit=1*{HANG}"));
}

fn an_abort_that_hangs_past_the_watchdog_is_settled_by_a_new_producer() {
    hung_call_is_settled_without_an_exit(&format!(
        "kstage::inject_abort=1*return;kstage::before_abort=1*{ENDLESS_HANG}"
    ));
}

/// A commit that landed on the broker but whose end the stage never saw (the fail point sleeps
/// after `commit_transaction` returned): the batch is in doubt, the new producer's init finds it
/// committed, and the rewind to the committed offsets (not to the batch's first offsets, which
/// would write it twice) goes on after it. Exactly once; no aborted records are expected here.
fn a_commit_that_landed_but_was_never_seen_to_end_is_not_repeated() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(5_000);
    let ends = writer.end_offsets();
    let mut stage = hanging_stage(
        &pipeline,
        "landed",
        &format!("kstage::after_commit=1*{HANG}"),
    )
    .spawn();
    pipeline.wait_drained(&mut stage, &ends);
    stage.sigterm();
    let status = stage.wait_exit(PATIENCE);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after an in-doubt commit that landed");
    let stderr = stage.stderr();
    if !stderr.contains(RECREATED) || !stderr.contains("committed offsets of the settled batch") {
        stage.fail(
            "the in-doubt commit should have been settled and rewound to the committed offsets",
        );
    }
    if exit_code(status) != Some(0) {
        stage.fail(&format!(
            "SIGTERM after the drain should exit 0, got {status}"
        ));
    }
    assert!(
        pipeline.output_settled(),
        "an output partition still has an open transaction"
    );
}

/// The negative control: without re-creation the same hung commit stops the stage (exit 1, the
/// batch in doubt), which the test above would report as an unplanned exit; a restart with the
/// same instance id settles the batch, exactly once.
fn without_recreation_a_hung_commit_stops_the_stage_in_doubt() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(5_000);
    let ends = writer.end_offsets();
    let mut stage = hanging_stage(
        &pipeline,
        "hung",
        &format!("kstage::before_commit=1*{HANG}"),
    )
    .env("KSTAGE_BROKEN_MODE", "no_recreate")
    .spawn();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(1) || !stage.stderr().contains("did not end within") {
        stage.fail(&format!(
            "without re-creation the hung commit should stop the stage (exit 1, \"did not end \
             within\"), got {status}"
        ));
    }
    if stage.stderr().contains(RECREATED) {
        stage.fail("no_recreate re-created the producer");
    }
    let mut restarted = pipeline.stage("passthrough").instance("hung").spawn();
    pipeline.wait_drained(&mut restarted, &ends);
    restarted.sigterm();
    restarted.wait_exit(PATIENCE);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after the restart settled the batch");
}

trials! {
    a_commit_that_hangs_past_the_watchdog_is_settled_by_a_new_producer => [Broker],
    an_abort_that_hangs_past_the_watchdog_is_settled_by_a_new_producer => [Broker],
    a_commit_that_landed_but_was_never_seen_to_end_is_not_repeated => [Broker],
    without_recreation_a_hung_commit_stops_the_stage_in_doubt => [Broker],
}
