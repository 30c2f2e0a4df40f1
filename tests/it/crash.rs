//! Crashes: the stage is SIGKILLed mid-stream (or aborts itself at a fail point in the commit path)
//! and restarted with the same instance id, again and again. Exactly-once mode must still deliver
//! every record once to read_committed readers; the read_uncommitted view (and at-least-once mode)
//! must show the duplicates the crashes caused, which proves the checks can fail.

use crate::common;

use std::time::Duration;

use common::kills::{drain_then_stop, kill_repeatedly};
use common::read::{seen_but_not_settled, LiveReader};
use common::{InputWriter, Isolation, Pipeline, Report, StageSpec, Verdict, PATIENCE};

/// SIGKILLs mid-stream per round.
const KILLS: usize = 6;
/// Input records seeded up front.
const RECORDS: usize = 200_000;
/// Extra rounds (more input, more kills) when a round happened to cause no duplicates.
const EXTRA_ROUNDS: usize = 3;

/// Runs incarnations of `spec` over everything `writer` wrote, SIGKILLing each at a random moment
/// once the group's committed progress passes the next mark, `kills` times while input remains;
/// then lets a last incarnation drain the input and stops it with SIGTERM (exit 0 expected, and
/// "Stage stopped cleanly.").
/// Returns how many kills landed mid-stream.
fn kill_repeatedly_then_drain(
    pipeline: &Pipeline,
    spec: &StageSpec,
    writer: &InputWriter,
    kills: usize,
) -> usize {
    let ends = writer.end_offsets();
    let total: i64 = ends.iter().sum();
    let offsets = pipeline.group_offsets(false);
    let start = offsets.progress();
    let step = ((total - start) / (kills as i64 + 2)).max(1);
    let at_kill = kill_repeatedly(spec, &offsets, kills, |kill, stage| {
        let mark = start + step * (kill as i64 + 1);
        stage.wait_until(
            PATIENCE,
            &format!("committed progress passes {mark} of {total}"),
            || offsets.progress() >= mark,
        );
        std::thread::sleep(Duration::from_millis(rand::random_range(0..100)));
    });
    drain_then_stop(pipeline, spec, &ends);
    at_kill.iter().filter(|&&before| before < total).count()
}

/// Kill rounds until `duplicates` (a check of the output) reports duplicates, at most
/// `1 + EXTRA_ROUNDS` rounds, each adding fresh input. Returns the final `duplicates` report.
fn kill_until_duplicates(
    pipeline: &Pipeline,
    spec: &StageSpec,
    writer: &mut InputWriter,
    duplicates: impl Fn(&[common::InputRecord]) -> Report,
) -> Report {
    let landed = kill_repeatedly_then_drain(pipeline, spec, writer, KILLS);
    assert!(
        landed >= 5,
        "only {landed} of {KILLS} kills landed mid-stream"
    );
    let mut report = duplicates(&writer.written);
    for round in 0..EXTRA_ROUNDS {
        if report.duplicated.count > 0 {
            break;
        }
        eprintln!("no duplicates after round {round}; adding input and killing again");
        writer.write(RECORDS / 4);
        writer.flush();
        let more = kill_repeatedly_then_drain(pipeline, spec, writer, KILLS);
        eprintln!("round {}: {more} more kills landed mid-stream", round + 1);
        report = duplicates(&writer.written);
    }
    report
}

fn every_record_exactly_once_across_sigkill_restarts() {
    every_record_exactly_once_across_sigkill_restarts_with(&[]);
}

/// The same with pipelined commits: kills land while a commit is in flight and outputs are held.
fn every_record_exactly_once_across_sigkill_restarts_with_pipelined_commits() {
    every_record_exactly_once_across_sigkill_restarts_with(&[("--pipelined-commits", "true")]);
}

/// The same with back-to-back pipelined commits: a commit is nearly always in flight.
fn every_record_exactly_once_across_sigkill_restarts_with_back_to_back_commits() {
    every_record_exactly_once_across_sigkill_restarts_with(&[
        ("--commit-policy", "back_to_back"),
        ("--pipelined-commits", "true"),
    ]);
}

/// `extra`: further stage flags.
fn every_record_exactly_once_across_sigkill_restarts_with(extra: &[(&str, &str)]) {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let mut writer = pipeline.seed(RECORDS);
    let mut spec = pipeline.stage("passthrough").instance("crashy");
    for (flag, value) in extra {
        spec = spec.arg(flag, value);
    }
    // A downstream read_committed consumer following the output across all the crashes.
    let live = LiveReader::start(
        &pipeline.bootstrap,
        &pipeline.output,
        Isolation::ReadCommitted,
    );

    let uncommitted = kill_until_duplicates(&pipeline, &spec, &mut writer, |written| {
        pipeline.check_uncommitted(written)
    });
    assert!(
        uncommitted.duplicated.count > 0,
        "the read_uncommitted view shows no duplicates after repeated SIGKILLs, so this test could \
         not tell exactly-once from at-least-once: {uncommitted}"
    );
    assert!(
        uncommitted.lost.ok(),
        "read_uncommitted view lost records: {uncommitted}"
    );

    let settled = pipeline.read_output(Isolation::ReadCommitted);
    let committed = common::check(&writer.written, &settled);
    committed.assert_exactly_once_in_order("read_committed output after SIGKILL restarts");
    assert!(
        pipeline.output_settled(),
        "an output partition still has an open transaction"
    );

    // What the live reader saw during the run is all in the settled output: it never saw a record
    // of a transaction that was later aborted.
    let live = live.stop();
    assert!(
        !live.is_empty(),
        "the live read_committed reader saw nothing during the run"
    );
    let unsettled = seen_but_not_settled(&live, &settled);
    assert!(
        unsettled.is_empty(),
        "a read_committed reader saw {} records during the run that are not in the final output, \
         e.g. {:?}",
        unsettled.len(),
        &unsettled[..unsettled.len().min(10)]
    );
}

fn at_least_once_loses_nothing_but_duplicates_across_sigkill_restarts() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let mut writer = pipeline.seed(RECORDS);
    let spec = pipeline
        .stage("passthrough")
        .instance("crashy")
        .arg("--delivery", "at_least_once");

    let committed = kill_until_duplicates(&pipeline, &spec, &mut writer, |written| {
        pipeline.check_committed(written)
    });
    assert!(
        committed.lost.ok(),
        "at_least_once lost records: {committed}"
    );
    assert!(
        committed.unexpected.ok(),
        "unexpected records in the output: {committed}"
    );
    assert!(
        committed.duplicated.count > 0,
        "at_least_once showed no duplicates after repeated SIGKILLs: the kills did not land between \
         produce and offset commit, so the exactly-once tests' kills may not either: {committed}"
    );
}

/// Crashes at each fail point of the commit path (`FAILPOINTS`, cargo feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub mod fail_points {
    use std::process::ExitStatus;

    use super::common::orders_stage::stop_cleanly;
    use super::common::stage::{exit_code, exit_signal};
    use super::common::{Pipeline, Verdict};
    use super::PATIENCE;

    /// A crash caused by a fail point's `return`: the process aborts (a signal, or an exit code that
    /// is not one of kstage's own 0, 1 and 2).
    fn is_fail_point_crash(status: ExitStatus) -> bool {
        exit_signal(status).is_some() || exit_code(status).is_some_and(|code| code > 2)
    }

    /// Restarts the stage with `FAILPOINTS` set so that it aborts at `point` after a random number of
    /// transactions, until it has crashed `CRASHES` times, then drains without fail points; the
    /// read_committed output must hold every id exactly once, in order.
    fn exactly_once_across_crashes_at(point: &str) {
        const CRASHES: usize = 3;
        let broker = require_broker!();
        let pipeline = Pipeline::new(&broker, 3);
        let writer = pipeline.seed(30_000);
        let ends = writer.end_offsets();
        let offsets = pipeline.group_offsets(false);
        // Many small transactions, so that the fail point is passed many times per incarnation.
        let base = pipeline
            .stage("passthrough")
            .instance("crashy")
            .arg("--max-records-per-txn", "500")
            .arg("--commit-interval", "50ms");

        let mut crashes = 0;
        while crashes < CRASHES {
            let skip = rand::random_range(1..=8);
            let failpoints = format!("kstage::{point}={skip}*off->return");
            let mut stage = base.clone().env("FAILPOINTS", &failpoints).spawn();
            let what = format!("the stage crashes at {point} (or the input is drained)");
            let Some(status) =
                stage.wait_until_or_exit(PATIENCE, &what, || offsets.caught_up(&ends))
            else {
                stage.fail(&format!(
                    "the input drained before {point} crashed the stage {CRASHES} times"
                ));
            };
            if !is_fail_point_crash(status) {
                stage.fail(&format!(
                    "expected a crash at fail point {point}, got {status}"
                ));
            }
            crashes += 1;
            eprintln!(
                "crash {crashes} at {point}; committed progress {}",
                offsets.progress()
            );
        }

        let mut stage = base.spawn();
        pipeline.wait_drained(&mut stage, &ends);
        stop_cleanly(&mut stage);
        let report = pipeline.check_committed(&writer.written);
        report.assert_exactly_once_in_order(&format!(
            "read_committed output after crashes at {point}"
        ));
        assert!(
            pipeline.output_settled(),
            "an output partition still has an open transaction"
        );
        let uncommitted = pipeline.check_uncommitted(&writer.written);
        assert!(
            uncommitted.lost.ok(),
            "read_uncommitted view lost records after crashes at {point}: {uncommitted}"
        );
        match point {
            // Every delivery was awaited before the crash: the aborted transactions' records
            // are in the log, so the read_uncommitted view must show them as duplicates.
            "before_commit" => assert!(
                uncommitted.duplicated.count > 0,
                "read_uncommitted shows no duplicates after crashes before commit, so this \
                 test could not tell: {uncommitted}"
            ),
            // Crashes after a commit leave no aborted transaction: both views agree.
            "after_commit" => uncommitted.assert_exactly_once_in_order(&format!(
                "read_uncommitted output after crashes at {point}"
            )),
            _ => {}
        }
    }

    fn exactly_once_across_crashes_after_produce() {
        exactly_once_across_crashes_at("after_produce");
    }

    fn exactly_once_across_crashes_after_send_offsets() {
        exactly_once_across_crashes_at("after_send_offsets");
    }

    fn exactly_once_across_crashes_before_commit() {
        exactly_once_across_crashes_at("before_commit");
    }

    fn exactly_once_across_crashes_after_commit() {
        exactly_once_across_crashes_at("after_commit");
    }

    trials! {
        exactly_once_across_crashes_after_produce => [Broker],
        exactly_once_across_crashes_after_send_offsets => [Broker],
        exactly_once_across_crashes_before_commit => [Broker],
        exactly_once_across_crashes_after_commit => [Broker],
    }
}

trials! {
    every_record_exactly_once_across_sigkill_restarts => [Broker],
    every_record_exactly_once_across_sigkill_restarts_with_pipelined_commits => [Broker],
    every_record_exactly_once_across_sigkill_restarts_with_back_to_back_commits => [Broker],
    at_least_once_loses_nothing_but_duplicates_across_sigkill_restarts => [Broker],
}
