//! The loop of a sink worker: poll, map each owned record into the open batch (or through the
//! poison policy), and commit the batch when it is due.
//!
//! ```text
//!  poll ─► events of the callbacks (partitions given up: drop their rows; a fatal claim error)
//!  │    ─► a record of an owned partition at or past its stored offset ─► row into the batch
//!  │                                                                     └─ poison policy
//!  ├─► batch due (commit_interval since its first record, max_records_per_txn, shutdown):
//!  │     the write in flight settled ─► dead letters flushed ─► inflight.rs: write.rs's one
//!  │     database transaction on its own thread, while the loop polls and maps the next batch
//!  ├─► a write's outcome known (seen after a poll, or the next batch due): Kafka offset commit
//!  │     of the partitions still owned (transactional: async, monitoring only; idempotent:
//!  │     sync, the resume point)
//!  └─► Kafka's offsets may be behind the database's (a claim, a refused commit): copy them,
//!      at most every OFFSET_COPY_INTERVAL, until a commit succeeds
//! ```
//!
//! Invariants: nothing reaches Kafka's offsets before the database commit (except in the
//! negative control `sink_kafka_offsets`); at most one write in flight, and the next starts
//! only after its outcome is known; a fatal error first waits for the write in flight, then
//! returns, and the open batch, in no transaction, is simply dropped; a batch is open (for readiness) from its first record
//! to its commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::batch::Batch;
use super::broken::Broken;
use super::config::SinkMode;
use super::context::SinkContext;
use super::dead_letter::DeadLetters;
use super::error::SinkError;
use super::inflight::{wall_ms, BatchTimes, Done, InFlight};
use super::mapping::{MapError, RecordView};
use super::poison::{self, PoisonSource};
use super::rows::RowSource;
use super::write::{self, PartitionEnd, Rejected, Writer};
use crate::config::PoisonPolicy;
use crate::engine::WorkerStats;
use crate::error::{classify_consumer, EngineError, ErrorClass};
use crate::observability::{KindLabel, Telemetry, TopicLabel, WorkerHealth};

/// The longest a poll blocks, so shutdown is noticed promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// The longest a poll blocks while a write is in flight, so its outcome is handled promptly.
const IN_FLIGHT_POLL_WAIT: Duration = Duration::from_millis(5);

/// How often Kafka's offsets are copied from the database while they may be behind.
const OFFSET_COPY_INTERVAL: Duration = Duration::from_secs(1);

/// One sink worker: its consumer (whose context owns the database session), and what it needs
/// to turn records into committed rows.
pub(super) struct SinkWorker {
    /// The group member; its context claims partitions and shares the database session.
    pub(super) consumer: BaseConsumer<SinkContext>,
    /// Builds and runs a batch's transaction (shared with the write thread).
    pub(super) writer: Arc<Writer>,
    /// The batch whose transaction runs while the next one is collected (at most one).
    pub(super) in_flight: Option<InFlight>,
    /// Records to rows: the config-only mapping or a typed sink topology.
    pub(super) rows: RowSource,
    /// transactional or idempotent.
    pub(super) mode: SinkMode,
    /// What a record or row that cannot be written does.
    pub(super) policy: PoisonPolicy,
    /// The dead-letter producer, under `poison_policy = "dead_letter"`.
    pub(super) dead_letters: Option<DeadLetters>,
    /// The longest a batch stays open.
    pub(super) commit_interval: Duration,
    /// The most records in one batch.
    pub(super) max_records: usize,
    /// Counters returned when the worker stops.
    pub(super) stats: WorkerStats,
    /// Metrics.
    pub(super) telemetry: Telemetry,
    /// This worker's readiness: a batch open for too long makes the stage unready.
    pub(super) health: Arc<WorkerHealth>,
    /// Negative control only: the batch in flight's early Kafka commit was refused, so its
    /// offsets are copied to Kafka after its database commit.
    pub(super) early_commit_refused: bool,
}

impl std::fmt::Debug for SinkWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkWorker")
            .field("mode", &self.mode)
            .field("policy", &self.policy)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SinkWorker {
    /// Consumes and commits until `shutdown` is set (then commits the open batch) or an error.
    /// Whatever way it ends, the write in flight is settled first.
    pub(super) fn run(&mut self, shutdown: &AtomicBool) -> Result<WorkerStats, SinkError> {
        let result = self.run_loop(shutdown);
        if result.is_err() {
            if let Some(in_flight) = self.in_flight.take() {
                match in_flight.join().and_then(|done| done.result) {
                    Ok(_) => tracing::info!("The write in flight committed before the stop."),
                    Err(error) => tracing::warn!(%error, "The write in flight failed too."),
                }
            }
        }
        result
    }

    fn run_loop(&mut self, shutdown: &AtomicBool) -> Result<WorkerStats, SinkError> {
        let mut batch = Batch::default();
        let mut last_summary = Instant::now();
        let mut last_copy = Instant::now() - OFFSET_COPY_INTERVAL;
        while !shutdown.load(Ordering::Relaxed) {
            if self.in_flight.as_ref().is_some_and(InFlight::is_finished) {
                self.settle(&batch)?;
            }
            // One clock read per record polled (the intervals below are coarse: a poll's wait,
            // at most 100 ms, late is fine for them).
            let now = Instant::now();
            let wait = match batch.started {
                Some(_) if batch.records >= self.max_records => Duration::ZERO,
                Some(started) => (started + self.commit_interval).saturating_duration_since(now),
                None => MAX_POLL_WAIT,
            };
            if batch.started.is_some() && wait.is_zero() {
                self.settle(&batch)?;
                self.launch(&mut batch)?;
                continue;
            }
            let wait = match self.in_flight {
                Some(_) => wait.min(IN_FLIGHT_POLL_WAIT),
                None => wait.min(MAX_POLL_WAIT),
            };
            let polled = self.consumer.poll(wait);
            let (given_up, error) = self.consumer.context().take_events();
            if let Some(error) = error {
                return Err(error);
            }
            if !given_up.is_empty() {
                batch.drop_partitions(&given_up);
            }
            if now.saturating_duration_since(last_copy) >= OFFSET_COPY_INTERVAL
                && self.copy_offsets_to_kafka()?
            {
                last_copy = now;
            }
            match polled {
                None => {}
                Some(Ok(message)) => {
                    let was_empty = batch.started.is_none();
                    Intake {
                        rows: &mut self.rows,
                        policy: self.policy,
                        dead_letters: self.dead_letters.as_mut(),
                        stats: &mut self.stats,
                        telemetry: &self.telemetry,
                    }
                    .take(self.consumer.context(), &mut batch, &message)?;
                    if was_empty && batch.started.is_some() {
                        self.health.transaction_opened();
                        batch.first_age_ms = message
                            .timestamp()
                            .to_millis()
                            .map(|created| wall_ms() - created);
                    }
                }
                Some(Err(error)) => match classify_consumer(&error) {
                    ErrorClass::Fatal => {
                        return Err(EngineError::kafka("consuming", error, "").into())
                    }
                    _ => {
                        tracing::warn!(%error, "The consumer reported an error; it keeps retrying.")
                    }
                },
            }
            if now.saturating_duration_since(last_summary) > Duration::from_secs(30) {
                last_summary = now;
                tracing::info!(
                    records_in = self.stats.records_in,
                    commits = self.stats.commits,
                    skipped = self.stats.skipped,
                    dead_lettered = self.stats.dead_lettered,
                    "Sink progress."
                );
            }
        }
        tracing::info!("Shutting down: committing the open batch.");
        self.settle(&batch)?;
        self.launch(&mut batch)?;
        self.settle(&batch)?;
        Ok(self.stats)
    }

    /// Starts the open batch's write (the previous one is settled): the dead letters flushed,
    /// then the transaction on its own thread; the batch is empty again.
    fn launch(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
        if batch.ends.is_empty() {
            *batch = Batch::default();
            self.health.transaction_closed();
            return Ok(());
        }
        let started = Instant::now();
        if Broken::KafkaOffsets.active() && self.mode == SinkMode::Transactional {
            let offsets = self.kafka_offsets(&batch.ends)?;
            tracing::warn!("KSTAGE_BROKEN_MODE: committing Kafka offsets before the database (negative control)");
            // A refused commit (a rebalance) must not stop the control: it keeps running
            // through the same rebalances as the real sink. Its offsets are copied later, after
            // the database commit, as a refused commit of the real sink's: else a partition
            // whose last commit was refused stays behind in Kafka forever.
            self.early_commit_refused = false;
            if let Err(error) = self.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(%error, "KSTAGE_BROKEN_MODE: the early Kafka commit failed; copying the offsets later.");
                self.early_commit_refused = true;
            }
        }
        if let Some(dead_letters) = self.dead_letters.as_mut() {
            dead_letters.flush()?;
        }
        let (db, gate) = self.consumer.context().shared();
        let in_flight = InFlight::launch(&self.writer, db, gate, std::mem::take(batch), started)?;
        self.in_flight = Some(in_flight);
        Ok(())
    }

    /// Waits for the write in flight (if any) and finishes it: a deferred batch (rejected rows)
    /// written here with the poison policy, then the Kafka offsets and the counters. `open` is
    /// the batch being collected, for readiness.
    fn settle(&mut self, open: &Batch) -> Result<(), SinkError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let Done {
            mut batch,
            result,
            deferred,
            started,
            finished,
        } = in_flight.join()?;
        let times = BatchTimes {
            collected: batch
                .started
                .map(|first| started.saturating_duration_since(first)),
            written: finished.saturating_duration_since(started),
            noticed: finished.elapsed(),
            first_age_ms: batch.first_age_ms,
        };
        let rejected = if deferred {
            // Partitions given up meanwhile leave it: their next owner reads them again.
            let gone = self.consumer.context().not_owned(&batch.ends);
            batch.drop_partitions(&gone);
            if batch.ends.is_empty() {
                Vec::new()
            } else {
                self.write_here(&batch)?
            }
        } else {
            result?
        };
        if !batch.ends.is_empty() {
            self.finish(&batch, &rejected, started, &times)?;
        }
        if open.started.is_none() {
            self.health.transaction_closed();
        }
        Ok(())
    }

    /// Writes a batch on this thread, with the poison policy for the rows the database rejects.
    fn write_here(&mut self, batch: &Batch) -> Result<Vec<Rejected>, SinkError> {
        if let Some(dead_letters) = self.dead_letters.as_mut() {
            dead_letters.flush()?;
        }
        let (policy, stats, telemetry) = (self.policy, &mut self.stats, &self.telemetry);
        let mut dead_letters = self.dead_letters.as_mut();
        let mut on_rejected = |rejected: &[Rejected]| -> Result<(), SinkError> {
            for Rejected { index, error } in rejected {
                let source = batch.source_of(*index).ok_or_else(|| SinkError::Database {
                    operation: "finding a rejected row's record",
                    message: format!("no record at index {index}"),
                })?;
                poison::poison(
                    policy,
                    dead_letters.as_deref_mut(),
                    stats,
                    telemetry,
                    PoisonSource {
                        topic: &source.topic,
                        partition: source.partition,
                        offset: source.offset,
                        message: source.message.as_ref(),
                    },
                    "rejected",
                    error,
                )?;
            }
            match dead_letters.as_deref_mut() {
                Some(dead_letters) => dead_letters.flush().map_err(SinkError::from),
                None => Ok(()),
            }
        };
        let mut db = self.consumer.context().db();
        self.writer
            .write(&mut db, &batch.rows, &batch.ends, &mut on_rejected)
    }

    /// After the database commit of `batch`: the Kafka offsets of the partitions still owned,
    /// and the counters.
    fn finish(
        &mut self,
        batch: &Batch,
        rejected: &[Rejected],
        started: Instant,
        times: &BatchTimes,
    ) -> Result<(), SinkError> {
        let kept = self.consumer.context().committed(&batch.ends);
        write::crash_point("kstage::sink_after_db_commit");
        let kafka_first = Broken::KafkaOffsets.active() && self.mode == SinkMode::Transactional;
        if kafka_first && std::mem::take(&mut self.early_commit_refused) {
            self.consumer.context().kafka_behind();
        }
        if !kafka_first && !kept.is_empty() {
            // transactional: for lag monitoring only; idempotent: the resume point. Either way
            // a failure only means more redelivery (idempotent) or a stale lag (transactional).
            let offsets = self.kafka_offsets(&kept)?;
            let mode = if self.mode == SinkMode::Idempotent {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            if let Err(error) = self.consumer.commit(&offsets, mode) {
                // A synchronous commit refused (e.g. IllegalGeneration during a rebalance) gets
                // no commit callback: mark the offsets behind here, so they are copied again
                // even if the partition never gets another record.
                tracing::warn!(%error, "Committing the Kafka offsets after the database commit failed; copying them again later.");
                self.consumer.context().kafka_behind();
            }
        }
        self.stats.commits += 1;
        self.stats.records_in += batch.records as u64;
        self.stats.records_out += batch.rows.len().saturating_sub(rejected.len()) as u64;
        let metrics = &self.telemetry.metrics;
        metrics
            .transactions
            .get_or_create(&KindLabel { kind: "committed" })
            .inc();
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        for end in &batch.ends {
            metrics
                .records_in
                .get_or_create(&TopicLabel {
                    topic: end.topic.clone(),
                })
                .inc_by(end.records);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            records = batch.records,
            rows = batch.rows.len(),
            first_age_ms = times.first_age_ms,
            collect_ms = times.collected.map(ms),
            write_ms = ms(times.written),
            noticed_ms = ms(times.noticed),
            "Batch committed."
        );
        Ok(())
    }

    /// Copies the database's offsets of owned partitions to Kafka when Kafka's may be behind
    /// (after a claim, or after a commit to Kafka failed): monitoring only, best effort, but
    /// retried until a commit succeeds, so lag converges even on a partition that gets no new
    /// record (an async commit refused during a rebalance would otherwise stay stale forever).
    /// Returns whether it sent a commit.
    fn copy_offsets_to_kafka(&self) -> Result<bool, SinkError> {
        let stored = self.consumer.context().offsets_to_copy();
        if stored.is_empty() {
            return Ok(false);
        }
        let mut tpl = TopicPartitionList::with_capacity(stored.len());
        for (topic, partition, next) in &stored {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|source| EngineError::Kafka {
                    operation: "building the offsets to commit",
                    source,
                })?;
        }
        if let Err(error) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(%error, "Copying the stored offsets to Kafka failed; retrying later.");
            self.consumer.context().kafka_behind();
        }
        Ok(true)
    }

    fn kafka_offsets(&self, ends: &[PartitionEnd]) -> Result<TopicPartitionList, SinkError> {
        let mut tpl = TopicPartitionList::with_capacity(ends.len());
        for end in ends {
            tpl.add_partition_offset(&end.topic, end.partition, Offset::Offset(end.next_offset))
                .map_err(|source| EngineError::Kafka {
                    operation: "building the offsets to commit",
                    source,
                })?;
        }
        Ok(tpl)
    }
}

/// What one consumed record needs (the worker's fields other than its consumer, which the
/// polled record borrows).
struct Intake<'w> {
    rows: &'w mut RowSource,
    policy: PoisonPolicy,
    dead_letters: Option<&'w mut DeadLetters>,
    stats: &'w mut WorkerStats,
    telemetry: &'w Telemetry,
}

impl Intake<'_> {
    /// One consumed record into the batch (or through the poison policy). The record is
    /// copied into the batch only for dead letters (`poison_policy = "dead_letter"`); else the
    /// batch keeps its coordinates, and the rows are all it needs of it.
    fn take(
        self,
        context: &SinkContext,
        batch: &mut Batch,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), SinkError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let Some(epoch) = context.accept(topic, partition, offset) else {
            return Ok(());
        };
        let view = RecordView {
            key: message.key(),
            value: message.payload(),
            timestamp: message.timestamp().to_millis(),
            topic,
            partition,
            offset,
        };
        match self.rows.rows(&view) {
            Ok(rows) => {
                batch.note(topic, partition, offset, epoch);
                let kept = self.dead_letters.is_some().then(|| message.detach());
                batch.add((topic, partition, offset), kept, rows);
            }
            Err(MapError::Poison(error)) => {
                batch.note(topic, partition, offset, epoch);
                let source = PoisonSource {
                    topic,
                    partition,
                    offset,
                    message: Some(message),
                };
                poison::poison(
                    self.policy,
                    self.dead_letters,
                    self.stats,
                    self.telemetry,
                    source,
                    "decode",
                    &error,
                )
                .map_err(|e| match e {
                    SinkError::Poison { .. } => SinkError::Poison {
                        topic: topic.into(),
                        partition,
                        offset,
                        error: error.clone(),
                    },
                    other => other,
                })?;
            }
            Err(MapError::Panic(error)) => {
                return Err(SinkError::Panicked {
                    topic: topic.into(),
                    partition,
                    offset,
                    message: error,
                })
            }
            Err(MapError::Unavailable(error)) => {
                return Err(EngineError::Unavailable {
                    topic: topic.into(),
                    partition,
                    offset,
                    message: error,
                }
                .into())
            }
        }
        Ok(())
    }
}
