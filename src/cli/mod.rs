//! The `kstage` command line. A binary that registers its own topologies calls [`main`] with its
//! registry; that is all `src/main.rs` does.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime error, 2 on a bad flag or config.

mod args;
mod demo;
mod demo_postgres;
mod settings;
mod signals;
mod sink;
mod state;
mod topics;
mod values;
mod verify;
mod verify_table;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

pub use args::{RuntimeArgs, StageArgs};

use crate::config::{redacted, ConfigErrors, DeliveryMode};
use crate::error::EngineError;
use crate::observability::{self, Health, LogFormat, Telemetry};
use crate::topology::Registry;

/// Exactly-once, transactional Kafka stream processing stages.
#[derive(Debug, Parser)]
#[command(name = "kstage", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        env = "KSTAGE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a stage against a Kafka cluster until SIGTERM or SIGINT.
    Run {
        /// The stage settings.
        #[command(flatten)]
        stage: StageArgs,
        /// Process-level knobs.
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Run a sink stage: read topics and write rows to PostgreSQL (the config's `[sink]`
    /// section), exactly once (mode transactional) or as idempotent upserts, until SIGTERM.
    Sink {
        /// The stage settings (no topology or outputs; the config file's `[sink]` section).
        #[command(flatten)]
        stage: StageArgs,
        /// Process-level knobs.
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// Print the merged configuration (secrets redacted) as TOML and exit.
        #[arg(long)]
        print: bool,
    },
    /// Check a stage's configuration without connecting to Kafka.
    Validate {
        /// The stage settings to check.
        #[command(flatten)]
        stage: StageArgs,
        /// Print the merged configuration (secrets redacted) as TOML.
        #[arg(long)]
        print: bool,
    },
    /// List the registered topologies.
    Topologies,
    /// Run a topology end to end on librdkafka's in-process mock cluster (no Kafka needed).
    Demo(demo::DemoArgs),
    /// Check a pipeline's output against its input: lost, duplicated, unexpected and
    /// out-of-order records, aborted records visible, torn and hanging transactions, group
    /// offsets. Exit code 1 when a check fails.
    Verify(verify::VerifyArgs),
    /// Look into a stateful stage's stores.
    State {
        /// What to do.
        #[command(subcommand)]
        action: StateCommand,
    },
    /// Manage the stage's topics (kstage never creates topics while it runs).
    Topics {
        /// What to do.
        #[command(subcommand)]
        action: TopicsCommand,
    },
}

/// `kstage state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print a store's contents, read from its changelog topic (the last value per key).
    Inspect(state::InspectArgs),
}

/// `kstage topics` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the output topics and the stores' changelog topics (compacted, as many
    /// partitions as the input) of a stage; existing topics are left as they are.
    Create(topics::CreateArgs),
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main(registry: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit with 2, --help and --version with 0.
        Err(error) => error.exit(),
    };
    observability::init(cli.log_format);
    #[cfg(feature = "fault-injection")]
    let _fail_points = fail::FailScenario::setup();
    match cli.command {
        Command::Run { stage, runtime } => run(stage, runtime, &registry),
        Command::Sink {
            stage,
            runtime,
            print,
        } => sink::run(stage, runtime, print, &registry),
        Command::Validate { stage, print } => validate(stage, print, &registry),
        Command::Topologies => {
            for info in registry.iter() {
                println!("{:<16} {}", info.name, info.description);
            }
            for info in registry.sinks() {
                println!("{:<16} (kstage sink) {}", info.name, info.description);
            }
            ExitCode::SUCCESS
        }
        Command::Demo(args) => demo::run(args, &registry),
        Command::Verify(args) => verify::run(args, &registry),
        Command::State {
            action: StateCommand::Inspect(args),
        } => state::inspect(args),
        Command::Topics {
            action: TopicsCommand::Create(args),
        } => topics::create(args, &registry),
    }
}

fn config_failure(errors: &ConfigErrors) -> ExitCode {
    eprintln!("kstage: {errors}");
    ExitCode::from(2)
}

fn validate(stage: StageArgs, print: bool, registry: &Registry) -> ExitCode {
    let config = match stage.into_config() {
        Ok(config) => config,
        Err(error) => return config_failure(&error.into()),
    };
    if let Err(errors) = config.validate(registry) {
        return config_failure(&errors);
    }
    if print {
        match toml::to_string_pretty(&redacted(&config)) {
            Ok(text) => print!("{text}"),
            Err(error) => {
                eprintln!("kstage: cannot print the configuration: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("configuration is valid");
    }
    ExitCode::SUCCESS
}

fn run(stage: StageArgs, runtime: RuntimeArgs, registry: &Registry) -> ExitCode {
    let config = match stage.into_config() {
        Ok(config) => config,
        Err(error) => return config_failure(&error.into()),
    };
    let topologies = match config.topologies(registry) {
        Ok(topologies) => topologies,
        Err(errors) => return config_failure(&errors),
    };
    let (inputs, app_id) = (config.inputs.clone(), config.app_id.clone());
    let writes: Vec<String> = config
        .outputs
        .values()
        .chain(&config.dead_letter_topic)
        .cloned()
        .collect();
    let transactional_id =
        (config.delivery == DeliveryMode::ExactlyOnce).then(|| config.transactional_id());
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
    tracing::info!(app_id = %app_id, "Starting the stage.");
    let result = signals::run_until_signal(shutdown, runtime.shutdown_grace, http, move || {
        crate::engine::run(&config, topologies, flag, telemetry)
    });
    match result {
        Ok(stats) => {
            tracing::info!(
                records_in = stats.records_in,
                records_out = stats.records_out,
                commits = stats.commits,
                aborts = stats.aborts,
                skipped = stats.skipped,
                dead_lettered = stats.dead_lettered,
                "Stage stopped cleanly."
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "Stage failed.");
            eprintln!("kstage: {error}");
            if let EngineError::NotAuthorized { .. } = error {
                eprintln!(
                    "kstage: this stage reads {:?} as group {:?} and writes {:?}{}",
                    inputs,
                    app_id,
                    writes,
                    transactional_id
                        .map(|id| format!(" with TransactionalId {id:?}"))
                        .unwrap_or_default()
                );
            }
            ExitCode::from(error.exit_code())
        }
    }
}
