//! The commit thread: one long-lived thread per exactly_once worker that runs the blocking
//! transactional calls (`init_transactions`, the commit phases, aborts) while the worker waits
//! for it with a watchdog, or, with pipelined commits, goes on reading.
//!
//! ```text
//!   worker ── Job::Init ───────────────────────────────► init_transactions
//!   worker ── Job::Commit{positions, group metadata} ──► commit thread:
//!                                                          send_offsets_to_transaction
//!                                                          ──► await deliveries
//!                                                          ──► commit_transaction
//!   worker ◄──────────────────── Ended ────────────────── (one report per job)
//!   worker ── Job::Abort ──────────────────────────────► await deliveries ──► abort_transaction
//! ```
//!
//! Invariants:
//! * At most one job is in flight ([`CommitThread::submit`] refuses a second).
//! * Every call gets a finite timeout: what is left of its job's deadline, one transaction
//!   timeout from the job's start. Retriable errors repeat the same call until
//!   that deadline; the three commit phases share it. A commit whose outcome stays unknown is
//!   reported in doubt ([`Ended::Fatal`] with `in_doubt`), never turned into an abort: a late
//!   EndTxn could end a later transaction.
//! * Every job's wait is bounded by the watchdog at [`WATCHDOG_FACTOR`] transaction timeouts
//!   from the job's start: the deadline plus room for one call that blocks past its own timeout
//!   (librdkafka#5456, #5511). A job past the bound is given up and the thread left behind
//!   (never joined, so the process can exit): a commit's outcome is then unknown (in doubt,
//!   never aborted), an abort's or an init's too. What the worker does next (re-create the
//!   producer, or stop) is [`super::renew`]'s rule.
//! * Each report says whether the job needed a retry ([`Ended::Committed`], [`Ended::Aborted`]):
//!   a resent EndTxn may still be in flight, so the next transaction needs a new producer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use rdkafka::TopicPartitionList;

use super::producer::TransactionalProducer;
use crate::engine::retry::{retrying_counted, Retried};
use crate::error::{classify, EngineError, ErrorClass};

/// The watchdog's bound, in transaction timeouts: one for the job's own deadline, one for a call
/// that blocks past its timeout.
pub(crate) const WATCHDOG_FACTOR: u32 = 2;

/// Work for the commit thread.
pub(crate) enum Job {
    /// Commit the open transaction: its offsets (unless a broken mode committed them already),
    /// every delivery, then `commit_transaction`.
    Commit {
        offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    },
    /// Abort the open transaction.
    Abort,
    /// `init_transactions` of a new producer: fences the old epoch and settles (completes or
    /// aborts) the transaction it left open.
    Init,
}

/// Which job is in flight, for the watchdog's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Commit,
    Abort,
    Init,
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// `retried`: a phase needed more than one call.
    Committed { retried: bool },
    /// `retried`: abort_transaction needed more than one call.
    Aborted { retried: bool },
    /// `init_transactions` succeeded.
    Initialized,
    /// An abortable error (or an injected abort): the transaction must be aborted.
    Abortable {
        operation: &'static str,
        error: Option<KafkaError>,
    },
    /// An error that aborting cannot fix. `in_doubt`: commit_transaction's outcome is unknown.
    Fatal { error: EngineError, in_doubt: bool },
}

/// The commit thread of one worker and the job it runs.
pub(crate) struct CommitThread {
    jobs: Option<SyncSender<Job>>,
    ended: Receiver<Ended>,
    /// The job in flight: when it started and what it is.
    running: Option<(Instant, Kind)>,
    /// The watchdog's bound.
    limit: Duration,
    transactional_id: String,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread once it has reported a job's end: the worker checks it without a lock.
    reported: Arc<AtomicBool>,
}

impl std::fmt::Debug for CommitThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitThread")
            .field("running", &self.running)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl CommitThread {
    /// Starts the thread. It ends when this handle is dropped (and its job, if any, has ended).
    pub(crate) fn start(producer: Arc<TransactionalProducer>) -> Result<Self, EngineError> {
        Self::start_with(producer, None)
    }

    /// Starts the thread with `reported` as its flag (a re-created producer's thread keeps the
    /// flag the worker's handle already watches).
    pub(crate) fn start_with(
        producer: Arc<TransactionalProducer>,
        reported: Option<Arc<AtomicBool>>,
    ) -> Result<Self, EngineError> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(1);
        let (report, ended) = mpsc::sync_channel(1);
        let limit = producer.transaction_timeout() * WATCHDOG_FACTOR;
        let transactional_id = producer.transactional_id().to_string();
        let reported = reported.unwrap_or_default();
        reported.store(false, Ordering::Release);
        let flag = Arc::clone(&reported);
        let thread = std::thread::Builder::new()
            .name("kstage-commit".into())
            .spawn(move || {
                for job in inbox {
                    let result = match job {
                        Job::Commit { offsets } => commit_phases(&producer, offsets),
                        Job::Abort => {
                            crash_point("kstage::before_abort");
                            match producer.abort_transaction() {
                                Ok(retries) => Ended::Aborted {
                                    retried: retries > 0,
                                },
                                Err(error) => Ended::Fatal {
                                    error,
                                    in_doubt: false,
                                },
                            }
                        }
                        Job::Init => {
                            crash_point("kstage::before_init");
                            match producer.init() {
                                Ok(()) => Ended::Initialized,
                                Err(error) => Ended::Fatal {
                                    error,
                                    in_doubt: false,
                                },
                            }
                        }
                    };
                    // The receiver is gone only if the worker gave the job up as hung.
                    if report.send(result).is_err() {
                        return;
                    }
                    flag.store(true, Ordering::Release);
                }
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the commit thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            ended,
            running: None,
            limit,
            transactional_id,
            thread: Some(thread),
            reported,
        })
    }

    /// The flag the thread sets when it has reported a job's end.
    pub(crate) fn reported_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reported)
    }

    /// Whether a job is in flight.
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Hands a job to the thread.
    pub(crate) fn submit(&mut self, job: Job) -> Result<(), EngineError> {
        if self.running.is_some() {
            return Err(EngineError::Internal(
                "a transactional job was submitted while another was in flight".into(),
            ));
        }
        let kind = match job {
            Job::Commit { .. } => Kind::Commit,
            Job::Abort => Kind::Abort,
            Job::Init => Kind::Init,
        };
        self.reported.store(false, Ordering::Release);
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => {
                self.running = Some((Instant::now(), kind));
                Ok(())
            }
            _ => Err(EngineError::Internal("the commit thread has ended".into())),
        }
    }

    /// The job's end if it has ended; `None` while it runs (or when none is in flight).
    pub(crate) fn try_ended(&mut self) -> Result<Option<Ended>, EngineError> {
        if self.running.is_none() {
            return Ok(None);
        }
        match self.ended.try_recv() {
            Ok(ended) => {
                self.running = None;
                Ok(Some(ended))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(self.panicked()),
        }
    }

    /// Waits for the job in flight, at most until the watchdog's bound since it started.
    /// `Ok(None)` when no job is in flight. A job past the bound is reported as
    /// `Ended::Fatal`, in doubt for a commit; the thread is abandoned.
    pub(crate) fn wait(&mut self) -> Result<Option<Ended>, EngineError> {
        let Some((started, kind)) = self.running else {
            return Ok(None);
        };
        let left = self.limit.saturating_sub(started.elapsed());
        match self.ended.recv_timeout(left) {
            Ok(ended) => {
                self.running = None;
                Ok(Some(ended))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.abandon();
                let waited_secs = self.limit.as_secs();
                let transactional_id = self.transactional_id.clone();
                let error = match kind {
                    Kind::Commit => EngineError::CommitHung {
                        transactional_id,
                        waited_secs,
                    },
                    Kind::Abort => EngineError::AbortHung {
                        transactional_id,
                        waited_secs,
                    },
                    Kind::Init => EngineError::InitHung {
                        transactional_id,
                        waited_secs,
                    },
                };
                Ok(Some(Ended::Fatal {
                    error,
                    in_doubt: kind == Kind::Commit,
                }))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.panicked()),
        }
    }

    /// Gives a hung job up: the thread is left behind, never joined.
    fn abandon(&mut self) {
        self.jobs = None;
        self.thread = None;
        self.running = None;
    }

    fn panicked(&mut self) -> EngineError {
        self.abandon();
        EngineError::Internal("the commit thread panicked".into())
    }
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop; a job in flight ends first.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if self.running.is_none() && thread.join().is_err() {
                tracing::error!("The commit thread panicked.");
            }
        }
    }
}

/// The commit phases of one transaction, on the commit thread.
fn commit_phases(
    producer: &TransactionalProducer,
    offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
) -> Ended {
    let client = producer.client();
    crash_point("kstage::after_produce");
    let begun = Instant::now();
    // One deadline for all three phases: the whole commit retries for at most one transaction
    // timeout, and the watchdog (twice that) leaves room for one call that blocks past it.
    let deadline = begun + producer.transaction_timeout();
    let mut retries = 0;
    if let Some((positions, metadata)) = &offsets {
        if let Err(e) = retrying_counted(
            "send_offsets_to_transaction",
            deadline,
            &mut retries,
            || client.send_offsets_to_transaction(positions, metadata, left(deadline)),
        ) {
            return failed(producer, "send_offsets_to_transaction", e, false);
        }
    }
    let offsets_sent = Instant::now();
    crash_point("kstage::after_send_offsets");
    match producer.await_commit_deliveries(deadline) {
        Ok(None) => {}
        Ok(Some(reason)) => {
            tracing::warn!(
                reason,
                "The transaction failed while its outputs were delivered."
            );
            return Ended::Abortable {
                operation: "awaiting deliveries",
                error: None,
            };
        }
        Err(e) => {
            let waited = producer.transaction_timeout();
            return failed(
                producer,
                "awaiting deliveries",
                Retried::exhausted(e, waited),
                false,
            );
        }
    }
    crash_point("kstage::before_commit");
    if injected_abort() {
        return Ended::Abortable {
            operation: "fail point kstage::inject_abort",
            error: None,
        };
    }
    let delivered = Instant::now();
    match retrying_counted("commit_transaction", deadline, &mut retries, || {
        client.commit_transaction(left(deadline))
    }) {
        Ok(()) => {
            crash_point("kstage::after_commit");
            tracing::trace!(
                offsets_us = micros(offsets_sent - begun),
                deliveries_us = micros(delivered - offsets_sent),
                end_txn_us = micros(delivered.elapsed()),
                "Commit phases."
            );
            Ended::Committed {
                retried: retries > 0,
            }
        }
        Err(e) => failed(producer, "commit_transaction", e, true),
    }
}

/// A failed phase: abortable errors ask for an abort; anything else is fatal, in doubt when it
/// was commit_transaction's.
fn failed(
    producer: &TransactionalProducer,
    operation: &'static str,
    error: Retried,
    commit_call: bool,
) -> Ended {
    match error {
        Retried::Failed(e) if classify(&e) == ErrorClass::Abortable => Ended::Abortable {
            operation,
            error: Some(e),
        },
        error => Ended::Fatal {
            error: producer.fatal(operation, error),
            in_doubt: commit_call,
        },
    }
}

/// What is left of `deadline`, as a call's timeout: never zero (librdkafka would not even send
/// the request) and never infinite (the call must return for the deadline to mean anything).
pub(crate) fn left(deadline: Instant) -> Timeout {
    Timeout::After(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100)),
    )
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A crash point in the commit path: with the `fault-injection` feature and
/// `FAILPOINTS=<name>=return`, the process aborts here as if killed; `<name>=sleep(MS)` makes
/// the call that follows block for that long instead, as a hung librdkafka call would.
fn crash_point(name: &str) {
    let _ = name;
    fail::fail_point!(name, |_| {
        eprintln!("fail point {name}: aborting the process");
        std::process::abort()
    });
}

/// With the `fault-injection` feature and `FAILPOINTS=kstage::inject_abort=30%return`, about that
/// share of transactions is aborted just before commit, as an abortable error would.
fn injected_abort() -> bool {
    fail::fail_point!("kstage::inject_abort", |_| true);
    false
}
