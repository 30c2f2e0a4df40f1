//! `kstage verify --sink FILE`: compares a sink's table with its input topics, using the sink's
//! own config (the same mapping, the same casts), so anyone can check their own sink.
//!
//! ```text
//!  input topics ──(read_committed, to the LSO taken first)──► the sink's mapping ──► expected rows
//!    transactional: one row per record          idempotent: the last record of each key
//!  expected rows ──► a temporary table shaped like the target (mapped columns, their types and
//!                    NOT NULL), cast by PostgreSQL exactly as the sink casts them
//!  target table ⋈ expected, on the identity columns, in SQL:
//! ```
//!
//! | check | fails when |
//! |---|---|
//! | lost | an expected row has no row with its identity in the table |
//! | duplicated | an identity has more than one row in the table |
//! | unexpected | a row's identity matches no expected row |
//! | values | a row matches but a mapped column differs (idempotent: it is not the last value of its key, or the first under `on_conflict = "nothing"`) |
//!
//! The identity: in `transactional` mode the provenance columns (mapped from `offset`, plus
//! `partition` and `topic` when there are several), else `key_columns` (which must then be
//! unique in the input); in `idempotent` mode `key_columns`. Records the mapping cannot read
//! and rows the temporary table rejects (a value too long, an overflow, a NULL in a NOT NULL
//! column) are poison that the sink's policy took out of the table: they are reported, not
//! expected. Not copied to the temporary table: CHECK, foreign-key and unique constraints, and
//! triggers, so a record the sink lost to one of those shows as lost.
//!
//! A typed sink topology's tables are verified the same way, one table at a time
//! ([`super::table_topology`]): the verifier runs the topology itself on every input record
//! (so its mapping must be deterministic), and each table's identity is the key its
//! [`crate::sink::topology::SinkTable`] declares.
//!
//! The verifier only reads: Kafka through assign-only consumers; the database through one
//! session whose temporary tables disappear with it.

use std::collections::HashMap;

use rdkafka::Message;
use tokio_postgres::types::ToSql;

use super::read::{Bounds, Client, Isolation, Progress};
use super::table_db::TableDb;
use super::table_report::TableReport;
use super::VerifyError;
use crate::config::StageConfig;
use crate::sink::config::{ColumnSource, OnConflict, SinkConfig, SinkMode};
use crate::sink::mapping::{MapError, Mapping, RecordView, Row};
use crate::sink::rows::RowSource;

/// An expected row: where its record came from, and its values as the sink sends them.
struct Expected {
    topic: String,
    partition: i32,
    offset: i64,
    row: Row,
}

/// One table under verification: where its rows go, how each column's text is cast, which
/// columns identify a row, and the rows the sink should have written into it.
pub(super) struct TablePlan {
    /// Each column's source, for its cast (a topology's columns: [`ColumnSource::Value`], cast
    /// as the sink casts them).
    pub(super) sources: Vec<(String, ColumnSource)>,
    /// Indexes (into `sources`) of the identity columns.
    pub(super) identity: Vec<usize>,
    expected: Vec<Expected>,
    /// Idempotent mode: the identity's index in `expected`.
    last_of_key: HashMap<Vec<Option<String>>, usize>,
    /// The report filled in for this table.
    pub(super) report: TableReport,
}

impl TablePlan {
    /// A table `table` of columns `sources`, identified by the columns at `identity`.
    pub(super) fn new(
        table: &str,
        sink: &SinkConfig,
        sources: Vec<(String, ColumnSource)>,
        identity: Vec<usize>,
    ) -> Self {
        let report = TableReport {
            table: table.to_string(),
            mode: sink.mode.as_str().to_string(),
            identity: identity
                .iter()
                .filter_map(|&i| sources.get(i).map(|(c, _)| c.clone()))
                .collect(),
            ..TableReport::default()
        };
        Self {
            sources,
            identity,
            expected: Vec::new(),
            last_of_key: HashMap::new(),
            report,
        }
    }

    /// Adds a row the sink should have written: every row (transactional), or the last of its
    /// key (idempotent `DO UPDATE`), or the first (`DO NOTHING`).
    fn add(&mut self, sink: &SinkConfig, entry: Expected) {
        if sink.mode != SinkMode::Idempotent {
            self.expected.push(entry);
            return;
        }
        let key = self
            .identity
            .iter()
            .map(|&i| entry.row.values.get(i).cloned().flatten());
        match self.last_of_key.entry(key.collect()) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                if sink.on_conflict == OnConflict::Update {
                    if let Some(kept) = self.expected.get_mut(*slot.get()) {
                        *kept = entry;
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.expected.len());
                self.expected.push(entry);
            }
        }
    }
}

/// Reads the sink's input topics and its table, and runs the checks. `Err` only when the
/// verification could not be carried out; failed checks are in the report.
pub fn verify_table(
    config: &StageConfig,
    examples: usize,
    progress: &dyn Progress,
) -> Result<TableReport, VerifyError> {
    let started = std::time::Instant::now();
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| VerifyError::Config("the config has no [sink] section".into()))?;
    if sink.topology.is_some() {
        return Err(VerifyError::Config(
            "the sink maps records with a sink topology; verify it with \
             kstage::verify::verify_topology_tables (kstage verify --sink does)"
                .into(),
        ));
    }
    checked(sink)?;
    let sources = sink
        .sources()
        .map_err(|e| VerifyError::Config(crate::config::ConfigErrors(e).to_string()))?;
    let inputs = Inputs::open(config)?;
    let identity = identity_columns(sink, &sources, &inputs.partitions)?;
    let mut plans = vec![TablePlan::new(&sink.table, sink, sources.clone(), identity)];
    let mut db = TableDb::connect(&sink.connection_string())?;
    let mut rows = RowSource::Mapping(Mapping::new(sources, std::sync::Arc::new(codecs(config)?)));
    inputs.read(config, sink, &mut rows, &mut plans, examples, progress)?;
    let mut plan = plans
        .pop()
        .ok_or_else(|| VerifyError::Config("no table".into()))?;
    compare_table(&mut db, sink, &mut plan, 0, examples)?;
    plan.report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(plan.report)
}

/// The sink section's own checks, as a config error.
pub(super) fn checked(sink: &SinkConfig) -> Result<(), VerifyError> {
    let problems = sink.check();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::Config(
            crate::config::ConfigErrors(problems).to_string(),
        ))
    }
}

/// The stage's codecs (`[formats]`, the schema registry), as the sink builds them.
pub(super) fn codecs(config: &StageConfig) -> Result<crate::codec::Codecs, VerifyError> {
    crate::codec::Codecs::new(
        config.default_format.clone(),
        config.formats.clone(),
        config.schema_registry.as_ref(),
    )
    .map_err(VerifyError::Config)
}

/// The sink's input topics: a client, a metadata consumer and each topic's partition count.
pub(super) struct Inputs {
    client: Client,
    metadata: super::read::VerifyConsumer,
    pub(super) partitions: HashMap<String, i32>,
}

impl Inputs {
    /// Connects with the stage's bootstrap servers and `[kafka]` settings.
    pub(super) fn open(config: &StageConfig) -> Result<Self, VerifyError> {
        let settings: Vec<_> = config
            .kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let client = Client::new(&config.bootstrap_servers, &settings);
        let metadata = client.consumer(Isolation::ReadCommitted, None)?;
        let mut partitions = HashMap::new();
        for topic in &config.inputs {
            partitions.insert(topic.clone(), client.partitions(&metadata, topic)?);
        }
        Ok(Self {
            client,
            metadata,
            partitions,
        })
    }

    /// Reads every input read_committed to its end offsets (taken first), maps each record
    /// with `rows`, and adds each row to the plan of its table. A record `rows` cannot map is
    /// poison in every table's report (none of its rows is expected anywhere).
    pub(super) fn read(
        &self,
        config: &StageConfig,
        sink: &SinkConfig,
        rows: &mut RowSource,
        plans: &mut [TablePlan],
        examples: usize,
        progress: &dyn Progress,
    ) -> Result<(), VerifyError> {
        for topic in &config.inputs {
            let count = self.partitions.get(topic).copied().unwrap_or(0);
            let bounds = Bounds::whole(self.client.watermarks(&self.metadata, topic, count)?);
            let mut unavailable = None;
            let mut missing_table = None;
            let read =
                self.client
                    .read(topic, Isolation::ReadCommitted, &bounds, progress, |m| {
                        let view = RecordView {
                            key: m.key(),
                            value: m.payload(),
                            timestamp: m.timestamp().to_millis(),
                            topic,
                            partition: m.partition(),
                            offset: m.offset(),
                        };
                        match rows.rows(&view) {
                            Ok(mapped) => {
                                for row in mapped {
                                    let Some(plan) = plans.get_mut(row.table) else {
                                        missing_table.get_or_insert(row.table);
                                        continue;
                                    };
                                    let entry = Expected {
                                        topic: topic.clone(),
                                        partition: m.partition(),
                                        offset: m.offset(),
                                        row,
                                    };
                                    plan.add(sink, entry);
                                }
                            }
                            Err(MapError::Poison(error)) => {
                                for plan in plans.iter_mut() {
                                    plan.report.unmappable.add(examples, || {
                                        format!(
                                            "{topic}[{}]@{}: {error}",
                                            m.partition(),
                                            m.offset()
                                        )
                                    });
                                }
                            }
                            Err(error @ (MapError::Unavailable(_) | MapError::Panic(_))) => {
                                unavailable.get_or_insert(error);
                            }
                        }
                    })?;
            match unavailable {
                Some(MapError::Unavailable(message)) => {
                    return Err(VerifyError::Config(format!(
                        "the schema registry did not answer: {message}"
                    )))
                }
                Some(error) => return Err(VerifyError::Config(error.to_string())),
                None => {}
            }
            if let Some(table) = missing_table {
                return Err(VerifyError::Config(format!(
                    "the mapping produced a row for table number {table}, which it does not declare"
                )));
            }
            for plan in plans.iter_mut() {
                plan.report.inputs.push((topic.clone(), read));
            }
        }
        Ok(())
    }
}

/// Loads `plan`'s expected rows into temporary table number `index` and compares them with the
/// table, filling `plan.report` (and `passed`).
pub(super) fn compare_table(
    db: &mut TableDb,
    sink: &SinkConfig,
    plan: &mut TablePlan,
    index: usize,
    examples: usize,
) -> Result<(), VerifyError> {
    let table = plan.report.table.clone();
    let columns: Vec<String> = plan.sources.iter().map(|(c, _)| c.clone()).collect();
    let types = db.column_types(&table, &columns)?;
    let casts: Vec<ColumnSource> = plan.sources.iter().map(|(_, s)| s.clone()).collect();
    let expected_table = format!("kstage_expected_{index}");
    let report = &mut plan.report;
    report.rejected = db.load_expected(
        &expected_table,
        &table,
        &types,
        &casts,
        plan.expected
            .iter()
            .map(|e| (e.topic.as_str(), e.partition, e.offset, &e.row)),
        examples,
    )?;
    report.expected_rows = plan.expected.len() as u64 - report.rejected.count;
    if sink.mode == SinkMode::Transactional {
        let duplicates = db.expected_identity_duplicates(&expected_table, &report.identity)?;
        if duplicates > 0 {
            return Err(VerifyError::Config(format!(
                "{duplicates} expected rows of table {table} share an identity ({}); map the \
                 record's provenance (offset, partition, topic) to columns, or declare a key \
                 that identifies a row, to verify a transactional sink",
                report.identity.join(", ")
            )));
        }
    }
    let identity = report.identity.clone();
    db.compare(
        &expected_table,
        &table,
        &identity,
        &columns,
        examples,
        report,
    )?;
    report.passed =
        report.lost.ok() && report.duplicated.ok() && report.unexpected.ok() && report.values.ok();
    Ok(())
}

/// The indexes (into `sources`) of the columns that name a row's record or key.
fn identity_columns(
    sink: &SinkConfig,
    sources: &[(String, ColumnSource)],
    partitions: &HashMap<String, i32>,
) -> Result<Vec<usize>, VerifyError> {
    let position = |wanted: &ColumnSource| sources.iter().position(|(_, s)| s == wanted);
    let keys = || -> Vec<usize> {
        sink.key_columns
            .iter()
            .filter_map(|k| sources.iter().position(|(c, _)| c == k))
            .collect()
    };
    if sink.mode == SinkMode::Idempotent {
        return Ok(keys());
    }
    if let Some(offset) = position(&ColumnSource::Offset) {
        let mut identity = vec![offset];
        let several_partitions = partitions.values().any(|&n| n > 1) || partitions.len() > 1;
        match position(&ColumnSource::Partition) {
            Some(p) => identity.push(p),
            None if several_partitions => {
                return Err(VerifyError::Config(
                    "a column holds the record's offset but none its partition; map one \
                     (column = \"partition\") to trace rows to records"
                        .into(),
                ))
            }
            None => {}
        }
        match position(&ColumnSource::Topic) {
            Some(t) => identity.push(t),
            None if partitions.len() > 1 => {
                return Err(VerifyError::Config(
                    "the sink reads several topics but no column holds the record's topic; map \
                     one (column = \"topic\")"
                        .into(),
                ))
            }
            None => {}
        }
        return Ok(identity);
    }
    let keys = keys();
    if keys.is_empty() {
        return Err(VerifyError::Config(
            "nothing traces a row to its record: map the record's offset and partition to \
             columns (column = \"offset\"), or set sink.key_columns to a unique id"
                .into(),
        ));
    }
    Ok(keys)
}

/// Parameters of one expected row: its values, then topic, partition and offset as text.
pub(super) fn row_params<'a>(
    row: &'a Row,
    coordinates: &'a [String; 3],
) -> Vec<&'a (dyn ToSql + Sync)> {
    row.values
        .iter()
        .map(|v| v as &(dyn ToSql + Sync))
        .chain(coordinates.iter().map(|c| c as &(dyn ToSql + Sync)))
        .collect()
}
