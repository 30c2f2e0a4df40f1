//! The database side of `kstage verify --sink`: one session, the target table's column types,
//! the temporary table of expected rows, and the comparisons in SQL.
//!
//! Expected rows are inserted with the sink's own parameter casts
//! ([`crate::sink::mapping::parameter_sql`]), so a value means the same here as in the sink.
//! A chunk the database rejects (SQLSTATE class 22 or 23) is inserted again row by row
//! (autocommit: each row on its own), and the rejected rows are reported, as the sink's poison
//! rows would have been. The comparisons join on the identity columns with `=`, so a NULL
//! identity never matches (a row with one counts as unexpected, a record as lost), and compare
//! the other mapped columns as text (`::text` of the same type on both sides: json has no
//! equality operator, and a type's text form is canonical for its values).

use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

use super::report::Finding;
use super::table::row_params;
use super::table_report::TableReport;
use super::VerifyError;
use crate::sink::config::{redact_url, ColumnSource};
use crate::sink::mapping::{parameter_sql, Row};

/// Rows per INSERT into the temporary table.
const CHUNK: usize = 500;

/// A mapped column of the target table: its name, base type (no modifier), NOT NULL.
pub(super) struct ColumnInfo {
    name: String,
    base_type: String,
    not_null: bool,
}

/// The verifier's database session.
pub(super) struct TableDb {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

fn db_error(operation: &str, error: &tokio_postgres::Error) -> VerifyError {
    let message = match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => error.to_string(),
    };
    VerifyError::Database {
        operation: operation.to_string(),
        message,
    }
}

impl TableDb {
    /// Connects (one attempt: the verifier is run by hand or by a test, which can retry).
    pub(super) fn connect(url: &str) -> Result<Self, VerifyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VerifyError::Database {
                operation: "starting the database runtime".into(),
                message: e.to_string(),
            })?;
        let client = runtime
            .block_on(async {
                let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, tokio_postgres::Error>(client)
            })
            .map_err(|e| db_error(&format!("connecting to {}", redact_url(url)), &e))?;
        Ok(Self { runtime, client })
    }

    /// The mapped columns' types, in `columns` order; an error naming a missing table or column.
    pub(super) fn column_types(
        &mut self,
        table: &str,
        columns: &[String],
    ) -> Result<Vec<ColumnInfo>, VerifyError> {
        let rows = self
            .runtime
            .block_on(self.client.query(
                "SELECT a.attname::text, format_type(a.atttypid, NULL), a.attnotnull \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
                 AND NOT a.attisdropped",
                &[&quoted(table)],
            ))
            .map_err(|e| db_error("reading the table's columns", &e))?;
        if rows.is_empty() {
            return Err(VerifyError::Config(format!("table {table} does not exist")));
        }
        columns
            .iter()
            .map(|column| {
                rows.iter()
                    .find(|r| r.get::<_, String>(0) == *column)
                    .map(|r| ColumnInfo {
                        name: column.clone(),
                        base_type: r.get(1),
                        not_null: r.get(2),
                    })
                    .ok_or_else(|| {
                        VerifyError::Config(format!("table {table} has no column {column:?}"))
                    })
            })
            .collect()
    }

    /// Creates the temporary table `expected` (the mapped columns of `table`, their types and NOT NULL, plus
    /// the record's coordinates) and inserts the expected rows. Returns the rows it rejected.
    pub(super) fn load_expected<'a>(
        &mut self,
        expected: &str,
        table: &str,
        types: &[ColumnInfo],
        sources: &[ColumnSource],
        rows: impl Iterator<Item = (&'a str, i32, i64, &'a Row)>,
        examples: usize,
    ) -> Result<Finding, VerifyError> {
        let names: Vec<String> = types.iter().map(|c| quoted(&c.name)).collect();
        let mut setup = format!(
            "CREATE TEMP TABLE {expected} AS SELECT {} \
             FROM {} WITH NO DATA; ALTER TABLE {expected} ADD COLUMN kstage_topic text, \
             ADD COLUMN kstage_partition int, ADD COLUMN kstage_offset bigint;",
            names.join(", "),
            quoted(table)
        );
        for column in types.iter().filter(|c| c.not_null) {
            setup.push_str(&format!(
                " ALTER TABLE {expected} ALTER COLUMN {} SET NOT NULL;",
                quoted(&column.name)
            ));
        }
        self.runtime
            .block_on(self.client.batch_execute(&setup))
            .map_err(|e| db_error("creating the table of expected rows", &e))?;
        let casts: Vec<String> = sources
            .iter()
            .zip(types)
            .map(|(source, column)| parameter_sql(source, &column.base_type))
            .chain(["{}", "{}::int", "{}::bigint"].map(String::from))
            .collect();
        let insert = |count: usize| {
            let width = casts.len();
            let tuples: Vec<String> = (0..count)
                .map(|row| {
                    let values: Vec<String> = casts
                        .iter()
                        .enumerate()
                        .map(|(i, cast)| cast.replace("{}", &format!("${}", row * width + i + 1)))
                        .collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO {expected} ({}, kstage_topic, kstage_partition, kstage_offset) VALUES {}",
                names.join(", "),
                tuples.join(", ")
            )
        };
        let mut rejected = Finding::default();
        let rows: Vec<_> = rows.collect();
        for chunk in rows.chunks(CHUNK) {
            let coordinates: Vec<[String; 3]> = chunk
                .iter()
                .map(|(t, p, o, _)| [t.to_string(), p.to_string(), o.to_string()])
                .collect();
            let params: Vec<_> = chunk
                .iter()
                .zip(&coordinates)
                .flat_map(|((_, _, _, row), c)| row_params(row, c))
                .collect();
            let sql = self.prepare(&insert(chunk.len()), params.len())?;
            match self.runtime.block_on(self.client.execute(&sql, &params)) {
                Ok(_) => continue,
                Err(error) if !is_row_error(&error) => {
                    return Err(db_error("inserting the expected rows", &error))
                }
                Err(_) => {}
            }
            let one = self.prepare(&insert(1), casts.len())?;
            for ((topic, partition, offset, row), c) in chunk.iter().zip(&coordinates) {
                let params = row_params(row, c);
                match self.runtime.block_on(self.client.execute(&one, &params)) {
                    Ok(_) => {}
                    Err(error) if is_row_error(&error) => rejected.add(examples, || {
                        let text = error
                            .as_db_error()
                            .map_or(String::new(), |d| d.message().into());
                        format!("{topic}[{partition}]@{offset}: {text}")
                    }),
                    Err(error) => return Err(db_error("inserting an expected row", &error)),
                }
            }
        }
        Ok(rejected)
    }

    /// Identities that several expected rows share (transactional mode, keyed identity).
    pub(super) fn expected_identity_duplicates(
        &mut self,
        expected: &str,
        identity: &[String],
    ) -> Result<u64, VerifyError> {
        let columns = identity
            .iter()
            .map(|c| quoted(c))
            .collect::<Vec<_>>()
            .join(", ");
        self.count(&format!(
            "SELECT count(*) FROM (SELECT 1 FROM {expected} GROUP BY {columns} HAVING count(*) > 1) d"
        ))
    }

    /// Runs the four checks into `report`.
    pub(super) fn compare(
        &mut self,
        expected: &str,
        table: &str,
        identity: &[String],
        columns: &[String],
        examples: usize,
        report: &mut TableReport,
    ) -> Result<(), VerifyError> {
        let target = quoted(table);
        let ids: Vec<String> = identity.iter().map(|c| quoted(c)).collect();
        let on = ids
            .iter()
            .map(|c| format!("t.{c} = e.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let id_text = |alias: &str| {
            let parts: Vec<String> = ids
                .iter()
                .map(|c| format!("coalesce({alias}.{c}::text, 'NULL')"))
                .collect();
            format!("concat_ws(', ', {})", parts.join(", "))
        };
        let at = "format('%s[%s]@%s', e.kstage_topic, e.kstage_partition, e.kstage_offset)";
        report.rows_in_table = self.count(&format!("SELECT count(*) FROM {target}"))?;
        let others: Vec<String> = columns
            .iter()
            .filter(|c| !identity.contains(c))
            .map(|c| quoted(c))
            .collect();
        let row_text = |alias: &str| {
            let parts: Vec<String> = others
                .iter()
                .map(|c| format!("coalesce({alias}.{c}::text, 'NULL')"))
                .collect();
            format!("concat_ws(', ', {})", parts.join(", "))
        };
        let differ = if others.is_empty() {
            "false".to_string()
        } else {
            format!("{} IS DISTINCT FROM {}", row_text("t"), row_text("e"))
        };
        let checks =
            [
                (
                    &mut report.lost,
                    format!(
                        "SELECT {at} FROM {expected} e WHERE NOT EXISTS (SELECT 1 FROM {target} t \
                     WHERE {on})"
                    ),
                ),
                (
                    &mut report.duplicated,
                    format!(
                    "SELECT format('(%s) in %s rows', {}, count(*)) FROM {target} t GROUP BY {} \
                     HAVING count(*) > 1",
                    id_text("t"),
                    ids.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
                ),
                ),
                (
                    &mut report.unexpected,
                    format!(
                    "SELECT format('(%s)', {}) FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM \
                     {expected} e WHERE {on})",
                    id_text("t")
                ),
                ),
                (
                    &mut report.values,
                    format!(
                    "SELECT format('%s: the table has (%s), the input says (%s)', {at}, {}, {}) \
                     FROM {expected} e JOIN {target} t ON {on} WHERE {differ}",
                    row_text("t"),
                    row_text("e")
                ),
                ),
            ];
        for (finding, sql) in checks {
            let count = self.count(&format!("SELECT count(*) FROM ({sql}) c"))?;
            let rows = self
                .runtime
                .block_on(self.client.query(&format!("{sql} LIMIT {examples}"), &[]))
                .map_err(|e| db_error("comparing the table", &e))?;
            finding.count = count;
            finding.examples = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        }
        Ok(())
    }

    /// A statement whose `parameters` are all text (the sink's casts turn them into the
    /// columns' types).
    fn prepare(&mut self, sql: &str, parameters: usize) -> Result<Statement, VerifyError> {
        self.runtime
            .block_on(
                self.client
                    .prepare_typed(sql, &vec![Type::TEXT; parameters]),
            )
            .map_err(|e| db_error("preparing the insert of expected rows", &e))
    }

    fn count(&mut self, sql: &str) -> Result<u64, VerifyError> {
        let row = self
            .runtime
            .block_on(self.client.query_one(sql, &[]))
            .map_err(|e| db_error("counting rows", &e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

/// A row the database refuses for its values (SQLSTATE class 22 data exception, 23 integrity).
fn is_row_error(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}
