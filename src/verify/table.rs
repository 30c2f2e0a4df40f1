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
//! The verifier only reads: Kafka through assign-only consumers; the database through one
//! session whose temporary table disappears with it.

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::Message;
use tokio_postgres::types::ToSql;

use super::read::{Bounds, Client, Isolation, Progress};
use super::table_db::TableDb;
use super::table_report::TableReport;
use super::VerifyError;
use crate::config::StageConfig;
use crate::sink::config::{ColumnSource, OnConflict, SinkConfig, SinkMode};
use crate::sink::mapping::{MapError, Mapping, RecordView, Row};

/// An expected row: where its record came from, and its values as the sink sends them.
struct Expected {
    topic: String,
    partition: i32,
    offset: i64,
    row: Row,
}

/// Reads the sink's input topics and its table, and runs the checks. `Err` only when the
/// verification could not be carried out; failed checks are in the report.
pub fn verify_table(
    config: &StageConfig,
    examples: usize,
    progress: &dyn Progress,
) -> Result<TableReport, VerifyError> {
    let started = Instant::now();
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| VerifyError::Config("the config has no [sink] section".into()))?;
    if sink.topology.is_some() {
        return Err(VerifyError::Config(
            "kstage verify --sink compares tables written by the config-only mapping              ([sink.columns]); a sink topology's rows are its own code's"
                .into(),
        ));
    }
    let problems = sink.check();
    if !problems.is_empty() {
        return Err(VerifyError::Config(
            crate::config::ConfigErrors(problems).to_string(),
        ));
    }
    let sources = sink
        .sources()
        .map_err(|e| VerifyError::Config(crate::config::ConfigErrors(e).to_string()))?;
    let mut report = TableReport {
        table: sink.table.clone(),
        mode: sink.mode.as_str().to_string(),
        ..TableReport::default()
    };
    let client = Client::new(
        &config.bootstrap_servers,
        &config
            .kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
    );
    let metadata = client.consumer(Isolation::ReadCommitted, None)?;
    let mut partitions = HashMap::new();
    for topic in &config.inputs {
        partitions.insert(topic.clone(), client.partitions(&metadata, topic)?);
    }
    let identity = identity_columns(sink, &sources, &partitions)?;
    report.identity = identity
        .iter()
        .filter_map(|&i| sources.get(i).map(|(c, _)| c.clone()))
        .collect();

    let mut db = TableDb::connect(&sink.connection_string())?;
    let columns: Vec<String> = sources.iter().map(|(c, _)| c.clone()).collect();
    let types = db.column_types(&sink.table, &columns)?;

    let codecs = crate::codec::Codecs::new(
        config.default_format.clone(),
        config.formats.clone(),
        config.schema_registry.as_ref(),
    )
    .map_err(VerifyError::Config)?;
    let mapping = Mapping::new(sources.clone(), std::sync::Arc::new(codecs));
    let mut unavailable = None;
    let mut expected: Vec<Expected> = Vec::new();
    let mut last_of_key: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    for topic in &config.inputs {
        let count = partitions.get(topic).copied().unwrap_or(0);
        let bounds: Vec<Bounds> = client
            .watermarks(&metadata, topic, count)?
            .into_iter()
            .zip(0..)
            .map(|((start, end), partition)| Bounds {
                partition,
                start,
                end,
            })
            .collect();
        let read = client.read(topic, Isolation::ReadCommitted, &bounds, progress, |m| {
            let view = RecordView {
                key: m.key(),
                value: m.payload(),
                timestamp: m.timestamp().to_millis(),
                topic,
                partition: m.partition(),
                offset: m.offset(),
            };
            match mapping.row(&view) {
                Ok(row) => {
                    let entry = Expected {
                        topic: topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        row,
                    };
                    if sink.mode == SinkMode::Idempotent {
                        let key = identity
                            .iter()
                            .map(|&i| entry.row.values.get(i).cloned().flatten());
                        match last_of_key.entry(key.collect()) {
                            std::collections::hash_map::Entry::Occupied(slot) => {
                                // DO UPDATE: the last write wins; DO NOTHING: the first.
                                if sink.on_conflict == OnConflict::Update {
                                    if let Some(kept) = expected.get_mut(*slot.get()) {
                                        *kept = entry;
                                    }
                                }
                            }
                            std::collections::hash_map::Entry::Vacant(slot) => {
                                slot.insert(expected.len());
                                expected.push(entry);
                            }
                        }
                    } else {
                        expected.push(entry);
                    }
                }
                Err(MapError::Poison(error)) => report.unmappable.add(examples, || {
                    format!("{topic}[{}]@{}: {error}", m.partition(), m.offset())
                }),
                Err(MapError::Unavailable(error) | MapError::Panic(error)) => {
                    unavailable.get_or_insert(error);
                }
            }
        })?;
        if let Some(message) = unavailable.take() {
            return Err(VerifyError::Config(format!(
                "the schema registry did not answer: {message}"
            )));
        }
        report.inputs.push((topic.clone(), read));
    }
    report.rejected = db.load_expected(
        &sink.table,
        &types,
        &sources,
        expected
            .iter()
            .map(|e| (e.topic.as_str(), e.partition, e.offset, &e.row)),
        examples,
    )?;
    report.expected_rows = expected.len() as u64 - report.rejected.count;
    if sink.mode == SinkMode::Transactional && last_of_key.is_empty() {
        let duplicates = db.expected_identity_duplicates(&report.identity)?;
        if duplicates > 0 {
            return Err(VerifyError::Config(format!(
                "{duplicates} input records share an identity ({}); map the record's provenance \
                 (offset, partition, topic) to columns to verify a transactional sink",
                report.identity.join(", ")
            )));
        }
    }
    let identity_names = report.identity.clone();
    db.compare(
        &sink.table,
        &identity_names,
        &columns,
        examples,
        &mut report,
    )?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.passed =
        report.lost.ok() && report.duplicated.ok() && report.unexpected.ok() && report.values.ok();
    Ok(report)
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
