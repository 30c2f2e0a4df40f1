//! `kstage verify --expect order-totals`: the output of the `order-totals` topology (JSON
//! values), checked against the running totals its input says it must have, computed here from
//! the input alone (no code shared with the topology).
//!
//! ```text
//!   input (read_committed, offset order per partition)
//!     └─ each valid order (rules below), in its partition's order ──► per customer the list
//!        of expected totals: (1, a1), (2, a1 + a2), ..., (n, a1 + ... + an)
//!   output (read_committed, offset order per partition), keyed by customer
//!     └─ per customer the list of (orders, total_cents) emitted
//!   compare per customer: equal lists (missing: none emitted; duplicated: an update repeated;
//!   wrong: anything else); a customer in the output only is unexpected
//! ```
//!
//! The rules, restated from the topology's documentation: the key is the customer id (UTF-8);
//! the value is a JSON object with a non-blank string `id`, a string `customer` equal to the
//! key, a `currency` of three upper-case ASCII letters, and a non-empty array `items` whose
//! entries have a string `sku`, an integer `qty` of at least 1 (32-bit) and a number
//! `unit_price` of at least 0; `channel`, if present, is a string. An order's amount is the sum
//! over its items of `qty` times the unit price rounded to whole cents. Any other input record
//! is poison for the stage (skipped, dead-lettered or fatal by its policy): it adds nothing
//! here either. All of a customer's orders are in one partition (the input is keyed), so the
//! expected order of a customer's updates is its records' offset order.
//!
//! Avro values (`--format IN=string:avro`) are not decoded here: every input then breaks the
//! rules and the check fails with every output unexpected.

use std::collections::BTreeMap;

use serde_json::Value;

use super::stateful::{StatefulReport, TimedRecord};

/// One customer total: (orders, total_cents).
type Total = (i64, i64);

/// The amount of an order in cents if `value` is a valid order of `customer`.
fn order_amount(customer: &str, value: &[u8]) -> Option<i64> {
    let order: Value = serde_json::from_slice(value).ok()?;
    let text = |field: &str| order.get(field).and_then(Value::as_str);
    if text("id")?.trim().is_empty() || text("customer")? != customer {
        return None;
    }
    let currency = text("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    if order.get("channel").is_some_and(|c| !c.is_string()) {
        return None;
    }
    let items = order.get("items")?.as_array()?;
    if items.is_empty() {
        return None;
    }
    let mut cents = 0i64;
    for item in items {
        item.get("sku")?.as_str()?;
        let qty = i32::try_from(item.get("qty")?.as_i64()?).ok()?;
        let price = item.get("unit_price")?.as_f64()?;
        if qty < 1 || price < 0.0 {
            return None;
        }
        // The price rounded to cents; `as` saturates (a price beyond i64 cents is absurd, and
        // saturates the same way in the topology).
        #[allow(clippy::cast_possible_truncation)]
        let unit_cents = (price * 100.0).round() as i64;
        cents = cents.saturating_add(i64::from(qty).saturating_mul(unit_cents));
    }
    Some(cents)
}

/// Per customer, the totals its valid orders must produce, in order.
fn expected(input: &[TimedRecord]) -> BTreeMap<String, Vec<Total>> {
    let mut expected: BTreeMap<String, Vec<Total>> = BTreeMap::new();
    for record in input {
        let Some(customer) = record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            continue;
        };
        let Some(amount) = record
            .value
            .as_deref()
            .and_then(|v| order_amount(customer, v))
        else {
            continue;
        };
        let totals = expected.entry(customer.to_string()).or_default();
        let (orders, cents) = totals.last().copied().unwrap_or((0, 0));
        totals.push((orders + 1, cents + amount));
    }
    expected
}

/// An update as emitted: (customer, total), if it is one.
fn update(record: &TimedRecord) -> Option<(String, Total)> {
    let value: Value = serde_json::from_slice(record.value.as_deref()?).ok()?;
    let customer = value.get("customer")?.as_str()?.to_string();
    let total = (
        value.get("orders")?.as_i64()?,
        value.get("total_cents")?.as_i64()?,
    );
    (record.key.as_deref() == Some(customer.as_bytes())).then_some((customer, total))
}

/// Checks `output` against `input` (each in offset order per partition).
pub(super) fn check(input: &[TimedRecord], output: &[TimedRecord]) -> StatefulReport {
    let expected = expected(input);
    let mut report = StatefulReport {
        expected: expected.len(),
        outputs: output.len(),
        ..StatefulReport::default()
    };
    let mut seen: BTreeMap<String, Vec<Total>> = BTreeMap::new();
    for record in output {
        match update(record) {
            Some((customer, total)) => seen.entry(customer).or_default().push(total),
            None => {
                report.unexpected += 1;
                report.example(format!(
                    "output {}@{} is not a CustomerTotal keyed by its customer",
                    record.partition, record.offset
                ));
            }
        }
    }
    for (customer, want) in &expected {
        let Some(got) = seen.remove(customer) else {
            report.missing += 1;
            report.example(format!("customer {customer:?}: no update"));
            continue;
        };
        if got == *want {
            continue;
        }
        let mut unique = got.clone();
        unique.dedup();
        if unique == *want {
            report.duplicated += 1;
        } else {
            report.wrong += 1;
        }
        report.example(format!(
            "customer {customer:?}: {} updates ending at {:?}, expected {} ending at {:?}",
            got.len(),
            got.last(),
            want.len(),
            want.last()
        ));
    }
    for (customer, got) in seen {
        report.unexpected += 1;
        report.example(format!(
            "customer {customer:?}: {} updates, but no valid order",
            got.len()
        ));
    }
    report
}
