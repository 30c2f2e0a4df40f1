//! Keyed input for the idempotent tests: record `n` has key `k<n % keys>` and value
//! `{"k": "k7", "n": n}`, and a key always goes to the same partition, so per key the record
//! with the largest `n` is the last one written, and the value an upsert must end with.

use std::collections::BTreeMap;

use crate::common::raw::{RawRecord, RawWriter};

/// Writes keyed records in chunks (through the shared [`RawWriter`]) and remembers, per key,
/// the latest `n` written.
pub struct KeyedWriter {
    raw: RawWriter,
    keys: u64,
    next: u64,
    /// Key -> the latest `n` written (what an upsert must end with).
    pub latest: BTreeMap<String, i64>,
}

impl KeyedWriter {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32, keys: u64) -> Self {
        Self {
            raw: RawWriter::bulk(bootstrap, topic, partitions),
            keys,
            next: 0,
            latest: BTreeMap::new(),
        }
    }

    /// Writes `count` more records and waits until all are acknowledged.
    pub fn write(&mut self, count: u64) {
        let partitions = u64::try_from(self.raw.partitions()).expect("positive partitions");
        for _ in 0..count {
            let n = self.next;
            self.next += 1;
            let key = format!("k{}", n % self.keys);
            let partition =
                i32::try_from((n % self.keys) % partitions).expect("partition fits in i32");
            let value = serde_json::json!({ "k": key, "n": n }).to_string();
            self.raw.write(
                partition,
                RawRecord::new(Some(&key), Some(value.into_bytes())),
            );
            self.latest
                .insert(key, i64::try_from(n).expect("n fits in i64"));
        }
        self.raw.flush();
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.next
    }

    /// End offsets of the input as written (next offset per partition).
    pub fn end_offsets(&self) -> Vec<i64> {
        self.raw.end_offsets()
    }
}
