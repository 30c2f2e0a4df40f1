//! The chaos harness of the reliability scenarios (`tests/reliability*.rs`): stage instances as
//! child processes, faults on a schedule or at seeded random, and `kstage verify` at the end.
//!
//! * [`cluster`]: the three-broker cluster (private, or the one `scripts/reliability.sh` runs).
//! * [`fleet`]: the instances of one stage, their faults, and supervision.
//! * [`faults`]: the fault catalogue, injection and healing.
//! * [`proxy`]: Toxiproxy between the stages and the brokers (network faults).
//! * [`feed`]: the paced input feeder, the live read_committed tail, progress probes.
//! * [`scenario`]: a scenario and its run.
//! * [`failover`]: fail-over time measurements; [`failover_report`]: running and reporting one.
//! * [`instance`]: one instance: a `kstage` process or the Kafka Streams peer.
//! * [`verifier`]: runs `kstage verify` and parses its JSON report.
//!
//! Environment: `KSTAGE_RELIABILITY=full` runs every scenario (default: the short CI set);
//! `KSTAGE_CHAOS_SEED=N` replays a run's fault choices (each scenario prints its seed);
//! `KSTAGE_RELIABILITY_RESULTS=FILE` appends one JSON line per scenario (what
//! `scripts/reliability.sh` turns into the results table).

pub mod cluster;
pub mod failover;
pub mod failover_report;
pub mod faults;
pub mod feed;
pub mod fleet;
pub mod instance;
pub mod proxy;
pub mod scenario;
pub mod verifier;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use kstage::verify::Report;

pub use scenario::{Expect, Scenario};

/// True when `KSTAGE_RELIABILITY=full`.
pub fn full() -> bool {
    std::env::var("KSTAGE_RELIABILITY").as_deref() == Ok("full")
}

/// The seed of a scenario's random choices: `KSTAGE_CHAOS_SEED`, or a fresh one (printed).
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("KSTAGE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{name}: chaos seed {seed} (replay with KSTAGE_CHAOS_SEED={seed})");
    seed
}

/// What a scenario run did and what the verifier found.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub brokers: u32,
    pub records: u64,
    pub chain: bool,
    pub expect: Expect,
    pub faults: BTreeMap<String, u32>,
    pub fault_log: Vec<String>,
    pub skipped_faults: usize,
    pub zombies: Vec<String>,
    pub unplanned_exits: Vec<String>,
    /// Producer re-creations the instances running at the end logged.
    pub recreations: usize,
    /// Transactions of the stages still open at the end (`TransactionsCommand list`; network
    /// scenarios only).
    pub open_transactions: Vec<String>,
    /// Pieces of an unplanned exit's description that the scenario tolerates.
    pub tolerated_exits: Vec<&'static str>,
    pub unclean_stops: Vec<String>,
    pub drained: bool,
    pub live_unsettled: Vec<String>,
    pub run_time: Duration,
    pub drain_time: Duration,
    pub verify_time: Duration,
    pub verify_command: String,
    pub report: Report,
}

impl Outcome {
    /// Total faults injected.
    pub fn fault_total(&self) -> u32 {
        self.faults.values().sum()
    }

    /// Faults of kinds whose name contains `what`.
    pub fn faults_of(&self, what: &str) -> u32 {
        self.faults
            .iter()
            .filter(|(k, _)| k.contains(what))
            .map(|(_, n)| n)
            .sum()
    }

    /// Unplanned exits the scenario does not tolerate: a stage that gave up on a fault it is
    /// meant to survive, even if its restart then made the output exactly once.
    pub fn untolerated_exits(&self) -> Vec<&str> {
        self.unplanned_exits
            .iter()
            .filter(|exit| !self.tolerated_exits.iter().any(|t| exit.contains(t)))
            .map(String::as_str)
            .collect()
    }

    /// True when the run met its expectation.
    pub fn as_expected(&self) -> bool {
        match &self.expect {
            Expect::ExactlyOnce => {
                self.report.passed
                    && self.live_unsettled.is_empty()
                    && self.untolerated_exits().is_empty()
                    && self.open_transactions.is_empty()
            }
            Expect::Failure(checks) => {
                let failed = self.report.failed_checks();
                checks.iter().any(|c| failed.contains(c))
            }
        }
    }

    /// Fails the test unless the run met its expectation, with everything needed to debug it.
    pub fn assert_expected(&self) {
        eprintln!("{}", self.summary());
        assert!(
            self.as_expected(),
            "{}: expected {:?}\n{}\nunplanned exits not tolerated: {:?}\nlive tail saw {} records \
             not in the settled output: {:?}\nfaults:\n{}\nverify: {}",
            self.scenario,
            self.expect,
            self.report,
            self.untolerated_exits(),
            self.live_unsettled.len(),
            &self.live_unsettled[..self.live_unsettled.len().min(5)],
            self.fault_log.join("\n"),
            self.verify_command
        );
    }

    /// A paragraph for the test log.
    pub fn summary(&self) -> String {
        format!(
            "== {} (seed {}, {} broker(s)): {} records, {} faults {:?}, {} unplanned exits, \
             {} unclean stops, {} producer re-creations, drained: {}, run {:.0?} (drain {:.0?}, \
             verify {:.0?}); zombies: {:?}\n{}",
            self.scenario,
            self.seed,
            self.brokers,
            self.records,
            self.fault_total(),
            self.faults,
            self.unplanned_exits.len(),
            self.unclean_stops.len(),
            self.recreations,
            self.drained,
            self.run_time,
            self.drain_time,
            self.verify_time,
            self.zombies,
            self.report
        ) + &format!(
            "\nunplanned exits: {:?}\nunclean stops: {:?}\nopen transactions (TransactionsCommand): \
             {:?}",
            self.unplanned_exits, self.unclean_stops, self.open_transactions
        )
    }
}

/// Appends `outcome` as one JSON line to `KSTAGE_RELIABILITY_RESULTS`, if set.
pub fn record(outcome: &Outcome) {
    let Ok(path) = std::env::var("KSTAGE_RELIABILITY_RESULTS") else {
        return;
    };
    let r = &outcome.report;
    let line = serde_json::json!({
        "scenario": outcome.scenario,
        "seed": outcome.seed,
        "brokers": outcome.brokers,
        "chain": outcome.chain,
        "records": outcome.records,
        "expect": match &outcome.expect {
            Expect::ExactlyOnce => "exactly-once".to_string(),
            Expect::Failure(checks) => format!("failure of {}", checks.join(" or ")),
        },
        "as_expected": outcome.as_expected(),
        "faults": outcome.faults,
        "fault_total": outcome.fault_total(),
        "skipped_faults": outcome.skipped_faults,
        "zombies": outcome.zombies,
        "unplanned_exits": outcome.unplanned_exits,
        "producer_recreations": outcome.recreations,
        "open_transactions": outcome.open_transactions,
        "unclean_stops": outcome.unclean_stops,
        "drained": outcome.drained,
        "lost": r.lost.count,
        "duplicated": r.duplicated.count,
        "unexpected": r.unexpected.count,
        "order_violations": r.order_violations.count,
        "aborted_visible": r.aborted_visible.count,
        "live_unsettled": outcome.live_unsettled.len(),
        "torn": r.torn_transactions.count,
        "runs_checked": r.runs_checked,
        "hanging": r.hanging_transactions.count,
        "group_lag": r.group_lag.count,
        "aborted_records": r.aborted_records,
        "failed_checks": r.failed_checks(),
        "run_s": outcome.run_time.as_secs_f64(),
        "drain_s": outcome.drain_time.as_secs_f64(),
        "verify_s": outcome.verify_time.as_secs_f64(),
        "verify_command": outcome.verify_command,
    });
    append_line(&path, &line);
}

/// Appends one JSON value as a line to `path`.
pub fn append_line(path: &str, line: &serde_json::Value) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("write {path}: {e}"));
}
