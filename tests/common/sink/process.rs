//! `kstage sink` as a child process: a config file per spec, spawn per instance, signals, exit
//! with a deadline, stderr kept for diagnostics (like `tests/common/stage.rs` for `kstage run`).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to start a sink: its config file's contents, plus environment.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// The TOML config (without instance_id).
    pub toml: String,
    pub env: Vec<(String, String)>,
}

impl SinkSpec {
    /// A sink of `input` into `table` in group `app_id`, `mode` and the `[sink.columns]` lines.
    pub fn new(
        bootstrap: &str,
        input: &str,
        app_id: &str,
        url: &str,
        mode: &str,
        table: &str,
        columns: &str,
    ) -> Self {
        let toml = format!(
            "bootstrap_servers = \"{bootstrap}\"\ninputs = [\"{input}\"]\napp_id = \"{app_id}\"\n\
             commit_interval = \"50ms\"\nmax_records_per_txn = 2000\n\
             [kafka]\n\"session.timeout.ms\" = \"6000\"\n\
             [sink]\nurl = \"{url}\"\nmode = \"{mode}\"\ntable = \"{table}\"\nretry_timeout = \"90s\"\n\
             [sink.columns]\n{columns}\n"
        );
        Self {
            toml,
            env: Vec::new(),
        }
    }

    /// Sets top-level TOML lines (`key = value`, before the tables), replacing a line of the
    /// same key.
    pub fn top(mut self, lines: &str) -> Self {
        for line in lines.lines() {
            let key = line.split('=').next().unwrap_or_default().trim();
            let kept: Vec<&str> = self
                .toml
                .lines()
                .filter(|l| {
                    l.split('=').next().unwrap_or_default().trim() != key || l.starts_with('[')
                })
                .collect();
            self.toml = format!("{line}\n{}\n", kept.join("\n"));
        }
        self
    }

    /// Adds lines to the `[sink]` section.
    pub fn sink_lines(mut self, lines: &str) -> Self {
        self.toml = self.toml.replace("[sink]\n", &format!("[sink]\n{lines}\n"));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn spawn(&self, instance: &str) -> SinkProcess {
        SinkProcess::spawn(self, instance)
    }
}

/// A running (or exited) sink. Dropping it kills the process if it still runs.
pub struct SinkProcess {
    child: Child,
    status: Option<ExitStatus>,
    stderr_path: PathBuf,
    pub instance: String,
    _dir: tempfile::TempDir,
}

impl SinkProcess {
    fn spawn(spec: &SinkSpec, instance: &str) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the sink's files");
        let config = dir.path().join("sink.toml");
        std::fs::write(&config, &spec.toml).expect("write the sink config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("create the stderr log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kstage"));
        command
            .arg("sink")
            .arg("--config")
            .arg(&config)
            .args(["--instance-id", instance, "--metrics-address", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if (key.starts_with("KSTAGE_") && !key.starts_with("KSTAGE_TEST_"))
                || key == "FAILPOINTS"
            {
                command.env_remove(key.as_ref());
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.env("NO_COLOR", "1");
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn kstage sink");
        eprintln!(
            "started sink {instance} (pid {}) env {:?}",
            child.id(),
            spec.env
        );
        Self {
            child,
            status: None,
            stderr_path,
            instance: instance.to_string(),
            _dir: dir,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    pub fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_none() {
            let _ = kill(self.pid(), signal);
        }
    }

    pub fn sigkill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("query the sink's status");
        }
        self.status
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("the sink did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (`Some`), or until `done` holds first (`None`).
    pub fn wait_exit_or(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if done() {
                return None;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the sink neither exited nor finished within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit code (fails the test if it does not exit).
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(60)).code()
    }

    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn fail(&mut self, message: &str) -> ! {
        let status = self.try_exit();
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "{message}\nsink {} (status {status:?})\n--- stderr tail ---\n{tail}\n---",
            self.instance
        );
    }

    /// Waits until `condition` holds; fails after `timeout`, or when the sink exits first.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition() {
                return;
            }
            if let Some(status) = self.try_exit() {
                if condition() {
                    return;
                }
                self.fail(&format!(
                    "the sink exited ({status}) while waiting until {what}"
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting until {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = kill(self.pid(), Signal::SIGCONT);
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let text = self.stderr();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- sink {} stderr tail ---\n{}",
                self.instance,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}
