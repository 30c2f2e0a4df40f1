//! A secured broker for the security tests: `scripts/kafka.sh start --secure` (SASL_SSL with
//! SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; an SSL listener that requires a client certificate;
//! StandardAuthorizer with no access without an ACL) on private ports and a private data dir.
//!
//! One broker serves every test of a test binary: [`secure_broker`] hands out shared references
//! and the broker stops when the last one is dropped. A watchdog process stops it as well if the
//! test process dies first (a panic with `panic = "abort"`, a kill, Ctrl-C), so no broker outlives
//! the run.
//!
//! The helper clients of this directory (topic creation, input writers, readers, group offsets)
//! authenticate as the `admin` super user: the fixture registers those settings for its bootstrap
//! string ([`super::broker::register_client_settings`]).
//!
//! When it runs: when the environment provides brokers (`KSTAGE_TEST_BOOTSTRAP` set, as
//! `scripts/test.sh` does) or demands them (`KSTAGE_TEST_REQUIRE_BROKER=1`); otherwise the harness
//! ignores its tests (`Need::OwnBrokers`). A broker that fails to start fails the test.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::broker::{
    create_topic, register_client_settings, unique_name, unregister_client_settings,
};
use super::stage::StageSpec;
use super::Pipeline;

/// The SASL user every secure broker has besides `admin` (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN).
pub const STAGE_USER: &str = "stage";

/// The broker script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// A running secure broker. Dropping the last reference stops it.
pub struct SecureBroker {
    /// SASL_SSL bootstrap (`127.0.0.1:port`).
    pub bootstrap: String,
    /// SSL bootstrap of the listener that requires a client certificate.
    pub mtls_bootstrap: String,
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_location: PathBuf,
    /// Password of [`STAGE_USER`].
    pub stage_password: String,
    /// Password of the `admin` super user.
    pub admin_password: String,
    /// Client certificate accepted by the SSL listener (principal [`Self::mtls_principal`]).
    pub client_certificate: PathBuf,
    /// Its private key, encrypted PKCS#8 PEM.
    pub client_key: PathBuf,
    /// The key's password.
    pub client_key_password: String,
    /// `User:<CN>` of the client certificate.
    pub mtls_principal: String,
    /// Seconds `kafka.sh start --secure` took.
    pub start_seconds: f64,
    data: PathBuf,
    port: u16,
    watchdog: Option<Child>,
    dir: tempfile::TempDir,
}

/// A resource an ACL applies to.
#[derive(Clone, Debug)]
pub enum Resource {
    Topic(String),
    Group(String),
    TransactionalId(String),
}

/// The shared broker of this test binary, if one is running.
static SHARED: Mutex<Weak<SecureBroker>> = Mutex::new(Weak::new());

/// Returns the secure broker shared by the tests, starting it if needed.
pub fn secure_broker() -> Arc<SecureBroker> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(broker) = shared.upgrade() {
        return broker;
    }
    let broker = Arc::new(SecureBroker::start());
    *shared = Arc::downgrade(&broker);
    broker
}

/// `let broker = require_secure_broker!();` — the shared secure broker (see [`secure_broker`]).
#[macro_export]
macro_rules! require_secure_broker {
    () => {
        $crate::common::secure::secure_broker()
    };
}

/// Three consecutive free ports on 127.0.0.1 (SASL_SSL, controller, SSL), or
/// `KSTAGE_TEST_SECURE_PORT` if set.
fn free_port_triple() -> u16 {
    if let Ok(port) = std::env::var("KSTAGE_TEST_SECURE_PORT") {
        return port
            .parse()
            .expect("KSTAGE_TEST_SECURE_PORT is a port number");
    }
    for _ in 0..200 {
        let base = 20_000 + rand::random::<u16>() % 10_000;
        let free = (0..3).all(|i| TcpListener::bind((Ipv4Addr::LOCALHOST, base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("found no three consecutive free ports between 20000 and 30003");
}

/// A random secret made of characters the broker's JAAS config accepts unquoted.
fn secret(what: &str) -> String {
    format!(
        "{what}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

impl SecureBroker {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kstage-secure-broker-")
            .tempdir()
            .expect("create a directory for the secure broker");
        let data = dir.path().join("kafka");
        let port = free_port_triple();
        let stage_password = secret("stage");
        let mut broker = Self {
            bootstrap: String::new(),
            mtls_bootstrap: String::new(),
            ca_location: PathBuf::new(),
            stage_password,
            admin_password: String::new(),
            client_certificate: PathBuf::new(),
            client_key: PathBuf::new(),
            client_key_password: String::new(),
            mtls_principal: String::new(),
            start_seconds: 0.0,
            data,
            port,
            watchdog: None,
            dir,
        };
        broker.watchdog = Some(broker.spawn_watchdog());
        let started = Instant::now();
        let output = broker.script(&[
            "start",
            "--secure",
            "--user",
            &format!("{STAGE_USER}:{}", broker.stage_password),
        ]);
        broker.start_seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            panic!(
                "scripts/kafka.sh start --secure failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprintln!(
            "secure broker up in {:.1} s (port {port}, data {})",
            broker.start_seconds,
            broker.data.display()
        );
        let env = broker.client_env();
        let get = |key: &str| {
            env.get(key)
                .cloned()
                .unwrap_or_else(|| panic!("kafka.sh client-env has no {key}"))
        };
        broker.bootstrap = get("BOOTSTRAP");
        broker.mtls_bootstrap = get("MTLS_BOOTSTRAP");
        broker.ca_location = PathBuf::from(get("CA_LOCATION"));
        broker.admin_password = get("ADMIN_PASSWORD");
        broker.client_certificate = PathBuf::from(get("CLIENT_CERTIFICATE_LOCATION"));
        broker.client_key = PathBuf::from(get("CLIENT_KEY_LOCATION"));
        broker.client_key_password = get("CLIENT_KEY_PASSWORD");
        broker.mtls_principal = get("MTLS_PRINCIPAL");
        register_client_settings(&broker.bootstrap, broker.admin_settings());
        broker
    }

    /// Runs `scripts/kafka.sh ARGS` against this broker and returns its output.
    fn script(&self, args: &[&str]) -> Output {
        let mut command = Command::new(script());
        command.args(args).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            // The broker's settings are this fixture's, not whatever the runner exported.
            if key.starts_with("KSTAGE_KAFKA_") && key != "KSTAGE_KAFKA_VERSION" {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env("KSTAGE_KAFKA_DATA", &self.data)
            .env("KSTAGE_KAFKA_PORT", self.port.to_string())
            .output()
            .expect("run scripts/kafka.sh")
    }

    /// A process in its own process group that stops the broker and removes its directory once
    /// this test process is gone.
    fn spawn_watchdog(&self) -> Child {
        Command::new("bash")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop; rm -rf -- "$3""#)
            .arg("kstage-secure-broker-watchdog")
            .arg(std::process::id().to_string())
            .arg(script())
            .arg(self.dir.path())
            .env("KSTAGE_KAFKA_DATA", &self.data)
            .env("KSTAGE_KAFKA_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the broker watchdog")
    }

    /// `kafka.sh client-env` as a map.
    fn client_env(&self) -> BTreeMap<String, String> {
        let output = self.script(&["client-env"]);
        assert!(
            output.status.success(),
            "kafka.sh client-env failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect()
    }

    /// librdkafka settings of the admin super user.
    pub fn admin_settings(&self) -> Vec<(String, String)> {
        [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "admin"),
            ("sasl.password", self.admin_password.as_str()),
            ("ssl.ca.location", &self.ca_location.to_string_lossy()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Fresh input and output topics and app id on this broker (created as admin).
    pub fn pipeline(&self, partitions: i32) -> Pipeline {
        let pipeline = Pipeline {
            bootstrap: self.bootstrap.clone(),
            input: unique_name("in"),
            output: unique_name("out"),
            app_id: unique_name("app"),
            partitions,
        };
        create_topic(&pipeline.bootstrap, &pipeline.input, partitions);
        create_topic(&pipeline.bootstrap, &pipeline.output, partitions);
        pipeline
    }

    /// Allows `principal` (e.g. `User:stage`) each `(operations, resources)` pair of `grants`
    /// (e.g. `(&["Read", "Describe"], vec![Resource::Topic(..)])`, literal names), as admin with
    /// Kafka's AclCommand, one call per pair; then waits until the broker lists every one of them,
    /// so a stage started next meets them (ACLs reach the broker's authorizer asynchronously).
    pub fn allow(&self, principal: &str, grants: &[(&[&str], Vec<Resource>)]) {
        let mut expected = Vec::new();
        for (operations, resources) in grants {
            let mut args: Vec<String> = vec![
                "acl".into(),
                "add".into(),
                "--allow-principal".into(),
                principal.into(),
            ];
            for operation in *operations {
                args.extend(["--operation".into(), (*operation).into()]);
            }
            for resource in resources {
                let (flag, kind, name) = match resource {
                    Resource::Topic(name) => ("--topic", "TOPIC", name),
                    Resource::Group(name) => ("--group", "GROUP", name),
                    Resource::TransactionalId(name) => {
                        ("--transactional-id", "TRANSACTIONAL_ID", name)
                    }
                };
                args.extend([flag.into(), name.clone()]);
                for operation in *operations {
                    expected.push((kind, name.clone(), operation.to_uppercase()));
                }
            }
            self.kafka_sh(&args);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.kafka_sh(&[
                "acl".into(),
                "list".into(),
                "--principal".into(),
                principal.into(),
            ]);
            let missing: Vec<_> = expected
                .iter()
                .filter(|(kind, name, operation)| !acl_listed(&listed, kind, name, operation))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker does not list these ACLs of {principal} 60 s after adding them: \
                 {missing:?}\n{listed}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `kafka.sh ARGS` and returns its stdout; fails the test if it fails.
    fn kafka_sh(&self, args: &[String]) -> String {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.script(&args);
        assert!(
            output.status.success(),
            "kafka.sh {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `spec` connecting over SASL_SSL with `mechanism` as `username`; the password goes in the
    /// environment (`KSTAGE_SASL_PASSWORD`), as the README recommends.
    pub fn sasl_stage(
        &self,
        spec: StageSpec,
        mechanism: &str,
        username: &str,
        password: &str,
    ) -> StageSpec {
        spec.arg("--security-protocol", "sasl_ssl")
            .arg("--sasl-mechanism", mechanism)
            .arg("--sasl-username", username)
            .arg("--ssl-ca-location", &self.ca_location.to_string_lossy())
            .arg("--metrics-address", "off")
            .env("KSTAGE_SASL_PASSWORD", password)
    }

    /// `spec` connecting to the SSL listener with the client certificate and its encrypted key.
    pub fn mtls_stage(&self, mut spec: StageSpec) -> StageSpec {
        spec.bootstrap = self.mtls_bootstrap.clone();
        spec.arg("--security-protocol", "ssl")
            .arg("--ssl-ca-location", &self.ca_location.to_string_lossy())
            .arg(
                "--ssl-certificate-location",
                &self.client_certificate.to_string_lossy(),
            )
            .arg("--ssl-key-location", &self.client_key.to_string_lossy())
            .arg("--metrics-address", "off")
            .env("KSTAGE_SSL_KEY_PASSWORD", &self.client_key_password)
    }
}

/// Whether AclCommand's `--list` output allows `operation` on resource `kind`/`name`: a block
/// headed ``Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=x, ...)`:`` holds
/// lines like `(principal=User:stage, host=*, operation=READ, permissionType=ALLOW)`.
fn acl_listed(listed: &str, kind: &str, name: &str, operation: &str) -> bool {
    let header = format!("resourceType={kind}, name={name}, patternType=LITERAL");
    let entry = format!("operation={operation}, permissionType=ALLOW");
    let mut in_block = false;
    for line in listed.lines() {
        if line.contains("ResourcePattern(") {
            in_block = line.contains(&header);
        } else if in_block && line.contains(&entry) {
            return true;
        }
    }
    false
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if !self.bootstrap.is_empty() {
            unregister_client_settings(&self.bootstrap);
        }
        let started = Instant::now();
        let output = self.script(&["stop"]);
        if !output.status.success() {
            eprintln!(
                "kafka.sh stop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprintln!(
            "secure broker stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}
