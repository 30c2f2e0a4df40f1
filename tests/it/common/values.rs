//! Value checks for `orders-avro` pipelines (for [`super::ledger::Ledger::account`]): an output
//! record holds the enrichment of its input order, an invalid record the input order unchanged.

use apache_avro::AvroSchema;
use kstage::codec::{Codecs, Part};
use serde::de::DeserializeOwned;

use super::ledger::Destination;
use super::orders::{expected_enrichment, EnrichedOrder, Order};
use super::orders_stage::OrdersPipeline;
use super::raw::RawRecord;
use super::read::ReadRecord;

/// Decodes an Avro value of `topic`.
pub fn decode<T: DeserializeOwned + AvroSchema>(
    codecs: &Codecs,
    topic: &str,
    bytes: &[u8],
) -> Result<T, String> {
    codecs
        .decode::<T>(topic, Part::Value, Some(bytes))
        .map_err(|e| format!("cannot decode as {}: {e}", std::any::type_name::<T>()))
}

fn compare(
    destination: Destination,
    written: &Order,
    output: Result<Value, String>,
) -> Result<(), String> {
    match (destination, output?) {
        (Destination::Output, Value::Enriched(got)) => {
            let want = expected_enrichment(written);
            (got == want)
                .then_some(())
                .ok_or(format!("got {got:?}, expected {want:?}"))
        }
        (Destination::Invalid, Value::Order(got)) => (got == *written)
            .then_some(())
            .ok_or(format!("got {got:?}, wrote {written:?}")),
        _ => Ok(()),
    }
}

enum Value {
    Enriched(EnrichedOrder),
    Order(Order),
    None,
}

/// The value check of an Avro pipeline, decoding through `codecs`.
pub fn avro_values<'a>(
    codecs: &'a Codecs,
    pipeline: &'a OrdersPipeline,
) -> impl Fn(Destination, &RawRecord, &ReadRecord) -> Result<(), String> + 'a {
    move |destination, input, output| {
        let Some(bytes) = input.value.as_deref() else {
            return Ok(()); // a tombstone: checked by the ledger
        };
        let written: Order = decode(codecs, pipeline.input(), bytes)?;
        let got = match destination {
            Destination::Output => {
                decode(codecs, pipeline.output(), &output.value).map(Value::Enriched)
            }
            Destination::Invalid => {
                decode(codecs, &pipeline.invalid, &output.value).map(Value::Order)
            }
            Destination::DeadLetter => Ok(Value::None),
        };
        compare(destination, &written, got)
    }
}

/// The value check of a JSON pipeline.
pub fn json_values(
    destination: Destination,
    input: &RawRecord,
    output: &ReadRecord,
) -> Result<(), String> {
    let Some(bytes) = input.value.as_deref() else {
        return Ok(());
    };
    let written: Order = serde_json::from_slice(bytes).map_err(|e| format!("input: {e}"))?;
    let parse = |what| format!("output is not {what}: {}", output.value_str());
    let got = match destination {
        Destination::Output => serde_json::from_slice(&output.value)
            .map(Value::Enriched)
            .map_err(|_| parse("an EnrichedOrder")),
        Destination::Invalid => serde_json::from_slice(&output.value)
            .map(Value::Order)
            .map_err(|_| parse("an Order")),
        Destination::DeadLetter => Ok(Value::None),
    };
    compare(destination, &written, got)
}
