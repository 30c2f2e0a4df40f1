//! The broker the contenders share, and the topic administration the harness needs.
//!
//! By default the harness starts a private single-node broker with `scripts/kafka.sh` on its own
//! port and data directory (so it does not disturb other brokers on the machine) and stops it when
//! it is done, whatever happens. With `--bootstrap` it uses a running cluster and leaves it alone.
//! A broker the harness starts also opens remote JMX on 127.0.0.1 (requests.rs reads its request
//! counts there).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A broker the harness started (and stops on drop), or one it was given.
pub struct Broker {
    /// `host:port` of the cluster.
    pub bootstrap: String,
    /// Set when the harness started the broker: the script and its environment.
    managed: Option<Managed>,
    /// The broker's JMX, when the harness started it.
    jmx: Option<crate::requests::Jmx>,
}

struct Managed {
    script: PathBuf,
    port: u16,
    data_dir: PathBuf,
}

impl Managed {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.script);
        command
            .args(args)
            .env("KSTAGE_KAFKA_PORT", self.port.to_string())
            .env("KSTAGE_KAFKA_DATA", &self.data_dir)
            .env(
                "KSTAGE_KAFKA_JVM_OPTS",
                crate::requests::jvm_opts(crate::requests::jmx_port(self.port)),
            );
        command
    }
}

impl Broker {
    /// Starts a fresh single-node broker (`scripts/kafka.sh start`) on `port` with `data_dir`.
    pub fn start(repo: &Path, port: u16, data_dir: &Path, props: &[String]) -> Result<Self> {
        let managed = Managed {
            script: repo.join("scripts/kafka.sh"),
            port,
            data_dir: data_dir.to_path_buf(),
        };
        let mut args = vec!["start"];
        for prop in props {
            args.extend(["--prop", prop.as_str()]);
        }
        eprintln!(
            "harness: starting a broker on 127.0.0.1:{port} (data in {})",
            data_dir.display()
        );
        let output = managed
            .command(&args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running scripts/kafka.sh start")?;
        if !output.status.success() {
            bail!("scripts/kafka.sh start failed ({})", output.status);
        }
        let bootstrap = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(Self {
            bootstrap,
            managed: Some(managed),
            jmx: Some(crate::requests::Jmx::new(
                repo,
                crate::requests::jmx_port(port),
            )),
        })
    }

    /// A cluster someone else runs.
    pub fn external(bootstrap: String) -> Self {
        Self {
            bootstrap,
            managed: None,
            jmx: None,
        }
    }

    /// The broker's JMX (request counts), when the harness started it.
    pub fn jmx(&self) -> Option<&crate::requests::Jmx> {
        self.jmx.as_ref()
    }

    /// The broker's process id, when the harness started it (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        let managed = self.managed.as_ref()?;
        std::fs::read_to_string(managed.data_dir.join("node-1/pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops a broker the harness started; does nothing for an external one.
    pub fn stop(&mut self) {
        if let Some(managed) = self.managed.take() {
            eprintln!("harness: stopping the broker");
            match managed.command(&["stop"]).status() {
                Ok(status) if status.success() => {}
                other => eprintln!("harness: scripts/kafka.sh stop: {other:?}"),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates and deletes topics, and reads end offsets.
pub struct Admin {
    runtime: tokio::runtime::Runtime,
    client: AdminClient<DefaultClientContext>,
    consumer: BaseConsumer,
}

impl Admin {
    /// Connects to the cluster.
    pub fn new(bootstrap: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .context("creating the admin client")?;
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kstage-bench-admin")
            .create()
            .context("creating the offsets client")?;
        Ok(Self {
            runtime,
            client,
            consumer,
        })
    }

    /// Creates a topic with `partitions` partitions (replication factor 1) and waits until every
    /// partition has a leader. An existing topic is an error: every run uses fresh names.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .runtime
            .block_on(self.client.create_topics([&topic], &options))
            .context("creating a topic")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metadata = self
                .consumer
                .fetch_metadata(Some(name), Duration::from_secs(10))?;
            let ready = metadata.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {name} has no leader for every partition after 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes topics; failures are reported, not fatal (they only cost disk space).
    pub fn delete_topics(&self, names: &[&str]) {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        match self
            .runtime
            .block_on(self.client.delete_topics(names, &options))
        {
            Ok(results) => {
                for result in results {
                    if let Err((topic, code)) = result {
                        eprintln!("harness: deleting topic {topic}: {code}");
                    }
                }
            }
            Err(error) => eprintln!("harness: deleting topics {names:?}: {error}"),
        }
    }

    /// The high watermark of each partition (read_uncommitted end offsets).
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Result<Vec<i64>> {
        (0..partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map(|(_, high)| high)
                    .with_context(|| format!("end offset of {topic}/{p}"))
            })
            .collect()
    }
}
