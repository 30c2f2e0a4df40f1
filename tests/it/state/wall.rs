//! Wall-clock timers against the broker: `windowed-count` with `idle_close` emits a quiet
//! partition's windows with no input, exactly once across a crash in the timer's own
//! transaction (fail point `kstage::state_before_commit`, after its changelog writes and
//! outputs were sent, before the commit).
//!
//! The run: the input is counted and the stage stopped before the idle period ends; a restart
//! crashes in the only transaction left, the timers'; a second restart fires them again. The
//! negative control writes the state before the commit (`KSTAGE_BROKEN_MODE=state_before_commit`):
//! the crashed firing's deletes reach the local store, so the timers never fire again and the
//! results are missing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common;

use common::orders_stage::stop_cleanly;
use common::raw::RawWriter;
use common::read::{read_topic, Isolation};
use common::stage::{exit_code, exit_signal};
use common::state::{verify_expect, write_keyed, StatePipeline};
use common::PATIENCE;

/// Per key, the windows emitted (start -> how many times) and the counts they carried.
type Emitted = BTreeMap<String, Vec<(i64, u64)>>;

fn emitted(bootstrap: &str, topic: &str) -> Emitted {
    let mut out: Emitted = BTreeMap::new();
    for record in read_topic(bootstrap, topic, Isolation::ReadCommitted) {
        let value: serde_json::Value =
            serde_json::from_str(&record.value_str()).expect("a JSON window result");
        let key = value["key"].as_str().unwrap_or_default().to_string();
        let start = value["start"].as_i64().unwrap_or(i64::MIN);
        let count = value["count"].as_u64().unwrap_or(0);
        out.entry(key).or_default().push((start, count));
    }
    out
}

/// What `kstage verify --expect windowed-count:1h:0s:6s` said: exit code and report.
type Verified = (Option<i32>, String);

/// Runs the three incarnations; returns the true counts, what was emitted, and the verifier's
/// verdict.
fn idle_close_across_a_crash_in_the_timers_transaction(
    broken: Option<&str>,
) -> (BTreeMap<String, u64>, Emitted, Verified) {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 2, &["windows", "timers"]);
    let p = &pipeline.pipeline;
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let truth = write_keyed(&mut writer, 400, 20);
    let ends = writer.end_offsets();
    let mut base = pipeline
        .stage("windowed-count")
        .arg("--param", "size=1h")
        .arg("--param", "idle_close=6s");
    if let Some(mode) = broken {
        base = base.env("KSTAGE_BROKEN_MODE", mode);
    }
    let mut stage = base.clone().spawn();
    p.wait_drained(&mut stage, &ends);
    stop_cleanly(&mut stage);
    assert!(
        emitted(&p.bootstrap, &p.output).is_empty(),
        "the idle period had not ended: nothing is emitted yet"
    );
    let mut stage = base
        .clone()
        .env("FAILPOINTS", "kstage::state_before_commit=return")
        .spawn();
    let status = stage.wait_exit(PATIENCE);
    if exit_signal(status).is_none() && exit_code(status).is_none_or(|code| code <= 2) {
        stage.fail(&format!(
            "expected a crash in the timers' transaction, got {status}"
        ));
    }
    let mut stage = base.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = emitted(&p.bootstrap, &p.output);
    while out.len() < truth.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        out = emitted(&p.bootstrap, &p.output);
    }
    // A little longer: a repeat would show now.
    std::thread::sleep(Duration::from_secs(2));
    let out = emitted(&p.bootstrap, &p.output);
    stop_cleanly(&mut stage);
    (truth, out, verify_expect(p, "windowed-count:1h:0s:6s"))
}

/// Every key's windows are emitted with no input, once each, and their counts sum to the
/// key's true count; `kstage verify` with the stage's `idle_close` agrees.
fn idle_windows_are_emitted_once_without_input_across_a_crash_in_the_timers_transaction() {
    let (truth, out, (code, said)) = idle_close_across_a_crash_in_the_timers_transaction(None);
    for (key, count) in &truth {
        let windows = out.get(key).cloned().unwrap_or_default();
        let mut starts: Vec<i64> = windows.iter().map(|(s, _)| *s).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(
            starts.len(),
            windows.len(),
            "{key}: a window emitted twice: {windows:?}"
        );
        let sum: u64 = windows.iter().map(|(_, c)| c).sum();
        assert_eq!(
            sum, *count,
            "{key}: emitted {windows:?}, true count {count}"
        );
    }
    assert_eq!(out.len(), truth.len(), "keys emitted: {out:?}");
    assert_eq!(
        code,
        Some(0),
        "kstage verify --expect windowed-count: {said}"
    );
}

/// Negative control: with the state written before the commit, the crashed firing's deletes
/// stay in the local store and the windows are never emitted; `kstage verify` fails too.
fn state_written_before_the_commit_loses_idle_windows_across_the_crash() {
    let (truth, out, (code, said)) =
        idle_close_across_a_crash_in_the_timers_transaction(Some("state_before_commit"));
    let emitted: u64 = out.values().flatten().map(|(_, c)| c).sum();
    let total: u64 = truth.values().sum();
    assert!(
        emitted < total,
        "state_before_commit should lose the windows of the crashed firing: {emitted} of {total}"
    );
    assert_eq!(
        code,
        Some(1),
        "kstage verify --expect windowed-count should fail too: {said}"
    );
}

trials! {
    idle_windows_are_emitted_once_without_input_across_a_crash_in_the_timers_transaction => [Broker],
    state_written_before_the_commit_loses_idle_windows_across_the_crash => [Broker],
}
