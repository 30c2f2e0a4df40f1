//! The schema registry fixture: where the shared Apicurio registry is, a private registry a test
//! can pause and stop (for outage tests), and Avro codecs that speak the Confluent wire format
//! against either.
//!
//! Where the shared registry comes from: `KSTAGE_TEST_REGISTRY_URL` (set by `scripts/test.sh`).
//! Without it the harness ignores the tests that need it, unless `KSTAGE_TEST_REQUIRE_BROKER=1`,
//! in which case they fail.
//!
//! A private registry ([`OwnRegistry`]) is started with `scripts/registry.sh` on a free port and a
//! fresh data directory. Apicurio keeps its schemas in memory, so a restart loses them: outage
//! tests pause it (SIGSTOP) and resume it (SIGCONT) instead.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kstage::codec::{Codecs, Format, RegistryConfig, TopicFormat};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The shared registry's Confluent-compatible base URL; panics when there is none (the harness
/// ignores the tests that need it unless `KSTAGE_TEST_REQUIRE_BROKER=1`).
pub fn registry_url() -> String {
    match std::env::var("KSTAGE_TEST_REGISTRY_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "no schema registry: set KSTAGE_TEST_REGISTRY_URL (scripts/test.sh does; e.g. \
             http://127.0.0.1:38081/apis/ccompat/v7)"
        ),
    }
}

/// `let url = require_registry!();` — the shared registry's URL (see [`registry_url`]).
#[macro_export]
macro_rules! require_registry {
    () => {
        $crate::common::registry::registry_url()
    };
}

/// Codecs with `string` keys and Avro values on `topics` (and `string:json` elsewhere), against
/// the registry at `url`. Encoding registers the value's schema under `<topic>-value`.
pub fn avro_codecs(url: &str, topics: &[&str]) -> Codecs {
    let avro = TopicFormat {
        key: Format::String,
        value: Format::Avro,
        value_schema: None,
    };
    let formats: BTreeMap<String, TopicFormat> = topics
        .iter()
        .map(|t| (t.to_string(), avro.clone()))
        .collect();
    let mut registry = RegistryConfig::new(url);
    registry.unavailable_timeout = Duration::from_secs(30);
    Codecs::new(TopicFormat::default(), formats, Some(&registry))
        .unwrap_or_else(|e| panic!("build Avro codecs for {url}: {e}"))
}

/// The schema registered as the latest version of `subject` (its JSON text), if any.
pub fn latest_schema(url: &str, subject: &str) -> Option<serde_json::Value> {
    let response = reqwest::blocking::Client::new()
        .get(format!("{url}/subjects/{subject}/versions/latest"))
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap_or_else(|e| panic!("ask {url} for {subject}: {e}"));
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let body: serde_json::Value = response
        .error_for_status()
        .unwrap_or_else(|e| panic!("ask {url} for {subject}: {e}"))
        .json()
        .unwrap_or_else(|e| panic!("answer for {subject} is not JSON: {e}"));
    let schema = body.get("schema")?.as_str()?;
    Some(serde_json::from_str(schema).expect("the registered schema is JSON"))
}

/// The repository root (where `scripts/` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free local TCP port whose successor is free too (Apicurio's management port is PORT+1),
/// outside Linux's ephemeral range so that client sockets do not take it meanwhile.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let port: u16 = 20000 + (rand::random::<u16>() % 12000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
    panic!("no free port pair found for a private schema registry");
}

/// A private Apicurio registry for one test, started by `scripts/registry.sh`. Dropping it stops
/// it (resuming it first if paused) and removes its data directory.
pub struct OwnRegistry {
    /// Confluent-compatible base URL.
    pub url: String,
    port: u16,
    data: PathBuf,
    pid: Pid,
}

impl OwnRegistry {
    /// Starts a registry on a free port (a few seconds); retries a port that was taken meanwhile.
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let data = std::env::temp_dir().join(format!(
                "kstage-test-registry-{:016x}",
                rand::random::<u64>()
            ));
            let output = registry_script(port, &data, "start");
            if output.status.success() {
                let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
                let pid_text = std::fs::read_to_string(data.join("pid"))
                    .unwrap_or_else(|e| panic!("read the registry's pid file: {e}"));
                let pid: i32 = pid_text
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("registry pid {pid_text:?}: {e}"));
                eprintln!("started a private schema registry at {url} (pid {pid})");
                return Self {
                    url,
                    port,
                    data,
                    pid: Pid::from_raw(pid),
                };
            }
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
            cleanup_data(&data);
        }
        panic!("scripts/registry.sh start failed three times; last stderr:\n{last_error}");
    }

    /// Freezes the registry (SIGSTOP): it accepts connections but never answers.
    pub fn pause(&self) {
        kill(self.pid, Signal::SIGSTOP).expect("SIGSTOP the registry");
    }

    /// Lets a paused registry go on (SIGCONT).
    pub fn resume(&self) {
        kill(self.pid, Signal::SIGCONT).expect("SIGCONT the registry");
    }

    /// True when the registry answers a subjects listing.
    pub fn answers(&self) -> bool {
        reqwest::blocking::Client::new()
            .get(format!("{}/subjects", self.url))
            .timeout(Duration::from_secs(2))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGCONT);
        let output = registry_script(self.port, &self.data, "stop");
        if !output.status.success() {
            eprintln!(
                "scripts/registry.sh stop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        cleanup_data(&self.data);
    }
}

/// Runs `scripts/registry.sh COMMAND` for the registry on `port` with data in `data`.
fn registry_script(port: u16, data: &Path, command: &str) -> std::process::Output {
    Command::new(repo_root().join("scripts/registry.sh"))
        .arg(command)
        .env("KSTAGE_REGISTRY_PORT", port.to_string())
        .env("KSTAGE_REGISTRY_MGMT_PORT", (port + 1).to_string())
        .env("KSTAGE_REGISTRY_DATA", data)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/registry.sh {command}: {e}"))
}

fn cleanup_data(data: &Path) {
    let _ = std::fs::remove_dir_all(data);
    let mut lock = data.as_os_str().to_owned();
    lock.push(".lock");
    let _ = std::fs::remove_file(PathBuf::from(lock));
}
