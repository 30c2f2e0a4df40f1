//! Database sinks: a stage whose results leave Kafka as rows in PostgreSQL, exactly once.
//!
//! ```text
//!  poll ──► owned partition, offset ≥ its start? ──► mapping (JSON → row) ──► batch
//!    │          (callbacks: context.rs)                 └─ poison: fail | skip | dead_letter
//!    └─ batch due (commit_interval / max_records_per_txn) or shutdown ──► write.rs:
//!         (the loop: worker.rs; the open batch: batch.rs)
//!         transactional: BEGIN; offsets (fenced by owner_epoch); rows; COMMIT ──► Kafka commit
//!                        (monitoring only)
//!         idempotent:    BEGIN; upsert rows; COMMIT ──► Kafka commit (the resume point)
//! ```
//!
//! * [`config`]: the `[sink]` section; [`mapping`]: records to rows; [`db`]: the session, the
//!   start-up check, claims; [`worker`]: the poll / batch / commit loop, and copying the stored
//!   offsets to Kafka; [`batch`]: the open batch; [`write`]: a batch's transaction, poison rows,
//!   settling after a lost connection; [`context`]: rebalances and ownership; [`poison`]: the
//!   poison policy; [`dead_letter`]: the dead-letter producer.
//! * This file: the checks of a sink's configuration ([`validate`]), start-up ([`run`]: the
//!   session, the table check, the consumer, the preflight of the topics).
//!
//! Invariants: a batch's rows and its offsets commit in one database transaction (transactional)
//! or the Kafka offsets move only after the rows committed (idempotent); a partition's rows are
//! written only while this instance owns it, and only with the epoch it claimed; nothing is
//! committed after a fatal error (the open batch is simply dropped: it is in no transaction).
//! The sink runs one worker (one consumer); scale out with more instances in the group.

mod batch;
mod broken;
pub mod config;
mod context;
mod copy;
mod db;
mod dead_letter;
pub mod error;
mod fields;
mod inflight;
pub mod mapping;
mod poison;
pub(crate) mod rows;
pub(crate) mod statements;
pub mod topology;
mod worker;
mod write;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

pub use config::{SinkConfig, SinkMode};
pub use error::SinkError;

use crate::config::{ConfigError, ConfigErrors, PoisonPolicy, StageConfig};
use crate::engine::WorkerStats;
use crate::error::EngineError;
use crate::observability::Telemetry;
use crate::topology::Registry;
use context::SinkContext;
use dead_letter::DeadLetters;
use mapping::Mapping;
use rows::RowSource;
use statements::TableTarget;
use worker::SinkWorker;
use write::Writer;

/// Checks a sink stage's configuration (no topology, no outputs; the `[sink]` section).
pub fn validate(config: &StageConfig) -> Result<&SinkConfig, ConfigErrors> {
    let mut errors = config.static_errors();
    let Some(sink) = config.sink.as_ref() else {
        errors.push(ConfigError::new(
            "sink",
            "missing; kstage sink needs a [sink] section",
        ));
        return Err(ConfigErrors(errors));
    };
    if !config.topology.is_empty() {
        errors.push(ConfigError::new(
            "topology",
            "a sink maps records with [sink.columns] or a sink topology (sink.topology); remove it",
        ));
    }
    if !config.outputs.is_empty() {
        errors.push(ConfigError::new(
            "outputs",
            "a sink writes rows, not topics; remove them",
        ));
    }
    if config.workers != 1 {
        errors.push(ConfigError::new(
            "workers",
            "a sink runs one worker; run more instances instead",
        ));
    }
    errors.extend(sink.check());
    if errors.is_empty() {
        Ok(sink)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Runs a sink until `shutdown` is set (then commits the open batch and returns) or an error.
/// `registry` holds the sink topologies a `[sink] topology = NAME` may name. Blocks the calling
/// thread.
pub fn run(
    config: &StageConfig,
    registry: &Registry,
    shutdown: Arc<AtomicBool>,
    telemetry: Telemetry,
) -> Result<WorkerStats, SinkError> {
    let sink = validate(config)?;
    let codecs = Arc::new(
        crate::codec::Codecs::new(
            config.default_format.clone(),
            config.formats.clone(),
            config.schema_registry.as_ref(),
        )
        .map_err(|message| ConfigErrors::from(ConfigError::new("formats", message)))?,
    );
    let (targets, rows, keys) = row_source(config, sink, registry, Arc::clone(&codecs))?;
    let client_id = config.transactional_id();
    let mut db = db::Db::open(sink, &format!("kstage-sink {client_id}"))?;
    let check_key = sink.mode == SinkMode::Idempotent && !broken::Broken::PlainInsert.active();
    let mut types = Vec::with_capacity(targets.len());
    for (target, (table_key, column_key, key_key)) in targets.iter().zip(&keys) {
        types.push(db.check_table(target, (table_key, column_key, key_key), check_key)?);
    }
    if sink.mode == SinkMode::Transactional {
        db.create_offsets_table(&sink.offsets_table)?;
    }
    let writer = Writer::new(sink, &targets, &types, &config.app_id);
    codecs
        .check_registry()
        .map_err(|e| EngineError::Startup(format!("the schema registry is not usable: {e}")))?;
    let claims = (sink.mode == SinkMode::Transactional)
        .then(|| (sink.offsets_table.clone(), config.app_id.clone()));
    let health = telemetry.health.worker(&client_id);
    let context = SinkContext::new(
        Arc::new(Mutex::new(db)),
        claims,
        telemetry.clone(),
        Arc::clone(&health),
    );
    let consumer: BaseConsumer<SinkContext> = crate::engine::consumer_config(config, &client_id)
        .create_with_context(context)
        .map_err(|source| EngineError::Kafka {
            operation: "creating the consumer",
            source,
        })?;
    preflight(&consumer, config)?;
    let dead_letters = match (&config.poison_policy, &config.dead_letter_topic) {
        (PoisonPolicy::DeadLetter, Some(topic)) => Some(DeadLetters::new(config, topic)?),
        _ => None,
    };
    health.set_producer_ready();
    let inputs: Vec<&str> = config.inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&inputs)
        .map_err(|source| EngineError::Kafka {
            operation: "subscribing",
            source,
        })?;
    tracing::info!(app_id = %config.app_id, instance_id = %config.instance_id, mode = sink.mode.as_str(),
        table = %sink.table, inputs = ?config.inputs, "Sink started.");
    let mut worker = SinkWorker {
        consumer,
        writer: Arc::new(writer),
        rows,
        in_flight: None,
        mode: sink.mode,
        policy: config.poison_policy,
        dead_letters,
        commit_interval: config.commit_interval,
        max_records: config.max_records_per_txn,
        stats: WorkerStats::default(),
        telemetry,
        health,
        early_commit_refused: false,
    };
    worker.run(&shutdown)
}

/// The config keys naming a table, its columns and its key, for start-up errors.
pub(crate) type TableKeys = (String, String, String);

/// The tables a sink writes and where its rows come from: the config-only mapping (one table,
/// `[sink.columns]`), or the typed sink topology `sink.topology` with its tables mapped by
/// `[sink.tables]`.
pub(crate) fn row_source(
    config: &StageConfig,
    sink: &SinkConfig,
    registry: &Registry,
    codecs: Arc<crate::codec::Codecs>,
) -> Result<(Vec<TableTarget>, RowSource, Vec<TableKeys>), SinkError> {
    let Some(name) = &sink.topology else {
        let sources = sink.sources().map_err(ConfigErrors)?;
        let target = TableTarget {
            table: sink.table.clone(),
            columns: sources.iter().map(|(c, _)| c.clone()).collect(),
            sources: sources.iter().map(|(_, s)| Some(s.clone())).collect(),
            key_columns: sink.key_columns.clone(),
        };
        let keys = (
            "sink.table".into(),
            "sink.columns".into(),
            "sink.key_columns".into(),
        );
        let mapping = Mapping::new(sources, codecs);
        return Ok((vec![target], RowSource::Mapping(mapping), vec![keys]));
    };
    let info = registry.sink(name).ok_or_else(|| {
        ConfigErrors::from(ConfigError::new(
            "sink.topology",
            format!(
                "{name:?} is not a registered sink topology; registered: {}",
                registry.sink_names()
            ),
        ))
    })?;
    let params = crate::topology::TopologyParams::new(config.params.clone());
    let topology = (info.factory)(&params)
        .map_err(|message| ConfigErrors::from(ConfigError::new("params", message)))?;
    let tables = topology.tables();
    let mut errors = Vec::new();
    let mut targets = Vec::new();
    let mut keys = Vec::new();
    for table in &tables {
        let key = format!("sink.tables.{}", table.name);
        let Some(real) = sink.tables.get(table.name) else {
            errors.push(ConfigError::new(
                key,
                format!(
                    "missing; the topology {name} writes table {:?}: name its database table here",
                    table.name
                ),
            ));
            continue;
        };
        if sink.mode == SinkMode::Idempotent && table.key_columns.is_empty() {
            errors.push(ConfigError::new(
                "sink.mode",
                format!(
                    "idempotent upserts on key columns, and the topology's table {} declares none",
                    table.name
                ),
            ));
        }
        targets.push(TableTarget {
            table: real.clone(),
            columns: table.columns.iter().map(|c| c.to_string()).collect(),
            sources: vec![None; table.columns.len()],
            key_columns: table.key_columns.iter().map(|c| c.to_string()).collect(),
        });
        keys.push((key.clone(), key.clone(), key));
    }
    for name in sink.tables.keys() {
        if !tables.iter().any(|t| t.name == name) {
            errors.push(ConfigError::new(
                format!("sink.tables.{name}"),
                "not a table of the sink topology",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors).into());
    }
    let rows = RowSource::Topology {
        topology,
        tables,
        codecs,
    };
    Ok((targets, rows, keys))
}

/// Waits until the cluster answers and checks that the input and dead-letter topics exist.
fn preflight(
    consumer: &BaseConsumer<SinkContext>,
    config: &StageConfig,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + crate::engine::STARTUP_TIMEOUT;
    for topic in config.inputs.iter().chain(&config.dead_letter_topic) {
        loop {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    let error = metadata.topics().first().and_then(|t| t.error());
                    if error.is_some() {
                        return Err(EngineError::Startup(format!(
                            "topic {topic:?} does not exist or is not readable on {} (create it first)",
                            config.bootstrap_servers
                        )));
                    }
                    break;
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "The Kafka cluster does not answer yet; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(source) => {
                    return Err(EngineError::Kafka {
                        operation: "reading topic metadata",
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}
