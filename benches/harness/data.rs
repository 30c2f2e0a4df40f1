//! The benchmark's records: JSON objects of a chosen size with unique ids, and the preload.
//!
//! ```text
//! key   = id-0000000042
//! value = {"id":"id-0000000042","seq":42,"amount":123.45,"ts_us":1700000000000000,"payload":"..."}
//! ```
//!
//! `payload` pads the value to the requested size. `ts_us` is when the record was created
//! (microseconds since the epoch): every contender keeps it in its output (the transforms keep all
//! fields, the copies copy the bytes), so the latency probe reads it back from the output instead
//! of relying on record timestamps, which the TransactionalMessageCopier does not forward.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Key prefix of the preloaded records.
pub const ID_PREFIX: &str = "id-";

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The key of record `seq`.
pub fn key(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:010}")
}

/// The sequence number in a key made by [`key`].
pub fn seq_of_key(prefix: &str, key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(prefix.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// Writes the value of record `seq` (with id `id`) into `out`, padded to about `size` bytes.
pub fn value(out: &mut Vec<u8>, id: &str, seq: u64, ts_us: u64, size: usize) {
    use std::io::Write as _;
    out.clear();
    let cents = seq.wrapping_mul(7919) % 100_000 + 1;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"id":"{id}","seq":{seq},"amount":{}.{:02},"ts_us":{ts_us},"payload":""#,
        cents / 100,
        cents % 100
    );
    let padding = size.saturating_sub(out.len() + 2).max(8);
    // Letters from a small LCG, so payloads differ between records.
    let mut state = seq
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..padding {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push(b'a' + ((state >> 33) % 26) as u8);
    }
    out.extend_from_slice(b"\"}");
}

/// The `ts_us` field of a value, found without parsing the whole JSON object.
pub fn ts_us_of_value(value: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = br#""ts_us":"#;
    let start = value.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = value[start..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    (digits > 0).then_some(digits)
}

/// Counts failed deliveries of a producer.
#[derive(Default)]
pub struct CountingContext {
    /// Records the broker did not take.
    pub failed: AtomicU64,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("harness: a delivery failed: {error}");
            }
        }
    }
}

/// A producer for the harness's own writes (preload and latency load).
pub fn producer(bootstrap: &str, linger_ms: u32) -> Result<BaseProducer<CountingContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        // Keys land where Java producers and Kafka Streams put them.
        .set("partitioner", "murmur2_random")
        .create_with_context(CountingContext::default())
        .context("creating a producer")
}

/// Sends one record, waiting while the local queue is full.
pub fn send(
    producer: &BaseProducer<CountingContext>,
    topic: &str,
    key: &str,
    value: &[u8],
) -> Result<()> {
    send_to(producer, topic, None, key, value)
}

/// Sends one record to `partition` (`None`: the partitioner's choice), waiting while the local
/// queue is full.
pub fn send_to(
    producer: &BaseProducer<CountingContext>,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((error, _)) => bail!("producing to {topic}: {error}"),
        }
    }
}

/// Sends records `0..count` at `rate` per second and returns how long the sending took (the
/// achieved rate is `count / seconds`). The schedule is a token bucket without a cap: at each
/// tick (0.5 ms) `send_one` is called for every record due by now (`elapsed * rate`), so a
/// producer that falls behind catches up in a burst instead of drifting, and the rate it
/// achieved says whether it could hold the asked one. Shared by the harness's latency run and
/// the sink benchmark's load generator (benches/sink/load.rs).
pub fn paced(
    producer: &BaseProducer<CountingContext>,
    rate: f64,
    count: u64,
    mut send_one: impl FnMut(u64) -> Result<()>,
) -> Result<Duration> {
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(count);
        while sent < due {
            send_one(sent)?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(started.elapsed())
}

/// What the preload wrote.
#[derive(Debug, Clone, Copy)]
pub struct Preloaded {
    /// Key plus value bytes written.
    pub bytes: u64,
    /// Seconds the preload took.
    pub seconds: f64,
}

/// Writes `records` records of about `size` bytes to `topic` and waits until all are acknowledged.
pub fn preload(bootstrap: &str, topic: &str, records: u64, size: usize) -> Result<Preloaded> {
    let producer = producer(bootstrap, 20)?;
    let started = Instant::now();
    let mut buffer = Vec::with_capacity(size + 64);
    let mut bytes = 0u64;
    let ts_us = now_us();
    for seq in 0..records {
        let id = key(ID_PREFIX, seq);
        value(&mut buffer, &id, seq, ts_us, size);
        bytes += (id.len() + buffer.len()) as u64;
        send(&producer, topic, &id, &buffer)?;
        if seq % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the preload")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} preload records were not delivered");
    }
    Ok(Preloaded {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_requested_size_and_their_timestamp() {
        let mut out = Vec::new();
        value(&mut out, "id-0000000042", 42, 1_700_000_000_000_000, 200);
        assert_eq!(out.len(), 200);
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed["seq"], 42);
        assert_eq!(ts_us_of_value(&out), Some(1_700_000_000_000_000));
        assert_eq!(seq_of_key(ID_PREFIX, b"id-0000000042"), Some(42));
    }
}
