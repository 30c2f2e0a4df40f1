//! A rolling restart, the way an orchestrator upgrades a StatefulSet: three instances of one stage
//! (same app id, instance ids 0, 1, 2) are stopped with SIGTERM and started again one at a time,
//! each waiting for the previous one to report ready on `/readyz`, while input keeps flowing.
//! Every stop exits 0, and at the end the read_committed output holds every input record exactly
//! once, in order per input partition; a read_committed reader that followed the output during the
//! restarts never saw a record that is not in the settled output. The read_uncommitted view may
//! differ (records of aborted transactions); it is reported, not asserted.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::http::{free_port, http_status};
use common::read::{seen_but_not_settled, LiveReader};
use common::stage::exit_code;
use common::{
    wait_until, BackgroundWriter, Isolation, Pipeline, Stage, StageSpec, Verdict, PATIENCE,
};

const PARTITIONS: i32 = 6;
const INSTANCES: [&str; 3] = ["0", "1", "2"];
/// Records committed between two steps of the restart, so each step happens under load.
const PROGRESS_PER_STEP: i64 = 1_000;

/// One instance: its spec, its health address and its current process.
struct Instance {
    spec: StageSpec,
    health: SocketAddr,
    stage: Stage,
}

impl Instance {
    fn start(pipeline: &Pipeline, id: &str) -> Self {
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let spec = pipeline
            .stage("passthrough")
            .instance(id)
            .arg("--metrics-address", &health.to_string());
        let stage = spec.spawn();
        Self {
            spec,
            health,
            stage,
        }
    }

    /// Waits until `/readyz` answers 200 (producer initialised, joined the group).
    fn wait_ready(&mut self) {
        let health = self.health;
        self.stage.wait_until(PATIENCE, "/readyz answers 200", || {
            http_status(health, "/readyz") == Some(200)
        });
    }

    /// SIGTERM, and the exit must be 0.
    fn stop(&mut self) {
        self.stage.sigterm();
        let status = self.stage.wait_exit(PATIENCE);
        if exit_code(status) != Some(0) {
            self.stage
                .fail(&format!("SIGTERM should exit 0, got {status}"));
        }
    }

    fn restart(&mut self) {
        self.stage = self.spec.spawn();
    }
}

fn rolling_restart_under_load_loses_and_duplicates_nothing() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, PARTITIONS);
    let mut writer = pipeline.writer();
    writer.write(2_000);
    writer.flush();
    // About 1,000 records a second keep arriving for the whole restart.
    let background = BackgroundWriter::start(writer, 20, Duration::from_millis(20));
    let live = LiveReader::start(
        &pipeline.bootstrap,
        &pipeline.output,
        Isolation::ReadCommitted,
    );
    let offsets = pipeline.group_offsets(false);
    let started = Instant::now();

    let mut instances: Vec<Instance> = INSTANCES
        .iter()
        .map(|id| Instance::start(&pipeline, id))
        .collect();
    for instance in &mut instances {
        instance.wait_ready();
    }
    eprintln!(
        "three instances ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for (n, id) in INSTANCES.iter().enumerate() {
        let mark = offsets.progress() + PROGRESS_PER_STEP;
        instances[n].stage.wait_until(
            PATIENCE,
            &format!("committed progress passes {mark}"),
            || offsets.progress() >= mark,
        );
        let step = Instant::now();
        instances[n].stop();
        let stopped = step.elapsed();
        // The other two go on while this one is down.
        let mark = offsets.progress() + PROGRESS_PER_STEP / 2;
        let survivor = (n + 1) % INSTANCES.len();
        instances[survivor].stage.wait_until(
            PATIENCE,
            &format!("the others commit past {mark} while instance {id} is down"),
            || offsets.progress() >= mark,
        );
        instances[n].restart();
        instances[n].wait_ready();
        eprintln!(
            "instance {id}: stopped in {:.1} s, back and ready {:.1} s after SIGTERM",
            stopped.as_secs_f64(),
            step.elapsed().as_secs_f64()
        );
    }

    let writer = background.stop();
    let ends = writer.end_offsets();
    let total: i64 = ends.iter().sum();
    let drained = wait_until(PATIENCE, || offsets.caught_up(&ends));
    if !drained {
        let diagnostics: Vec<String> = instances
            .iter_mut()
            .map(|i| i.stage.diagnostics())
            .collect();
        panic!(
            "the group did not commit the whole input ({total} records) within {PATIENCE:?}\n{}",
            diagnostics.join("\n")
        );
    }
    for instance in &mut instances {
        instance.stop();
    }
    eprintln!(
        "{total} records through a rolling restart of three instances in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    pipeline.assert_seq_is_offset(&writer.written);
    pipeline.assert_settled_at(&ends);
    let settled = pipeline.read_output(Isolation::ReadCommitted);
    common::check(&writer.written, &settled)
        .assert_exactly_once_in_order("read_committed output after a rolling restart");

    let seen = live.stop();
    let phantom = seen_but_not_settled(&seen, &settled);
    assert!(
        phantom.is_empty(),
        "a read_committed reader saw {} records during the restart that are not in the output: {:?}",
        phantom.len(),
        &phantom[..phantom.len().min(10)]
    );
    let live_report = common::check(&writer.written, &seen);
    assert!(
        live_report.duplicated.ok() && live_report.unexpected.ok(),
        "the live read_committed reader saw duplicates or foreign records: {live_report}"
    );
    eprintln!(
        "live read_committed reader: {live_report}\nread_uncommitted view (may differ): {}",
        pipeline.check_uncommitted(&writer.written)
    );
}

trials! {
    rolling_restart_under_load_loses_and_duplicates_nothing => [Broker],
}
