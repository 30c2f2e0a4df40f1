//! The write in flight: batch N's database transaction runs on its own thread while the loop
//! polls and maps batch N+1.
//!
//! ```text
//!  loop: batch N due ─► launch: the thread locks the session, runs write.rs (rows + fenced
//!  │                    offsets, one transaction, COMMIT or a settled outcome) ─► Done
//!  ├─► polls and maps batch N+1 meanwhile (a claim in on_assign waits for the session lock;
//!  │   on_revoke waits until no write is in flight)
//!  └─► settle (Done seen, or batch N+1 due, shutdown, error): join ─► the Kafka offsets of the
//!      partitions still owned, counters ─► only then may batch N+1 launch
//! ```
//!
//! Invariants: at most one write in flight; the next launches only after the previous outcome
//! is known (committed, settled from the offsets table, or an error that stops the loop);
//! Kafka's offsets are committed only after the database commit of those rows. Rows the database
//! rejects need the poison policy (the dead-letter producer lives on the loop's thread): the
//! thread rolls that batch back and hands it back `deferred`, and the loop writes it again
//! itself, synchronously.
//!
//! Each `Done` also says when its write ended, so the loop's "Batch committed." debug line
//! (`RUST_LOG=kstage::sink=debug`, one line per batch) can say where the batch's time went:
//! [`BatchTimes`]: the first record's age on arrival, the batch open, the write, and the wait
//! until the loop noticed the outcome.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::db::Db;
use super::error::SinkError;
use super::write::{Rejected, Writer};

/// Whether a write is in flight, for the rebalance callbacks to wait on.
#[derive(Debug, Default)]
pub(super) struct WriteGate {
    writing: Mutex<bool>,
    settled: Condvar,
}

impl WriteGate {
    fn begin(&self) {
        *self.writing.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    fn end(&self) {
        *self.writing.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.settled.notify_all();
    }

    /// Blocks until no write is in flight (its transaction committed, rolled back or settled).
    pub(super) fn wait(&self) {
        let mut writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        while *writing {
            writing = self
                .settled
                .wait(writing)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Ends the gate when the thread ends, whatever way it ends (a panic included).
struct Ending(Arc<WriteGate>);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What a write thread hands back.
pub(super) struct Done {
    /// The batch written (or to write again, `deferred`).
    pub(super) batch: Batch,
    /// The rows rejected (committed: empty, since rejected rows defer), or the error.
    pub(super) result: Result<Vec<Rejected>, SinkError>,
    /// Rows were rejected: rolled back, for the loop to write with the poison policy.
    pub(super) deferred: bool,
    /// When the batch's commit began (for the commit-time metric).
    pub(super) started: Instant,
    /// When the write ended (its outcome known on the write thread), for the per-batch timings.
    pub(super) finished: Instant,
}

/// Where a batch's time went, for the "Batch committed." debug line (one per batch): a row's
/// latency is about `first_age_ms` (its record's way through Kafka into the poll) plus its wait
/// in the open batch (at most `collect_ms`) plus `write_ms` plus `noticed_ms`.
pub(super) struct BatchTimes {
    /// From the first record's arrival to the launch of the write (the batch open).
    pub(super) collected: Option<Duration>,
    /// The write thread's transaction: from the launch to its outcome (COMMIT included).
    pub(super) written: Duration,
    /// From the outcome to the loop's settle (when the Kafka offsets are committed).
    pub(super) noticed: Duration,
    /// How old the first record was when it arrived (wall clock − its Kafka timestamp).
    pub(super) first_age_ms: Option<i64>,
}

/// Milliseconds since the Unix epoch (the clock Kafka's record timestamps use).
pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The one write in flight.
pub(super) struct InFlight {
    handle: JoinHandle<Done>,
}

impl InFlight {
    /// Starts writing `batch` on its own thread.
    pub(super) fn launch(
        writer: &Arc<Writer>,
        db: &Arc<Mutex<Db>>,
        gate: &Arc<WriteGate>,
        batch: Batch,
        started: Instant,
    ) -> Result<Self, SinkError> {
        gate.begin();
        let ending = Ending(Arc::clone(gate));
        let (writer, db) = (Arc::clone(writer), Arc::clone(db));
        let handle = std::thread::Builder::new()
            .name("kstage-sink-write".into())
            .spawn(move || {
                let _ending = ending;
                let mut deferred = false;
                let result = {
                    let mut db = db.lock().unwrap_or_else(PoisonError::into_inner);
                    let mut defer = |rejected: &[Rejected]| -> Result<(), SinkError> {
                        if rejected.is_empty() {
                            return Ok(());
                        }
                        deferred = true;
                        Err(SinkError::Database {
                            operation: "handing rejected rows to the poison policy",
                            message: format!("{} rows rejected", rejected.len()),
                        })
                    };
                    writer.write(&mut db, &batch.rows, &batch.ends, &mut defer)
                };
                Done {
                    batch,
                    result,
                    deferred,
                    started,
                    finished: Instant::now(),
                }
            })
            // A failed spawn drops the closure, and its guard ends the gate.
            .map_err(|error| SinkError::Database {
                operation: "starting the write thread",
                message: error.to_string(),
            })?;
        Ok(Self { handle })
    }

    /// Whether the outcome is known (joining will not block).
    pub(super) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the outcome.
    pub(super) fn join(self) -> Result<Done, SinkError> {
        self.handle.join().map_err(|_| SinkError::Database {
            operation: "writing a batch",
            message: "the write thread panicked".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writing(gate: &WriteGate) -> bool {
        *gate.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[test]
    fn a_write_thread_that_panics_still_ends_the_gate() {
        let gate = Arc::new(WriteGate::default());
        gate.begin();
        let ending = Ending(Arc::clone(&gate));
        assert!(writing(&gate));
        let thread = std::thread::spawn(move || {
            let _ending = ending;
            panic!("a write that panics");
        });
        assert!(thread.join().is_err());
        assert!(!writing(&gate));
        gate.wait();
    }
}
