//! `kstage sink` against the real broker and a real PostgreSQL: exactly one row per input in
//! transactional mode across a killed database and terminated backends and claims (here),
//! crashes at fail points and a zombie ([`fail_points`]), three instances SIGKILLed at random
//! ([`kills`], which also holds the idempotent mode's one row per key with the latest value);
//! bad rows under each poison policy (here). Each exactly-once check has a negative control (a deliberately
//! broken mode, `KSTAGE_BROKEN_MODE`) that the same check catches.

use crate::common;

use common::read::{read_topic, Isolation};
use common::sink::exact::Exact;
use common::sink::pg::OwnPostgres;
use common::sink::{pg_url, Pg, SinkSpec};
use common::Stage;
use common::{create_topic, unique_name, InputRecord, PATIENCE};

/// The broker and the database of a sink test (the harness ignores the test without them).
macro_rules! require_all {
    () => {
        (require_broker!(), pg_url())
    };
}

/// Crash, negative-control and zombie tests (fail points and broken modes).
#[cfg(feature = "fault-injection")]
pub mod fail_points;

/// A typed sink topology writing two tables.
pub mod topology;

/// Avro input through the schema registry.
pub mod avro;

/// The staged COPY path (a timestamp from epoch ms): exact rows and values.
pub mod copy_staged;

/// `kstage verify --sink`: a sink's table against its input.
pub mod verify_table;

/// Three instances SIGKILLed at random, each mode with its negative control.
#[cfg(feature = "fault-injection")]
pub mod kills;

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
/// restarted (a private server). Every id lands exactly once and every instance exits 0 on SIGTERM.
fn transactional_is_exact_when_postgres_is_killed_and_backends_terminated() {
    let (broker, _) = require_all!();
    // Its own server: killing the shared one would fault every other sink test running.
    let own = OwnPostgres::start();
    let url = own.url.clone();
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
    // Both sessions first: on a loaded machine the first instance can write 2,000 rows before
    // the second one has connected.
    let sessions = format!(
        "SELECT count(DISTINCT application_name) FROM pg_stat_activity \
         WHERE application_name LIKE 'kstage-sink {app}-%'"
    );
    let pg = &mut test.pg;
    sinks[1].wait_until(PATIENCE, "both instances have a session", || {
        pg.count(&sessions) == 2
    });
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
    own.kill();
    own.restart();
    let pg = &mut test.pg;
    sinks[0].wait_until(PATIENCE, "the whole input is in the offsets table", || {
        pg.stored_offsets(&app) == RECORDS
    });
    // Kafka's offsets are for lag monitoring only, but they must converge too, even where a
    // commit to Kafka was refused during the rebalance.
    let (offsets, ends) = (test.offsets(), writer.end_offsets());
    sinks[0].wait_until(PATIENCE, "Kafka's committed offsets reach the end", || {
        offsets.caught_up(&ends)
    });
    for sink in &mut sinks {
        assert_eq!(sink.stop(), Some(0), "the sinks rode out the faults");
    }
    assert_eq!(test.check(&writer.written), (0, 0), "lost / duplicated ids");
    assert_eq!(test.rows(), RECORDS, "one row per input");
}

trials! {
    rejected_rows_are_dead_lettered_with_the_database_error_and_the_rest_commit => [Broker, Postgres],
    rejected_rows_are_skipped_under_skip_and_stop_the_sink_under_fail => [Broker, Postgres],
    transactional_is_exact_when_postgres_is_killed_and_backends_terminated => [Broker, Postgres],
}
