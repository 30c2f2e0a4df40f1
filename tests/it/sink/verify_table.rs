//! `kstage verify --sink FILE` against a real sink's table: it passes on what the sink wrote,
//! and each defect written into the table by hand (a row deleted, a row copied, a row of no
//! input record, a value changed; in idempotent mode a key set back to an older value) fails
//! exactly its own check, with the exit code 1. Run through the binary, as a user would.

use std::process::Command;

use super::common;
use common::sink::exact::Exact;
use common::sink::keyed::KeyedWriter;
use common::sink::{pg_url, Pg, SinkSpec};
use common::{create_topic, unique_name, PATIENCE};
use kstage::verify::TableReport;

/// Runs `kstage verify --sink` on `spec`'s config; returns the exit code and the JSON report
/// (a `TableReport`, or a `TablesReport` for a sink topology).
pub fn verify<R: serde::de::DeserializeOwned>(spec: &SinkSpec) -> (i32, R) {
    let dir = tempfile::tempdir().expect("a directory for the sink config");
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, &spec.toml).expect("write the sink config");
    let output = Command::new(env!("CARGO_BIN_EXE_kstage"))
        .args(["verify", "--no-progress", "--json", "--sink"])
        .arg(&path)
        .env_remove("KSTAGE_BOOTSTRAP_SERVERS")
        .output()
        .expect("run kstage verify");
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "kstage verify exited {code} without a JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report)
}

/// (lost, duplicated, unexpected, values) counts of a report.
pub fn counts(report: &TableReport) -> (u64, u64, u64, u64) {
    (
        report.lost.count,
        report.duplicated.count,
        report.unexpected.count,
        report.values.count,
    )
}

fn verify_passes_a_transactional_sink_table_and_names_each_defect() {
    let (broker, url) = (require_broker!(), pg_url());
    let mut test = Exact::new(&broker.bootstrap, &url, 2);
    let writer = common::seed(&broker.bootstrap, &test.input, 2, 2_000);
    let spec = test.spec("transactional");
    let mut sink = spec.spawn("i0");
    let table = test.table.clone();
    test.drain_and_stop(&mut sink, 2_000);
    assert_eq!(test.check(&writer.written), (0, 0));

    let (code, report) = verify(&spec);
    assert_eq!((code, counts(&report)), (0, (0, 0, 0, 0)), "{report}");
    assert!(report.passed && report.rows_in_table == 2_000 && report.expected_rows == 2_000);
    assert_eq!(report.identity, ["src_offset", "src_partition"]);

    test.pg.execute(&format!(
        "DELETE FROM {table} WHERE src_partition = 0 AND src_offset = 10;
         INSERT INTO {table} SELECT * FROM {table} WHERE src_partition = 1 AND src_offset = 20;
         INSERT INTO {table} VALUES ('id-nobody', 0, 999999);
         UPDATE {table} SET id = 'id-changed' WHERE src_partition = 1 AND src_offset = 30;"
    ));
    let (code, report) = verify(&spec);
    assert_eq!((code, counts(&report)), (1, (1, 1, 1, 1)), "{report}");
    assert!(!report.passed);
    let input = &test.input;
    assert_eq!(report.lost.examples, [format!("{input}[0]@10")]);
    assert!(
        report.values.examples[0].starts_with(&format!("{input}[1]@30: the table has (id-changed")),
        "{:?}",
        report.values.examples
    );
    assert_eq!(report.unexpected.examples, ["(999999, 0)"]);
}

fn verify_checks_the_last_value_per_key_of_an_idempotent_sink() {
    let (broker, url) = (require_broker!(), pg_url());
    let mut pg = Pg::connect(&url);
    let (input, app_id) = (unique_name("sink-in"), unique_name("sink-app"));
    create_topic(&broker.bootstrap, &input, 2);
    let table = unique_name("k").replace('-', "_");
    pg.execute(&format!(
        "CREATE TABLE {table} (k text PRIMARY KEY, n bigint NOT NULL)"
    ));
    let mut writer = KeyedWriter::new(&broker.bootstrap, &input, 2, 100);
    writer.write(1_000);
    let spec = SinkSpec::new(
        &broker.bootstrap,
        &input,
        &app_id,
        &url,
        "idempotent",
        &table,
        "k = \"value.k\"\nn = \"value.n\"",
    )
    .sink_lines("key_columns = [\"k\"]");
    let mut sink = spec.spawn("i0");
    let offsets = common::read::GroupOffsets::new(&broker.bootstrap, &app_id, &input, false);
    let ends = writer.end_offsets();
    sink.wait_until(PATIENCE, "the sink committed the whole input", || {
        offsets.caught_up(&ends)
    });
    assert_eq!(sink.stop(), Some(0));

    let (code, report) = verify(&spec);
    assert_eq!((code, counts(&report)), (0, (0, 0, 0, 0)), "{report}");
    assert_eq!((report.rows_in_table, report.expected_rows), (100, 100));
    assert_eq!(report.identity, ["k"]);

    let latest = writer.latest["k7"];
    pg.execute(&format!(
        "UPDATE {table} SET n = {} WHERE k = 'k7'; DELETE FROM {table} WHERE k = 'k8';",
        latest - 100
    ));
    let (code, report) = verify(&spec);
    assert_eq!((code, counts(&report)), (1, (1, 0, 0, 1)), "{report}");
    assert!(
        report.values.examples[0].contains(&format!("the table has ({})", latest - 100)),
        "{:?}",
        report.values.examples
    );
    assert!(report.to_string().contains("last value per key"));
}

trials! {
    verify_passes_a_transactional_sink_table_and_names_each_defect => [Broker, Postgres],
    verify_checks_the_last_value_per_key_of_an_idempotent_sink => [Broker, Postgres],
}
