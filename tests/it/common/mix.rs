//! Input mixes for `orders-avro`: good records (valid orders, rule breakers, tombstones) with bad
//! ones of every kind spread among them, in JSON (`--format IN=string:json`) or in Avro (Confluent
//! wire format against a registry). Each record carries an original header (`trace`), so tests
//! can check that dead letters keep it.
//!
//! Both mixes are meant for stages run with `--max-value-bytes` [`MAX_VALUE_BYTES`]: every good
//! record is far below it, the oversized one far above.

use kstage::codec::{Codecs, Part};

use super::ledger::Expect;
use super::orders::{order, rule_breakers};
use super::raw::RawRecord;

/// The `--max-value-bytes` the mixes are designed for.
pub const MAX_VALUE_BYTES: &str = "2000";

/// A value well above [`MAX_VALUE_BYTES`] (5 KB of customer name in an otherwise valid order).
fn oversized_customer() -> String {
    "x".repeat(5 * 1024)
}

/// How a mix encodes an order, and its bad kinds.
pub enum Encoding<'a> {
    Json,
    /// Avro for `topic` through `codecs` (which register the writer schema).
    Avro {
        codecs: &'a Codecs,
        topic: &'a str,
    },
}

impl Encoding<'_> {
    fn encode(&self, order: &super::orders::Order) -> Vec<u8> {
        match self {
            Encoding::Json => serde_json::to_vec(order).expect("an order is JSON"),
            Encoding::Avro { codecs, topic } => codecs
                .encode(topic, Part::Value, order)
                .unwrap_or_else(|e| panic!("encode an order as Avro for {topic}: {e}")),
        }
    }

    /// The bad records of this encoding, one of each kind, with their expected error class.
    fn bad(&self, tag: &str) -> Vec<(RawRecord, Expect)> {
        let valid = |suffix: &str| order(&format!("{tag}-{suffix}"), 1, 1, 100, "web");
        let mut big = valid("oversized");
        big.customer = oversized_customer();
        let keyed = |name: &str, value: Vec<u8>| {
            RawRecord::new(Some(&format!("{tag}-{name}")), Some(value))
        };
        let dead = |class, what| Expect::DeadLetter { class, what };
        let mut bad = match self {
            Encoding::Json => vec![
                (
                    keyed("malformed", br#"{"id":"o","customer":"#.to_vec()),
                    dead("decode", "malformed JSON"),
                ),
                (
                    keyed(
                        "wrong-type",
                        br#"{"id":"o","customer":"c","currency":"EUR","items":[{"sku":"a","qty":"two","unit_price":1.0}]}"#
                            .to_vec(),
                    ),
                    dead("decode", "wrong field type"),
                ),
            ],
            Encoding::Avro { .. } => {
                let body = self.encode(&valid("template"));
                let mut wrong_magic = body.clone();
                wrong_magic[0] = 1;
                let mut unknown_id = vec![0, 0x7f, 0xff, 0xff, 0xf0];
                unknown_id.extend_from_slice(&body[5..]);
                // A registered id, then a string of length 1 and the end: the body stops short.
                let mut garbage = body[..5].to_vec();
                garbage.extend_from_slice(&[0x02, b'a']);
                vec![
                    (keyed("truncated", vec![0, 0, 0]), dead("decode", "truncated prefix")),
                    (keyed("magic", wrong_magic), dead("decode", "unknown magic byte")),
                    (keyed("unknown-id", unknown_id), dead("decode", "unknown schema id")),
                    (keyed("garbage", garbage), dead("decode", "body does not match its schema")),
                ]
            }
        };
        bad.push((
            keyed("oversized", self.encode(&big)),
            dead("invalid", "oversized value"),
        ));
        bad.push((
            RawRecord::new(None, Some(self.encode(&valid("no-key")))),
            dead("decode", "null key"),
        ));
        bad
    }
}

/// `units` repetitions of: `goods` valid orders (every fifth one `high` priority, every third
/// one from the `mobile` channel), one rule breaker (cycling through the rules), one tombstone,
/// and one bad record (cycling through the bad kinds). Ids are unique per `tag`.
pub fn mix(
    encoding: &Encoding<'_>,
    tag: &str,
    units: usize,
    goods: usize,
) -> Vec<(RawRecord, Expect)> {
    let breakers = rule_breakers(tag);
    let bad = encoding.bad(tag);
    let mut records = Vec::new();
    let mut n = 0usize;
    for unit in 0..units {
        for _ in 0..goods {
            let id = format!("{tag}-{n:06}");
            let channel = if n % 3 == 0 { "mobile" } else { "web" };
            // 3 lines of 2 units: 6 x price; >= 1000.00 with tax from 138.89 on.
            let cents = if n % 5 == 0 { 25_000 } else { 1_999 };
            let value = encoding.encode(&order(&id, 3, 2, cents, channel));
            records.push((
                RawRecord::new(Some(&id), Some(value)).header("trace", &format!("t-{n}")),
                Expect::Output,
            ));
            n += 1;
        }
        let (mut breaker, reason) = breakers[unit % breakers.len()].clone();
        if !breaker.id.is_empty() {
            breaker.id = format!("{}-{unit}", breaker.id);
        }
        let key = format!("{tag}-breaker-{unit}");
        records.push((
            RawRecord::new(Some(&key), Some(encoding.encode(&breaker))).header("trace", &key),
            Expect::Invalid(reason),
        ));
        let key = format!("{tag}-tombstone-{unit}");
        records.push((
            RawRecord::new(Some(&key), None).header("trace", &key),
            Expect::Tombstone,
        ));
        let (mut record, expect) = bad[unit % bad.len()].clone();
        if let Some(key) = &mut record.key {
            key.extend_from_slice(format!("-{unit}").as_bytes());
        }
        records.push((record.header("trace", &format!("bad-{unit}")), expect));
    }
    records
}

/// How many kinds of bad record an encoding has (a mix needs this many units to hold each once).
pub fn bad_kinds(encoding: &Encoding<'_>) -> usize {
    encoding.bad("count").len()
}
