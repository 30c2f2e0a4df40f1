//! Criterion benchmarks of the codecs (no broker): JSON and string decode/encode through
//! `kstage::codec::Codecs`, as a typed topology's records go through them, next to the untyped
//! `serde_json` tree the `bench-enrich` topology uses.
//!
//! `cargo bench --bench codec`. The `string/encode-key` and `bytes/encode-value` cases measure the
//! `string` and `bytes` codecs (`kstage::codec`'s text encoder).
//! Avro needs a schema registry and is measured end to end instead.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use apache_avro::AvroSchema;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kstage::codec::{Codecs, Format, Part, TopicFormat};
use serde::{Deserialize, Serialize};

#[path = "common/record.rs"]
mod record;

/// The benchmark record as a typed topology would declare it.
#[derive(Debug, Clone, Serialize, Deserialize, AvroSchema)]
pub struct BenchRecord {
    /// Unique id (also the key).
    pub id: String,
    /// Sequence number.
    pub seq: i64,
    /// An amount of money.
    pub amount: f64,
    /// Creation time, microseconds since the epoch.
    pub ts_us: i64,
    /// Padding.
    pub payload: String,
}

fn codecs(c: &mut Criterion) {
    let codecs = Codecs::plain();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(record::RECORD.len() as u64));
    group.bench_function("json/decode-typed", |b| {
        b.iter(|| {
            let value: BenchRecord = codecs
                .decode("in", Part::Value, Some(black_box(record::RECORD)))
                .expect("valid");
            value
        })
    });
    let typed: BenchRecord = serde_json::from_slice(record::RECORD).expect("valid");
    group.bench_function("json/encode-typed", |b| {
        b.iter(|| {
            codecs
                .encode("out", Part::Value, black_box(&typed))
                .expect("encodes")
        })
    });
    group.bench_function("string/decode-key", |b| {
        b.iter(|| {
            let key: String = codecs
                .decode("in", Part::Key, Some(black_box(record::KEY)))
                .expect("valid");
            key
        })
    });
    let key: String = String::from_utf8(record::KEY.to_vec()).expect("UTF-8");
    group.bench_function("string/encode-key", |b| {
        b.iter(|| {
            codecs
                .encode("out", Part::Key, black_box(&key))
                .expect("encodes")
        })
    });
    let raw = raw_codecs();
    // A `Vec<u8>` value, as a typed topology declares a `bytes` value (it serializes as a
    // sequence of numbers).
    let bytes: Vec<u8> = record::RECORD.to_vec();
    group.bench_function("bytes/encode-value", |b| {
        b.iter(|| {
            raw.encode("raw", Part::Value, black_box(&bytes))
                .expect("encodes")
        })
    });
    group.bench_function("json/decode-untyped-map", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(black_box(
                record::RECORD,
            ))
            .expect("valid")
        })
    });
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(record::RECORD).expect("valid");
    group.bench_function("json/encode-untyped-map", |b| {
        b.iter(|| serde_json::to_vec(black_box(&map)).expect("encodes"))
    });
    group.finish();
}

/// Codecs with `string` keys and `bytes` values on topic `raw`.
fn raw_codecs() -> Codecs {
    let format = TopicFormat {
        key: Format::String,
        value: Format::Bytes,
        value_schema: None,
    };
    Codecs::new(
        TopicFormat::default(),
        [("raw".to_string(), format)].into(),
        None,
    )
    .expect("no registry needed")
}

criterion_group!(benches, codecs);
criterion_main!(benches);
