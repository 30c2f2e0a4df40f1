//! `kstage state inspect`: reads a store's contents from its changelog topic, for debugging.
//!
//! The changelog is read read_committed from its start to its end (partition EOF on every
//! partition), keeping the last value per key, exactly as a restore from nothing would; the
//! stage need not run, and nothing local is read. Keys and values print as text when they are
//! UTF-8, else as hex; an 8-byte value also prints as a big-endian u64 (the built-in counts).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::args::StageArgs;
use super::config_failure;
use crate::state::runtime::RestoreContext;
use crate::state::topics::{changelog_topic, partition_count};

/// `kstage state inspect` flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The stage settings (bootstrap servers, app_id, security).
    #[command(flatten)]
    pub stage: StageArgs,
    /// The store to read (its changelog is `<app_id>-<store>-changelog`).
    #[arg(long)]
    pub store: String,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only this key (as text).
    #[arg(long)]
    pub key: Option<String>,
    /// Print at most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Give up when the changelog is not read to its end within this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!(
            "0x{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Prints the store's entries; exit 0, 1 on a Kafka error, 2 on a bad flag or config.
pub(crate) fn inspect(args: InspectArgs) -> ExitCode {
    let config = match args.stage.into_config() {
        Ok(config) => config,
        Err(error) => return config_failure(&error.into()),
    };
    if config.bootstrap_servers.is_empty() || config.app_id.is_empty() {
        eprintln!("kstage: bootstrap_servers and app_id are needed to find the changelog");
        return ExitCode::from(2);
    }
    let fail = |message: String| {
        eprintln!("kstage: {message}");
        ExitCode::FAILURE
    };
    let topic = changelog_topic(&config.app_id, &args.store);
    let mut client = crate::engine::consumer_config(&config, "kstage-state-inspect");
    client
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0");
    // The restore consumers' context: reaching a partition's end is not logged as an error.
    let consumer: BaseConsumer<RestoreContext> = match client.create_with_context(RestoreContext) {
        Ok(consumer) => consumer,
        Err(error) => return fail(format!("cannot create a Kafka client: {error}")),
    };
    let partitions = match partition_count(&consumer, &topic) {
        Ok(Some(n)) => i32::try_from(n).unwrap_or(i32::MAX),
        Ok(None) => return fail(format!("changelog topic {topic} does not exist")),
        Err(error) => return fail(error),
    };
    let wanted: Vec<i32> = match args.partition {
        Some(p) if (0..partitions).contains(&p) => vec![p],
        Some(p) => {
            eprintln!(
                "kstage: --partition: {topic} has partitions 0 to {}, not {p}",
                partitions - 1
            );
            return ExitCode::from(2);
        }
        None => (0..partitions).collect(),
    };
    let mut assignment = TopicPartitionList::new();
    for p in &wanted {
        if let Err(error) = assignment.add_partition_offset(&topic, *p, Offset::Beginning) {
            return fail(format!("assigning {topic}: {error}"));
        }
    }
    if let Err(error) = consumer.assign(&assignment) {
        return fail(format!("assigning {topic}: {error}"));
    }
    let mut entries: BTreeMap<(i32, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + args.timeout;
    while at_end.len() < wanted.len() {
        if Instant::now() >= deadline {
            return fail(format!(
                "{topic} was not read to its end within {:?} ({} of {} partitions done)",
                args.timeout,
                at_end.len(),
                wanted.len()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let Some(key) = message.key() else { continue };
                let slot = (message.partition(), key.to_vec());
                match message.payload() {
                    Some(value) => entries.insert(slot, value.to_vec()),
                    None => entries.remove(&slot),
                };
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(error)) => return fail(format!("reading {topic}: {error}")),
            None => {}
        }
    }
    let mut printed = 0;
    for ((partition, key), value) in &entries {
        if args
            .key
            .as_deref()
            .is_some_and(|k| k.as_bytes() != key.as_slice())
        {
            continue;
        }
        if printed >= args.limit {
            println!("... (--limit {} reached)", args.limit);
            break;
        }
        let number = <[u8; 8]>::try_from(value.as_slice())
            .map(|b| format!(" (u64 {})", u64::from_be_bytes(b)))
            .unwrap_or_default();
        println!(
            "partition {partition} key {} value {}{number}",
            shown(key),
            shown(value)
        );
        printed += 1;
    }
    println!(
        "{} entries in store {:?} ({topic})",
        entries.len(),
        args.store
    );
    ExitCode::SUCCESS
}
