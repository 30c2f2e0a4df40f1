//! Stateful topologies against the real broker: the `count` topology's running counts stay
//! exact through SIGKILLs, through crashes at the fail points between the changelog send and
//! the commit and between the commit and the local apply, and through a restore from nothing
//! (the local state deleted). Every exactness check is also run against a deliberately broken
//! build mode (`state_before_commit`, which writes the local store before the commit) or a
//! read_uncommitted view, and shown to fail there.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

#[cfg(feature = "fault-injection")]
pub mod kills;
pub mod rebalance;
#[cfg(feature = "fault-injection")]
pub mod restore_failover;
pub mod typed;
#[cfg(feature = "fault-injection")]
pub mod wall;

use common::kills::{drain_then_stop, kill_repeatedly};
use common::raw::RawWriter;
use common::read::read_topic;
use common::state::{changelog, check_counts, verify_expect, write_keyed, StatePipeline};
use common::{Isolation, PATIENCE};

/// The count per key in the changelog (read_committed, last value per key).
fn changelog_counts(pipeline: &StatePipeline) -> BTreeMap<String, u64> {
    let topic = changelog(&pipeline.pipeline.app_id, "counts");
    let mut counts = BTreeMap::new();
    for record in read_topic(
        &pipeline.pipeline.bootstrap,
        &topic,
        Isolation::ReadCommitted,
    ) {
        let key = record.key.clone().unwrap_or_default();
        let bytes: [u8; 8] = record.value.as_slice().try_into().expect("8-byte count");
        counts.insert(key, u64::from_be_bytes(bytes));
    }
    counts
}

/// `kstage verify --expect count` on a pipeline's input and output.
fn verify_counts(p: &common::Pipeline) -> (Option<i32>, String) {
    verify_expect(p, "count")
}

fn counts_are_exact_and_changelogged_on_a_clean_run() {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["counts"]);
    let p = &pipeline.pipeline;
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let truth = write_keyed(&mut writer, 20_000, 2_000);
    let ends = writer.end_offsets();
    let spec = pipeline.stage("count");
    drain_then_stop(p, &spec, &ends);
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    assert!(report.exact(), "count output: {report}");
    assert_eq!(
        changelog_counts(&pipeline),
        truth,
        "the changelog's last value per key"
    );
    let (code, said) = verify_counts(p);
    assert_eq!(code, Some(0), "kstage verify --expect count: {said}");
}

/// The stage refuses to start without its changelog and names the fix; `kstage topics create`
/// makes it (compacted, the input's partitions), and the stage then runs.
fn topics_create_makes_the_changelogs_the_start_up_check_asks_for() {
    let broker = require_broker!();
    let p = common::Pipeline::new(&broker, 2);
    let state_dir = tempfile::tempdir().expect("state dir");
    let config = state_dir.path().join("stage.toml");
    let toml = format!(
        "topology = \"count\"\nbootstrap_servers = \"{}\"\ninputs = [\"{}\"]\napp_id = \"{}\"\n\
         state_dir = \"{}\"\n[outputs]\ndefault = \"{}\"\n",
        p.bootstrap,
        p.input,
        p.app_id,
        state_dir.path().display(),
        p.output
    );
    std::fs::write(&config, toml).expect("write the config");
    let config = config.display().to_string();
    let spec = common::StageSpec::new(&p.bootstrap, "count", &p.input, &p.output, &p.app_id)
        .arg("--state-dir", &state_dir.path().display().to_string());
    let mut stage = spec.spawn();
    let status = stage.wait_exit(PATIENCE);
    let changelog_name = changelog(&p.app_id, "counts");
    assert!(!status.success(), "the stage started without its changelog");
    let said = stage.stderr();
    assert!(
        said.contains(&changelog_name) && said.contains("kstage topics create"),
        "the error should name the changelog and the command: {said}"
    );
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_kstage"))
        .args(["topics", "create", "--config", &config])
        .output()
        .expect("run kstage topics create");
    let out = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "topics create: {out} {}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        out.contains(&format!(
            "created compacted changelog topic {changelog_name} (2 partitions)"
        )),
        "{out}"
    );
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let truth = write_keyed(&mut writer, 500, 50);
    drain_then_stop(&p, &spec, &writer.end_offsets());
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    assert!(report.exact(), "count output: {report}");
}

/// Records and keys of the SIGKILL test (the floor: 200k records, 10k keys).
const KILL_RECORDS: usize = 200_000;
const KILL_KEYS: usize = 10_000;
/// SIGKILLs per run.
const KILLS: usize = 6;

/// Runs `count` over 200k records and 10k keys, SIGKILLing the stage `KILLS` times at random
/// moments (each once committed progress passes the next mark, plus a random delay), then drains
/// with a last incarnation. With the `fault-injection` feature one transaction in ten is also
/// aborted just before its commit (`kstage::inject_abort`), so aborts and rewinds are exercised
/// as well as crashes. Returns the read_committed report and how many kills landed mid-stream.
#[allow(clippy::type_complexity)]
fn count_across_sigkills(
    broken: Option<&str>,
) -> (common::state::CountReport, usize, (Option<i32>, String)) {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["counts"]);
    let p = &pipeline.pipeline;
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let truth = write_keyed(&mut writer, KILL_RECORDS, KILL_KEYS);
    let ends = writer.end_offsets();
    let total: i64 = ends.iter().sum();
    let mut spec = pipeline
        .stage("count")
        .env("FAILPOINTS", "kstage::inject_abort=10%return");
    if let Some(mode) = broken {
        spec = spec.env("KSTAGE_BROKEN_MODE", mode);
    }
    let offsets = p.group_offsets(false);
    let step = total / (KILLS as i64 + 2);
    let at_kill = kill_repeatedly(&spec, &offsets, KILLS, |kill, stage| {
        let mark = step * (kill as i64 + 1);
        stage.wait_until(
            PATIENCE,
            &format!("committed progress passes {mark} of {total}"),
            || offsets.progress() >= mark,
        );
        std::thread::sleep(Duration::from_millis(rand::random_range(0..200)));
    });
    drain_then_stop(p, &spec, &ends);
    let landed = at_kill.iter().filter(|&&before| before < total).count();
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    let verified = verify_counts(p);
    (report, landed, verified)
}

fn counts_are_exact_across_sigkill_restarts() {
    let (report, landed, (code, said)) = count_across_sigkills(None);
    assert!(
        landed >= 5,
        "only {landed} of {KILLS} kills landed mid-stream"
    );
    assert!(
        report.exact(),
        "count output after {landed} SIGKILLs: {report}"
    );
    assert_eq!(code, Some(0), "kstage verify --expect count: {said}");
}

/// The negative control: the same run with the local store written before the commit must
/// over-count, so the check above can fail.
#[cfg(feature = "fault-injection")]
fn state_written_before_the_commit_over_counts_across_sigkill_restarts() {
    let (report, landed, (code, said)) = count_across_sigkills(Some("state_before_commit"));
    assert!(
        landed >= 5,
        "only {landed} of {KILLS} kills landed mid-stream"
    );
    assert!(
        report.over_counted > 0 && !report.exact(),
        "the broken mode state_before_commit should over-count after {landed} SIGKILLs, but \
         the check found: {report}"
    );
    assert_eq!(
        code,
        Some(1),
        "kstage verify --expect count should fail too: {said}"
    );
}

/// The restores a stage's log reports: (records applied, local offset it started from).
fn restores(stderr: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let digits: String = line[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    stderr
        .lines()
        .filter(|line| line.contains("Restored a store from its changelog."))
        .filter_map(|line| Some((field(line, "records")?, field(line, "from")?)))
        .collect()
}

/// Deletes an instance's local state while it is stopped: the next start restores everything
/// from the changelog (from offset 0), and the counts stay exact.
fn counts_stay_exact_after_the_local_state_is_deleted() {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["counts"]);
    let p = &pipeline.pipeline;
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let mut truth = write_keyed(&mut writer, 20_000, 2_000);
    let spec = pipeline.stage("count");
    drain_then_stop(p, &spec, &writer.end_offsets());
    let dir = pipeline.instance_dir("i0");
    assert!(dir.is_dir(), "no local state at {}", dir.display());
    std::fs::remove_dir_all(&dir).expect("delete the local state");
    for (key, n) in write_keyed(&mut writer, 10_000, 2_000) {
        *truth.entry(key).or_insert(0) += n;
    }
    let mut stage = spec.spawn();
    p.wait_drained(&mut stage, &writer.end_offsets());
    common::orders_stage::stop_cleanly(&mut stage);
    let restored = restores(&stage.stderr());
    assert!(
        restored
            .iter()
            .any(|&(records, from)| from == 0 && records > 0),
        "the start after the deletion should restore from offset 0: {restored:?}"
    );
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    assert!(
        report.exact(),
        "count output after restoring from nothing: {report}"
    );
    assert_eq!(
        changelog_counts(&pipeline),
        truth,
        "the changelog's last value per key"
    );
}

trials! {
    counts_are_exact_and_changelogged_on_a_clean_run => [Broker],
    topics_create_makes_the_changelogs_the_start_up_check_asks_for => [Broker],
    counts_are_exact_across_sigkill_restarts => [Broker],
    counts_stay_exact_after_the_local_state_is_deleted => [Broker],
}

#[cfg(feature = "fault-injection")]
pub mod fail_points {
    use super::*;
    use common::stage::{exit_code, exit_signal};
    use std::process::ExitStatus;

    /// A crash caused by a fail point's `return` (the process aborts).
    fn is_fail_point_crash(status: ExitStatus) -> bool {
        exit_signal(status).is_some() || exit_code(status).is_some_and(|code| code > 2)
    }

    /// Crashes the stage `CRASHES` times at fail point `point` (after a random number of
    /// passes), then drains it without; returns the read_committed report and the restores the
    /// restarted incarnations logged.
    fn count_across_crashes_at(
        point: &str,
        broken: Option<&str>,
    ) -> (common::state::CountReport, Vec<(u64, u64)>) {
        const CRASHES: usize = 3;
        let broker = require_broker!();
        let pipeline = StatePipeline::new(&broker, 3, &["counts"]);
        let p = &pipeline.pipeline;
        let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
        let truth = write_keyed(&mut writer, 60_000, 5_000);
        let ends = writer.end_offsets();
        let offsets = p.group_offsets(false);
        let mut base = pipeline.stage_with_batch("count", 500);
        if let Some(mode) = broken {
            base = base.env("KSTAGE_BROKEN_MODE", mode);
        }
        let mut restored = Vec::new();
        for crash in 0..CRASHES {
            let skip = rand::random_range(1..=8);
            let failpoints = format!("kstage::{point}={skip}*off->return");
            let mut stage = base.clone().env("FAILPOINTS", &failpoints).spawn();
            let what = format!("the stage crashes at {point}");
            let Some(status) =
                stage.wait_until_or_exit(PATIENCE, &what, || offsets.caught_up(&ends))
            else {
                stage.fail(&format!(
                    "the input drained before crash {crash} at {point}"
                ));
            };
            if !is_fail_point_crash(status) {
                stage.fail(&format!("expected a crash at {point}, got {status}"));
            }
            if crash > 0 {
                restored.extend(restores(&stage.stderr()));
            }
        }
        let mut stage = base.spawn();
        p.wait_drained(&mut stage, &ends);
        common::orders_stage::stop_cleanly(&mut stage);
        restored.extend(restores(&stage.stderr()));
        let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
        (report, restored)
    }

    /// A crash after the changelog writes were sent and before the commit: the transaction
    /// aborts, the local store is untouched, the records are counted once after the restart.
    fn counts_are_exact_across_crashes_between_changelog_send_and_commit() {
        let (report, restored) = count_across_crashes_at("state_before_commit", None);
        assert!(report.exact(), "count output: {report}");
        assert!(
            restored.iter().any(|&(_, from)| from > 0),
            "the restarts restore from their local offsets, not from scratch: {restored:?}"
        );
    }

    /// A crash after the commit and before the local apply: the restart restores the
    /// committed writes from the changelog (from its local offset: no wipe).
    fn counts_are_exact_across_crashes_between_commit_and_local_apply() {
        let (report, restored) = count_across_crashes_at("state_before_apply", None);
        assert!(report.exact(), "count output: {report}");
        assert!(
            restored
                .iter()
                .any(|&(records, from)| records > 0 && from > 0),
            "a restart should have caught up the committed, unapplied writes from its local \
             offset: {restored:?}"
        );
    }

    /// The negative control of the fail points: with the local store written before the
    /// commit, crashes between the changelog send and the commit over-count.
    fn state_written_before_the_commit_over_counts_across_crashes_before_commit() {
        let (report, _) =
            count_across_crashes_at("state_before_commit", Some("state_before_commit"));
        assert!(
            report.over_counted > 0,
            "state_before_commit should over-count after crashes before commit: {report}"
        );
    }

    trials! {
        state_written_before_the_commit_over_counts_across_sigkill_restarts => [Broker],
        counts_are_exact_across_crashes_between_changelog_send_and_commit => [Broker],
        counts_are_exact_across_crashes_between_commit_and_local_apply => [Broker],
        state_written_before_the_commit_over_counts_across_crashes_before_commit => [Broker],
    }
}
