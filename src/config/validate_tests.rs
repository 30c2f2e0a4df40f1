//! Every invalid case gives its own message naming the key.

use std::time::Duration;

use super::*;
use crate::config::{CommitPolicy, DeliveryMode, StageConfig};
use crate::topology::{Emitter, Record, Registry, TopologyError, TopologyParams};

struct TwoOutputs;

impl Topology for TwoOutputs {
    fn process<'a>(&mut self, _: &Record<'a>, _: &mut Emitter<'a>) -> Result<(), TopologyError> {
        Ok(())
    }
    fn outputs(&self) -> &[&'static str] {
        &["invalid"]
    }
}

fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&["rate"])?;
    Ok(Box::new(TwoOutputs))
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("two", "test topology", build);
    registry
}

fn valid() -> StageConfig {
    let mut config = StageConfig {
        topology: "two".into(),
        bootstrap_servers: "127.0.0.1:9092".into(),
        inputs: vec!["in".into()],
        app_id: "app".into(),
        instance_id: "0".into(),
        ..StageConfig::default()
    };
    config.outputs.insert("default".into(), "out".into());
    config.outputs.insert("invalid".into(), "bad".into());
    config
}

/// The keys of every problem found.
fn error_keys(config: &StageConfig) -> Vec<String> {
    match config.validate(&registry()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.into_iter().map(|e| e.key).collect(),
    }
}

fn only_error(config: &StageConfig) -> ConfigError {
    let errors = config
        .validate(&registry())
        .err()
        .expect("config should be invalid");
    assert_eq!(errors.0.len(), 1, "expected one problem, got {errors}");
    errors.0.into_iter().next().expect("one error")
}

#[test]
fn a_complete_config_is_valid() {
    assert_eq!(error_keys(&valid()), Vec::<String>::new());
}

#[test]
fn missing_required_fields_are_each_named() {
    let keys = error_keys(&StageConfig::default());
    for key in [
        "topology",
        "bootstrap_servers",
        "app_id",
        "instance_id",
        "inputs",
    ] {
        assert!(
            keys.contains(&key.to_string()),
            "{key} missing from {keys:?}"
        );
    }
}

#[test]
fn unknown_topology_lists_the_registered_ones() {
    let config = StageConfig {
        topology: "nope".into(),
        ..valid()
    };
    let error = only_error(&config);
    assert_eq!(error.key, "topology");
    assert!(error.message.contains("two"), "{error}");
}

#[test]
fn unrouted_and_unknown_outputs_are_errors() {
    let mut config = valid();
    config.outputs.remove("invalid");
    let error = only_error(&config);
    assert_eq!(error.key, "outputs.invalid");
    assert!(error.message.contains("--route invalid=TOPIC"), "{error}");

    let mut config = valid();
    config.outputs.insert("typo".into(), "x".into());
    assert_eq!(only_error(&config).key, "outputs.typo");
}

#[test]
fn an_output_that_is_also_an_input_is_refused() {
    let mut config = valid();
    config.outputs.insert("default".into(), "in".into());
    assert_eq!(only_error(&config).key, "outputs.default");
}

#[test]
fn topic_and_id_characters_are_checked() {
    let config = StageConfig {
        inputs: vec!["bad topic".into()],
        ..valid()
    };
    assert!(only_error(&config).message.contains("' '"));
    let config = StageConfig {
        instance_id: "a/b".into(),
        ..valid()
    };
    assert_eq!(only_error(&config).key, "instance_id");
}

#[test]
fn reserved_kafka_settings_are_refused_with_the_field_to_use() {
    for (section, key) in [
        ("kafka", "enable.auto.commit"),
        ("consumer", "isolation.level"),
        ("producer", "transactional.id"),
        ("kafka", "group.id"),
    ] {
        let mut config = valid();
        let map = match section {
            "kafka" => &mut config.kafka,
            "consumer" => &mut config.consumer,
            _ => &mut config.producer,
        };
        map.insert(key.into(), "x".into());
        let error = only_error(&config);
        assert_eq!(error.key, format!("{section}.{key}"));
        assert!(error.message.contains("kstage sets this itself"), "{error}");
    }
}

#[test]
fn the_commit_watchdog_must_end_before_max_poll_interval() {
    // 60 s is below 100 s, but the watchdog waits up to two transaction timeouts unpolled.
    let mut config = valid();
    config.transaction_timeout = Duration::from_secs(60);
    config
        .consumer
        .insert("max.poll.interval.ms".into(), "100000".into());
    let error = only_error(&config);
    assert_eq!(error.key, "transaction_timeout");
    assert!(error.message.contains("watchdog"), "{error}");
    config
        .consumer
        .insert("max.poll.interval.ms".into(), "120001".into());
    assert!(
        config.validate(&registry()).is_ok(),
        "two transaction timeouts below max.poll.interval.ms are valid"
    );
}

#[test]
fn transaction_timeout_must_stay_below_max_poll_interval() {
    let mut config = valid();
    config
        .consumer
        .insert("max.poll.interval.ms".into(), "30000".into());
    let error = only_error(&config);
    assert_eq!(error.key, "transaction_timeout");
    assert!(error.message.contains("max.poll.interval.ms"), "{error}");

    let mut config = valid();
    config
        .kafka
        .insert("max.poll.interval.ms".into(), "soon".into());
    assert_eq!(only_error(&config).key, "kafka.max.poll.interval.ms");
}

#[test]
fn commit_interval_must_be_positive_and_below_the_transaction_timeout() {
    let config = StageConfig {
        commit_interval: Duration::ZERO,
        ..valid()
    };
    assert_eq!(only_error(&config).key, "commit_interval");
    let config = StageConfig {
        commit_interval: Duration::from_secs(120),
        ..valid()
    };
    let error = only_error(&config);
    assert_eq!(error.key, "commit_interval");
    assert!(error.message.contains("transaction_timeout"), "{error}");
}

#[test]
fn target_latency_goes_with_its_policy_and_stays_within_commit_interval() {
    let ms = Duration::from_millis;
    let with = |policy, target: Option<u64>| StageConfig {
        commit_policy: policy,
        target_latency: target.map(ms),
        ..valid()
    };
    let error = only_error(&with(CommitPolicy::TargetLatency, None));
    assert_eq!(error.key, "target_latency");
    assert!(error.message.contains("required"), "{error}");
    let error = only_error(&with(CommitPolicy::TargetLatency, Some(0)));
    assert!(error.message.contains("greater than 0"), "{error}");
    let error = only_error(&with(CommitPolicy::TargetLatency, Some(500)));
    assert_eq!(error.key, "target_latency");
    assert!(error.message.contains("commit_interval (100ms)"), "{error}");
    let error = only_error(&with(CommitPolicy::BackToBack, Some(20)));
    assert_eq!(error.key, "target_latency");
    assert!(error.message.contains("\"back_to_back\""), "{error}");
    for config in [
        with(CommitPolicy::TargetLatency, Some(20)),
        with(CommitPolicy::BackToBack, None),
        with(CommitPolicy::Interval, None),
    ] {
        assert!(config.validate(&registry()).is_ok(), "{config:?}");
    }
    let parsed =
        StageConfig::from_toml("commit_policy = \"target_latency\"\ntarget_latency = \"20ms\"")
            .expect("parses");
    assert_eq!(parsed.commit_policy, CommitPolicy::TargetLatency);
    assert_eq!(parsed.target_latency, Some(ms(20)));
    let error = StageConfig::from_toml("commit_policy = \"asap\"").expect_err("refused");
    assert!(error.message.contains("back_to_back"), "{error}");
}

#[test]
fn tiny_transaction_timeouts_and_empty_batches_are_refused() {
    let config = StageConfig {
        transaction_timeout: Duration::from_millis(500),
        commit_interval: Duration::from_millis(100),
        ..valid()
    };
    assert_eq!(only_error(&config).key, "transaction_timeout");
    let config = StageConfig {
        max_records_per_txn: 0,
        ..valid()
    };
    assert_eq!(only_error(&config).key, "max_records_per_txn");
    let config = StageConfig {
        pipelined_commits: true,
        delivery: DeliveryMode::AtLeastOnce,
        ..valid()
    };
    assert_eq!(only_error(&config).key, "pipelined_commits");
    let config = StageConfig {
        pipelined_commits: true,
        ..valid()
    };
    assert!(config.validate(&registry()).is_ok());
}

#[test]
fn message_timeout_may_not_exceed_the_transaction_timeout() {
    let mut config = valid();
    config
        .producer
        .insert("message.timeout.ms".into(), "120000".into());
    assert_eq!(only_error(&config).key, "producer.message.timeout.ms");
}

#[test]
fn topology_parameters_are_checked_by_the_topology() {
    let mut config = valid();
    config.params.insert("rtae".into(), "1".into());
    let error = only_error(&config);
    assert_eq!(error.key, "params.rtae");
    assert!(error.message.contains("rate"), "{error}");
}

#[test]
fn unknown_keys_in_a_file_are_named() {
    let error =
        StageConfig::from_toml("topology = \"two\"\ncomit_interval = \"1s\"\n").expect_err("typo");
    assert_eq!(error.key, "comit_interval");
    let error = StageConfig::from_toml("delivery = \"twice\"").expect_err("bad enum");
    assert!(error.message.contains("exactly_once"), "{error}");
    let parsed = StageConfig::from_toml("delivery = \"at_most_once\"\ncommit_interval = \"250ms\"")
        .expect("valid");
    assert_eq!(parsed.delivery, DeliveryMode::AtMostOnce);
    assert_eq!(parsed.commit_interval, Duration::from_millis(250));
}

#[test]
fn dead_letter_needs_its_own_topic() {
    let config = StageConfig {
        poison_policy: crate::config::PoisonPolicy::DeadLetter,
        ..valid()
    };
    assert_eq!(only_error(&config).key, "dead_letter_topic");
    let config = StageConfig {
        poison_policy: crate::config::PoisonPolicy::DeadLetter,
        dead_letter_topic: Some("in".into()),
        ..valid()
    };
    assert!(only_error(&config).message.contains("also an input"));
    let config = StageConfig {
        dead_letter_topic: Some("dlq".into()),
        ..valid()
    };
    assert!(only_error(&config)
        .message
        .contains("poison_policy is fail"));
    let config = StageConfig {
        poison_policy: crate::config::PoisonPolicy::DeadLetter,
        dead_letter_topic: Some("dlq".into()),
        ..valid()
    };
    assert_eq!(error_keys(&config), Vec::<String>::new());
}

#[test]
fn avro_needs_a_registry_that_gives_up_before_the_transaction_does() {
    let avro = crate::codec::TopicFormat {
        key: crate::codec::Format::String,
        value: crate::codec::Format::Avro,
        value_schema: None,
    };
    let config = StageConfig {
        default_format: avro.clone(),
        ..valid()
    };
    assert_eq!(only_error(&config).key, "schema_registry.url");
    let mut registry = crate::codec::RegistryConfig::new("http://registry:8081");
    registry.unavailable_timeout = Duration::from_secs(90);
    let config = StageConfig {
        default_format: avro,
        schema_registry: Some(registry),
        ..valid()
    };
    assert_eq!(
        only_error(&config).key,
        "schema_registry.unavailable_timeout"
    );
    let registry = crate::codec::RegistryConfig::new("registry:8081");
    let config = StageConfig {
        schema_registry: Some(registry),
        ..valid()
    };
    assert_eq!(only_error(&config).key, "schema_registry.url");
}

#[test]
fn sasl_needs_a_mechanism_user_and_password() {
    let mut config = valid();
    config.security.protocol = crate::config::SecurityProtocol::SaslSsl;
    let keys = error_keys(&config);
    for key in [
        "security.sasl_mechanism",
        "security.username",
        "security.password",
    ] {
        assert!(
            keys.contains(&key.to_string()),
            "{key} missing from {keys:?}"
        );
    }
    config.security.sasl_mechanism = Some(crate::config::SaslMechanism::ScramSha512);
    config.security.username = Some("stage".into());
    config.security.password = Some("pw".into());
    assert_eq!(error_keys(&config), Vec::<String>::new());
    config.kafka.insert("sasl.password".into(), "other".into());
    assert_eq!(only_error(&config).key, "kafka.sasl.password");
}

#[test]
fn tls_files_must_exist_and_match_the_protocol() {
    let mut config = valid();
    config.security.ca_location = Some("/nonexistent/ca.pem".into());
    let keys = error_keys(&config);
    assert!(keys.contains(&"security.protocol".to_string()), "{keys:?}");
    config.security.protocol = crate::config::SecurityProtocol::Ssl;
    assert_eq!(only_error(&config).key, "security.ca_location");
}

#[test]
fn expected_partitions_must_name_a_topic_of_the_stage() {
    let mut config = valid();
    config.expected_partitions.insert("in".into(), 3);
    assert_eq!(error_keys(&config), Vec::<String>::new());
    config.expected_partitions.insert("elsewhere".into(), 3);
    assert_eq!(only_error(&config).key, "expected_partitions.elsewhere");
}

/// A stateful topology for the state checks.
struct Counts;

impl crate::state::StatefulTopology for Counts {
    fn stores(&self) -> Vec<crate::state::StoreSpec> {
        vec![crate::state::StoreSpec::keyed("counts", "key", "count")]
    }
    fn process<'a>(
        &mut self,
        _: &Record<'a>,
        _: &mut crate::state::State<'_>,
        _: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        Ok(())
    }
}

#[test]
fn a_stateful_topology_needs_exactly_once_without_pipelining_on_one_input() {
    let mut registry = Registry::new();
    registry.register("counts", "stateful test topology", |_| {
        Ok(crate::state::stateful(Counts))
    });
    let mut config = StageConfig {
        topology: "counts".into(),
        bootstrap_servers: "127.0.0.1:9092".into(),
        inputs: vec!["in".into()],
        app_id: "app".into(),
        instance_id: "0".into(),
        ..StageConfig::default()
    };
    config.outputs.insert("default".into(), "out".into());
    assert!(config.validate(&registry).is_ok());
    config.delivery = DeliveryMode::AtLeastOnce;
    config.pipelined_commits = false;
    config.inputs.push("other".into());
    let errors = match config.validate(&registry) {
        Err(errors) => errors.to_string(),
        Ok(_) => panic!("three problems"),
    };
    for key in ["delivery", "inputs"] {
        assert!(errors.contains(key), "{key} not named: {errors}");
    }
    assert!(errors.contains("exactly one input topic"), "{errors}");
    config.delivery = DeliveryMode::ExactlyOnce;
    config.inputs.pop();
    config.pipelined_commits = true;
    let errors = match config.validate(&registry) {
        Err(errors) => errors.to_string(),
        Ok(_) => panic!("pipelined"),
    };
    assert!(
        errors.contains("pipelined_commits") && errors.contains("keeps state"),
        "{errors}"
    );
}
