//! A stage against a secured broker (TLS, SASL, ACLs; `scripts/kafka.sh start --secure`).
//!
//! With the right ACLs (Read on the input topic and the group, Write and Describe on the output
//! topic and on the transactional id `<app-id>-<instance-id>`) the stage processes every record
//! exactly once over SASL_SSL with each mechanism (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN) and over
//! mutual TLS with an encrypted key. Without one of them, or with a wrong password, it exits
//! non-zero soon, with an error that names the cause, and commits nothing. Passwords never reach
//! its log or `kstage validate --print`.
//!
//! One secure broker serves the whole file (see `common::secure`); every test uses fresh topics,
//! group and transactional id, so the ACLs of one test grant nothing to another.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::secure::{Resource, SecureBroker, STAGE_USER};
use common::stage::exit_code;
use common::{Isolation, Pipeline, Stage, StageSpec, Verdict, PATIENCE};

/// How long a stage that cannot authenticate or is not authorized may take to give up.
const FAIL_DEADLINE: Duration = Duration::from_secs(60);
/// Input records per test.
const RECORDS: usize = 300;
const INSTANCE: &str = "0";

/// Which of the ACLs a stage needs a test grants.
#[derive(Clone, Copy)]
struct Grants {
    read_input: bool,
    write_output: bool,
    transactional_id: bool,
}

const ALL: Grants = Grants {
    read_input: true,
    write_output: true,
    transactional_id: true,
};

/// Grants `principal` what a stage of `pipeline` (instance [`INSTANCE`]) needs, minus what
/// `grants` leaves out. A topic whose Read or Write is withheld keeps Describe, so the stage sees
/// it exists and meets the missing right where it uses it.
fn grant(broker: &SecureBroker, pipeline: &Pipeline, principal: &str, grants: Grants) {
    let topic = |name: &str| Resource::Topic(name.to_string());
    let mut reads = vec![Resource::Group(pipeline.app_id.clone())];
    let mut writes = Vec::new();
    let mut describe_only = Vec::new();
    if grants.read_input {
        reads.push(topic(&pipeline.input));
    } else {
        describe_only.push(topic(&pipeline.input));
    }
    if grants.write_output {
        writes.push(topic(&pipeline.output));
    } else {
        describe_only.push(topic(&pipeline.output));
    }
    if grants.transactional_id {
        writes.push(Resource::TransactionalId(transactional_id(pipeline)));
    }
    let mut grants: Vec<(&[&str], Vec<Resource>)> = vec![(&["Read", "Describe"], reads)];
    if !writes.is_empty() {
        grants.push((&["Write", "Describe"], writes));
    }
    if !describe_only.is_empty() {
        grants.push((&["Describe"], describe_only));
    }
    broker.allow(principal, &grants);
}

fn transactional_id(pipeline: &Pipeline) -> String {
    format!("{}-{INSTANCE}", pipeline.app_id)
}

fn stage_user() -> String {
    format!("User:{STAGE_USER}")
}

/// Seeds the input, runs `spec` until the group has committed all of it, stops it with SIGTERM
/// (exit 0), and checks the read_committed output holds every input record once, in order.
fn assert_processes_exactly_once(pipeline: &Pipeline, spec: &StageSpec, secrets: &[&str]) {
    let writer = pipeline.seed(RECORDS);
    let started = Instant::now();
    let mut stage = spec.spawn();
    pipeline.wait_drained(&mut stage, &writer.end_offsets());
    eprintln!(
        "{RECORDS} records processed {:.1} s after the stage started",
        started.elapsed().as_secs_f64()
    );
    stage.sigterm();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(0) {
        stage.fail(&format!("SIGTERM should exit 0, got {status}"));
    }
    assert_no_secret_logged(&mut stage, secrets);
    pipeline
        .check_committed(&writer.written)
        .assert_exactly_once_in_order("read_committed output of a secured stage");
    assert!(
        pipeline.output_settled(),
        "the stage left a transaction open"
    );
}

/// Seeds the input, runs `spec`, and checks that it exits non-zero within [`FAIL_DEADLINE`], that
/// its exit message mentions each of `needles` (case-insensitive), that no secret is in its log,
/// and that it committed nothing: no read_committed output, no committed group offsets. Returns
/// the exit message, lower-cased.
fn assert_fails_cleanly(
    pipeline: &Pipeline,
    spec: &StageSpec,
    needles: &[&str],
    secrets: &[&str],
) -> String {
    pipeline.seed(RECORDS);
    let started = Instant::now();
    let mut stage = spec.spawn();
    let status = stage.wait_exit(FAIL_DEADLINE);
    let took = started.elapsed();
    if status.success() || exit_code(status).is_none() {
        stage.fail(&format!("the stage should exit non-zero, got {status}"));
    }
    let log = exit_message(&stage.stderr()).to_lowercase();
    for needle in needles {
        if !log.contains(&needle.to_lowercase()) {
            stage.fail(&format!(
                "the stage's exit message does not mention {needle:?}"
            ));
        }
    }
    assert_no_secret_logged(&mut stage, secrets);
    eprintln!(
        "the stage exited ({status}) after {:.1} s; its errors:\n{}",
        took.as_secs_f64(),
        error_lines(&stage.stderr())
    );
    let output = pipeline.read_output(Isolation::ReadCommitted);
    assert!(
        output.is_empty(),
        "the failed stage committed {} output records",
        output.len()
    );
    let committed = pipeline.group_offsets(true).committed();
    assert!(
        committed.iter().all(Option::is_none),
        "the failed stage committed group offsets {committed:?}"
    );
    log
}

/// The lines of a stage's log that report errors: ERROR-level lines (librdkafka's included) and
/// the final `kstage: ...`.
fn error_lines(log: &str) -> String {
    log.lines()
        .filter(|line| line.contains(" ERROR ") || line.starts_with("kstage:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stage's own account of why it stopped: the `kstage: ...` line it prints on exit. (What
/// librdkafka logs on the way does not count: an operator reads the stage's message.)
fn exit_message(log: &str) -> String {
    log.lines()
        .filter(|line| line.starts_with("kstage:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_secret_logged(stage: &mut Stage, secrets: &[&str]) {
    let log = stage.stderr();
    for secret in secrets {
        if log.contains(secret) {
            stage.fail(&format!("the stage logged a secret ({}...)", &secret[..6]));
        }
    }
}

/// A SASL_SSL stage of `pipeline` with `mechanism` as the stage user.
fn sasl_spec(broker: &Arc<SecureBroker>, pipeline: &Pipeline, mechanism: &str) -> StageSpec {
    let spec = pipeline.stage("passthrough").instance(INSTANCE);
    broker.sasl_stage(spec, mechanism, STAGE_USER, &broker.stage_password)
}

/// A fully granted SASL_SSL stage with `mechanism`, over `partitions` input partitions,
/// processes exactly once and logs no password.
fn sasl_processes_exactly_once(mechanism: &str, partitions: i32) {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(partitions);
    grant(&broker, &pipeline, &stage_user(), ALL);
    let spec = sasl_spec(&broker, &pipeline, mechanism);
    assert_processes_exactly_once(&pipeline, &spec, &[&broker.stage_password]);
}

fn processes_exactly_once_over_sasl_ssl_with_scram_sha_512() {
    sasl_processes_exactly_once("SCRAM-SHA-512", 3);
}

fn processes_exactly_once_over_sasl_ssl_with_scram_sha_256() {
    sasl_processes_exactly_once("SCRAM-SHA-256", 2);
}

fn processes_exactly_once_over_sasl_ssl_with_plain() {
    sasl_processes_exactly_once("PLAIN", 2);
}

fn processes_exactly_once_over_mutual_tls_with_an_encrypted_key() {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(2);
    grant(&broker, &pipeline, &broker.mtls_principal, ALL);
    let spec = broker.mtls_stage(pipeline.stage("passthrough").instance(INSTANCE));
    assert_processes_exactly_once(&pipeline, &spec, &[&broker.client_key_password]);
}

fn wrong_password_exits_with_an_authentication_error_and_commits_nothing() {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(2);
    grant(&broker, &pipeline, &stage_user(), ALL);
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    let spec = pipeline.stage("passthrough").instance(INSTANCE);
    let spec = broker.sasl_stage(spec, "SCRAM-SHA-512", STAGE_USER, &wrong);
    assert_fails_cleanly(
        &pipeline,
        &spec,
        &["authentication"],
        &[&wrong, &broker.stage_password],
    );
}

fn missing_transactional_id_acl_exits_naming_it_and_commits_nothing() {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(2);
    let grants = Grants {
        transactional_id: false,
        ..ALL
    };
    grant(&broker, &pipeline, &stage_user(), grants);
    let spec = sasl_spec(&broker, &pipeline, "SCRAM-SHA-512");
    let id = transactional_id(&pipeline);
    let log = assert_fails_cleanly(&pipeline, &spec, &["authori"], &[&broker.stage_password]);
    assert!(
        log.contains(&id.to_lowercase()) || log.contains("transactionalid"),
        "the error should name the transactional id ({id}) or say TransactionalId:\n{log}"
    );
}

fn missing_write_acl_on_the_output_exits_naming_the_topic_and_commits_nothing() {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(2);
    let grants = Grants {
        write_output: false,
        ..ALL
    };
    grant(&broker, &pipeline, &stage_user(), grants);
    let spec = sasl_spec(&broker, &pipeline, "SCRAM-SHA-512");
    assert_fails_cleanly(
        &pipeline,
        &spec,
        &["authori", &pipeline.output],
        &[&broker.stage_password],
    );
}

fn missing_read_acl_on_the_input_exits_naming_the_topic_and_commits_nothing() {
    let broker = require_secure_broker!();
    let pipeline = broker.pipeline(2);
    let grants = Grants {
        read_input: false,
        ..ALL
    };
    grant(&broker, &pipeline, &stage_user(), grants);
    let spec = sasl_spec(&broker, &pipeline, "SCRAM-SHA-512");
    assert_fails_cleanly(
        &pipeline,
        &spec,
        &["authori", &pipeline.input],
        &[&broker.stage_password],
    );
}

/// No broker needed: `kstage validate --print` shows the merged config with every password
/// replaced, whether it came from the file or the environment.
fn validate_print_redacts_the_passwords() {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.path().join(file), "not checked by validate\n").expect("write file");
    }
    let file_password = format!("file-secret-{:016x}", rand::random::<u64>());
    let key_password = format!("key-secret-{:016x}", rand::random::<u64>());
    let env_password = format!("env-secret-{:016x}", rand::random::<u64>());
    let config = format!(
        r#"topology = "passthrough"
bootstrap_servers = "127.0.0.1:9093"
inputs = ["in"]
app_id = "app"
instance_id = "0"

[outputs]
default = "out"

[security]
protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
username = "stage"
password = "{file_password}"
ca_location = "{dir}/ca.pem"
certificate_location = "{dir}/client.pem"
key_location = "{dir}/client.key"
key_password = "{key_password}"
"#,
        dir = dir.path().display()
    );
    let path = dir.path().join("stage.toml");
    std::fs::write(&path, config).expect("write stage.toml");

    let validate = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kstage"));
        command
            .args(["validate", "--print", "--config"])
            .arg(&path)
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KSTAGE_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let output = command.output().expect("run kstage validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "kstage validate failed ({}):\n{text}",
            output.status
        );
        text
    };

    let printed = validate(&[]);
    for secret in [&file_password, &key_password] {
        assert!(
            !printed.contains(secret.as_str()),
            "validate --print shows a password:\n{printed}"
        );
    }
    assert!(
        printed.contains("SCRAM-SHA-512") && printed.contains("stage"),
        "validate --print should still show the non-secret settings:\n{printed}"
    );
    assert!(
        printed.to_lowercase().contains("redacted"),
        "validate --print should mark the redacted passwords:\n{printed}"
    );

    let printed = validate(&[("KSTAGE_SASL_PASSWORD", &env_password)]);
    assert!(
        !printed.contains(&env_password) && !printed.contains(&key_password),
        "validate --print shows a password from the environment:\n{printed}"
    );
}

trials! {
    processes_exactly_once_over_sasl_ssl_with_scram_sha_512 => [OwnBrokers],
    processes_exactly_once_over_sasl_ssl_with_scram_sha_256 => [OwnBrokers],
    processes_exactly_once_over_sasl_ssl_with_plain => [OwnBrokers],
    processes_exactly_once_over_mutual_tls_with_an_encrypted_key => [OwnBrokers],
    wrong_password_exits_with_an_authentication_error_and_commits_nothing => [OwnBrokers],
    missing_transactional_id_acl_exits_naming_it_and_commits_nothing => [OwnBrokers],
    missing_write_acl_on_the_output_exits_naming_the_topic_and_commits_nothing => [OwnBrokers],
    missing_read_acl_on_the_input_exits_naming_the_topic_and_commits_nothing => [OwnBrokers],
    validate_print_redacts_the_passwords => [],
}
