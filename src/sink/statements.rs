//! The INSERT statements of a sink's tables: one [`TableStatements`] per table a sink writes
//! (one for the config-only mapping, one per named table of a typed sink topology), each with
//! its columns, the casts of its parameters, and its ON CONFLICT clause.
//!
//! Every parameter is text, cast by PostgreSQL to the column's type
//! ([`super::mapping::parameter_sql`]), so one statement shape fits every row. Upserts write
//! only the last row of each key in a batch (one statement may not update a row twice, and the
//! last write wins anyway); the negative control `sink_plain_insert` writes every row, without
//! ON CONFLICT. Each table also has its COPY plan ([`super::copy::CopyPlan`]) with the same
//! casts and conflict clause.

use std::collections::HashMap;

use super::broken::Broken;
use super::config::{ColumnSource, OnConflict, SinkConfig, SinkMode};
use super::copy::CopyPlan;
use super::db::{quoted, ColumnType};
use super::mapping::Row;

/// A table a sink writes: its name, columns (in the order of a row's values), where each
/// column's value comes from (`None`: a typed topology's text), and its upsert key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableTarget {
    pub table: String,
    pub columns: Vec<String>,
    pub sources: Vec<Option<ColumnSource>>,
    pub key_columns: Vec<String>,
}

/// One table's INSERT: quoted name and columns, parameter casts, key positions, conflict clause.
#[derive(Debug)]
pub(super) struct TableStatements {
    table: String,
    columns: Vec<String>,
    /// Per column, the SQL expression of its parameter `{}` (a cast to the column's type).
    casts: Vec<String>,
    /// Indexes of the key columns (upserts).
    keys: Vec<usize>,
    conflict: String,
    /// The same rows through COPY ([`super::copy`]).
    pub(super) copy: CopyPlan,
}

impl TableStatements {
    /// The statements of table number `index` (its position among the sink's tables).
    pub(super) fn new(
        sink: &SinkConfig,
        index: usize,
        target: &TableTarget,
        types: &[ColumnType],
    ) -> Self {
        let casts: Vec<String> = target
            .sources
            .iter()
            .zip(types)
            .map(|(source, ty)| {
                let source = source.as_ref().unwrap_or(&ColumnSource::Value);
                super::mapping::parameter_sql(source, &ty.base_type)
            })
            .collect();
        let keys = target
            .key_columns
            .iter()
            .filter_map(|k| target.columns.iter().position(|c| c == k))
            .collect();
        let updates: Vec<String> = target
            .columns
            .iter()
            .filter(|c| !target.key_columns.contains(c))
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quoted(c)))
            .collect();
        let key = target
            .key_columns
            .iter()
            .map(|k| quoted(k))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = match (sink.mode, sink.on_conflict) {
            _ if plain_insert(sink) => String::new(),
            (SinkMode::Transactional, _) => String::new(),
            (SinkMode::Idempotent, OnConflict::Update) if !updates.is_empty() => {
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "))
            }
            (SinkMode::Idempotent, _) => format!(" ON CONFLICT ({key}) DO NOTHING"),
        };
        let table = quoted(&target.table);
        let columns: Vec<String> = target.columns.iter().map(|c| quoted(c)).collect();
        let copy = CopyPlan::new(index, &table, &columns, &casts, &conflict);
        Self {
            table,
            columns,
            casts,
            keys,
            conflict,
            copy,
        }
    }

    /// Parameters per row.
    pub(super) fn width(&self) -> usize {
        self.columns.len()
    }

    /// `INSERT INTO t (...) VALUES (...), ... [ON CONFLICT ...]` for `rows` rows.
    pub(super) fn insert_sql(&self, rows: usize) -> String {
        let width = self.width();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.columns.join(", ")
        );
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for (column, cast) in self.casts.iter().enumerate() {
                if column > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&cast.replace("{}", &format!("${}", row * width + column + 1)));
            }
            sql.push(')');
        }
        sql.push_str(&self.conflict);
        sql
    }
}

/// Whether the negative control `sink_plain_insert` is on (idempotent mode only).
pub(super) fn plain_insert(sink: &SinkConfig) -> bool {
    sink.mode == SinkMode::Idempotent && Broken::PlainInsert.active()
}

/// A row's values at its table's key columns.
type RowKey<'a> = Vec<Option<&'a Option<String>>>;

/// The rows of a batch to write, as indexes, grouped by table (in the tables' order, so a table
/// declared first, e.g. one that others reference, is written first), in batch order within a
/// table; for upserts only the last row of each key.
pub(super) fn order(tables: &[TableStatements], rows: &[Row], dedup: bool) -> Vec<usize> {
    let mut order: Vec<usize> = if dedup {
        let mut last: HashMap<(usize, RowKey<'_>), usize> = HashMap::with_capacity(rows.len());
        for (index, row) in rows.iter().enumerate() {
            let keys = tables.get(row.table).map_or(&[][..], |t| &t.keys[..]);
            let key = keys.iter().map(|&k| row.values.get(k)).collect();
            last.insert((row.table, key), index);
        }
        last.into_values().collect()
    } else {
        (0..rows.len()).collect()
    };
    order.sort_unstable_by_key(|&index| (rows.get(index).map_or(0, |r| r.table), index));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: usize, key: &str, n: u32) -> Row {
        Row {
            table,
            values: vec![Some(key.to_string()), Some(n.to_string())],
        }
    }

    #[test]
    fn upserts_keep_the_last_row_of_each_key_per_table_and_tables_go_in_order() {
        let sink: SinkConfig = toml::from_str(
            "table = \"\"\nmode = \"idempotent\"\nkey_columns = [\"k\"]\n[columns]\n",
        )
        .expect("a sink section");
        let target = |name: &str| TableTarget {
            table: name.into(),
            columns: vec!["k".into(), "n".into()],
            sources: vec![None, None],
            key_columns: vec!["k".into()],
        };
        let types = vec![
            ColumnType {
                base_type: "text".into()
            };
            2
        ];
        let tables = vec![
            TableStatements::new(&sink, 0, &target("a"), &types),
            TableStatements::new(&sink, 1, &target("b"), &types),
        ];
        let rows = vec![
            row(1, "x", 1),
            row(0, "x", 2),
            row(1, "x", 3),
            row(0, "y", 4),
            row(0, "x", 5),
        ];
        assert_eq!(order(&tables, &rows, true), vec![3, 4, 2]);
        assert_eq!(order(&tables, &rows, false), vec![1, 3, 4, 0, 2]);
        assert_eq!(
            tables[0].insert_sql(2),
            "INSERT INTO \"a\" (\"k\", \"n\") VALUES ($1, $2), ($3, $4) ON CONFLICT (\"k\") \
             DO UPDATE SET \"n\" = EXCLUDED.\"n\""
        );
    }
}
