//! The sink benchmark's load generator (benches/sink/bench.py runs it for the latency runs):
//! records at a fixed rate, each stamped with its send time, in the sink benchmark's format.
//!
//! ```text
//! key   = id-000000042
//! value = {"schema":<--schema>,"payload":{"id":"id-000000042","k":"k42","amount":294,
//!          "note":"xxxx...","sent_ms":1700000000000}}
//! partition = seq % --partitions
//! ```
//!
//! It exists because the Python producer the benchmark used before could not hold the rates
//! half load asks for (20,000-30,000 records/s achieved when 60,000-190,000 were asked; see
//! docs/BENCHMARKS.md). The schedule and the producer are the harness's own
//! (benches/harness/data.rs: `paced`, `producer` with `linger.ms=1`, as its latency run), not a
//! copy. `sent_ms` is the wall clock when the record is handed to the producer, so the latency
//! the benchmark reads from the table (commit timestamp − `sent_ms`) includes the producer's
//! batching. The first `--warmup-count` records are a warm-up at the same rate, stamped
//! `sent_ms = 0` (not measured). Prints one JSON line: records sent, seconds, the achieved rate
//! (over all of them), failed deliveries.

// The harness's record code is included whole; this binary uses its producer and schedule only.
#[allow(dead_code)]
#[path = "../harness/data.rs"]
mod data;

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use clap::Parser;
use rdkafka::producer::Producer;

/// Writes the sink benchmark's records at a fixed rate.
#[derive(Debug, Parser)]
#[command(name = "bench-sink-load")]
struct Args {
    /// The broker.
    #[arg(long)]
    bootstrap: String,
    /// The topic to write.
    #[arg(long)]
    topic: String,
    /// Records per second.
    #[arg(long)]
    rate: f64,
    /// Records to send (at `rate`, this takes count / rate seconds).
    #[arg(long)]
    count: u64,
    /// Partitions of the topic: record `seq` goes to partition `seq % partitions`.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// The Kafka Connect schema envelope (JSON), the same for every record.
    #[arg(long)]
    schema: String,
    /// Length of the `note` field.
    #[arg(long, default_value_t = 40)]
    note_len: usize,
    /// The first this many of the `count` records are a warm-up at the same rate: they carry
    /// `sent_ms = 0`, which the benchmark does not measure (the producer's connection and
    /// idempotent-producer id, the contender's first fetches and the table's first pages fall
    /// in them).
    #[arg(long, default_value_t = 0)]
    warmup_count: u64,
}

/// Writes record `seq`'s value (the format of bench.py's `record`) into `out`.
fn value(out: &mut Vec<u8>, schema: &str, note: &str, seq: u64, sent_ms: u64) {
    out.clear();
    let (k, amount) = (seq % 100_000, seq * 7 % 100_000);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"schema":{schema},"payload":{{"id":"id-{seq:09}","k":"k{k}","amount":{amount},"note":"{note}","sent_ms":{sent_ms}}}}}"#
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rate > 0.0, "--rate must be above 0");
    ensure!(args.partitions > 0, "--partitions must be above 0");
    let producer = data::producer(&args.bootstrap, 1)?;
    let note = "x".repeat(args.note_len);
    let mut buffer = Vec::with_capacity(args.schema.len() + args.note_len + 128);
    let partitions = u64::try_from(args.partitions).context("--partitions")?;
    let took = data::paced(&producer, args.rate, args.count, |seq| {
        let sent_ms = if seq < args.warmup_count {
            0
        } else {
            data::now_us() / 1000
        };
        value(&mut buffer, &args.schema, &note, seq, sent_ms);
        let key = format!("id-{seq:09}");
        // seq % partitions < partitions, which is an i32.
        let partition = (seq % partitions) as i32;
        data::send_to(&producer, &args.topic, Some(partition), &key, &buffer)
    })?;
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the load")?;
    let seconds = took.as_secs_f64();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "sent": args.count,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "achieved_rate": (args.count as f64 / seconds).round(),
            "failed": failed,
        })
    );
    ensure!(failed == 0, "{failed} records were not delivered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_benchmarks_json_with_the_send_time() {
        let mut out = Vec::new();
        value(
            &mut out,
            r#"{"type":"struct"}"#,
            "xx",
            100_042,
            1_700_000_000_123,
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed["schema"]["type"], "struct");
        let payload = &parsed["payload"];
        assert_eq!(payload["id"], "id-000100042");
        assert_eq!(payload["k"], "k42");
        assert_eq!(payload["amount"], 100_042 * 7 % 100_000);
        assert_eq!(payload["note"], "xx");
        assert_eq!(payload["sent_ms"], 1_700_000_000_123u64);
    }
}
