//! The `kstage` binary as a child process: spawn with arguments and environment, send it signals,
//! wait for its exit with a deadline, and keep its stderr in a file for diagnostics.
//!
//! Two subcommands: `kstage run` (a topology from `--input` to `--output`, [`StageSpec::new`])
//! and `kstage sink` (a config file, [`StageSpec::sink`]: the TOML is written next to the
//! stage's logs and passed as `--config`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Which `kstage` subcommand a [`StageSpec`] starts.
#[derive(Clone, Debug)]
pub enum Subcommand {
    /// `kstage run --topology ... --input ... --output ...`.
    Run,
    /// `kstage sink --config FILE`, FILE holding this TOML (bootstrap, inputs, app id and the
    /// `[sink]` section: the spec's own fields of those are not used).
    Sink { toml: String },
}

/// How to start one stage process: `kstage run ...` or `kstage sink ...`.
#[derive(Clone, Debug)]
pub struct StageSpec {
    pub subcommand: Subcommand,
    pub bootstrap: String,
    pub topology: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub app_id: String,
    pub instance_id: String,
    /// Further arguments, appended after the required ones.
    pub args: Vec<String>,
    /// Environment variables (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

impl StageSpec {
    /// A `passthrough`-style spec with a quick session timeout, so that the rebalance after a
    /// killed or stopped instance takes seconds, not the default 45 s.
    pub fn new(bootstrap: &str, topology: &str, input: &str, output: &str, app_id: &str) -> Self {
        Self {
            subcommand: Subcommand::Run,
            bootstrap: bootstrap.to_string(),
            topology: topology.to_string(),
            inputs: vec![input.to_string()],
            output: output.to_string(),
            app_id: app_id.to_string(),
            instance_id: "i0".to_string(),
            args: vec!["--kafka".into(), "session.timeout.ms=6000".into()],
            env: Vec::new(),
        }
    }

    /// A `kstage sink` spec: its whole configuration is `toml` (instance id and a disabled
    /// metrics endpoint come as flags).
    pub fn sink(toml: &str) -> Self {
        Self {
            subcommand: Subcommand::Sink {
                toml: toml.to_string(),
            },
            bootstrap: String::new(),
            topology: String::new(),
            inputs: Vec::new(),
            output: String::new(),
            app_id: String::new(),
            instance_id: "i0".to_string(),
            args: vec!["--metrics-address".into(), "off".into()],
            env: Vec::new(),
        }
    }

    pub fn instance(mut self, instance_id: &str) -> Self {
        self.instance_id = instance_id.to_string();
        self
    }

    /// Appends `flag value` (e.g. `arg("--commit-interval", "5s")`).
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The full command line after the binary name; `dir` is where a sink's config file is.
    pub fn command_line(&self, dir: &Path) -> Vec<String> {
        if let Subcommand::Sink { .. } = self.subcommand {
            let mut line: Vec<String> = vec![
                "sink".into(),
                "--config".into(),
                dir.join(SINK_CONFIG).display().to_string(),
                "--instance-id".into(),
                self.instance_id.clone(),
            ];
            line.extend(self.args.iter().cloned());
            return line;
        }
        let mut line: Vec<String> = vec![
            "run".into(),
            "--topology".into(),
            self.topology.clone(),
            "--bootstrap-servers".into(),
            self.bootstrap.clone(),
        ];
        for input in &self.inputs {
            line.push("--input".into());
            line.push(input.clone());
        }
        line.extend([
            "--output".into(),
            self.output.clone(),
            "--app-id".into(),
            self.app_id.clone(),
            "--instance-id".into(),
            self.instance_id.clone(),
        ]);
        line.extend(self.args.iter().cloned());
        line
    }

    /// Starts the stage.
    pub fn spawn(&self) -> Stage {
        Stage::spawn(self)
    }
}

/// The file name of a sink's config, in the stage's directory.
const SINK_CONFIG: &str = "sink.toml";

/// A running (or exited) stage process. Dropping it kills the process if it is still running.
pub struct Stage {
    child: Child,
    status: Option<ExitStatus>,
    stderr_path: PathBuf,
    description: String,
    _dir: tempfile::TempDir,
}

impl Stage {
    fn spawn(spec: &StageSpec) -> Self {
        let dir = tempfile::tempdir().expect("create a directory for the stage's logs");
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");
        let stderr = File::create(&stderr_path).expect("create stderr log file");
        let stdout = File::create(&stdout_path).expect("create stdout log file");
        if let Subcommand::Sink { toml } = &spec.subcommand {
            std::fs::write(dir.path().join(SINK_CONFIG), toml).expect("write the sink's config");
        }
        let line = spec.command_line(dir.path());
        // KSTAGE_TEST_BINARY runs the tests against another build (e.g. an older one, to see
        // a test fail on the code before a fix).
        let binary = std::env::var_os("KSTAGE_TEST_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_kstage").into());
        let mut command = Command::new(binary);
        command
            .args(&line)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Hermetic: only this spec configures the stage, not whatever KSTAGE_* or FAILPOINTS
        // variables the test runner happens to have.
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
        // Plain log lines in the captured stderr (no ANSI colour codes).
        command.env("NO_COLOR", "1");
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn the kstage binary");
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let description = format!(
            "pid {} `{} kstage {}`",
            child.id(),
            env.join(" "),
            line.join(" ")
        );
        eprintln!("started stage {description}");
        Self {
            child,
            status: None,
            stderr_path,
            description,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_some() {
            return;
        }
        // ESRCH here means it exited between the check and the signal: nothing to do.
        let _ = kill(self.pid(), signal);
    }

    pub fn sigterm(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn sigstop(&mut self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn sigcont(&mut self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, then the exit code (`None`: ended by a signal); fails the test if the stage
    /// does not exit within a minute.
    pub fn stop(&mut self) -> Option<i32> {
        self.sigterm();
        self.wait_exit(Duration::from_secs(60)).code()
    }

    /// SIGKILL and reap: a crash without any chance to clean up.
    pub fn sigkill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(30))
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("query the stage's status");
        }
        self.status
    }

    /// Waits for the process to exit; fails the test (with the stderr tail) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("the stage did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines the stage wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Everything the stage wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the stage has written `needle` to stderr (fails as [`Self::wait_until`]).
    pub fn wait_for_stderr(&mut self, timeout: Duration, needle: &str) {
        let path = self.stderr_path.clone();
        self.wait_until(timeout, &format!("the stage logs {needle:?}"), || {
            std::fs::read(&path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
        });
    }

    /// A diagnostic block: which process, its status, and the tail of its stderr.
    pub fn diagnostics(&mut self) -> String {
        let status = self.try_exit();
        format!(
            "stage {} (status: {})\n--- stderr tail ---\n{}\n---",
            self.description,
            status.map_or("running".to_string(), |s| s.to_string()),
            self.stderr_tail(60)
        )
    }

    /// Fails the test with `message` and this stage's diagnostics.
    pub fn fail(&mut self, message: &str) -> ! {
        let diagnostics = self.diagnostics();
        panic!("{message}\n{diagnostics}");
    }

    /// Waits until `condition` holds. Fails the test, with the stage's stderr tail, after `timeout`
    /// or as soon as the stage exits while the condition does not hold.
    pub fn wait_until(&mut self, timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
        if let Some(status) = self.wait_until_or_exit(timeout, what, condition) {
            self.fail(&format!(
                "the stage exited ({status}) while waiting until {what}"
            ));
        }
    }

    /// Waits until `condition` holds (`None`) or the stage exits (`Some(status)`, the condition not
    /// holding). Fails the test, with the stage's stderr tail, after `timeout`.
    pub fn wait_until_or_exit(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if condition() {
                return None;
            }
            if let Some(status) = self.try_exit() {
                // It may have reached the condition just before exiting.
                return if condition() { None } else { Some(status) };
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting until {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = kill(self.pid(), Signal::SIGCONT);
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// Exit code of a process that exited normally, `None` if a signal ended it.
pub fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code()
}

/// The signal that ended the process, if one did.
pub fn exit_signal(status: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}
