//! The `[sink]` section of a stage config: where rows go (a PostgreSQL URL and a table), how a
//! record becomes a row (a column -> source map), and the delivery mode.
//!
//! ```toml
//! [sink]
//! url = "postgres://kstage:PASSWORD@127.0.0.1:35432/kstage"   # or KSTAGE_SINK_URL
//! mode = "transactional"                                       # or "idempotent"
//! table = "orders"
//! key_columns = ["id"]                                         # idempotent: the upsert key
//! [sink.columns]
//! id = "value.id"          # a JSON field path in the value
//! amount = "value.amount"
//! k = "key"                # or timestamp, topic, partition, offset, value (the whole JSON)
//! ```
//!
//! Invariants: the URL's password never appears in `Debug` output or printed config (see
//! [`SinkConfig::redacted`]); every problem found is reported with its key (`sink.columns.x`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, REDACTED};

/// The environment variable read when `sink.url` is not given (keeps the password out of files).
pub const URL_ENV: &str = "KSTAGE_SINK_URL";

/// How rows and offsets commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Rows and the partitions' next offsets commit in one database transaction; the consumer
    /// starts from the offsets stored in the database. Exactly-once.
    #[default]
    Transactional,
    /// Rows are upserted on `key_columns`; Kafka offsets are committed after the database
    /// commit. At-least-once delivery, exactly-once effect for a deterministic mapping.
    Idempotent,
}

impl SinkMode {
    /// The mode as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transactional => "transactional",
            Self::Idempotent => "idempotent",
        }
    }
}

/// What an upsert does with a row whose key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// `DO UPDATE`: the last write wins.
    #[default]
    Update,
    /// `DO NOTHING`: the first write wins.
    Nothing,
}

/// How a batch's rows reach the database (the row-by-row search for a rejected row always uses
/// INSERTs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    /// `COPY ... FROM STDIN` in the batch's transaction (upserts: through a staging table).
    #[default]
    Copy,
    /// Multi-row INSERTs of `rows_per_statement` rows.
    Insert,
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// The record key, as UTF-8 text.
    Key,
    /// The record timestamp (ms since the epoch; a `timestamp` column gets a timestamp).
    Timestamp,
    /// The input topic.
    Topic,
    /// The input partition.
    Partition,
    /// The input offset.
    Offset,
    /// The whole value, as JSON text.
    Value,
    /// A field of the JSON value, by its path (`value.a.b` -> `["a", "b"]`).
    Field(Vec<String>),
}

impl ColumnSource {
    /// Parses `key`, `timestamp`, `topic`, `partition`, `offset`, `value` or `value.PATH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "key" => Self::Key,
            "timestamp" => Self::Timestamp,
            "topic" => Self::Topic,
            "partition" => Self::Partition,
            "offset" => Self::Offset,
            "value" => Self::Value,
            other => match other.strip_prefix("value.") {
                Some(path) if path.split('.').all(|p| !p.is_empty()) => {
                    Self::Field(path.split('.').map(str::to_string).collect())
                }
                _ => {
                    return Err(format!(
                        "{other:?} is not a column source; use key, timestamp, topic, \
                         partition, offset, value or value.FIELD[.FIELD or .INDEX...]"
                    ))
                }
            },
        })
    }
}

/// The `[sink]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The PostgreSQL connection string (`postgres://user:password@host:port/db` or
    /// `host=... user=...`). Empty: read from `KSTAGE_SINK_URL`.
    #[serde(default)]
    pub url: String,
    /// `transactional` (exactly-once, offsets in the database) or `idempotent` (upserts).
    #[serde(default)]
    pub mode: SinkMode,
    /// The table rows go to, optionally schema-qualified (`public.orders`); not with `topology`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table: String,
    /// Column name -> source (see [`ColumnSource::parse`]); not with `topology`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    /// A typed sink topology (registered in the binary, see `kstage topologies`) that maps
    /// records to rows of its named tables, instead of `table` and `columns`. Its parameters are
    /// the stage's `[params]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    /// With `topology`: each of its table names -> the table in the database.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, String>,
    /// The upsert key in `idempotent` mode: columns of a unique index or primary key (a typed
    /// topology declares its tables' keys itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_columns: Vec<String>,
    /// `idempotent` mode: what a row whose key exists does.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// The table of offsets in `transactional` mode (created if missing).
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// How long a lost database is retried (with backoff) before the stage stops.
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// Rows per INSERT statement (a batch is written in statements of at most this many rows).
    #[serde(default = "default_rows_per_statement")]
    pub rows_per_statement: usize,
    /// `copy` (the default) or `insert`: how a batch's rows are written.
    #[serde(default)]
    pub write: WriteMethod,
}

/// `kstage_offsets`: the name the issue and docs/SINK.md use.
pub fn default_offsets_table() -> String {
    "kstage_offsets".to_string()
}

/// 60 s: well below librdkafka's default `max.poll.interval.ms` (300 s), which the consumer
/// must not exceed while the batch is retried.
pub fn default_retry_timeout() -> Duration {
    Duration::from_secs(60)
}

/// 500 rows: few round trips per batch while staying far below PostgreSQL's 65,535 bind
/// parameters per statement for tables of up to 130 columns.
pub fn default_rows_per_statement() -> usize {
    500
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("url", &redact_url(&self.url))
            .field("mode", &self.mode)
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("topology", &self.topology)
            .field("tables", &self.tables)
            .field("key_columns", &self.key_columns)
            .field("on_conflict", &self.on_conflict)
            .field("offsets_table", &self.offsets_table)
            .field("retry_timeout", &self.retry_timeout)
            .field("rows_per_statement", &self.rows_per_statement)
            .field("write", &self.write)
            .finish()
    }
}

impl SinkConfig {
    /// A copy safe to print: the URL's password replaced by [`REDACTED`].
    pub fn redacted(&self) -> Self {
        Self {
            url: redact_url(&self.url),
            ..self.clone()
        }
    }

    /// The columns in a fixed order with their parsed sources.
    pub fn sources(&self) -> Result<Vec<(String, ColumnSource)>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for (column, source) in &self.columns {
            match ColumnSource::parse(source) {
                Ok(parsed) => sources.push((column.clone(), parsed)),
                Err(message) => {
                    errors.push(ConfigError::new(format!("sink.columns.{column}"), message))
                }
            }
        }
        if errors.is_empty() {
            Ok(sources)
        } else {
            Err(errors)
        }
    }

    /// Checks the section against itself; the database check comes at start-up.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = self.sources().err().unwrap_or_default();
        if self.url.trim().is_empty()
            && std::env::var(URL_ENV).map_or(true, |u| u.trim().is_empty())
        {
            errors.push(ConfigError::new(
                "sink.url",
                format!("missing; give the PostgreSQL connection string here or in {URL_ENV}"),
            ));
        }
        if self.topology.is_some() {
            return self.check_topology(errors);
        }
        if !self.tables.is_empty() {
            errors.push(ConfigError::new(
                "sink.tables",
                "names the tables of a sink topology; set sink.topology, or use sink.table",
            ));
        }
        if !is_identifier_path(&self.table) {
            errors.push(ConfigError::new(
                "sink.table",
                format!(
                    "{:?} is not a table name (letters, digits, '_', optionally schema.table)",
                    self.table
                ),
            ));
        }
        if self.columns.is_empty() {
            errors.push(ConfigError::new(
                "sink.columns",
                "missing; map at least one column",
            ));
        }
        for column in self.columns.keys().chain(&self.key_columns) {
            if !is_identifier(column) {
                errors.push(ConfigError::new(
                    format!("sink.columns.{column}"),
                    "not a plain column name (letters, digits and '_')",
                ));
            }
        }
        for key in &self.key_columns {
            if !self.columns.contains_key(key) {
                errors.push(ConfigError::new(
                    "sink.key_columns",
                    format!("{key:?} is not one of the mapped columns (sink.columns)"),
                ));
            }
        }
        match self.mode {
            SinkMode::Idempotent if self.key_columns.is_empty() => errors.push(ConfigError::new(
                "sink.key_columns",
                "missing; mode idempotent upserts on key columns (a field, key, or topic + \
                 partition + offset)",
            )),
            SinkMode::Transactional => {
                if !is_identifier_path(&self.offsets_table) {
                    errors.push(ConfigError::new("sink.offsets_table", "not a table name"));
                }
            }
            SinkMode::Idempotent => {}
        }
        if self.rows_per_statement == 0
            || self.rows_per_statement * self.columns.len().max(1) > 65_535
        {
            errors.push(ConfigError::new(
                "sink.rows_per_statement",
                "must be at least 1, and rows x columns at most 65,535 (PostgreSQL's bind limit)",
            ));
        }
        errors
    }

    /// The checks of a sink with a typed topology (its tables are checked against it at start).
    fn check_topology(&self, mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
        for (key, given) in [
            ("sink.table", !self.table.is_empty()),
            ("sink.columns", !self.columns.is_empty()),
            ("sink.key_columns", !self.key_columns.is_empty()),
        ] {
            if given {
                errors.push(ConfigError::new(
                    key,
                    "the sink topology declares its tables, columns and keys; remove it (name                      the tables in sink.tables)",
                ));
            }
        }
        for (name, table) in &self.tables {
            if !is_identifier_path(table) {
                errors.push(ConfigError::new(
                    format!("sink.tables.{name}"),
                    format!("{table:?} is not a table name"),
                ));
            }
        }
        if self.mode == SinkMode::Transactional && !is_identifier_path(&self.offsets_table) {
            errors.push(ConfigError::new("sink.offsets_table", "not a table name"));
        }
        errors
    }

    /// The connection string: `url`, or `KSTAGE_SINK_URL`.
    pub fn connection_string(&self) -> String {
        if self.url.trim().is_empty() {
            std::env::var(URL_ENV).unwrap_or_default()
        } else {
            self.url.clone()
        }
    }
}

/// A plain SQL identifier: letters, digits, '_', not starting with a digit (quoted in SQL).
pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_identifier_path(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_identifier(p))
}

/// The connection string with its password replaced (URL form `user:PASSWORD@`, or key-value
/// form `password=...`).
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:{REDACTED}{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_both_connection_string_forms() {
        let url = "postgres://alice:hunter2@db:5432/app?sslmode=disable";
        assert_eq!(
            redact_url(url),
            "postgres://alice:[redacted]@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://alice@db/app"),
            "postgres://alice@db/app"
        );
        let kv = "host=db user=alice password=hunter2 dbname=app";
        assert_eq!(
            redact_url(kv),
            "host=db user=alice password=[redacted] dbname=app"
        );
    }

    #[test]
    fn column_sources_parse_and_bad_ones_name_the_column() {
        assert_eq!(
            ColumnSource::parse("value.a.b"),
            Ok(ColumnSource::Field(vec!["a".into(), "b".into()]))
        );
        assert_eq!(ColumnSource::parse("offset"), Ok(ColumnSource::Offset));
        assert!(ColumnSource::parse("value.").is_err());
        let config = SinkConfig {
            url: "postgres://u:p@h/d".into(),
            mode: SinkMode::Idempotent,
            table: "t".into(),
            columns: [("id".to_string(), "valu.id".to_string())].into(),
            topology: None,
            tables: BTreeMap::new(),
            key_columns: vec!["nope".into()],
            on_conflict: OnConflict::Update,
            offsets_table: default_offsets_table(),
            retry_timeout: default_retry_timeout(),
            rows_per_statement: 10,
            write: WriteMethod::Copy,
        };
        let keys: Vec<String> = config.check().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["sink.columns.id", "sink.key_columns"]);
        assert!(!format!("{config:?}").contains(":p@"));
    }
}
