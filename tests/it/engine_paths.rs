//! More of issue 11's paths, reached through fail points of the `fault-injection` build: an
//! abortable error that first shows up at `send()` (`_STATE`), a SIGTERM during start-up, a
//! worker thread that panics outside user code, a batch whose consumer positions miss a
//! partition it read, and a consumer error that is not known to heal. Each test failed on the engine before its fix (docs/RELIABILITY.md, "Faults
//! of the engine's own paths", gives the before-and-after runs).

use std::time::Duration;

use kstage::topology::headers::ERROR_CLASS;

use crate::common;
use common::orders_stage::stop_cleanly;
use common::raw::RawRecord;
use common::stage::{exit_code, exit_signal};
use common::{read_topic, Isolation, Pipeline, Verdict, PATIENCE};

/// The broker rejects one output (a keyless record to a compacted topic: INVALID_RECORD) while
/// thousands more are sent after it in the same transaction. The transaction fails in the
/// background, and librdkafka refuses the next sends with `_STATE`: that refusal is an abort and a
/// rewind, not a fatal exit. Isolation then finds the rejected record, which is dead-lettered;
/// every keyed record is written exactly once.
fn an_abortable_error_first_seen_at_send_aborts_and_rewinds() {
    let broker = require_broker!();
    let (pipeline, dead_letters) = Pipeline::with_compacted_output(&broker, 1);
    let mut writer = pipeline.writer();
    writer.write(10);
    writer.write_raw(0, RawRecord::new(None, Some(b"no key".to_vec())));
    // Far more than one produce request's worth: sends go on after the rejection arrives.
    writer.write(60_000);
    writer.flush();

    let mut stage = pipeline
        .stage("passthrough")
        .instance("state")
        .arg("--poison-policy", "dead_letter")
        .arg("--dead-letter-topic", &dead_letters)
        .arg("--commit-interval", "5s")
        .arg("--max-records-per-txn", "1000000")
        .spawn();
    pipeline.wait_drained(&mut stage, &writer.end_offsets());
    if !stage
        .stderr()
        .contains("The transaction failed in the background; aborting and rewinding.")
    {
        stage.fail(
            "no send was refused by the failed transaction: this run did not reach the `_STATE` \
             path it tests",
        );
    }
    stop_cleanly(&mut stage);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("every keyed record exactly once");
    let letters = read_topic(&pipeline.bootstrap, &dead_letters, Isolation::ReadCommitted);
    assert_eq!(letters.len(), 1, "one dead letter, for the keyless record");
    assert_eq!(
        letters[0].header(ERROR_CLASS),
        Some(&b"output_rejected"[..])
    );
}

/// A SIGTERM that arrives while the stage starts (held at start-up by a fail point right after
/// the engine thread starts) is a clean stop: exit 0, never death by the signal's default action.
fn a_sigterm_during_start_up_is_a_clean_stop() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 1);
    let mut stage = pipeline
        .stage("passthrough")
        .instance("early")
        .env("FAILPOINTS", "kstage::after_worker_start=sleep(10000)")
        .spawn();
    stage.wait_for_stderr(PATIENCE, "Starting the stage.");
    // Inside the fail point's 10 s (the line above is logged just before it).
    std::thread::sleep(Duration::from_secs(1));
    stage.sigterm();
    let status = stage.wait_exit(PATIENCE);
    if let Some(signal) = exit_signal(status) {
        stage.fail(&format!(
            "a SIGTERM during start-up killed the stage (signal {signal}): its handler was not \
             installed yet"
        ));
    }
    if exit_code(status) != Some(0) {
        stage.fail(&format!(
            "a SIGTERM during start-up should exit 0, got {status}"
        ));
    }
}

/// With `--workers 2`, one worker thread panics outside user code (a fail point in its loop).
/// The other worker stops too and the stage exits with an error, instead of running on with a
/// dead worker whose partitions nobody processes. Nothing is lost: a restart drains the input
/// exactly once.
fn a_panicking_worker_stops_the_stage() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 4);
    let writer = pipeline.seed(4_000);
    let mut stage = pipeline
        .stage("passthrough")
        .instance("w")
        .arg("--workers", "2")
        .env("FAILPOINTS", "kstage::worker_step=200*off->1*panic")
        .spawn();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(1) {
        stage.fail(&format!(
            "a panicking worker should stop the stage with exit 1, got {status}"
        ));
    }
    if !stage.stderr().contains("panicked") {
        stage.fail("the stage's error does not say that a worker panicked");
    }
    let mut again = pipeline.stage("passthrough").instance("w").spawn();
    pipeline.wait_drained(&mut again, &writer.end_offsets());
    stop_cleanly(&mut again);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after the restart");
}

/// A batch whose consumer positions miss a partition it read (librdkafka reports no position for
/// a partition it no longer fetches; a fail point hides partition 1's once) is aborted and
/// rewound. Committing it without that partition would leave partition 1's records uncommitted,
/// to be read and written again by the next owner: here the whole input is read in that one
/// batch, so the group would never commit partition 1 and the drain below would never end.
fn a_batch_missing_a_position_is_aborted_not_committed_without_it() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 2);
    let writer = pipeline.seed(2_000);
    let mut stage = pipeline
        .stage("passthrough")
        .instance("pos")
        .arg("--commit-interval", "3s")
        .arg("--max-records-per-txn", "1000000")
        .env("FAILPOINTS", "kstage::position_missing=1*return(1)")
        .spawn();
    pipeline.wait_drained(&mut stage, &writer.end_offsets());
    if !stage.stderr().contains("aborting the batch") {
        stage.fail("the batch with a missing position was not aborted");
    }
    stop_cleanly(&mut stage);
    let mut again = pipeline.stage("passthrough").instance("pos").spawn();
    again.wait_for_stderr(PATIENCE, "Stage worker started.");
    pipeline.wait_drained(&mut again, &writer.end_offsets());
    stop_cleanly(&mut again);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after a restart");
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    assert!(
        uncommitted.duplicated.count > 0,
        "read_uncommitted shows no duplicates: no batch was aborted, so this test could not \
         tell: {uncommitted}"
    );
}

/// A consumer error that is not known to heal stops the stage, naming it: here
/// `auto.offset.reset=error` on a group with no committed offset (librdkafka's
/// `_AUTO_OFFSET_RESET`). The retriable consumer errors are an explicit list; before, anything
/// unlisted was retried forever while the stage read nothing.
fn a_consumer_error_not_known_to_heal_stops_the_stage() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 1);
    pipeline.seed(10);
    let mut stage = pipeline
        .stage("passthrough")
        .instance("reset")
        .arg("--consumer-property", "auto.offset.reset=error")
        .spawn();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(1) {
        stage.fail(&format!(
            "an unlisted consumer error should stop the stage with exit 1, got {status}"
        ));
    }
    let stderr = stage.stderr().to_lowercase();
    if !stderr.contains("autooffsetreset") {
        stage.fail("the stage's error does not name the failed offset reset");
    }
}

trials! {
    a_consumer_error_not_known_to_heal_stops_the_stage => [Broker],
    an_abortable_error_first_seen_at_send_aborts_and_rewinds => [Broker],
    a_sigterm_during_start_up_is_a_clean_stop => [Broker],
    a_panicking_worker_stops_the_stage => [Broker],
    a_batch_missing_a_position_is_aborted_not_committed_without_it => [Broker],
}
