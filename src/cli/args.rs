//! Stage settings as flags and `KSTAGE_...` environment variables, layered over the config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{ConfigError, DeliveryMode, PoisonPolicy, StageConfig};
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
    /// transaction.timeout.ms, as a duration (e.g. 60s).
    #[arg(long, env = "KSTAGE_TRANSACTION_TIMEOUT", value_parser = duration)]
    pub transaction_timeout: Option<Duration>,
    /// What to do with a record that cannot be processed.
    #[arg(long, env = "KSTAGE_POISON_POLICY", value_enum)]
    pub poison_policy: Option<PoisonPolicy>,
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

fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
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
        config.poison_policy = self.poison_policy.unwrap_or(config.poison_policy);
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
