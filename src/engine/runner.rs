//! The worker loop: poll, process, batch, commit; rewind after aborts; drain on shutdown.
//!
//! ```text
//!  ┌──► check what the rebalance callbacks left (fatal error, batch to rewind)
//!  │    shutdown requested? ──► commit the open batch, leave the group, return
//!  │    batch due (commit_interval elapsed or max_records_per_txn reached)? ──► commit
//!  │    poll (at most until the batch is due, at most 100 ms)
//!  │      record ──► Topology::process ──► send outputs (inside the transaction)
//!  └──────┘
//! ```
//!
//! In at_most_once mode records are buffered until the batch is due; their offsets are committed
//! first and only then are they processed and produced.
//!
//! Poison records (a topology error) follow the stage's poison policy; under `fail` the open
//! transaction is aborted, so nothing of the batch, and not the record's offset, is committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};

use super::offsets::{self, Batch};
use super::rebalance::StageContext;
use super::record::{self, RecordHandling};
use super::transaction::{CommitOutcome, WorkerStats};
use crate::config::DeliveryMode;
use crate::error::{classify_consumer, EngineError, ErrorClass};
use crate::topology::Topology;

/// The longest a poll blocks, so shutdown is noticed promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// How often a progress line is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// One worker: a consumer (whose context owns the producer) and a topology instance.
pub(crate) struct Worker {
    pub(crate) consumer: BaseConsumer<StageContext>,
    pub(crate) topology: Box<dyn Topology>,
    pub(crate) handling: RecordHandling,
    pub(crate) mode: DeliveryMode,
    pub(crate) commit_interval: Duration,
    pub(crate) max_records_per_txn: usize,
    /// Commit in the background (exactly_once; see [`super::transaction`]).
    pub(crate) pipelined_commits: bool,
    pub(crate) shutdown: Arc<AtomicBool>,
}

impl Worker {
    /// Runs until shutdown is requested (then commits and returns) or a fatal error.
    ///
    /// After an error the open batch may hold part of a record's outputs, so it must never
    /// commit: it is aborted here (best effort; a fenced producer cannot, and the broker or the
    /// next instance aborts it), and the producer side is marked defunct so that the revoke
    /// callback of the consumer's close does not commit it either.
    pub(crate) fn run(mut self) -> Result<WorkerStats, EngineError> {
        let result = self.run_until_stopped();
        if result.is_err() {
            let mut transactions = self.consumer.context().transactions();
            transactions.mark_defunct();
            if let Err(error) = transactions.abort() {
                tracing::warn!(%error, "Could not abort the open transaction after the error.");
            }
        }
        result
    }

    fn run_until_stopped(&mut self) -> Result<WorkerStats, EngineError> {
        let mut buffer: Vec<OwnedMessage> = Vec::new();
        // When the last progress line was logged, and the counters it logged.
        let mut summary = (Instant::now(), WorkerStats::default());
        loop {
            self.handle_callback_results(&mut buffer)?;
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            let wait = match self.until_due() {
                Some(wait) => wait,
                None => {
                    self.commit(&mut buffer, self.pipelined_commits)?;
                    self.summarise_if_due(&mut summary);
                    MAX_POLL_WAIT
                }
            };
            let Some(polled) = self.consumer.poll(wait) else {
                self.summarise_if_due(&mut summary);
                continue;
            };
            if self.consumer.context().pending().rewind.is_some() {
                // Polled after a callback aborted the batch: it will be read again after the
                // rewind at the top of the loop.
                continue;
            }
            match polled {
                Ok(message) if self.mode == DeliveryMode::AtMostOnce => {
                    note_consumed(&self.consumer, &message)?;
                    buffer.push(message.detach());
                }
                Ok(message) => {
                    let outcome = record::handle(
                        &mut *self.topology,
                        &self.handling,
                        &self.consumer,
                        &message,
                        true,
                    );
                    self.on_processed(outcome)?;
                }
                Err(error) => match classify_consumer(&error) {
                    ErrorClass::Fatal => return Err(EngineError::kafka("consuming", error, "")),
                    _ => {
                        tracing::warn!(%error, "The consumer reported an error; it keeps retrying.")
                    }
                },
            }
        }
        tracing::info!("Shutting down: committing the open batch.");
        self.commit(&mut buffer, false)?;
        let transactions = self.consumer.context().transactions();
        transactions.drain()?;
        let stats = transactions.stats;
        drop(transactions);
        self.log_summary(summary.1);
        // Dropping the consumer closes it: it leaves the group (revoking with nothing open).
        Ok(stats)
    }

    /// Under poison policy `fail`, a poison record aborts the open batch before the stage stops.
    fn on_processed(&self, outcome: Result<(), EngineError>) -> Result<(), EngineError> {
        if let Err(error @ (EngineError::Poison { .. } | EngineError::Unavailable { .. })) = outcome
        {
            if let Err(abort_error) = self.consumer.context().transactions().abort() {
                tracing::error!(error = %abort_error, "Aborting the open transaction failed.");
            }
            return Err(error);
        }
        outcome
    }

    /// Acts on what the rebalance callbacks left: a fatal error, or a batch to rewind from.
    fn handle_callback_results(
        &mut self,
        buffer: &mut Vec<OwnedMessage>,
    ) -> Result<(), EngineError> {
        let (fatal, rewind) = {
            let mut pending = self.consumer.context().pending();
            (pending.fatal.take(), pending.rewind.take())
        };
        if let Some(error) = fatal {
            return Err(error);
        }
        if let Some(batch) = rewind {
            self.rewind(buffer, &batch)?;
        }
        // Pipelined: a commit in flight that has ended begins the next transaction with the held
        // outputs, or, if it failed, rewinds. Wait for it if the held batch is full. (Without
        // pipelining no commit is ever in flight here: no lock per record for it.)
        if self.pipelined_commits {
            let settled = {
                let mut transactions = self.consumer.context().transactions();
                let wait = transactions.held_full();
                transactions.settle(wait)?
            };
            if let Some(CommitOutcome::Aborted(batch)) = settled {
                self.rewind(buffer, &batch)?;
            }
        }
        // at_most_once: a revoke committed the buffered records' offsets; produce them now.
        if !buffer.is_empty() && !self.consumer.context().transactions().is_open() {
            self.produce_buffer(buffer)?;
        }
        Ok(())
    }

    /// How long the next poll may wait: `None` when the open batch is due (its
    /// `commit_interval` has elapsed or it holds `max_records_per_txn` records). One clock read
    /// per record while a batch is open, none otherwise.
    fn until_due(&self) -> Option<Duration> {
        let transactions = self.consumer.context().transactions();
        let Some(batch) = transactions.batch() else {
            return Some(MAX_POLL_WAIT);
        };
        if batch.records >= self.max_records_per_txn {
            return None;
        }
        let left = (batch.started + self.commit_interval).checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| left.min(MAX_POLL_WAIT))
    }

    /// Commits the open batch; after an abort, rewinds. In at_most_once mode, produces the
    /// buffered records once their offsets are committed. `in_background`: in exactly_once mode,
    /// return while the transaction commits (see the pipelined commits in
    /// [`super::transaction`]); otherwise return when it is done.
    fn commit(
        &mut self,
        buffer: &mut Vec<OwnedMessage>,
        in_background: bool,
    ) -> Result<(), EngineError> {
        let outcome = {
            let mut transactions = self.consumer.context().transactions();
            if in_background {
                transactions.commit_in_background(&self.consumer)?
            } else {
                transactions.commit(&self.consumer)?
            }
        };
        match outcome {
            CommitOutcome::Committed => self.produce_buffer(buffer),
            CommitOutcome::Aborted(batch) => self.rewind(buffer, &batch),
        }
    }

    /// After an abort: drops what at_most_once buffered and seeks back to the committed offsets.
    fn rewind(&self, buffer: &mut Vec<OwnedMessage>, aborted: &Batch) -> Result<(), EngineError> {
        buffer.clear();
        offsets::rewind(&self.consumer, aborted)
    }

    fn produce_buffer(&mut self, buffer: &mut Vec<OwnedMessage>) -> Result<(), EngineError> {
        for message in buffer.drain(..) {
            let outcome = record::handle(
                &mut *self.topology,
                &self.handling,
                &self.consumer,
                &message,
                false,
            );
            self.on_processed(outcome)?;
        }
        Ok(())
    }

    /// Logs a progress line if the last one is [`SUMMARY_EVERY`] old. Called after commits and
    /// empty polls, not per record.
    fn summarise_if_due(&self, summary: &mut (Instant, WorkerStats)) {
        if summary.0.elapsed() >= SUMMARY_EVERY {
            *summary = (Instant::now(), self.log_summary(summary.1));
        }
    }

    fn log_summary(&self, before: WorkerStats) -> WorkerStats {
        let now = self.consumer.context().transactions().stats;
        let rebalances = self.consumer.context().pending().rebalances;
        tracing::info!(
            records_in = now.records_in,
            records_out = now.records_out,
            commits = now.commits,
            aborts = now.aborts,
            skipped = now.skipped,
            dead_lettered = now.dead_lettered,
            rebalances,
            records_in_since_last = now.records_in - before.records_in,
            "Stage progress."
        );
        now
    }
}

fn note_consumed(
    consumer: &BaseConsumer<StageContext>,
    message: &BorrowedMessage<'_>,
) -> Result<(), EngineError> {
    let size = message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len);
    consumer.context().transactions().record_consumed(
        message.topic(),
        message.partition(),
        message.offset(),
        size,
    )
}
