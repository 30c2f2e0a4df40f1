//! `kstage demo`: a stage end to end on librdkafka's in-process mock cluster, needing no Kafka.
//!
//! It creates the topics, produces sample orders (a few of them invalid), runs the topology as a
//! real stage (same engine, same transactional code path) until every input is reflected in the
//! outputs, then stops it and prints what happened. The mock cluster does not implement
//! transactional isolation: its read_committed consumers see aborted and open transactions, it
//! does not store offsets sent in a transaction and fences nothing. So the demo shows the wiring,
//! never the guarantee; the integration tests prove that against a real broker.
//!
//! With `--postgres URL` the demo goes on into a database: a transactional sink copies the
//! stage's default output topic into a table and `kstage verify --sink`'s checks compare them
//! ([`super::demo_postgres`]). Without it the demo touches no database and is as fast as before.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::StageConfig;
use crate::topology::{Registry, DEFAULT_OUTPUT};

const INPUT_TOPIC: &str = "demo-orders";
const PARTITIONS: i32 = 3;

/// Options of `kstage demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The topology to run.
    #[arg(long, default_value = "orders")]
    pub topology: String,
    /// How many sample input records to produce.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub records: u32,
    /// Also sink the stage's output into this PostgreSQL database (a URL such as
    /// `scripts/postgres.sh start` prints) and verify the table. Replaces the table
    /// `kstage_demo_<topology>` there.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

/// Runs the demo; prints a report on stdout.
pub(crate) fn run(args: DemoArgs, registry: &Registry) -> ExitCode {
    match demo(&args, registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kstage demo: {message}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs, registry: &Registry) -> Result<(), String> {
    let mock = MockCluster::new(1).map_err(|e| format!("cannot start the mock cluster: {e}"))?;
    let bootstrap = mock.bootstrap_servers();
    let topology = registry.get(&args.topology).ok_or_else(|| {
        format!(
            "topology {:?} is not registered; one of: {}",
            args.topology,
            registry.names()
        )
    })?;
    let probe = (topology.factory)(&Default::default())?;
    let mut outputs = BTreeMap::new();
    if probe.uses_default_output() {
        outputs.insert(
            DEFAULT_OUTPUT.to_string(),
            format!("demo-{}-out", args.topology),
        );
    }
    for name in probe.outputs() {
        outputs.insert(
            (*name).to_string(),
            format!("demo-{}-{name}", args.topology),
        );
    }
    for topic in std::iter::once(INPUT_TOPIC).chain(outputs.values().map(String::as_str)) {
        mock.create_topic(topic, PARTITIONS, 1)
            .map_err(|e| format!("creating {topic}: {e}"))?;
    }
    produce_samples(&bootstrap, args.records)?;

    let config = StageConfig {
        topology: args.topology.clone(),
        bootstrap_servers: bootstrap.clone(),
        inputs: vec![INPUT_TOPIC.to_string()],
        outputs: outputs.clone(),
        app_id: "kstage-demo".into(),
        instance_id: "0".into(),
        ..StageConfig::default()
    };
    let topology = config.validate(registry).map_err(|e| e.to_string())?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let stage_config = config.clone();
    let started = Instant::now();
    let stage = std::thread::spawn(move || {
        crate::engine::run(&stage_config, vec![topology], flag, Default::default())
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut counts = count_records(&bootstrap, &outputs)?;
    while counts.values().sum::<u64>() < u64::from(args.records) && !stage.is_finished() {
        if Instant::now() > deadline {
            shutdown.store(true, Ordering::Relaxed);
            return Err(format!(
                "the stage did not produce every output within 120 s: {counts:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
        counts = count_records(&bootstrap, &outputs)?;
    }
    let elapsed = started.elapsed();
    shutdown.store(true, Ordering::Relaxed);
    let stats = stage
        .join()
        .map_err(|_| "the stage thread panicked".to_string())?
        .map_err(|e| e.to_string())?;

    println!(
        "kstage demo: topology {:?} on librdkafka's in-process mock cluster",
        args.topology
    );
    println!(
        "  produced {} sample orders to {INPUT_TOPIC} ({PARTITIONS} partitions)",
        args.records
    );
    for (name, topic) in &outputs {
        println!(
            "  output {name:<8} -> {topic}: {} records",
            counts.get(topic).copied().unwrap_or(0)
        );
    }
    println!(
        "  stage: {} records in, {} records out, {} transactions committed, {} aborted, in {:.1} s",
        stats.records_in,
        stats.records_out,
        stats.commits,
        stats.aborts,
        elapsed.as_secs_f64()
    );
    let shown: BTreeMap<String, String> = outputs
        .iter()
        .filter(|(name, _)| outputs.len() == 1 || name.as_str() == DEFAULT_OUTPUT)
        .map(|(name, topic)| (name.clone(), topic.clone()))
        .collect();
    if let Some(sample) = first_record(&bootstrap, &shown)? {
        println!("  a sample output record: {sample}");
    }
    if let Some(url) = &args.postgres {
        let Some(topic) = shown.values().next() else {
            return Err(format!(
                "topology {:?} has no output to sink",
                args.topology
            ));
        };
        let records = counts.get(topic).copied().unwrap_or(0);
        let outcome = super::demo_postgres::sink_output(
            url,
            &bootstrap,
            &args.topology,
            topic,
            records,
            registry,
        )?;
        println!(
            "  sink: {topic} -> table {} at {} (transactional): {} rows in {:.1} s",
            outcome.table,
            crate::sink::config::redact_url(url),
            outcome.rows,
            outcome.elapsed.as_secs_f64()
        );
        println!();
        println!("{}", outcome.verify);
        if !outcome.passed {
            return Err(format!(
                "the table {} does not match {topic}",
                outcome.table
            ));
        }
    }
    println!();
    println!("NOTE: this ran on librdkafka's mock cluster, which does NOT enforce transactional");
    println!(
        "isolation: its read_committed readers see aborted and open transactions, it does not"
    );
    println!(
        "store offsets sent in a transaction, and it fences nothing. The demo shows the wiring"
    );
    println!(
        "only; exactly-once is proven by `scripts/test.sh` against a real Apache Kafka broker."
    );
    Ok(())
}

/// Sample orders: mostly valid, every 10th one invalid (no items), every 25th a bulk order.
pub(crate) fn sample_order(i: u32) -> String {
    let customer = format!("c-{}", i % 17);
    if i % 10 == 9 {
        return format!(r#"{{"id":"o-{i}","customer":"{customer}","currency":"EUR","items":[]}}"#);
    }
    let qty = if i % 25 == 0 { 120 } else { 1 + i % 4 };
    let price = 3.5 + f64::from(i % 7) * 2.25;
    format!(
        r#"{{"id":"o-{i}","customer":"{customer}","currency":"EUR","items":[{{"sku":"sku-{}","qty":{qty},"unit_price":{price}}}]}}"#,
        i % 11
    )
}

fn produce_samples(bootstrap: &str, records: u32) -> Result<(), String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .map_err(|e| format!("creating the sample producer: {e}"))?;
    for i in 0..records {
        let key = format!("o-{i}");
        let value = sample_order(i);
        let mut record = BaseRecord::to(INPUT_TOPIC).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("producing samples: {e}"))
}

fn reader(bootstrap: &str, topics: &BTreeMap<String, String>) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kstage-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("creating the output reader: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics.values() {
        for partition in 0..PARTITIONS {
            tpl.add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assigning the output reader: {e}"))?;
    Ok(consumer)
}

fn count_records(
    bootstrap: &str,
    topics: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, u64>, String> {
    let consumer = reader(bootstrap, topics)?;
    let mut counts = BTreeMap::new();
    for topic in topics.values() {
        let mut total = 0;
        for partition in 0..PARTITIONS {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(5))
                .map_err(|e| format!("reading watermarks of {topic}: {e}"))?;
            total += u64::try_from(high - low).unwrap_or(0);
        }
        counts.insert(topic.clone(), total);
    }
    Ok(counts)
}

fn first_record(
    bootstrap: &str,
    topics: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    let consumer = reader(bootstrap, topics)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = message
                .payload()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Ok(Some(format!("{} -> {value}", message.topic())));
        }
    }
    Ok(None)
}
