//! `kstage verify --sink FILE` for a sink whose rows come from a typed sink topology
//! (`[sink] topology = NAME`): every table the topology writes is compared with the input
//! topics, with the four checks of [`super::table`] (lost, duplicated, unexpected, values).
//!
//! ```text
//!  input topics ──(read_committed, to the LSO taken first)──► the topology's process() ──►
//!     rows by table ──► per table: a temporary table of expected rows ⋈ the table, in SQL
//! ```
//!
//! How a row maps back to its input: the verifier runs the same topology (built from the same
//! `[params]`) on every input record, so the rows it expects are the rows the sink was given,
//! and each table's identity is the key its [`crate::sink::topology::SinkTable`] declares
//! (`SinkTable::key`): a unique id, or the record's provenance columns. A table without a key
//! cannot be verified (a config error naming it). This holds only for a deterministic mapping
//! (the same record always gives the same rows), which exactly-once replays need anyway.
//! Transactional mode: every expected row once (an identity shared by two expected rows is a
//! config error); idempotent mode: the last row of each key (the first under
//! `on_conflict = "nothing"`). A record the topology returns an error for is poison: reported in
//! every table, expected in none.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::read::Progress;
use super::table::{checked, codecs, compare_table, Inputs, TablePlan};
use super::table_db::TableDb;
use super::table_report::TableReport;
use super::VerifyError;
use crate::config::StageConfig;
use crate::sink::config::ColumnSource;
use crate::topology::Registry;

/// What comparing a sink topology's tables with their input found: one report per table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablesReport {
    /// True when every table passed all four checks.
    pub passed: bool,
    /// The sink topology that wrote the tables.
    pub topology: String,
    /// One report per table, in the order the topology declares them.
    pub tables: Vec<TableReport>,
    /// Wall time of the verification.
    pub elapsed_ms: u64,
}

/// Reads the inputs of the sink in `config` (whose `[sink] topology` names one in `registry`),
/// runs the topology on every record, and checks each of its tables. `Err` only when the
/// verification could not be carried out; failed checks are in the report.
pub fn verify_topology_tables(
    config: &StageConfig,
    registry: &Registry,
    examples: usize,
    progress: &dyn Progress,
) -> Result<TablesReport, VerifyError> {
    let started = std::time::Instant::now();
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| VerifyError::Config("the config has no [sink] section".into()))?;
    let name = sink.topology.clone().ok_or_else(|| {
        VerifyError::Config(
            "the sink has no sink.topology; its table is verified by \
                             kstage::verify::verify_table"
                .into(),
        )
    })?;
    checked(sink)?;
    let (targets, mut rows, _) =
        crate::sink::row_source(config, sink, registry, Arc::new(codecs(config)?))
            .map_err(|error| VerifyError::Config(error.to_string()))?;
    let mut plans = Vec::with_capacity(targets.len());
    for (target, declared) in targets.iter().zip(topology_tables(&rows)) {
        if target.key_columns.is_empty() {
            return Err(VerifyError::Config(format!(
                "the sink topology {name}'s table {declared} declares no key, so nothing \
                 traces its rows to their records; declare one with SinkTable::key (a unique \
                 id, or the record's provenance columns)"
            )));
        }
        let identity = target
            .key_columns
            .iter()
            .filter_map(|k| target.columns.iter().position(|c| c == k))
            .collect();
        let sources = target
            .columns
            .iter()
            .map(|c| (c.clone(), ColumnSource::Value))
            .collect();
        plans.push(TablePlan::new(&target.table, sink, sources, identity));
    }
    let inputs = Inputs::open(config)?;
    let mut db = TableDb::connect(&sink.connection_string())?;
    inputs.read(config, sink, &mut rows, &mut plans, examples, progress)?;
    for (index, plan) in plans.iter_mut().enumerate() {
        compare_table(&mut db, sink, plan, index, examples)?;
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let tables: Vec<TableReport> = plans
        .into_iter()
        .map(|plan| TableReport {
            elapsed_ms,
            ..plan.report
        })
        .collect();
    Ok(TablesReport {
        passed: tables.iter().all(|t| t.passed),
        topology: name,
        tables,
        elapsed_ms,
    })
}

/// The names the topology gives its tables, in its order.
fn topology_tables(rows: &crate::sink::rows::RowSource) -> Vec<&'static str> {
    match rows {
        crate::sink::rows::RowSource::Topology { tables, .. } => {
            tables.iter().map(|t| t.name).collect()
        }
        crate::sink::rows::RowSource::Mapping(_) => Vec::new(),
    }
}

impl fmt::Display for TablesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| !t.passed)
            .map(|t| t.table.as_str())
            .collect();
        if failed.is_empty() {
            writeln!(
                f,
                "kstage verify: PASSED (sink topology {}, all {} tables)",
                self.topology,
                self.tables.len()
            )?;
        } else {
            writeln!(
                f,
                "kstage verify: FAILED (sink topology {}, {} of {} tables: {})",
                self.topology,
                failed.len(),
                self.tables.len(),
                failed.join(", ")
            )?;
        }
        for table in &self.tables {
            writeln!(f, "{table}")?;
        }
        write!(f, "  took {:.1} s", self.elapsed_ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_tables_that_failed() {
        let mut lines = TableReport {
            table: "order_lines".into(),
            mode: "transactional".into(),
            ..TableReport::default()
        };
        lines.lost.add(3, || "in[0]@7".into());
        let orders = TableReport {
            passed: true,
            table: "orders".into(),
            ..TableReport::default()
        };
        let report = TablesReport {
            passed: false,
            topology: "order-lines".into(),
            tables: vec![orders, lines],
            elapsed_ms: 0,
        };
        let text = report.to_string();
        assert!(
            text.starts_with(
                "kstage verify: FAILED (sink topology order-lines, 1 of 2 tables: order_lines)"
            ),
            "{text}"
        );
        assert!(
            text.contains("table order_lines, 1 of 4 checks: lost"),
            "{text}"
        );
        let json = serde_json::to_string(&report).expect("serialize");
        let back: TablesReport = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, report);
    }
}
