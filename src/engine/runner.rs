//! The worker loop: poll, process, batch, commit; rewind after aborts; drain on shutdown.
//!
//! ```text
//!  ┌──► pipelined: settle the commit in flight if it ended; at_most_once: produce what a
//!  │    revoke committed
//!  │    shutdown requested? ──► commit the open batch, drain deliveries, return
//!  │    stateful with wall-clock timers: fire the due ones (see `txn::worker_state`)
//!  │    commit policy says "commit now"? ──► commit        (see [`super::policy`])
//!  │    poll (at most as long as the policy says, at most 100 ms)
//!  │      a rebalance callback acted? ──► its fatal error stops; its abort rewinds
//!  │      record ──► record::process ──► WorkerTxn: note, send outputs (inside the transaction)
//!  └──────┘
//! ```
//!
//! In at_most_once mode records are processed as they are polled, but their outputs are held
//! until the batch's offsets are committed (see [`super::txn`]).
//!
//! Any error stops the worker: [`Worker::run`] then marks the transaction defunct and aborts it,
//! so the revoke callback of the consumer's close cannot commit a partial batch. A panic in the
//! topology unwinds through the same close, whose revoke callback aborts (it checks
//! `std::thread::panicking`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use super::offsets;
use super::policy::{BatchView, CommitTiming, Decision, MAX_POLL_WAIT};
use super::rebalance::StageContext;
use super::record::{self, Processed, RecordHandling};
use super::txn::state::Span;
use super::txn::{WorkerStats, WorkerTxn};
use crate::error::{classify_consumer, EngineError, ErrorClass};
use crate::topology::{Context, Topology, TopologyError};

/// How often a progress line is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// One worker: a consumer, its transaction and a topology instance. The consumer is declared
/// first so that it is dropped (closed, running its last revoke) while the transaction lives.
pub(crate) struct Worker {
    pub(crate) consumer: BaseConsumer<StageContext>,
    pub(crate) txn: WorkerTxn,
    pub(crate) topology: Box<dyn Topology>,
    pub(crate) handling: RecordHandling,
    /// When to close the open batch.
    pub(crate) timing: CommitTiming,
    /// The last poll returned nothing (the consumer had no record ready).
    pub(crate) input_idle: bool,
    /// Commit in the background (exactly_once; see [`super::txn`]).
    pub(crate) pipelined_commits: bool,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Rebalances seen when the revoked partitions were last taken (stateful topologies).
    pub(crate) rebalances_seen: u64,
}

impl Worker {
    /// Runs until shutdown is requested (then commits and returns) or a fatal error.
    pub(crate) fn run(mut self) -> Result<WorkerStats, EngineError> {
        let result = self.run_until_stopped();
        if result.is_err() {
            self.txn.fail();
        }
        result
    }

    fn run_until_stopped(&mut self) -> Result<WorkerStats, EngineError> {
        // When the last progress line was logged, and the counters it logged.
        let mut summary = (Instant::now(), WorkerStats::default());
        loop {
            match self.step(&mut summary) {
                Ok(true) => {}
                Ok(false) => break,
                Err(EngineError::SendRefused { reason }) => {
                    tracing::warn!(
                        reason,
                        "The transaction failed in the background; aborting and rewinding."
                    );
                    if let Some(span) = self.txn.abort()? {
                        self.rewind(&span)?;
                    }
                }
                Err(error) => return Err(error),
            }
        }
        tracing::info!("Shutting down: committing the open batch.");
        self.commit(false)?;
        self.txn.drain()?;
        if let Some(stateful) = self.topology.as_stateful() {
            stateful.on_close();
        }
        let stats = self.txn.stats;
        self.log_summary(summary.1);
        // Dropping the consumer closes it: it leaves the group (revoking with nothing open).
        Ok(stats)
    }

    /// One turn of the loop; `false` once shutdown is requested.
    fn step(&mut self, summary: &mut (Instant, WorkerStats)) -> Result<bool, EngineError> {
        self.between_polls()?;
        // With `fault-injection`, `FAILPOINTS=kstage::worker_step=<n>*off->1*panic` makes a worker
        // thread panic outside user code (the test of a panicking worker stopping the stage).
        fail::fail_point!("kstage::worker_step");
        for took in self.txn.take_commit_times() {
            self.timing.commit_took(took);
        }
        if self.shutdown.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Before the poll, so that the consumer's positions are where the next record begins.
        self.txn
            .fire_wall_timers(&self.consumer, &mut *self.topology, &self.handling)?;
        let wait = match self.until_due() {
            Some(wait) => wait,
            None => {
                self.commit(self.pipelined_commits)?;
                self.summarise_if_due(summary);
                MAX_POLL_WAIT
            }
        };
        let polled = self.consumer.poll(wait);
        self.input_idle = polled.is_none();
        if let Some(span) = self.txn.after_poll()? {
            // A callback aborted the batch: the record polled after it is read again after the
            // rewind.
            drop(polled);
            self.rewind(&span)?;
            return Ok(true);
        }
        close_revoked_stores(
            &self.consumer,
            &mut self.txn,
            &mut *self.topology,
            &mut self.rebalances_seen,
        );
        match polled {
            None => self.summarise_if_due(summary),
            Some(Ok(message)) => {
                let record = record::record_of(&message);
                if !state_ready(
                    &self.consumer,
                    &mut self.txn,
                    &mut *self.topology,
                    &record.context,
                )? {
                    return Ok(true);
                }
                let processed = match self.txn.rejected(&record.context) {
                    Some(reason) => record::poison(
                        &self.handling,
                        &record,
                        TopologyError::output_rejected(reason),
                    )?,
                    None => record::process(
                        &mut *self.topology,
                        &self.handling,
                        &record,
                        self.txn.state.as_mut(),
                    )?,
                };
                let context = record.context;
                let size = record::record_size(&record);
                self.txn
                    .record(context.topic, context.partition, context.offset, size)?;
                send(&mut self.txn, &self.handling, processed, &context)?;
                self.txn.send_changelog()?;
            }
            Some(Err(error)) => match classify_consumer(&error) {
                ErrorClass::Fatal => return Err(EngineError::kafka("consuming", error, "")),
                _ => tracing::warn!(%error, "The consumer reported an error; it keeps retrying."),
            },
        }
        Ok(true)
    }

    /// Pipelined: a commit in flight that has ended begins the next transaction with the held
    /// outputs, or, if it failed, rewinds; it is waited for when the held batch is full.
    fn between_polls(&mut self) -> Result<(), EngineError> {
        if self.pipelined_commits {
            let wait = self.txn.held_full();
            if let Some(span) = self.txn.settle(wait)? {
                self.rewind(&span)?;
            }
        }
        Ok(())
    }

    /// How long the next poll may wait: `None` when the open batch is to be committed now (the
    /// commit policy says so, or it holds the most records a search for a rejected output
    /// allows). One clock
    /// read per turn while a batch is open, none otherwise.
    fn until_due(&self) -> Option<Duration> {
        let view = self.txn.batch().map(|batch| BatchView {
            records: batch.records,
            age: batch.started.elapsed(),
            commit_in_flight: self.txn.commit_in_flight(),
            input_idle: self.input_idle,
        });
        // While a rejected output is searched for, batches are capped below the policy's sizes.
        if view
            .as_ref()
            .is_some_and(|view| view.records >= self.txn.batch_limit(usize::MAX))
        {
            return None;
        }
        match self.timing.decide(view) {
            Decision::Commit => None,
            Decision::Poll(wait) => Some(wait),
        }
    }

    /// Commits the open batch; after an abort, rewinds. `in_background`: in exactly_once mode,
    /// return while the transaction commits.
    fn commit(&mut self, in_background: bool) -> Result<(), EngineError> {
        match self.txn.commit(&self.consumer, !in_background)? {
            Some(span) => self.rewind(&span),
            None => Ok(()),
        }
    }

    /// After an abort: seeks back to where the aborted batch began.
    fn rewind(&self, aborted: &Span) -> Result<(), EngineError> {
        offsets::rewind(&self.consumer, aborted)
    }

    /// Logs a progress line if the last one is [`SUMMARY_EVERY`] old. Called after commits and
    /// empty polls, not per record.
    fn summarise_if_due(&self, summary: &mut (Instant, WorkerStats)) {
        if summary.0.elapsed() >= SUMMARY_EVERY {
            *summary = (Instant::now(), self.log_summary(summary.1));
        }
    }

    fn log_summary(&self, before: WorkerStats) -> WorkerStats {
        let now = self.txn.stats;
        tracing::info!(
            records_in = now.records_in,
            records_out = now.records_out,
            commits = now.commits,
            aborts = now.aborts,
            skipped = now.skipped,
            dead_lettered = now.dead_lettered,
            rebalances = self.consumer.context().rebalances(),
            records_in_since_last = now.records_in - before.records_in,
            "Stage progress."
        );
        now
    }
}

/// Stateful: makes the record's partition ready, restoring its state first if this worker does
/// not hold it yet. The restore runs between transactions: the open batch is committed first.
/// `false` when that commit aborted: the batch is rewound and the record is read again.
fn state_ready<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    txn: &mut WorkerTxn,
    topology: &mut dyn Topology,
    context: &Context<'_>,
) -> Result<bool, EngineError> {
    let Some(state) = &mut txn.state else {
        return Ok(true);
    };
    if state.select(context.topic, context.partition) {
        return Ok(true);
    }
    if let Some(span) = txn.commit(consumer, true)? {
        offsets::rewind(consumer, &span)?;
        offsets::seek_to(consumer, context.topic, context.partition, context.offset)?;
        return Ok(false);
    }
    if let Some(state) = &mut txn.state {
        state.open(context.topic, context.partition)?;
    }
    if let Some(stateful) = topology.as_stateful() {
        stateful.on_assigned(context.topic, context.partition);
    }
    Ok(true)
}

/// Stateful: after a rebalance, closes the stores of the partitions it took away (their last
/// transaction has ended: the revoke callback committed or aborted it).
fn close_revoked_stores(
    consumer: &BaseConsumer<StageContext>,
    txn: &mut WorkerTxn,
    topology: &mut dyn Topology,
    seen: &mut u64,
) {
    let now = consumer.context().rebalances();
    if now == *seen {
        return;
    }
    *seen = now;
    let revoked = consumer.context().take_revoked();
    if let Some(state) = &mut txn.state {
        state.close(&revoked, topology);
    }
}

/// Sends what processing one record produced: its outputs (with provenance headers), or its
/// dead letter; counts a skipped record.
fn send(
    txn: &mut WorkerTxn,
    handling: &RecordHandling,
    processed: Processed<'_, '_>,
    context: &Context<'_>,
) -> Result<(), EngineError> {
    let Context {
        topic,
        partition,
        offset,
        ..
    } = *context;
    match processed {
        Processed::Outputs(outputs) => {
            let provenance = handling.provenance_headers.then_some(context);
            for (topic, output) in &outputs {
                txn.send(topic, output, provenance)?;
            }
        }
        Processed::Skipped(error) => {
            txn.stats.skipped += 1;
            txn.count_poison("skipped");
            tracing::warn!(topic, partition, offset, error = %error,
                "Skipped a record that cannot be processed.");
        }
        Processed::DeadLetter {
            topic: dead_letter_topic,
            letter,
            error,
        } => {
            txn.send(dead_letter_topic, &letter, Some(context))?;
            txn.stats.dead_lettered += 1;
            txn.count_poison("dead_lettered");
            tracing::warn!(topic, partition, offset, dead_letter_topic, error = %error,
                "Dead-lettered a record that cannot be processed.");
        }
    }
    txn.serve_deliveries();
    Ok(())
}
