//! Liveness and readiness, for an orchestrator's probes.
//!
//! * `/healthz` answers 200 while the process runs and its HTTP server answers.
//! * `/readyz` answers 200 once the producer is initialised (`init_transactions` done) and the
//!   consumer has joined its group (received an assignment, possibly empty), and as long as no
//!   transaction has stayed open longer than `max_open_transaction`: a transaction is committed
//!   every `commit_interval`, so an older one means the stage is stuck (a broker it cannot reach, a
//!   commit that does not return) and should get no traffic; a liveness policy may restart it.
//!   Otherwise 503 with the reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::metrics::StageMetrics;

/// The readiness state the engine keeps up to date.
#[derive(Debug)]
pub struct Health {
    producer_ready: AtomicBool,
    in_group: AtomicBool,
    max_open_transaction: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(default_max_open_transaction())
    }
}

/// 60 s: librdkafka's default transaction timeout; by then the broker aborts the transaction.
pub fn default_max_open_transaction() -> Duration {
    Duration::from_secs(60)
}

impl Health {
    /// Readiness with the given bound on the open transaction's age.
    pub fn new(max_open_transaction: Duration) -> Self {
        Self {
            producer_ready: AtomicBool::new(false),
            in_group: AtomicBool::new(false),
            max_open_transaction,
        }
    }

    /// The producer is initialised (fenced its predecessors).
    pub fn set_producer_ready(&self) {
        self.producer_ready.store(true, Ordering::Relaxed);
    }

    /// The consumer joined its group (`true`) or lost its assignment (`false`).
    pub fn set_in_group(&self, joined: bool) {
        self.in_group.store(joined, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self, metrics: &StageMetrics) -> Result<(), String> {
        if !self.producer_ready.load(Ordering::Relaxed) {
            return Err("the producer is not initialised yet".into());
        }
        if !self.in_group.load(Ordering::Relaxed) {
            return Err("the consumer has not joined its group".into());
        }
        match metrics.open_transaction_ms() {
            Some(age) if Duration::from_millis(age) > self.max_open_transaction => Err(format!(
                "a transaction has been open for {} s (more than {} s)",
                age / 1000,
                self.max_open_transaction.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// What the engine reports to: metrics and readiness.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The metrics.
    pub metrics: Arc<StageMetrics>,
    /// The readiness state.
    pub health: Arc<Health>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_initialised_joined_and_not_stuck() {
        let health = Health::new(Duration::from_millis(0));
        let metrics = StageMetrics::new();
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("producer"));
        health.set_producer_ready();
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("group"));
        health.set_in_group(true);
        assert_eq!(health.readiness(&metrics), Ok(()));
        metrics.transaction_opened();
        std::thread::sleep(Duration::from_millis(5));
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("open for"));
    }
}
