//! The `order-totals` side of the stateful fixture: typed orders keyed by customer (each
//! customer always in one partition), the true orders and total in cents per customer computed
//! here, and the check of the output: per customer the updates count orders 1, 2, ..., n in
//! order and the last total is the true one.

use std::collections::BTreeMap;

use apache_avro::AvroSchema;
use kstage::codec::{Codecs, Part};
use serde::{Deserialize, Serialize};

use crate::common::orders::{Item, Order};
use crate::common::raw::{RawRecord, RawWriter};
use crate::common::read::{read_topic, Isolation};

/// `kstage.examples.CustomerTotal` as a client declares it (independently of `topologies/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct CustomerTotal {
    pub customer: String,
    pub orders: i64,
    pub total_cents: i64,
}

/// The true orders and total (cents) per customer.
pub type Truth = BTreeMap<String, (i64, i64)>;

/// Writes `orders` random orders over `customers` customers (`c<n>`, always in partition
/// `n % partitions`), each value encoded by `encode`; returns the truth.
pub fn write_orders(
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
pub type Wrong = (String, (i64, i64), (i64, i64));

/// What the check found: customers whose last total is wrong (above the truth: over-counted),
/// and customers whose updates are not orders 1..n in order.
#[derive(Debug, Default)]
pub struct Report {
    pub wrong: Vec<Wrong>,
    pub over_counted: usize,
    pub not_sequential: usize,
    pub updates: usize,
}

impl Report {
    pub fn exact(&self) -> bool {
        self.wrong.is_empty() && self.not_sequential == 0
    }
}

/// Reads `output` with `isolation`, decoding each value with `codecs`, and checks it.
pub fn check(
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
