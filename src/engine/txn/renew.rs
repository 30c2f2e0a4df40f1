//! Re-creating a worker's transactional producer: the guard against late transactional requests
//! (KAFKA-17754), and the way out of a commit or abort that timed out or hung; and the first
//! producer's start-up `init_transactions`, under the same watchdog.
//!
//! ```text
//!   commit / abort needed a retry, or a coordinator request timed out ──► renew before the
//!                                                                         next begin
//!   commit / abort failed or hung (healable) ──► renew now ──► the failed batch is settled:
//!        open or aborting: rewound to its first offsets; in doubt: to the committed offsets
//!   renew: new producer (same settings, same transactional.id) ──► init_transactions on a new
//!          commit thread (watchdog) ──► swap in; the old producer is dropped off this thread
//! ```
//!
//! Why: librdkafka (2.12.1, and still 2.15) speaks EndTxn v0-1 only, without KIP-890's
//! per-transaction epoch (librdkafka#5423). An EndTxn that timed out is resent; if the resend
//! succeeds, the next transaction runs on the same epoch, and the first, delayed EndTxn can land
//! on it and commit (or abort) its early part. A new producer's `init_transactions` bumps the
//! epoch, so every late request of the old one is fenced; it also settles what the old one left:
//! its coordinator completes a transaction whose commit it had logged, and aborts one still open.
//!
//! The rule, with each bound and what follows it:
//! * Renew before the next transaction after any commit or abort that needed a retried call
//!   (each call is bounded by what is left of the job's deadline, one `transaction_timeout`), or
//!   after any `REQTMOUT` of EndTxn, AddOffsetsToTxn, TxnOffsetCommit, AddPartitionsToTxn or
//!   InitProducerId (librdkafka resent it).
//! * A commit or abort that fails with a healable error ([`healable`]: retries exhausted, a
//!   timeout, a lost coordinator, a non-fencing producer fatal error) or hangs past the
//!   watchdog (`WATCHDOG_FACTOR` transaction timeouts) is settled by a renew right away. A batch
//!   whose commit outcome was unknown is never aborted: the new init decides it, and the
//!   committed offsets say which way.
//! * A renewal whose own init fails with a healable error or hangs (the same watchdog) is tried
//!   again with another new producer. Not healable: fencing by another producer,
//!   authorization, configuration. These stop the worker with the batch in doubt, as before;
//!   a restart with the same instance id settles it.
//! * At most [`MAX_RENEWALS`] renewals (or failed tries) in a row without a commit: a fault
//!   that a new producer does not heal stops the worker instead of looping. Worst case, the
//!   worker does not poll for the commit's watchdog plus one per try (2 + 2 × 3 transaction
//!   timeouts); past `max.poll.interval.ms` its consumer leaves the group and rejoins, which
//!   costs a rebalance and loses nothing.
//! * `begin_transaction` is not bounded by a timer: librdkafka answers it from its own thread
//!   without any request on the wire. `send` is bounded where it waits (a full queue, one
//!   transaction timeout).
//! * The negative control `KSTAGE_BROKEN_MODE=no_recreate` (fault-injection builds) never
//!   renews.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;

use super::commit::{CommitThread, Ended, Job};
use super::producer::TransactionalProducer;
use super::{Outcome, TxnCore, TxnHandle};
use crate::engine::broken::Broken;
use crate::error::EngineError;

impl TxnHandle {
    /// `init_transactions` of the worker's producer at start-up (exactly_once: on the commit
    /// thread, under its watchdog). A coordinator that is not there yet (a cluster that has just
    /// started creates its transaction state log on first use) keeps answering with retriable
    /// errors for a while: each job retries for one transaction timeout, and a job that ran out
    /// is submitted again until `patience` has passed since the first.
    pub(crate) fn init(&self, patience: Duration) -> Result<(), EngineError> {
        let until = Instant::now() + patience;
        let mut core = self.lock();
        let core = &mut *core;
        let Some(commits) = &mut core.commits else {
            return core.producer.init();
        };
        loop {
            commits.submit(Job::Init)?;
            match commits.wait()? {
                Some(Ended::Initialized) | None => return Ok(()),
                Some(Ended::Fatal {
                    error: error @ EngineError::RetriesExhausted { .. },
                    ..
                }) if Instant::now() < until => {
                    tracing::warn!(%error, "The transaction coordinator is not ready yet; \
                        initialising again.");
                }
                Some(Ended::Fatal { error, .. }) => return Err(error),
                Some(other) => {
                    return Err(EngineError::Internal(format!(
                        "an init_transactions ended as {other:?}"
                    )))
                }
            }
        }
    }
}

/// Renewals in a row without a commit after which the worker stops.
pub(super) const MAX_RENEWALS: u32 = 3;

impl TxnCore {
    /// Notes that the next transaction needs a new producer (a call was retried).
    pub(super) fn renew_before_next(&mut self, why: &'static str) {
        self.renew.get_or_insert(why);
    }

    /// Before a transaction begins: renews the producer if a retry or a coordinator timeout
    /// since the last renewal asks for it.
    pub(super) fn renew_if_needed(&mut self) -> Result<(), EngineError> {
        if self.producer.take_coordinator_timeouts() > 0 {
            self.renew_before_next("a request to the transaction coordinator timed out");
        }
        let Some(why) = self.renew.take() else {
            return Ok(());
        };
        if Broken::NoRecreate.active() {
            tracing::warn!(
                why,
                "KSTAGE_BROKEN_MODE: not re-creating the producer (negative control)"
            );
            return Ok(());
        }
        self.renew(why)
    }

    /// A commit or abort failed with `error`: renew and settle the batch if the error is
    /// healable, else return it.
    pub(super) fn recover(&mut self, error: EngineError) -> Result<(), EngineError> {
        if !self.may_recover(&error) {
            return Err(error);
        }
        tracing::warn!(%error, "Re-creating the producer to settle the failed transaction.");
        self.renew("a commit or abort failed")?;
        if let Some((mut span, to_committed)) = self.state.recovered() {
            span.to_committed = to_committed;
            self.consecutive_aborts += 1;
            self.outcomes.push(Outcome::Aborted { rewind: span });
        }
        self.commit_started = None;
        self.held_pending = false;
        Ok(())
    }

    /// Renews now (an abort failed); on failure nothing commits any more.
    pub(super) fn renew_now(&mut self, why: &'static str) -> Result<(), EngineError> {
        let result = self.renew(why);
        if result.is_err() {
            self.state.fail();
        }
        result
    }

    /// Whether `error` may be settled by a renewal now.
    pub(super) fn may_recover(&self, error: &EngineError) -> bool {
        healable(error) && !Broken::NoRecreate.active() && self.renewals < MAX_RENEWALS
    }

    /// Replaces the producer and its commit thread by new ones with the same transactional id,
    /// once the new one's `init_transactions` has succeeded. An init that fails with a healable
    /// error or hangs (the coordinator is moving too) is tried again with another new producer,
    /// within [`MAX_RENEWALS`].
    fn renew(&mut self, why: &'static str) -> Result<(), EngineError> {
        loop {
            match self.try_renew(why) {
                Ok(()) => return Ok(()),
                Err(error)
                    if self.renewals < MAX_RENEWALS
                        && (healable(&error) || matches!(error, EngineError::InitHung { .. })) =>
                {
                    self.renewals += 1;
                    tracing::warn!(%error, "The new producer could not be initialised; trying \
                        another one.");
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn try_renew(&mut self, why: &'static str) -> Result<(), EngineError> {
        let next = Arc::new(self.producer.recreated()?);
        let reported = self.commits.as_ref().map(CommitThread::reported_flag);
        let mut commits = CommitThread::start_with(Arc::clone(&next), reported)?;
        commits.submit(Job::Init)?;
        let failed = match commits.wait()? {
            Some(Ended::Initialized) => None,
            Some(Ended::Fatal { error, .. }) => Some(error),
            other => Some(EngineError::Internal(format!(
                "an init_transactions ended as {other:?}"
            ))),
        };
        if let Some(error) = failed {
            retire(commits, next);
            return Err(error);
        }
        self.renewals += 1;
        next.count_recreation();
        tracing::warn!(
            why,
            transactional_id = next.transactional_id(),
            generation = next.generation(),
            "Re-created the transactional producer: its init_transactions fenced every late \
             request of the old one."
        );
        let old = std::mem::replace(&mut self.producer, next);
        if let Some(old_commits) = self.commits.replace(commits) {
            retire(old_commits, old);
        }
        Ok(())
    }
}

/// Drops a producer and its commit thread off the worker's thread: closing a producer whose
/// broker is gone can block. (If the thread cannot start, the closure, and so the close, runs
/// here.)
fn retire(commits: CommitThread, producer: Arc<TransactionalProducer>) {
    let _ = std::thread::Builder::new()
        .name("kstage-retired-producer".into())
        .spawn(move || drop((commits, producer)));
}

/// Whether a new producer can heal `error`: a call that timed out or kept failing, a hung call,
/// a lost coordinator, or a producer fatal error of idempotence (not fencing by another
/// producer, not authorization).
fn healable(error: &EngineError) -> bool {
    match error {
        EngineError::RetriesExhausted { .. }
        | EngineError::CommitHung { .. }
        | EngineError::AbortHung { .. } => true,
        EngineError::Kafka { source, .. } => matches!(
            source.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::TimedOutQueue
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::NotCoordinator
                    | RDKafkaErrorCode::CoordinatorNotAvailable
                    | RDKafkaErrorCode::CoordinatorLoadInProgress
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::InvalidTransactionalState
            )
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;

    #[test]
    fn timeouts_and_hangs_are_healable_fencing_is_not() {
        let hung = EngineError::CommitHung {
            transactional_id: "t".into(),
            waited_secs: 20,
        };
        assert!(healable(&hung));
        let exhausted = EngineError::RetriesExhausted {
            operation: "commit_transaction",
            waited_secs: 10,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::OperationTimedOut),
        };
        assert!(healable(&exhausted));
        let sequence = EngineError::Kafka {
            operation: "abort_transaction",
            source: KafkaError::MessageProduction(RDKafkaErrorCode::OutOfOrderSequenceNumber),
        };
        assert!(healable(&sequence));
        let fenced = EngineError::kafka(
            "commit_transaction",
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
            "t",
        );
        assert!(!healable(&fenced));
        let refused = EngineError::kafka(
            "commit_transaction",
            KafkaError::MessageProduction(RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
            "t",
        );
        assert!(!healable(&refused));
        let init_hung = EngineError::InitHung {
            transactional_id: "t".into(),
            waited_secs: 20,
        };
        assert!(
            !healable(&init_hung),
            "a renewal that hangs stops the worker"
        );
    }
}
