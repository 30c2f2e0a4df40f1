//! The staged COPY path of a transactional sink (`src/sink/copy.rs`): a `timestamptz` column
//! filled from the record's epoch milliseconds cannot be copied straight in (COPY's input
//! function does not read `1700000000123`), so each batch is copied into a temporary text table
//! and moved with `INSERT INTO t SELECT to_timestamp(...) ... FROM kstage_stage_0`. The test
//! checks the table holds exactly the input's rows, each with its record's timestamp to the
//! millisecond, and that the rows came by that path: a statement trigger logs every statement
//! that inserted into the table (`current_query()`). The same check on a sink with
//! `write = "insert"` sees `VALUES` statements instead, so it tells the paths apart.

use std::collections::BTreeSet;

use super::common;
use common::raw::{RawRecord, RawWriter};
use common::sink::{pg_url, Pg, SinkSpec};
use common::{create_topic, unique_name, PATIENCE};

/// Records in the input, over 2 partitions, 1 to 3 ms apart.
const RECORDS: usize = 3_000;

/// The first record's timestamp (ms since the epoch; 2023-11-14T22:13:20.123Z).
const FIRST_MS: i64 = 1_700_000_000_123;

/// (id, partition, offset, timestamp in ms) of a row or a record.
type Expected = BTreeSet<(String, i32, i64, i64)>;

/// Runs a transactional sink with `write` over the whole input into a fresh table (with a
/// statement trigger logging each INSERT or COPY into it); returns the rows as
/// (id, partition, offset, epoch ms) and the statements logged.
fn sink_rows(bootstrap: &str, url: &str, input: &str, write: &str) -> (Expected, Vec<String>) {
    let mut pg = Pg::connect(url);
    let (app_id, table) = (unique_name("sink-app"), unique_name("ts").replace('-', "_"));
    pg.execute(&format!(
        "CREATE TABLE {table} (id text NOT NULL, at timestamptz NOT NULL, src_partition int NOT NULL,
                               src_offset bigint NOT NULL);
         CREATE TABLE {table}_log (statement text);
         CREATE FUNCTION {table}_f() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO {table}_log VALUES (current_query()); RETURN NULL; END $$;
         CREATE TRIGGER {table}_t AFTER INSERT ON {table} FOR EACH STATEMENT
           EXECUTE FUNCTION {table}_f();"
    ));
    let spec = SinkSpec::new(
        bootstrap,
        input,
        &app_id,
        url,
        "transactional",
        &table,
        "id = \"value.id\"\nat = \"timestamp\"\nsrc_partition = \"partition\"\nsrc_offset = \"offset\"",
    )
    .top("max_records_per_txn = 400")
    .sink_lines(&format!("write = \"{write}\""));
    let mut sink = spec.spawn("i0");
    sink.wait_until(PATIENCE, "the sink stored the whole input", || {
        pg.stored_offsets(&app_id) == RECORDS as i64
    });
    assert_eq!(sink.stop(), Some(0), "{}", sink.stderr());
    let rows = pg
        .query(&format!(
            "SELECT id, src_partition, src_offset,
                    (extract(epoch FROM at) * 1000)::bigint FROM {table}"
        ))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect::<Vec<(String, i32, i64, i64)>>();
    let count = rows.len();
    let rows: Expected = rows.into_iter().collect();
    assert_eq!(rows.len(), count, "a row twice in {table}");
    let statements = pg
        .query(&format!("SELECT statement FROM {table}_log"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    (rows, statements)
}

fn the_staged_copy_path_writes_exact_rows_with_epoch_ms_timestamps() {
    let (broker, url) = (require_broker!(), pg_url());
    let input = unique_name("sink-in");
    create_topic(&broker.bootstrap, &input, 2);
    let mut writer = RawWriter::new(&broker.bootstrap, &input, 2);
    let mut expected = Expected::new();
    let mut at = FIRST_MS;
    for n in 0..RECORDS {
        let id = format!("r-{n}");
        at += 1 + (n as i64 % 3);
        let value = serde_json::json!({ "id": id }).to_string().into_bytes();
        let landed = writer.write(
            (n % 2) as i32,
            RawRecord::new(Some(&id), Some(value)).at(at),
        );
        expected.insert((id, landed.partition, landed.offset, at));
    }
    writer.flush();

    let (rows, statements) = sink_rows(&broker.bootstrap, &url, &input, "copy");
    assert_eq!(rows.len(), RECORDS);
    let missing: Vec<_> = expected.difference(&rows).take(3).collect();
    let wrong: Vec<_> = rows.difference(&expected).take(3).collect();
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "expected but absent: {missing:?}; in the table but not expected: {wrong:?}"
    );
    assert!(!statements.is_empty(), "the trigger logged no statement");
    for statement in &statements {
        assert!(
            statement.starts_with("INSERT INTO")
                && statement.contains("to_timestamp(")
                && statement.contains("FROM kstage_stage_0"),
            "not the staged path: {statement}"
        );
    }

    // The control: the INSERT path writes the same rows, and the log shows its VALUES lists.
    let (rows, statements) = sink_rows(&broker.bootstrap, &url, &input, "insert");
    assert!(rows == expected, "the INSERT path wrote other rows");
    assert!(!statements.is_empty());
    assert!(
        statements
            .iter()
            .all(|s| s.contains("VALUES") && !s.contains("kstage_stage_0")),
        "{statements:?}"
    );
}

trials! {
    the_staged_copy_path_writes_exact_rows_with_epoch_ms_timestamps => [Broker, Postgres],
}
