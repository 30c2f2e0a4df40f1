//! The report of `kstage verify --sink`: the four table checks, the numbers behind them, the
//! poison taken out of the comparison (informational), a text rendering and a JSON form.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::report::Finding;

/// What comparing a sink's table with its input found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    /// True when all four checks passed.
    pub passed: bool,
    /// The table compared.
    pub table: String,
    /// The sink's mode (`transactional`: one row per record; `idempotent`: one per key).
    pub mode: String,
    /// The columns that name a row's record (or key).
    pub identity: Vec<String>,
    /// Each input topic and the records read from it (read_committed).
    pub inputs: Vec<(String, u64)>,
    /// Rows expected in the table (after the idempotent mode's last-per-key, less rejected).
    pub expected_rows: u64,
    /// Rows found in the table.
    pub rows_in_table: u64,
    /// Records the mapping cannot read (not JSON, a key not UTF-8): poison, not expected.
    pub unmappable: Finding,
    /// Rows the table's types refuse (too long, overflow, NULL in NOT NULL): poison, not expected.
    pub rejected: Finding,
    /// Expected rows with no row of their identity.
    pub lost: Finding,
    /// Identities with more than one row.
    pub duplicated: Finding,
    /// Rows whose identity matches no expected row.
    pub unexpected: Finding,
    /// Rows whose other mapped columns differ from the expected row (idempotent: not the last
    /// value of the key).
    pub values: Finding,
    /// Wall time of the verification.
    pub elapsed_ms: u64,
}

impl TableReport {
    /// The checks, named as in the text report.
    pub fn checks(&self) -> [(&'static str, &Finding); 4] {
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("unexpected", &self.unexpected),
            (
                if self.mode == "idempotent" {
                    "last value per key"
                } else {
                    "values"
                },
                &self.values,
            ),
        ]
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<&str> = self
            .checks()
            .iter()
            .filter(|(_, finding)| !finding.ok())
            .map(|(name, _)| *name)
            .collect();
        if failed.is_empty() {
            writeln!(
                f,
                "kstage verify: PASSED (table {}, all 4 checks)",
                self.table
            )?;
        } else {
            writeln!(
                f,
                "kstage verify: FAILED (table {}, {} of 4 checks: {})",
                self.table,
                failed.len(),
                failed.join(", ")
            )?;
        }
        writeln!(
            f,
            "  mode {}, identity ({}); {} rows in the table, {} expected",
            self.mode,
            self.identity.join(", "),
            self.rows_in_table,
            self.expected_rows
        )?;
        for (topic, records) in &self.inputs {
            writeln!(f, "  input   {topic}: {records} records read_committed")?;
        }
        for (name, finding) in [
            ("not mappable (poison)", &self.unmappable),
            ("rejected by the table (poison)", &self.rejected),
        ] {
            if !finding.ok() {
                writeln!(f, "  {name}: {}", finding.count)?;
                for example in &finding.examples {
                    writeln!(f, "           - {example}")?;
                }
            }
        }
        for (name, finding) in self.checks() {
            let mark = if finding.ok() { "ok  " } else { "FAIL" };
            writeln!(f, "  [{mark}] {name:<21} {:>8}", finding.count)?;
            for example in &finding.examples {
                writeln!(f, "           - {example}")?;
            }
        }
        write!(f, "  took {:.1} s", self.elapsed_ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_failed_checks_and_their_examples() {
        let mut report = TableReport {
            table: "orders".into(),
            mode: "idempotent".into(),
            ..TableReport::default()
        };
        report.values.add(3, || "in[0]@7: stale".into());
        let text = report.to_string();
        assert!(
            text.contains("FAILED (table orders, 1 of 4 checks: last value per key)"),
            "{text}"
        );
        assert!(text.contains("in[0]@7: stale"), "{text}");
        let json = serde_json::to_string(&report).expect("serialize");
        let back: TableReport = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, report);
    }
}
