//! Keyed input for the idempotent tests: record `n` has key `k<n % keys>` and value
//! `{"k": "k7", "n": n}`, and a key always goes to the same partition, so per key the record
//! with the largest `n` is the last one written, and the value an upsert must end with.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::common::broker::client_config;

/// Writes `count` keyed records over `keys` keys; returns key -> the latest `n`.
pub fn write_keyed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    keys: u64,
    count: u64,
) -> BTreeMap<String, i64> {
    let producer: BaseProducer = client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("create the keyed producer");
    let mut latest = BTreeMap::new();
    for n in 0..count {
        let key = format!("k{}", n % keys);
        let partition = i32::try_from((n % keys) % partitions as u64).expect("partition fits");
        let value = serde_json::json!({ "k": key, "n": n }).to_string();
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        latest.insert(key, i64::try_from(n).expect("n fits"));
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush the keyed input");
    latest
}
