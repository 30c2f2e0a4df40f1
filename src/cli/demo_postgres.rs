//! `kstage demo --postgres URL`: the demo's last hop into a database. After the stage has
//! written its output on the mock cluster, a transactional `kstage sink` (the real sink, same
//! code path as `kstage sink`) copies the default output topic into a fresh table, one row per
//! record with its provenance, and `kstage verify --sink`'s checks compare the table with the
//! topic.
//!
//! ```text
//!  demo-<topology>-out (mock cluster) ──► sink (transactional) ──► kstage_demo_<topology>
//!      (src_topic, src_partition, src_offset, key, value jsonb) + kstage_offsets ──► verify
//! ```
//!
//! The table is dropped and created again on every run, and the demo group's row of
//! `kstage_offsets` is deleted (each run has a fresh mock cluster, whose offsets start at 0).
//! The mock cluster enforces no transactional isolation, so this too shows the wiring only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::StageConfig;
use crate::sink::config::{
    default_offsets_table, default_retry_timeout, default_rows_per_statement, redact_url,
    OnConflict, SinkConfig, SinkMode, WriteMethod,
};
use crate::topology::Registry;

/// The sink's consumer group, and its `group_id` in `kstage_offsets`.
const SINK_APP_ID: &str = "kstage-demo-sink";

/// How long the sink may take to write the whole output topic.
const PATIENCE: Duration = Duration::from_secs(120);

/// What the database part of the demo found, for the report.
pub(super) struct TableOutcome {
    pub table: String,
    pub rows: i64,
    pub elapsed: Duration,
    pub verify: String,
    pub passed: bool,
}

/// Copies `topic` (holding `records` records) on the mock cluster at `bootstrap` into a fresh
/// table `kstage_demo_<topology>` of the database at `url`, then verifies the table.
pub(super) fn sink_output(
    url: &str,
    bootstrap: &str,
    topology: &str,
    topic: &str,
    records: u64,
    registry: &Registry,
) -> Result<TableOutcome, String> {
    let table = format!("kstage_demo_{}", topology.replace('-', "_"));
    let database = Database::connect(url)?;
    database.execute(&format!(
        "SET client_min_messages TO warning;
         DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (src_topic text NOT NULL, src_partition int NOT NULL,
                               src_offset bigint NOT NULL, key text, value jsonb);
         DO $$ BEGIN IF to_regclass('{offsets}') IS NOT NULL THEN
           DELETE FROM {offsets} WHERE group_id = '{SINK_APP_ID}'; END IF; END $$;",
        offsets = default_offsets_table()
    ))?;
    let columns: BTreeMap<String, String> = [
        ("src_topic", "topic"),
        ("src_partition", "partition"),
        ("src_offset", "offset"),
        ("key", "key"),
        ("value", "value"),
    ]
    .into_iter()
    .map(|(c, s)| (c.to_string(), s.to_string()))
    .collect();
    let config = StageConfig {
        bootstrap_servers: bootstrap.to_string(),
        inputs: vec![topic.to_string()],
        app_id: SINK_APP_ID.into(),
        instance_id: "0".into(),
        sink: Some(SinkConfig {
            url: url.to_string(),
            mode: SinkMode::Transactional,
            table: table.clone(),
            columns,
            topology: None,
            tables: BTreeMap::new(),
            key_columns: Vec::new(),
            on_conflict: OnConflict::Update,
            offsets_table: default_offsets_table(),
            retry_timeout: default_retry_timeout(),
            rows_per_statement: default_rows_per_statement(),
            write: WriteMethod::Copy,
        }),
        ..StageConfig::default()
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let (sink_config, sink_registry) = (config.clone(), registry.clone());
    let started = Instant::now();
    let sink = std::thread::spawn(move || {
        crate::sink::run(&sink_config, &sink_registry, flag, Default::default())
    });
    let count = format!("SELECT count(*) FROM {table}");
    let mut rows = database.count(&count)?;
    while rows < i64::try_from(records).unwrap_or(i64::MAX) && !sink.is_finished() {
        if started.elapsed() > PATIENCE {
            shutdown.store(true, Ordering::Relaxed);
            return Err(format!(
                "the sink wrote {rows} of {records} rows into {table} within {} s",
                PATIENCE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        rows = database.count(&count)?;
    }
    let elapsed = started.elapsed();
    shutdown.store(true, Ordering::Relaxed);
    sink.join()
        .map_err(|_| "the sink thread panicked".to_string())?
        .map_err(|e| format!("the sink into {}: {e}", redact_url(url)))?;
    let rows = database.count(&count)?;
    let report = crate::verify::verify_table(&config, 3, &crate::verify::NoProgress)
        .map_err(|e| format!("verifying {table}: {e}"))?;
    Ok(TableOutcome {
        table,
        rows,
        elapsed,
        verify: report.to_string(),
        passed: report.passed,
    })
}

/// One session for the demo's own statements.
struct Database {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Database {
    fn connect(url: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the database runtime: {e}"))?;
        let client = runtime
            .block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, tokio_postgres::Error>(client)
            })
            .map_err(|e| format!("connecting to {}: {e}", redact_url(url)))?;
        Ok(Self { runtime, client })
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| format!("preparing the demo table: {}", message(&e)))
    }

    fn count(&self, sql: &str) -> Result<i64, String> {
        self.runtime
            .block_on(self.client.query_one(sql, &[]))
            .map(|row| row.get(0))
            .map_err(|e| format!("counting rows: {}", message(&e)))
    }
}

fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_string())
}
