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
