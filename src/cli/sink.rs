//! `kstage sink`: a stage that ends in PostgreSQL (see `src/sink` and docs/SINK.md).
//!
//! The same settings as `kstage run` (config file, flags, environment), minus the topology and
//! outputs, plus the config file's `[sink]` section; the same signals, metrics and exit codes
//! (0 clean, 1 runtime error, 2 bad config or a table or column that does not exist).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::args::{RuntimeArgs, StageArgs};
use super::signals;
use crate::config::{redacted, ConfigErrors};
use crate::observability::{Health, Telemetry};
use crate::sink::SinkError;
use crate::topology::Registry;

/// Runs the sink until SIGTERM or SIGINT; `print`: print the merged config (redacted) and exit.
pub(super) fn run(
    stage: StageArgs,
    runtime: RuntimeArgs,
    print: bool,
    registry: &Registry,
) -> ExitCode {
    let config = match stage.into_config() {
        Ok(config) => config,
        Err(error) => return config_failure(&error.into()),
    };
    if let Err(errors) = crate::sink::validate(&config) {
        return config_failure(&errors);
    }
    if print {
        return match toml::to_string_pretty(&redacted(&config)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kstage: cannot print the configuration: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let telemetry = Telemetry {
        metrics: Arc::default(),
        health: Arc::new(Health::new(runtime.ready_max_transaction_age)),
    };
    let http = runtime
        .metrics_address
        .0
        .map(|address| (address, telemetry.clone()));
    let registry = registry.clone();
    let result = signals::run_until_signal(shutdown, runtime.shutdown_grace, http, move || {
        crate::sink::run(&config, &registry, flag, telemetry)
    });
    match result {
        Ok(stats) => {
            tracing::info!(
                records_in = stats.records_in,
                rows = stats.records_out,
                commits = stats.commits,
                skipped = stats.skipped,
                dead_lettered = stats.dead_lettered,
                "Sink stopped cleanly."
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "Sink failed.");
            eprintln!("kstage: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn exit_code(error: &SinkError) -> u8 {
    error.exit_code()
}

fn config_failure(errors: &ConfigErrors) -> ExitCode {
    eprintln!("kstage: {errors}");
    ExitCode::from(2)
}
