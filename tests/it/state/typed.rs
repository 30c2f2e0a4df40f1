//! The typed stateful topology `order-totals` against the real broker: typed orders keyed by
//! customer in, each customer's running `CustomerTotal` out, in JSON and in Avro through the
//! schema registry. The check reads the output read_committed and compares, per customer, the
//! update sequence (orders 1, 2, ..., n in order) and the last total against the test's own sum
//! in integer cents. JSON runs through crashes at the fail point between the changelog send and
//! the commit; the negative control runs the same crashes with the state written before the
//! commit (`KSTAGE_BROKEN_MODE=state_before_commit`) and must over-count.

use std::collections::BTreeMap;

use apache_avro::AvroSchema;
use kstage::codec::{Codecs, Part};
use serde::{Deserialize, Serialize};

use crate::common;

use common::orders::{Item, Order};
use common::orders_stage::stop_cleanly;
use common::raw::{RawRecord, RawWriter};
use common::read::{read_topic, Isolation};
use common::registry::{avro_codecs, latest_schema};
use common::state::StatePipeline;

/// `kstage.examples.CustomerTotal` as a client declares it (independently of `topologies/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
struct CustomerTotal {
    customer: String,
    orders: i64,
    total_cents: i64,
}

/// The true orders and total (cents) per customer.
type Truth = BTreeMap<String, (i64, i64)>;

/// Writes `orders` random orders over `customers` customers (`c<n>`, always in partition
/// `n % partitions`), each value encoded by `encode`; returns the truth.
fn write_orders(
    writer: &mut RawWriter,
    orders: usize,
    customers: usize,
    encode: &dyn Fn(&Order) -> Vec<u8>,
) -> Truth {
    let partitions = writer.partitions() as usize;
    let mut truth = Truth::new();
    for i in 0..orders {
        let n = rand::random_range(0..customers);
        let customer = format!("c{n}");
        let lines: Vec<(i32, i64)> = (0..rand::random_range(1..=3))
            .map(|_| (rand::random_range(1..=5), rand::random_range(1..=50_000)))
            .collect();
        let order = Order {
            id: format!("o{i}"),
            customer: customer.clone(),
            currency: "EUR".to_string(),
            items: lines
                .iter()
                .enumerate()
                .map(|(l, &(qty, cents))| Item {
                    sku: format!("sku-{l}"),
                    qty,
                    unit_price: cents as f64 / 100.0,
                })
                .collect(),
            channel: "web".to_string(),
        };
        let entry = truth.entry(customer.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += lines
            .iter()
            .map(|&(qty, cents)| i64::from(qty) * cents)
            .sum::<i64>();
        writer.write(
            (n % partitions) as i32,
            RawRecord::new(Some(&customer), Some(encode(&order))),
        );
    }
    writer.flush();
    truth
}

/// A customer whose last update is wrong: (customer, true (orders, cents), last seen).
type Wrong = (String, (i64, i64), (i64, i64));

/// What the check found: customers whose last total is wrong (above the truth: over-counted),
/// and customers whose updates are not orders 1..n in order.
#[derive(Debug, Default)]
struct Report {
    wrong: Vec<Wrong>,
    over_counted: usize,
    not_sequential: usize,
    updates: usize,
}

impl Report {
    fn exact(&self) -> bool {
        self.wrong.is_empty() && self.not_sequential == 0
    }
}

/// Reads `output` with `isolation`, decoding each value with `codecs`, and checks it.
fn check(
    bootstrap: &str,
    output: &str,
    isolation: Isolation,
    codecs: &Codecs,
    truth: &Truth,
) -> Report {
    let mut updates: BTreeMap<String, Vec<CustomerTotal>> = BTreeMap::new();
    let records = read_topic(bootstrap, output, isolation);
    let mut report = Report {
        updates: records.len(),
        ..Report::default()
    };
    for record in records {
        let total: CustomerTotal = codecs
            .decode(output, Part::Value, Some(&record.value))
            .unwrap_or_else(|e| panic!("an output is not a CustomerTotal: {e}: {record:?}"));
        assert_eq!(
            record.key.as_deref(),
            Some(total.customer.as_str()),
            "an update is keyed by its customer"
        );
        updates
            .entry(total.customer.clone())
            .or_default()
            .push(total);
    }
    for (customer, &want) in truth {
        let seen = updates.remove(customer).unwrap_or_default();
        let last = seen.last().map_or((0, 0), |t| (t.orders, t.total_cents));
        if last != want {
            report.wrong.push((customer.clone(), want, last));
            if last.1 > want.1 {
                report.over_counted += 1;
            }
        }
        if !seen.iter().map(|t| t.orders).eq(1..=want.0) {
            report.not_sequential += 1;
        }
    }
    for (customer, seen) in updates {
        let last = seen.last().map_or((0, 0), |t| (t.orders, t.total_cents));
        report.wrong.push((customer, (0, 0), last));
    }
    report
}

/// Avro on both sides through the registry, one clean run: the totals are exact, and the
/// stage registered `kstage.examples.CustomerTotal` for the output.
fn order_totals_are_exact_in_avro_through_the_registry() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = StatePipeline::new(&broker, 2, &["totals"]);
    let p = &pipeline.pipeline;
    let codecs = avro_codecs(&url, &[&p.input, &p.output]);
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let encode = |o: &Order| codecs.encode(&p.input, Part::Value, o).expect("encode");
    let truth = write_orders(&mut writer, 3_000, 100, &encode);
    let ends = writer.end_offsets();
    let spec = pipeline
        .stage("order-totals")
        .arg("--format", &format!("{}=string:avro", p.input))
        .arg("--format", &format!("{}=string:avro", p.output))
        .arg("--schema-registry-url", &url)
        .arg("--metrics-address", "off");
    let mut stage = spec.spawn();
    p.wait_drained(&mut stage, &ends);
    stop_cleanly(&mut stage);
    let report = check(
        &p.bootstrap,
        &p.output,
        Isolation::ReadCommitted,
        &codecs,
        &truth,
    );
    assert!(report.exact(), "order totals (avro): {report:?}");
    assert_eq!(report.updates, 3_000, "one update per order");
    let schema = latest_schema(&url, &format!("{}-value", p.output)).expect("output schema");
    assert_eq!(
        schema["name"]
            .as_str()
            .map(|n| n.trim_start_matches("kstage.examples.")),
        Some("CustomerTotal"),
        "{schema}"
    );
}

#[cfg(feature = "fault-injection")]
pub mod crashes {
    use super::*;
    use common::stage::{exit_code, exit_signal};
    use common::PATIENCE;

    /// JSON on both sides; the stage crashes `CRASHES` times at the fail point between the
    /// changelog send and the commit (after a random number of passes), then drains.
    fn totals_across_crashes_before_commit(broken: Option<&str>) -> Report {
        const CRASHES: usize = 2;
        let broker = require_broker!();
        let pipeline = StatePipeline::new(&broker, 3, &["totals"]);
        let p = &pipeline.pipeline;
        let codecs = Codecs::plain();
        let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
        let encode = |o: &Order| serde_json::to_vec(o).expect("json");
        let truth = write_orders(&mut writer, 4_000, 200, &encode);
        let ends = writer.end_offsets();
        let offsets = p.group_offsets(false);
        let mut base = pipeline
            .stage_with_batch("order-totals", 300)
            .arg("--format", &format!("{}=string:json", p.input))
            .arg("--metrics-address", "off");
        if let Some(mode) = broken {
            base = base.env("KSTAGE_BROKEN_MODE", mode);
        }
        for crash in 0..CRASHES {
            let skip = rand::random_range(1..=4);
            let failpoints = format!("kstage::state_before_commit={skip}*off->return");
            let mut stage = base.clone().env("FAILPOINTS", &failpoints).spawn();
            let Some(status) =
                stage.wait_until_or_exit(PATIENCE, "the stage crashes before a commit", || {
                    offsets.caught_up(&ends)
                })
            else {
                stage.fail(&format!("the input drained before crash {crash}"));
            };
            if exit_signal(status).is_none() && exit_code(status).is_none_or(|code| code <= 2) {
                stage.fail(&format!("expected a fail-point crash, got {status}"));
            }
        }
        let mut stage = base.spawn();
        p.wait_drained(&mut stage, &ends);
        stop_cleanly(&mut stage);
        check(
            &p.bootstrap,
            &p.output,
            Isolation::ReadCommitted,
            &codecs,
            &truth,
        )
    }

    fn order_totals_are_exact_in_json_across_crashes_before_commit() {
        let report = totals_across_crashes_before_commit(None);
        assert!(report.exact(), "order totals (json): {report:?}");
    }

    /// Negative control: with the local store written before the commit, the crashed
    /// transactions' orders are added again after the restart.
    fn state_written_before_the_commit_over_counts_order_totals() {
        let report = totals_across_crashes_before_commit(Some("state_before_commit"));
        assert!(
            report.over_counted > 0,
            "state_before_commit should over-count: {report:?}"
        );
    }

    trials! {
        order_totals_are_exact_in_json_across_crashes_before_commit => [Broker],
        state_written_before_the_commit_over_counts_order_totals => [Broker],
    }
}

trials! {
    order_totals_are_exact_in_avro_through_the_registry => [Broker, Registry],
}
