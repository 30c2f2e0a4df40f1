//! Runs `kstage verify` (the binary users run) on a scenario's topics and parses its JSON
//! report, checking that the exit code agrees with the report.

use std::process::Command;
use std::time::{Duration, Instant};

use kstage::verify::Report;

/// What to verify: the same flags a user would pass.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub bootstrap: String,
    pub inputs: Vec<String>,
    pub through: Vec<String>,
    pub outputs: Vec<String>,
    /// `GROUP` or `GROUP=TOPIC`.
    pub groups: Vec<String>,
    /// `--id-field`, if not provenance.
    pub id_field: Option<String>,
    pub settle_timeout: Duration,
}

impl Verification {
    /// The command line after `kstage`.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "verify".into(),
            "--bootstrap-servers".into(),
            self.bootstrap.clone(),
            "--json".into(),
            "--no-progress".into(),
            "--examples".into(),
            "5".into(),
            "--settle-timeout".into(),
            format!("{}s", self.settle_timeout.as_secs().max(1)),
        ];
        let mut add = |flag: &str, values: &[String]| {
            for v in values {
                args.push(flag.into());
                args.push(v.clone());
            }
        };
        add("--input", &self.inputs);
        add("--through", &self.through);
        add("--output", &self.outputs);
        add("--group", &self.groups);
        if let Some(field) = &self.id_field {
            args.push("--id-field".into());
            args.push(field.clone());
        }
        args
    }

    /// Runs the verifier; returns its report and how long it took.
    pub fn run(&self) -> (Report, Duration) {
        let started = Instant::now();
        let args = self.args();
        let output = Command::new(env!("CARGO_BIN_EXE_kstage"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run kstage verify");
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let report: Report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "kstage {} did not print a JSON report ({e}); exit {}\nstdout:\n{stdout}\n\
                 stderr:\n{stderr}",
                args.join(" "),
                output.status
            )
        });
        let expected_code = if report.passed { 0 } else { 1 };
        assert_eq!(
            output.status.code(),
            Some(expected_code),
            "kstage verify's exit code disagrees with its report (passed = {})",
            report.passed
        );
        (report, took)
    }
}

/// The report as the text `kstage verify` prints without `--json` (for the test log).
pub fn describe(report: &Report) -> String {
    report.to_string()
}
