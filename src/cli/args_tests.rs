//! Flags and environment variables over the config file: each setting lands on its key, bad
//! values name the flag and what is valid, flags keep their commas, variables of lists are
//! comma-separated, and secrets stay out of `--help` and `Debug` output.

use std::sync::{Mutex, MutexGuard, PoisonError};

use clap::{CommandFactory, Parser};

use super::*;
use crate::codec::{Format, SubjectNameStrategy};
use crate::config::{DeliveryMode, PoisonPolicy};

/// Held by every test that parses: clap reads the process's environment, which
/// [`EnvVars`] changes.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Parser)]
struct Harness {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn runtime(args: &[&str]) -> Result<RuntimeArgs, String> {
    let _env = env_lock();
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
    let _env = env_lock();
    parse_locked(args)
}

/// [`parse`], for a test that holds the environment lock already.
fn parse_locked(args: &[&str]) -> Result<StageConfig, String> {
    let harness = Harness::try_parse_from(std::iter::once("kstage").chain(args.iter().copied()))
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
        "--commit-policy",
        "target_latency",
        "--target-latency",
        "20ms",
        "--kafka",
        "session.timeout.ms=6000",
    ])
    .expect("valid flags");
    assert_eq!(config.inputs, ["a", "b"]);
    assert_eq!(config.outputs["default"], "out");
    assert_eq!(config.outputs["invalid"], "bad");
    assert_eq!(config.delivery, DeliveryMode::AtLeastOnce);
    assert_eq!(config.commit_interval, Duration::from_millis(250));
    assert_eq!(
        config.commit_policy,
        crate::config::CommitPolicy::TargetLatency
    );
    assert_eq!(config.target_latency, Some(Duration::from_millis(20)));
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

/// Sets environment variables for the life of the guard; hold [`env_lock`] meanwhile.
struct EnvVars(Vec<&'static str>);

impl EnvVars {
    fn set(vars: &[(&'static str, &str)]) -> Self {
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        Self(vars.iter().map(|(name, _)| *name).collect())
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for name in &self.0 {
            std::env::remove_var(name);
        }
    }
}

#[test]
fn flags_keep_their_commas() {
    let config = parse(&["--kafka", "debug=cgrp,topic", "--input", "a,b"]).expect("valid flags");
    assert_eq!(config.kafka["debug"], "cgrp,topic");
    assert_eq!(config.kafka.len(), 1, "{:?}", config.kafka);
    // One topic named `a,b`, which validate() then refuses as a topic name.
    assert_eq!(config.inputs, ["a,b"]);
}

#[test]
fn list_environment_variables_are_comma_separated() {
    let _env = env_lock();
    let _vars = EnvVars::set(&[
        ("KSTAGE_INPUT", "a,b"),
        ("KSTAGE_KAFKA", "session.timeout.ms=6000,client.rack=r1"),
        ("KSTAGE_ROUTE", "invalid=bad,late=slow"),
        ("KSTAGE_FORMAT", "orders=string:avro,*=bytes:bytes"),
        ("KSTAGE_APP_ID", "app,with,commas"),
    ]);
    let config = parse_locked(&[]).expect("valid variables");
    assert_eq!(config.inputs, ["a", "b"]);
    assert_eq!(config.kafka["session.timeout.ms"], "6000");
    assert_eq!(config.kafka["client.rack"], "r1");
    assert_eq!(config.outputs["invalid"], "bad");
    assert_eq!(config.outputs["late"], "slow");
    assert_eq!(config.formats["orders"].value, Format::Avro);
    assert_eq!(config.default_format.value, Format::Bytes);
    // A variable of a single-valued setting is taken whole.
    assert_eq!(config.app_id, "app,with,commas");
    // A flag replaces its variable.
    let config = parse_locked(&["--input", "c"]).expect("valid");
    assert_eq!(config.inputs, ["c"]);
}

#[test]
fn a_bad_piece_of_a_variable_names_the_flag() {
    let _env = env_lock();
    let _vars = EnvVars::set(&[("KSTAGE_FORMAT", "orders=string:avro,b=string:xml")]);
    let err = parse_locked(&[]).expect_err("bad format");
    assert!(
        err.contains("--format") && err.contains("bytes, string, json, avro"),
        "{err}"
    );
}

#[test]
fn the_parser_splits_only_variables_of_repeated_settings() {
    let cmd = Harness::command();
    let parse = |kind, raw: &str, source| {
        SettingParser::new(kind)
            .parse_ref_(&cmd, None, std::ffi::OsStr::new(raw), source)
            .expect("valid")
    };
    use clap::builder::TypedValueParser;
    use clap::parser::ValueSource::{CommandLine, EnvVariable};
    assert_eq!(
        parse(Kind::Entries, "debug=cgrp,topic", CommandLine).len(),
        1
    );
    assert_eq!(parse(Kind::Entries, "a=1,b=2", EnvVariable).len(), 2);
    assert_eq!(parse(Kind::List, "a,b,c", EnvVariable).len(), 3);
    assert_eq!(parse(Kind::Text, "a,b", EnvVariable).len(), 1);
}

/// A value every setting of `kind` accepts.
fn sample(kind: Kind) -> String {
    match kind {
        Kind::Text | Kind::File | Kind::List => "sample".into(),
        Kind::Bool => "false".into(),
        Kind::Count => "7".into(),
        Kind::Duration => "7s".into(),
        Kind::Choice(values) => values()
            .last()
            .map(|v| v.get_name().to_string())
            .expect("a choice has values"),
        Kind::Entries => "name=sample".into(),
        Kind::Formats => "orders=bytes:avro".into(),
    }
}

#[test]
fn every_setting_lands_on_its_key() {
    for setting in SETTINGS {
        let flag = format!("--{}", setting.flag);
        let value = sample(setting.kind);
        let mut args = vec![flag.as_str(), value.as_str()];
        if setting.needs_section.is_some() {
            args.extend(["--schema-registry-url", "http://r"]);
        }
        let config = parse(&args).unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
        let table = Table::try_from(&config).expect("a config serializes");
        let mut path: Vec<&str> = setting.path().collect();
        let expected = match setting.kind {
            Kind::Entries => {
                path.push("name");
                "sample".to_string()
            }
            Kind::Formats => {
                path.extend(["formats", "orders", "value"]);
                "avro".to_string()
            }
            Kind::List => format!("{value:?}"),
            _ => value.clone(),
        };
        let found = lookup(&table, path.iter().copied()).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Array(list) => list.iter().map(|v| v.to_string()).collect(),
            other => other.to_string(),
        });
        assert_eq!(
            found.as_deref(),
            Some(expected.as_str()),
            "{flag} {value} should set {}",
            path.join(".")
        );
    }
}

#[test]
fn environment_variables_are_kstage_and_the_flag() {
    for setting in SETTINGS {
        if let Some(env) = setting.env {
            let expected = format!("KSTAGE_{}", setting.flag.replace('-', "_").to_uppercase());
            assert_eq!(env, expected);
        }
    }
}

#[test]
fn help_names_every_flag_its_variable_and_its_default() {
    let help = {
        let _env = env_lock();
        Harness::command().render_long_help().to_string()
    };
    for setting in SETTINGS {
        assert!(help.contains(&format!("--{} ", setting.flag)), "{help}");
        if let Some(env) = setting.env {
            assert!(
                help.contains(&format!("[env: {env}")),
                "{env} missing:\n{help}"
            );
        }
    }
    for default in [
        "[default: 100ms]",
        "[default: exactly_once]",
        "[default: 100000]",
        "[default: 30s]",
    ] {
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
    Harness::command().debug_assert();
}

#[test]
fn secrets_stay_out_of_help_and_debug_output() {
    let _env = env_lock();
    let _vars = EnvVars::set(&[
        ("KSTAGE_SASL_PASSWORD", "hunter2"),
        ("KSTAGE_SSL_KEY_PASSWORD", "s3cret"),
        ("KSTAGE_SCHEMA_REGISTRY_PASSWORD", "r3g"),
        ("KSTAGE_SASL_USERNAME", "alice"),
    ]);
    let help = Harness::command().render_long_help().to_string();
    // Values of other variables do show, so the check below can fail.
    assert!(help.contains("KSTAGE_SASL_USERNAME=alice"), "{help}");
    let harness = Harness::try_parse_from(["kstage", "--schema-registry-url", "http://r"])
        .expect("valid variables");
    let shown = format!("{:?}", harness.stage);
    assert!(shown.contains("alice"), "{shown}");
    for secret in ["hunter2", "s3cret", "r3g"] {
        assert!(!help.contains(secret), "{secret} in --help:\n{help}");
        assert!(!shown.contains(secret), "{secret} in Debug: {shown}");
    }
    let config = harness.stage.into_config().expect("valid");
    assert_eq!(config.security.password.as_deref(), Some("hunter2"));
}

#[test]
fn registry_settings_without_a_registry_are_ignored() {
    let config = parse(&["--schema-registry-password", "pw"]).expect("valid");
    assert_eq!(config.schema_registry, None);
}

#[test]
fn flags_merge_into_the_files_tables_and_replace_its_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stage.toml");
    std::fs::write(
        &path,
        "inputs = [\"file-a\", \"file-b\"]\n\
         [outputs]\ndefault = \"file-out\"\ninvalid = \"file-bad\"\n\
         [formats.orders]\nkey = \"string\"\nvalue = \"json\"\nvalue_schema = \"orders.avsc\"\n\
         [schema_registry]\nurl = \"http://file\"\nusername = \"file-user\"\n\
         [kafka]\n\"session.timeout.ms\" = \"6000\"\n",
    )
    .expect("write config");
    let path = path.to_string_lossy().to_string();
    let config = parse(&[
        "--config",
        &path,
        "--input",
        "flag-a",
        "--route",
        "late=flag-late",
        "--format",
        "orders=bytes:avro",
        "--schema-registry-password",
        "pw",
        "--kafka",
        "client.rack=r1",
    ])
    .expect("valid");
    assert_eq!(config.inputs, ["flag-a"]);
    assert_eq!(config.outputs["default"], "file-out");
    assert_eq!(config.outputs["invalid"], "file-bad");
    assert_eq!(config.outputs["late"], "flag-late");
    let orders = &config.formats["orders"];
    assert_eq!((orders.key, orders.value), (Format::Bytes, Format::Avro));
    assert_eq!(
        orders.value_schema.as_deref(),
        Some(std::path::Path::new("orders.avsc"))
    );
    let registry = config.schema_registry.expect("registry");
    assert_eq!(registry.url, "http://file");
    assert_eq!(registry.username.as_deref(), Some("file-user"));
    assert_eq!(registry.password.as_deref(), Some("pw"));
    assert_eq!(config.kafka["session.timeout.ms"], "6000");
    assert_eq!(config.kafka["client.rack"], "r1");
}

#[test]
fn a_bad_file_is_named_with_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stage.toml");
    std::fs::write(&path, "workers = \"many\"\ncomit_interval = \"1s\"\n").expect("write");
    let path = path.to_string_lossy().to_string();
    let err = parse(&["--config", &path, "--app-id", "a"]).expect_err("unknown key");
    assert!(
        err.contains("comit_interval") && err.contains(&path),
        "{err}"
    );
    std::fs::write(dir.path().join("stage.toml"), "workers = \"many\"\n").expect("write");
    let err = parse(&["--config", &path]).expect_err("bad type");
    assert!(err.contains("workers") || err.contains("usize"), "{err}");
}
