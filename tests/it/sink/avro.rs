//! Avro input for the sink's config-only mapping, with the real schema registry: Avro orders in
//! the Confluent wire format become rows (nested fields by path, a list as JSON into a jsonb
//! column); a record that is not Avro is poison (skipped here); `kstage verify --sink` agrees.

use super::common;
use super::verify_table::verify;
use common::orders::order;
use common::raw::{RawRecord, RawWriter};
use common::registry::avro_codecs;
use common::sink::exact::Exact;
use kstage::codec::Part;

fn avro_records_become_rows_and_a_record_that_is_not_avro_is_poison() {
    let (broker, url, registry) = (
        require_broker!(),
        common::sink::pg_url(),
        require_registry!(),
    );
    let mut test = Exact::new(&broker.bootstrap, &url, 1);
    let table = test.table.clone();
    test.pg.execute(&format!(
        "ALTER TABLE {table} ADD COLUMN customer text, ADD COLUMN items jsonb, \
         ADD COLUMN first_qty int"
    ));
    let codecs = avro_codecs(&registry, &[&test.input]);
    let mut writer = RawWriter::new(&broker.bootstrap, &test.input, 1);
    for n in 0..50 {
        let id = format!("o-{n}");
        let value = codecs
            .encode(
                &test.input,
                Part::Value,
                &order(&id, 1 + n % 3, 2, 1_234, "web"),
            )
            .expect("encode an order");
        writer.write(0, RawRecord::new(Some(&id), Some(value)));
    }
    writer.write(0, RawRecord::new(Some("junk"), Some(b"not avro".to_vec())));
    writer.flush();
    let spec = test
        .spec("transactional")
        .top("poison_policy = \"skip\"")
        .column_lines(
            "customer = \"value.customer\"\nitems = \"value.items\"\nfirst_qty = \"value.items.0.qty\"",
        )
        .tables(&format!(
            "[formats.\"{}\"]\nkey = \"string\"\nvalue = \"avro\"\n[schema_registry]\nurl = \"{registry}\"",
            test.input
        ));
    let mut sink = spec.spawn("i0");
    test.drain_and_stop(&mut sink, 51);
    assert!(
        sink.stderr().contains("Skipped a record"),
        "the junk is skipped"
    );
    assert_eq!(test.rows(), 50);
    let row = test.pg.query(&format!(
        "SELECT customer, jsonb_array_length(items), items->0->>'sku', first_qty FROM {table} \
         WHERE id = 'o-4'"
    ));
    let row = row.first().expect("the row of o-4");
    assert_eq!(row.get::<_, String>(0), "customer-of-o-4");
    assert_eq!(row.get::<_, i32>(1), 2, "o-4 has 1 + 4 % 3 lines");
    assert_eq!(row.get::<_, String>(2), "sku-0");
    assert_eq!(
        row.get::<_, i32>(3),
        2,
        "value.items.0.qty indexes the list"
    );

    let (code, report): (i32, kstage::verify::TableReport) = verify(&spec);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (
            report.expected_rows,
            report.rows_in_table,
            report.unmappable.count
        ),
        (50, 50, 1)
    );
}

trials! {
    avro_records_become_rows_and_a_record_that_is_not_avro_is_poison => [Broker, Postgres, Registry],
}
