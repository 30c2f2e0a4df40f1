//! `kstage verify --sink FILE`: the command-line face of [`crate::verify::verify_table`]. The
//! sink's config file says everything (bootstrap servers, inputs, `[kafka]` settings, table,
//! mapping, mode; the URL from `sink.url` or `KSTAGE_SINK_URL`); `--bootstrap-servers`
//! overrides the file's. A sink with a typed sink topology (`[sink] topology`) is verified
//! table by table, the topology looked up in the binary's registry and run again
//! ([`crate::verify::verify_topology_tables`]; the JSON report is a
//! [`crate::verify::TablesReport`]). Exit codes as `kstage verify`: 0 passed, 1 a check failed, 2 a bad
//! config, 3 the verification could not be carried out.

use std::path::Path;
use std::process::ExitCode;

use super::verify::{emit, progress_bar, VerifyArgs};
use crate::config::StageConfig;
use crate::topology::Registry;
use crate::verify::{self, NoProgress, Progress, VerifyError};

/// Runs the table verification of the sink configured in `path`.
pub(super) fn run(path: &Path, args: VerifyArgs, registry: &Registry) -> ExitCode {
    let mut config = match StageConfig::from_file(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kstage verify: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(bootstrap) = args.bootstrap_servers.clone() {
        config.bootstrap_servers = bootstrap;
    }
    if args.examples == 0 {
        eprintln!("kstage verify: --examples must be at least 1");
        return ExitCode::from(2);
    }
    let bar = progress_bar(!args.no_progress);
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &NoProgress,
    };
    let topology = config.sink.as_ref().is_some_and(|s| s.topology.is_some());
    if topology {
        let result = verify::verify_topology_tables(&config, registry, args.examples, progress);
        return conclude(result.map(|r| (r.passed, r)), bar, args);
    }
    let result = verify::verify_table(&config, args.examples, progress);
    conclude(result.map(|r| (r.passed, r)), bar, args)
}

/// Clears the progress bar, then prints and returns what the verification found: its report
/// (with whether it passed), or why it could not be carried out.
fn conclude<R: serde::Serialize + std::fmt::Display>(
    result: Result<(bool, R), VerifyError>,
    bar: Option<super::verify::Bar>,
    args: VerifyArgs,
) -> ExitCode {
    if let Some(bar) = &bar {
        bar.0.finish_and_clear();
    }
    match result {
        Ok((passed, report)) => emit(
            &report,
            &report.to_string(),
            passed,
            args.json,
            args.report_file,
        ),
        Err(error) => failed(&error),
    }
}

/// Reports a verification that could not be carried out: exit 2 for a config error, else 3.
fn failed(error: &VerifyError) -> ExitCode {
    if let VerifyError::Config(_) = error {
        eprintln!("kstage verify: {error}");
        ExitCode::from(2)
    } else {
        eprintln!("kstage verify: could not verify: {error}");
        ExitCode::from(3)
    }
}
