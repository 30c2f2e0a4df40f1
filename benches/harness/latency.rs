//! The latency run: a rate-limited producer writes records stamped with their creation time; a
//! read_committed consumer of the contender's output records `now - created` in an HdrHistogram.
//!
//! ```text
//! start contender on fresh topics
//! probe: one record every 200 ms until one comes out (the contender is up and assigned)
//! load:  `rate` records/s for warm-up + measured seconds, each stamped `ts_us` when it is sent
//! read:  read_committed, fetch.wait.max.ms=10; records after the warm-up go in the histogram
//! count: the broker's requests (requests.rs) from just before the load until the output is read
//! ```
//!
//! The clock is the harness's own (producer and consumer are threads of one process), so no
//! clock skew enters. The latency includes the load producer's batching (`linger.ms=1`), the
//! contender's commit interval and the broker's transaction markers: record created -> visible to
//! a read_committed consumer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::broker::Broker;
use crate::contender::{self, Job, Kind, Programs};
use crate::data;
use crate::report::Summary;
use crate::requests::RequestCounts;

/// Key prefix of the latency records.
const LOAD_PREFIX: &str = "lat-";
/// Key prefix of the readiness probes.
const PROBE_PREFIX: &str = "probe-";

/// Settings of a latency run.
#[derive(Debug, Clone)]
pub struct LatencySettings {
    /// Seconds of load whose records are not measured.
    pub warmup: Duration,
    /// Seconds of measured load.
    pub measured: Duration,
    /// Value size of the records.
    pub record_size: usize,
    /// Partitions of the topics.
    pub partitions: i32,
}

/// What a latency run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// The contender.
    pub contender: Kind,
    /// The round (0-based).
    pub round: usize,
    /// Offered load, records per second.
    pub rate: f64,
    /// The rate the producer achieved over the load.
    pub achieved_rate: f64,
    /// Records measured.
    pub measured: u64,
    /// Records sent that never came out before the deadline.
    pub missing: u64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// CPU seconds of the contender per second of load.
    pub cpu_per_s: f64,
    /// The offered load as a fraction of the contender's own median drain throughput, when the
    /// run is a point of a latency curve (`--latency-loads`).
    pub load_fraction: Option<f64>,
    /// CPU seconds of the broker per second of load (the harness's own broker only).
    pub broker_cpu_per_s: Option<f64>,
    /// Records the load wrote into the input (probes included).
    pub input_records: Option<i64>,
    /// Offsets of the output that hold no record: transaction markers (commit or abort), one
    /// per output partition a transaction wrote to. Its end offsets minus the input's (the
    /// transforms are one record in, one record out).
    pub output_markers: Option<i64>,
    /// The broker's requests from just before the load until the output was read (the
    /// harness's own broker only).
    pub broker_requests: Option<RequestCounts>,
    /// How the contender exited when stopped.
    pub exit: String,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl LatencyRun {
    /// A run that failed before it measured anything.
    pub fn failed(kind: Kind, round: usize, rate: f64, error: &anyhow::Error) -> Self {
        Self {
            contender: kind,
            round,
            rate,
            achieved_rate: 0.0,
            measured: 0,
            missing: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
            mean_ms: 0.0,
            cpu_per_s: 0.0,
            load_fraction: None,
            broker_cpu_per_s: None,
            input_records: None,
            output_markers: None,
            broker_requests: None,
            exit: String::new(),
            error: Some(format!("{error:#}")),
        }
    }
}

/// Which loads the latency runs use (the harness's `--latency-*` options).
#[derive(Debug, Clone)]
pub struct Loads {
    /// Fractions of each contender's own median drain throughput (a curve); empty: one load.
    pub fractions: Vec<f64>,
    /// One rate for everyone.
    pub rate: Option<f64>,
    /// Half of each contender's own median throughput.
    pub own_half: bool,
    /// Every contender of the run (the default load is half of the slowest one's).
    pub contenders: Vec<Kind>,
}

/// The loads a contender's latency runs use: (fraction of its own median throughput, if a curve,
/// records/s); `None` records/s when it never completed a drain.
pub fn points(loads: &Loads, summaries: &[Summary], kind: Kind) -> Vec<(Option<f64>, Option<f64>)> {
    let own = |kind: Kind, fraction: f64| {
        summaries
            .iter()
            .find(|s| s.contender == kind)
            .and_then(|s| s.records_per_s)
            .map(|rps| (rps * fraction).round())
    };
    if !loads.fractions.is_empty() {
        return loads
            .fractions
            .iter()
            .map(|&fraction| (Some(fraction), own(kind, fraction)))
            .collect();
    }
    let slowest = || {
        loads
            .contenders
            .iter()
            .filter(|k| k.keeps_running())
            .filter_map(|k| own(*k, 0.5))
            .reduce(f64::min)
    };
    let rate = match loads.rate {
        Some(rate) => Some(rate),
        None if loads.own_half => own(kind, 0.5),
        None => slowest(),
    };
    vec![(None, rate)]
}

/// What the load phase of a run measured.
struct Load {
    /// Records sent.
    sent: u64,
    /// Seconds the load took.
    load_s: f64,
    /// The contender's CPU seconds over the load.
    cpu_s: f64,
    /// The broker's CPU seconds over the load.
    broker_cpu_s: Option<f64>,
    /// The broker's requests from just before the load until the output was read.
    requests: Option<RequestCounts>,
}

/// Runs one contender at `rate` records per second on the fresh topics of `job`.
pub fn run(
    kind: Kind,
    round: usize,
    programs: &Programs,
    job: &Job,
    rate: f64,
    settings: &LatencySettings,
    broker: &Broker,
) -> Result<LatencyRun> {
    let broker_pid = broker.pid();
    let total_s = (settings.warmup + settings.measured).as_secs_f64();
    let to_send = (rate * total_s).round() as u64;
    let warmup_records = (rate * settings.warmup.as_secs_f64()).round() as u64;
    let consumer = output_reader(&job.bootstrap, &job.output, settings.partitions)?;
    let mut running = contender::start(kind, programs, job)?;
    let probe_seen = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load_start_us = Arc::new(AtomicU64::new(0));
    let reader = {
        let (probe_seen, received, stop) = (probe_seen.clone(), received.clone(), stop.clone());
        let load_start_us = load_start_us.clone();
        std::thread::spawn(move || {
            read(
                consumer,
                warmup_records,
                &Shared {
                    probe_seen: &probe_seen,
                    received: &received,
                    stop: &stop,
                    load_start_us: &load_start_us,
                },
            )
        })
    };

    // Everything that can fail runs in here, so the contender and the reader are stopped
    // whatever happens.
    let load = (|| -> Result<Load> {
        let producer = data::producer(&job.bootstrap, 1)?;
        let mut buffer = Vec::with_capacity(settings.record_size + 64);
        // Probe until the contender is up.
        let probe_deadline = Instant::now() + Duration::from_secs(180);
        let mut probes = 0u64;
        while !probe_seen.load(Ordering::Relaxed) {
            anyhow::ensure!(
                Instant::now() < probe_deadline && running.exited().is_none(),
                "{} passed no probe record within 180 s; see {}",
                kind.name(),
                running.log.display()
            );
            let id = data::key(PROBE_PREFIX, probes);
            data::value(
                &mut buffer,
                &id,
                probes,
                data::now_us(),
                settings.record_size,
            );
            data::send(&producer, &job.input, &id, &buffer)?;
            producer.flush(Duration::from_secs(10))?;
            probes += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let requests_before = broker.jmx().map(|jmx| (jmx.totals(), Instant::now()));
        let cpu_before = crate::procfs::sample(running.pid()).unwrap_or_default();
        let broker_before = broker_pid.and_then(crate::procfs::sample);
        // The load: at each tick, send what is due by now.
        load_start_us.store(data::now_us(), Ordering::Relaxed);
        let load_s = data::paced(&producer, rate, to_send, |seq| {
            let id = data::key(LOAD_PREFIX, seq);
            data::value(&mut buffer, &id, seq, data::now_us(), settings.record_size);
            data::send(&producer, &job.input, &id, &buffer)
        })?
        .as_secs_f64();
        let sent = to_send;
        producer.flush(Duration::from_secs(30))?;
        let cpu_after = crate::procfs::sample(running.pid()).unwrap_or_default();
        let broker_after = broker_pid.and_then(crate::procfs::sample);
        let broker_cpu_s = broker_before
            .zip(broker_after)
            .map(|(before, after)| after.cpu_s - before.cpu_s);
        // Wait for the rest to come out.
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let requests = match (requests_before, broker.jmx()) {
            (Some((Ok(before), at)), Some(jmx)) => {
                let window_s = at.elapsed().as_secs_f64();
                jmx.totals()
                    .map(|after| RequestCounts::between(&before, &after, window_s, sent))
                    .map_err(|e| eprintln!("harness: broker request counts: {e:#}"))
                    .ok()
            }
            (Some((Err(error), _)), _) => {
                eprintln!("harness: broker request counts: {error:#}");
                None
            }
            _ => None,
        };
        Ok(Load {
            sent,
            load_s,
            cpu_s: cpu_after.cpu_s - cpu_before.cpu_s,
            broker_cpu_s,
            requests,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let histogram = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the latency reader panicked"))?;
    let exit = running.stop(Duration::from_secs(30));
    let (histogram, by_second) = histogram?;
    write_by_second(&job.dir.join("latency-by-second.csv"), &by_second);
    let (sent, load_s, cpu_s, broker_cpu_s, broker_requests, error) = match load {
        Ok(l) => (l.sent, l.load_s, l.cpu_s, l.broker_cpu_s, l.requests, None),
        Err(error) => (0, 1.0, 0.0, None, None, Some(format!("{error:#}"))),
    };
    let got = received.load(Ordering::Relaxed);
    let ms = |us: u64| us as f64 / 1000.0;
    let mut run = LatencyRun {
        contender: kind,
        round,
        rate,
        achieved_rate: sent as f64 / load_s,
        measured: histogram.len(),
        missing: sent.saturating_sub(got),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        mean_ms: histogram.mean() / 1000.0,
        cpu_per_s: cpu_s / load_s,
        load_fraction: None,
        broker_cpu_per_s: broker_cpu_s.map(|s| s / load_s),
        input_records: None,
        output_markers: None,
        broker_requests,
        exit,
        error,
    };
    if run.error.is_none() && run.missing > 0 {
        run.error = Some(format!(
            "{} of {sent} records did not come out within 60 s",
            run.missing
        ));
    }
    Ok(run)
}

fn output_reader(bootstrap: &str, topic: &str, partitions: i32) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kstage-bench-latency")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        // Do not let the reader's own fetch wait add to what it measures.
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("creating the latency reader")?;
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// What the reader shares with the producer side.
struct Shared<'a> {
    probe_seen: &'a AtomicBool,
    received: &'a AtomicU64,
    stop: &'a AtomicBool,
    load_start_us: &'a AtomicU64,
}

/// Per second of load (by creation time): records, summed and largest latency in microseconds.
type BySecond = Vec<(u64, u64, u64)>;

fn read(
    consumer: BaseConsumer,
    warmup_records: u64,
    shared: &Shared<'_>,
) -> Result<(Histogram<u64>, BySecond)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut by_second: BySecond = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let now = data::now_us();
        let message = match polled {
            Ok(message) => message,
            Err(error) => {
                eprintln!("harness: latency reader: {error}");
                continue;
            }
        };
        let key = message.key().unwrap_or_default();
        if key.starts_with(PROBE_PREFIX.as_bytes()) {
            shared.probe_seen.store(true, Ordering::Relaxed);
            continue;
        }
        let Some(seq) = data::seq_of_key(LOAD_PREFIX, key) else {
            continue;
        };
        shared.received.fetch_add(1, Ordering::Relaxed);
        let Some(created) = message.payload().and_then(data::ts_us_of_value) else {
            continue;
        };
        let latency = now.saturating_sub(created).max(1);
        let second =
            created.saturating_sub(shared.load_start_us.load(Ordering::Relaxed)) / 1_000_000;
        if let Ok(second) = usize::try_from(second) {
            if second < 3600 {
                if by_second.len() <= second {
                    by_second.resize(second + 1, (0, 0, 0));
                }
                let slot = &mut by_second[second];
                *slot = (slot.0 + 1, slot.1 + latency, slot.2.max(latency));
            }
        }
        if seq >= warmup_records {
            histogram.saturating_record(latency);
        }
    }
    Ok((histogram, by_second))
}

/// Writes the latency per second of load (warm-up included), to tell a steady latency from a
/// backlog that grows or drains.
fn write_by_second(path: &std::path::Path, by_second: &BySecond) {
    let mut csv = String::from("second,records,mean_ms,max_ms\n");
    for (second, (records, sum, max)) in by_second.iter().enumerate() {
        let mean = if *records > 0 {
            *sum as f64 / *records as f64 / 1000.0
        } else {
            0.0
        };
        csv.push_str(&format!(
            "{second},{records},{mean:.1},{:.1}\n",
            *max as f64 / 1000.0
        ));
    }
    if let Err(error) = std::fs::write(path, csv) {
        eprintln!("harness: writing {}: {error}", path.display());
    }
}
