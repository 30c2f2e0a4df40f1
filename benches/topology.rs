//! Criterion benchmarks of the topology call path (no broker): a registered topology built from
//! the built-in registry and called through `dyn Topology` with a borrowed `Record` and a fresh
//! `Emitter` per record, as the engine calls it.
//!
//! `cargo bench --bench topology`. The engine's own per-record work (routing, provenance headers,
//! producing) needs a producer and is measured end to end by the harness (scripts/bench.sh).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kstage::codec::Codecs;
use kstage::topology::{
    Context, Emitter, Headers, Record, StageInfo, Topology, TopologyParams, DEFAULT_OUTPUT,
};

#[path = "common/record.rs"]
mod record;
// The binary's built-in topologies, compiled in as the kstage binary compiles them; their unit
// tests are not run here.
#[allow(dead_code, missing_docs, unused_imports)]
#[path = "../topologies/mod.rs"]
mod topologies;

const ORDER: &[u8] = br#"{"id":"o-1","customer":"c-9","currency":"EUR","items":[{"sku":"a","qty":2,"unit_price":9.5},{"sku":"b","qty":1,"unit_price":19.99}]}"#;

fn topology(name: &str) -> Box<dyn Topology> {
    let registry = topologies::registry();
    let info = registry.get(name).expect("registered");
    let mut topology = (info.factory)(&TopologyParams::default()).expect("default params");
    let outputs: BTreeMap<String, String> = [
        (DEFAULT_OUTPUT.to_string(), "out".to_string()),
        ("invalid".to_string(), "invalid".to_string()),
    ]
    .into();
    topology
        .on_start(&StageInfo {
            codecs: Arc::new(Codecs::plain()),
            outputs: Arc::new(outputs),
        })
        .expect("starts");
    topology
}

fn input<'a>(key: &'a [u8], value: &'a [u8], headers: Headers<'a>) -> Record<'a> {
    Record {
        key: Some(key),
        value: Some(value),
        headers,
        context: Context {
            topic: "in",
            partition: 3,
            offset: 123_456,
            timestamp: Some(1_700_000_000_000),
        },
    }
}

fn call_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("topology");
    group.throughput(Throughput::Elements(1));
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("bench-enrich", record::KEY, record::RECORD),
        ("passthrough", record::KEY, record::RECORD),
        ("orders", b"o-1", ORDER),
        ("orders-avro", b"o-1", ORDER),
    ];
    let trace = [("trace-id", Some(&b"0af7651916cd43dd8448eb211c80319c"[..]))];
    for (name, key, value) in cases {
        let mut topology = topology(name);
        let record = input(key, value, Headers::from_slice(&trace));
        group.bench_function(format!("{name}/process"), |b| {
            b.iter(|| {
                let mut out = Emitter::new();
                topology
                    .process(black_box(&record), &mut out)
                    .expect("processes");
                out.into_records()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, call_path);
criterion_main!(benches);
