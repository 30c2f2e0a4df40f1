//! Where a sink's rows come from: the config-only mapping (one row per record, one table) or a
//! typed sink topology (zero or more rows per record, to its named tables). The worker asks
//! [`RowSource::rows`] for each record and gets its rows, or why it has none.
//!
//! A sink topology runs inside `catch_unwind`: a panic becomes [`MapError::Panic`], which stops
//! the sink without committing the open batch (a panic in user code never commits its batch).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::mapping::{MapError, Mapping, RecordView, Row};
use super::topology::{SinkRecord, SinkRows, SinkTable, SinkTopology};
use crate::codec::Codecs;
use crate::topology::TopologyErrorKind;

/// The config-only mapping, or a typed sink topology with its tables and codecs.
pub(crate) enum RowSource {
    Mapping(Mapping),
    Topology {
        topology: Box<dyn SinkTopology>,
        tables: Vec<SinkTable>,
        codecs: Arc<Codecs>,
    },
}

impl std::fmt::Debug for RowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mapping(mapping) => f.debug_tuple("Mapping").field(mapping).finish(),
            Self::Topology { tables, .. } => {
                f.debug_struct("Topology").field("tables", tables).finish()
            }
        }
    }
}

/// The rows of one record: the config-only mapping's one row (no vector to allocate per
/// record), or a sink topology's zero or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordRows {
    /// Exactly one row.
    One(Row),
    /// Any number of rows (none: the record writes nothing).
    Many(Vec<Row>),
}

impl RecordRows {
    /// How many rows.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(rows) => rows.len(),
        }
    }
}

impl IntoIterator for RecordRows {
    type Item = Row;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Row>, std::vec::IntoIter<Row>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::One(row) => Some(row).into_iter().chain(Vec::new()),
            Self::Many(rows) => None.into_iter().chain(rows),
        }
    }
}

impl RowSource {
    /// The rows of one record, or why it has none.
    pub(crate) fn rows(&mut self, record: &RecordView<'_>) -> Result<RecordRows, MapError> {
        match self {
            Self::Mapping(mapping) => mapping.row(record).map(RecordRows::One),
            Self::Topology {
                topology,
                tables,
                codecs,
            } => {
                let input = SinkRecord {
                    key: record.key,
                    payload: record.value,
                    timestamp: record.timestamp,
                    topic: record.topic,
                    partition: record.partition,
                    offset: record.offset,
                    codecs,
                };
                let mut rows = SinkRows::new(tables);
                let result = catch_unwind(AssertUnwindSafe(|| topology.process(&input, &mut rows)));
                match result {
                    Ok(Ok(())) => Ok(RecordRows::Many(
                        rows.rows
                            .into_iter()
                            .map(|(table, values)| Row { table, values })
                            .collect(),
                    )),
                    Ok(Err(error)) if error.kind == TopologyErrorKind::Unavailable => {
                        Err(MapError::Unavailable(error.message))
                    }
                    Ok(Err(error)) => Err(MapError::Poison(error.to_string())),
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic without a message".into());
                        Err(MapError::Panic(message))
                    }
                }
            }
        }
    }
}
