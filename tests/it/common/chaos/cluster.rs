//! The three-broker cluster of the reliability scenarios, driven through `scripts/kafka.sh`
//! (KRaft, replication factor 3, `min.insync.replicas=2`, transaction state log 3/2).
//!
//! Either the cluster `scripts/reliability.sh` started (it exports
//! `KSTAGE_RELIABILITY_CLUSTER_DATA` and `KSTAGE_RELIABILITY_CLUSTER_PORT`: the scenarios share
//! it, and each leaves it whole), or a private one started here on
//! `KSTAGE_RELIABILITY_PORT` (default 29092, clients on 29092/29094/29096) with its own data
//! directory, stopped and removed when the [`Cluster`] is dropped, also when a test fails.
//! Either way the cluster runs in proxied mode (`--proxied`): every node also advertises a
//! Toxiproxy port for the network-fault scenarios ([`super::proxy`]).
//! Scenarios on three brokers hold [`exclusive`] so that one's broker faults never hit another.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::common::broker::{client_config, wait_for_topic};

/// Default first client port of a private cluster.
const DEFAULT_PORT: u16 = 29092;

static THREE_BROKERS: Mutex<()> = Mutex::new(());

/// Serialises the scenarios that use the three-broker cluster.
pub fn exclusive() -> MutexGuard<'static, ()> {
    THREE_BROKERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running three-node cluster.
pub struct Cluster {
    /// The bootstrap string of all nodes.
    pub bootstrap: String,
    /// Node ids, 1-based.
    pub nodes: u32,
    data: PathBuf,
    port: u16,
    owned: bool,
}

impl Cluster {
    /// The cluster of `scripts/reliability.sh`, or a private one; panics when neither a cluster
    /// nor a test broker environment is configured.
    pub fn three_brokers() -> Self {
        if let (Ok(data), Ok(port)) = (
            std::env::var("KSTAGE_RELIABILITY_CLUSTER_DATA"),
            std::env::var("KSTAGE_RELIABILITY_CLUSTER_PORT"),
        ) {
            let mut cluster = Self {
                bootstrap: String::new(),
                nodes: 3,
                data: PathBuf::from(data),
                port: port
                    .parse()
                    .expect("KSTAGE_RELIABILITY_CLUSTER_PORT is a port"),
                owned: false,
            };
            cluster.heal();
            cluster.bootstrap = cluster.script_ok(&["bootstrap"]).trim().to_string();
            return cluster;
        }
        // Starting brokers needs the environment scripts/test.sh sets up (Java, fetched jars).
        // (The harness ignores the tests that need three brokers without it: Need::ThreeBrokers.)
        assert!(
            std::env::var("KSTAGE_TEST_BOOTSTRAP").is_ok(),
            "no broker environment for a three-broker cluster (run scripts/test.sh or \
             scripts/reliability.sh)"
        );
        let port = std::env::var("KSTAGE_RELIABILITY_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PORT);
        let data =
            std::env::temp_dir().join(format!("kstage-reliability-{:016x}", rand::random::<u64>()));
        let mut cluster = Self {
            bootstrap: String::new(),
            nodes: 3,
            data,
            port,
            owned: true,
        };
        let started = std::time::Instant::now();
        cluster.bootstrap = cluster
            .script_ok(&["start", "--brokers", "3", "--proxied"])
            .trim()
            .to_string();
        eprintln!(
            "started a private three-broker cluster {} in {:.0?}",
            cluster.bootstrap,
            started.elapsed()
        );
        cluster
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .args(args)
            .env("KSTAGE_KAFKA_DATA", &self.data)
            .env("KSTAGE_KAFKA_PORT", self.port.to_string())
            .env_remove("KSTAGE_KAFKA_PROPS")
            .output()
            .unwrap_or_else(|e| panic!("run scripts/kafka.sh {args:?}: {e}"))
    }

    /// Runs `scripts/kafka.sh ARGS` and returns its stdout; fails the test if it fails.
    fn script_ok(&self, args: &[&str]) -> String {
        let output = self.script(args);
        assert!(
            output.status.success(),
            "scripts/kafka.sh {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Toxiproxy in front of every node (the cluster must run in proxied mode:
    /// `scripts/kafka.sh start --proxied`, as the private cluster and the scripts' clusters do).
    pub fn proxies(&self) -> super::proxy::Proxies {
        super::proxy::Proxies::start(&self.data, self.port)
    }

    /// Transactions of transactional ids starting with `prefix` that are still open (Ongoing,
    /// PrepareCommit, PrepareAbort), as Kafka's `kafka-transactions.sh list`
    /// (`TransactionsCommand`) reports them: "id state" each.
    pub fn open_transactions(&self, prefix: &str) -> Vec<String> {
        let listing = self.script_ok(&[
            "tool",
            "org.apache.kafka.tools.TransactionsCommand",
            "--bootstrap-server",
            &self.bootstrap,
            "list",
        ]);
        listing
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
                let open = fields.len() >= 4
                    && fields[0].starts_with(prefix)
                    && matches!(fields[3], "Ongoing" | "PrepareCommit" | "PrepareAbort");
                open.then(|| format!("{} {}", fields[0], fields[3]))
            })
            .collect()
    }

    /// kill -9 of node `n` (returns once it is gone).
    pub fn kill(&self, n: u32) {
        self.script_ok(&["kill", &n.to_string()]);
    }

    /// SIGTERM of node `n`, a clean shutdown (returns once it has exited).
    pub fn term(&self, n: u32) {
        self.script_ok(&["term", &n.to_string()]);
    }

    /// SIGSTOP of node `n`.
    pub fn pause(&self, n: u32) {
        self.script_ok(&["pause", &n.to_string()]);
    }

    /// SIGCONT of node `n`.
    pub fn resume(&self, n: u32) {
        self.script_ok(&["resume", &n.to_string()]);
    }

    /// Starts a stopped node again and waits until it is back in the cluster.
    pub fn restart(&self, n: u32) {
        self.script_ok(&["restart", &n.to_string()]);
    }

    /// The node coordinating transactional id `id`.
    pub fn txn_coordinator(&self, id: &str) -> u32 {
        self.coordinator("txn", id)
    }

    /// The node coordinating consumer group `group`.
    pub fn group_coordinator(&self, group: &str) -> u32 {
        self.coordinator("group", group)
    }

    fn coordinator(&self, kind: &str, id: &str) -> u32 {
        let out = self.script_ok(&["coordinator", kind, id]);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("coordinator {kind} {id}: {out:?}: {e}"))
    }

    /// Resumes paused nodes and restarts stopped ones, so that all three run.
    pub fn heal(&self) {
        let status = self.script(&["status"]);
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some("node"), Some(n), Some(state)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let n = n.trim_end_matches(':');
            match state {
                "paused" => self.script_ok(&["resume", n]),
                "stopped" => self.script_ok(&["restart", n]),
                _ => String::new(),
            };
        }
    }

    /// Creates `topic` with `partitions` partitions, replication factor 3.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        create_topic_replicated(&self.bootstrap, topic, partitions, 3);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            self.heal();
            return;
        }
        let output = self.script(&["stop"]);
        if !output.status.success() {
            eprintln!(
                "scripts/kafka.sh stop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if std::thread::panicking() {
            eprintln!("three-broker cluster logs kept in {}", self.data.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.data);
            let mut lock = self.data.as_os_str().to_owned();
            lock.push(".lock");
            let _ = std::fs::remove_file(PathBuf::from(lock));
        }
    }
}

/// Creates `topic` with the given replication factor and waits for every partition's leader.
pub fn create_topic_replicated(bootstrap: &str, topic: &str, partitions: i32, replication: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .expect("create admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime for the admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name}: {code}");
        }
    }
    wait_for_topic(bootstrap, topic, partitions);
}
