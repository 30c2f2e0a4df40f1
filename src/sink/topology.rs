//! Typed sink topologies: a Rust mapping from one record to zero or more rows, each to one of
//! the topology's named tables. The alternative to the config-only mapping (`[sink.columns]`)
//! when a record becomes several rows (an order and its lines), rows in several tables, or
//! values that need code.
//!
//! ```
//! use kstage::sink::topology::{SinkRecord, SinkRows, SinkTable, SinkTopology};
//! use kstage::topology::TopologyError;
//!
//! /// One row per word of a text value, in table `words` (word, source offset).
//! struct Words;
//!
//! impl SinkTopology for Words {
//!     fn tables(&self) -> Vec<SinkTable> {
//!         vec![SinkTable::new("words", &["word", "src_offset"])]
//!     }
//!
//!     fn process(&mut self, record: &SinkRecord<'_>, rows: &mut SinkRows) -> Result<(), TopologyError> {
//!         let text: String = record.value()?;
//!         for word in text.split_whitespace() {
//!             rows.push("words", vec![Some(word.to_string()), Some(record.offset.to_string())])?;
//!         }
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Values are text (or `None` for NULL) and PostgreSQL casts them to each column's type, as
//! for the config-only mapping. The config names the database table of each of the topology's
//! tables (`[sink.tables]`); at start-up every table and column is checked, and in `idempotent`
//! mode each table's declared key must be a primary key or unique index. A returned error is
//! poison and follows the poison policy; the rows the record pushed before it are dropped. A
//! panic stops the sink without committing the open batch (nothing of it reaches the database).

use apache_avro::AvroSchema;
use serde::de::DeserializeOwned;

use crate::codec::{CodecError, Codecs, Part};
use crate::topology::{TopologyError, TopologyParams};

/// A table of a sink topology: its name (mapped to a database table by `[sink.tables]`), its
/// columns in the order of a row's values, and its upsert key (idempotent mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTable {
    /// The name the topology pushes rows to, and `[sink.tables]` maps.
    pub name: &'static str,
    /// The columns, in the order of a row's values.
    pub columns: Vec<&'static str>,
    /// The upsert key (idempotent mode): a primary key or unique index on exactly these.
    pub key_columns: Vec<&'static str>,
}

impl SinkTable {
    /// A table without an upsert key (transactional mode only).
    pub fn new(name: &'static str, columns: &[&'static str]) -> Self {
        Self {
            name,
            columns: columns.to_vec(),
            key_columns: Vec::new(),
        }
    }

    /// The same table with an upsert key.
    pub fn key(mut self, key_columns: &[&'static str]) -> Self {
        self.key_columns = key_columns.to_vec();
        self
    }
}

/// A record as a sink topology sees it: its bytes and coordinates, and typed decoding through
/// the stage's codecs (`[formats]`, JSON or Avro).
#[derive(Debug, Clone, Copy)]
pub struct SinkRecord<'a> {
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub payload: Option<&'a [u8]>,
    /// The record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    pub(crate) codecs: &'a Codecs,
}

impl<'a> SinkRecord<'a> {
    /// A record of `topic` at partition 0, offset 0, for a topology's unit tests.
    pub fn for_test(payload: Option<&'a [u8]>, topic: &'a str, codecs: &'a Codecs) -> Self {
        Self {
            key: None,
            payload,
            timestamp: None,
            topic,
            partition: 0,
            offset: 0,
            codecs,
        }
    }

    /// The value decoded into `T` by the topic's value format.
    pub fn value<T: DeserializeOwned + AvroSchema>(&self) -> Result<T, TopologyError> {
        decoded(self.codecs.decode(self.topic, Part::Value, self.payload))
    }

    /// The key decoded into `T` by the topic's key format.
    pub fn key<T: DeserializeOwned + AvroSchema>(&self) -> Result<T, TopologyError> {
        decoded(self.codecs.decode(self.topic, Part::Key, self.key))
    }
}

fn decoded<T>(result: Result<T, CodecError>) -> Result<T, TopologyError> {
    result.map_err(|error| match error {
        CodecError::Poison(message) => TopologyError::decode(message),
        CodecError::Unavailable(message) => TopologyError::unavailable(message),
    })
}

/// Where a sink topology pushes its rows.
#[derive(Debug, Default)]
pub struct SinkRows {
    /// (table name, width) per table, by index.
    tables: Vec<(&'static str, usize)>,
    /// (table index, values).
    pub(crate) rows: Vec<(usize, Vec<Option<String>>)>,
}

impl SinkRows {
    pub(crate) fn new(tables: &[SinkTable]) -> Self {
        Self {
            tables: tables.iter().map(|t| (t.name, t.columns.len())).collect(),
            rows: Vec::new(),
        }
    }

    /// An empty set of rows for `tables`, for a topology's unit tests.
    pub fn for_tables(tables: &[SinkTable]) -> Self {
        Self::new(tables)
    }

    /// The rows pushed, as (table name, values), for a topology's unit tests.
    pub fn into_rows(self) -> Vec<(&'static str, Vec<Option<String>>)> {
        let tables = self.tables;
        self.rows
            .into_iter()
            .map(|(index, values)| (tables.get(index).map_or("", |(name, _)| *name), values))
            .collect()
    }

    /// A row for `table`: one value per column, in the table's column order.
    pub fn push(&mut self, table: &str, values: Vec<Option<String>>) -> Result<(), TopologyError> {
        let Some(index) = self.tables.iter().position(|(name, _)| *name == table) else {
            return Err(TopologyError::transform(format!(
                "the topology pushed a row to {table:?}, which is not one of its tables"
            )));
        };
        let width = self.tables.get(index).map_or(0, |(_, w)| *w);
        if values.len() != width {
            return Err(TopologyError::transform(format!(
                "a row for {table} has {} values; the table has {width} columns",
                values.len()
            )));
        }
        self.rows.push((index, values));
        Ok(())
    }
}

/// A typed sink mapping: one record in, zero or more rows out, to its named tables.
pub trait SinkTopology: Send {
    /// The tables it writes (at least one), in the order a batch writes them: put a table that
    /// others reference (a foreign key) first.
    fn tables(&self) -> Vec<SinkTable>;

    /// The rows of one record. An error is poison (the rows pushed for this record are
    /// dropped); a decode error of the schema registry not answering stops the sink.
    fn process(
        &mut self,
        record: &SinkRecord<'_>,
        rows: &mut SinkRows,
    ) -> Result<(), TopologyError>;
}

/// Builds a sink topology from its parameters; the error says which parameter is wrong and why.
pub type SinkTopologyFactory = fn(&TopologyParams) -> Result<Box<dyn SinkTopology>, String>;
