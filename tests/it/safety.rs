//! Paths that used to lose a record or turn a recoverable fault into an exit (issue 11): a
//! panic in a topology, at_most_once's failed batch, an output too large for Kafka, a partition
//! taken over from a dead instance while aborts rewind, and consumer commits that race
//! rebalances in at_least_once. Each test fails on the engine before the fix.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kstage::topology::headers::{ERROR_CLASS, ERROR_TRUNCATED};

use crate::common;
use common::below_committed;
use common::http::{free_port, http_status};
use common::kills::drain_then_stop;
use common::orders_stage::stop_cleanly;
use common::raw::RawRecord;
use common::stage::exit_code;
use common::{
    create_topic, read_topic, unique_name, BackgroundWriter, Isolation, Pipeline, Verdict, PATIENCE,
};

/// A panic in `Topology::process` commits nothing of its batch: the committed offset stays at or
/// below the record that panicked, nothing of the batch (which holds outputs sent before the
/// panic) is visible read_committed, and a restart with a healthy topology writes the record's
/// output exactly once.
fn a_panic_in_the_topology_commits_nothing_of_its_batch() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let marker = unique_name("panic");
    let mut writer = pipeline.writer();
    writer.write(3_000);
    let poison = writer.write_marked(&marker);
    writer.write(3_000);
    writer.flush();
    pipeline.assert_seq_is_offset(&writer.written);

    let (mut panicking, committed) =
        fail_on_marker(&pipeline, &marker, &poison, "p", &["action=panic"], None);
    let stderr = panicking.stderr();
    let coordinates = format!("{}/{}@{}", pipeline.input, poison.partition, poison.seq);
    if !stderr.contains(&coordinates) || !stderr.contains("panic") {
        panicking.fail(&format!(
            "the error should name the record ({coordinates}) and say it panicked"
        ));
    }
    let visible = pipeline.read_output(Isolation::ReadCommitted);
    common::check(&below_committed(&writer.written, &committed), &visible)
        .assert_exactly_once_in_order("read_committed output must be exactly the committed input");
    let everything = pipeline.read_output(Isolation::ReadUncommitted);
    assert!(
        everything.len() > visible.len(),
        "the read_uncommitted view ({}) shows nothing beyond read_committed ({}): the panicking \
         batch sent nothing, so this test could not tell",
        everything.len(),
        visible.len()
    );

    drain_then_stop(
        &pipeline,
        &pipeline.stage("passthrough").instance("p"),
        &writer.end_offsets(),
    );
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after the healthy restart");
}

/// at_most_once processes a record before its batch's offsets commit: a record that fails under
/// `fail` stops the stage with nothing of its batch committed, so the restart loses nothing.
fn at_most_once_commits_nothing_of_a_batch_whose_record_fails() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let marker = unique_name("poison");
    let mut writer = pipeline.writer();
    writer.write(2_000);
    let poison = writer.write_marked(&marker);
    writer.write(2_000);
    writer.flush();

    fail_on_marker(&pipeline, &marker, &poison, "m", &[], Some("at_most_once"));

    let mut healthy = pipeline
        .stage("passthrough")
        .instance("m")
        .arg("--delivery", "at_most_once")
        .spawn();
    pipeline.wait_drained(&mut healthy, &writer.end_offsets());
    stop_cleanly(&mut healthy);
    // No crash between a commit and its sends happened, so nothing may be missing.
    let report = pipeline.check_uncommitted(&writer.written);
    assert_eq!(
        report.lost.count, 0,
        "at_most_once lost records that it had not processed: {report}"
    );
}

/// Runs `fail-on` (one batch of everything, policy `fail`) until it meets `marker` and exits 1,
/// and asserts that the group's committed offset on the marker's partition stayed at or below
/// the marker: nothing of the failed batch is committed. Returns the stage and the offsets.
fn fail_on_marker(
    pipeline: &Pipeline,
    marker: &str,
    poison: &common::InputRecord,
    instance: &str,
    params: &[&str],
    delivery: Option<&str>,
) -> (common::Stage, Vec<Option<i64>>) {
    let mut spec = pipeline
        .stage("fail-on")
        .instance(instance)
        .arg("--param", &format!("marker={marker}"))
        .arg("--commit-interval", "5s")
        .arg("--max-records-per-txn", "1000000")
        .arg("--poison-policy", "fail");
    for param in params {
        spec = spec.arg("--param", param);
    }
    if let Some(delivery) = delivery {
        spec = spec.arg("--delivery", delivery);
    }
    let mut stage = spec.spawn();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(1) {
        stage.fail(&format!(
            "a failing record under policy `fail` should exit 1, got {status}"
        ));
    }
    let committed = pipeline.group_offsets(delivery.is_none()).committed();
    let poison_committed = committed[poison.partition as usize].unwrap_or(0);
    assert!(
        poison_committed <= poison.seq,
        "the group committed offset {poison_committed} past the record that failed ({}): the \
         rest of its batch would be lost",
        poison.seq
    );
    (stage, committed)
}

/// An output that Kafka would reject for its size (a 999,950-byte value with kstage's provenance
/// headers is above message.max.bytes) is poison of class `output_rejected`: under dead_letter
/// it is dead-lettered, cut to fit with `kstage.error.truncated`, and the stage goes on.
fn an_output_too_large_for_kafka_is_dead_lettered_and_the_stage_goes_on() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 2);
    let dead_letters = unique_name("dlq");
    create_topic(&pipeline.bootstrap, &dead_letters, 1);
    let mut writer = pipeline.writer();
    writer.write(1_000);
    let big = vec![b'x'; 999_950];
    let at = writer.write_raw(0, RawRecord::new(Some("big"), Some(big)));
    writer.write(1_000);
    writer.flush();

    let mut stage = pipeline
        .stage("passthrough")
        .instance("big")
        .arg("--poison-policy", "dead_letter")
        .arg("--dead-letter-topic", &dead_letters)
        .spawn();
    pipeline.wait_drained(&mut stage, &writer.end_offsets());
    stop_cleanly(&mut stage);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("every record but the oversized one, exactly once");
    let letters = read_topic(&pipeline.bootstrap, &dead_letters, Isolation::ReadCommitted);
    assert_eq!(
        letters.len(),
        1,
        "one dead letter, for the oversized record at {at:?}"
    );
    let letter = &letters[0];
    assert_eq!(letter.header(ERROR_CLASS), Some(&b"output_rejected"[..]));
    assert_eq!(letter.header(ERROR_TRUNCATED), Some(&b"999950"[..]));
    assert!(
        !letter.value.is_empty() && letter.value.len() < 999_950,
        "the dead letter's value should be cut, not dropped: {} bytes",
        letter.value.len()
    );
}

/// A keyless record to a compacted output topic is refused by the broker (INVALID_RECORD), after
/// the send, in the delivery report, and the broker fails the whole produce request with it: the
/// batch aborts and is re-run one record per transaction, the record whose own transaction fails
/// is poison of class `output_rejected`, and the stage goes on instead of aborting every retry
/// until it gives up.
fn an_output_the_broker_rejects_is_found_and_dead_lettered() {
    let broker = require_broker!();
    let (pipeline, dead_letters) = Pipeline::with_compacted_output(&broker, 2);
    let mut writer = pipeline.writer();
    writer.write(200);
    let at = writer.write_raw(1, RawRecord::new(None, Some(b"no key".to_vec())));
    writer.write(200);
    writer.flush();

    let mut stage = pipeline
        .stage("passthrough")
        .instance("compact")
        .arg("--poison-policy", "dead_letter")
        .arg("--dead-letter-topic", &dead_letters)
        .spawn();
    pipeline.wait_drained(&mut stage, &writer.end_offsets());
    stop_cleanly(&mut stage);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("every keyed record exactly once");
    let letters = read_topic(&pipeline.bootstrap, &dead_letters, Isolation::ReadCommitted);
    assert_eq!(
        letters.len(),
        1,
        "one dead letter, for the keyless record at {at:?}"
    );
    assert_eq!(
        letters[0].header(ERROR_CLASS),
        Some(&b"output_rejected"[..])
    );
    assert_eq!(letters[0].value, b"no key");
}

/// Instance A dies for good right after sending its offsets into a transaction; B, aborting
/// and rewinding often, takes A's partitions. The rewind seeks B's own batches back without
/// asking for committed offsets, which would wait on A's pending transaction until it times
/// out and then fail: B does not exit, and every record is written exactly once.
fn a_rewind_never_waits_on_a_dead_instances_pending_transaction() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 4);
    let writer = pipeline.seed(20_000);
    let mut a = pipeline
        .stage("passthrough")
        .instance("a")
        .arg("--commit-interval", "200ms")
        .env("FAILPOINTS", "kstage::after_send_offsets=return")
        .spawn();
    let mut b = pipeline
        .stage("passthrough")
        .instance("b")
        .arg("--max-records-per-txn", "200")
        .arg("--commit-interval", "50ms")
        .env("FAILPOINTS", "kstage::inject_abort=30%return")
        .spawn();
    // A aborts the process right after its first send_offsets: that transaction stays pending
    // (with offsets) until the transaction timeout.
    let deadline = Instant::now() + PATIENCE;
    while a.try_exit().is_none() {
        assert!(
            Instant::now() < deadline,
            "instance A never reached its fail point"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pipeline.wait_drained(&mut b, &writer.end_offsets());
    if let Some(status) = b.try_exit() {
        b.fail(&format!(
            "instance B exited ({status}) while taking A's partitions"
        ));
    }
    stop_cleanly(&mut b);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after the takeover");
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    assert!(
        uncommitted.duplicated.count > 0,
        "read_uncommitted shows no duplicates: no transaction was aborted, so this test could \
         not tell: {uncommitted}"
    );
}

/// at_least_once: three instances scaling out and in every few seconds. A consumer offset
/// commit that races a rebalance (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
/// UNKNOWN_MEMBER_ID) rewinds instead of stopping the stage: nothing is lost, no instance exits
/// unplanned.
fn at_least_once_rides_out_rebalances_without_an_exit() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 6);
    let mut writer = pipeline.writer();
    let spec = |id: &str| {
        pipeline
            .stage("passthrough")
            .instance(id)
            .arg("--delivery", "at_least_once")
            .arg("--commit-interval", "20ms")
            .arg("--max-records-per-txn", "50")
    };
    let mut steady = spec("steady").spawn();
    for round in 0..6 {
        writer.write(3_000);
        writer.flush();
        let mut joiners: Vec<_> = (0..2)
            .map(|i| spec(&format!("r{round}-{i}")).spawn())
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        for joiner in &mut joiners {
            if let Some(status) = joiner.try_exit() {
                joiner.fail(&format!("an instance exited unplanned: {status}"));
            }
            joiner.sigterm();
        }
        for mut joiner in joiners {
            let status = joiner.wait_exit(PATIENCE);
            if exit_code(status) != Some(0) {
                joiner.fail(&format!("a scaled-in instance should exit 0, got {status}"));
            }
        }
        if let Some(status) = steady.try_exit() {
            steady.fail(&format!("the steady instance exited unplanned: {status}"));
        }
    }
    pipeline.wait_drained(&mut steady, &writer.end_offsets());
    stop_cleanly(&mut steady);
    let report = pipeline.check_committed(&writer.written);
    assert_eq!(report.lost.count, 0, "at_least_once lost records: {report}");
}

/// Two workers; the first commit of one of them hangs (a `sleep` fail point before
/// commit_transaction): readiness is per worker, so `/readyz` turns 503 naming the stuck worker
/// while the other one goes on. (With one readiness state for the whole stage, the other
/// worker's commits kept it 200.)
fn one_stuck_worker_makes_the_stage_unready() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 4);
    let health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut stage = pipeline
        .stage("passthrough")
        .instance("w")
        .arg("--workers", "2")
        .arg("--metrics-address", &health.to_string())
        .arg("--ready-max-transaction-age", "3s")
        .env("FAILPOINTS", "kstage::before_commit=1*sleep(90000)")
        .spawn();
    stage.wait_until(PATIENCE, "/readyz answers 200 before any input", || {
        http_status(health, "/readyz") == Some(200)
    });
    // Input keeps flowing, so the healthy worker keeps opening and committing transactions.
    let writer = BackgroundWriter::start(pipeline.writer(), 100, Duration::from_millis(20));
    stage.wait_until(PATIENCE, "/readyz answers 503 for the stuck worker", || {
        http_status(health, "/readyz") == Some(503)
    });
    stage.sigkill();
    writer.stop();
}

trials! {
    one_stuck_worker_makes_the_stage_unready => [Broker],
    an_output_the_broker_rejects_is_found_and_dead_lettered => [Broker],
    a_panic_in_the_topology_commits_nothing_of_its_batch => [Broker],
    at_most_once_commits_nothing_of_a_batch_whose_record_fails => [Broker],
    an_output_too_large_for_kafka_is_dead_lettered_and_the_stage_goes_on => [Broker],
    a_rewind_never_waits_on_a_dead_instances_pending_transaction => [Broker],
    at_least_once_rides_out_rebalances_without_an_exit => [Broker],
}
