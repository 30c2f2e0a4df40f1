//! `kstage verify --sink FILE`: the command-line face of [`crate::verify::verify_table`]. The
//! sink's config file says everything (bootstrap servers, inputs, `[kafka]` settings, table,
//! mapping, mode; the URL from `sink.url` or `KSTAGE_SINK_URL`); `--bootstrap-servers`
//! overrides the file's. Exit codes as `kstage verify`: 0 passed, 1 a check failed, 2 a bad
//! config, 3 the verification could not be carried out.

use std::path::Path;
use std::process::ExitCode;

use super::verify::{emit, progress_bar, VerifyArgs};
use crate::config::StageConfig;
use crate::verify::{self, NoProgress, Progress, VerifyError};

/// Runs the table verification of the sink configured in `path`.
pub(super) fn run(path: &Path, args: VerifyArgs) -> ExitCode {
    let mut config = match StageConfig::from_file(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kstage verify: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(bootstrap) = args.bootstrap_servers {
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
    let result = verify::verify_table(&config, args.examples, progress);
    if let Some(bar) = &bar {
        bar.0.finish_and_clear();
    }
    match result {
        Ok(report) => emit(
            &report,
            &report.to_string(),
            report.passed,
            args.json,
            args.report_file,
        ),
        Err(error @ VerifyError::Config(_)) => {
            eprintln!("kstage verify: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("kstage verify: could not verify: {error}");
            ExitCode::from(3)
        }
    }
}
