//! The command line, without a broker: listing topologies, the mock-cluster demo (and its path into
//! PostgreSQL, `--postgres`), and the exit code 2
//! contract for bad flags, bad config files and raw Kafka settings that would break exactly-once.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Nothing listens here: a command that got as far as connecting would hang, not pass.
const NO_BROKER: &str = "127.0.0.1:1";

/// Runs `kstage args...`, killing it if it runs longer than `timeout`.
fn kstage(args: &[&str], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("create a directory for the command's output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kstage"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("KSTAGE_") && !key.starts_with("KSTAGE_TEST_") {
            command.env_remove(key.as_ref());
        }
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .expect("spawn the kstage binary");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("query kstage's status") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`kstage {}` did not finish within {timeout:?}; stderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&stdout_path).expect("read stdout"),
        stderr: std::fs::read(&stderr_path).expect("read stderr"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kstage run` with every required flag valid, plus `extra`.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--topology",
        "passthrough",
        "--bootstrap-servers",
        NO_BROKER,
        "--input",
        "cli-in",
        "--output",
        "cli-out",
        "--app-id",
        "cli-app",
        "--instance-id",
        "i0",
    ];
    args.extend_from_slice(extra);
    args
}

/// Asserts exit code 2 and that stderr mentions every one of `needles` (case-insensitive).
fn assert_config_error(output: &Output, what: &str, needles: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: expected exit code 2, got {}; stderr:\n{stderr}",
        output.status
    );
    let lower = stderr.to_lowercase();
    for needle in needles {
        assert!(
            lower.contains(&needle.to_lowercase()),
            "{what}: stderr should mention `{needle}`; stderr:\n{stderr}"
        );
    }
}

fn topologies_lists_the_built_in_topologies() {
    let output = kstage(&["topologies"], Duration::from_secs(30));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "`kstage topologies` failed: {}\n{}",
        output.status,
        text(&output.stderr)
    );
    for name in ["passthrough", "orders"] {
        assert!(
            stdout.contains(name),
            "`kstage topologies` should list {name}; stdout:\n{stdout}"
        );
    }
}

fn demo_runs_on_the_mock_cluster_and_says_it_is_not_a_guarantee() {
    let output = kstage(&["demo"], Duration::from_secs(120));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "`kstage demo` failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        text(&output.stderr)
    );
    assert!(
        stdout.to_lowercase().contains("mock"),
        "the demo should say it ran on the mock cluster, which does not enforce transactional \
         isolation; stdout:\n{stdout}"
    );
}

fn demo_with_postgres_ends_in_a_table_holding_each_output_record_once() {
    let url = crate::common::sink::pg_url();
    let output = kstage(
        &["demo", "--records", "300", "--postgres", &url],
        Duration::from_secs(180),
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "`kstage demo --postgres` failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        text(&output.stderr)
    );
    // 300 sample orders, every 10th invalid: 270 on the default output.
    let mut pg = crate::common::sink::Pg::connect(&url);
    let table = "kstage_demo_orders";
    assert_eq!(pg.count(&format!("SELECT count(*) FROM {table}")), 270);
    assert_eq!(
        pg.count(&format!(
            "SELECT count(DISTINCT (src_partition, src_offset)) FROM {table} \
             WHERE src_topic = 'demo-orders-out'"
        )),
        270,
        "one row per output record"
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM {table} WHERE key = value->>'id' AND value ? 'total'"
        )),
        270,
        "each row holds its record's key and enriched value"
    );
    assert!(
        stdout.contains(&format!("table {table} at ")) && stdout.contains("270 rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("kstage verify: PASSED (table {table}")),
        "{stdout}"
    );
    let password = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|user| user.split(':').nth(1))
        .unwrap_or("");
    assert!(
        password.is_empty() || !stdout.contains(&format!(":{password}@")),
        "the password is printed: {stdout}"
    );
}

fn unknown_delivery_mode_exits_2_naming_the_flag_and_valid_values() {
    let output = kstage(
        &run_args(&["--delivery", "exactly-twice"]),
        Duration::from_secs(30),
    );
    assert_config_error(
        &output,
        "--delivery exactly-twice",
        &["delivery", "exactly_once", "at_least_once", "at_most_once"],
    );
}

fn config_file_with_an_unknown_key_exits_2_naming_the_key() {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a config file");
    writeln!(file, "definitely_not_a_kstage_key = 1").expect("write the config file");
    let path = file
        .path()
        .to_str()
        .expect("temp path is UTF-8")
        .to_string();

    let output = kstage(&["validate", "--config", &path], Duration::from_secs(30));
    assert_config_error(
        &output,
        "validate with an unknown key",
        &["definitely_not_a_kstage_key"],
    );

    let mut args = run_args(&[]);
    args.extend(["--config", path.as_str()]);
    let output = kstage(&args, Duration::from_secs(30));
    assert_config_error(
        &output,
        "run with an unknown config key",
        &["definitely_not_a_kstage_key"],
    );
}

fn kafka_settings_that_exactly_once_depends_on_are_rejected_with_exit_2() {
    for (setting, key) in [
        ("enable.auto.commit=true", "enable.auto.commit"),
        ("transactional.id=x", "transactional.id"),
        ("isolation.level=read_uncommitted", "isolation.level"),
    ] {
        let output = kstage(&run_args(&["--kafka", setting]), Duration::from_secs(30));
        assert_config_error(&output, &format!("--kafka {setting}"), &[key]);
    }
}

trials! {
    topologies_lists_the_built_in_topologies => [],
    demo_runs_on_the_mock_cluster_and_says_it_is_not_a_guarantee => [],
    demo_with_postgres_ends_in_a_table_holding_each_output_record_once => [Postgres],
    unknown_delivery_mode_exits_2_naming_the_flag_and_valid_values => [],
    config_file_with_an_unknown_key_exits_2_naming_the_key => [],
    kafka_settings_that_exactly_once_depends_on_are_rejected_with_exit_2 => [],
}
