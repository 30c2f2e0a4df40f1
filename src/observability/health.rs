//! Liveness and readiness, for an orchestrator's probes.
//!
//! * `/healthz` answers 200 while the process runs and its HTTP server answers.
//! * `/readyz` answers 200 once the producer is initialised (`init_transactions` done) and the
//!   consumer has joined its group (received an assignment, possibly empty), and as long as no
//!   transaction has stayed open longer than `max_open_transaction`: a transaction is committed
//!   every `commit_interval`, so an older one means the stage is stuck (a broker it cannot reach, a
//!   commit that does not return) and should get no traffic; a liveness policy may restart it.
//!   Otherwise 503 with the reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::metrics::{now_ms, StageMetrics};

/// The readiness state the engine keeps up to date: one [`WorkerHealth`] per worker, so a stuck
/// worker makes the stage unready even while another one commits.
#[derive(Debug)]
pub struct Health {
    workers: Mutex<Vec<Arc<WorkerHealth>>>,
    max_open_transaction: Duration,
}

/// The readiness of one worker (one consumer and its producer).
#[derive(Debug)]
pub struct WorkerHealth {
    /// The worker's transactional id, for messages.
    name: String,
    producer_ready: AtomicBool,
    in_group: AtomicBool,
    /// Unix ms when the worker's open transaction began (0: none open).
    open_since_ms: AtomicU64,
    /// Partitions whose state this worker is restoring (stateful topologies).
    restoring: AtomicU64,
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
            workers: Mutex::new(Vec::new()),
            max_open_transaction,
        }
    }

    /// Registers a worker; the stage is ready only while every registered worker is.
    pub fn worker(&self, name: &str) -> Arc<WorkerHealth> {
        let worker = Arc::new(WorkerHealth {
            name: name.to_string(),
            producer_ready: AtomicBool::new(false),
            in_group: AtomicBool::new(false),
            open_since_ms: AtomicU64::new(0),
            restoring: AtomicU64::new(0),
        });
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&worker));
        worker
    }

    /// `Ok` when every worker is ready, else why not (naming the worker).
    pub fn readiness(&self, _metrics: &StageMetrics) -> Result<(), String> {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if workers.is_empty() {
            return Err("no worker has started yet".into());
        }
        for worker in workers.iter() {
            worker
                .readiness(self.max_open_transaction)
                .map_err(|why| format!("worker {}: {why}", worker.name))?;
        }
        Ok(())
    }
}

impl WorkerHealth {
    /// The producer is initialised (fenced its predecessors).
    pub fn set_producer_ready(&self) {
        self.producer_ready.store(true, Ordering::Relaxed);
    }

    /// The consumer joined its group (`true`) or lost its assignment (`false`).
    pub fn set_in_group(&self, joined: bool) {
        self.in_group.store(joined, Ordering::Relaxed);
    }

    /// A partition's restore began (`true`) or ended (`false`): the worker is not ready while
    /// one runs.
    pub fn set_restoring(&self, restoring: bool) {
        if restoring {
            self.restoring.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .restoring
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// A transaction (batch) of this worker opened now.
    pub fn transaction_opened(&self) {
        self.open_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// This worker's transaction ended.
    pub fn transaction_closed(&self) {
        self.open_since_ms.store(0, Ordering::Relaxed);
    }

    fn readiness(&self, max_open_transaction: Duration) -> Result<(), String> {
        if !self.producer_ready.load(Ordering::Relaxed) {
            return Err("the producer is not initialised yet".into());
        }
        if !self.in_group.load(Ordering::Relaxed) {
            return Err("the consumer has not joined its group".into());
        }
        let restoring = self.restoring.load(Ordering::Relaxed);
        if restoring > 0 {
            return Err(format!(
                "restoring the state of {restoring} partition(s) from the changelog"
            ));
        }
        let since = self.open_since_ms.load(Ordering::Relaxed);
        let age = Duration::from_millis(now_ms().saturating_sub(since));
        if since != 0 && age > max_open_transaction {
            return Err(format!(
                "a transaction has been open for {} s (more than {} s)",
                age.as_secs(),
                max_open_transaction.as_secs()
            ));
        }
        Ok(())
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
    fn ready_only_when_every_worker_is_initialised_joined_and_not_stuck() {
        let health = Health::new(Duration::from_millis(0));
        let metrics = StageMetrics::new();
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("no worker"));
        let first = health.worker("app-0-0");
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("producer"));
        first.set_producer_ready();
        assert!(health
            .readiness(&metrics)
            .expect_err("not ready")
            .contains("group"));
        first.set_in_group(true);
        assert_eq!(health.readiness(&metrics), Ok(()));
        let second = health.worker("app-0-1");
        second.set_producer_ready();
        second.set_in_group(true);
        assert_eq!(health.readiness(&metrics), Ok(()));
        // One stuck worker makes the stage unready while the other one is fine.
        second.transaction_opened();
        std::thread::sleep(Duration::from_millis(5));
        let why = health.readiness(&metrics).expect_err("not ready");
        assert!(why.contains("open for") && why.contains("app-0-1"), "{why}");
        second.transaction_closed();
        assert_eq!(health.readiness(&metrics), Ok(()));
        // A restoring partition makes its worker unready until the restore ends.
        first.set_restoring(true);
        let why = health.readiness(&metrics).expect_err("not ready");
        assert!(
            why.contains("restoring") && why.contains("app-0-0"),
            "{why}"
        );
        first.set_restoring(false);
        assert_eq!(health.readiness(&metrics), Ok(()));
    }
}
