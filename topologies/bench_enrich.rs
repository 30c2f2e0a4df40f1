//! `bench-enrich`: the benchmark's transform. Parses a JSON object, adds `amount_with_tax`, and
//! writes it back as JSON; the key (the record's id) passes through unchanged.
//!
//! Input: `{"id": "id-0000000042", "seq": 42, "amount": 12.34, "ts_us": 1700000000000000,
//! "payload": "..."}` (about 200 bytes). Output: the same object with
//! `"amount_with_tax": round(amount * (1 + tax_rate), 2)` added. Every other field is kept as it
//! arrived (the benchmark's latency probe reads `ts_us` back from the output).
//!
//! The Kafka Streams peer in `benches/kafka-streams` does exactly this with Jackson's tree model;
//! this module does it with `serde_json`'s, untyped, as a user would write a quick enrichment.
//! A value that is not a JSON object with a numeric `amount` is a decode error and follows the
//! stage's poison policy.
//!
//! Parameters: `tax_rate` (default 0.2).

use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};
use serde_json::{Map, Number, Value};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "benchmark transform: JSON object in, `amount_with_tax` added, JSON out; key unchanged";

/// The topology.
#[derive(Debug, Clone)]
pub struct BenchEnrich {
    /// `1 + tax_rate`.
    tax_factor: f64,
}

/// Builds the topology from `tax_rate`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    Ok(Box::new(BenchEnrich::from_params(params)?))
}

impl BenchEnrich {
    /// Reads `tax_rate` (default 0.2, from 0 to 1).
    pub fn from_params(params: &TopologyParams) -> Result<Self, String> {
        params.deny_unknown(&["tax_rate"])?;
        let tax_rate: f64 = params.parse_or("tax_rate", 0.2, "a decimal number from 0 to 1")?;
        if !(0.0..=1.0).contains(&tax_rate) {
            return Err(format!(
                "params.tax_rate: {tax_rate} is not valid; expected 0 to 1"
            ));
        }
        Ok(Self {
            tax_factor: 1.0 + tax_rate,
        })
    }

    /// Adds `amount_with_tax` to one decoded record.
    pub fn enrich(&self, record: &mut Map<String, Value>) -> Result<(), TopologyError> {
        let amount = record
            .get("amount")
            .and_then(Value::as_f64)
            .ok_or_else(|| TopologyError::decode("the record has no numeric amount"))?;
        let with_tax = (amount * self.tax_factor * 100.0).round() / 100.0;
        let with_tax = Number::from_f64(with_tax).ok_or_else(|| {
            TopologyError::invalid(format!("amount {amount} gives no finite amount_with_tax"))
        })?;
        record.insert("amount_with_tax".to_string(), Value::Number(with_tax));
        Ok(())
    }
}

impl Topology for BenchEnrich {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let value = record
            .value
            .ok_or_else(|| TopologyError::decode("the record has no value (tombstone)"))?;
        let mut object: Map<String, Value> = serde_json::from_slice(value)
            .map_err(|e| TopologyError::decode(format!("not a JSON object: {e}")))?;
        self.enrich(&mut object)?;
        let encoded = serde_json::to_vec(&object)
            .map_err(|e| TopologyError::transform(format!("cannot encode the record: {e}")))?;
        out.emit(OutputRecord::from_input(record).value(encoded));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::topology::{Context, Headers, TopologyErrorKind};

    fn run(value: &[u8]) -> Result<Vec<OutputRecord<'_>>, TopologyError> {
        let record = Record {
            key: Some(b"id-1"),
            value: Some(value),
            headers: Headers::none(),
            context: Context {
                topic: "in",
                partition: 0,
                offset: 0,
                timestamp: Some(5),
            },
        };
        let mut topology = build(&TopologyParams::default()).expect("defaults are valid");
        let mut out = Emitter::new();
        topology.process(&record, &mut out)?;
        Ok(out.into_records())
    }

    #[test]
    fn adds_amount_with_tax_and_keeps_every_field_and_the_key() {
        let input = br#"{"id":"id-1","seq":1,"amount":10.05,"ts_us":123,"payload":"xyz"}"#;
        let out = run(input).expect("valid record");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.as_deref(), Some(&b"id-1"[..]));
        assert_eq!(out[0].timestamp, Some(5));
        let value: Value = serde_json::from_slice(out[0].value.as_deref().expect("v")).expect("j");
        assert_eq!(value["amount_with_tax"], serde_json::json!(12.06));
        assert_eq!(value["id"], "id-1");
        assert_eq!(value["seq"], 1);
        assert_eq!(value["ts_us"], 123);
        assert_eq!(value["payload"], "xyz");
    }

    #[test]
    fn rounds_to_cents() {
        let out = run(br#"{"id":"a","amount":0.1}"#).expect("ok");
        let value: Value = serde_json::from_slice(out[0].value.as_deref().expect("v")).expect("j");
        assert_eq!(value["amount_with_tax"], serde_json::json!(0.12));
    }

    #[test]
    fn rejects_what_is_not_a_record() {
        for bad in [
            &b"{not json"[..],
            b"[1,2]",
            br#"{"amount":"ten"}"#,
            br#"{"id":"x"}"#,
        ] {
            let err = run(bad).expect_err("poison");
            assert_eq!(err.kind, TopologyErrorKind::Decode, "{}", err.message);
        }
        let params = TopologyParams::new([("tax_rate".into(), "1.5".into())].into());
        assert!(build(&params)
            .err()
            .expect("out of range")
            .contains("tax_rate"));
    }
}
