//! `--profile`: samples a kstage contender with `perf record` while it drains, and writes the
//! hottest functions next to the run's log (`perf.data`, `perf-report.txt`).
//!
//! Sampling costs the contender some throughput, so a profiled run's numbers are not comparable
//! with unprofiled ones; profile in a run of its own (`--contenders kstage-eos --profile`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `perf record` attached to a process.
pub struct Profiler {
    child: Child,
    data: PathBuf,
}

impl Profiler {
    /// Attaches `perf record -g` (999 Hz) to `pid`, writing `<dir>/perf.data`.
    pub fn attach(pid: u32, dir: &Path) -> Option<Self> {
        let data = dir.join("perf.data");
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| eprintln!("harness: perf record did not start: {error}"))
            .ok()?;
        Some(Self { child, data })
    }

    /// Stops recording (SIGINT, as perf expects) and writes `perf-report.txt`: self time per
    /// function, then the call graph of the hottest ones.
    pub fn finish(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.5",
                "-i",
            ])
            .arg(&self.data)
            .args(["--sort", "dso,symbol", "-g", "none"])
            .output();
        match report {
            Ok(out) => {
                let path = self.data.with_file_name("perf-report.txt");
                if let Err(error) = std::fs::write(&path, out.stdout) {
                    eprintln!("harness: writing {}: {error}", path.display());
                } else {
                    eprintln!("harness:   profile in {}", path.display());
                }
            }
            Err(error) => eprintln!("harness: perf report: {error}"),
        }
    }
}
