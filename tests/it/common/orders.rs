//! The `orders-avro` topology's record types as a client of the stage would declare them (written
//! here independently of `topologies/`), the versions of `Order` the evolution tests write, and the
//! enrichment the stage is expected to apply, computed in integer cents.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

/// `kstage.examples.Order` as the stage reads it (its current version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub currency: String,
    pub items: Vec<Item>,
    #[avro(default = "\"web\"")]
    pub channel: String,
}

/// `kstage.examples.Item`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct Item {
    pub sku: String,
    pub qty: i32,
    pub unit_price: f64,
}

/// Version 1 of `kstage.examples.Order`: before `channel` was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
#[serde(rename = "Order")]
pub struct OrderV1 {
    pub id: String,
    pub customer: String,
    pub currency: String,
    pub items: Vec<Item>,
}

/// A later `kstage.examples.Order` than the stage knows: an extra `coupon` field with a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
#[serde(rename = "Order")]
pub struct OrderV3 {
    pub id: String,
    pub customer: String,
    pub currency: String,
    pub items: Vec<Item>,
    #[avro(default = "\"web\"")]
    pub channel: String,
    #[avro(default = "\"\"")]
    pub coupon: String,
}

/// `kstage.examples.EnrichedOrder`, what the stage writes for a valid order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct EnrichedOrder {
    pub id: String,
    pub customer: String,
    pub currency: String,
    pub channel: String,
    pub items: Vec<Item>,
    pub item_count: i64,
    pub subtotal: f64,
    pub tax: f64,
    pub total: f64,
    pub priority: String,
}

/// A valid order: `lines` lines of `qty` units at `cents` cents each.
pub fn order(id: &str, lines: usize, qty: i32, cents: i64, channel: &str) -> Order {
    Order {
        id: id.to_string(),
        customer: format!("customer-of-{id}"),
        currency: "EUR".to_string(),
        items: (0..lines)
            .map(|n| Item {
                sku: format!("sku-{n}"),
                qty,
                unit_price: cents as f64 / 100.0,
            })
            .collect(),
        channel: channel.to_string(),
    }
}

/// What the stage should make of a valid `order` (tax 20 %, priority `high` from 1000.00 on).
pub fn expected_enrichment(order: &Order) -> EnrichedOrder {
    let subtotal: i64 = order
        .items
        .iter()
        .map(|i| i64::from(i.qty) * (i.unit_price * 100.0).round() as i64)
        .sum();
    let tax = (subtotal as f64 * 0.2).round() as i64;
    let total = subtotal + tax;
    EnrichedOrder {
        id: order.id.clone(),
        customer: order.customer.clone(),
        currency: order.currency.clone(),
        channel: order.channel.clone(),
        items: order.items.clone(),
        item_count: order.items.iter().map(|i| i64::from(i.qty)).sum(),
        subtotal: subtotal as f64 / 100.0,
        tax: tax as f64 / 100.0,
        total: total as f64 / 100.0,
        priority: if total >= 100_000 { "high" } else { "normal" }.to_string(),
    }
}

/// The rule-breaking orders the stage routes to `invalid`, each with (a part of) the reason it
/// should give.
pub fn rule_breakers(prefix: &str) -> Vec<(Order, &'static str)> {
    let base = |n: usize| order(&format!("{prefix}-bad-{n}"), 1, 1, 500, "web");
    let mut no_items = base(0);
    no_items.items.clear();
    let mut zero_qty = base(1);
    zero_qty.items[0].qty = 0;
    let mut negative_price = base(2);
    negative_price.items[0].unit_price = -1.5;
    let mut bad_currency = base(3);
    bad_currency.currency = "eur".to_string();
    let mut empty_id = base(4);
    empty_id.id = String::new();
    vec![
        (no_items, "no items"),
        (zero_qty, "quantity 0"),
        (negative_price, "price -1.5"),
        (bad_currency, "ISO 4217"),
        (empty_id, "empty id"),
    ]
}
