//! The sink under SIGKILLs: three instances, one killed at a time (at random, every other kill
//! aimed at a commit window, see `common::sink::kills`) while input arrives, each restarted at
//! once, so the group rebalances around every kill. Each mode's check runs twice with the same
//! schedule: once on the real sink, where it must hold, and once on a deliberately broken mode
//! (cargo feature `fault-injection`, `KSTAGE_BROKEN_MODE`), where it must fail.
//!
//! * transactional: every input id is exactly one row. Broken (`sink_kafka_offsets`, Kafka's
//!   offsets committed before the database COMMIT): kills inside a transaction lose rows. Each
//!   batch holds its transaction 100 ms before COMMIT (a fail point's sleep), so that window is
//!   wide.
//! * idempotent: one row per key holding the latest value, while an audit table (a trigger
//!   logging each write's source partition and offset) shows input offsets written twice, so
//!   records were redelivered. Broken (`sink_plain_insert`): the same redelivery leaves
//!   duplicate rows.
//!
//! The CI run uses 60,000 records and 6 kills; `KSTAGE_RELIABILITY=full` uses 200,000 records
//! and 12 kills.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::common;
use common::read::GroupOffsets;
use common::sink::exact::Exact;
use common::sink::keyed::KeyedWriter;
use common::sink::kills::{run_with_kills, Aim, KillPlan};
use common::sink::{pg_url, Pg, SinkSpec};
use common::{create_topic, unique_name};

/// Six partitions: two per instance.
const PARTITIONS: i32 = 6;

/// Batches of at most 1,000 records: many commits, so many commit windows to kill in.
const BATCHES: &str = "max_records_per_txn = 1000";

/// (records, kills): the 200,000 records in the full run, 60,000 in CI.
fn scale() -> (u64, usize) {
    if std::env::var("KSTAGE_RELIABILITY").as_deref() == Ok("full") {
        (200_000, 12)
    } else {
        (60_000, 6)
    }
}

/// A transactional run under kills; returns (lost, duplicated) ids, and the rows in the table.
fn transactional_under_kills(broken: bool) -> ((usize, usize), i64, u64) {
    let (broker, url) = (require_broker!(), pg_url());
    let (records, kills) = scale();
    let mut test = Exact::new(&broker.bootstrap, &url, PARTITIONS);
    // Every batch holds its transaction 100 ms before COMMIT (a fail point's sleep, as a slow
    // database would), so kills often land with rows written and not committed: where the
    // broken mode loses them.
    let mut spec = test
        .spec("transactional")
        .top(BATCHES)
        .env("FAILPOINTS", "kstage::sink_before_commit=sleep(100)");
    if broken {
        spec = spec.env("KSTAGE_BROKEN_MODE", "sink_kafka_offsets");
    }
    let writer = RefCell::new(common::InputWriter::new(
        &broker.bootstrap,
        &test.input,
        PARTITIONS,
    ));
    let (table, app) = (test.table.clone(), test.app_id.clone());
    let kafka = test.offsets();
    let plan = KillPlan::new(records, kills, Aim::InTransaction);
    let mut pg = Pg::connect(&url);
    let log = run_with_kills(
        &spec,
        &app,
        &mut pg,
        &plan,
        |count| {
            let mut writer = writer.borrow_mut();
            writer.write(usize::try_from(count).expect("count fits"));
            writer.flush();
        },
        |pg| pg.count(&format!("SELECT count(*) FROM {table}")),
        |pg| {
            if broken {
                // The broken mode keeps its offsets in Kafka only.
                kafka.caught_up(&writer.borrow().end_offsets())
            } else {
                pg.stored_offsets(&app) == i64::try_from(records).expect("records fit")
            }
        },
    );
    let written = writer.into_inner().written;
    assert_eq!(written.len() as u64, records);
    (test.check(&written), test.rows(), log.hit as u64)
}

fn transactional_is_exact_with_three_instances_killed_at_random() {
    let ((lost, duplicated), rows, _) = transactional_under_kills(false);
    assert_eq!((lost, duplicated), (0, 0), "lost / duplicated ids");
    assert_eq!(rows, scale().0 as i64, "one row per input");
}

fn negative_control_kafka_offsets_first_loses_rows_under_the_same_kills() {
    let ((lost, _), rows, hits) = transactional_under_kills(true);
    eprintln!("negative control: {lost} ids lost, {rows} rows, {hits} aimed kills hit");
    assert!(
        lost > 0,
        "the broken mode lost no row under the same kills: the check cannot fail"
    );
}

/// An idempotent run's world: keyed input, a table with (or, for the plain INSERT, without) a
/// primary key on `k`, and an audit table that a trigger fills with the source partition and
/// offset of every row written (inserted or updated).
struct Keyed {
    table: String,
    audit: String,
    keys: u64,
    latest: BTreeMap<String, i64>,
    pg: Pg,
}

/// An idempotent run under kills (`plain_insert`: the broken mode). Every batch's Kafka commit
/// is delayed 200 ms after its database COMMIT (a fail point's sleep, as a slow broker would),
/// so the aimed kills find the window where a batch is in the database but not in Kafka.
fn idempotent_under_kills(plain_insert: bool) -> Keyed {
    let (broker, url) = (require_broker!(), pg_url());
    let (records, kills) = scale();
    let keys = records / 5;
    let mut pg = Pg::connect(&url);
    let (input, app_id) = (unique_name("sink-in"), unique_name("sink-app"));
    create_topic(&broker.bootstrap, &input, PARTITIONS);
    let table = unique_name("k").replace('-', "_");
    let audit = format!("{table}_audit");
    let key = if plain_insert { "" } else { "PRIMARY KEY" };
    pg.execute(&format!(
        "CREATE TABLE {table} (k text NOT NULL {key}, n bigint NOT NULL, src_partition int NOT NULL, src_offset bigint NOT NULL);
         CREATE TABLE {audit} (p int NOT NULL, o bigint NOT NULL);
         CREATE FUNCTION {audit}() RETURNS trigger AS $$ BEGIN
           INSERT INTO {audit} VALUES (NEW.src_partition, NEW.src_offset); RETURN NULL; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER {audit} AFTER INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {audit}();"
    ));
    let mut spec = SinkSpec::new(
        &broker.bootstrap,
        &input,
        &app_id,
        &url,
        "idempotent",
        &table,
        "k = \"value.k\"\nn = \"value.n\"\nsrc_partition = \"partition\"\nsrc_offset = \"offset\"",
    )
    .sink_lines("key_columns = [\"k\"]")
    .top(BATCHES)
    .env("FAILPOINTS", "kstage::sink_after_db_commit=sleep(200)");
    if plain_insert {
        spec = spec.env("KSTAGE_BROKEN_MODE", "sink_plain_insert");
    }
    let writer = RefCell::new(KeyedWriter::new(
        &broker.bootstrap,
        &input,
        PARTITIONS,
        keys,
    ));
    let kafka = GroupOffsets::new(&broker.bootstrap, &app_id, &input, false);
    let plan = KillPlan::new(records, kills, Aim::AfterCommit);
    let mut session = Pg::connect(&url);
    run_with_kills(
        &spec,
        &app_id,
        &mut session,
        &plan,
        |count| writer.borrow_mut().write(count),
        |pg| pg.count(&format!("SELECT count(*) FROM {audit}")),
        |_| kafka.caught_up(&writer.borrow().end_offsets()),
    );
    let writer = writer.into_inner();
    assert_eq!(writer.written(), records);
    Keyed {
        table,
        audit,
        keys,
        latest: writer.latest,
        pg,
    }
}

/// Source offsets written more than once in `table` (columns `p`/`o` or the provenance).
fn offsets_written_twice(pg: &mut Pg, table: &str, partition: &str, offset: &str) -> i64 {
    pg.count(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {partition}, {offset} \
         HAVING count(*) > 1) t"
    ))
}

fn idempotent_leaves_one_row_per_key_with_the_latest_value_under_kills() {
    let mut run = idempotent_under_kills(false);
    let rows = run.pg.query(&format!("SELECT k, n FROM {}", run.table));
    let found: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(found.len() as u64, run.keys, "one row per key");
    assert!(found == run.latest, "every key holds its latest value");
    let redelivered = offsets_written_twice(&mut run.pg, &run.audit, "p", "o");
    eprintln!("{redelivered} input offsets were written more than once");
    assert!(
        redelivered > 0,
        "the audit shows no redelivery: the kills did not test the upsert"
    );
}

fn negative_control_plain_insert_duplicates_under_the_same_kills() {
    let mut run = idempotent_under_kills(true);
    let duplicated = offsets_written_twice(&mut run.pg, &run.table, "src_partition", "src_offset");
    let rows = run.pg.count(&format!("SELECT count(*) FROM {}", run.table));
    eprintln!("negative control: {duplicated} input offsets twice in the table, {rows} rows");
    assert!(
        duplicated > 0,
        "a plain INSERT under the same kills holds no duplicate: the check cannot fail"
    );
}

trials! {
    transactional_is_exact_with_three_instances_killed_at_random => [Broker, Postgres],
    negative_control_kafka_offsets_first_loses_rows_under_the_same_kills => [Broker, Postgres],
    idempotent_leaves_one_row_per_key_with_the_latest_value_under_kills => [Broker, Postgres],
    negative_control_plain_insert_duplicates_under_the_same_kills => [Broker, Postgres],
}
