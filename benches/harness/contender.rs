//! The contenders: what each one is, and how to start and stop it.
//!
//! Every contender reads one input topic as a member of its own consumer group (so each run reads
//! the whole preloaded input from the beginning) and writes one output topic. The harness talks to
//! none of them: it watches their group's committed offsets and reads their output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `kstage run --topology bench-enrich` with every default (exactly_once).
    KstageEos,
    /// The same with `--delivery at_least_once`.
    KstageAlo,
    /// kstage exactly_once with `--workers 2`: two consumer + transactional producer pairs in one
    /// process, so one worker's commit overlaps the other's processing. Optional.
    #[value(name = "kstage-eos-2w")]
    #[serde(rename = "kstage-eos-2w")]
    KstageEos2w,
    /// kstage exactly_once with `--commit-policy back_to_back`.
    #[value(name = "kstage-eos-b2b")]
    #[serde(rename = "kstage-eos-b2b")]
    KstageEosB2b,
    /// kstage exactly_once with `--commit-policy target_latency --target-latency 20ms`.
    #[value(name = "kstage-eos-target")]
    #[serde(rename = "kstage-eos-target")]
    KstageEosTarget,
    /// kstage exactly_once with `--pipelined-commits true` (the interval policy).
    KstageEosPipelined,
    /// kstage exactly_once with `--commit-policy back_to_back --pipelined-commits true`.
    #[value(name = "kstage-eos-b2b-pipelined")]
    #[serde(rename = "kstage-eos-b2b-pipelined")]
    KstageEosB2bPipelined,
    /// The limit: a plain rdkafka consume -> produce copy, no transactions, no transform.
    RawCopy,
    /// The peer: the Kafka Streams app in benches/kafka-streams with exactly_once_v2.
    KafkaStreamsEos,
    /// The same with `commit.interval.ms=10`, the obvious tuning for latency.
    #[value(name = "kafka-streams-eos-10ms")]
    #[serde(rename = "kafka-streams-eos-10ms")]
    KafkaStreamsEos10ms,
    /// The same Kafka Streams app with at_least_once (Kafka Streams' own price of exactly-once).
    KafkaStreamsAlo,
    /// Kafka's TransactionalMessageCopier (kafka-tools), group mode, KIP-447 offsets.
    Tmc,
}

impl Kind {
    /// The contenders a default run measures.
    pub const DEFAULT: [Kind; 5] = [
        Kind::KstageEos,
        Kind::KstageAlo,
        Kind::RawCopy,
        Kind::KafkaStreamsEos,
        Kind::Tmc,
    ];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KstageEos => "kstage-eos",
            Kind::KstageAlo => "kstage-alo",
            Kind::KstageEos2w => "kstage-eos-2w",
            Kind::KstageEosB2b => "kstage-eos-b2b",
            Kind::KstageEosTarget => "kstage-eos-target",
            Kind::KstageEosPipelined => "kstage-eos-pipelined",
            Kind::KstageEosB2bPipelined => "kstage-eos-b2b-pipelined",
            Kind::RawCopy => "raw-copy",
            Kind::KafkaStreamsEos => "kafka-streams-eos",
            Kind::KafkaStreamsEos10ms => "kafka-streams-eos-10ms",
            Kind::KafkaStreamsAlo => "kafka-streams-alo",
            Kind::Tmc => "tmc",
        }
    }

    /// What it is, for the report.
    pub fn description(self) -> &'static str {
        match self {
            Kind::KstageEos => "kstage exactly_once (defaults), bench-enrich",
            Kind::KstageAlo => "kstage at_least_once, bench-enrich",
            Kind::KstageEos2w => "kstage exactly_once with --workers 2, bench-enrich",
            Kind::KstageEosB2b => "kstage exactly_once, --commit-policy back_to_back",
            Kind::KstageEosTarget => {
                "kstage exactly_once, --commit-policy target_latency --target-latency 20ms"
            }
            Kind::KstageEosPipelined => "kstage exactly_once, --pipelined-commits true",
            Kind::KstageEosB2bPipelined => {
                "kstage exactly_once, --commit-policy back_to_back --pipelined-commits true"
            }
            Kind::RawCopy => "raw rdkafka copy, no transactions, no transform (the limit)",
            Kind::KafkaStreamsEos => "Kafka Streams exactly_once_v2, same transform (Jackson)",
            Kind::KafkaStreamsEos10ms => "Kafka Streams exactly_once_v2, commit.interval.ms=10",
            Kind::KafkaStreamsAlo => "Kafka Streams at_least_once, same transform (Jackson)",
            Kind::Tmc => {
                "Kafka's TransactionalMessageCopier (copy, no transform; drains only, so no latency run)"
            }
        }
    }

    /// Whether it keeps running on a live input. The TransactionalMessageCopier copies up to the
    /// end offsets it saw when its partitions were assigned and then exits, so it has no latency
    /// run.
    pub fn keeps_running(self) -> bool {
        self != Kind::Tmc
    }

    /// Whether its output must hold every record exactly once.
    pub fn exactly_once(self) -> bool {
        matches!(
            self,
            Kind::KstageEos
                | Kind::KstageEos2w
                | Kind::KstageEosB2b
                | Kind::KstageEosTarget
                | Kind::KstageEosPipelined
                | Kind::KstageEosB2bPipelined
                | Kind::KafkaStreamsEos
                | Kind::KafkaStreamsEos10ms
                | Kind::Tmc
        )
    }
}

/// Where the contenders' programs are, and how to run them.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The repository (for scripts/kafka.sh).
    pub repo: PathBuf,
    /// target/release/kstage.
    pub kstage: PathBuf,
    /// Extra arguments for both kstage contenders (tuning experiments).
    pub kstage_args: Vec<String>,
    /// target/release/examples/bench-raw-copy.
    pub raw_copy: PathBuf,
    /// Extra arguments for the raw copy.
    pub raw_copy_args: Vec<String>,
    /// benches/kafka-streams/target/kstage-bench-streams.jar.
    pub streams_jar: PathBuf,
    /// `java`.
    pub java: String,
    /// JVM options for the Java contenders (heap).
    pub jvm_opts: Vec<String>,
    /// `num.stream.threads` of the Kafka Streams app.
    pub streams_threads: u32,
    /// Records per transaction of the TransactionalMessageCopier.
    pub tmc_transaction_size: u32,
}

/// One run of a contender: its topics, group and log file.
#[derive(Debug, Clone)]
pub struct Job {
    /// Input topic.
    pub input: String,
    /// Output topic.
    pub output: String,
    /// Consumer group (application id, transactional id prefix).
    pub group: String,
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Scratch directory of this run (logs, Kafka Streams state).
    pub dir: PathBuf,
}

/// A running contender.
pub struct Running {
    /// The contender's process (the JVM itself for the Java ones).
    pub child: Child,
    /// When it was started.
    pub started: Instant,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running; `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown ({error})")),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it exited.
    pub fn stop(mut self, grace: Duration) -> String {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => format!("{status} (killed after {} s)", grace.as_secs()),
            Err(error) => format!("unknown ({error})"),
        }
    }
}

/// The command line of a contender for a job.
pub fn command(kind: Kind, programs: &Programs, job: &Job) -> Command {
    match kind {
        Kind::KstageEos
        | Kind::KstageAlo
        | Kind::KstageEos2w
        | Kind::KstageEosB2b
        | Kind::KstageEosTarget
        | Kind::KstageEosPipelined
        | Kind::KstageEosB2bPipelined => {
            let mut command = Command::new(&programs.kstage);
            command.args([
                "run",
                "--topology",
                "bench-enrich",
                "--bootstrap-servers",
                &job.bootstrap,
                "--input",
                &job.input,
                "--output",
                &job.output,
                "--app-id",
                &job.group,
                "--instance-id",
                "0",
            ]);
            if kind == Kind::KstageAlo {
                command.args(["--delivery", "at_least_once"]);
            }
            if kind == Kind::KstageEos2w {
                command.args(["--workers", "2"]);
            }
            if matches!(kind, Kind::KstageEosB2b | Kind::KstageEosB2bPipelined) {
                command.args(["--commit-policy", "back_to_back"]);
            }
            if kind == Kind::KstageEosTarget {
                command.args([
                    "--commit-policy",
                    "target_latency",
                    "--target-latency",
                    "20ms",
                ]);
            }
            if matches!(kind, Kind::KstageEosPipelined | Kind::KstageEosB2bPipelined) {
                command.args(["--pipelined-commits", "true"]);
            }
            command.args(&programs.kstage_args);
            command
        }
        Kind::RawCopy => {
            let mut command = Command::new(&programs.raw_copy);
            command.args([
                "--bootstrap-servers",
                &job.bootstrap,
                "--input",
                &job.input,
                "--output",
                &job.output,
                "--group",
                &job.group,
            ]);
            command.args(&programs.raw_copy_args);
            command
        }
        Kind::KafkaStreamsEos | Kind::KafkaStreamsEos10ms | Kind::KafkaStreamsAlo => {
            let mut command = Command::new(&programs.java);
            command
                .args(&programs.jvm_opts)
                .arg("-jar")
                .arg(&programs.streams_jar);
            if kind == Kind::KafkaStreamsEos10ms {
                command.args(["--config", "commit.interval.ms=10"]);
            }
            let guarantee = if kind != Kind::KafkaStreamsAlo {
                "exactly_once_v2"
            } else {
                "at_least_once"
            };
            command
                .args(["--bootstrap-servers", &job.bootstrap])
                .args(["--input", &job.input, "--output", &job.output])
                .args(["--application-id", &job.group, "--guarantee", guarantee])
                .args(["--threads", &programs.streams_threads.to_string()])
                .arg("--state-dir")
                .arg(job.dir.join("streams-state"));
            command
        }
        Kind::Tmc => {
            // `kafka.sh tool` execs the JVM, so the child's pid is the JVM's.
            let mut command = Command::new(programs.repo.join("scripts/kafka.sh"));
            command
                .env("KSTAGE_TOOL_JVM_OPTS", programs.jvm_opts.join(" "))
                .args(["tool", "org.apache.kafka.tools.TransactionalMessageCopier"])
                .args(["--broker-list", &job.bootstrap])
                .args(["--input-topic", &job.input, "--input-partition", "0"])
                .args(["--output-topic", &job.output])
                .args(["--consumer-group", &job.group])
                .args(["--transactional-id", &format!("{}-tmc", job.group)])
                .args([
                    "--transaction-size",
                    &programs.tmc_transaction_size.to_string(),
                ])
                .args(["--group-mode", "--use-group-metadata"]);
            command
        }
    }
}

/// Starts a contender, its stdout and stderr going to `<job.dir>/<name>.log`.
pub fn start(kind: Kind, programs: &Programs, job: &Job) -> Result<Running> {
    std::fs::create_dir_all(&job.dir)?;
    let log = job.dir.join(format!("{}.log", kind.name()));
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = command(kind, programs, job);
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    let child = command
        .spawn()
        .with_context(|| format!("starting {} ({:?})", kind.name(), command))?;
    Ok(Running {
        child,
        started: Instant::now(),
        log,
    })
}

/// Checks that a contender's program is there before a long run starts.
pub fn check_program(kind: Kind, programs: &Programs) -> Result<()> {
    let needed: &Path = match kind {
        Kind::KstageEos
        | Kind::KstageAlo
        | Kind::KstageEos2w
        | Kind::KstageEosB2b
        | Kind::KstageEosTarget
        | Kind::KstageEosPipelined
        | Kind::KstageEosB2bPipelined => &programs.kstage,
        Kind::RawCopy => &programs.raw_copy,
        Kind::KafkaStreamsEos | Kind::KafkaStreamsEos10ms | Kind::KafkaStreamsAlo => {
            &programs.streams_jar
        }
        Kind::Tmc => return Ok(()),
    };
    anyhow::ensure!(
        needed.exists(),
        "{} needs {}; build it first (scripts/bench.sh does)",
        kind.name(),
        needed.display()
    );
    Ok(())
}
