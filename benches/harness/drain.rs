//! The throughput run: a contender drains the preloaded input; the harness watches its progress
//! through the consumer group's committed offsets, then checks the output.
//!
//! ```text
//! start contender ──► every tick: committed offsets of its group, CPU and peak RSS from /proc
//!                     first commit seen ──► t_first      all input committed ──► t_done
//! stop contender ──► read the output read_committed: every id there? duplicates?
//! ```
//!
//! For the transactional contenders a committed offset means the transaction that holds the
//! outputs of those records committed; at_least_once commits offsets after the outputs are
//! acknowledged; the raw copy commits the offsets of delivered records. So "all input committed"
//! is "the output holds every record". The check afterwards proves it (and counts duplicates).
//!
//! Drain throughput is measured in the steady part of the drain: from the tick where 10% of the
//! input was committed to the tick where 90% was (records committed in between over that time),
//! so neither start-up (JVM start, group join, the first fetches) nor the tail counts against a
//! contender; the start-up time and the wall time from start are reported next to it. CPU time
//! per million records is taken over the same window.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::contender::{self, Job, Kind, Programs};
use crate::data;
use crate::procfs::{self, MachineCpu, ProcSample};

/// What a throughput run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    /// The contender.
    pub contender: Kind,
    /// The round (0-based); rounds interleave the contenders.
    pub round: usize,
    /// Whether the output held every record in time.
    pub completed: bool,
    /// Records per second in the window.
    pub records_per_s: f64,
    /// Input megabytes (10^6 bytes of key + value) per second over the same window.
    pub mb_per_s: f64,
    /// Seconds from the start of the contender to its first commit.
    pub startup_s: f64,
    /// Seconds of the measurement window (10% to 90% of the input committed).
    pub window_s: f64,
    /// Records committed in the window.
    pub window_records: u64,
    /// Seconds from the start of the contender until every record was committed.
    pub wall_s: f64,
    /// CPU seconds of the contender from its start until every record was committed.
    pub cpu_s: f64,
    /// CPU seconds of the contender in the window.
    pub cpu_window_s: f64,
    /// CPU seconds of the contender per million records, in the window.
    pub cpu_s_per_million: f64,
    /// Peak resident set size of the contender, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds of the broker in the window (when the harness runs it).
    pub broker_cpu_window_s: Option<f64>,
    /// CPU seconds all cores were busy in the window (everything on the machine, other users
    /// included).
    pub machine_busy_window_s: f64,
    /// The output check.
    pub output: Option<OutputCheck>,
    /// How the contender exited when stopped.
    pub exit: String,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl DrainRun {
    /// A run that measured nothing yet: the starting point of a measured run and the record of
    /// one that failed to start.
    pub fn empty(contender: Kind, round: usize) -> Self {
        Self {
            contender,
            round,
            completed: false,
            records_per_s: 0.0,
            mb_per_s: 0.0,
            startup_s: 0.0,
            window_s: 0.0,
            window_records: 0,
            wall_s: 0.0,
            cpu_s: 0.0,
            cpu_window_s: 0.0,
            cpu_s_per_million: 0.0,
            peak_rss_mib: 0.0,
            broker_cpu_window_s: None,
            machine_busy_window_s: 0.0,
            output: None,
            exit: String::new(),
            error: None,
        }
    }
}

/// The preloaded input the contenders drain.
#[derive(Debug, Clone)]
pub struct Input {
    /// Topic name.
    pub topic: String,
    /// Partitions.
    pub partitions: i32,
    /// Records.
    pub records: u64,
    /// Key plus value bytes.
    pub bytes: u64,
    /// End offset of each partition.
    pub end_offsets: Vec<i64>,
}

/// Settings of the throughput runs.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// How often committed offsets and /proc are read.
    pub tick: Duration,
    /// Give up on a contender after this long.
    pub timeout: Duration,
    /// Read the whole output afterwards.
    pub verify: bool,
    /// Sample kstage contenders with `perf record` while they drain.
    pub profile: bool,
}

/// Runs one contender over the input until every record is committed (or the timeout).
pub fn run(
    kind: Kind,
    round: usize,
    programs: &Programs,
    job: &Job,
    input: &Input,
    broker_pid: Option<u32>,
    settings: &DrainSettings,
) -> Result<DrainRun> {
    let watcher = committed_watcher(&job.bootstrap, &job.group)?;
    let mut tpl = TopicPartitionList::new();
    for partition in 0..input.partitions {
        tpl.add_partition(&input.topic, partition);
    }
    let total = input.records;
    let mut running = contender::start(kind, programs, job)?;
    let pid = running.pid();
    let started = running.started;
    let profiler = (settings.profile
        && matches!(kind, Kind::KstageEos | Kind::KstageAlo | Kind::KstageEos2w))
    .then(|| crate::profile::Profiler::attach(pid, &job.dir))
    .flatten();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut last = ProcSample::default();
    let mut error = None;
    let mut exited: Option<String> = None;
    let mut next_tick = started;
    loop {
        // Ticks on a fixed schedule, whatever a look costs.
        next_tick += settings.tick;
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
        if let Some(sample) = procfs::sample(pid) {
            last = sample;
        }
        let committed = committed_records(&watcher, &tpl, &input.end_offsets);
        ticks.push(Tick {
            at: Instant::now(),
            committed,
            cpu_s: last.cpu_s,
            broker_cpu_s: broker_pid.and_then(procfs::sample).map(|s| s.cpu_s),
            machine: MachineCpu::now(),
        });
        if committed >= total {
            break;
        }
        if let Some(status) = &exited {
            error = Some(format!(
                "{} exited ({status}) with {committed} of {total} records committed; see {}",
                kind.name(),
                running.log.display()
            ));
            break;
        }
        // One more look at the offsets after the process is gone (the copier exits by itself).
        exited = running.exited();
        if started.elapsed() > settings.timeout {
            error = Some(format!(
                "{} committed {committed} of {total} records within {} s",
                kind.name(),
                settings.timeout.as_secs()
            ));
            break;
        }
    }
    if let Some(profiler) = profiler {
        profiler.finish();
    }
    let exit = exited.unwrap_or_else(|| running.stop(Duration::from_secs(30)));
    write_ticks(&job.dir.join("progress.csv"), started, &ticks);
    let mut run = DrainRun {
        cpu_s: last.cpu_s,
        peak_rss_mib: last.peak_rss_kib as f64 / 1024.0,
        exit,
        error,
        ..DrainRun::empty(kind, round)
    };
    let done = ticks.last().filter(|t| t.committed >= total);
    let first = ticks.iter().find(|t| t.committed > 0);
    if let (Some(done), Some(first)) = (done, first) {
        let at_least = |fraction: f64| {
            ticks
                .iter()
                .find(|t| t.committed as f64 >= fraction * total as f64)
                .unwrap_or(done)
        };
        let (mut lo, hi) = (at_least(WINDOW.0), at_least(WINDOW.1));
        if hi.committed <= lo.committed || hi.at <= lo.at {
            // Too few ticks in the window (a tiny input): measure from the first commit.
            lo = first;
        }
        let (records, seconds) = if hi.committed > lo.committed && hi.at > lo.at {
            (
                (hi.committed - lo.committed) as f64,
                hi.at.duration_since(lo.at).as_secs_f64(),
            )
        } else {
            // Everything came in one commit: all we know is the time from start.
            (total as f64, done.at.duration_since(started).as_secs_f64())
        };
        run.completed = true;
        run.startup_s = first.at.duration_since(started).as_secs_f64();
        run.window_s = seconds;
        run.window_records = records as u64;
        run.wall_s = done.at.duration_since(started).as_secs_f64();
        run.records_per_s = records / seconds;
        run.mb_per_s = run.records_per_s * (input.bytes as f64 / total as f64) / 1e6;
        run.cpu_window_s = hi.cpu_s - lo.cpu_s;
        run.cpu_s_per_million = run.cpu_window_s / records * 1e6;
        run.broker_cpu_window_s = lo.broker_cpu_s.zip(hi.broker_cpu_s).map(|(a, b)| b - a);
        run.machine_busy_window_s = hi.machine.busy_seconds_since(&lo.machine);
    }
    if settings.verify && run.completed {
        match check_output(&job.bootstrap, &job.output, input.partitions, total) {
            Ok(check) => {
                if check.missing > 0 || (kind.exactly_once() && check.duplicates > 0) {
                    run.error = Some(format!(
                        "the output is wrong: {} missing, {} duplicates",
                        check.missing, check.duplicates
                    ));
                    run.completed = false;
                }
                run.output = Some(check);
            }
            Err(error) => run.error = Some(format!("checking the output: {error:#}")),
        }
    }
    Ok(run)
}

fn committed_watcher(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        // read_uncommitted: OffsetFetch then returns the last committed offsets at once instead
        // of waiting for the group's open transaction (KIP-447 require_stable).
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the offset watcher")
}

/// Writes the progress of a run (seconds from start, records committed, contender CPU seconds),
/// for plots and for finding stalls.
fn write_ticks(path: &std::path::Path, started: Instant, ticks: &[Tick]) {
    let mut csv = String::from("seconds,committed,cpu_s,broker_cpu_s\n");
    for tick in ticks {
        csv.push_str(&format!(
            "{:.3},{},{:.2},{}\n",
            tick.at.duration_since(started).as_secs_f64(),
            tick.committed,
            tick.cpu_s,
            tick.broker_cpu_s
                .map(|c| format!("{c:.2}"))
                .unwrap_or_default()
        ));
    }
    if let Err(error) = std::fs::write(path, csv) {
        eprintln!("harness: writing {}: {error}", path.display());
    }
}

/// The measurement window: from the tick where this fraction of the input was committed to the
/// tick where that one was.
const WINDOW: (f64, f64) = (0.1, 0.9);

/// One look at a running contender.
struct Tick {
    at: Instant,
    committed: u64,
    cpu_s: f64,
    broker_cpu_s: Option<f64>,
    machine: MachineCpu,
}

/// Records below the committed offsets (capped at the end offsets); 0 while nothing is committed.
fn committed_records(watcher: &BaseConsumer, tpl: &TopicPartitionList, ends: &[i64]) -> u64 {
    let Ok(committed) = watcher.committed_offsets(tpl.clone(), Duration::from_secs(5)) else {
        return 0;
    };
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o.clamp(0, ends[e.partition() as usize]) as u64,
            _ => 0,
        })
        .sum()
}

/// What the output of a run holds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutputCheck {
    /// Records read (read_committed).
    pub records: u64,
    /// Input ids not found.
    pub missing: u64,
    /// Records whose id was seen before.
    pub duplicates: u64,
    /// Records that are not benchmark records.
    pub foreign: u64,
}

/// Reads the whole output read_committed and checks every input id is there once.
pub fn check_output(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    total: u64,
) -> Result<OutputCheck> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kstage-bench-check")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = vec![0u64; (total as usize).div_ceil(64)];
    let mut check = OutputCheck {
        records: 0,
        missing: 0,
        duplicates: 0,
        foreign: 0,
    };
    let mut at_end = vec![false; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(300);
    while at_end.iter().any(|e| !e) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the output did not reach its end in 300 s"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(message)) => {
                check.records += 1;
                let seq = message
                    .key()
                    .and_then(|k| data::seq_of_key(data::ID_PREFIX, k))
                    .filter(|s| *s < total);
                match seq {
                    Some(seq) => {
                        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                        if seen[word] & bit != 0 {
                            check.duplicates += 1;
                        }
                        seen[word] |= bit;
                    }
                    None => check.foreign += 1,
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(flag) = at_end.get_mut(partition as usize) {
                    *flag = true;
                }
            }
            Some(Err(error)) => eprintln!("harness: reading the output: {error}"),
        }
    }
    let present: u64 = seen.iter().map(|w| u64::from(w.count_ones())).sum();
    check.missing = total - present;
    Ok(check)
}
