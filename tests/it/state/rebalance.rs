//! `windowed-count` through a rebalance chain: three instances, a fourth joins, leaves again,
//! and one of the three is SIGKILLed and restarted, while input keeps arriving. Every partition
//! that moves is restored by its new owner before it is processed; every window must still be
//! emitted exactly once, with its exact count (computed from the input alone).

use std::time::Duration;

use crate::common;

use common::orders_stage::stop_cleanly;
use common::raw::RawWriter;
use common::state::windows::{check_windows, WindowReport, WindowedInput, Windows};
use common::state::StatePipeline;
use common::PATIENCE;

const WINDOWS: Windows = Windows {
    size: 1_000,
    grace: 200,
};

/// Runs the chain; with the `fault-injection` feature one transaction in ten is also aborted
/// just before its commit. `broken`: a `KSTAGE_BROKEN_MODE` for every instance.
fn rebalance_chain(broken: Option<&str>) -> (WindowReport, WindowedInput) {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 6, &["windows", "timers"]);
    let p = &pipeline.pipeline;
    let spec = |instance: &str| {
        let spec = pipeline
            .stage("windowed-count")
            .instance(instance)
            .arg("--param", "size=1s")
            .arg("--param", "grace=200ms")
            .arg("--poison-policy", "skip")
            .arg("--metrics-address", "off")
            .env("FAILPOINTS", "kstage::inject_abort=10%return");
        match broken {
            Some(mode) => spec.env("KSTAGE_BROKEN_MODE", mode),
            None => spec,
        }
    };
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let mut input = WindowedInput::default();
    let offsets = p.group_offsets(false);
    let progress_past = |stage: &mut common::Stage, mark: i64| {
        stage.wait_until(
            PATIENCE,
            &format!("committed progress passes {mark}"),
            || offsets.progress() >= mark,
        );
    };

    input.write(&mut writer, WINDOWS, 15_000, 600);
    let mut a = spec("a").spawn();
    let mut b = spec("b").spawn();
    let mut c = spec("c").spawn();
    progress_past(&mut a, 5_000);

    eprintln!("scaling out to 4 instances");
    let mut d = spec("d").spawn();
    input.write(&mut writer, WINDOWS, 15_000, 600);
    progress_past(&mut d, 20_000);

    eprintln!("scaling back in to 3 instances");
    stop_cleanly(&mut d);
    input.write(&mut writer, WINDOWS, 15_000, 600);
    progress_past(&mut a, 32_000);

    eprintln!("SIGKILL of instance b");
    b.sigkill();
    std::thread::sleep(Duration::from_millis(rand::random_range(0..500)));
    let mut b = spec("b").spawn();
    input.write(&mut writer, WINDOWS, 15_000, 600);
    input.flush_windows(&mut writer, WINDOWS);
    p.wait_drained(&mut b, &writer.end_offsets());
    for stage in [&mut a, &mut b, &mut c] {
        stop_cleanly(stage);
    }
    let report = check_windows(&p.bootstrap, &p.output, &input.expected);
    eprintln!(
        "{} windows expected, {} late records skipped: {report}",
        input.expected.len(),
        input.late
    );
    (report, input)
}

fn windowed_counts_are_exact_and_emitted_once_through_scale_out_scale_in_and_a_sigkill() {
    let (report, input) = rebalance_chain(None);
    assert!(input.late > 0, "the input should hold late records");
    assert!(report.exact(), "windowed-count output: {report}");
}

/// The negative control: with the local store written before the commit, the aborts and the
/// SIGKILL of the chain leave windows counted twice, and the same check fails.
#[cfg(feature = "fault-injection")]
fn state_written_before_the_commit_miscounts_windows_through_the_rebalance_chain() {
    let (report, _) = rebalance_chain(Some("state_before_commit"));
    assert!(
        !report.wrong.is_empty(),
        "state_before_commit should leave windows with wrong counts: {report}"
    );
}

trials! {
    windowed_counts_are_exact_and_emitted_once_through_scale_out_scale_in_and_a_sigkill => [Broker],
}

/// The negative control (cargo feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub mod broken {
    use super::*;

    trials! {
        state_written_before_the_commit_miscounts_windows_through_the_rebalance_chain => [Broker],
    }
}
