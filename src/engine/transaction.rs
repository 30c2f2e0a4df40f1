//! The producer side of a worker: the transactional producer and the commit path of every
//! delivery mode.
//!
//! ```text
//!  record consumed ──► open_batch (exactly_once: begin_transaction, lazily, on the first record)
//!  outputs ──────────► send (inside the transaction)
//!  batch due ────────► commit:
//!      exactly_once:  send_offsets_to_transaction(positions, group_metadata)
//!                     ──► await deliveries ──► commit_transaction
//!      at_least_once: await deliveries ──► commit offsets (sync)
//!      at_most_once:  commit offsets (sync); the runner produces after this returns
//! ```
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;

use super::broken::Broken;
use super::offsets::{self, Batch};
use super::record::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use super::retry::{retrying, Retried};
use crate::config::DeliveryMode;
use crate::error::{classify, EngineError, ErrorClass};
use crate::observability::{StageMetrics, TopicLabel};
use crate::topology::{Context, OutputRecord};

/// Aborts in a row (no commit in between) after which the worker stops: an error that makes
/// every transaction abort would otherwise loop abort → rewind → retry forever.
const MAX_CONSECUTIVE_ABORTS: u32 = 20;

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

/// Counts failed deliveries; a failure in the open batch means it must not commit.
#[derive(Default)]
pub(crate) struct DeliveryTracker {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

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

/// The producer of one worker and the state of its open batch.
pub(crate) struct Transactions {
    /// The producer; transactional in exactly_once mode.
    producer: BaseProducer<DeliveryTracker>,
    /// Where the commit points are.
    mode: DeliveryMode,
    /// `<app_id>-<instance_id>`, for messages.
    transactional_id: String,
    /// Bounds every blocking call and retry loop of the commit path.
    transaction_timeout: Duration,
    /// The open batch (the open transaction in exactly_once mode).
    batch: Option<Batch>,
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
            producer,
            mode,
            transactional_id,
            transaction_timeout,
            batch: None,
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

    /// Whether a batch is open.
    pub(crate) fn is_open(&self) -> bool {
        self.batch.is_some()
    }

    /// The open batch, if any.
    pub(crate) fn batch(&self) -> Option<&Batch> {
        self.batch.as_ref()
    }

    /// Notes a consumed record, opening the batch (and, in exactly_once mode, beginning the
    /// transaction) if none is open.
    pub(crate) fn record_consumed(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        bytes: usize,
    ) -> Result<(), EngineError> {
        if self.batch.is_none() {
            if self.mode == DeliveryMode::ExactlyOnce {
                self.producer.begin_transaction().map_err(|e| {
                    EngineError::kafka("begin_transaction", e, &self.transactional_id)
                })?;
            }
            self.failed_at_open = self.failed_deliveries();
            self.batch = Some(Batch::new(Instant::now()));
            self.metrics.transaction_opened();
        }
        if let Some(batch) = &mut self.batch {
            batch.note(topic, partition, offset, bytes);
        }
        self.stats.records_in += 1;
        Ok(())
    }

    /// Sends one output record (inside the open transaction in exactly_once mode), with the
    /// provenance headers of `provenance` if given. A full local queue is waited out by serving
    /// delivery reports.
    pub(crate) fn send(
        &mut self,
        topic: &str,
        record: &OutputRecord<'_>,
        provenance: Option<&Context<'_>>,
    ) -> Result<(), EngineError> {
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
                Err((error, _)) => return Err(self.fatal("producing", Retried::Failed(error))),
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

    /// Commits the open batch (see the module docs for each mode). Does nothing when no batch is
    /// open.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        let Some(batch) = self.batch.clone() else {
            return Ok(CommitOutcome::Committed);
        };
        if self.defunct {
            return self.abort();
        }
        let started = Instant::now();
        let outcome = match self.mode {
            DeliveryMode::ExactlyOnce => self.commit_transaction(consumer)?,
            DeliveryMode::AtLeastOnce => self.commit_after_flush(consumer)?,
            DeliveryMode::AtMostOnce => self.commit_offsets(consumer)?,
        };
        if outcome != CommitOutcome::Committed && self.consecutive_aborts >= MAX_CONSECUTIVE_ABORTS
        {
            return Err(EngineError::AbortLoop {
                aborts: self.consecutive_aborts,
                last: self
                    .last_delivery_error()
                    .unwrap_or_else(|| "see the log above".into()),
            });
        }
        if outcome == CommitOutcome::Committed {
            self.consecutive_aborts = 0;
            self.stats.commits += 1;
            let elapsed = started.elapsed();
            self.record_commit(&batch, elapsed);
            tracing::debug!(
                records = batch.records,
                commit_us = elapsed.as_micros() as u64,
                "Committed a batch."
            );
        }
        Ok(outcome)
    }

    fn commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitOutcome, EngineError> {
        crash_point("kstage::after_produce");
        let Some(batch) = &self.batch else {
            return Ok(CommitOutcome::Committed);
        };
        let begun = Instant::now();
        let positions = offsets::positions(consumer, batch)?;
        let metadata = consumer.group_metadata().ok_or_else(|| {
            EngineError::Startup("the consumer has no group metadata (not in a group)".into())
        })?;
        let producer = &self.producer;
        let sent = if Broken::OffsetsOutsideTxn.active() {
            retrying(
                "committing offsets outside the transaction",
                self.deadline(),
                || consumer.commit(&positions, CommitMode::Sync),
            )
        } else {
            retrying("send_offsets_to_transaction", self.deadline(), || {
                producer.send_offsets_to_transaction(&positions, &metadata, Timeout::Never)
            })
        };
        if let Err(e) = sent {
            return self.abort_or_fail("send_offsets_to_transaction", e);
        }
        let offsets_sent = Instant::now();
        crash_point("kstage::after_send_offsets");
        if let Err(e) = self.await_deliveries(self.deadline()) {
            return self.abort_or_fail(
                "awaiting deliveries",
                Retried::exhausted(e, self.transaction_timeout),
            );
        }
        crash_point("kstage::before_commit");
        if injected_abort() {
            tracing::debug!("fail point kstage::inject_abort: aborting the transaction");
            return self.abort();
        }
        let delivered = Instant::now();
        let producer = &self.producer;
        // Retriable here means "outcome unknown": resume the commit, never abort it.
        match retrying("commit_transaction", self.deadline(), || {
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
                self.batch = None;
                Ok(CommitOutcome::Committed)
            }
            Err(Retried::Failed(e)) if classify(&e) == ErrorClass::Abortable => {
                tracing::warn!(error = %e, "Committing the transaction failed; aborting it.");
                self.abort()
            }
            Err(e) => {
                // Whether it committed is unknown: never abort it (a late EndTxn could end a later
                // transaction); the stage stops, and the next init_transactions settles it.
                self.commit_in_doubt = true;
                Err(self.fatal("commit_transaction", e))
            }
        }
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
            return Ok(self.take_aborted());
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
        Ok(CommitOutcome::Committed)
    }

    /// Aborts the open transaction (exactly_once) or drops the open batch (other modes) and
    /// returns it, so the caller can rewind.
    pub(crate) fn abort(&mut self) -> Result<CommitOutcome, EngineError> {
        if self.batch.is_none() {
            return Ok(CommitOutcome::Committed);
        }
        if self.commit_in_doubt {
            tracing::warn!("The last commit's outcome is unknown; not aborting that transaction.");
            return Ok(self.take_aborted());
        }
        if self.mode == DeliveryMode::ExactlyOnce {
            // Bounded: an abort must not wait for a broker that is gone.
            let _ = self.await_deliveries(Instant::now() + Duration::from_secs(5));
            let producer = &self.producer;
            retrying("abort_transaction", self.deadline(), || {
                producer.abort_transaction(Timeout::Never)
            })
            .map_err(|e| self.fatal("abort_transaction", e))?;
        }
        Ok(self.take_aborted())
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

    fn take_aborted(&mut self) -> CommitOutcome {
        self.metrics.transaction_closed(false);
        self.stats.aborts += 1;
        self.consecutive_aborts += 1;
        CommitOutcome::Aborted(
            self.batch
                .take()
                .unwrap_or_else(|| Batch::new(Instant::now())),
        )
    }

    fn abort_or_fail(
        &mut self,
        operation: &'static str,
        error: Retried,
    ) -> Result<CommitOutcome, EngineError> {
        match error {
            Retried::Failed(e) if classify(&e) == ErrorClass::Abortable => {
                tracing::warn!(error = %e, "{operation} failed; aborting the transaction.");
                self.abort()
            }
            other => Err(self.fatal(operation, other)),
        }
    }

    /// Polls delivery reports in 1 ms slices until nothing is in flight.
    fn await_deliveries(&self, deadline: Instant) -> Result<(), KafkaError> {
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
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
