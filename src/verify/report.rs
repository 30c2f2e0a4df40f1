//! The verifier's report: one [`Finding`] per check, the numbers behind them, a text rendering
//! for people and a JSON form (serde) for scripts and the reliability harness.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::lineage::Identity;

/// What one check found: how many violations, and the first few, described.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Number of violations (0: the check passed).
    pub count: u64,
    /// The first violations, described (at most the report's example limit).
    pub examples: Vec<String>,
}

impl Finding {
    /// Counts one violation, keeping its description while fewer than `limit` are kept.
    pub fn add(&mut self, limit: usize, describe: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < limit {
            self.examples.push(describe());
        }
    }

    /// Counts `n` violations under one description.
    pub fn add_n(&mut self, n: u64, limit: usize, describe: impl FnOnce() -> String) {
        self.count += n;
        if n > 0 && self.examples.len() < limit {
            self.examples.push(describe());
        }
    }

    /// True when nothing was found.
    pub fn ok(&self) -> bool {
        self.count == 0
    }
}

/// How much of a topic the verifier read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
    /// Records seen read_committed (up to the LSO snapshot).
    pub read_committed: u64,
    /// Records seen read_uncommitted below the same LSO snapshot (outputs, and topics whose
    /// read_uncommitted view a lookup needed); `None` when not read.
    pub read_uncommitted: Option<u64>,
}

/// One partition's ends, after waiting for open transactions to settle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEnds {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Last stable offset (the read_committed end).
    pub last_stable_offset: i64,
    /// High watermark (the read_uncommitted end).
    pub high_watermark: i64,
}

/// A consumer group's committed offset on one partition, against what is left to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartition {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset (stable, KIP-447), if any.
    pub committed: Option<i64>,
    /// The partition's last stable offset.
    pub last_stable_offset: i64,
    /// Records visible read_committed at or after the committed offset.
    pub unconsumed: u64,
}

/// Everything `kstage verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True when every check passed.
    pub passed: bool,
    /// How output records were traced to input records.
    pub identity: Option<Identity>,
    /// The input topics read.
    pub inputs: Vec<TopicSummary>,
    /// The through (middle) topics read.
    pub through: Vec<TopicSummary>,
    /// The output topics read.
    pub outputs: Vec<TopicSummary>,
    /// Input records with no output record read_committed.
    pub lost: Finding,
    /// Extra copies: an input record with n output records counts n - 1.
    pub duplicated: Finding,
    /// Output records that trace to no input record.
    pub unexpected: Finding,
    /// Output records out of input order within a lane (input partition, through partition,
    /// output partition): input offsets must strictly increase with output offsets.
    pub order_violations: Finding,
    /// Lanes the order check looked at.
    pub order_lanes: u64,
    /// Output records visible read_committed that derive from a record of an aborted or open
    /// upstream transaction.
    pub aborted_visible: Finding,
    /// Single-transaction runs of an output partition partly committed, partly not.
    pub torn_transactions: Finding,
    /// Lanes of runs the torn-transaction check could attribute to one transaction and checked.
    pub runs_checked: u64,
    /// Output (and through) partitions whose LSO stayed below the high watermark.
    pub hanging_transactions: Finding,
    /// Every output and through partition's ends.
    pub partitions: Vec<PartitionEnds>,
    /// Group partitions with records left at or after the committed offset.
    pub group_lag: Finding,
    /// Every checked group partition.
    pub groups: Vec<GroupPartition>,
    /// Output records below the LSO seen read_uncommitted only: records of aborted
    /// transactions (informational: retries after faults leave them; they must stay invisible).
    pub aborted_records: u64,
    /// How long the verification took, in milliseconds.
    pub elapsed_ms: u64,
}

impl Report {
    /// The checks, by name, with their findings.
    pub fn checks(&self) -> [(&'static str, &Finding); 8] {
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("unexpected", &self.unexpected),
            ("order", &self.order_violations),
            ("aborted visible", &self.aborted_visible),
            ("torn transactions", &self.torn_transactions),
            ("hanging transactions", &self.hanging_transactions),
            ("group offsets", &self.group_lag),
        ]
    }

    /// No input record lost or duplicated, no output record unexpected (order not included).
    pub fn is_exactly_once(&self) -> bool {
        self.lost.ok() && self.duplicated.ok() && self.unexpected.ok()
    }

    /// Names of the checks that failed.
    pub fn failed_checks(&self) -> Vec<&'static str> {
        self.checks()
            .into_iter()
            .filter(|(_, f)| !f.ok())
            .map(|(name, _)| name)
            .collect()
    }

    /// Sets `passed` from the findings.
    pub(crate) fn conclude(&mut self) {
        self.passed = self.failed_checks().is_empty();
    }

    fn detail(&self, name: &str) -> String {
        match name {
            "order" => format!("({} lanes)", self.order_lanes),
            "torn transactions" => format!("({} run lanes checked)", self.runs_checked),
            "hanging transactions" => format!("({} partitions)", self.partitions.len()),
            "group offsets" => format!("({} group partitions)", self.groups.len()),
            _ => String::new(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failed_checks();
        if failed.is_empty() {
            writeln!(
                f,
                "kstage verify: PASSED (all {} checks)",
                self.checks().len()
            )?;
        } else {
            writeln!(
                f,
                "kstage verify: FAILED ({} of {} checks: {})",
                failed.len(),
                self.checks().len(),
                failed.join(", ")
            )?;
        }
        if let Some(identity) = &self.identity {
            writeln!(f, "  identity: {identity}")?;
        }
        for (role, topics) in [
            ("input", &self.inputs),
            ("through", &self.through),
            ("output", &self.outputs),
        ] {
            for t in topics {
                write!(
                    f,
                    "  {role:<8}{} ({} partitions): {} records read_committed",
                    t.topic, t.partitions, t.read_committed
                )?;
                if let Some(u) = t.read_uncommitted {
                    write!(f, ", {u} read_uncommitted")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(
            f,
            "  aborted output records (read_uncommitted only): {}",
            self.aborted_records
        )?;
        for (name, finding) in self.checks() {
            let mark = if finding.ok() { "ok  " } else { "FAIL" };
            let line = format!(
                "  [{mark}] {name:<21} {:>8} {}",
                finding.count,
                self.detail(name)
            );
            writeln!(f, "{}", line.trim_end())?;
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
    fn a_report_passes_only_when_every_finding_is_empty() {
        let mut report = Report::default();
        report.conclude();
        assert!(report.passed);
        report.duplicated.add(1, || "in[0]@3 seen 2 times".into());
        report.duplicated.add(1, || "in[0]@4 seen 2 times".into());
        report.conclude();
        assert!(!report.passed);
        assert_eq!(report.failed_checks(), ["duplicated"]);
        assert_eq!(report.duplicated.count, 2);
        assert_eq!(report.duplicated.examples.len(), 1, "examples are capped");
        let text = report.to_string();
        assert!(
            text.contains("FAILED (1 of 8 checks: duplicated)"),
            "{text}"
        );
        assert!(text.contains("in[0]@3 seen 2 times"), "{text}");
    }

    #[test]
    fn the_json_form_round_trips() {
        let mut report = Report {
            identity: Some(Identity::Field("id".into())),
            ..Report::default()
        };
        report.lost.add(5, || "in[1]@7".into());
        report.conclude();
        let json = serde_json::to_string(&report).expect("serialize");
        assert!(json.contains("\"passed\":false"), "{json}");
        let back: Report = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, report);
    }
}
