//! Wall-clock timers and the typed `order-totals` through random SIGKILLs and a rebalance
//! (scale-out to two instances, scale-in back to one), with one transaction in ten aborted
//! (`kstage::inject_abort`). The fail-point tests (`state::wall`, `state::typed`) crash at a
//! chosen step; here the kills land wherever they land, the timers' transactions included.
//!
//! `windowed-count` with `idle_close` runs in rounds: each round writes records in its own
//! 10 s event-time window and is drained; then the input stays quiet, so only the wall-clock
//! timers close the round's windows, and an instance is SIGKILLed (or stopped, its partitions
//! moving to the other one) around the moment they are due. The idle period (15 s) is longer
//! than a restart, so no partition goes idle while it still has input to process (which would
//! close a window early and make its remaining records late). Every window must be emitted
//! exactly once with its count (computed here from the input), and `kstage verify --expect
//! windowed-count:10s:0s:15s` must agree.
//!
//! `order-totals` (JSON) runs the same chain over orders written in three parts: per customer
//! the updates count orders 1..n in order with the true total, and `kstage verify --expect
//! order-totals` agrees.
//!
//! The negative controls run the same chains with the state written before the commit
//! (`KSTAGE_BROKEN_MODE=state_before_commit`): the aborted and killed transactions' writes
//! reach the local store, and the same checks fail.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

use common::orders::Order;
use common::orders_stage::stop_cleanly;
use common::raw::{RawRecord, RawWriter};
use common::read::GroupOffsets;
use common::state::totals::{check, write_orders, Report};
use common::state::windows::{check_windows, WindowReport};
use common::state::{verify_expect, StatePipeline};
use common::{Isolation, Stage, StageSpec, PATIENCE};

/// Window length of the windowed chain, ms.
const SIZE_MS: i64 = 10_000;
/// Its `idle_close`.
const IDLE: Duration = Duration::from_secs(15);
/// Records and keys per round.
const ROUND_RECORDS: usize = 20_000;
const ROUND_KEYS: usize = 100;

/// What `kstage verify --expect ...` said: exit code and report.
type Verified = (Option<i32>, String);

/// Waits until the group's committed progress passes `mark`, then a random 0-200 ms, and
/// SIGKILLs `stage`; starts its next incarnation. Returns it and whether the kill landed before
/// the group had committed `written` records (mid-stream).
fn kill_past(
    stage: &mut Stage,
    spec: &StageSpec,
    offsets: &GroupOffsets,
    mark: i64,
    written: i64,
) -> (Stage, bool) {
    stage.wait_until(
        PATIENCE,
        &format!("committed progress passes {mark}"),
        || offsets.progress() >= mark,
    );
    std::thread::sleep(Duration::from_millis(rand::random_range(0..200)));
    let before = offsets.progress();
    stage.sigkill();
    eprintln!("SIGKILL at committed progress {before} of {written}");
    (spec.spawn(), before < written)
}

/// The spec of one instance; `broken`: a `KSTAGE_BROKEN_MODE`.
fn instance(spec: &StageSpec, name: &str, broken: Option<&str>) -> StageSpec {
    let spec = spec
        .clone()
        .instance(name)
        .arg("--metrics-address", "off")
        .env("FAILPOINTS", "kstage::inject_abort=10%return");
    match broken {
        Some(mode) => spec.env("KSTAGE_BROKEN_MODE", mode),
        None => spec,
    }
}

/// Writes one round of the windowed chain: records over `ROUND_KEYS` keys (key n always in
/// partition n % partitions), event times anywhere in the window starting at `start`. Nothing
/// is late: every record's window is still open when it is written.
fn write_round(
    writer: &mut RawWriter,
    start: i64,
    expected: &mut BTreeMap<(String, i64), u64>,
) -> i64 {
    let partitions = writer.partitions() as usize;
    for _ in 0..ROUND_RECORDS {
        let n = rand::random_range(0..ROUND_KEYS);
        let key = format!("k{n}");
        let ts = start + rand::random_range(0..SIZE_MS);
        writer.write(
            (n % partitions) as i32,
            RawRecord::new(Some(&key), Some(b"v".to_vec())).at(ts),
        );
        *expected.entry((key, start)).or_insert(0) += 1;
    }
    writer.flush();
    writer.end_offsets().iter().sum()
}

/// Windows of `start` emitted so far (read_committed).
fn emitted_windows(p: &common::Pipeline, start: i64) -> usize {
    common::read::read_topic(&p.bootstrap, &p.output, Isolation::ReadCommitted)
        .iter()
        .filter(|r| {
            serde_json::from_str::<serde_json::Value>(&r.value_str())
                .is_ok_and(|v| v["start"].as_i64() == Some(start))
        })
        .count()
}

/// Waits a random moment around the idle timers' due time (0.8 to 1.1 times the idle period),
/// then SIGKILLs `stage` and starts its next incarnation.
fn kill_around_the_idle_timers(stage: &mut Stage, spec: &StageSpec) -> Stage {
    let idle = IDLE.as_millis() as u64;
    std::thread::sleep(Duration::from_millis(rand::random_range(
        idle * 8 / 10..idle * 11 / 10,
    )));
    stage.sigkill();
    eprintln!("SIGKILL around the idle timers' due time");
    spec.spawn()
}

/// Waits (without failing: the controls lose windows) until `windows` results of `start` are
/// out, for the idle period and 45 s more (a restart or a session timeout).
fn await_round(p: &common::Pipeline, start: i64, windows: usize) {
    let done = common::wait_until(IDLE + Duration::from_secs(45), || {
        emitted_windows(p, start) >= windows
    });
    eprintln!("round at {start}: {windows} windows expected, emitted in time: {done}");
}

/// The windowed chain. Returns the check's report, how many mid-round kills landed
/// mid-stream, and the verifier's verdict.
fn windowed_chain(broken: Option<&str>) -> (WindowReport, usize, Verified) {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["windows", "timers"]);
    let p = &pipeline.pipeline;
    let base = pipeline
        .stage_with_batch("windowed-count", 500)
        .arg("--param", "size=10s")
        .arg("--param", &format!("idle_close={}s", IDLE.as_secs()))
        .arg("--poison-policy", "skip");
    let (spec_a, spec_b) = (instance(&base, "a", broken), instance(&base, "b", broken));
    let offsets = p.group_offsets(false);
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let mut expected = BTreeMap::new();
    // Event time ten minutes ago, window-aligned: inside the topics' retention, and not in the
    // future (which the broker may refuse).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let first = (now - 600_000).div_euclid(SIZE_MS) * SIZE_MS;
    let keys_in = |expected: &BTreeMap<(String, i64), u64>, start: i64| {
        expected.keys().filter(|(_, s)| *s == start).count()
    };
    let mut landed = 0;

    // Round 0: a starts, is killed mid-round, b joins (scale-out); b is killed around the
    // idle timers' due time.
    let before: i64 = writer.end_offsets().iter().sum();
    let written = write_round(&mut writer, first, &mut expected);
    let mut a = spec_a.spawn();
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, before + 5_000, written);
    (a, landed) = (next, landed + usize::from(mid));
    let mut b = spec_b.spawn();
    p.wait_drained(&mut a, &writer.end_offsets());
    b = kill_around_the_idle_timers(&mut b, &spec_b);
    await_round(p, first, keys_in(&expected, first));

    // Round 1: a is killed mid-round; once drained, b stops (scale-in): its partitions move to
    // a after the session timeout, about when their idle timers are due.
    let start = first + SIZE_MS;
    let before: i64 = writer.end_offsets().iter().sum();
    let written = write_round(&mut writer, start, &mut expected);
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, before + 5_000, written);
    (a, landed) = (next, landed + usize::from(mid));
    p.wait_drained(&mut a, &writer.end_offsets());
    stop_cleanly(&mut b);
    await_round(p, start, keys_in(&expected, start));

    // Round 2: a alone, killed mid-round and around the idle timers' due time.
    let start = first + 2 * SIZE_MS;
    let before: i64 = writer.end_offsets().iter().sum();
    let written = write_round(&mut writer, start, &mut expected);
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, before + 5_000, written);
    (a, landed) = (next, landed + usize::from(mid));
    p.wait_drained(&mut a, &writer.end_offsets());
    a = kill_around_the_idle_timers(&mut a, &spec_a);
    await_round(p, start, keys_in(&expected, start));
    stop_cleanly(&mut a);

    let report = check_windows(&p.bootstrap, &p.output, &expected);
    eprintln!("{} windows expected: {report}", expected.len());
    let verified = verify_expect(p, &format!("windowed-count:10s:0s:{}s", IDLE.as_secs()));
    (report, landed, verified)
}

fn idle_windows_are_exact_and_emitted_once_through_sigkills_and_a_rebalance() {
    let (report, landed, (code, said)) = windowed_chain(None);
    assert!(
        landed >= 2,
        "only {landed} of 3 mid-round kills landed mid-stream"
    );
    assert!(report.exact(), "windowed-count output: {report}");
    assert_eq!(
        code,
        Some(0),
        "kstage verify --expect windowed-count: {said}"
    );
}

/// Negative control: the same chain with the state written before the commit miscounts.
fn state_written_before_the_commit_miscounts_idle_windows_through_sigkills() {
    let (report, _, (code, said)) = windowed_chain(Some("state_before_commit"));
    assert!(
        !report.exact(),
        "state_before_commit should leave windows wrong or missing: {report}"
    );
    assert_eq!(code, Some(1), "kstage verify should fail too: {said}");
}

/// The order-totals chain. Returns the check's report, how many kills landed mid-stream, and
/// the verifier's verdict.
fn totals_chain(broken: Option<&str>) -> (Report, usize, Verified) {
    const PART: usize = 15_000;
    const CUSTOMERS: usize = 300;
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["totals"]);
    let p = &pipeline.pipeline;
    let base = pipeline
        .stage_with_batch("order-totals", 500)
        .arg("--format", &format!("{}=string:json", p.input));
    let (spec_a, spec_b) = (instance(&base, "a", broken), instance(&base, "b", broken));
    let offsets = p.group_offsets(false);
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let encode = |o: &Order| serde_json::to_vec(o).expect("json");
    let mut truth = write_orders(&mut writer, PART, CUSTOMERS, &encode);
    let mut add = |writer: &mut RawWriter| {
        for (customer, (orders, cents)) in write_orders(writer, PART, CUSTOMERS, &encode) {
            let entry = truth.entry(customer).or_insert((0, 0));
            entry.0 += orders;
            entry.1 += cents;
        }
    };
    let part = PART as i64;
    let mut landed = 0;
    let mut a = spec_a.spawn();
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, part / 3, part);
    (a, landed) = (next, landed + usize::from(mid));
    let mut b = spec_b.spawn();
    add(&mut writer);
    let (next, mid) = kill_past(&mut b, &spec_b, &offsets, part * 4 / 3, 2 * part);
    (b, landed) = (next, landed + usize::from(mid));
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, part * 5 / 3, 2 * part);
    (a, landed) = (next, landed + usize::from(mid));
    add(&mut writer);
    let (next, mid) = kill_past(&mut a, &spec_a, &offsets, part * 7 / 3, 3 * part);
    (a, landed) = (next, landed + usize::from(mid));
    stop_cleanly(&mut b);
    p.wait_drained(&mut a, &writer.end_offsets());
    stop_cleanly(&mut a);
    let report = check(
        &p.bootstrap,
        &p.output,
        Isolation::ReadCommitted,
        &kstage::codec::Codecs::plain(),
        &truth,
    );
    (report, landed, verify_expect(p, "order-totals"))
}

fn order_totals_are_exact_through_sigkills_and_a_rebalance() {
    let (report, landed, (code, said)) = totals_chain(None);
    assert!(landed >= 2, "only {landed} of 4 kills landed mid-stream");
    assert!(report.exact(), "order totals: {report:?}");
    assert_eq!(code, Some(0), "kstage verify --expect order-totals: {said}");
}

/// Negative control: the same chain with the state written before the commit over-counts.
fn state_written_before_the_commit_over_counts_order_totals_through_sigkills() {
    let (report, _, (code, said)) = totals_chain(Some("state_before_commit"));
    assert!(
        report.over_counted > 0,
        "state_before_commit should over-count: {report:?}"
    );
    assert_eq!(code, Some(1), "kstage verify should fail too: {said}");
}

trials! {
    idle_windows_are_exact_and_emitted_once_through_sigkills_and_a_rebalance => [Broker],
    state_written_before_the_commit_miscounts_idle_windows_through_sigkills => [Broker],
    order_totals_are_exact_through_sigkills_and_a_rebalance => [Broker],
    state_written_before_the_commit_over_counts_order_totals_through_sigkills => [Broker],
}
