//! The config-only mapping: one JSON record in, one row of text values out.
//!
//! Every value is sent as text and cast by PostgreSQL to the column's type (`$1::bigint`), so
//! a value that does not fit (`"abc"` for a number, an overflow, a string too long) is rejected
//! by the database with its own error text, and becomes a poison row there. What fails here is
//! a record the mapping cannot read at all (a value that is not JSON, a key that is not UTF-8):
//! it is poison before the database sees it.
//!
//! A JSON field that is missing or `null` becomes SQL `NULL`; strings are sent as they are,
//! numbers and booleans as their JSON text, objects and arrays as JSON text.

use serde_json::Value;

use super::config::ColumnSource;

/// A record's coordinates and its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// One text value (or NULL) per mapped column, in the mapping's column order.
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
}

impl Mapping {
    /// A mapping of these columns.
    pub fn new(columns: Vec<(String, ColumnSource)>) -> Self {
        let needs_json = columns
            .iter()
            .any(|(_, s)| matches!(s, ColumnSource::Value | ColumnSource::Field(_)));
        Self {
            columns,
            needs_json,
        }
    }

    /// The row for one record, or why the record cannot be mapped (poison).
    pub fn row(&self, record: &RecordView<'_>) -> Result<Row, String> {
        let json = if self.needs_json {
            match record.value {
                Some(bytes) => Some(
                    serde_json::from_slice::<Value>(bytes)
                        .map_err(|e| format!("the value is not JSON: {e}"))?,
                ),
                None => None,
            }
        } else {
            None
        };
        let mut values = Vec::with_capacity(self.columns.len());
        for (column, source) in &self.columns {
            let value = match source {
                ColumnSource::Key => match record.key {
                    Some(key) => Some(
                        std::str::from_utf8(key)
                            .map_err(|_| format!("column {column}: the key is not UTF-8"))?
                            .to_string(),
                    ),
                    None => None,
                },
                ColumnSource::Timestamp => record.timestamp.map(|t| t.to_string()),
                ColumnSource::Topic => Some(record.topic.to_string()),
                ColumnSource::Partition => Some(record.partition.to_string()),
                ColumnSource::Offset => Some(record.offset.to_string()),
                ColumnSource::Value => json.as_ref().and_then(text_of),
                ColumnSource::Field(path) => json
                    .as_ref()
                    .and_then(|j| path.iter().try_fold(j, |v, p| v.get(p.as_str())))
                    .and_then(text_of),
            };
            values.push(value);
        }
        Ok(Row { values })
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

fn text_of(value: &Value) -> Option<String> {
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
        let mapping = Mapping::new(vec![
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
        ]);
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
    fn a_value_that_is_not_json_is_poison() {
        let mapping = Mapping::new(vec![("id".into(), ColumnSource::Field(vec!["id".into()]))]);
        let error = mapping.row(&view(b"k", b"not json")).expect_err("poison");
        assert!(error.contains("not JSON"), "{error}");
    }
}
