//! The config-only mapping: one JSON or Avro record in, one row of text values out.
//!
//! The value is decoded by the stage's codecs as JSON (`[formats]` / `default_format`: `json`
//! parsed; `avro` decoded with its writer schema from the schema registry, records becoming
//! objects, so `value.a.b` reads a nested field either way; see `Codecs::decode_json`).
//!
//! Every value is sent as text and cast by PostgreSQL to the column's type (`$1::bigint`), so
//! a value that does not fit (`"abc"` for a number, an overflow, a string too long) is rejected
//! by the database with its own error text, and becomes a poison row there. What fails here is
//! a record the mapping cannot read at all (a value that is not JSON, a key that is not UTF-8):
//! it is poison before the database sees it.
//!
//! A path step that is a number indexes an array (`value.items.0.sku`). A JSON field that is
//! missing or `null` becomes SQL `NULL`; strings are sent as they are,
//! numbers and booleans as their JSON text, objects and arrays as JSON text. When every JSON
//! column is a field path (no whole `value` column) and the value's format is `json`, only the
//! mapped fields are decoded, in one streaming pass ([`super::fields`]); the rows are the same.

use std::sync::Arc;

use serde_json::Value;

use super::config::ColumnSource;
use super::fields::FieldTrie;
use crate::codec::{CodecError, Codecs, Format, Part};

/// Why a record has no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The record cannot be read: poison, for the poison policy.
    Poison(String),
    /// The schema registry did not answer: the sink stops.
    Unavailable(String),
    /// A sink topology panicked on the record: the sink stops, committing nothing of the batch.
    Panic(String),
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Poison(message) | Self::Unavailable(message) => f.write_str(message),
            Self::Panic(message) => write!(f, "the sink topology panicked: {message}"),
        }
    }
}

/// A record's coordinates and its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The table it goes to: its index among the sink's tables (always 0 for the config-only
    /// mapping, which has one).
    pub table: usize,
    /// One text value (or NULL) per column of its table, in the table's column order.
    pub values: Vec<Option<String>>,
}

/// What the mapping reads from a record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub value: Option<&'a [u8]>,
    /// The record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// The columns and their sources, in a fixed order.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Column name and source, in the order of a row's values.
    pub columns: Vec<(String, ColumnSource)>,
    needs_json: bool,
    /// The field paths' trie, when every JSON column is a field (no whole `value`): a JSON
    /// value is then read in one streaming pass ([`super::fields`]).
    fields: Option<FieldTrie>,
    /// How values are decoded (per topic).
    codecs: Arc<Codecs>,
}

impl Mapping {
    /// A mapping of these columns, decoding values with `codecs`.
    pub fn new(columns: Vec<(String, ColumnSource)>, codecs: Arc<Codecs>) -> Self {
        let needs_json = columns
            .iter()
            .any(|(_, s)| matches!(s, ColumnSource::Value | ColumnSource::Field(_)));
        let whole_value = columns.iter().any(|(_, s)| *s == ColumnSource::Value);
        let fields = (needs_json && !whole_value).then(|| {
            FieldTrie::new(
                columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, s))| match s {
                        ColumnSource::Field(path) => Some((i, path.as_slice())),
                        _ => None,
                    }),
            )
        });
        Self {
            columns,
            needs_json,
            fields,
            codecs,
        }
    }

    /// The JSON columns of a JSON-format value, read in one streaming pass; `None` when the
    /// value is not in the `json` format or not JSON (the full parse then decides).
    fn streamed(&self, record: &RecordView<'_>) -> Option<Vec<Option<String>>> {
        let trie = self.fields.as_ref()?;
        let value = record.value?;
        if self.codecs.format_of(record.topic).value != Format::Json {
            return None;
        }
        let mut out = vec![None; self.columns.len()];
        trie.read(value, &mut out)?;
        Some(out)
    }

    /// The row for one record, or why the record cannot be mapped.
    pub fn row(&self, record: &RecordView<'_>) -> Result<Row, MapError> {
        if let Some(mut values) = self.streamed(record) {
            // The streamed values are the row: fill the other columns' slots in place.
            for (slot, (column, source)) in values.iter_mut().zip(&self.columns) {
                if !matches!(source, ColumnSource::Field(_)) {
                    *slot = Self::record_value(column, source, record, None)?;
                }
            }
            return Ok(Row { table: 0, values });
        }
        let json = if self.needs_json && record.value.is_some() {
            match self
                .codecs
                .decode_json(record.topic, Part::Value, record.value)
            {
                Ok(value) => Some(value),
                Err(CodecError::Poison(message)) => return Err(MapError::Poison(message)),
                Err(CodecError::Unavailable(message)) => {
                    return Err(MapError::Unavailable(message))
                }
            }
        } else {
            None
        };
        let mut values = Vec::with_capacity(self.columns.len());
        for (column, source) in &self.columns {
            values.push(Self::record_value(column, source, record, json.as_ref())?);
        }
        Ok(Row { table: 0, values })
    }

    /// One column's value from the record (`json`: its value parsed in full, if it was).
    fn record_value(
        column: &str,
        source: &ColumnSource,
        record: &RecordView<'_>,
        json: Option<&Value>,
    ) -> Result<Option<String>, MapError> {
        Ok(match source {
            ColumnSource::Key => match record.key {
                Some(key) => Some(
                    std::str::from_utf8(key)
                        .map_err(|_| {
                            MapError::Poison(format!("column {column}: the key is not UTF-8"))
                        })?
                        .to_string(),
                ),
                None => None,
            },
            ColumnSource::Timestamp => record.timestamp.map(|t| t.to_string()),
            ColumnSource::Topic => Some(record.topic.to_string()),
            ColumnSource::Partition => Some(record.partition.to_string()),
            ColumnSource::Offset => Some(record.offset.to_string()),
            ColumnSource::Value => json.and_then(text_of),
            ColumnSource::Field(path) => json
                .and_then(|j| path.iter().try_fold(j, |v, p| step(v, p)))
                .and_then(text_of),
        })
    }
}

/// The SQL of a column's parameter, `{}` standing for the placeholder: the text value cast to
/// the column's type (`{}::bigint`), a timestamp column from `timestamp` converted from ms since
/// the epoch. The sink and `kstage verify --sink` both use it, so both see the same values.
pub fn parameter_sql(source: &ColumnSource, base_type: &str) -> String {
    if *source == ColumnSource::Timestamp && base_type.starts_with("timestamp") {
        format!("to_timestamp({{}}::float8 / 1000)::{base_type}")
    } else if base_type == "text" {
        "{}".to_string()
    } else {
        format!("{{}}::{base_type}")
    }
}

/// One step of a field path: an object's field, or an array's element by its index
/// (`value.items.0.sku`).
pub(super) fn step<'v>(value: &'v Value, part: &str) -> Option<&'v Value> {
    match value {
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        other => other.get(part),
    }
}

/// [`text_of`] of a value that is not needed afterwards: a string is moved, not copied.
pub(super) fn text_into(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        other => text_of(&other),
    }
}

pub(super) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(key: &'a [u8], value: &'a [u8]) -> RecordView<'a> {
        RecordView {
            key: Some(key),
            value: Some(value),
            timestamp: Some(1_700_000_000_000),
            topic: "in",
            partition: 2,
            offset: 41,
        }
    }

    #[test]
    fn fields_provenance_and_nulls_map_to_text() {
        let mapping = Mapping::new(
            vec![
                ("id".into(), ColumnSource::Field(vec!["id".into()])),
                (
                    "n".into(),
                    ColumnSource::Field(vec!["a".into(), "n".into()]),
                ),
                ("missing".into(), ColumnSource::Field(vec!["x".into()])),
                ("k".into(), ColumnSource::Key),
                ("p".into(), ColumnSource::Partition),
                ("o".into(), ColumnSource::Offset),
                ("ts".into(), ColumnSource::Timestamp),
            ],
            Arc::new(Codecs::plain()),
        );
        let row = mapping
            .row(&view(b"key-1", br#"{"id":"x-1","a":{"n":12}}"#))
            .expect("maps");
        let expected: Vec<Option<String>> = vec![
            Some("x-1".into()),
            Some("12".into()),
            None,
            Some("key-1".into()),
            Some("2".into()),
            Some("41".into()),
            Some("1700000000000".into()),
        ];
        assert_eq!(row.values, expected);
    }

    #[test]
    fn a_number_in_a_path_indexes_an_array() {
        let mapping = Mapping::new(
            vec![(
                "sku".into(),
                ColumnSource::Field(vec!["items".into(), "1".into(), "sku".into()]),
            )],
            Arc::new(Codecs::plain()),
        );
        let row = mapping
            .row(&view(b"k", br#"{"items":[{"sku":"a"},{"sku":"b"}]}"#))
            .expect("maps");
        assert_eq!(row.values, vec![Some("b".to_string())]);
    }

    #[test]
    fn a_value_that_is_not_json_is_poison() {
        let mapping = Mapping::new(
            vec![("id".into(), ColumnSource::Field(vec!["id".into()]))],
            Arc::new(Codecs::plain()),
        );
        let error = mapping.row(&view(b"k", b"not json")).expect_err("poison");
        assert!(
            matches!(&error, MapError::Poison(m) if m.contains("not JSON")),
            "{error}"
        );
    }
}
