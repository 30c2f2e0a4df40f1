//! `kstage sink` against the real broker and a real PostgreSQL: exactly one row per input in
//! transactional mode across kills, crashes at fail points, a killed database, terminated
//! backends and a zombie; one row per key holding the latest value in idempotent mode; bad rows
//! under each poison policy. Each exactly-once check has a negative control (a deliberately
//! broken mode, `KSTAGE_BROKEN_MODE`) that the same check catches.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::read::{read_topic, GroupOffsets, Isolation};
use common::sink::exact::Exact;
use common::sink::keyed::write_keyed;
use common::sink::pg::postgres_script;
use common::sink::{pg_url, Pg, SinkSpec};
use common::Stage;
use common::{create_topic, unique_name, InputRecord, PATIENCE};
use nix::sys::signal::Signal;

/// The broker and the database of a sink test (the harness ignores the test without them).
macro_rules! require_all {
    () => {
        (require_broker!(), pg_url())
    };
}

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
        let spec = test.spec("transactional");
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

fn transactional_is_exact_with_two_instances_killed_at_random() {
    let (broker, url) = require_all!();
    const RECORDS: usize = 30_000;
    const KILLS: usize = 6;
    let mut test = Exact::new(&broker.bootstrap, &url, 4);
    let writer = common::seed(&broker.bootstrap, &test.input, 4, RECORDS);
    let ends = writer.end_offsets();
    let spec = test.spec("transactional").top("max_records_per_txn = 500");
    let mut sinks: Vec<Stage> = vec![spec.spawn("a"), spec.spawn("b")];
    let step = RECORDS as i64 / (KILLS as i64 + 2);
    for kill in 0..KILLS {
        let mark = step * (kill as i64 + 1);
        let who = rand::random_range(0..2);
        let table = test.table.clone();
        let pg = &mut test.pg;
        sinks[who].wait_until(PATIENCE, &format!("{mark} rows"), || {
            pg.count(&format!("SELECT count(*) FROM {table}")) >= mark
        });
        std::thread::sleep(Duration::from_millis(rand::random_range(0..200)));
        sinks[who].sigkill();
        eprintln!("kill {kill}: instance {who} at {} rows", test.rows());
        sinks[who] = spec.spawn(if who == 0 { "a" } else { "b" });
    }
    let offsets = test.offsets();
    sinks[0].wait_until(PATIENCE, "the whole input committed", || {
        offsets.caught_up(&ends)
    });
    let table = test.table.clone();
    let pg = &mut test.pg;
    sinks[0].wait_until(PATIENCE, "every row", || {
        pg.count(&format!("SELECT count(*) FROM {table}")) >= RECORDS as i64
    });
    for sink in &mut sinks {
        assert_eq!(sink.stop(), Some(0));
    }
    assert_eq!(test.check(&writer.written), (0, 0), "lost / duplicated ids");
    assert_eq!(test.rows(), RECORDS as i64);
}

/// An idempotent test's table: one row per key, its latest `n`, and how often it was written
/// (a trigger counts updates, so redelivery shows).
fn keyed_table(pg: &mut Pg, unique: bool) -> String {
    let table = unique_name("k").replace('-', "_");
    let key = if unique { "PRIMARY KEY" } else { "" };
    pg.execute(&format!(
        "CREATE TABLE {table} (k text NOT NULL {key}, n bigint NOT NULL, writes int NOT NULL DEFAULT 1);
         CREATE FUNCTION {table}_count() RETURNS trigger AS $$ BEGIN NEW.writes := OLD.writes + 1; RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER {table}_writes BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_count();"
    ));
    table
}

fn crash_keyed(spec: &SinkSpec, offsets: &GroupOffsets, ends: &[i64], crashes: usize) {
    for crash in 0..crashes {
        let skip = rand::random_range(1..=4);
        let mut sink = spec
            .clone()
            .env(
                "FAILPOINTS",
                &format!("kstage::sink_after_db_commit={skip}*off->return"),
            )
            .spawn("i0");
        let status = sink.wait_exit(PATIENCE);
        assert!(
            status.code().is_none_or(|c| c > 2),
            "crash {crash}: got {status}"
        );
    }
    let mut sink = spec.spawn("i0");
    sink.wait_until(PATIENCE, "the whole input committed", || {
        offsets.caught_up(ends)
    });
    assert_eq!(sink.stop(), Some(0));
}

fn idempotent_upserts_leave_one_row_per_key_with_the_latest_value_across_crashes() {
    let (broker, url) = require_all!();
    let mut pg = Pg::connect(&url);
    let (input, app_id) = (unique_name("sink-in"), unique_name("sink-app"));
    create_topic(&broker.bootstrap, &input, 3);
    let table = keyed_table(&mut pg, true);
    let latest = write_keyed(&broker.bootstrap, &input, 3, 500, 20_000);
    let spec = SinkSpec::new(
        &broker.bootstrap,
        &input,
        &app_id,
        &url,
        "idempotent",
        &table,
        "k = \"value.k\"\nn = \"value.n\"",
    )
    .sink_lines("key_columns = [\"k\"]")
    .top("max_records_per_txn = 300");
    let offsets = GroupOffsets::new(&broker.bootstrap, &app_id, &input, false);
    let ends = common::read::end_offsets(&broker.bootstrap, &input, Isolation::ReadUncommitted);
    crash_keyed(&spec, &offsets, &ends, 3);
    let rows = pg.query(&format!("SELECT k, n, writes FROM {table}"));
    let found: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(found, latest, "one row per key holding the latest value");
    let writes: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(2))).sum();
    let upserts = pg.count(&format!("SELECT count(*) FROM {table}"));
    assert!(
        writes > upserts,
        "redelivery should show as extra writes ({writes} writes, {upserts} rows)"
    );
}

fn negative_control_plain_insert_duplicates_redelivered_records() {
    let (broker, url) = require_all!();
    let mut pg = Pg::connect(&url);
    let (input, app_id) = (unique_name("sink-in"), unique_name("sink-app"));
    create_topic(&broker.bootstrap, &input, 3);
    let table = keyed_table(&mut pg, false);
    write_keyed(&broker.bootstrap, &input, 3, 500, 20_000);
    let spec = SinkSpec::new(
        &broker.bootstrap,
        &input,
        &app_id,
        &url,
        "idempotent",
        &table,
        "k = \"value.k\"\nn = \"value.n\"",
    )
    .sink_lines("key_columns = [\"k\"]")
    .top("max_records_per_txn = 300")
    .env("KSTAGE_BROKEN_MODE", "sink_plain_insert");
    let offsets = GroupOffsets::new(&broker.bootstrap, &app_id, &input, false);
    let ends = common::read::end_offsets(&broker.bootstrap, &input, Isolation::ReadUncommitted);
    crash_keyed(&spec, &offsets, &ends, 3);
    let rows = pg.count(&format!("SELECT count(*) FROM {table}"));
    assert!(
        rows > 20_000,
        "a plain INSERT after redelivery should hold duplicates, found {rows} rows"
    );
}

/// A table where a record marked with a long note is rejected (varchar(5)).
fn bad_rows_setup(
    broker: &str,
    url: &str,
    policy: &str,
    dead_letter: Option<&str>,
) -> (Exact, Vec<InputRecord>, Vec<InputRecord>, SinkSpec) {
    let mut test = Exact::new(broker, url, 2);
    test.pg.execute(&format!(
        "ALTER TABLE {} ADD COLUMN note varchar(5)",
        test.table
    ));
    let mut writer = common::InputWriter::new(broker, &test.input, 2);
    writer.write(500);
    let bad = vec![
        writer.write_marked("far-too-long"),
        writer.write_marked("also-too-long"),
    ];
    writer.write(500);
    writer.flush();
    let mut spec = test
        .spec("transactional")
        .top(&format!("poison_policy = \"{policy}\""));
    spec = spec.column_lines("note = \"value.note\"");
    if let Some(topic) = dead_letter {
        spec = spec.top(&format!("dead_letter_topic = \"{topic}\""));
    }
    (test, writer.written, bad, spec)
}

fn rejected_rows_are_dead_lettered_with_the_database_error_and_the_rest_commit() {
    let (broker, url) = require_all!();
    let dlt = unique_name("sink-dlt");
    create_topic(&broker.bootstrap, &dlt, 1);
    let (mut test, written, bad, spec) =
        bad_rows_setup(&broker.bootstrap, &url, "dead_letter", Some(&dlt));
    let ends = test.offsets();
    let mut sink = spec.spawn("i0");
    let total = written.len() as i64;
    let table = test.table.clone();
    let pg = &mut test.pg;
    sink.wait_until(PATIENCE, "every good row", || {
        pg.count(&format!("SELECT count(*) FROM {table}")) >= total - 2
    });
    let _ = ends;
    assert_eq!(sink.stop(), Some(0));
    let (lost, duplicated) = test.check(&written);
    assert_eq!(
        (lost, duplicated),
        (2, 0),
        "only the two bad records are missing"
    );
    let letters = read_topic(&broker.bootstrap, &dlt, Isolation::ReadCommitted);
    assert_eq!(letters.len(), 2, "two dead letters");
    for letter in &letters {
        let message =
            String::from_utf8_lossy(letter.header("kstage.error.message").unwrap_or_default())
                .into_owned();
        assert!(
            message.contains("value too long"),
            "the database's error text: {message}"
        );
    }
    let mut keys: Vec<Option<String>> = letters.iter().map(|l| l.key.clone()).collect();
    let mut expected: Vec<Option<String>> = bad.iter().map(|b| Some(b.id.clone())).collect();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "the dead letters are the bad records");
}

fn rejected_rows_are_skipped_under_skip_and_stop_the_sink_under_fail() {
    let (broker, url) = require_all!();
    let (mut test, written, _, spec) = bad_rows_setup(&broker.bootstrap, &url, "skip", None);
    let mut sink = spec.spawn("i0");
    let total = written.len() as i64;
    let table = test.table.clone();
    let pg = &mut test.pg;
    sink.wait_until(PATIENCE, "every good row", || {
        pg.count(&format!("SELECT count(*) FROM {table}")) >= total - 2
    });
    assert_eq!(sink.stop(), Some(0));
    assert_eq!(test.check(&written), (2, 0));
    assert!(
        sink.stderr().contains("Skipped a record"),
        "the skip is logged"
    );

    let (mut test, _, bad, spec) = bad_rows_setup(&broker.bootstrap, &url, "fail", None);
    let mut sink = spec.spawn("i0");
    let status = sink.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(1), "poison under fail exits 1");
    let stderr = sink.stderr();
    let named = bad
        .iter()
        .any(|b| stderr.contains(&format!("{}/{}@", test.input, b.partition)));
    assert!(
        named && stderr.contains("value too long"),
        "names the record and the error: {stderr}"
    );
    assert!(
        test.rows() < 1002,
        "nothing past the bad record's batch committed"
    );
}

/// The sink sessions of group `app_id` matching `filter` (SQL on pg_stat_activity), terminated;
/// returns how many.
fn terminate(pg: &mut Pg, app_id: &str, filter: &str) -> i64 {
    pg.count(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name LIKE 'kstage-sink {app_id}-%' AND {filter}) t"
    ))
}

/// Database faults under two, then three instances: every session terminated between or during
/// batches; a partition claim (the third instance joining) terminated while it runs, held there
/// by a trigger that sleeps in the claim's INSERT; then PostgreSQL killed (immediate) and
/// restarted. Every id lands exactly once and every instance exits 0 on SIGTERM.
fn transactional_is_exact_when_postgres_is_killed_and_backends_terminated() {
    let (broker, url) = require_all!();
    const RECORDS: i64 = 20_000;
    let mut test = Exact::new(&broker.bootstrap, &url, 3);
    let mut writer = common::InputWriter::new(&broker.bootstrap, &test.input, 3);
    writer.write(6_000);
    writer.flush();
    let spec = test.spec("transactional").top("max_records_per_txn = 300");
    let mut sinks = vec![spec.spawn("a"), spec.spawn("b")];
    let (table, app) = (test.table.clone(), test.app_id.clone());
    let rows_at_least = |sink: &mut Stage, pg: &mut Pg, mark: i64| {
        sink.wait_until(PATIENCE, &format!("{mark} rows"), || {
            pg.count(&format!("SELECT count(*) FROM {table}")) >= mark
        });
    };

    rows_at_least(&mut sinks[0], &mut test.pg, 2_000);
    let killed = terminate(&mut test.pg, &app, "true");
    assert!(killed >= 2, "terminated {killed} sessions, not both sinks'");

    // A claim held in its INSERT until the test lets it go, then terminated.
    let hold = format!("{table}_hold");
    test.pg.execute(&format!(
        "CREATE TABLE {hold} (x int);
         INSERT INTO {hold} VALUES (1);
         CREATE FUNCTION {hold}() RETURNS trigger AS $$ BEGIN
           IF NEW.group_id = '{app}' AND current_setting('application_name') = 'kstage-sink {app}-c'
              AND EXISTS (SELECT 1 FROM {hold}) THEN PERFORM pg_sleep(300); END IF;
           RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER {hold} BEFORE INSERT ON kstage_offsets FOR EACH ROW EXECUTE FUNCTION {hold}();"
    ));
    sinks.push(spec.spawn("c"));
    let claiming = "state = 'active' AND wait_event = 'PgSleep' AND query LIKE 'INSERT INTO%'";
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kstage-sink {app}-c' \
         AND {claiming}"
    );
    let pg = &mut test.pg;
    sinks[2].wait_until(PATIENCE, "the third instance's claim is held", || {
        pg.count(&sql) == 1
    });
    test.pg.execute(&format!("DELETE FROM {hold}"));
    let killed = terminate(&mut test.pg, &app, claiming);
    assert_eq!(killed, 1, "terminated the held claim");
    test.pg.execute(&format!(
        "DROP TRIGGER {hold} ON kstage_offsets; DROP FUNCTION {hold}(); DROP TABLE {hold}"
    ));
    // Logged once its claim went through.
    sinks[2].wait_for_stderr(PATIENCE, "Partition assigned.");
    writer.write(RECORDS as usize - 6_000);
    writer.flush();
    rows_at_least(&mut sinks[2], &mut test.pg, 10_000);

    eprintln!("killing PostgreSQL (immediate) at {} rows", test.rows());
    postgres_script("kill");
    postgres_script("restart");

    let stored =
        format!("SELECT sum(next_offset)::bigint FROM kstage_offsets WHERE group_id = '{app}'");
    let pg = &mut test.pg;
    sinks[0].wait_until(PATIENCE, "the whole input is in the offsets table", || {
        pg.count(&stored) == RECORDS
    });
    for sink in &mut sinks {
        eprintln!("DEBUG {}", sink.stderr_tail(80));
        assert_eq!(sink.stop(), Some(0), "the sinks rode out the faults");
    }
    assert_eq!(test.check(&writer.written), (0, 0), "lost / duplicated ids");
    assert_eq!(test.rows(), RECORDS, "one row per input");
}

fn a_zombie_paused_past_the_session_timeout_commits_nothing() {
    let (broker, url) = require_all!();
    let mut test = Exact::new(&broker.bootstrap, &url, 2);
    let mut writer = common::InputWriter::new(&broker.bootstrap, &test.input, 2);
    writer.write(2_000);
    writer.flush();
    // A long commit interval: the zombie holds an open batch when it is paused.
    let spec = test.spec("transactional").top("commit_interval = \"3s\"");
    let mut zombie = spec.spawn("zombie");
    let table = test.table.clone();
    let pg = &mut test.pg;
    zombie.wait_until(PATIENCE, "the first rows", || {
        pg.count(&format!("SELECT count(*) FROM {table}")) >= 2_000
    });
    writer.write(2_000);
    writer.flush();
    std::thread::sleep(Duration::from_millis(500));
    zombie.signal(Signal::SIGSTOP);
    let mut successor = spec.spawn("successor");
    let offsets = test.offsets();
    let ends = writer.end_offsets();
    successor.wait_until(PATIENCE, "the successor committed the whole input", || {
        offsets.caught_up(&ends)
    });
    let before = test.rows();
    zombie.signal(Signal::SIGCONT);
    // The zombie either learns it lost its partitions, or is fenced at its next commit.
    let mut learned = false;
    for _ in 0..600 {
        let stderr = zombie.stderr();
        if stderr.contains("fenced") || stderr.contains("lost=true") {
            learned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        learned,
        "the zombie neither saw its partitions lost nor was fenced"
    );
    assert_eq!(
        test.rows(),
        before,
        "the zombie wrote rows after the takeover"
    );
    zombie.signal(Signal::SIGTERM);
    let _ = zombie.wait_exit(PATIENCE);
    assert_eq!(successor.stop(), Some(0));
    assert_eq!(test.check(&writer.written), (0, 0), "lost / duplicated ids");
}

trials! {
    transactional_is_exact_across_crashes_between_rows_and_commit_and_after_commit => [Broker, Postgres],
    negative_control_kafka_offsets_before_the_database_commit_loses_rows => [Broker, Postgres],
    transactional_is_exact_with_two_instances_killed_at_random => [Broker, Postgres],
    idempotent_upserts_leave_one_row_per_key_with_the_latest_value_across_crashes => [Broker, Postgres],
    negative_control_plain_insert_duplicates_redelivered_records => [Broker, Postgres],
    rejected_rows_are_dead_lettered_with_the_database_error_and_the_rest_commit => [Broker, Postgres],
    rejected_rows_are_skipped_under_skip_and_stop_the_sink_under_fail => [Broker, Postgres],
    transactional_is_exact_when_postgres_is_killed_and_backends_terminated => [Broker, Postgres],
    a_zombie_paused_past_the_session_timeout_commits_nothing => [Broker, Postgres],
}
