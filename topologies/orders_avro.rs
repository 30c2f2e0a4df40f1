//! `orders-avro`: the `orders` transform as a typed topology, for Avro (or any configured
//! format): `kstage.examples.Order` in, `kstage.examples.EnrichedOrder` out (a different schema),
//! rule breakers to the `invalid` output as `Order` with a `kstage.invalid.reason` header.
//!
//! Run it with Avro values on both sides:
//! `--format orders=string:avro --format orders-enriched=string:avro
//!  --format orders-invalid=string:avro --schema-registry-url URL`.
//! A record that is not an Order (wrong magic byte, unknown schema id, a body that does not match
//! its schema) is a decode error and follows the poison policy, and so is a record without a
//! key (orders are keyed by id). Tombstones are forwarded.

use kstage::topology::{
    typed, Topology, TopologyError, TopologyParams, TypedEmitter, TypedRecord, TypedTopology,
    DEFAULT_OUTPUT,
};

use crate::topologies::orders::{Order, Orders, INVALID};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "typed orders (Avro with a schema registry, or any format) -> enriched orders; invalid ones to `invalid`";

/// The typed orders transform.
pub struct OrdersAvro(Orders);

/// Builds the topology; same parameters as `orders`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    Ok(typed(OrdersAvro(Orders::from_params(params)?)))
}

impl TypedTopology for OrdersAvro {
    /// Orders are keyed by id: a record without a key is a decode error.
    type Key = String;
    type Value = Order;

    fn process(
        &mut self,
        record: TypedRecord<'_, String, Order>,
        out: &mut TypedEmitter<'_>,
    ) -> Result<(), TopologyError> {
        let key = Some(&record.key);
        let Some(order) = record.value else {
            return out.emit_tombstone(DEFAULT_OUTPUT, key);
        };
        match Orders::check(&order) {
            Ok(()) => out.emit(DEFAULT_OUTPUT, key, &self.0.enrich(order)),
            Err(reason) => out.emit_with_headers(
                INVALID,
                key,
                Some(&order),
                vec![("kstage.invalid.reason".to_string(), reason.into_bytes())],
            ),
        }
    }

    fn outputs(&self) -> &[&'static str] {
        &[INVALID]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kstage::codec::Codecs;
    use kstage::topology::{Context, Emitter, Headers, Record, StageInfo};

    use super::*;
    use crate::topologies::orders::EnrichedOrder;

    fn run(value: Option<&[u8]>) -> Result<Vec<kstage::topology::OutputRecord<'_>>, TopologyError> {
        let mut topology = build(&TopologyParams::default()).expect("defaults");
        let outputs: BTreeMap<String, String> = [
            ("default".to_string(), "out".to_string()),
            ("invalid".to_string(), "bad".to_string()),
        ]
        .into();
        let stage = StageInfo {
            codecs: Arc::new(Codecs::plain()),
            outputs: Arc::new(outputs),
        };
        topology.on_start(&stage).expect("start");
        let record = Record {
            key: Some(b"o-1"),
            value,
            headers: Headers::none(),
            context: Context {
                topic: "in",
                partition: 0,
                offset: 0,
                timestamp: None,
            },
        };
        let mut out = Emitter::new();
        topology.process(&record, &mut out)?;
        Ok(out.into_records())
    }

    #[test]
    fn enriches_typed_orders_with_the_configured_codecs() {
        let order = br#"{"id":"o-1","customer":"c","currency":"EUR","items":[{"sku":"a","qty":2,"unit_price":1.25}]}"#;
        let out = run(Some(order)).expect("valid");
        assert_eq!(out[0].output, DEFAULT_OUTPUT);
        assert_eq!(out[0].key.as_deref(), Some(&b"o-1"[..]));
        let enriched: EnrichedOrder =
            serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("json");
        assert_eq!(enriched.total, 3.0);
    }

    #[test]
    fn tombstones_pass_through_and_bad_values_are_decode_errors() {
        let out = run(None).expect("tombstone");
        assert_eq!(out[0].value, None);
        assert_eq!(out[0].key.as_deref(), Some(&b"o-1"[..]));
        let err = run(Some(br#"{"id":1}"#)).expect_err("wrong type");
        assert_eq!(err.kind, kstage::topology::TopologyErrorKind::Decode);
    }

    #[test]
    fn invalid_orders_keep_their_schema_and_get_a_reason() {
        let out = run(Some(
            br#"{"id":"o","customer":"c","currency":"EUR","items":[]}"#,
        ))
        .expect("ok");
        assert_eq!(out[0].output, INVALID);
        assert_eq!(out[0].headers[0].0, "kstage.invalid.reason");
    }
}
