//! The benchmark's limit: a plain rdkafka consume -> produce copy. No transactions, no transform,
//! no idempotence: each record's key, value and timestamp go to the same partition of the output
//! topic, and the offsets of *delivered* records are committed every 100 ms (so the harness can
//! watch progress the same way for every contender, and a committed offset still means the output
//! holds the record).
//!
//! ```text
//! consumer.poll ──► producer.send(same partition, key, value, timestamp; opaque = partition/offset)
//! delivery callback ──► highest delivered offset per partition
//! every 100 ms ──► commit_async(delivered + 1)
//! ```
//!
//! Tuned for throughput: large producer batches and queues, `fetch.queue.backoff.ms=10` (see
//! below), and both clients otherwise on librdkafka's defaults (acks=all, linger.ms=5). `--consumer-property` / `--producer-property`
//! KEY=VALUE override anything. Not part of the product: it exists only to be measured against.
//!
//! ```sh
//! target/release/examples/bench-raw-copy --bootstrap-servers 127.0.0.1:19092 \
//!   --input in --output out --group copy-1
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Copies a topic to another, as fast as librdkafka allows.
#[derive(Debug, Parser)]
#[command(name = "bench-raw-copy")]
struct Args {
    /// Bootstrap servers.
    #[arg(long)]
    bootstrap_servers: String,
    /// Input topic.
    #[arg(long)]
    input: String,
    /// Output topic (at least as many partitions as the input).
    #[arg(long)]
    output: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// A consumer setting, KEY=VALUE (repeatable).
    #[arg(long)]
    consumer_property: Vec<String>,
    /// A producer setting, KEY=VALUE (repeatable).
    #[arg(long)]
    producer_property: Vec<String>,
    /// How often delivered offsets are committed, ms.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
}

/// The highest delivered input offset per partition (-1: none yet).
struct Delivered {
    offsets: Vec<AtomicI64>,
    failed: AtomicI64,
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    /// `partition << 44 | offset` of the input record.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if let Err((error, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("bench-raw-copy: a delivery failed: {error}");
            }
            return;
        }
        let partition = opaque >> 44;
        let offset = (opaque & ((1 << 44) - 1)) as i64;
        if let Some(slot) = self.offsets.get(partition) {
            slot.fetch_max(offset, Ordering::Relaxed);
        }
    }
}

fn apply(config: &mut ClientConfig, settings: &[String]) -> Result<()> {
    for setting in settings {
        let Some((key, value)) = setting.split_once('=') else {
            bail!("{setting:?} is not KEY=VALUE");
        };
        config.set(key, value);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // librdkafka (>= 2.4) postpones a partition's next fetch by fetch.queue.backoff.ms (1 s)
        // once its local queue is over queued.min.messages; a consumer faster than that backoff
        // then starves in ~1 s stalls. Measured on the benchmark machine: 258k -> 451k records/s.
        .set("fetch.queue.backoff.ms", "10");
    apply(&mut consumer_config, &args.consumer_property)?;
    let consumer: BaseConsumer = consumer_config.create().context("creating the consumer")?;

    let metadata = consumer
        .fetch_metadata(Some(&args.input), Duration::from_secs(30))
        .context("reading the input's metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("input topic {} has no partitions", args.input))?;

    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000");
    apply(&mut producer_config, &args.producer_property)?;
    let delivered = Delivered {
        offsets: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
        failed: AtomicI64::new(0),
    };
    let producer: BaseProducer<Delivered> = producer_config
        .create_with_context(delivered)
        .context("creating the producer")?;

    consumer.subscribe(&[&args.input])?;
    let commit_every = Duration::from_millis(args.commit_interval_ms);
    let mut committed = vec![-1i64; partitions];
    let mut last_commit = Instant::now();
    loop {
        if last_commit.elapsed() >= commit_every {
            producer.poll(Duration::ZERO);
            commit_delivered(&consumer, &producer, &args.input, &mut committed)?;
            last_commit = Instant::now();
            anyhow::ensure!(
                producer.context().failed.load(Ordering::Relaxed) == 0,
                "deliveries failed; stopping"
            );
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => {
                // Idle: serve the delivery reports still queued.
                producer.poll(Duration::from_millis(10));
                continue;
            }
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                eprintln!("bench-raw-copy: consumer error: {error}");
                continue;
            }
        };
        let opaque = ((message.partition() as usize) << 44) | message.offset() as usize;
        let mut record =
            BaseRecord::with_opaque_to(&args.output, opaque).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        if let Some(ts) = message.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => bail!("producing: {error}"),
            }
        }
        // rdkafka's `poll(0)` serves at most one event (one batch of delivery reports): poll
        // after every send so the reports keep up with the sends.
        producer.poll(Duration::ZERO);
    }
}

/// Commits, asynchronously, the offset after the highest delivered record of each partition that
/// moved since the last commit.
fn commit_delivered(
    consumer: &BaseConsumer,
    producer: &BaseProducer<Delivered>,
    topic: &str,
    committed: &mut [i64],
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (partition, slot) in producer.context().offsets.iter().enumerate() {
        let offset = slot.load(Ordering::Relaxed);
        if offset > committed[partition] {
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset + 1))?;
            committed[partition] = offset;
        }
    }
    if tpl.count() > 0 {
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => eprintln!("bench-raw-copy: commit: {error}"),
        }
    }
    Ok(())
}
