//! The producer side of a worker: the transactional producer and the commit path of every
//! delivery mode.
//!
//! ```text
//!  record consumed ──► open_batch (exactly_once: begin_transaction, lazily, on the first record)
//!  outputs ──────────► send (inside the transaction)
//!  batch due ────────► commit:
//!      exactly_once:  send_offsets_to_transaction(positions, group_metadata)
//!                     ──► await deliveries ──► commit_transaction   (on the commit thread)
//!      at_least_once: await deliveries ──► commit offsets (sync)
//!      at_most_once:  commit offsets (sync); the runner produces after this returns
//! ```
//!
//! **Pipelined commits (exactly_once, `pipelined_commits = true`).** The commit phases always run
//! on a short-lived commit thread; [`Transactions::commit`] waits for it. With pipelining, when
//! the runner's batch is due it calls [`Transactions::commit_in_background`] and goes on
//! consuming and processing while the transaction commits: the records it reads meanwhile open
//! the next batch, but no transaction, and their outputs are *held* (copied) instead of sent,
//! because a transactional producer takes no records between `commit_transaction` and the next
//! `begin_transaction`. When the commit ends ([`Transactions::settle`]) the next transaction
//! begins and the held outputs are sent into it; the offsets of the held batch go with that
//! transaction, never with the one that was committing. At most one commit is in flight; a batch
//! that falls due while one is waits for it. If the commit fails, the held batch is thrown away
//! with the aborted one and the caller rewinds to the committed offsets. Rebalances, shutdown
//! and errors settle the commit in flight first ([`Transactions::commit`], [`Transactions::abort`]).
//!
//! Invariants:
//! * A transaction is open exactly while `batch` is `Some` (exactly_once). It is begun by the
//!   first consumed record, so an idle stage opens no transactions.
//! * The offsets sent are the consumer's positions (next offset to read) of the partitions the
//!   batch read from, never "last offset + 1" arithmetic: positions skip control records.
//! * Before `commit_transaction` every delivery is awaited with 1 ms polls: rdkafka's
//!   `commit_transaction` flushes by polling in 100 ms slices, so a single pending delivery would
//!   otherwise cost each commit ~100 ms.
//! * Before `abort_transaction` deliveries are awaited too (bounded): aborting while the first
//!   produce of a transaction is still in flight can reach a coordinator that has not registered
//!   the partition yet and turn into a fatal `INVALID_TXN_STATE` (librdkafka#4849).
//! * Retriable errors repeat the same call; a commit with an unknown outcome is resumed, never
//!   aborted. Abortable errors abort once and report [`CommitOutcome::Aborted`] so the caller
//!   rewinds. Everything else is fatal (see [`crate::error`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, TopicPartitionList};

use super::broken::Broken;
use super::offsets::{self, Batch};
use crate::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use super::retry::{retrying, Retried};
use crate::config::DeliveryMode;
use crate::error::{classify, EngineError, ErrorClass};
use crate::observability::{StageMetrics, TopicLabel};
use crate::topology::{Context, OutputRecord};

/// Aborts in a row (no commit in between) after which the worker stops: an error that makes
/// every transaction abort would otherwise loop abort → rewind → retry forever.
const MAX_CONSECUTIVE_ABORTS: u32 = 20;

/// Input records of the held batch after which the worker stops reading and waits for the commit
/// in flight: bounds the memory the held outputs take (~20,000 x a few hundred bytes) when a
/// commit is slow.
const MAX_HELD_RECORDS: usize = 20_000;

/// How many records go by between two polls for delivery reports.
const SERVE_DELIVERIES_EVERY: u32 = 256;

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommitOutcome {
    /// Outputs and offsets are durable (or, outside exactly_once, offsets are committed).
    Committed,
    /// The transaction was aborted (or a delivery failed): the caller must rewind the consumer to
    /// the committed offsets. The batch's first offsets are the fallback for partitions without
    /// one.
    Aborted(Batch),
}

/// Counts failed deliveries; a failure in the open batch means it must not commit. Also keeps
/// the last transaction error librdkafka logged.
#[derive(Default)]
pub(crate) struct DeliveryTracker {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The last `TXNERR` log line: why the current transaction failed (e.g. AddPartitionsToTxn
    /// refused). A send after that only reports an erroneous state.
    txn_error: Mutex<Option<String>>,
}

impl DeliveryTracker {
    fn txn_error(&self) -> Option<String> {
        self.txn_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for DeliveryTracker {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "TXNERR" {
            if let Ok(mut txn_error) = self.txn_error.lock() {
                *txn_error = Some(log_message.to_string());
            }
        }
        // As rdkafka's default.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
        }
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(error.to_string());
            }
        }
    }
}

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

/// An output held back while the previous transaction commits, sent once the next one begins.
struct HeldOutput {
    topic: String,
    record: OutputRecord<'static>,
    /// The input record's topic, partition, offset and timestamp, for the provenance headers.
    provenance: Option<(String, i32, i64, Option<i64>)>,
}

/// A transaction committing on the commit thread.
struct InFlight {
    /// Its batch: counted in the metrics when it commits, the rewind's fallback when it fails.
    batch: Batch,
    /// When the commit started.
    started: Instant,
    /// How the commit thread's phases ended (it sends once, then exits).
    ended: Receiver<Ended>,
}

/// How the commit thread's phases ended.
enum Ended {
    Committed,
    /// An abortable error (or an injected abort): the transaction must be aborted.
    Abortable {
        operation: &'static str,
        error: Option<KafkaError>,
    },
    /// An error that aborting cannot fix. `in_doubt`: commit_transaction's outcome is unknown.
    Fatal {
        operation: &'static str,
        error: Retried,
        in_doubt: bool,
    },
}

impl Ended {
    fn failed(operation: &'static str, error: Retried) -> Self {
        match error {
            Retried::Failed(e) if classify(&e) == ErrorClass::Abortable => Self::Abortable {
                operation,
                error: Some(e),
            },
            error => Self::Fatal {
                operation,
                error,
                in_doubt: false,
            },
        }
    }
}

/// The producer of one worker and the state of its open batch.
pub(crate) struct Transactions {
    /// The producer; transactional in exactly_once mode. Shared with the commit thread.
    producer: Arc<BaseProducer<DeliveryTracker>>,
    /// Where the commit points are.
    mode: DeliveryMode,
    /// `<app_id>-<instance_id>`, for messages.
    transactional_id: String,
    /// Bounds every blocking call and retry loop of the commit path.
    transaction_timeout: Duration,
    /// The open batch (in exactly_once mode the open transaction, or, while a commit is in
    /// flight, the batch whose outputs are held).
    batch: Option<Batch>,
    /// Whether the open batch's transaction has begun (exactly_once).
    begun: bool,
    /// The commit in flight (exactly_once).
    in_flight: Option<InFlight>,
    /// Outputs of the open batch held while `in_flight` commits.
    held: Vec<HeldOutput>,
    /// Failed deliveries counted when the batch opened.
    failed_at_open: u64,
    /// Aborts since the last successful commit.
    consecutive_aborts: u32,
    /// Records processed since delivery reports were last served.
    unserved: u32,
    /// Set after a fatal error: the open batch may be partial and must never commit.
    defunct: bool,
    /// Set when commit_transaction gave up with its outcome unknown: that transaction must not
    /// be aborted.
    commit_in_doubt: bool,
    /// Updated once per batch.
    pub(crate) metrics: Arc<StageMetrics>,
    /// Counters.
    pub(crate) stats: WorkerStats,
}

impl Transactions {
    /// Creates the producer. In exactly_once mode it is transactional, and `init` must run
    /// before the first batch.
    pub(crate) fn new(
        mode: DeliveryMode,
        config: &ClientConfig,
        transactional_id: String,
        transaction_timeout: Duration,
        metrics: Arc<StageMetrics>,
    ) -> Result<Self, EngineError> {
        let producer = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|source| EngineError::Kafka {
                operation: "creating the producer",
                source,
            })?;
        Ok(Self {
            producer: Arc::new(producer),
            mode,
            transactional_id,
            transaction_timeout,
            batch: None,
            begun: false,
            in_flight: None,
            held: Vec::new(),
            failed_at_open: 0,
            consecutive_aborts: 0,
            unserved: 0,
            defunct: false,
            commit_in_doubt: false,
            metrics,
            stats: WorkerStats::default(),
        })
    }

    /// `init_transactions`: registers the transactional id with its coordinator, fences any
    /// predecessor with the same id and aborts its open transaction at once.
    pub(crate) fn init(&mut self) -> Result<(), EngineError> {
        if self.mode != DeliveryMode::ExactlyOnce {
            return Ok(());
        }
        let producer = &self.producer;
        let timeout = self.transaction_timeout;
        retrying("init_transactions", self.deadline(), || {
            producer.init_transactions(timeout)
        })
        .map_err(|e| self.fatal("init_transactions", e))
    }

    /// Marks the producer side unusable after a fatal error: commits are refused from now on.
    pub(crate) fn mark_defunct(&mut self) {
        self.defunct = true;
    }

    /// Whether a batch is open or a commit is in flight.
    pub(crate) fn is_open(&self) -> bool {
        self.batch.is_some() || self.in_flight.is_some()
    }

    /// The open batch, if any.
    pub(crate) fn batch(&self) -> Option<&Batch> {
        self.batch.as_ref()
    }

    /// Notes a consumed record, opening the batch (and, in exactly_once mode, beginning the
    /// transaction unless a commit is in flight) if none is open.
    pub(crate) fn record_consumed(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        bytes: usize,
    ) -> Result<(), EngineError> {
        if self.batch.is_none() {
            self.batch = Some(Batch::new(Instant::now()));
            self.metrics.transaction_opened();
            if self.in_flight.is_none() {
                self.begin()?;
            }
        }
        if let Some(batch) = &mut self.batch {
            batch.note(topic, partition, offset, bytes);
        }
        self.stats.records_in += 1;
        Ok(())
    }

    /// Begins the open batch's transaction (exactly_once) and counts failed deliveries from
    /// here.
    fn begin(&mut self) -> Result<(), EngineError> {
        if self.mode == DeliveryMode::ExactlyOnce {
            self.producer
                .begin_transaction()
                .map_err(|e| EngineError::kafka("begin_transaction", e, &self.transactional_id))?;
        }
        self.begun = true;
        self.failed_at_open = self.failed_deliveries();
        if let Ok(mut txn_error) = self.producer.context().txn_error.lock() {
            *txn_error = None;
        }
        Ok(())
    }

    /// Sends one output record (inside the open transaction in exactly_once mode), with the
    /// provenance headers of `provenance` if given. While a commit is in flight the record is
    /// held (copied) and sent when the next transaction begins. A full local queue is waited out
    /// by serving delivery reports.
    pub(crate) fn send(
        &mut self,
        topic: &str,
        record: &OutputRecord<'_>,
        provenance: Option<&Context<'_>>,
    ) -> Result<(), EngineError> {
        if self.batch.is_some() && !self.begun {
            self.held.push(HeldOutput {
                topic: topic.to_string(),
                record: owned(record),
                provenance: provenance
                    .map(|c| (c.topic.to_string(), c.partition, c.offset, c.timestamp)),
            });
            return Ok(());
        }
        let mut base = BaseRecord::<[u8], [u8], ()>::with_opaque_to(topic, ());
        if let Some(key) = &record.key {
            base = base.key(key.as_ref());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_ref());
        }
        if let Some(timestamp) = record.timestamp {
            base = base.timestamp(timestamp);
        }
        let extra = if provenance.is_some() { 3 } else { 0 };
        if !record.headers.is_empty() || extra > 0 {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + extra);
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key: key.as_ref(),
                    value: value.as_deref(),
                });
            }
            if let Some(source) = provenance {
                // Formatted on the stack: no allocation per record for the provenance headers.
                let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
                headers = headers
                    .insert(Header {
                        key: SOURCE_TOPIC,
                        value: Some(source.topic),
                    })
                    .insert(Header {
                        key: SOURCE_PARTITION,
                        value: Some(partition.format(source.partition)),
                    })
                    .insert(Header {
                        key: SOURCE_OFFSET,
                        value: Some(offset.format(source.offset)),
                    });
            }
            base = base.headers(headers);
        }
        let size = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len());
        // Only a full queue needs a deadline: no clock read per record.
        let mut deadline = None;
        loop {
            match self.producer.send(base) {
                Ok(()) => {
                    self.stats.records_out += 1;
                    if let Some(batch) = &mut self.batch {
                        batch.note_written(topic, size);
                    }
                    return Ok(());
                }
                Err((error, returned)) if classify(&error) == ErrorClass::Retriable => {
                    if Instant::now() >= *deadline.get_or_insert_with(|| self.deadline()) {
                        return Err(EngineError::RetriesExhausted {
                            operation: "producing (local queue full)",
                            waited_secs: self.transaction_timeout.as_secs(),
                            source: error,
                        });
                    }
                    self.producer.poll(Duration::from_millis(5));
                    base = returned;
                }
                Err((error, _)) => return Err(self.send_failed(error)),
            }
        }
    }

    /// Serves delivery reports that are ready, without blocking, every
    /// [`SERVE_DELIVERIES_EVERY`] records, so reports never pile up (and a full queue, and
    /// every commit, serve them too).
    pub(crate) fn serve_deliveries(&mut self) {
        self.unserved += 1;
        if self.unserved >= SERVE_DELIVERIES_EVERY {
            self.unserved = 0;
            self.producer.poll(Duration::ZERO);
        }
    }

    /// Commits the open batch (see the module docs for each mode) and returns when it is done,
    /// after settling a commit in flight. Does nothing when no batch is open.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        if let Some(outcome @ CommitOutcome::Aborted(_)) = self.settle(true)? {
            return Ok(outcome);
        }
        if self.batch.is_none() {
            return Ok(CommitOutcome::Committed);
        }
        if self.defunct {
            return self.abort();
        }
        if self.mode == DeliveryMode::ExactlyOnce {
            // The commit thread's phases; settle counts the committed batch.
            self.start_commit(consumer)?;
            return Ok(self.settle(true)?.unwrap_or(CommitOutcome::Committed));
        }
        let Some(batch) = self.batch.clone() else {
            return Ok(CommitOutcome::Committed);
        };
        let started = Instant::now();
        let outcome = if self.mode == DeliveryMode::AtLeastOnce {
            self.commit_after_flush(consumer)?
        } else {
            self.commit_offsets(consumer)?
        };
        if outcome == CommitOutcome::Committed {
            self.committed(&batch, started);
        }
        Ok(outcome)
    }

    /// Starts committing the open batch and returns without waiting for it (exactly_once; the
    /// other modes commit at once, as [`Self::commit`]). A commit still in flight is settled
    /// first. `Committed` means "nothing to rewind": the commit may still be in flight, and a
    /// failure is reported by a later [`Self::settle`], `commit` or `abort`.
    pub(crate) fn commit_in_background<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        if self.mode != DeliveryMode::ExactlyOnce || self.defunct {
            return self.commit(consumer);
        }
        if let Some(outcome @ CommitOutcome::Aborted(_)) = self.settle(true)? {
            return Ok(outcome);
        }
        self.start_commit(consumer)?;
        Ok(CommitOutcome::Committed)
    }

    /// Hands the open batch's transaction to a new commit thread: the phases are in
    /// [`commit_phases`]; the positions and the group metadata are read here, on the worker's
    /// thread, before any record of the next batch is consumed.
    fn start_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        let positions = offsets::positions(consumer, batch)?;
        let metadata = consumer.group_metadata().ok_or_else(|| {
            EngineError::Startup("the consumer has no group metadata (not in a group)".into())
        })?;
        let offsets = if Broken::OffsetsOutsideTxn.active() {
            retrying(
                "committing offsets outside the transaction",
                self.deadline(),
                || consumer.commit(&positions, CommitMode::Sync),
            )
            .map_err(|e| self.fatal("committing offsets outside the transaction", e))?;
            None
        } else {
            Some((positions, metadata))
        };
        let producer = Arc::clone(&self.producer);
        let timeout = self.transaction_timeout;
        let (report, ended) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kstage-commit".into())
            .spawn(move || {
                // The receiver is gone only if the worker gave the commit up as hung.
                let _ = report.send(commit_phases(&producer, offsets, timeout));
            })
            .map_err(|e| EngineError::Internal(format!("cannot start a commit thread: {e}")))?;
        if let Some(batch) = self.batch.take() {
            self.begun = false;
            self.in_flight = Some(InFlight {
                batch,
                started: Instant::now(),
                ended,
            });
        }
        Ok(())
    }

    /// Whether the worker must wait for the commit in flight before it reads on: the held batch
    /// is at [`MAX_HELD_RECORDS`].
    pub(crate) fn held_full(&self) -> bool {
        self.in_flight.is_some()
            && self
                .batch
                .as_ref()
                .is_some_and(|batch| batch.records >= MAX_HELD_RECORDS)
    }

    /// Ends the commit in flight, if there is one and it has finished (or `wait`): counts it
    /// when it committed and begins the next transaction with the held outputs; aborts it when it
    /// failed, throwing the held batch away with it, and returns `Aborted` with both batches so
    /// the caller rewinds. `None`: no commit was in flight, or it is still running.
    pub(crate) fn settle(&mut self, wait: bool) -> Result<Option<CommitOutcome>, EngineError> {
        let Some(in_flight) = &self.in_flight else {
            return Ok(None);
        };
        // Every phase retries only until the transaction timeout, but a single librdkafka call
        // can block past any timeout (librdkafka#5456): bound the wait, and give the commit up as
        // in doubt (never aborted; its thread is left behind) rather than hang the stage.
        let limit = self.transaction_timeout * 2;
        let received = if wait {
            let left = limit.saturating_sub(in_flight.started.elapsed());
            match in_flight.ended.recv_timeout(left) {
                Ok(ended) => Ok(ended),
                Err(RecvTimeoutError::Timeout) => Err(EngineError::CommitHung {
                    transactional_id: self.transactional_id.clone(),
                    waited_secs: limit.as_secs(),
                }),
                Err(RecvTimeoutError::Disconnected) => Err(panicked()),
            }
        } else {
            match in_flight.ended.try_recv() {
                Ok(ended) => Ok(ended),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => Err(panicked()),
            }
        };
        let Some(InFlight { batch, started, .. }) = self.in_flight.take() else {
            return Ok(None);
        };
        let ended = match received {
            Ok(ended) => ended,
            Err(error) => {
                // Whether it committed is unknown: the open transaction again, in doubt, never
                // aborted; the held batch never began.
                self.held.clear();
                self.batch = Some(batch);
                self.begun = true;
                self.commit_in_doubt = true;
                return Err(error);
            }
        };
        match ended {
            Ended::Committed => {
                self.committed(&batch, started);
                if self.batch.is_some() {
                    self.begin()?;
                    for held in std::mem::take(&mut self.held) {
                        let provenance = held.provenance.as_ref().map(
                            |(topic, partition, offset, timestamp)| Context {
                                topic,
                                partition: *partition,
                                offset: *offset,
                                timestamp: *timestamp,
                            },
                        );
                        self.send(&held.topic, &held.record, provenance.as_ref())?;
                    }
                }
                Ok(Some(CommitOutcome::Committed))
            }
            Ended::Abortable { operation, error } => {
                match error {
                    Some(error) => {
                        tracing::warn!(%error, "{operation} failed; aborting the transaction.")
                    }
                    None => tracing::debug!("{operation}: aborting the transaction"),
                }
                // Nothing of the held batch reached the producer: drop its outputs, and rewind
                // from the earlier batch's first offsets (the held batch's for partitions only it
                // read).
                self.held.clear();
                let mut merged = batch;
                if let Some(held) = self.batch.take() {
                    merged.absorb(held);
                }
                self.batch = Some(merged);
                self.begun = true;
                self.abort().map(Some)
            }
            Ended::Fatal {
                operation,
                error,
                in_doubt,
            } => {
                // The failed transaction is the open one again (a later abort may still end it,
                // unless its commit is in doubt); the held batch never began.
                self.held.clear();
                self.batch = Some(batch);
                self.begun = true;
                self.commit_in_doubt |= in_doubt;
                Err(self.fatal(operation, error))
            }
        }
    }

    /// Counts a committed batch.
    fn committed(&mut self, batch: &Batch, started: Instant) {
        self.consecutive_aborts = 0;
        self.stats.commits += 1;
        let elapsed = started.elapsed();
        self.record_commit(batch, elapsed);
        tracing::debug!(
            records = batch.records,
            commit_us = elapsed.as_micros() as u64,
            "Committed a batch."
        );
    }

    fn commit_after_flush<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        if let Err(e) = self.await_deliveries(self.deadline()) {
            return Err(EngineError::RetriesExhausted {
                operation: "awaiting deliveries",
                waited_secs: self.transaction_timeout.as_secs(),
                source: e,
            });
        }
        if self.failed_deliveries() > self.failed_at_open {
            tracing::warn!(
                error = self.last_delivery_error().as_deref().unwrap_or("unknown"),
                "A delivery failed; rewinding so the batch is produced again."
            );
            return self.take_aborted();
        }
        self.commit_offsets(consumer)
    }

    fn commit_offsets<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        let Some(batch) = &self.batch else {
            return Ok(CommitOutcome::Committed);
        };
        let positions = offsets::positions(consumer, batch)?;
        retrying("committing offsets", self.deadline(), || {
            consumer.commit(&positions, CommitMode::Sync)
        })
        .map_err(|e| self.fatal("committing offsets", e))?;
        self.batch = None;
        self.begun = false;
        Ok(CommitOutcome::Committed)
    }

    /// Aborts the open transaction (exactly_once) or drops the open batch (other modes) and
    /// returns it, so the caller can rewind. A commit in flight is settled first; if it failed,
    /// its abort covers the open batch too. Stops the stage (`AbortLoop`) after
    /// [`MAX_CONSECUTIVE_ABORTS`] aborts in a row.
    pub(crate) fn abort(&mut self) -> Result<CommitOutcome, EngineError> {
        if let Some(outcome @ CommitOutcome::Aborted(_)) = self.settle(true)? {
            return Ok(outcome);
        }
        if self.batch.is_none() {
            return Ok(CommitOutcome::Committed);
        }
        if self.commit_in_doubt {
            tracing::warn!("The last commit's outcome is unknown; not aborting that transaction.");
            return self.take_aborted();
        }
        if self.mode == DeliveryMode::ExactlyOnce && self.begun {
            // Bounded: an abort must not wait for a broker that is gone.
            let _ = self.await_deliveries(Instant::now() + Duration::from_secs(5));
            let producer = &self.producer;
            retrying("abort_transaction", self.deadline(), || {
                producer.abort_transaction(Timeout::Never)
            })
            .map_err(|e| self.fatal("abort_transaction", e))?;
        }
        self.held.clear();
        self.take_aborted()
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
    }

    fn take_aborted(&mut self) -> Result<CommitOutcome, EngineError> {
        self.metrics.transaction_closed(false);
        self.stats.aborts += 1;
        self.consecutive_aborts += 1;
        self.begun = false;
        let batch = self
            .batch
            .take()
            .unwrap_or_else(|| Batch::new(Instant::now()));
        if self.consecutive_aborts >= MAX_CONSECUTIVE_ABORTS {
            return Err(EngineError::AbortLoop {
                aborts: self.consecutive_aborts,
                last: self
                    .last_delivery_error()
                    .unwrap_or_else(|| "see the log above".into()),
            });
        }
        Ok(CommitOutcome::Aborted(batch))
    }

    /// Polls delivery reports in 1 ms slices until nothing is in flight.
    fn await_deliveries(&self, deadline: Instant) -> Result<(), KafkaError> {
        await_deliveries(&self.producer, deadline)
    }

    /// Awaits deliveries before the process exits (at_most_once produces after committing).
    pub(crate) fn drain(&self) -> Result<(), EngineError> {
        self.await_deliveries(self.deadline())
            .map_err(|source| EngineError::RetriesExhausted {
                operation: "awaiting deliveries",
                waited_secs: self.transaction_timeout.as_secs(),
                source,
            })
    }

    fn failed_deliveries(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }

    fn last_delivery_error(&self) -> Option<String> {
        self.producer
            .context()
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.transaction_timeout
    }

    /// The error for a refused send. A send into a transaction that has already failed is
    /// refused with an erroneous state; the cause is in librdkafka's last `TXNERR` line, and an
    /// authorization failure named there (a missing Write ACL on an output makes
    /// AddPartitionsToTxn fail) is reported as such.
    fn send_failed(&self, error: KafkaError) -> EngineError {
        let refused_state = error.rdkafka_error_code() == Some(RDKafkaErrorCode::State);
        if self.mode == DeliveryMode::ExactlyOnce && refused_state {
            if let Some(reason) = self.producer.context().txn_error() {
                tracing::error!(reason, "The transaction had failed before this send.");
                if let Some(code) = authorization_code_in(&reason) {
                    return EngineError::kafka(
                        "producing",
                        KafkaError::MessageProduction(code),
                        &self.transactional_id,
                    );
                }
            }
        }
        self.fatal("producing", Retried::Failed(error))
    }

    /// Turns a final error into an [`EngineError`], recognising fencing and preferring the
    /// producer's recorded fatal error (a fatal state makes later calls report only `_FATAL`).
    fn fatal(&self, operation: &'static str, error: Retried) -> EngineError {
        match error {
            Retried::Exhausted { source, waited } => EngineError::RetriesExhausted {
                operation,
                waited_secs: waited.as_secs(),
                source,
            },
            Retried::Failed(source) => {
                if crate::error::is_fenced(&source) {
                    self.metrics.fenced.inc();
                }
                let source = match self.producer.client().fatal_error() {
                    Some((code, _)) if !crate::error::is_fenced(&source) => {
                        KafkaError::MessageProduction(code)
                    }
                    _ => source,
                };
                EngineError::kafka(operation, source, &self.transactional_id)
            }
        }
    }
}

/// The commit phases of one transaction, on the commit thread: the offsets (unless a broken mode
/// committed them already), every delivery, then `commit_transaction`. Retriable errors repeat
/// the call until the transaction timeout; a commit whose outcome stays unknown is reported in
/// doubt, never aborted (a late EndTxn could end a later transaction).
fn commit_phases(
    producer: &BaseProducer<DeliveryTracker>,
    offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    timeout: Duration,
) -> Ended {
    let deadline = || Instant::now() + timeout;
    crash_point("kstage::after_produce");
    let begun = Instant::now();
    if let Some((positions, metadata)) = &offsets {
        if let Err(e) = retrying("send_offsets_to_transaction", deadline(), || {
            producer.send_offsets_to_transaction(positions, metadata, Timeout::Never)
        }) {
            return Ended::failed("send_offsets_to_transaction", e);
        }
    }
    let offsets_sent = Instant::now();
    crash_point("kstage::after_send_offsets");
    if let Err(e) = await_deliveries(producer, deadline()) {
        return Ended::failed("awaiting deliveries", Retried::exhausted(e, timeout));
    }
    crash_point("kstage::before_commit");
    if injected_abort() {
        return Ended::Abortable {
            operation: "fail point kstage::inject_abort",
            error: None,
        };
    }
    let delivered = Instant::now();
    match retrying("commit_transaction", deadline(), || {
        producer.commit_transaction(Timeout::Never)
    }) {
        Ok(()) => {
            crash_point("kstage::after_commit");
            tracing::trace!(
                offsets_us = (offsets_sent - begun).as_micros() as u64,
                deliveries_us = (delivered - offsets_sent).as_micros() as u64,
                end_txn_us = delivered.elapsed().as_micros() as u64,
                "Commit phases."
            );
            Ended::Committed
        }
        Err(Retried::Failed(e)) if classify(&e) == ErrorClass::Abortable => Ended::Abortable {
            operation: "commit_transaction",
            error: Some(e),
        },
        Err(error) => Ended::Fatal {
            operation: "commit_transaction",
            error,
            in_doubt: true,
        },
    }
}

/// Polls delivery reports in 1 ms slices until nothing is in flight: rdkafka's flush polls in
/// 100 ms slices, which would add up to 100 ms to every commit.
fn await_deliveries(
    producer: &BaseProducer<DeliveryTracker>,
    deadline: Instant,
) -> Result<(), KafkaError> {
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// The commit thread ended without reporting: it panicked.
fn panicked() -> EngineError {
    EngineError::Internal("the commit thread panicked".into())
}

/// The authorization error a librdkafka transaction error line names, e.g. `... Topic
/// authorization failed (after 3 ms) (TOPIC_AUTHORIZATION_FAILED)`.
fn authorization_code_in(reason: &str) -> Option<RDKafkaErrorCode> {
    [
        (
            "(TOPIC_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ),
        (
            "(GROUP_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ),
        (
            "(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ),
        (
            "(CLUSTER_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::ClusterAuthorizationFailed,
        ),
    ]
    .into_iter()
    .find_map(|(name, code)| reason.contains(name).then_some(code))
}

/// A copy of an output record that owns its bytes, to hold while a commit is in flight.
fn owned(record: &OutputRecord<'_>) -> OutputRecord<'static> {
    let bytes = |b: &Cow<'_, [u8]>| Cow::Owned(b.to_vec());
    OutputRecord {
        output: record.output,
        key: record.key.as_ref().map(bytes),
        value: record.value.as_ref().map(bytes),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (Cow::Owned(name.to_string()), value.as_ref().map(bytes)))
            .collect(),
        timestamp: record.timestamp,
    }
}

/// A crash point in the commit path: with the `fault-injection` feature and
/// `FAILPOINTS=<name>=return`, the process aborts here as if killed.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_error_line_names_its_authorization_failure() {
        let line = "[thrd:main]: Current transaction failed in state InTransaction: Failed to add \
                    partition(s) to transaction on broker TxnCoordinator/1: Broker: Topic \
                    authorization failed (after 3 ms) (TOPIC_AUTHORIZATION_FAILED)";
        assert_eq!(
            authorization_code_in(line),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        );
        assert_eq!(
            authorization_code_in("[thrd:main]: Current transaction failed: (REQUEST_TIMED_OUT)"),
            None
        );
    }
}
