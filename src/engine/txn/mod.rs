//! The transaction of one worker: its state machine, its producer, its commit thread, and the
//! one handle through which the rebalance callbacks reach it.
//!
//! ```text
//!   worker (per record, no lock) ──► WorkerTxn: tally, phase cache, send / hold outputs
//!          (per batch, lock)      ──► TxnHandle ─► TxnCore: TxnState + producer + CommitThread
//!   rebalance callback (in poll)  ──► TxnHandle ─► TxnCore::revoke   (commit, abort, settle)
//!                                      └─ outcomes + "acted" flag ──► worker, after the poll
//! ```
//!
//! * [`state`]: the pure state machine (Idle, Open, Committing, InDoubt, Defunct).
//! * [`producer`]: the producer, sends with provenance headers, delivery tracking.
//! * [`commit`]: the long-lived commit thread, the commit phases and the watchdog.
//! * [`modes`]: what a commit is in each delivery mode.
//! * [`log`]: the producer's librdkafka log bridge and `TXNERR` capture.
//! * [`worker`]: the worker's side: tallies, held outputs, outcomes into stats and metrics.
//! * [`held`]: held outputs and the rejected record the worker keeps aside.
//! * [`renew`]: re-creating the producer (same transactional id, new epoch) after a retried,
//!   timed-out or hung transactional call, and settling the failed batch with it.
//!
//! Invariants (each enforced where named):
//! * A batch whose commit outcome is unknown is never aborted ([`state::TxnState::InDoubt`]);
//!   a re-created producer's `init_transactions` settles it, and the committed offsets say
//!   which way it went ([`renew`]).
//! * No transaction begins on a producer that needed a retry of a transactional call or saw a
//!   coordinator request time out since it was created: it is re-created first, so a late
//!   EndTxn of the old epoch is fenced (KAFKA-17754, librdkafka#5423; [`renew`]).
//! * Every transactional call is bounded: `init_transactions`, `send_offsets_to_transaction`,
//!   `commit_transaction` and `abort_transaction` by a deadline and a watchdog ([`commit`]),
//!   each with its consequence (a re-created producer, or a stop with the batch in doubt).
//! * Nothing commits after a fatal error ([`state::TxnState::Defunct`]), nor while the thread
//!   unwinds from a panic ([`TxnCore::revoke`] checks `std::thread::panicking`).
//! * Offsets sent are the consumer's positions of exactly the partitions the batch read
//!   ([`modes`]); every delivery is awaited before `commit_transaction` ([`commit`]).
//! * Retriable errors repeat the same call; abortable errors abort once and rewind; anything
//!   else stops the worker ([`crate::error::classify`]). [`MAX_CONSECUTIVE_ABORTS`] aborts in a
//!   row stop it too, so an error that fails every transaction cannot loop forever.
//! * Callbacks run only inside `poll`, on the worker's thread; the worker checks the `acted`
//!   flag after every poll, so its cached phase is never stale while it processes a record.

mod commit;
mod held;
mod log;
mod modes;
mod producer;
mod renew;
mod search;
pub(crate) mod state;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

pub(crate) use commit::WATCHDOG_FACTOR;
pub(crate) use producer::TransactionalProducer;
pub use worker::WorkerStats;
pub(crate) use worker::WorkerTxn;

use crate::config::DeliveryMode;
use crate::error::EngineError;
use commit::{CommitThread, Ended, Job};
use state::{Abort, CommitEnd, Illegal, OnRecord, Revoke, Settled, Span, TxnState};

/// Aborts in a row (no commit in between) after which the worker stops.
const MAX_CONSECUTIVE_ABORTS: u32 = 20;

/// What happened to a batch, for the worker's counters and its rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The oldest batch not yet settled committed.
    Committed { elapsed: Duration },
    /// Every unsettled batch was aborted: rewind this span.
    Aborted { rewind: Span },
    /// The held batch was dropped before its transaction began (its partitions were revoked
    /// while the commit before it ran): rewind this span.
    Dropped { rewind: Span },
}

/// The shared part of a worker's transaction: what the rebalance callbacks need.
#[derive(Debug)]
pub(crate) struct TxnHandle {
    core: Mutex<TxnCore>,
    /// Set by a callback that changed the transaction; read by the worker after each poll.
    acted: AtomicBool,
    /// Set by the commit thread when a job has ended (exactly_once).
    commit_reported: Option<Arc<AtomicBool>>,
}

impl TxnHandle {
    pub(crate) fn new(producer: Arc<TransactionalProducer>) -> Result<Self, EngineError> {
        let commits = match producer.mode() {
            DeliveryMode::ExactlyOnce => Some(CommitThread::start(Arc::clone(&producer))?),
            _ => None,
        };
        let commit_reported = commits.as_ref().map(CommitThread::reported_flag);
        Ok(Self {
            core: Mutex::new(TxnCore {
                state: TxnState::Idle,
                producer,
                commits,
                failed_at_open: 0,
                consecutive_aborts: 0,
                commit_started: None,
                outcomes: Vec::new(),
                fatal: None,
                held_pending: false,
                renew: None,
                renewals: 0,
            }),
            acted: AtomicBool::new(false),
            commit_reported,
        })
    }

    /// The core, locked. Only the worker's thread locks it (the callbacks run there too), so it
    /// is never contended; a poisoned lock is recovered because every transition leaves a
    /// valid state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, TxnCore> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A rebalance takes partitions away (called from the consumer's callback).
    pub(crate) fn revoke<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: usize,
        lost: bool,
    ) {
        let mut core = self.lock();
        if !core.state.is_open() && !matches!(core.state, TxnState::Defunct(Some(_))) {
            tracing::info!(
                partitions,
                lost,
                "Partitions revoked; no transaction was open."
            );
            return;
        }
        if let Err(error) = core.revoke(consumer, lost) {
            core.state.fail();
            core.fatal = Some(error);
        }
        self.acted.store(true, Ordering::Release);
    }

    /// Whether the commit thread has reported the end of its job (lock-free).
    pub(crate) fn commit_reported(&self) -> bool {
        self.commit_reported
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    /// Whether a callback acted since the last call (clears the flag).
    pub(crate) fn take_acted(&self) -> bool {
        self.acted.swap(false, Ordering::Acquire)
    }
}

/// The transaction proper: state, producer, commit thread. Every method runs with the lock held.
#[derive(Debug)]
pub(crate) struct TxnCore {
    state: TxnState,
    producer: Arc<TransactionalProducer>,
    /// The commit thread (exactly_once).
    commits: Option<CommitThread>,
    /// Failed deliveries counted when the open batch began: a failure after that aborts it.
    failed_at_open: u64,
    consecutive_aborts: u32,
    /// When the commit in flight started.
    commit_started: Option<Instant>,
    /// What happened since the worker last took them.
    outcomes: Vec<Outcome>,
    /// A fatal error met in a callback, for the worker.
    fatal: Option<EngineError>,
    /// The held batch's transaction began and the worker has not sent its held outputs yet:
    /// it must not commit before it has.
    held_pending: bool,
    /// Why the producer must be re-created before the next transaction begins ([`renew`]).
    renew: Option<&'static str>,
    /// Re-creations since the last commit ([`renew::MAX_RENEWALS`]).
    renewals: u32,
}

fn illegal(error: Illegal) -> EngineError {
    EngineError::Internal(format!("transaction state machine: {error}"))
}

impl TxnCore {
    /// The worker's per-record phase as of now.
    pub(crate) fn phase(&self) -> OnRecord {
        self.state.phase()
    }

    /// The producer as of now (a re-creation replaces it).
    pub(crate) fn producer(&self) -> &Arc<TransactionalProducer> {
        &self.producer
    }

    /// Takes what happened since the last call.
    pub(crate) fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Takes the fatal error a callback met.
    pub(crate) fn take_fatal(&mut self) -> Option<EngineError> {
        self.fatal.take()
    }

    /// The worker has sent the held outputs into the transaction that began for them.
    pub(crate) fn held_sent(&mut self) {
        self.held_pending = false;
    }

    /// A record of a partition new to the batch (or the first of a batch): begins the
    /// transaction when none is open. `consumed: false`: no record, only wall-clock timers of
    /// the partition fire in the batch.
    pub(crate) fn record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        consumed: bool,
    ) -> Result<OnRecord, EngineError> {
        let step = self
            .state
            .record_with(topic, partition, offset, consumed)
            .map_err(illegal)?;
        if step == OnRecord::Begin {
            self.begin()?;
            return Ok(OnRecord::Send);
        }
        Ok(step)
    }

    fn begin(&mut self) -> Result<(), EngineError> {
        if let Err(error) = self.renew_if_needed() {
            self.state.fail();
            return Err(error);
        }
        if let Err(error) = self.producer.begin() {
            self.state.fail();
            return Err(error);
        }
        self.failed_at_open = self.producer.failed_deliveries();
        Ok(())
    }

    /// A fatal error elsewhere: the open batch must never commit.
    pub(crate) fn fail(&mut self) {
        self.state.fail();
    }

    /// Commits the open batch. `wait`: return when it has ended; otherwise (exactly_once,
    /// pipelined) return while it commits. A commit still in flight is settled first.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        wait: bool,
    ) -> Result<(), EngineError> {
        self.finish_commit(false)?;
        if self.held_pending {
            return Err(EngineError::Internal(
                "a commit was asked for before the held outputs were sent".into(),
            ));
        }
        match self.state {
            // Never committed: a defunct batch is aborted instead, one in doubt left alone.
            TxnState::Defunct(_) => return self.abort(),
            TxnState::InDoubt(_) => return Ok(()),
            _ => {}
        }
        let Some(span) = self.state.start_commit().map_err(illegal)? else {
            return Ok(());
        };
        self.commit_started = Some(Instant::now());
        match &mut self.commits {
            Some(commits) => {
                let submitted = match modes::transaction_offsets(consumer, &span, &self.producer) {
                    Ok(modes::Prepared::Offsets(offsets)) => {
                        commits.submit(Job::Commit { offsets })
                    }
                    Ok(modes::Prepared::Abort) => {
                        return self.ended(CommitEnd::Abortable, None, false)
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = submitted {
                    return self.never_started(error);
                }
                if wait {
                    self.settle(true, false)?;
                }
                Ok(())
            }
            None => {
                match modes::commit_consumer_offsets(
                    consumer,
                    &span,
                    &self.producer,
                    self.failed_at_open,
                ) {
                    Ok(end) => self.ended(end, None, false),
                    Err(error) => self.never_started(error),
                }
            }
        }
    }

    /// A commit that failed before any transactional call: its outcome is known (nothing was
    /// committed), so the batch may still be aborted, but never committed.
    fn never_started(&mut self, error: EngineError) -> Result<(), EngineError> {
        self.commit_started = None;
        self.state
            .commit_ended(CommitEnd::Fatal { in_doubt: false })
            .map_err(illegal)?;
        Err(error)
    }

    /// Ends the commit in flight, waiting for it: afterwards the state is not Committing.
    pub(crate) fn finish_commit(&mut self, at_revoke: bool) -> Result<(), EngineError> {
        if !matches!(self.state, TxnState::Committing { .. }) {
            return Ok(());
        }
        let running = self.commits.as_ref().is_some_and(CommitThread::is_running);
        if !running {
            return self.never_started(EngineError::Internal(
                "a commit was in flight without a job on the commit thread".into(),
            ));
        }
        self.settle(true, at_revoke)
    }

    /// Ends the commit in flight if it has ended (or `wait`). `at_revoke`: a held batch is
    /// dropped instead of begun.
    pub(crate) fn settle(&mut self, wait: bool, at_revoke: bool) -> Result<(), EngineError> {
        let Some(commits) = &mut self.commits else {
            return Ok(());
        };
        let ended = if wait {
            commits.wait()?
        } else {
            commits.try_ended()?
        };
        let Some(ended) = ended else {
            return Ok(());
        };
        let (end, error) = match ended {
            Ended::Committed { retried } => {
                if retried {
                    self.renew_before_next("a commit phase was retried");
                }
                (CommitEnd::Committed, None)
            }
            Ended::Abortable { operation, error } => {
                match &error {
                    Some(error) => {
                        tracing::warn!(%error, "{operation} failed; aborting the transaction.")
                    }
                    None => tracing::debug!("{operation}: aborting the transaction"),
                }
                (CommitEnd::Abortable, None)
            }
            Ended::Fatal { error, in_doubt } => (CommitEnd::Fatal { in_doubt }, Some(error)),
            Ended::Aborted { .. } | Ended::Initialized => {
                return Err(EngineError::Internal(format!(
                    "{ended:?} ended where a commit was awaited"
                )))
            }
        };
        self.ended(end, error, at_revoke)
    }

    /// Applies a commit's end to the state and acts on what it asks.
    fn ended(
        &mut self,
        end: CommitEnd,
        error: Option<EngineError>,
        at_revoke: bool,
    ) -> Result<(), EngineError> {
        let (settled, dropped) = if at_revoke {
            self.state.commit_ended_at_revoke(end).map_err(illegal)?
        } else {
            (self.state.commit_ended(end).map_err(illegal)?, None)
        };
        match settled {
            Settled::Committed { begin_next } => {
                self.consecutive_aborts = 0;
                self.renewals = 0;
                let elapsed = self
                    .commit_started
                    .take()
                    .map_or(Duration::ZERO, |s| s.elapsed());
                self.outcomes.push(Outcome::Committed { elapsed });
                if let Some(rewind) = dropped {
                    self.outcomes.push(Outcome::Dropped { rewind });
                }
                if begin_next {
                    self.begin()?;
                    self.held_pending = true;
                }
                Ok(())
            }
            Settled::MustAbort => self.abort(),
            // In doubt or defunct: a re-created producer settles the batch, if it may.
            Settled::Failed => self.recover(error.unwrap_or_else(|| {
                EngineError::Internal("a commit failed without an error".into())
            })),
        }
    }

    /// Aborts the open batch (exactly_once: its transaction) and leaves it to be rewound. A
    /// commit in flight is settled first; if it failed, its abort covers the open batch too.
    pub(crate) fn abort(&mut self) -> Result<(), EngineError> {
        if matches!(self.state, TxnState::Committing { .. }) {
            // An abortable end aborts in here; a fatal one is the error.
            self.finish_commit(false)?;
            return self.abort();
        }
        self.held_pending = false;
        match self.state.abort().map_err(illegal)? {
            Abort::Nothing => Ok(()),
            Abort::Refused => {
                tracing::warn!(
                    "The last commit's outcome is unknown; not aborting that transaction."
                );
                Ok(())
            }
            Abort::Rewind(rewind) => {
                if let Some(commits) = &mut self.commits {
                    commits.submit(Job::Abort)?;
                    match commits.wait()? {
                        Some(Ended::Aborted { retried: true }) => {
                            self.renew_before_next("abort_transaction was retried");
                        }
                        Some(Ended::Aborted { retried: false }) | None => {}
                        // The new producer's init aborts the transaction for sure.
                        Some(Ended::Fatal { error, .. }) if self.may_recover(&error) => {
                            tracing::warn!(%error, "Re-creating the producer to abort the transaction.");
                            self.renew_now("abort_transaction failed")?;
                        }
                        Some(Ended::Fatal { error, .. }) => {
                            self.state.fail();
                            return Err(error);
                        }
                        Some(other) => {
                            return Err(EngineError::Internal(format!(
                                "an abort ended as {other:?}"
                            )))
                        }
                    }
                }
                self.commit_started = None;
                self.outcomes.push(Outcome::Aborted { rewind });
                self.consecutive_aborts += 1;
                if self.consecutive_aborts >= MAX_CONSECUTIVE_ABORTS {
                    return Err(EngineError::AbortLoop {
                        aborts: self.consecutive_aborts,
                        last: self
                            .producer
                            .last_delivery_error()
                            .unwrap_or_else(|| "see the log above".into()),
                    });
                }
                Ok(())
            }
        }
    }

    /// A rebalance takes partitions away: commit the open batch while this member still owns
    /// them, or abort it when they are lost or the thread unwinds from a panic.
    fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        lost: bool,
    ) -> Result<(), EngineError> {
        let unwinding = std::thread::panicking();
        loop {
            match self.state.revoke(lost, unwinding) {
                Revoke::Nothing => return Ok(()),
                Revoke::Settle => self.finish_commit(true)?,
                Revoke::Commit => {
                    tracing::info!("Partitions revoked; committing the open transaction first.");
                    return self.commit(consumer, true);
                }
                Revoke::Abort => {
                    if unwinding {
                        tracing::error!(
                            "The worker is unwinding from a panic; aborting the open transaction."
                        );
                    } else {
                        tracing::warn!("Partitions lost; aborting the open transaction.");
                    }
                    return self.abort();
                }
            }
        }
    }
}
