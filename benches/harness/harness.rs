//! The kstage benchmark harness: kstage against Kafka Streams exactly_once_v2, Kafka's
//! TransactionalMessageCopier and the raw copy limit, side by side on one broker and one input.
//!
//! ```text
//! start a private broker (scripts/kafka.sh, own port and data dir)
//! preload the input topic: N JSON records of about S bytes, unique ids, P partitions
//! throughput: R rounds; each round runs every contender once (order rotated per round) until its
//!             group has committed the whole input; CPU s and peak RSS from /proc; output checked
//! latency:    rounds again, each contender at one load (or at fractions of its own median
//!             throughput, --latency-loads: the curves) on fresh topics; created -> visible
//!             read_committed, HdrHistogram percentiles, CPU per record, markers written,
//!             the broker's transaction requests counted over JMX (requests.rs)
//! distant:    --rtt-ms puts a delaying proxy in front of the broker (proxy.rs)
//! report:     results.json, report.md (medians, ratios per run pair), chart.svg
//! ```
//!
//! Run it through `scripts/bench.sh`, which builds every contender first. See docs/BENCHMARKS.md.

mod broker;
mod chart;
mod contender;
mod data;
mod drain;
mod latency;
mod procfs;
mod profile;
mod proxy;
mod report;
mod requests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use clap::Parser;
use serde::Serialize;

use contender::{Job, Kind, Programs};

/// Benchmarks kstage against Kafka Streams and the raw copy limit on one broker.
#[derive(Debug, Parser)]
#[command(name = "bench-harness")]
struct Args {
    /// Records to preload and drain.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Value size in bytes (JSON padded to about this size).
    #[arg(long, default_value_t = 200)]
    record_size: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Throughput runs per contender (interleaved rounds).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Latency runs per contender (default: as many as --runs; 0 skips the latency runs).
    #[arg(long)]
    latency_runs: Option<usize>,
    /// Measured seconds of each latency run.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
    /// Warm-up seconds of each latency run (not measured). Long enough for a JVM's JIT to settle
    /// and for the backlog a cold start builds to drain (latency-by-second.csv shows it).
    #[arg(long, default_value_t = 30)]
    latency_warmup: u64,
    /// One offered load (records/s) for every contender's latency runs. By default all run at half
    /// of the lowest median drain throughput among the contenders that have latency runs: the
    /// same load for everyone, at most half of anyone's maximum. (Half of the fastest one's is
    /// more than this machine can carry while the harness's own load producer and reader share
    /// its two cores: kstage-eos at 224,750 records/s fell 13 s behind.)
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Run each contender at half of its own median throughput instead.
    #[arg(long, conflicts_with = "latency_rate")]
    latency_own_half: bool,
    /// Latency curves: run each contender at each of these fractions of its own median drain
    /// throughput (e.g. 0.1,0.25,0.5,0.75), instead of at one load.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["latency_rate", "latency_own_half"])]
    latency_loads: Vec<f64>,
    /// Contenders, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Kind::DEFAULT)]
    contenders: Vec<Kind>,
    /// Use this running cluster instead of starting a broker.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Client port of the broker the harness starts.
    #[arg(long, default_value_t = 19092)]
    port: u16,
    /// Data directory of the broker the harness starts (wiped).
    #[arg(long, default_value = "/tmp/kstage-bench-kafka")]
    data_dir: PathBuf,
    /// A distant broker: the round trip, in ms, that a delaying proxy in front of the broker the
    /// harness starts adds to every connection (see proxy.rs). 0: none.
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// Extra server.properties entries for the broker (KEY=VALUE, repeatable).
    #[arg(long)]
    broker_prop: Vec<String>,
    /// Results directory (default target/bench/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also copy the chart here (e.g. docs/benchmarks.svg).
    #[arg(long)]
    publish_chart: Option<PathBuf>,
    /// The kstage binary.
    #[arg(long)]
    kstage_bin: Option<PathBuf>,
    /// The raw copy binary.
    #[arg(long)]
    raw_copy_bin: Option<PathBuf>,
    /// The Kafka Streams app's jar.
    #[arg(long)]
    streams_jar: Option<PathBuf>,
    /// JVM options of the Java contenders.
    #[arg(long, default_value = "-Xms128m -Xmx512m")]
    jvm_opts: String,
    /// num.stream.threads of the Kafka Streams app.
    #[arg(long, default_value_t = 1)]
    streams_threads: u32,
    /// Records per transaction of the TransactionalMessageCopier (also its max.poll.records).
    #[arg(long, default_value_t = 500)]
    tmc_transaction_size: u32,
    /// An extra argument for both kstage contenders (repeatable), e.g.
    /// --kstage-arg=--producer-property --kstage-arg=linger.ms=10.
    #[arg(long = "kstage-arg", allow_hyphen_values = true)]
    kstage_args: Vec<String>,
    /// An extra argument for the raw copy (repeatable), e.g.
    /// --raw-copy-arg=--consumer-property --raw-copy-arg=fetch.queue.backoff.ms=10.
    #[arg(long = "raw-copy-arg", allow_hyphen_values = true)]
    raw_copy_args: Vec<String>,
    /// Give up on a throughput run after this many seconds.
    #[arg(long, default_value_t = 900)]
    run_timeout: u64,
    /// How often progress is sampled, ms.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    /// Seconds to pause between runs (lets the broker settle).
    #[arg(long, default_value_t = 3)]
    pause: u64,
    /// Do not read the outputs back to check them.
    #[arg(long)]
    no_verify: bool,
    /// Sample the kstage contenders with `perf record -g` during their drains (writes
    /// perf-report.txt next to each run's log). Costs throughput: profile in a run of its own.
    #[arg(long)]
    profile: bool,
}

#[derive(Serialize)]
struct Results<'a> {
    command: String,
    machine: String,
    records: u64,
    record_size: usize,
    input_bytes: u64,
    partitions: i32,
    runs: usize,
    drains: &'a [drain::DrainRun],
    latencies: &'a [latency::LatencyRun],
    summaries: Vec<report::Summary>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join(format!("target/bench/{stamp}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let programs = Programs {
        repo: repo.clone(),
        kstage: args
            .kstage_bin
            .clone()
            .unwrap_or_else(|| repo.join("target/release/kstage")),
        kstage_args: args.kstage_args.clone(),
        raw_copy_args: args.raw_copy_args.clone(),
        raw_copy: args
            .raw_copy_bin
            .clone()
            .unwrap_or_else(|| repo.join("target/release/examples/bench-raw-copy")),
        streams_jar: args
            .streams_jar
            .clone()
            .unwrap_or_else(|| repo.join("benches/kafka-streams/target/kstage-bench-streams.jar")),
        java: std::env::var("JAVA_HOME")
            .map(|home| format!("{home}/bin/java"))
            .unwrap_or_else(|_| "java".into()),
        jvm_opts: args.jvm_opts.split_whitespace().map(String::from).collect(),
        streams_threads: args.streams_threads,
        tmc_transaction_size: args.tmc_transaction_size,
    };
    for &kind in &args.contenders {
        contender::check_program(kind, &programs)?;
    }

    // A distant broker: the proxy first, so the broker's start-up check reaches it.
    let mut broker_props = args.broker_prop.clone();
    let proxy = (args.rtt_ms > 0.0 && args.bootstrap.is_none())
        .then(|| proxy::in_front_of(args.port, args.rtt_ms, &mut broker_props))
        .transpose()?;
    let mut broker = match &args.bootstrap {
        Some(bootstrap) => broker::Broker::external(bootstrap.clone()),
        None => broker::Broker::start(&repo, args.port, &args.data_dir, &broker_props)?,
    };
    if let Some(proxy) = &proxy {
        broker.bootstrap = proxy.address.clone();
    }
    let result = run(&args, &programs, &broker, &out, stamp);
    broker.stop();
    drop(proxy);
    result
}

fn run(
    args: &Args,
    programs: &Programs,
    broker: &broker::Broker,
    out: &std::path::Path,
    stamp: u64,
) -> Result<()> {
    let bootstrap = broker.bootstrap.clone();
    let admin = broker::Admin::new(&bootstrap)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = procfs::machine_description();
    eprintln!("harness: {machine}; results in {}", out.display());

    // The input, shared by every throughput run.
    let input_topic = format!("bench-{stamp}-in");
    admin.create_topic(&input_topic, args.partitions)?;
    eprintln!(
        "harness: preloading {} records of {} bytes into {input_topic}",
        args.records, args.record_size
    );
    let preloaded = data::preload(&bootstrap, &input_topic, args.records, args.record_size)?;
    let end_offsets = admin.end_offsets(&input_topic, args.partitions)?;
    anyhow::ensure!(
        end_offsets.iter().sum::<i64>() as u64 == args.records,
        "the input holds {} records, not {}",
        end_offsets.iter().sum::<i64>(),
        args.records
    );
    eprintln!(
        "harness: preloaded {:.0} MB in {:.1} s",
        preloaded.bytes as f64 / 1e6,
        preloaded.seconds
    );
    let input = drain::Input {
        topic: input_topic,
        partitions: args.partitions,
        records: args.records,
        bytes: preloaded.bytes,
        end_offsets,
    };
    let settings = drain::DrainSettings {
        tick: Duration::from_millis(args.tick_ms),
        timeout: Duration::from_secs(args.run_timeout),
        verify: !args.no_verify,
        profile: args.profile,
    };
    let write = |drains: &[drain::DrainRun], latencies: &[latency::LatencyRun]| -> Result<()> {
        let summaries = report::summarise(&args.contenders, drains, latencies);
        let results = Results {
            command: command.clone(),
            machine: machine.clone(),
            records: args.records,
            record_size: args.record_size,
            input_bytes: input.bytes,
            partitions: args.partitions,
            runs: args.runs,
            drains,
            latencies,
            summaries,
        };
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(&results)?,
        )?;
        Ok(())
    };

    // Throughput rounds, the order rotated each round.
    let mut drains = Vec::new();
    for round in 0..args.runs {
        for i in 0..args.contenders.len() {
            let kind = args.contenders[(i + round) % args.contenders.len()];
            let name = format!("bench-{stamp}-{}-r{}", kind.name(), round + 1);
            let job = Job {
                input: input.topic.clone(),
                output: format!("{name}-out"),
                group: name.clone(),
                bootstrap: bootstrap.clone(),
                dir: out.join(&name),
            };
            admin.create_topic(&job.output, args.partitions)?;
            eprintln!(
                "harness: round {} of {}: {}",
                round + 1,
                args.runs,
                kind.name()
            );
            let run = drain::run(kind, round, programs, &job, &input, broker.pid(), &settings)
                .unwrap_or_else(|error| failed_drain(kind, round, &error));
            eprintln!(
                "harness:   {:.0} rec/s, {:.1} MB/s, CPU {:.1} s, peak RSS {:.0} MiB{}",
                run.records_per_s,
                run.mb_per_s,
                run.cpu_s,
                run.peak_rss_mib,
                run.error
                    .as_deref()
                    .map(|e| format!(" (failed: {e})"))
                    .unwrap_or_default()
            );
            drains.push(run);
            admin.delete_topics(&[&job.output]);
            write(&drains, &[])?;
            std::thread::sleep(Duration::from_secs(args.pause));
        }
    }
    admin.delete_topics(&[&input.topic]);

    // Latency rounds.
    let summaries = report::summarise(&args.contenders, &drains, &[]);
    let lat_settings = latency::LatencySettings {
        warmup: Duration::from_secs(args.latency_warmup),
        measured: Duration::from_secs(args.latency_seconds),
        record_size: args.record_size,
        partitions: args.partitions,
    };
    let loads = latency::Loads {
        fractions: args.latency_loads.clone(),
        rate: args.latency_rate,
        own_half: args.latency_own_half,
        contenders: args.contenders.clone(),
    };
    let mut latencies = Vec::new();
    for round in 0..args.latency_runs.unwrap_or(args.runs) {
        for i in 0..args.contenders.len() {
            let kind = args.contenders[(i + round) % args.contenders.len()];
            if !kind.keeps_running() {
                continue;
            }
            for (fraction, rate) in latency::points(&loads, &summaries, kind) {
                let Some(rate) = rate else {
                    eprintln!(
                        "harness: no latency run for {}: it never completed a drain",
                        kind.name()
                    );
                    continue;
                };
                let load = fraction.map_or(String::new(), |f| format!("-{:.0}pct", f * 100.0));
                let name = format!("bench-{stamp}-lat-{}{load}-r{}", kind.name(), round + 1);
                let job = Job {
                    input: format!("{name}-in"),
                    output: format!("{name}-out"),
                    group: name.clone(),
                    bootstrap: bootstrap.clone(),
                    dir: out.join(&name),
                };
                admin.create_topic(&job.input, args.partitions)?;
                admin.create_topic(&job.output, args.partitions)?;
                eprintln!(
                    "harness: latency round {}: {} at {rate:.0} rec/s",
                    round + 1,
                    kind.name()
                );
                let mut run =
                    latency::run(kind, round, programs, &job, rate, &lat_settings, broker)
                        .unwrap_or_else(|error| {
                            latency::LatencyRun::failed(kind, round, rate, &error)
                        });
                run.load_fraction = fraction;
                let input_end = admin.end_offsets(&job.input, args.partitions);
                let output_end = admin.end_offsets(&job.output, args.partitions);
                if let (Ok(input_end), Ok(output_end)) = (input_end, output_end) {
                    let input: i64 = input_end.iter().sum();
                    run.input_records = Some(input);
                    run.output_markers = Some(output_end.iter().sum::<i64>() - input);
                }
                eprintln!(
                    "harness:   p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms{}",
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    run.error
                        .as_deref()
                        .map(|e| format!(" (failed: {e})"))
                        .unwrap_or_default()
                );
                latencies.push(run);
                admin.delete_topics(&[&job.input, &job.output]);
                write(&drains, &latencies)?;
                std::thread::sleep(Duration::from_secs(args.pause));
            }
        }
    }

    write(&drains, &latencies)?;
    let summaries = report::summarise(&args.contenders, &drains, &latencies);
    let heading = format!(
        "{} records of {} bytes, {} partitions, {} round(s)",
        args.records, args.record_size, args.partitions, args.runs
    );
    let context = vec![
        format!("command: `{command}`"),
        format!("machine: {machine}; broker and contenders share it"),
        format!(
            "broker: Apache Kafka {} (single KRaft node, scripts/kafka.sh) at {bootstrap}",
            std::env::var("KSTAGE_KAFKA_VERSION").unwrap_or_else(|_| "4.4.0".into())
        ),
        format!(
            "input: {} MB (keys + values); JVM options of the Java contenders: `{}`",
            input.bytes / 1_000_000,
            args.jvm_opts
        ),
        format!(
            "kstage: {} (git {})",
            programs.kstage.display(),
            git_revision(&programs.repo)
        ),
        format!("results: {}", out.display()),
    ];
    let md = report::markdown(&heading, &context, &summaries, &drains, &latencies);
    std::fs::write(out.join("report.md"), &md)?;
    let svg = chart::svg(
        &format!(
            "kstage benchmark: {} records × {} B, {} partitions, 1 broker, same machine",
            args.records, args.record_size, args.partitions
        ),
        &match args.latency_rate {
            _ if !args.latency_loads.is_empty() => "End-to-end latency against offered load (each \
                                                   contender at fractions of its own median \
                                                   throughput), ms (created -> visible \
                                                   read_committed)"
                .to_string(),
            Some(rate) => format!(
                "End-to-end latency at {rate:.0} records/s, ms (created -> visible read_committed)"
            ),
            None if args.latency_own_half => "End-to-end latency at half of each contender's \
                                              median throughput, ms (created -> visible \
                                              read_committed)"
                .to_string(),
            None => "End-to-end latency at one load for all, half of the slowest contender's \
                     median throughput, ms (created -> visible read_committed)"
                .to_string(),
        },
        &summaries,
        &latencies,
    )
    .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    std::fs::write(out.join("chart.svg"), &svg)?;
    if let Some(path) = &args.publish_chart {
        std::fs::write(path, &svg).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{md}");
    eprintln!(
        "harness: wrote {}/{{results.json,report.md,chart.svg}}",
        out.display()
    );
    Ok(())
}

/// `git describe --always --dirty` of the repository, or "unknown".
fn git_revision(repo: &std::path::Path) -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn failed_drain(kind: Kind, round: usize, error: &anyhow::Error) -> drain::DrainRun {
    drain::DrainRun {
        error: Some(format!("{error:#}")),
        ..drain::DrainRun::empty(kind, round)
    }
}
