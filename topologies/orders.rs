//! `orders`: parses JSON orders, validates them, and enriches the valid ones with totals.
//!
//! Input (JSON): `{"id": "o-1", "customer": "c-9", "currency": "EUR",
//! "items": [{"sku": "a", "qty": 2, "unit_price": 9.5}]}`.
//!
//! * A valid order goes to the default output with `item_count`, `subtotal`, `tax`, `total` and
//!   `priority` added (money is summed in integer cents, then written with two decimals).
//! * An order that parses but breaks a rule (no items, a zero quantity, a negative price, a bad
//!   currency code) goes to the `invalid` output unchanged, with a `kstage.invalid.reason` header.
//! * A value that is not an order at all (malformed JSON, a missing field, a tombstone) is a decode
//!   error and follows the stage's poison policy.
//!
//! Parameters: `tax_rate` (default 0.2), `priority_threshold` (order total at or above which the
//! priority is `high`; default 1000).

use apache_avro::AvroSchema;
use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};
use serde::{Deserialize, Serialize};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "JSON orders -> validated and enriched with totals; invalid orders to the `invalid` output";

/// The named output invalid orders go to.
pub const INVALID: &str = "invalid";

/// An order as it arrives. The Avro schema (`kstage.examples.Order`) is derived from it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct Order {
    /// Order id.
    pub id: String,
    /// Customer id.
    pub customer: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Order lines.
    pub items: Vec<Item>,
    /// Sales channel; added in version 2 of the schema, so it has a default and older records
    /// still decode.
    #[serde(default = "default_channel")]
    #[avro(default = "\"web\"")]
    pub channel: String,
}

fn default_channel() -> String {
    "web".to_string()
}

/// One order line.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct Item {
    /// Stock keeping unit.
    pub sku: String,
    /// Quantity, at least 1.
    pub qty: i32,
    /// Price of one unit.
    pub unit_price: f64,
}

/// An order with its computed fields (`kstage.examples.EnrichedOrder`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct EnrichedOrder {
    /// Order id.
    pub id: String,
    /// Customer id.
    pub customer: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Sales channel.
    pub channel: String,
    /// Order lines.
    pub items: Vec<Item>,
    /// Total units over all lines.
    pub item_count: i64,
    /// Sum of qty * unit_price.
    pub subtotal: f64,
    /// subtotal * tax_rate, rounded to cents.
    pub tax: f64,
    /// subtotal + tax.
    pub total: f64,
    /// `high` at or above the priority threshold, else `normal`.
    pub priority: String,
}

/// The topology.
#[derive(Debug, Clone)]
pub struct Orders {
    tax_rate: f64,
    priority_threshold_cents: i64,
}

/// Builds the topology from `tax_rate` and `priority_threshold`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    Ok(Box::new(Orders::from_params(params)?))
}

impl Orders {
    /// Reads `tax_rate` and `priority_threshold`.
    pub fn from_params(params: &TopologyParams) -> Result<Self, String> {
        params.deny_unknown(&["tax_rate", "priority_threshold"])?;
        let tax_rate = params.parse_or("tax_rate", 0.2, "a decimal number from 0 to 1")?;
        if !(0.0..=1.0).contains(&tax_rate) {
            return Err(format!(
                "params.tax_rate: {tax_rate} is not valid; expected 0 to 1"
            ));
        }
        let threshold: f64 =
            params.parse_or("priority_threshold", 1000.0, "a non-negative amount")?;
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(format!(
                "params.priority_threshold: {threshold} is not a non-negative amount"
            ));
        }
        Ok(Orders {
            tax_rate,
            priority_threshold_cents: to_cents(threshold),
        })
    }
}

fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

fn from_cents(cents: i64) -> f64 {
    cents as f64 / 100.0
}

impl Orders {
    /// Checks the order's rules; the error says which one it breaks.
    pub fn check(order: &Order) -> Result<(), String> {
        if order.id.trim().is_empty() {
            return Err("the order has an empty id".into());
        }
        if order.items.is_empty() {
            return Err("the order has no items".into());
        }
        if order.currency.len() != 3 || !order.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "currency {:?} is not an ISO 4217 code",
                order.currency
            ));
        }
        for item in &order.items {
            if item.qty < 1 {
                return Err(format!("item {:?} has quantity {}", item.sku, item.qty));
            }
            if !item.unit_price.is_finite() || item.unit_price < 0.0 {
                return Err(format!("item {:?} has price {}", item.sku, item.unit_price));
            }
        }
        Ok(())
    }

    /// Adds the computed fields to a valid order.
    pub fn enrich(&self, order: Order) -> EnrichedOrder {
        let subtotal: i64 = order
            .items
            .iter()
            .map(|i| i64::from(i.qty) * to_cents(i.unit_price))
            .sum();
        let tax = (subtotal as f64 * self.tax_rate).round() as i64;
        let total = subtotal + tax;
        EnrichedOrder {
            item_count: order.items.iter().map(|i| i64::from(i.qty)).sum(),
            subtotal: from_cents(subtotal),
            tax: from_cents(tax),
            total: from_cents(total),
            priority: if total >= self.priority_threshold_cents {
                "high"
            } else {
                "normal"
            }
            .into(),
            id: order.id,
            customer: order.customer,
            currency: order.currency,
            channel: order.channel,
            items: order.items,
        }
    }
}

impl Topology for Orders {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let value = record
            .value
            .ok_or_else(|| TopologyError::decode("the record has no value (tombstone)"))?;
        let order: Order = serde_json::from_slice(value)
            .map_err(|e| TopologyError::decode(format!("not an order: {e}")))?;
        if let Err(reason) = Self::check(&order) {
            out.emit(
                OutputRecord::from_input(record)
                    .to(INVALID)
                    .header("kstage.invalid.reason", reason.into_bytes()),
            );
            return Ok(());
        }
        let enriched = serde_json::to_vec(&self.enrich(order))
            .map_err(|e| TopologyError::transform(format!("cannot encode the order: {e}")))?;
        out.emit(OutputRecord::from_input(record).value(enriched));
        Ok(())
    }

    fn outputs(&self) -> &[&'static str] {
        &[INVALID]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::topology::{Context, Headers};

    fn run(value: &[u8]) -> Result<Vec<OutputRecord<'_>>, TopologyError> {
        let record = Record {
            key: Some(b"o-1"),
            value: Some(value),
            headers: Headers::none(),
            context: Context {
                topic: "orders",
                partition: 0,
                offset: 1,
                timestamp: None,
            },
        };
        let mut topology = build(&TopologyParams::default()).expect("defaults are valid");
        let mut out = Emitter::new();
        topology.process(&record, &mut out)?;
        Ok(out.into_records())
    }

    #[test]
    fn enriches_a_valid_order_in_cents() {
        let input = br#"{"id":"o-1","customer":"c","currency":"EUR",
            "items":[{"sku":"a","qty":3,"unit_price":0.1},{"sku":"b","qty":1,"unit_price":19.99}]}"#;
        let out = run(input).expect("valid order");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output, "default");
        assert_eq!(out[0].key.as_deref(), Some(&b"o-1"[..]));
        let enriched: EnrichedOrder =
            serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("json");
        assert_eq!(enriched.item_count, 4);
        assert_eq!(
            enriched.channel, "web",
            "a missing channel takes its default"
        );
        assert_eq!(enriched.subtotal, 20.29);
        assert_eq!(enriched.tax, 4.06);
        assert_eq!(enriched.total, 24.35);
        assert_eq!(enriched.priority, "normal");
    }

    #[test]
    fn routes_rule_breakers_to_invalid_with_the_reason() {
        let out = run(br#"{"id":"o-2","customer":"c","currency":"EUR","items":[]}"#).expect("ok");
        assert_eq!(out[0].output, INVALID);
        assert_eq!(out[0].headers[0].0, "kstage.invalid.reason");
        assert_eq!(
            out[0].headers[0].1.as_deref(),
            Some(&b"the order has no items"[..])
        );
        let bad_currency =
            br#"{"id":"o","customer":"c","currency":"eur","items":[{"sku":"a","qty":1,"unit_price":1}]}"#;
        assert_eq!(run(bad_currency).expect("ok")[0].output, INVALID);
    }

    #[test]
    fn malformed_json_is_a_decode_error() {
        let err = run(b"{not json").expect_err("malformed");
        assert_eq!(err.kind, kstage::topology::TopologyErrorKind::Decode);
        let err = run(br#"{"id":"o"}"#).expect_err("missing fields");
        assert!(err.message.contains("missing field"), "{}", err.message);
    }

    #[test]
    fn big_orders_are_high_priority_and_params_are_checked() {
        let input = br#"{"id":"o","customer":"c","currency":"EUR","items":[{"sku":"a","qty":100,"unit_price":10}]}"#;
        let enriched: EnrichedOrder =
            serde_json::from_slice(run(input).expect("ok")[0].value.as_deref().expect("v"))
                .expect("json");
        assert_eq!(enriched.priority, "high");
        let params = TopologyParams::new([("tax_rate".into(), "2".into())].into());
        let error = build(&params).err().expect("out of range");
        assert!(error.contains("params.tax_rate"), "{error}");
    }
}
