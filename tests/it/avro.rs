//! Avro with a real schema registry (Apicurio's Confluent-compatible API): the `orders-avro`
//! topology reads Avro orders in the Confluent wire format and writes enriched orders under a
//! schema of its own; rule breakers go to `invalid` as orders. Checked here: values, routing,
//! provenance headers, schema evolution in both directions, and interoperability with Confluent's
//! Python client.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use common::ledger::{provenance, Destination, Expect, Ledger};
use common::orders::{
    expected_enrichment, order, rule_breakers, EnrichedOrder, Order, OrderV1, OrderV3,
};
use common::orders_stage::{OrdersPipeline, ValueFormat};
use common::raw::RawRecord;
use common::read::{read_topic, ReadRecord};
use common::registry::{avro_codecs, latest_schema, repo_root};
use common::values::{avro_values, decode};
use common::Isolation;
use kstage::codec::{Codecs, Part};
use kstage::topology::headers::SOURCE_TOPIC;

/// Valid orders (normal and high priority, two channels), every kind of rule breaker, tombstones.
fn round_trip_input(codecs: &Codecs, topic: &str, tag: &str) -> Vec<(RawRecord, Expect)> {
    let encode = |o: &Order| {
        codecs
            .encode(topic, Part::Value, o)
            .expect("encode an order")
    };
    let mut records = Vec::new();
    for n in 0..30 {
        let id = format!("{tag}-{n}");
        let channel = if n % 2 == 0 { "web" } else { "mobile" };
        // Totals: 3 x 2 x 199.99 = 1199.94 + tax (high); 3 x 2 x 12.34 = 74.04 + tax (normal).
        let cents = if n % 3 == 0 { 19_999 } else { 1_234 };
        let value = encode(&order(&id, 3, 2, cents, channel));
        records.push((RawRecord::new(Some(&id), Some(value)), Expect::Output));
    }
    for (breaker, reason) in rule_breakers(tag) {
        let key = format!("{tag}-breaker-{reason}");
        records.push((
            RawRecord::new(Some(&key), Some(encode(&breaker))),
            Expect::Invalid(reason),
        ));
    }
    for n in 0..2 {
        let key = format!("{tag}-gone-{n}");
        records.push((RawRecord::new(Some(&key), None), Expect::Tombstone));
    }
    records
}

fn avro_orders_round_trip_through_the_registry() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = OrdersPipeline::new(&broker, 2);
    let codecs = avro_codecs(
        &url,
        &[pipeline.input(), pipeline.output(), &pipeline.invalid],
    );
    let mut ledger = Ledger::new(pipeline.input());
    let mut writer = pipeline.writer();
    pipeline.write(
        &mut writer,
        &mut ledger,
        round_trip_input(&codecs, pipeline.input(), "rt"),
    );

    pipeline.run_to_end(
        &pipeline.stage(ValueFormat::Avro, Some(&url)),
        &writer.end_offsets(),
    );

    let accounting = pipeline.account(
        &ledger,
        Isolation::ReadCommitted,
        &avro_values(&codecs, &pipeline),
    );
    accounting.assert_exactly_once("orders-avro output (read_committed)");
    assert_eq!(
        accounting.totals[&Destination::Output],
        32,
        "30 orders and 2 tombstones"
    );
    assert_eq!(accounting.totals[&Destination::Invalid], 5, "one per rule");

    // Provenance headers name the input topic and the record's own partition and offset (the
    // ledger matched every record by them), and the priorities and channels both occur.
    let output = read_topic(
        &broker.bootstrap,
        pipeline.output(),
        Isolation::ReadCommitted,
    );
    let enriched: Vec<EnrichedOrder> = output
        .iter()
        .filter(|r| !r.tombstone)
        .map(|r| decode(&codecs, pipeline.output(), &r.value).expect("decode output"))
        .collect();
    let count = |f: &dyn Fn(&EnrichedOrder) -> bool| enriched.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(&|e| e.priority == "high"),
        10,
        "every third order is high priority"
    );
    assert_eq!(count(&|e| e.channel == "mobile"), 15, "channels are kept");
    for record in &output {
        let (topic, at) = provenance(record).expect("provenance headers");
        assert_eq!(topic, pipeline.input());
        assert_eq!(
            ledger.entries[&at]
                .0
                .key
                .as_deref()
                .map(String::from_utf8_lossy),
            record.key.as_deref().map(Into::into),
            "provenance of {record:?}"
        );
    }

    // The stage registered its schemas under the topic-name strategy.
    let schema_name = |topic: &str| {
        let schema = latest_schema(&url, &format!("{topic}-value"))
            .unwrap_or_else(|| panic!("no schema registered for {topic}-value"));
        let name = schema["name"].as_str().unwrap_or_default();
        let namespace = schema["namespace"].as_str().unwrap_or_default();
        if name.contains('.') {
            name.to_string()
        } else {
            format!("{namespace}.{name}")
        }
    };
    assert_eq!(
        schema_name(pipeline.output()),
        "kstage.examples.EnrichedOrder"
    );
    assert_eq!(schema_name(&pipeline.invalid), "kstage.examples.Order");
    assert!(
        pipeline.settled(),
        "an output partition has an open transaction"
    );
}

fn provenance_headers_can_be_turned_off() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = OrdersPipeline::new(&broker, 1);
    let codecs = avro_codecs(
        &url,
        &[pipeline.input(), pipeline.output(), &pipeline.invalid],
    );
    let mut writer = pipeline.writer();
    let mut ledger = Ledger::new(pipeline.input());
    pipeline.write(
        &mut writer,
        &mut ledger,
        round_trip_input(&codecs, pipeline.input(), "np"),
    );
    let spec = pipeline
        .stage(ValueFormat::Avro, Some(&url))
        .arg("--provenance-headers", "false");
    pipeline.run_to_end(&spec, &writer.end_offsets());

    let [output, invalid, _] = pipeline.read_all(Isolation::ReadCommitted);
    assert_eq!((output.len(), invalid.len()), (32, 5));
    for record in output.iter().chain(&invalid) {
        let names: Vec<&str> = record.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("kstage.source.")),
            "record [{}]@{} carries provenance headers {names:?} with --provenance-headers false",
            record.partition,
            record.offset
        );
    }
    // Without provenance, match by key: every order arrives enriched.
    let by_key: BTreeMap<String, &ReadRecord> = output
        .iter()
        .map(|r| (r.key.clone().expect("a key"), r))
        .collect();
    for (input, expect) in ledger.entries.values() {
        if *expect != Expect::Output {
            continue;
        }
        let key = String::from_utf8_lossy(input.key.as_deref().expect("a key")).into_owned();
        let written: Order = decode(
            &codecs,
            pipeline.input(),
            input.value.as_deref().expect("value"),
        )
        .expect("decode input");
        let got: EnrichedOrder =
            decode(&codecs, pipeline.output(), &by_key[&key].value).expect("decode output");
        assert_eq!(got, expected_enrichment(&written));
    }
    assert!(output.iter().all(|r| r.header(SOURCE_TOPIC).is_none()));
}

fn schema_evolution_in_both_directions() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = OrdersPipeline::new(&broker, 2);
    let codecs = avro_codecs(
        &url,
        &[pipeline.input(), pipeline.output(), &pipeline.invalid],
    );
    let input = pipeline.input();
    // One client per writer version: the converter caches one schema per subject and client.
    let (writer_v1, writer_v3) = (avro_codecs(&url, &[input]), avro_codecs(&url, &[input]));
    let mut writer = pipeline.writer();
    let mut expected = BTreeMap::new();
    let mut schema_ids = BTreeMap::new();
    // Older writers (no `channel`: the reader's default "web" applies) and newer writers (an
    // extra `coupon` the reader does not know: dropped), interleaved on both partitions.
    for n in 0..20 {
        let base = order(&format!("ev-{n}"), 2, 1 + n % 3, 1_050, "kiosk");
        let value = if n % 2 == 0 {
            let v1 = OrderV1 {
                id: base.id.clone(),
                customer: base.customer.clone(),
                currency: base.currency.clone(),
                items: base.items.clone(),
            };
            expected.insert(
                base.id.clone(),
                Order {
                    channel: "web".into(),
                    ..base.clone()
                },
            );
            writer_v1
                .encode(input, Part::Value, &v1)
                .expect("encode v1")
        } else {
            let v3 = OrderV3 {
                id: base.id.clone(),
                customer: base.customer.clone(),
                currency: base.currency.clone(),
                items: base.items.clone(),
                channel: base.channel.clone(),
                coupon: format!("SAVE{n}"),
            };
            expected.insert(base.id.clone(), base.clone());
            writer_v3
                .encode(input, Part::Value, &v3)
                .expect("encode v3")
        };
        schema_ids.insert(n % 2, value[1..5].to_vec());
        writer.write(n % 2, RawRecord::new(Some(&base.id), Some(value)));
    }
    writer.flush();
    assert_ne!(
        schema_ids[&0], schema_ids[&1],
        "the two writer versions have distinct schema ids"
    );

    pipeline.run_to_end(
        &pipeline.stage(ValueFormat::Avro, Some(&url)),
        &writer.end_offsets(),
    );

    let output = read_topic(
        &broker.bootstrap,
        pipeline.output(),
        Isolation::ReadCommitted,
    );
    let mut seen = BTreeMap::new();
    for record in &output {
        let got: EnrichedOrder = decode(&codecs, pipeline.output(), &record.value).expect("decode");
        let want = expected_enrichment(&expected[&got.id]);
        assert_eq!(got, want, "evolved order {}", got.id);
        *seen.entry(got.id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), expected.len(), "every order once: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    assert_eq!(
        output
            .iter()
            .filter(
                |r| decode::<EnrichedOrder>(&codecs, pipeline.output(), &r.value)
                    .map(|e| e.channel == "web")
                    .unwrap_or(false)
            )
            .count(),
        10,
        "v1 orders take the default channel"
    );
}

/// The venv python of `scripts/python-env.sh`; panics without one (the harness ignores the test
/// unless `KSTAGE_TEST_REQUIRE_BROKER=1`).
fn test_python() -> String {
    match std::env::var("KSTAGE_TEST_PYTHON") {
        Ok(python) if !python.trim().is_empty() => python.trim().to_string(),
        _ => panic!(
            "KSTAGE_TEST_PYTHON is not set: export KSTAGE_TEST_PYTHON=\"$(scripts/python-env.sh)\""
        ),
    }
}

/// Runs `tests/interop/avro_interop.py ARGS` and parses its JSON answer.
fn interop(python: &str, args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("tests/interop/avro_interop.py");
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "avro_interop.py {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("avro_interop.py printed no JSON ({e}); stderr: {stderr}"))
}

/// Python's `consume` of `count` records from `topic`, decoded with the registry at `url`.
fn interop_consume(
    python: &str,
    bootstrap: &str,
    url: &str,
    topic: &str,
    count: usize,
) -> serde_json::Value {
    let count = count.to_string();
    interop(
        python,
        &[
            "consume",
            "--bootstrap",
            bootstrap,
            "--registry",
            url,
            "--topic",
            topic,
            "--count",
            &count,
        ],
    )
}

fn confluent_python_client_interoperates() {
    let broker = require_broker!();
    let url = require_registry!();
    let python = test_python();
    let pipeline = OrdersPipeline::new(&broker, 2);
    let codecs = avro_codecs(
        &url,
        &[pipeline.input(), pipeline.output(), &pipeline.invalid],
    );

    // Python writes the orders (its own schema text, registered by its serializer).
    let mut orders: Vec<Order> = (0..6)
        .map(|n| order(&format!("py-{n}"), 1 + n, 3, 4_999, ["web", "app"][n % 2]))
        .collect();
    orders[5].currency = "euro".into(); // a rule breaker
    let request: Vec<serde_json::Value> = orders
        .iter()
        .enumerate()
        .map(|(n, o)| serde_json::json!({ "key": o.id, "partition": n % 2, "value": o }))
        .collect();
    let request = serde_json::to_string(&request).expect("JSON");
    let bootstrap = broker.bootstrap.as_str();
    let produced = interop(
        &python,
        &[
            "produce",
            "--bootstrap",
            bootstrap,
            "--registry",
            &url,
            "--topic",
            pipeline.input(),
            "--orders",
            &request,
        ],
    );
    assert_eq!(
        produced["written"].as_array().map(Vec::len),
        Some(6),
        "{produced}"
    );
    // Python's records decode with this test's reader too: the same wire format.
    let input = read_topic(bootstrap, pipeline.input(), Isolation::ReadCommitted);
    for record in &input {
        let got: Order = decode(&codecs, pipeline.input(), &record.value).expect("decode Python's");
        assert!(orders.contains(&got), "Python wrote {got:?}");
    }

    let ends = common::read::end_offsets(bootstrap, pipeline.input(), Isolation::ReadCommitted);
    pipeline.run_to_end(&pipeline.stage(ValueFormat::Avro, Some(&url)), &ends);

    // Python decodes the stage's outputs with the writer schemas it fetches by id.
    let expected: BTreeMap<&str, EnrichedOrder> = orders[..5]
        .iter()
        .map(|o| (o.id.as_str(), expected_enrichment(o)))
        .collect();
    let read = interop_consume(&python, bootstrap, &url, pipeline.output(), 5);
    let records = read["records"].as_array().expect("records");
    assert_eq!(records.len(), 5, "{read}");
    for record in records {
        let got: EnrichedOrder =
            serde_json::from_value(record["value"].clone()).unwrap_or_else(|e| {
                panic!("Python's decoding of {record} is not an EnrichedOrder: {e}")
            });
        assert_eq!(
            Some(&got),
            expected.get(got.id.as_str()),
            "as Python decoded it"
        );
        assert_eq!(record["key"].as_str(), Some(got.id.as_str()));
        assert_eq!(
            record["headers"][SOURCE_TOPIC].as_str(),
            Some(pipeline.input())
        );
    }
    let read = interop_consume(&python, bootstrap, &url, &pipeline.invalid, 1);
    let invalid: Order = serde_json::from_value(read["records"][0]["value"].clone())
        .unwrap_or_else(|e| panic!("Python's decoding of the invalid order: {e}: {read}"));
    assert_eq!(invalid, orders[5]);
}

trials! {
    avro_orders_round_trip_through_the_registry => [Broker, Registry],
    provenance_headers_can_be_turned_off => [Broker, Registry],
    schema_evolution_in_both_directions => [Broker, Registry],
    confluent_python_client_interoperates => [Broker, Registry, Python],
}
