//! The broker fixture: where the real Apache Kafka broker is, and the admin helpers every test needs
//! (fresh names, topic creation).
//!
//! Where the broker comes from, in order:
//! 1. `KSTAGE_TEST_BOOTSTRAP` (set by `scripts/test.sh`, which starts a local KRaft broker);
//! 2. with cargo feature `testcontainers`, an `apache/kafka` container started for the test;
//! 3. otherwise the harness ignores the tests that need a broker (`tests/it/harness.rs`), unless
//!    `KSTAGE_TEST_REQUIRE_BROKER=1`, in which case they fail: a CI run that meant to test
//!    against a broker must not pass vacuously.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// A running broker for one test. Dropping it stops the container when one was started.
pub struct Broker {
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
    #[cfg(feature = "testcontainers")]
    _container: Option<container::KafkaContainer>,
}

/// Returns the broker to test against; panics when there is none (the harness ignores the tests
/// that need one unless `KSTAGE_TEST_REQUIRE_BROKER=1`, so a test that gets here without one
/// fails rather than passes vacuously).
pub fn broker() -> Broker {
    if let Ok(bootstrap) = std::env::var("KSTAGE_TEST_BOOTSTRAP") {
        if !bootstrap.trim().is_empty() {
            return Broker {
                bootstrap: bootstrap.trim().to_string(),
                #[cfg(feature = "testcontainers")]
                _container: None,
            };
        }
    }
    #[cfg(feature = "testcontainers")]
    {
        let container = container::KafkaContainer::start();
        Broker {
            bootstrap: container.bootstrap.clone(),
            _container: Some(container),
        }
    }
    #[cfg(not(feature = "testcontainers"))]
    {
        panic!(
            "no broker: set KSTAGE_TEST_BOOTSTRAP=host:port (scripts/test.sh does) or build with \
             --features testcontainers"
        );
    }
}

/// `let broker = require_broker!();` — the broker (see [`broker`]).
#[macro_export]
macro_rules! require_broker {
    () => {
        $crate::common::broker()
    };
}

/// A fresh name: `kstage-<what>-<random>`. Every test uses fresh topics, groups and app ids.
pub fn unique_name(what: &str) -> String {
    format!("kstage-{what}-{:016x}", rand::random::<u64>())
}

/// Extra librdkafka settings of the helper clients, per bootstrap string: a fixture that starts a
/// broker needing credentials (the secure broker of `secure.rs`) registers them, and every helper
/// in this directory then authenticates to that broker without further changes.
static CLIENT_SETTINGS: Mutex<BTreeMap<String, Vec<(String, String)>>> =
    Mutex::new(BTreeMap::new());

/// Makes [`client_config`] add `settings` for clients of `bootstrap` (until unregistered).
pub fn register_client_settings(bootstrap: &str, settings: Vec<(String, String)>) {
    CLIENT_SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(bootstrap.to_string(), settings);
}

/// Undoes [`register_client_settings`].
pub fn unregister_client_settings(bootstrap: &str) {
    CLIENT_SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(bootstrap);
}

/// Client settings shared by every helper client (plus those registered for `bootstrap`).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4");
    let registered = CLIENT_SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, value) in registered.get(bootstrap).into_iter().flatten() {
        config.set(key, value);
    }
    config
}

/// Creates `topic` with `partitions` partitions (replication 1) and waits until its metadata shows
/// every partition with a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .expect("create admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime for the admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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

/// Waits until `topic` has `partitions` partitions, each with a leader.
pub fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = client_config(bootstrap)
        .create()
        .expect("create metadata consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|metadata| {
                let t = metadata.topics().iter().find(|t| t.name() == topic)?;
                let ok = t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.error().is_none() && p.leader() >= 0);
                Some(ok)
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} did not become ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(feature = "testcontainers")]
mod container {
    //! An `apache/kafka` container for users with a Docker engine.
    use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

    /// The container and the runtime that started it; dropping it removes the container.
    pub struct KafkaContainer {
        pub bootstrap: String,
        container: Option<ContainerAsync<Kafka>>,
        runtime: tokio::runtime::Runtime,
    }

    impl KafkaContainer {
        pub fn start() -> Self {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("build a runtime for testcontainers");
            let (container, bootstrap) = runtime.block_on(async {
                let container = Kafka::default()
                    .with_jvm_image()
                    // One broker: the transaction state log must accept replication 1.
                    .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
                    .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
                    .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
                    .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
                    .start()
                    .await
                    .expect("start an apache/kafka container (is a Docker engine running?)");
                let port = container
                    .get_host_port_ipv4(KAFKA_PORT)
                    .await
                    .expect("mapped Kafka port");
                (container, format!("127.0.0.1:{port}"))
            });
            Self {
                bootstrap,
                container: Some(container),
                runtime,
            }
        }
    }

    impl Drop for KafkaContainer {
        fn drop(&mut self) {
            if let Some(container) = self.container.take() {
                let _ = self.runtime.block_on(container.rm());
            }
        }
    }
}
