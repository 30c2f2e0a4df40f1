//! Toxiproxy between the stages and the brokers: network faults on the wire, which kill -9 and
//! SIGSTOP do not reach (a request delayed, a connection reset in the middle of a request, one
//! direction stalled, a link throttled).
//!
//! ```text
//!   stage ──► 127.0.0.1:PROXY_n (toxiproxy "broker-n", toxics here) ──► PROXIED_n (node n)
//! ```
//!
//! The three-broker cluster runs in `scripts/kafka.sh`'s proxied mode (`start --proxied`): each
//! node has a second client listener that advertises its proxy port, so a client that
//! bootstraps from the proxy ports gets metadata naming only proxy ports and every connection it
//! opens goes through a proxy. Inter-broker traffic, the feeder and the verifier stay direct.
//! The server is started per scenario through `scripts/toxiproxy.sh` (which builds it from the
//! Go module proxy once, into the cache) on `KSTAGE_TOXIPROXY_PORT` (default: the cluster's
//! first port + 30), and stopped when [`Proxies`] is dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A network fault on one broker's link.
#[derive(Clone, Copy, Debug)]
pub enum Toxic {
    /// Every packet delayed by `latency` ± `jitter` ms, both directions.
    Latency { latency_ms: u32, jitter_ms: u32 },
    /// Connections reset (TCP RST) `after_ms` after they carry data, responses included: a
    /// request in flight is cut.
    ResetPeer { after_ms: u32 },
    /// One-way stall: the broker's responses stop (the requests still arrive) and the
    /// connection closes after `after_ms` (0: never, until the toxic is removed).
    Stall { after_ms: u32 },
    /// Both directions throttled to `kb_per_s` KB/s.
    Bandwidth { kb_per_s: u32 },
}

impl Toxic {
    /// The toxiproxy-cli arguments that add it, named `name`.
    fn add_args(self, name: &str) -> Vec<String> {
        let mut args = vec!["toxic".into(), "add".into(), "-n".into(), name.into()];
        let mut attr = |key: &str, value: u32| {
            args.push("-a".into());
            args.push(format!("{key}={value}"));
        };
        let kind = match self {
            Self::Latency {
                latency_ms,
                jitter_ms,
            } => {
                attr("latency", latency_ms);
                attr("jitter", jitter_ms);
                "latency"
            }
            Self::ResetPeer { after_ms } => {
                attr("timeout", after_ms);
                "reset_peer"
            }
            Self::Stall { after_ms } => {
                attr("timeout", after_ms);
                "timeout"
            }
            Self::Bandwidth { kb_per_s } => {
                attr("rate", kb_per_s);
                "bandwidth"
            }
        };
        args.push("-t".into());
        args.push(kind.into());
        // Toxics act on the downstream (broker → client) direction by default; a one-way
        // stall is exactly that, the others get the upstream too (a second toxic).
        args
    }

    /// Whether the toxic also acts on requests (client → broker).
    fn both_ways(self) -> bool {
        !matches!(self, Self::Stall { .. })
    }

    /// For the fault log.
    pub fn describe(self) -> String {
        match self {
            Self::Latency {
                latency_ms,
                jitter_ms,
            } => format!("latency {latency_ms} ± {jitter_ms} ms"),
            Self::ResetPeer { after_ms } => format!("connection reset after {after_ms} ms"),
            Self::Stall { after_ms } => format!("one-way stall (close after {after_ms} ms)"),
            Self::Bandwidth { kb_per_s } => format!("bandwidth {kb_per_s} KB/s"),
        }
    }
}

/// The running toxiproxy server and one proxy per broker.
pub struct Proxies {
    /// Node id, the proxy's listen address (what the node advertises), its upstream.
    nodes: Vec<(u32, String, String)>,
    port: u16,
    data: PathBuf,
    kafka_data: PathBuf,
    kafka_port: u16,
}

impl Proxies {
    /// Starts the server and creates one proxy per node of the proxied cluster in `kafka_data`
    /// (first client port `kafka_port`).
    pub fn start(kafka_data: &Path, kafka_port: u16) -> Self {
        let port = std::env::var("KSTAGE_TOXIPROXY_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(kafka_port + 30);
        let mut proxies = Self {
            nodes: Vec::new(),
            port,
            data: kafka_data.join("toxiproxy"),
            kafka_data: kafka_data.to_path_buf(),
            kafka_port,
        };
        let listing = proxies.kafka(&["proxies"]);
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [node, listen, upstream] = fields[..] {
                let node = node.parse().expect("kafka.sh proxies: a node id");
                proxies
                    .nodes
                    .push((node, listen.to_string(), upstream.to_string()));
            }
        }
        assert!(!proxies.nodes.is_empty(), "kafka.sh proxies listed no node");
        proxies.toxiproxy(&["start"]);
        for (node, listen, upstream) in proxies.nodes.clone() {
            proxies.cli(&[
                "create",
                "-l",
                &listen,
                "-u",
                &upstream,
                &format!("broker-{node}"),
            ]);
        }
        proxies
    }

    /// The bootstrap string through the proxies.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, listen, _)| listen.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds `toxic` to node `node`'s link.
    pub fn add(&self, node: u32, toxic: Toxic) {
        let proxy = format!("broker-{node}");
        let mut args = toxic.add_args("fault");
        args.push(proxy.clone());
        self.cli_owned(&args);
        if toxic.both_ways() {
            let mut args = toxic.add_args("fault-up");
            args.insert(2, "-u".into());
            args.push(proxy);
            self.cli_owned(&args);
        }
    }

    /// Removes every toxic from every link.
    pub fn heal(&self) {
        for (node, _, _) in &self.nodes {
            let proxy = format!("broker-{node}");
            for name in ["fault", "fault-up"] {
                // Absent toxics fail the removal: nothing to heal there.
                let _ = self.run_cli(&["toxic", "remove", "-n", name, &proxy]);
            }
        }
    }

    fn cli(&self, args: &[&str]) {
        let output = self.run_cli(args);
        assert!(
            output.status.success(),
            "toxiproxy-cli {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn cli_owned(&self, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args);
    }

    fn run_cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["cli"];
        all.extend_from_slice(args);
        self.script("toxiproxy.sh", &all)
    }

    fn toxiproxy(&self, args: &[&str]) -> String {
        let output = self.script("toxiproxy.sh", args);
        assert!(
            output.status.success(),
            "scripts/toxiproxy.sh {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn kafka(&self, args: &[&str]) -> String {
        let output = self.script("kafka.sh", args);
        assert!(
            output.status.success(),
            "scripts/kafka.sh {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn script(&self, script: &str, args: &[&str]) -> Output {
        Command::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("scripts")
                .join(script),
        )
        .args(args)
        .env("KSTAGE_TOXIPROXY_PORT", self.port.to_string())
        .env("KSTAGE_TOXIPROXY_DATA", &self.data)
        .env("KSTAGE_KAFKA_DATA", &self.kafka_data)
        .env("KSTAGE_KAFKA_PORT", self.kafka_port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script} {args:?}: {e}"))
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        let _ = self.script("toxiproxy.sh", &["stop"]);
    }
}

/// How long a network fault holds by default.
pub const TOXIC_HOLD: Duration = Duration::from_secs(15);
