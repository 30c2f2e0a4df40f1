//! One running instance of a stage under the chaos harness, behind the few operations a
//! [`super::fleet::Fleet`] needs (signals, exit status, captured stderr): a `kstage` process
//! ([`Stage`]) or, for the fail-over comparison, the Kafka Streams peer ([`StreamsProcess`], the
//! `PassthroughApp` of `benches/kafka-streams` under exactly_once_v2).
//!
//! The peer gets the same pipeline settings as the stage it stands in for: the stage spec's
//! `--kafka KEY=VALUE` settings (the harness's `session.timeout.ms` and
//! `heartbeat.interval.ms`) become `--config KEY=VALUE`, its `client.id` is the stage's
//! transactional id (`<app_id>-<id>`, so its consumer is `<app_id>-<id>-StreamThread-1-consumer`),
//! its `transaction.timeout.ms` is the harness's, and with static membership its
//! `group.instance.id` is the transactional id too. Each instance id keeps its own state
//! directory across restarts, as a StatefulSet volume would.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::stage::{Stage, StageSpec};

/// What the fleet does with an instance.
pub trait Instance {
    fn sigkill(&mut self);
    fn sigterm(&mut self);
    fn sigstop(&mut self);
    fn sigcont(&mut self);
    /// The exit status once it has exited.
    fn try_exit(&mut self) -> Option<ExitStatus>;
    /// Everything it wrote to stderr so far.
    fn stderr(&self) -> String;
    /// Its last `lines` lines of stderr.
    fn stderr_tail(&self, lines: usize) -> String;
    /// Its command line, status and stderr tail, for a failed wait.
    fn diagnostics(&mut self) -> String;
}

impl Instance for Stage {
    fn sigkill(&mut self) {
        Stage::sigkill(self);
    }
    fn sigterm(&mut self) {
        Stage::sigterm(self);
    }
    fn sigstop(&mut self) {
        Stage::sigstop(self);
    }
    fn sigcont(&mut self) {
        Stage::sigcont(self);
    }
    fn try_exit(&mut self) -> Option<ExitStatus> {
        Stage::try_exit(self)
    }
    fn stderr(&self) -> String {
        Stage::stderr(self)
    }
    fn stderr_tail(&self, lines: usize) -> String {
        Stage::stderr_tail(self, lines)
    }
    fn diagnostics(&mut self) -> String {
        Stage::diagnostics(self)
    }
}

/// The Kafka Streams peer: where its jar is, and the state directories of its instances.
pub struct StreamsApp {
    java: String,
    classpath: String,
    state: tempfile::TempDir,
    transaction_timeout: Duration,
}

impl StreamsApp {
    /// The app built by `mvn -f benches/kafka-streams/pom.xml package`
    /// (`KSTAGE_STREAMS_JAR` overrides the jar, `JAVA` the java binary); fails the test with
    /// that command if the jar is missing.
    pub fn new(transaction_timeout: Duration) -> Self {
        let jar = std::env::var_os("KSTAGE_STREAMS_JAR").map_or_else(
            || {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("benches/kafka-streams/target/kstage-bench-streams.jar")
            },
            PathBuf::from,
        );
        assert!(
            jar.is_file(),
            "no Kafka Streams peer at {} (build it: mvn -q -f benches/kafka-streams/pom.xml \
             package; scripts/reliability.sh full does)",
            jar.display()
        );
        let lib = jar.with_file_name("lib").join("*");
        Self {
            java: std::env::var("JAVA").unwrap_or_else(|_| "java".into()),
            classpath: format!("{}:{}", jar.display(), lib.display()),
            state: tempfile::tempdir().expect("create the Kafka Streams state directory"),
            transaction_timeout,
        }
    }

    /// Starts instance `id` of the pipeline `spec` describes.
    pub fn spawn(&self, spec: &StageSpec, id: &str, static_membership: bool) -> StreamsProcess {
        let client_id = format!("{}-{id}", spec.app_id);
        let mut configs = vec![
            format!("client.id={client_id}"),
            format!(
                "producer.transaction.timeout.ms={}",
                self.transaction_timeout.as_millis()
            ),
        ];
        if static_membership {
            configs.push(format!("group.instance.id={client_id}"));
        }
        configs.extend(
            spec.args
                .windows(2)
                .filter(|pair| pair[0] == "--kafka")
                .map(|pair| pair[1].clone()),
        );
        let mut line: Vec<String> = vec![
            "-Xmx256m".into(),
            "-cp".into(),
            self.classpath.clone(),
            "kstage.bench.PassthroughApp".into(),
            "--bootstrap-servers".into(),
            spec.bootstrap.clone(),
            "--application-id".into(),
            spec.app_id.clone(),
            "--output".into(),
            spec.output.clone(),
            "--state-dir".into(),
            self.state.path().join(id).display().to_string(),
        ];
        for input in &spec.inputs {
            line.extend(["--input".into(), input.clone()]);
        }
        for config in configs {
            line.extend(["--config".into(), config]);
        }
        StreamsProcess::spawn(&self.java, &line)
    }
}

/// A running (or exited) Kafka Streams instance. Dropping it kills the process if it runs.
pub struct StreamsProcess {
    child: Child,
    status: Option<ExitStatus>,
    stderr_path: PathBuf,
    description: String,
    _dir: tempfile::TempDir,
}

impl StreamsProcess {
    fn spawn(java: &str, line: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("create a directory for the instance's logs");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("create stderr log file");
        let stdout = File::create(dir.path().join("stdout.log")).expect("create stdout log");
        let child = Command::new(java)
            .args(line)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {java} (the Kafka Streams peer): {e}"));
        let description = format!("pid {} `{java} {}`", child.id(), line.join(" "));
        eprintln!("started Kafka Streams instance {description}");
        Self {
            child,
            status: None,
            stderr_path,
            description,
            _dir: dir,
        }
    }

    fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // The process may exit between the check and the signal: nothing to do then.
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }
}

impl Instance for StreamsProcess {
    fn sigkill(&mut self) {
        self.signal(Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }
    fn sigterm(&mut self) {
        self.signal(Signal::SIGTERM);
    }
    fn sigstop(&mut self) {
        self.signal(Signal::SIGSTOP);
    }
    fn sigcont(&mut self) {
        self.signal(Signal::SIGCONT);
    }
    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
    fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
    fn diagnostics(&mut self) -> String {
        let status = self.try_exit();
        format!(
            "Kafka Streams instance {} ({status:?}); stderr tail:\n{}",
            self.description,
            self.stderr_tail(30)
        )
    }
}

impl Drop for StreamsProcess {
    fn drop(&mut self) {
        Instance::sigkill(self);
    }
}
