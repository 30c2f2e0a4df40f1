//! `order-totals`: a running total per customer of typed orders, emitting each update (Kafka
//! Streams' `groupByKey().aggregate(...)` over typed values), in whatever format the topics are
//! given: `--format IN=string:json` or `--format IN=string:avro --format OUT=string:avro
//! --schema-registry-url URL`.
//!
//! What flows through it: a `kstage.examples.Order` (the `orders` topology's type) keyed by its
//! customer id, decoded with the input topic's codec; the customer's [`CustomerTotal`] in the
//! store `totals` (JSON, keyed by the customer id) gains one order and the order's amount
//! (sum of `qty * unit_price`, in integer cents); the new `kstage.examples.CustomerTotal` goes to
//! the default output keyed by the customer, encoded with the output topic's codec.
//!
//! Invariants: the total is state, so it commits with the order's offset (a crash, an abort or
//! a rebalance never adds an order twice or drops one). State is scoped to the input partition,
//! so all of a customer's orders must be in one partition: the input is keyed by customer, and
//! an order whose key is not its `customer` is invalid (poison policy), as is an order that
//! breaks the `orders` rules. A value that is not an order (or a tombstone, or a missing key)
//! is a decode error (poison policy).

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::AvroSchema;
use kstage::codec::{CodecError, Codecs, Part};
use kstage::state::{stateful, State, StatefulTopology, StoreSpec};
use kstage::topology::{
    Emitter, OutputRecord, Record, StageInfo, Topology, TopologyError, TopologyParams,
    DEFAULT_OUTPUT,
};
use serde::{Deserialize, Serialize};

use crate::topologies::orders::{Order, Orders};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str = "stateful, typed (json or avro): running total per customer of \
                               orders keyed by customer (store `totals`), emits each update";

/// The store's name; its changelog is `<app_id>-totals-changelog`.
pub const STORE: &str = "totals";

/// A customer's running total (`kstage.examples.CustomerTotal`): the output value, and the
/// store's value (as JSON).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, AvroSchema)]
#[avro(namespace = "kstage.examples")]
pub struct CustomerTotal {
    /// Customer id.
    pub customer: String,
    /// Orders counted so far.
    pub orders: i64,
    /// Sum of the orders' amounts (`qty * unit_price` over their lines), in cents.
    pub total_cents: i64,
}

/// The topology: the codecs and routes are the stage's, set in `on_start`.
pub struct OrderTotals {
    codecs: Arc<Codecs>,
    routes: Arc<BTreeMap<String, String>>,
}

/// Builds the topology; it takes no parameters.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&[])?;
    Ok(stateful(OrderTotals {
        codecs: Arc::new(Codecs::plain()),
        routes: Arc::new(BTreeMap::new()),
    }))
}

/// An order's amount in cents: each line's unit price rounded to cents, times its quantity.
pub fn amount_cents(order: &Order) -> i64 {
    order
        .items
        .iter()
        .map(|i| i64::from(i.qty) * (i.unit_price * 100.0).round() as i64)
        .sum()
}

fn codec_error(decoding: bool) -> impl Fn(CodecError) -> TopologyError {
    move |error| match error {
        CodecError::Unavailable(message) => TopologyError::unavailable(message),
        CodecError::Poison(message) if decoding => TopologyError::decode(message),
        CodecError::Poison(message) => TopologyError::transform(message),
    }
}

impl StatefulTopology for OrderTotals {
    fn stores(&self) -> Vec<StoreSpec> {
        vec![StoreSpec::keyed(
            STORE,
            "the customer id, UTF-8",
            "CustomerTotal as JSON: customer, orders, total_cents",
        )]
    }

    fn on_start(&mut self, stage: &StageInfo) -> Result<(), String> {
        self.codecs = Arc::clone(&stage.codecs);
        self.routes = Arc::clone(&stage.outputs);
        Ok(())
    }

    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        state: &mut State<'_>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let topic = record.context.topic;
        let customer: String = self
            .codecs
            .decode(topic, Part::Key, record.key)
            .map_err(codec_error(true))?;
        let order: Order = self
            .codecs
            .decode(topic, Part::Value, record.value)
            .map_err(codec_error(true))?;
        if order.customer != customer {
            return Err(TopologyError::invalid(format!(
                "the order's customer {:?} is not its key {customer:?}: the input must be \
                 keyed by customer",
                order.customer
            )));
        }
        Orders::check(&order).map_err(TopologyError::invalid)?;
        let mut totals = state.store(STORE)?;
        let mut total: CustomerTotal =
            totals
                .get_json(customer.as_bytes())?
                .unwrap_or_else(|| CustomerTotal {
                    customer: customer.clone(),
                    ..CustomerTotal::default()
                });
        total.orders += 1;
        total.total_cents += amount_cents(&order);
        totals.put_json(customer.as_bytes(), &total)?;
        let output = self.routes.get(DEFAULT_OUTPUT).ok_or_else(|| {
            TopologyError::transform("the default output is not routed to a topic")
        })?;
        let key = self
            .codecs
            .encode(output, Part::Key, &customer)
            .map_err(codec_error(false))?;
        let value = self
            .codecs
            .encode(output, Part::Value, &total)
            .map_err(codec_error(false))?;
        let mut update = OutputRecord::new().key(key).value(value);
        update.timestamp = record.context.timestamp;
        out.emit(update);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::state::TestState;
    use kstage::topology::{Context, Headers, TopologyErrorKind};

    fn record<'a>(key: &'a [u8], value: &'a [u8], offset: i64) -> Record<'a> {
        Record {
            key: Some(key),
            value: Some(value),
            headers: Headers::none(),
            context: Context {
                topic: "in",
                partition: 0,
                offset,
                timestamp: Some(offset),
            },
        }
    }

    fn topology() -> OrderTotals {
        OrderTotals {
            codecs: Arc::new(Codecs::plain()),
            routes: Arc::new([("default".to_string(), "out".to_string())].into()),
        }
    }

    fn order(customer: &str, qty: i32, price: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"o","customer":"{customer}","currency":"EUR","items":[{{"sku":"a","qty":{qty},"unit_price":{price}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn emits_each_customers_running_total() {
        let mut totals = topology();
        let mut state = TestState::new(&totals, 0).expect("state");
        let inputs = [("a", 2, "1.25"), ("b", 1, "0.10"), ("a", 3, "0.01")];
        let mut seen = Vec::new();
        for (offset, (customer, qty, price)) in inputs.into_iter().enumerate() {
            let value = order(customer, qty, price);
            let out = state
                .process(
                    &mut totals,
                    &record(customer.as_bytes(), &value, offset as i64),
                )
                .expect("added");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].key.as_deref(), Some(customer.as_bytes()));
            let total: CustomerTotal =
                serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("json");
            seen.push((total.customer, total.orders, total.total_cents));
        }
        assert_eq!(
            seen,
            [
                ("a".to_string(), 1, 250),
                ("b".to_string(), 1, 10),
                ("a".to_string(), 2, 253)
            ]
        );
        let stored: Option<CustomerTotal> = state
            .state()
            .store(STORE)
            .expect("store")
            .get_json(b"a")
            .expect("get");
        assert_eq!(stored.map(|t| t.total_cents), Some(253));
    }

    #[test]
    fn a_key_that_is_not_the_customer_or_a_broken_order_changes_nothing() {
        let mut totals = topology();
        let mut state = TestState::new(&totals, 0).expect("state");
        let value = order("a", 1, "1.00");
        let error = state
            .process(&mut totals, &record(b"b", &value, 0))
            .expect_err("wrong key");
        assert_eq!(error.kind, TopologyErrorKind::Invalid);
        let zero = order("a", 0, "1.00");
        let error = state
            .process(&mut totals, &record(b"a", &zero, 1))
            .expect_err("zero quantity");
        assert_eq!(error.kind, TopologyErrorKind::Invalid);
        let error = state
            .process(&mut totals, &record(b"a", b"{}", 2))
            .expect_err("not an order");
        assert_eq!(error.kind, TopologyErrorKind::Decode);
        let all = state
            .state()
            .store(STORE)
            .expect("store")
            .range(b"", None, 10);
        assert_eq!(all.expect("range"), Vec::new());
    }
}
