//! Stage settings as flags and `KSTAGE_...` environment variables, layered over the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::codec::{Format, RegistryConfig, SubjectNameStrategy, TopicFormat};
use crate::config::{
    ConfigError, DeliveryMode, PoisonPolicy, SaslMechanism, SecurityProtocol, StageConfig,
};
use crate::topology::DEFAULT_OUTPUT;

/// Every stage setting. A flag (or its environment variable) overrides the config file; list
/// settings given as environment variables are comma-separated.
#[derive(Debug, Clone, Default, Args)]
pub struct StageArgs {
    /// A TOML config file; flags and environment variables override it.
    #[arg(long, short = 'c', env = "KSTAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The topology to run (see `kstage topologies`).
    #[arg(long, env = "KSTAGE_TOPOLOGY")]
    pub topology: Option<String>,
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KSTAGE_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// An input topic (repeat the flag for several).
    #[arg(long = "input", env = "KSTAGE_INPUT", value_delimiter = ',')]
    pub inputs: Vec<String>,
    /// The topic of the topology's default output.
    #[arg(long, env = "KSTAGE_OUTPUT")]
    pub output: Option<String>,
    /// The topic of a named output, NAME=TOPIC (repeatable).
    #[arg(long = "route", env = "KSTAGE_ROUTE", value_delimiter = ',', value_parser = key_value)]
    pub routes: Vec<(String, String)>,
    /// The application id: consumer group and transactional id prefix.
    #[arg(long, env = "KSTAGE_APP_ID")]
    pub app_id: Option<String>,
    /// This instance's stable id; the transactional id is <app-id>-<instance-id>.
    #[arg(long, env = "KSTAGE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Delivery guarantee.
    #[arg(long, env = "KSTAGE_DELIVERY", value_enum)]
    pub delivery: Option<DeliveryMode>,
    /// How long a transaction collects records before committing (e.g. 100ms).
    #[arg(long, env = "KSTAGE_COMMIT_INTERVAL", value_parser = duration)]
    pub commit_interval: Option<Duration>,
    /// Commit early once a transaction holds this many input records.
    #[arg(long, env = "KSTAGE_MAX_RECORDS_PER_TXN")]
    pub max_records_per_txn: Option<usize>,
    /// exactly_once: commit on a commit thread while the worker goes on (see the README).
    #[arg(long, env = "KSTAGE_PIPELINED_COMMITS", value_name = "true|false")]
    pub pipelined_commits: Option<bool>,
    /// transaction.timeout.ms, as a duration (e.g. 60s).
    #[arg(long, env = "KSTAGE_TRANSACTION_TIMEOUT", value_parser = duration)]
    pub transaction_timeout: Option<Duration>,
    /// Workers (consumer + transactional producer pairs) in this instance.
    #[arg(long, env = "KSTAGE_WORKERS")]
    pub workers: Option<usize>,
    /// What to do with a record that cannot be processed.
    #[arg(long, env = "KSTAGE_POISON_POLICY", value_enum)]
    pub poison_policy: Option<PoisonPolicy>,
    /// Where poison_policy dead_letter writes records that cannot be processed.
    #[arg(long, env = "KSTAGE_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Whether outputs carry kstage.source.topic/partition/offset headers.
    #[arg(long, env = "KSTAGE_PROVENANCE_HEADERS", value_name = "true|false")]
    pub provenance_headers: Option<bool>,
    /// Input values above this many bytes are poison records.
    #[arg(long, env = "KSTAGE_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Key and value formats of a topic, TOPIC=KEY:VALUE with bytes|string|json|avro (TOPIC `*`
    /// sets the default); repeatable.
    #[arg(long = "format", env = "KSTAGE_FORMAT", value_delimiter = ',', value_parser = topic_format)]
    pub formats: Vec<(String, TopicFormat)>,
    /// Confluent-compatible schema registry URL (needed by avro formats).
    #[arg(long, env = "KSTAGE_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Schema registry basic-auth user.
    #[arg(long, env = "KSTAGE_SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// Schema registry basic-auth password (prefer the environment variable).
    #[arg(long, env = "KSTAGE_SCHEMA_REGISTRY_PASSWORD", hide_env_values = true)]
    pub schema_registry_password: Option<String>,
    /// How Avro output subjects are named.
    #[arg(long, env = "KSTAGE_SUBJECT_NAME_STRATEGY", value_enum)]
    pub subject_name_strategy: Option<SubjectNameStrategy>,
    /// How long an unreachable schema registry is retried before the stage stops (e.g. 30s).
    #[arg(long, env = "KSTAGE_SCHEMA_REGISTRY_UNAVAILABLE_TIMEOUT", value_parser = duration)]
    pub schema_registry_unavailable_timeout: Option<Duration>,
    /// Kafka security protocol.
    #[arg(long, env = "KSTAGE_SECURITY_PROTOCOL", value_enum)]
    pub security_protocol: Option<SecurityProtocol>,
    /// SASL mechanism.
    #[arg(long, env = "KSTAGE_SASL_MECHANISM", value_enum)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[arg(long, env = "KSTAGE_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (prefer the environment variable).
    #[arg(long, env = "KSTAGE_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA of the brokers' certificates.
    #[arg(long, env = "KSTAGE_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM file of the client certificate (mutual TLS).
    #[arg(long, env = "KSTAGE_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM file of the client key (mutual TLS).
    #[arg(long, env = "KSTAGE_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,
    /// Password of the client key (prefer the environment variable).
    #[arg(long, env = "KSTAGE_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub ssl_key_password: Option<String>,
    /// A topology parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", env = "KSTAGE_PARAM", value_delimiter = ',', value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// A librdkafka setting for both clients, KEY=VALUE (repeatable).
    #[arg(long = "kafka", env = "KSTAGE_KAFKA", value_delimiter = ',', value_parser = key_value)]
    pub kafka: Vec<(String, String)>,
    /// A librdkafka setting for the consumer only, KEY=VALUE (repeatable).
    #[arg(long = "consumer-property", value_parser = key_value)]
    pub consumer: Vec<(String, String)>,
    /// A librdkafka setting for the producer only, KEY=VALUE (repeatable).
    #[arg(long = "producer-property", value_parser = key_value)]
    pub producer: Vec<(String, String)>,
}

/// Process-level knobs of `kstage run` (not part of the pipeline config).
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Address of the /metrics, /healthz and /readyz endpoint, or `off`.
    #[arg(long, env = "KSTAGE_METRICS_ADDRESS", default_value = "127.0.0.1:9464", value_parser = metrics_address)]
    pub metrics_address: MetricsAddress,
    /// /readyz fails once a transaction has been open longer than this.
    #[arg(long, env = "KSTAGE_READY_MAX_TRANSACTION_AGE", default_value = "60s", value_parser = duration)]
    pub ready_max_transaction_age: Duration,
    /// How long SIGTERM may take to commit and leave the group before the process exits anyway.
    #[arg(long, env = "KSTAGE_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

/// Where the metrics and health endpoint listens; `None` when switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

fn metrics_address(raw: &str) -> Result<MetricsAddress, String> {
    if raw == "off" {
        return Ok(MetricsAddress(None));
    }
    raw.parse()
        .map(|address| MetricsAddress(Some(address)))
        .map_err(|_| format!("{raw:?} is not ip:port (e.g. 0.0.0.0:9464) or `off`"))
}

fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

fn topic_format(raw: &str) -> Result<(String, TopicFormat), String> {
    let (topic, formats) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not TOPIC=KEY:VALUE (e.g. orders=string:avro)"))?;
    let (key, value) = formats
        .split_once(':')
        .ok_or_else(|| format!("{formats:?} is not KEY:VALUE (e.g. string:avro)"))?;
    let format = TopicFormat {
        key: Format::parse(key)?,
        value: Format::parse(value)?,
        value_schema: None,
    };
    Ok((topic.to_string(), format))
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 100ms, 5s, 2m"))
}

impl StageArgs {
    /// The config file (if any) with the flags and environment variables applied over it.
    pub fn into_config(self) -> Result<StageConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => StageConfig::from_file(path)?,
            None => StageConfig::default(),
        };
        let set = |target: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut config.topology, self.topology);
        set(&mut config.bootstrap_servers, self.bootstrap_servers);
        set(&mut config.app_id, self.app_id);
        set(&mut config.instance_id, self.instance_id);
        if !self.inputs.is_empty() {
            config.inputs = self.inputs;
        }
        if let Some(topic) = self.output {
            config.outputs.insert(DEFAULT_OUTPUT.to_string(), topic);
        }
        config.outputs.extend(self.routes);
        config.delivery = self.delivery.unwrap_or(config.delivery);
        config.commit_interval = self.commit_interval.unwrap_or(config.commit_interval);
        config.max_records_per_txn = self
            .max_records_per_txn
            .unwrap_or(config.max_records_per_txn);
        config.transaction_timeout = self
            .transaction_timeout
            .unwrap_or(config.transaction_timeout);
        config.pipelined_commits = self.pipelined_commits.unwrap_or(config.pipelined_commits);
        config.poison_policy = self.poison_policy.unwrap_or(config.poison_policy);
        config.workers = self.workers.unwrap_or(config.workers);
        config.dead_letter_topic = self.dead_letter_topic.or(config.dead_letter_topic);
        config.provenance_headers = self.provenance_headers.unwrap_or(config.provenance_headers);
        config.max_value_bytes = self.max_value_bytes.unwrap_or(config.max_value_bytes);
        for (topic, format) in self.formats {
            let schema =
                |c: &StageConfig| c.formats.get(&topic).and_then(|f| f.value_schema.clone());
            if topic == "*" {
                config.default_format = format;
            } else {
                let value_schema = schema(&config);
                config.formats.insert(
                    topic.clone(),
                    TopicFormat {
                        value_schema,
                        ..format
                    },
                );
            }
        }
        if let Some(url) = self.schema_registry_url {
            let registry = config
                .schema_registry
                .get_or_insert_with(|| RegistryConfig::new(&url));
            registry.url = url;
        }
        if let Some(registry) = &mut config.schema_registry {
            registry.username = self.schema_registry_username.or(registry.username.take());
            registry.password = self.schema_registry_password.or(registry.password.take());
            registry.subject_name_strategy = self
                .subject_name_strategy
                .unwrap_or(registry.subject_name_strategy);
            registry.unavailable_timeout = self
                .schema_registry_unavailable_timeout
                .unwrap_or(registry.unavailable_timeout);
        }
        let security = &mut config.security;
        security.protocol = self.security_protocol.unwrap_or(security.protocol);
        security.sasl_mechanism = self.sasl_mechanism.or(security.sasl_mechanism);
        security.username = self.sasl_username.or(security.username.take());
        security.password = self.sasl_password.or(security.password.take());
        security.ca_location = self.ssl_ca_location.or(security.ca_location.take());
        security.certificate_location = self
            .ssl_certificate_location
            .or(security.certificate_location.take());
        security.key_location = self.ssl_key_location.or(security.key_location.take());
        security.key_password = self.ssl_key_password.or(security.key_password.take());
        config.params.extend(self.params);
        config.kafka.extend(self.kafka);
        config.consumer.extend(self.consumer);
        config.producer.extend(self.producer);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        stage: StageArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn runtime(args: &[&str]) -> Result<RuntimeArgs, String> {
        Harness::try_parse_from(std::iter::once("kstage").chain(args.iter().copied()))
            .map(|h| h.runtime)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn runtime_flags_have_defaults_and_an_off_switch() {
        let defaults = runtime(&[]).expect("defaults");
        assert_eq!(
            defaults.metrics_address.0,
            Some(([127, 0, 0, 1], 9464).into())
        );
        assert_eq!(defaults.shutdown_grace, Duration::from_secs(30));
        let off = runtime(&["--metrics-address", "off"]).expect("off");
        assert_eq!(off.metrics_address.0, None);
        let err = runtime(&["--metrics-address", "localhost"]).expect_err("bad address");
        assert!(
            err.contains("--metrics-address") && err.contains("off"),
            "{err}"
        );
    }

    fn parse(args: &[&str]) -> Result<StageConfig, String> {
        let harness =
            Harness::try_parse_from(std::iter::once("kstage").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        harness.stage.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_build_a_whole_config() {
        let config = parse(&[
            "--topology",
            "orders",
            "--bootstrap-servers",
            "k:9092",
            "--input",
            "a",
            "--input",
            "b",
            "--output",
            "out",
            "--route",
            "invalid=bad",
            "--app-id",
            "app",
            "--instance-id",
            "3",
            "--delivery",
            "at_least_once",
            "--commit-interval",
            "250ms",
            "--kafka",
            "session.timeout.ms=6000",
        ])
        .expect("valid flags");
        assert_eq!(config.inputs, ["a", "b"]);
        assert_eq!(config.outputs["default"], "out");
        assert_eq!(config.outputs["invalid"], "bad");
        assert_eq!(config.delivery, DeliveryMode::AtLeastOnce);
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(config.kafka["session.timeout.ms"], "6000");
        assert_eq!(config.transactional_id(), "app-3");
    }

    #[test]
    fn codec_and_poison_flags_fill_their_sections() {
        let config = parse(&[
            "--format",
            "orders=string:avro",
            "--format",
            "*=bytes:json",
            "--schema-registry-url",
            "http://r:8081",
            "--schema-registry-password",
            "pw",
            "--poison-policy",
            "dead_letter",
            "--dead-letter-topic",
            "dlq",
            "--provenance-headers",
            "false",
            "--subject-name-strategy",
            "record_name",
        ])
        .expect("valid flags");
        assert_eq!(config.formats["orders"].value, Format::Avro);
        assert_eq!(config.default_format.key, Format::Bytes);
        let registry = config.schema_registry.expect("registry");
        assert_eq!(registry.url, "http://r:8081");
        assert_eq!(registry.password.as_deref(), Some("pw"));
        assert_eq!(
            registry.subject_name_strategy,
            SubjectNameStrategy::RecordName
        );
        assert_eq!(config.poison_policy, PoisonPolicy::DeadLetter);
        assert_eq!(config.dead_letter_topic.as_deref(), Some("dlq"));
        assert!(!config.provenance_headers);
    }

    #[test]
    fn bad_values_name_the_flag_and_what_is_valid() {
        let err = parse(&["--delivery", "exactly-twice"]).expect_err("bad mode");
        assert!(
            err.contains("--delivery") && err.contains("exactly_once"),
            "{err}"
        );
        let err = parse(&["--commit-interval", "soon"]).expect_err("bad duration");
        assert!(
            err.contains("--commit-interval") && err.contains("100ms"),
            "{err}"
        );
        let err = parse(&["--format", "orders=string:xml"]).expect_err("bad format");
        assert!(
            err.contains("--format") && err.contains("bytes, string, json, avro"),
            "{err}"
        );
        let err = parse(&["--kafka", "novalue"]).expect_err("bad pair");
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stage.toml");
        std::fs::write(
            &path,
            "app_id = \"from-file\"\ninstance_id = \"1\"\ncommit_interval = \"1s\"\n",
        )
        .expect("write config");
        let path = path.to_string_lossy().to_string();
        let config = parse(&["--config", &path, "--app-id", "from-flag"]).expect("valid");
        assert_eq!(config.app_id, "from-flag");
        assert_eq!(config.instance_id, "1");
        assert_eq!(config.commit_interval, Duration::from_secs(1));
    }
}
