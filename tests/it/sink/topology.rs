//! A typed sink topology (`order-lines`, built in): each JSON order becomes one row in one
//! table and one row per line in another, in one transaction with the offsets, across a SIGKILL
//! of the sink; an invalid order is poison (skipped). The tables have no unique keys, so a
//! duplicate would show. `kstage verify --sink` checks both tables by running the topology
//! again, and names a deleted line and a copied order.

use super::common;
use common::orders::order;
use common::raw::{RawRecord, RawWriter};
use common::sink::exact::Exact;
use common::PATIENCE;
use kstage::verify::TablesReport;

use super::verify_table::{counts, verify};

/// The `order-lines` sink topology's two tables (no unique keys, so duplicates show), `count`
/// valid orders (order n has 1 + n % 4 lines) and one invalid order (no lines) at partition 0,
/// offset `count / 2`, and the sink's spec (poison skipped). Returns the spec, the tables'
/// names and the number of lines.
fn order_tables(
    test: &mut Exact,
    url: &str,
    count: usize,
) -> (common::sink::SinkSpec, String, String, usize) {
    let (orders, lines) = (
        format!("{}_orders", test.table),
        format!("{}_lines", test.table),
    );
    test.pg.execute(&format!(
        "CREATE TABLE {orders} (id text, customer text, currency text, channel text, item_count int, total numeric(12,2));
         CREATE TABLE {lines} (order_id text, line int, sku text, qty int, unit_price numeric(10,2));"
    ));
    let mut writer = RawWriter::new(&test.bootstrap, &test.input, 2);
    let mut expected_lines = 0;
    for n in 0..count {
        let id = format!("o-{n}");
        let lines = 1 + n % 4;
        expected_lines += lines;
        let value = serde_json::to_vec(&order(&id, lines, 2, 1_250, "web")).expect("json");
        writer.write((n % 2) as i32, RawRecord::new(Some(&id), Some(value)));
    }
    let invalid = serde_json::json!({"id": "bad", "customer": "c", "currency": "EUR", "items": []});
    writer.write(
        0,
        RawRecord::new(Some("bad"), Some(invalid.to_string().into_bytes())),
    );
    writer.flush();
    let spec = common::sink::SinkSpec::new(
        &test.bootstrap,
        &test.input,
        &test.app_id,
        url,
        "transactional",
        "",
        "",
    )
    .top("poison_policy = \"skip\"\nmax_records_per_txn = 200")
    .sink_lines("topology = \"order-lines\"")
    .tables(&format!(
        "[sink.tables]\norders = \"{orders}\"\norder_lines = \"{lines}\""
    ));
    (spec, orders, lines, expected_lines)
}

fn a_sink_topology_writes_an_order_and_its_lines_to_two_tables_exactly_once() {
    let (broker, url) = (require_broker!(), common::sink::pg_url());
    let mut test = Exact::new(&broker.bootstrap, &url, 2);
    const ORDERS: usize = 3_000;
    let (spec, orders, lines, expected_lines) = order_tables(&mut test, &url, ORDERS);
    let mut sink = spec.spawn("i0");
    let pg = &mut test.pg;
    sink.wait_until(PATIENCE, "some orders", || {
        pg.count(&format!("SELECT count(*) FROM {orders}")) >= 500
    });
    sink.sigkill();
    // The invalid order sits at offset 1500 of partition 0: the first instance may already have
    // skipped (and committed) it before the kill, so its log is kept for the check below.
    let first_log = sink.stderr();
    let mut sink = spec.spawn("i0");
    test.drain_and_stop(&mut sink, ORDERS as i64 + 1);
    // Skipped by either instance (by both if the first one's batch died uncommitted).
    assert!(
        first_log.contains("order bad has no lines")
            || sink.stderr().contains("order bad has no lines"),
        "the invalid order is skipped with its reason"
    );
    let count = |pg: &mut common::sink::Pg, sql: &str| pg.count(sql);
    assert_eq!(
        count(&mut test.pg, &format!("SELECT count(*) FROM {orders}")),
        ORDERS as i64
    );
    assert_eq!(
        count(
            &mut test.pg,
            &format!("SELECT count(DISTINCT id) FROM {orders}")
        ),
        ORDERS as i64,
        "no order twice"
    );
    assert_eq!(
        count(&mut test.pg, &format!("SELECT count(*) FROM {lines}")),
        expected_lines as i64
    );
    assert_eq!(
        count(
            &mut test.pg,
            &format!("SELECT count(*) FROM (SELECT DISTINCT order_id, line FROM {lines}) d")
        ),
        expected_lines as i64,
        "no line twice"
    );
    let total = test.pg.query(&format!(
        "SELECT total::text, item_count FROM {orders} WHERE id = 'o-7'"
    ));
    let row = total.first().expect("order o-7");
    // o-7: 4 lines x 2 x 12.50.
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("100.00".into(), 8)
    );
}

fn verify_checks_each_table_of_a_sink_topology_and_names_what_is_wrong() {
    let (broker, url) = (require_broker!(), common::sink::pg_url());
    let mut test = Exact::new(&broker.bootstrap, &url, 2);
    const ORDERS: usize = 400;
    let (spec, orders, lines, expected_lines) = order_tables(&mut test, &url, ORDERS);
    let mut sink = spec.spawn("i0");
    test.drain_and_stop(&mut sink, ORDERS as i64 + 1);

    let (code, report): (i32, TablesReport) = verify(&spec);
    assert_eq!(code, 0, "{report}");
    assert!(report.passed, "{report}");
    let tables: Vec<_> = report.tables.iter().map(|t| t.table.clone()).collect();
    assert_eq!(tables, [orders.clone(), lines.clone()]);
    let (o, l) = (&report.tables[0], &report.tables[1]);
    assert_eq!(
        (o.rows_in_table, o.expected_rows),
        (ORDERS as u64, ORDERS as u64)
    );
    assert_eq!(
        (l.rows_in_table, l.expected_rows),
        (expected_lines as u64, expected_lines as u64)
    );
    assert_eq!(o.identity, ["id"]);
    assert_eq!(l.identity, ["order_id", "line"]);
    // The invalid order is poison in both tables' reports, expected in neither.
    assert_eq!((o.unmappable.count, l.unmappable.count), (1, 1), "{report}");

    // One line deleted, one order copied.
    test.pg.execute(&format!(
        "DELETE FROM {lines} WHERE order_id = 'o-7' AND line = 2;
         INSERT INTO {orders} SELECT * FROM {orders} WHERE id = 'o-11';"
    ));
    let (code, report): (i32, TablesReport) = verify(&spec);
    assert_eq!(code, 1, "{report}");
    assert!(!report.passed);
    let (o, l) = (&report.tables[0], &report.tables[1]);
    assert_eq!(counts(o), (0, 1, 0, 0), "{report}");
    assert_eq!(counts(l), (1, 0, 0, 0), "{report}");
    assert_eq!(o.duplicated.examples, ["(o-11) in 2 rows"]);
    // o-7 is the 8th order, the 4th of partition 1 (odd n): offset 3.
    assert_eq!(l.lost.examples, [format!("{}[1]@3", test.input)]);
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "FAILED (sink topology order-lines, 2 of 2 tables: {orders}, {lines})"
        )),
        "{text}"
    );
}

trials! {
    a_sink_topology_writes_an_order_and_its_lines_to_two_tables_exactly_once => [Broker, Postgres],
    verify_checks_each_table_of_a_sink_topology_and_names_what_is_wrong => [Broker, Postgres],
}
