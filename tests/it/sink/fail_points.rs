//! The sink tests that need fail points or broken modes (cargo feature `fault-injection`):
//! crashes between the rows and COMMIT and after COMMIT, with the negative control, and a
//! zombie paused inside an open transaction. (The idempotent mode's crash tests are in
//! [`super::kills`], under the same kills as the transactional ones.)

use super::common;
use common::sink::exact::Exact;
use common::sink::{pg_url, SinkSpec};
use common::PATIENCE;

/// Batches of at most 500 records: an incarnation commits at most 4 batches before its fail
/// point fires in the 5th, so 3 crashes consume at most 7,500 of the 20,000 records and the
/// input cannot drain before the last crash.
const SMALL_BATCHES: &str = "max_records_per_txn = 500";

/// Restarts a sink with `FAILPOINTS=<point>` until it has crashed `crashes` times, then drains
/// without fail points and stops it. Returns the final process's exit code.
fn crash_at_then_drain(test: &Exact, spec: &SinkSpec, point: &str, crashes: usize, ends: &[i64]) {
    let offsets = test.offsets();
    let mut crashed = 0;
    while crashed < crashes {
        let skip = rand::random_range(1..=4);
        let mut sink = spec
            .clone()
            .env("FAILPOINTS", &format!("{point}={skip}*off->return"))
            .spawn("i0");
        let status =
            sink.wait_until_or_exit(PATIENCE, "a crash or the drain", || offsets.caught_up(ends));
        let Some(status) = status else {
            sink.fail(&format!(
                "the input drained after {crashed} crashes at {point}"
            ));
        };
        assert!(
            status.code().is_none_or(|c| c > 2),
            "crash {crashed}: expected a fail-point abort, got {status}"
        );
        crashed += 1;
        eprintln!(
            "crash {crashed} at {point}: progress {}",
            offsets.progress()
        );
    }
    let mut sink = spec.spawn("i0");
    sink.wait_until(PATIENCE, "the group committed the whole input", || {
        offsets.caught_up(ends)
    });
    assert_eq!(sink.stop(), Some(0), "SIGTERM after the drain exits 0");
}

fn transactional_is_exact_across_crashes_between_rows_and_commit_and_after_commit() {
    let (broker, url) = require_all!();
    for point in ["kstage::sink_before_commit", "kstage::sink_after_db_commit"] {
        let mut test = Exact::new(&broker.bootstrap, &url, 3);
        let writer = common::seed(&broker.bootstrap, &test.input, 3, 20_000);
        let ends = writer.end_offsets();
        let spec = test.spec("transactional").top(SMALL_BATCHES);
        crash_at_then_drain(&test, &spec, point, 3, &ends);
        let (lost, duplicated) = test.check(&writer.written);
        assert_eq!((lost, duplicated), (0, 0), "{point}: lost / duplicated ids");
        assert_eq!(test.rows(), 20_000, "{point}: one row per input");
    }
}

fn negative_control_kafka_offsets_before_the_database_commit_loses_rows() {
    let (broker, url) = require_all!();
    let mut test = Exact::new(&broker.bootstrap, &url, 3);
    let writer = common::seed(&broker.bootstrap, &test.input, 3, 20_000);
    let ends = writer.end_offsets();
    let spec = test
        .spec("transactional")
        .top(SMALL_BATCHES)
        .env("KSTAGE_BROKEN_MODE", "sink_kafka_offsets");
    let broken = spec.clone();
    // The broken mode's Kafka commit comes first, so a crash before the database commit loses
    // the batch.
    crash_at_then_drain(&test, &broken, "kstage::sink_before_commit", 3, &ends);
    let (lost, _) = test.check(&writer.written);
    assert!(
        lost > 0,
        "the negative control lost no rows: the check cannot fail"
    );
}

/// The state letter of process `pid` in /proc (`T`: stopped), if it exists.
fn process_state(pid: nix::unistd::Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A zombie: an instance paused (SIGSTOP) inside a batch's open transaction, its rows and
/// offsets written, past both the group's session timeout and the server's
/// idle_in_transaction_session_timeout. A fail point holds the zombie before COMMIT, where the
/// test stops it and checks that the pause held (the process is stopped, its session still
/// idle in the transaction). The successor's claim waits for the zombie's row locks until the
/// server ends that session, then writes everything from the committed offsets. Resumed, the
/// zombie's COMMIT finds its session gone; it settles from the offsets table, sees a newer
/// epoch, and stops with `fenced` (exit 1) having written nothing: one row per input.
fn a_zombie_paused_past_the_session_timeout_commits_nothing() {
    zombie(false);
}

/// The zombie's negative control: the same pause and takeover, the zombie in broken mode
/// `sink_no_fencing` (its offset update and its settling ignore the epoch). Resumed, it writes
/// its batch again over the successor's rows, and the same check finds duplicates.
fn negative_control_a_zombie_without_fencing_duplicates_rows() {
    zombie(true);
}

fn zombie(broken: bool) {
    let (broker, url) = require_all!();
    let mut test = Exact::new(&broker.bootstrap, &url, 2);
    let mut writer = common::InputWriter::new(&broker.bootstrap, &test.input, 2);
    writer.write(2_000);
    writer.flush();
    let spec = test.spec("transactional").top("max_records_per_txn = 500");
    // Two batches commit; the third waits before its COMMIT (30 s: ample for the test to stop
    // it there, which it then checks).
    let mut zombie_spec = spec.clone().env(
        "FAILPOINTS",
        "kstage::sink_before_commit=2*off->1*sleep(30000)->off",
    );
    if broken {
        zombie_spec = zombie_spec.env("KSTAGE_BROKEN_MODE", "sink_no_fencing");
    }
    let mut zombie = zombie_spec.spawn("zombie");
    let app = test.app_id.clone();
    let session = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kstage-sink {app}-zombie' \
         AND state = 'idle in transaction'"
    );
    let held = format!("{session} AND now() - state_change > interval '1 second'");
    let pg = &mut test.pg;
    zombie.wait_until(PATIENCE, "the zombie holds an open transaction", || {
        pg.count(&held) == 1
    });
    zombie.sigstop();
    let pid = zombie.pid();
    zombie.wait_until(PATIENCE, "the zombie is stopped", || {
        process_state(pid) == Some('T')
    });
    assert_eq!(
        test.pg.count(&session),
        1,
        "the zombie was stopped inside its open transaction"
    );
    let committed_by_zombie = test.rows();
    assert!(
        committed_by_zombie > 0 && committed_by_zombie < 2_000,
        "the zombie committed its first batches only ({committed_by_zombie} rows)"
    );

    writer.write(2_000);
    writer.flush();
    let mut successor = spec.spawn("successor");
    let pg = &mut test.pg;
    successor.wait_until(PATIENCE, "the successor stored the whole input", || {
        pg.stored_offsets(&app) == 4_000
    });
    assert_eq!(process_state(pid), Some('T'), "the zombie stayed stopped");
    assert_eq!(
        test.pg.count(&session),
        0,
        "the server ended the zombie's session"
    );
    assert_eq!(test.rows(), 4_000, "the successor wrote every row");

    zombie.sigcont();
    if broken {
        let written = writer.written.clone();
        zombie.wait_until(
            PATIENCE,
            "the unfenced zombie writes its batch again",
            || test.check(&written).1 > 0,
        );
        let (_, duplicated) = test.check(&written);
        eprintln!("negative control: {duplicated} ids twice after the zombie resumed");
        assert!(duplicated > 0, "the check cannot fail");
        return;
    }
    let status = zombie.wait_exit(PATIENCE);
    let stderr = zombie.stderr();
    assert!(
        status.code() == Some(1) && stderr.contains("fenced"),
        "the resumed zombie stops fenced (exit 1), got {status}: {}",
        zombie.stderr_tail(20)
    );
    assert_eq!(
        test.rows(),
        4_000,
        "the zombie wrote no row after the takeover"
    );
    assert_eq!(successor.stop(), Some(0));
    assert_eq!(test.check(&writer.written), (0, 0), "lost / duplicated ids");
}

trials! {
    transactional_is_exact_across_crashes_between_rows_and_commit_and_after_commit => [Broker, Postgres],
    negative_control_kafka_offsets_before_the_database_commit_loses_rows => [Broker, Postgres],
    a_zombie_paused_past_the_session_timeout_commits_nothing => [Broker, Postgres],
    negative_control_a_zombie_without_fencing_duplicates_rows => [Broker, Postgres],
}
