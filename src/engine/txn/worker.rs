//! The worker's side of its transaction: what it does per record without a lock, and how it
//! turns outcomes into counters, metrics, held sends and rewinds.
//!
//! ```text
//!   record ──► tally (records, bytes, partitions) ── a partition new to the batch, or no batch
//!                                                    open? ──► lock: TxnCore::record (begin)
//!   output ──► phase Send: producer.send            phase Hold: copy into `held`
//!   batch due / abort / settle / a callback acted ──► lock: TxnCore ──► outcomes ──► apply
//! ```
//!
//! `phase` caches the state machine's per-record phase. It changes only in calls that hold the
//! lock (here) and in rebalance callbacks, which run inside `poll`; [`WorkerTxn::after_poll`]
//! re-reads it whenever a callback acted, before the polled record is processed.
//!
//! In at_most_once every output is held until its batch's offsets are committed, then sent: a
//! crash between that commit and the sends loses them, which is what at-most-once means; a
//! record that fails (poison under `fail`, an unavailable registry) stops the stage before
//! its batch's offsets commit, so nothing is lost for it.
//!
//! The tallies of unsettled batches are kept oldest first: an outcome `Committed` settles the
//! oldest, `Aborted` all of them, `Dropped` the held one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

use super::held::{owned, HeldOutput, Rejected};
use super::producer::TransactionalProducer;
use super::search::Search;
use super::state::{OnRecord, Span};
use super::{Outcome, TxnHandle};
use crate::config::DeliveryMode;
use crate::engine::offsets::Batch;
use crate::error::EngineError;
use crate::observability::{KindLabel, StageMetrics, TopicLabel, WorkerHealth};
use crate::state::runtime::StateRuntime;
use crate::topology::{Context, OutputRecord};

/// Input records of the held batch after which the worker stops reading and waits for the
/// commit in flight: bounds the memory the held outputs take when a commit is slow.
const MAX_HELD_RECORDS: usize = 20_000;

/// How many records go by between two polls for delivery reports.
const SERVE_DELIVERIES_EVERY: u32 = 256;

/// Per-worker counters, read by the periodic summary and at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Input records processed (and committed or aborted).
    pub records_in: u64,
    /// Output records sent.
    pub records_out: u64,
    /// Transactions (or offset commits) that succeeded.
    pub commits: u64,
    /// Transactions aborted (or batches rewound).
    pub aborts: u64,
    /// Poison records skipped (`poison_policy = "skip"`).
    pub skipped: u64,
    /// Poison records written to the dead-letter topic.
    pub dead_lettered: u64,
}

impl WorkerStats {
    /// Adds another worker's counters.
    pub fn add(&mut self, other: &Self) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.commits += other.commits;
        self.aborts += other.aborts;
        self.skipped += other.skipped;
        self.dead_lettered += other.dead_lettered;
    }
}

/// The worker's side of its transaction.
#[derive(Debug)]
pub(crate) struct WorkerTxn {
    handle: Arc<TxnHandle>,
    producer: Arc<TransactionalProducer>,
    /// The state machine's per-record phase, as of the last locked call.
    phase: OnRecord,
    /// Tallies of the batches sent to commit and not settled yet, oldest first.
    committing: VecDeque<Batch>,
    /// Tally of the open (or held) batch.
    open: Option<Batch>,
    /// Outputs of the held batch.
    held: Vec<HeldOutput>,
    /// An input record whose output the broker rejected for what it is (found in a batch of
    /// its own): when it is read again it is poison (`output_rejected`).
    rejected: Option<Rejected>,
    /// The search for the record whose output the broker rejected (it fails the whole produce
    /// request, so the record is not known yet): batches are capped meanwhile.
    search: Option<Search>,
    /// Records processed since delivery reports were last served.
    unserved: u32,
    /// How long each commit settled since the loop last asked took (for the commit policy).
    commit_times: Vec<Duration>,
    metrics: Arc<StageMetrics>,
    /// This worker's readiness (its open transaction's age).
    health: Arc<WorkerHealth>,
    /// Counters.
    pub(crate) stats: WorkerStats,
    /// The state of a stateful topology: its staged writes follow the outcomes (see
    /// [`crate::state`]: applied on `Committed`, dropped on anything else).
    pub(crate) state: Option<StateRuntime>,
}

impl WorkerTxn {
    pub(crate) fn new(
        handle: Arc<TxnHandle>,
        producer: Arc<TransactionalProducer>,
        metrics: Arc<StageMetrics>,
        health: Arc<WorkerHealth>,
    ) -> Self {
        Self {
            health,
            handle,
            producer,
            phase: OnRecord::Begin,
            committing: VecDeque::new(),
            open: None,
            held: Vec::new(),
            rejected: None,
            search: None,
            unserved: 0,
            commit_times: Vec::new(),
            metrics,
            stats: WorkerStats::default(),
            state: None,
        }
    }

    /// The open batch's tally.
    pub(crate) fn batch(&self) -> Option<&Batch> {
        self.open.as_ref()
    }

    /// Whether a commit is running (pipelined): the open batch is held until it ends.
    pub(crate) fn commit_in_flight(&self) -> bool {
        !self.committing.is_empty()
    }

    /// The durations of the commits settled since the last call, oldest first.
    pub(crate) fn take_commit_times(&mut self) -> impl Iterator<Item = Duration> + '_ {
        self.commit_times.drain(..)
    }

    /// Notes a consumed record; locks only for the first record of a batch or of a partition.
    pub(crate) fn record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        bytes: usize,
    ) -> Result<(), EngineError> {
        let (metrics, health) = (&self.metrics, &self.health);
        let batch = self.open.get_or_insert_with(|| {
            metrics.transaction_opened();
            health.transaction_opened();
            Batch::new(Instant::now())
        });
        let new_partition = batch.note(topic, partition, offset, bytes);
        self.stats.records_in += 1;
        if new_partition || self.phase == OnRecord::Begin {
            self.locked(|core| core.record(topic, partition, offset, true))?;
        }
        Ok(())
    }

    /// Sends one output of the current record, or holds it: while a commit is in flight
    /// (pipelined), and in at_most_once until the batch's offsets are committed.
    pub(crate) fn send(
        &mut self,
        topic: &str,
        record: &OutputRecord<'_>,
        provenance: Option<&Context<'_>>,
    ) -> Result<(), EngineError> {
        let at_most_once = self.producer.mode() == DeliveryMode::AtMostOnce;
        if self.phase == OnRecord::Hold || at_most_once {
            if at_most_once {
                // Counted with the batch whose offsets commit first; sent right after.
                if let Some(batch) = &mut self.open {
                    let size = record.key.as_ref().map_or(0, |k| k.len())
                        + record.value.as_ref().map_or(0, |v| v.len());
                    batch.note_written(topic, size);
                }
            }
            self.held.push(HeldOutput {
                topic: topic.to_string(),
                record: owned(record),
                provenance: provenance
                    .map(|c| (c.topic.to_string(), c.partition, c.offset, c.timestamp)),
            });
            return Ok(());
        }
        self.send_now(topic, record, provenance)
    }

    fn send_now(
        &mut self,
        topic: &str,
        record: &OutputRecord<'_>,
        provenance: Option<&Context<'_>>,
    ) -> Result<(), EngineError> {
        let bytes = self.producer.send(topic, record, provenance)?;
        self.stats.records_out += 1;
        if let Some(batch) = &mut self.open {
            batch.note_written(topic, bytes);
        }
        Ok(())
    }

    /// Counts a poison record (`skipped` or `dead_lettered`) in the metrics.
    pub(crate) fn count_poison(&self, kind: &'static str) {
        self.metrics
            .poison_records
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Serves ready delivery reports every [`SERVE_DELIVERIES_EVERY`] records, so they never
    /// pile up (a full queue, and every commit, serve them too).
    pub(crate) fn serve_deliveries(&mut self) {
        self.unserved += 1;
        if self.unserved >= SERVE_DELIVERIES_EVERY {
            self.unserved = 0;
            self.producer.serve_deliveries();
        }
    }

    /// Whether the worker must wait for the commit in flight before it reads on.
    pub(crate) fn held_full(&self) -> bool {
        self.phase == OnRecord::Hold
            && self
                .open
                .as_ref()
                .is_some_and(|batch| batch.records >= MAX_HELD_RECORDS)
    }

    /// Commits the open batch; `wait`: until it has ended. Returns the span to rewind if the
    /// commit (or the one before it) was aborted.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        wait: bool,
    ) -> Result<Option<Span>, EngineError> {
        // A commit in flight first: its held outputs must be sent before the next one starts.
        let mut rewind = self.settle(true)?;
        if rewind.is_some() {
            return Ok(rewind);
        }
        if let Some(batch) = self.open.take() {
            self.committing.push_back(batch);
        }
        if let Some(state) = self.state.as_mut().filter(|s| s.has_staged()) {
            state.before_commit()?;
        }
        let result = self.locked(|core| core.commit(consumer, wait));
        rewind = merge(rewind, self.apply_outcomes()?);
        result.map(|()| rewind)
    }

    /// Ends the commit in flight if it has ended (or `wait`): a commit begins the held batch's
    /// transaction and sends its held outputs; a failure returns the span to rewind.
    pub(crate) fn settle(&mut self, wait: bool) -> Result<Option<Span>, EngineError> {
        // Lock-free unless a commit is in flight and has ended (or must be waited for).
        if self.committing.is_empty() || !(wait || self.handle.commit_reported()) {
            return Ok(None);
        }
        let result = self.locked(|core| core.settle(wait, false));
        let rewind = self.apply_outcomes()?;
        result.map(|()| rewind)
    }

    /// Aborts the open batch (after a send refused because the transaction had failed);
    /// returns the span to rewind.
    pub(crate) fn abort(&mut self) -> Result<Option<Span>, EngineError> {
        let result = self.locked(|core| core.abort());
        let rewind = self.apply_outcomes()?;
        result.map(|()| rewind)
    }

    /// After a fatal error: the open batch must never commit; abort it, best effort (a fenced
    /// producer cannot, and the broker or the next instance aborts it then).
    pub(crate) fn fail(&mut self) {
        let result = self.locked(|core| {
            // A commit in flight is settled first: aborting cannot end it, only waiting can.
            if let Err(error) = core.finish_commit(false) {
                tracing::warn!(%error, "The commit in flight failed too.");
            }
            core.fail();
            core.abort()
        });
        if let Err(error) = result {
            tracing::warn!(%error, "Could not abort the open transaction after the error.");
        }
        self.committing.clear();
        self.open = None;
        self.held.clear();
        self.state_aborted();
    }

    /// After every poll: what a rebalance callback did, if one acted (one atomic load
    /// otherwise). Returns the span to rewind, or the fatal error it met.
    pub(crate) fn after_poll(&mut self) -> Result<Option<Span>, EngineError> {
        if !self.handle.take_acted() {
            return Ok(None);
        }
        let fatal = self.locked(|core| core.take_fatal());
        let rewind = self.apply_outcomes()?;
        match fatal {
            Some(error) => Err(error),
            None => Ok(rewind),
        }
    }

    /// Awaits every delivery before the process exits.
    pub(crate) fn drain(&self) -> Result<(), EngineError> {
        self.producer.drain()
    }

    /// Runs `call` with the core locked and re-reads the phase, and the producer (a
    /// re-creation replaces it).
    fn locked<T>(&mut self, call: impl FnOnce(&mut super::TxnCore) -> T) -> T {
        let mut core = self.handle.lock();
        let result = call(&mut core);
        self.phase = core.phase();
        if !Arc::ptr_eq(&self.producer, core.producer()) {
            self.producer = Arc::clone(core.producer());
        }
        result
    }

    /// Turns the core's outcomes into counters and metrics, sends held outputs once their
    /// transaction has begun, and returns the span to rewind.
    fn apply_outcomes(&mut self) -> Result<Option<Span>, EngineError> {
        let outcomes = self.locked(|core| core.take_outcomes());
        let mut rewind = None;
        let mut committed = false;
        for outcome in outcomes {
            match outcome {
                Outcome::Committed { elapsed } => {
                    self.state_committed()?;
                    committed = true;
                    self.stats.commits += 1;
                    self.commit_times.push(elapsed);
                    let batch = self.committing.pop_front().or_else(|| self.open.take());
                    if let Some(batch) = batch {
                        self.search = self.search.and_then(|s| s.committed(batch.records));
                        self.record_commit(&batch, elapsed);
                    }
                }
                Outcome::Aborted { rewind: span } => {
                    if let Some(reason) = self.producer.take_rejected() {
                        self.find_rejected(&span, reason);
                        // Each rejection halves the search (librdkafka then fails the next
                        // transaction once more, OUT_OF_ORDER_SEQUENCE_NUMBER, before its epoch
                        // bump): not an abort loop.
                        self.locked(|core| core.abort_made_progress());
                    }
                    self.state_settled(&span);
                    self.stats.aborts += 1;
                    self.metrics.transaction_closed(false);
                    self.committing.clear();
                    self.open = None;
                    self.held.clear();
                    rewind = merge(rewind, Some(span));
                }
                Outcome::Dropped { rewind: span } => {
                    self.state_aborted();
                    self.open = None;
                    self.held.clear();
                    rewind = merge(rewind, Some(span));
                }
            }
        }
        if self.open.is_some() {
            self.metrics.transaction_opened();
            self.health.transaction_opened();
        } else if self.committing.is_empty() {
            self.health.transaction_closed();
        }
        let at_most_once = self.producer.mode() == DeliveryMode::AtMostOnce;
        if committed && (self.phase == OnRecord::Send || at_most_once) {
            self.send_held()?;
        }
        Ok(rewind)
    }

    /// Sends the held outputs (if any) into the transaction that has just begun.
    fn send_held(&mut self) -> Result<(), EngineError> {
        if self.held.is_empty() {
            self.handle.lock().held_sent();
            return Ok(());
        }
        for held in std::mem::take(&mut self.held) {
            let provenance =
                held.provenance
                    .as_ref()
                    .map(|(topic, partition, offset, timestamp)| Context {
                        topic,
                        partition: *partition,
                        offset: *offset,
                        timestamp: *timestamp,
                    });
            self.send_now(&held.topic, &held.record, provenance.as_ref())?;
        }
        self.handle.lock().held_sent();
        Ok(())
    }

    /// Hands a committed batch's counts to the metrics.
    fn record_commit(&self, batch: &Batch, elapsed: Duration) {
        let m = &self.metrics;
        m.transaction_closed(true);
        m.commit_seconds.observe(elapsed.as_secs_f64());
        m.records_per_transaction.observe(batch.records as f64);
        for read in &batch.read {
            let label = TopicLabel {
                topic: read.topic.clone(),
            };
            m.records_in.get_or_create(&label).inc_by(read.records);
            m.bytes_in.get_or_create(&label).inc_by(read.bytes);
        }
        for written in &batch.written {
            let label = TopicLabel {
                topic: written.topic.clone(),
            };
            m.records_out.get_or_create(&label).inc_by(written.records);
            m.bytes_out.get_or_create(&label).inc_by(written.bytes);
        }
        tracing::debug!(
            records = batch.records,
            commit_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "Committed a batch."
        );
    }
}

#[path = "worker_search.rs"]
mod search_hooks;
#[path = "worker_state.rs"]
mod state_hooks;

fn merge(earlier: Option<Span>, later: Option<Span>) -> Option<Span> {
    match earlier {
        Some(span) => Some(span.merged(later)),
        None => later,
    }
}
