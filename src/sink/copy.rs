//! The fast path of a batch's rows: `COPY ... FROM STDIN` (text format) inside the batch's
//! database transaction, instead of multi-row INSERTs.
//!
//! ```text
//!  rows of one table ─► text COPY data (tab-separated, `\N` for NULL, escaped)
//!   ├─ every column's value is its own text input (no conversion): COPY straight into the table
//!   └─ otherwise (upserts, or a timestamp from epoch milliseconds): COPY into a temporary
//!      all-text staging table (ON COMMIT DELETE ROWS), then
//!      INSERT INTO t SELECT <the same casts as the INSERT path> FROM staging [ON CONFLICT ...]
//! ```
//!
//! Invariants: the data goes through exactly the casts of the INSERT path
//! ([`super::mapping::parameter_sql`]): a direct COPY only when each cast is `{}` or
//! `{}::type` (a cast from text is the type's input function, which is what COPY applies), so a
//! value the INSERT path rejects, COPY rejects too. A rejected value (class 22/23) fails the
//! COPY; the caller rolls the batch back and writes it again row by row (the SAVEPOINT path) to
//! find the row. The staging table holds no row outside a transaction.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Client;

/// How many bytes of COPY data to buffer before sending them.
const CHUNK: usize = 256 * 1024;

/// One table's COPY statements: the data's target, and (staged) the statements that move the
/// staged rows into the table.
#[derive(Debug)]
pub(super) struct CopyPlan {
    /// `COPY <target> (<columns>) FROM STDIN`.
    copy: String,
    /// Staged only: `CREATE TEMP TABLE IF NOT EXISTS ...` and the `INSERT ... SELECT`.
    staged: Option<(String, String)>,
}

impl CopyPlan {
    /// The plan of table number `index`, named `table` (quoted), with `columns` (quoted), the
    /// per-column casts (`{}` stands for the value) and the conflict clause of its INSERT.
    pub(super) fn new(
        index: usize,
        table: &str,
        columns: &[String],
        casts: &[String],
        conflict: &str,
    ) -> Self {
        let list = columns.join(", ");
        let direct = conflict.is_empty()
            && casts.iter().all(|cast| {
                cast == "{}"
                    || cast
                        .strip_prefix("{}::")
                        .is_some_and(|ty| !ty.contains('('))
            });
        if direct {
            return Self {
                copy: format!("COPY {table} ({list}) FROM STDIN"),
                staged: None,
            };
        }
        let stage = format!("kstage_stage_{index}");
        let stage_columns: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
        let create = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS",
            stage_columns
                .iter()
                .map(|c| format!("{c} text"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let select = casts
            .iter()
            .zip(&stage_columns)
            .map(|(cast, column)| cast.replace("{}", column))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = format!("INSERT INTO {table} ({list}) SELECT {select} FROM {stage}{conflict}");
        Self {
            copy: format!("COPY {stage} ({}) FROM STDIN", stage_columns.join(", ")),
            staged: Some((create, insert)),
        }
    }

    /// Writes `rows` (each a row's values) with COPY on `client`, inside the open transaction.
    pub(super) async fn write<'r>(
        &self,
        client: &Client,
        rows: impl Iterator<Item = &'r [Option<String>]>,
    ) -> Result<(), tokio_postgres::Error> {
        if let Some((create, _)) = &self.staged {
            client.batch_execute(create).await?;
        }
        let sink = client.copy_in::<_, Bytes>(&self.copy).await?;
        futures_util::pin_mut!(sink);
        let mut buffer = BytesMut::with_capacity(CHUNK + 4096);
        for values in rows {
            encode_row(&mut buffer, values);
            if buffer.len() >= CHUNK {
                sink.send(buffer.split().freeze()).await?;
            }
        }
        if !buffer.is_empty() {
            sink.send(buffer.freeze()).await?;
        }
        sink.finish().await?;
        if let Some((_, insert)) = &self.staged {
            client.batch_execute(insert).await?;
        }
        Ok(())
    }
}

/// Appends one row in COPY's text format: values separated by tabs, `\N` for NULL, backslash,
/// tab, newline and carriage return escaped; a newline ends the row.
pub(super) fn encode_row(buffer: &mut BytesMut, values: &[Option<String>]) {
    for (column, value) in values.iter().enumerate() {
        if column > 0 {
            buffer.put_u8(b'\t');
        }
        match value {
            None => buffer.put_slice(b"\\N"),
            Some(text) => encode_value(buffer, text.as_bytes()),
        }
    }
    buffer.put_u8(b'\n');
}

/// Appends one value, escaped: the runs between bytes that need an escape are copied whole
/// (most values have none, so a value is usually one copy, not a push per byte).
fn encode_value(buffer: &mut BytesMut, mut text: &[u8]) {
    while let Some(at) = text
        .iter()
        .position(|&b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        let (run, rest) = text.split_at(at);
        buffer.put_slice(run);
        let escaped: &[u8] = match rest.first() {
            Some(b'\\') => b"\\\\",
            Some(b'\t') => b"\\t",
            Some(b'\n') => b"\\n",
            _ => b"\\r",
        };
        buffer.put_slice(escaped);
        text = rest.get(1..).unwrap_or_default();
    }
    buffer.put_slice(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_escaped_in_copy_text_format() {
        let mut buffer = BytesMut::new();
        encode_row(
            &mut buffer,
            &[
                Some("a\tb\\c\nd\re".into()),
                None,
                Some(String::new()),
                Some("\\N".into()),
            ],
        );
        assert_eq!(&buffer[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\t\\\\N\n");
    }

    #[test]
    fn escapes_at_the_edges_and_in_runs_are_each_escaped() {
        let mut buffer = BytesMut::new();
        encode_row(
            &mut buffer,
            &[
                Some("\\".into()),
                Some("\n\n".into()),
                Some("\tx\r".into()),
                Some("plain text, no escape".into()),
            ],
        );
        assert_eq!(
            &buffer[..],
            b"\\\\\t\\n\\n\t\\tx\\r\tplain text, no escape\n"
        );
    }

    #[test]
    fn plain_casts_copy_directly_and_conversions_or_upserts_are_staged() {
        let columns = vec!["\"id\"".to_string(), "\"at\"".to_string()];
        let plain = vec!["{}".to_string(), "{}::bigint".to_string()];
        let direct = CopyPlan::new(0, "\"t\"", &columns, &plain, "");
        assert_eq!(direct.copy, "COPY \"t\" (\"id\", \"at\") FROM STDIN");
        assert!(direct.staged.is_none());

        let converted = vec![
            "{}".to_string(),
            "to_timestamp({}::float8 / 1000)::timestamp with time zone".to_string(),
        ];
        let staged = CopyPlan::new(1, "\"t\"", &columns, &converted, "");
        assert_eq!(staged.copy, "COPY kstage_stage_1 (c0, c1) FROM STDIN");
        let (create, insert) = staged.staged.expect("a staged plan");
        assert_eq!(
            create,
            "CREATE TEMP TABLE IF NOT EXISTS kstage_stage_1 (c0 text, c1 text) ON COMMIT DELETE ROWS"
        );
        assert_eq!(
            insert,
            "INSERT INTO \"t\" (\"id\", \"at\") SELECT c0, to_timestamp(c1::float8 / 1000)::\
             timestamp with time zone FROM kstage_stage_1"
        );

        let upsert = CopyPlan::new(
            0,
            "\"t\"",
            &columns,
            &plain,
            " ON CONFLICT (\"id\") DO NOTHING",
        );
        let (_, insert) = upsert.staged.expect("a staged plan");
        assert_eq!(
            insert,
            "INSERT INTO \"t\" (\"id\", \"at\") SELECT c0, c1::bigint FROM kstage_stage_0 ON \
             CONFLICT (\"id\") DO NOTHING"
        );
    }
}
