//! Zombie fencing: an instance frozen (SIGSTOP) with an open transaction is replaced by a new
//! instance with the same transactional id. The new one fences the old producer and aborts its open
//! transaction; when the zombie wakes up it must fail (exit non-zero) without any of its writes
//! becoming visible, and the read_committed output holds every id exactly once.

use crate::common;
use common::orders_stage::stop_cleanly;

use std::time::Duration;

use common::stage::exit_code;
use common::{BackgroundWriter, Isolation, Pipeline, Verdict, PATIENCE};

fn zombie_instance_is_fenced_and_its_writes_stay_invisible() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    // Keep input flowing while A runs, so that A is caught with a transaction open.
    let mut writer = pipeline.writer();
    writer.write(5_000);
    writer.flush();
    let background = BackgroundWriter::start(writer, 200, Duration::from_millis(20));

    let spec = pipeline
        .stage("passthrough")
        .instance("x")
        .arg("--commit-interval", "1s");
    let mut zombie = spec.clone().spawn();
    let offsets = pipeline.group_offsets(false);
    zombie.wait_until(PATIENCE, "instance A has committed some input", || {
        offsets.progress() > 0
    });

    // Freeze A while one of its transactions is open (LSO < high watermark on some partition). The
    // transaction may commit between the probe and the signal: then let it run and try again.
    let mut frozen_with_open_transaction = false;
    for _ in 0..50 {
        zombie.wait_until(PATIENCE, "instance A has a transaction open", || {
            !pipeline.output_settled()
        });
        zombie.sigstop();
        if !pipeline.output_settled() {
            frozen_with_open_transaction = true;
            break;
        }
        zombie.sigcont();
    }
    assert!(
        frozen_with_open_transaction,
        "could not freeze instance A with a transaction open"
    );
    let lso_at_freeze = common::end_offsets(
        &pipeline.bootstrap,
        &pipeline.output,
        Isolation::ReadCommitted,
    );
    let hw_at_freeze = common::end_offsets(
        &pipeline.bootstrap,
        &pipeline.output,
        Isolation::ReadUncommitted,
    );
    eprintln!("froze A: output LSO {lso_at_freeze:?}, high watermarks {hw_at_freeze:?}");

    // B: same app id, same instance id, hence the same transactional.id.
    let mut successor = spec.spawn();
    let writer = background.stop();
    let ends = writer.end_offsets();
    pipeline.wait_drained(&mut successor, &ends);
    let before_wake = pipeline.check_committed(&writer.written);
    if !before_wake.is_exactly_once() || !before_wake.order_violations.ok() {
        successor.fail(&format!(
            "read_committed output after B drained: {before_wake}"
        ));
    }

    // Wake the zombie: it still believes it owns its transaction, and must find out it is fenced.
    zombie.sigcont();
    let status = zombie.wait_exit(PATIENCE);
    if status.success() {
        zombie.fail("the fenced instance A exited 0; it must fail with a non-zero exit");
    }
    eprintln!(
        "A exited with {status} after waking up; stderr tail:\n{}",
        zombie.stderr_tail(20)
    );

    // Nothing A did after waking became visible, and B is unaffected.
    let after_wake = pipeline.check_committed(&writer.written);
    after_wake.assert_exactly_once_in_order("read_committed output after the zombie woke up");
    if successor.try_exit().is_some() {
        successor.fail("instance B exited when the zombie woke up");
    }
    // A's open transaction was written to the log, then aborted when B fenced it: the
    // read_uncommitted view shows those records twice, which proves the check above can fail.
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    assert!(
        uncommitted.duplicated.count > 0,
        "the read_uncommitted view shows no trace of A's aborted transaction: {uncommitted}"
    );

    successor.sigterm();
    let status = successor.wait_exit(PATIENCE);
    if exit_code(status) != Some(0) {
        successor.fail(&format!(
            "SIGTERM of instance B should exit 0, got {status}"
        ));
    }
    pipeline.assert_settled_at(&ends);
}

/// Static membership: a second live instance joins with the first one's `group.instance.id`.
/// The group fences the first (FENCED_INSTANCE_ID): it must stop with exit 1 and a message that
/// names the duplicate id and what to do, while the second drains the input exactly once. (The
/// two differ in instance_id here so that the producers do not fence each other first: with
/// the same instance_id the newer one's init_transactions fences the older producer, whose
/// error names the shared instance_id too.)
fn a_second_live_instance_with_the_same_group_instance_id_stops_the_first_with_exit_1() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(3_000);
    let ends = writer.end_offsets();
    let first = pipeline.stage("passthrough").instance("twin");
    let member = format!("group.instance.id={}-twin", first.app_id);
    let mut first = first.arg("--max-records-per-txn", "100").spawn();
    let offsets = pipeline.group_offsets(false);
    first.wait_until(PATIENCE, "the first instance has committed", || {
        offsets.progress() > 0
    });
    let mut second = pipeline
        .stage("passthrough")
        .instance("other")
        .arg("--consumer-property", &member)
        .spawn();
    let status = first.wait_exit(PATIENCE);
    let stderr = first.stderr();
    if exit_code(status) != Some(1) || !stderr.contains("same group.instance.id") {
        first.fail(&format!(
            "the fenced member should stop with exit 1 naming the duplicate group.instance.id, \
             got {status}"
        ));
    }
    if !stderr.contains("distinct instance_id") {
        first.fail("the message should say to give every instance a distinct instance_id");
    }
    pipeline.wait_drained(&mut second, &ends);
    stop_cleanly(&mut second);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output after one member was fenced");
}

trials! {
    zombie_instance_is_fenced_and_its_writes_stay_invisible => [Broker],
    a_second_live_instance_with_the_same_group_instance_id_stops_the_first_with_exit_1 => [Broker],
}
