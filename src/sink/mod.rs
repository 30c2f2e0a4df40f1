//! Database sinks: a stage whose results leave Kafka as rows in PostgreSQL, exactly once.
//!
//! ```text
//!  poll ──► owned partition, offset ≥ its start? ──► mapping (JSON → row) ──► batch
//!    │          (callbacks: context.rs)                 └─ poison: fail | skip | dead_letter
//!    └─ batch due (commit_interval / max_records_per_txn) or shutdown ──► write.rs:
//!         transactional: BEGIN; offsets (fenced by owner_epoch); rows; COMMIT ──► Kafka commit
//!                        (monitoring only)
//!         idempotent:    BEGIN; upsert rows; COMMIT ──► Kafka commit (the resume point)
//! ```
//!
//! * [`config`]: the `[sink]` section; [`mapping`]: records to rows; [`db`]: the session, the
//!   start-up check, claims; [`write`]: a batch's transaction, poison rows, settling after a lost
//!   connection; [`context`]: rebalances; [`dead_letter`]: the dead-letter producer.
//!
//! Invariants: a batch's rows and its offsets commit in one database transaction (transactional)
//! or the Kafka offsets move only after the rows committed (idempotent); a partition's rows are
//! written only while this instance owns it, and only with the epoch it claimed; nothing is
//! committed after a fatal error (the open batch is simply dropped: it is in no transaction).
//! The sink runs one worker (one consumer); scale out with more instances in the group.

mod broken;
pub mod config;
mod context;
mod db;
mod dead_letter;
pub mod error;
pub mod mapping;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

pub use config::{SinkConfig, SinkMode};
pub use error::SinkError;

use crate::config::{ConfigError, ConfigErrors, PoisonPolicy, StageConfig};
use crate::engine::WorkerStats;
use crate::error::{classify_consumer, EngineError, ErrorClass};
use crate::observability::{KindLabel, Telemetry, TopicLabel};
use context::SinkContext;
use dead_letter::DeadLetters;
use mapping::{Mapping, RecordView, Row};
use write::{PartitionEnd, Rejected, Writer};

/// The longest a poll blocks, so shutdown is noticed promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// Checks a sink stage's configuration (no topology, no outputs; the `[sink]` section).
pub fn validate(config: &StageConfig) -> Result<&SinkConfig, ConfigErrors> {
    let mut errors = config.static_errors();
    let Some(sink) = config.sink.as_ref() else {
        errors.push(ConfigError::new(
            "sink",
            "missing; kstage sink needs a [sink] section",
        ));
        return Err(ConfigErrors(errors));
    };
    if !config.topology.is_empty() {
        errors.push(ConfigError::new(
            "topology",
            "a sink maps records with [sink.columns]; remove it",
        ));
    }
    if !config.outputs.is_empty() {
        errors.push(ConfigError::new(
            "outputs",
            "a sink writes rows, not topics; remove them",
        ));
    }
    if config.workers != 1 {
        errors.push(ConfigError::new(
            "workers",
            "a sink runs one worker; run more instances instead",
        ));
    }
    errors.extend(sink.check());
    if errors.is_empty() {
        Ok(sink)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The open batch: rows, the messages they came from, and each partition's end.
#[derive(Default)]
struct Batch {
    started: Option<Instant>,
    records: usize,
    rows: Vec<Row>,
    messages: Vec<OwnedMessage>,
    ends: Vec<PartitionEnd>,
}

impl Batch {
    fn note(&mut self, topic: &str, partition: i32, offset: i64, epoch: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.records += 1;
        match self
            .ends
            .iter_mut()
            .find(|e| e.partition == partition && e.topic == topic)
        {
            Some(end) => {
                end.next_offset = offset + 1;
                end.records += 1;
            }
            None => self.ends.push(PartitionEnd {
                topic: topic.to_string(),
                partition,
                next_offset: offset + 1,
                epoch,
                records: 1,
            }),
        }
    }

    /// Drops what the batch read from partitions given up (they were not committed).
    fn drop_partitions(&mut self, given_up: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            given_up.iter().any(|(t, p)| *p == partition && t == topic)
        };
        let before = self.rows.len();
        let keep: Vec<bool> = self
            .messages
            .iter()
            .map(|m| !gone(m.topic(), m.partition()))
            .collect();
        let mut flags = keep.iter();
        self.rows.retain(|_| *flags.next().unwrap_or(&true));
        let mut flags = keep.iter();
        self.messages.retain(|_| *flags.next().unwrap_or(&true));
        self.ends.retain(|e| !gone(&e.topic, e.partition));
        if self.ends.is_empty() {
            *self = Self::default();
        }
        if before != self.rows.len() {
            tracing::info!(
                dropped = before - self.rows.len(),
                "Dropped the open batch's rows of revoked partitions."
            );
        }
    }
}

/// Runs a sink until `shutdown` is set (then commits the open batch and returns) or an error.
/// Blocks the calling thread.
pub fn run(
    config: &StageConfig,
    shutdown: Arc<AtomicBool>,
    telemetry: Telemetry,
) -> Result<WorkerStats, SinkError> {
    let sink = validate(config)?;
    let sources = sink.sources().map_err(ConfigErrors)?;
    let columns: Vec<String> = sources.iter().map(|(c, _)| c.clone()).collect();
    let client_id = config.transactional_id();
    let mut db = db::Db::open(sink, &format!("kstage-sink {client_id}"))?;
    let check_key = sink.mode == SinkMode::Idempotent && !broken::Broken::PlainInsert.active();
    let types = db.check_table(sink, &columns, check_key)?;
    if sink.mode == SinkMode::Transactional {
        db.create_offsets_table(&sink.offsets_table)?;
    }
    let writer = Writer::new(sink, &sources, &types, &config.app_id);
    let mapping = Mapping::new(sources);
    let claims = (sink.mode == SinkMode::Transactional)
        .then(|| (sink.offsets_table.clone(), config.app_id.clone()));
    let health = telemetry.health.worker(&client_id);
    let context = SinkContext::new(
        Arc::new(Mutex::new(db)),
        claims,
        telemetry.clone(),
        Arc::clone(&health),
    );
    let consumer: BaseConsumer<SinkContext> = crate::engine::consumer_config(config, &client_id)
        .create_with_context(context)
        .map_err(|source| EngineError::Kafka {
            operation: "creating the consumer",
            source,
        })?;
    preflight(&consumer, config)?;
    let dead_letters = match (&config.poison_policy, &config.dead_letter_topic) {
        (PoisonPolicy::DeadLetter, Some(topic)) => Some(DeadLetters::new(config, topic)?),
        _ => None,
    };
    health.set_producer_ready();
    let inputs: Vec<&str> = config.inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&inputs)
        .map_err(|source| EngineError::Kafka {
            operation: "subscribing",
            source,
        })?;
    tracing::info!(app_id = %config.app_id, instance_id = %config.instance_id, mode = sink.mode.as_str(),
        table = %sink.table, inputs = ?config.inputs, "Sink started.");
    let mut worker = SinkWorker {
        consumer,
        writer,
        mapping,
        mode: sink.mode,
        policy: config.poison_policy,
        dead_letters,
        commit_interval: config.commit_interval,
        max_records: config.max_records_per_txn,
        stats: WorkerStats::default(),
        telemetry,
    };
    worker.run(&shutdown)
}

/// Waits until the cluster answers and checks that the input and dead-letter topics exist.
fn preflight(
    consumer: &BaseConsumer<SinkContext>,
    config: &StageConfig,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + crate::engine::STARTUP_TIMEOUT;
    for topic in config.inputs.iter().chain(&config.dead_letter_topic) {
        loop {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    let error = metadata.topics().first().and_then(|t| t.error());
                    if error.is_some() {
                        return Err(EngineError::Startup(format!(
                            "topic {topic:?} does not exist or is not readable on {} (create it first)",
                            config.bootstrap_servers
                        )));
                    }
                    break;
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "The Kafka cluster does not answer yet; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(source) => {
                    return Err(EngineError::Kafka {
                        operation: "reading topic metadata",
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

struct SinkWorker {
    consumer: BaseConsumer<SinkContext>,
    writer: Writer,
    mapping: Mapping,
    mode: SinkMode,
    policy: PoisonPolicy,
    dead_letters: Option<DeadLetters>,
    commit_interval: Duration,
    max_records: usize,
    stats: WorkerStats,
    telemetry: Telemetry,
}

impl SinkWorker {
    fn run(&mut self, shutdown: &AtomicBool) -> Result<WorkerStats, SinkError> {
        let mut batch = Batch::default();
        let mut last_summary = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            let wait = match batch.started {
                Some(_) if batch.records >= self.max_records => Duration::ZERO,
                Some(started) => {
                    (started + self.commit_interval).saturating_duration_since(Instant::now())
                }
                None => MAX_POLL_WAIT,
            };
            if batch.started.is_some() && wait.is_zero() {
                self.commit(&mut batch)?;
                continue;
            }
            let polled = self.consumer.poll(wait.min(MAX_POLL_WAIT));
            let (given_up, error) = self.consumer.context().take_events();
            if let Some(error) = error {
                return Err(error);
            }
            if !given_up.is_empty() {
                batch.drop_partitions(&given_up);
            }
            self.commit_claimed()?;
            match polled {
                None => {}
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.take(&mut batch, message)?;
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
            if last_summary.elapsed() > Duration::from_secs(30) {
                last_summary = Instant::now();
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
        self.commit(&mut batch)?;
        Ok(self.stats)
    }

    /// One consumed record into the batch (or through the poison policy).
    fn take(&mut self, batch: &mut Batch, message: OwnedMessage) -> Result<(), SinkError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let Some(epoch) = self.consumer.context().accept(topic, partition, offset) else {
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
        match self.mapping.row(&view) {
            Ok(row) => {
                batch.note(topic, partition, offset, epoch);
                batch.rows.push(row);
                batch.messages.push(message);
            }
            Err(error) => {
                batch.note(topic, partition, offset, epoch);
                self.poison(&message, "decode", &error)?;
            }
        }
        Ok(())
    }

    /// The poison policy for one record: fail stops, skip counts, dead_letter queues the letter.
    fn poison(
        &mut self,
        message: &OwnedMessage,
        class: &str,
        error: &str,
    ) -> Result<(), SinkError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        poison(
            self.policy,
            self.dead_letters.as_mut(),
            &mut self.stats,
            &self.telemetry,
            message,
            class,
            error,
        )
        .map_err(|e| match e {
            SinkError::Poison { .. } => SinkError::Poison {
                topic: topic.into(),
                partition,
                offset,
                error: error.into(),
            },
            other => other,
        })
    }

    /// Writes and commits the batch, then commits the Kafka offsets.
    fn commit(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
        if batch.ends.is_empty() {
            *batch = Batch::default();
            return Ok(());
        }
        let started = Instant::now();
        let offsets = self.kafka_offsets(&batch.ends)?;
        let kafka_first =
            broken::Broken::KafkaOffsets.active() && self.mode == SinkMode::Transactional;
        if kafka_first {
            tracing::warn!("KSTAGE_BROKEN_MODE: committing Kafka offsets before the database (negative control)");
            self.consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(|source| EngineError::Kafka {
                    operation: "committing offsets",
                    source,
                })?;
        }
        if let Some(dead_letters) = self.dead_letters.as_mut() {
            dead_letters.flush()?;
        }
        let (policy, stats, telemetry) = (self.policy, &mut self.stats, &self.telemetry);
        let mut dead_letters = self.dead_letters.as_mut();
        let messages = &batch.messages;
        let mut on_rejected = |rejected: &[Rejected]| -> Result<(), SinkError> {
            for Rejected { index, error } in rejected {
                let message = messages.get(*index).ok_or_else(|| SinkError::Database {
                    operation: "finding a rejected row's record",
                    message: format!("no record at index {index}"),
                })?;
                poison(
                    policy,
                    dead_letters.as_deref_mut(),
                    stats,
                    telemetry,
                    message,
                    "rejected",
                    error,
                )?;
            }
            match dead_letters.as_deref_mut() {
                Some(dead_letters) => dead_letters.flush().map_err(SinkError::from),
                None => Ok(()),
            }
        };
        let rejected = {
            let mut db = self.consumer.context().db();
            self.writer
                .write(&mut db, &batch.rows, &batch.ends, &mut on_rejected)?
        };
        write::crash_point("kstage::sink_after_db_commit");
        if !kafka_first {
            // transactional: for lag monitoring only; idempotent: the resume point. Either way
            // a failure only means more redelivery (idempotent) or a stale lag (transactional).
            let mode = if self.mode == SinkMode::Idempotent {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            if let Err(error) = self.consumer.commit(&offsets, mode) {
                tracing::warn!(%error, "Committing the Kafka offsets after the database commit failed.");
            }
        }
        self.stats.commits += 1;
        self.stats.records_in += batch.records as u64;
        self.stats.records_out += (batch.rows.len() - rejected.len()) as u64;
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
        tracing::debug!(
            records = batch.records,
            rows = batch.rows.len(),
            "Batch committed."
        );
        *batch = Batch::default();
        Ok(())
    }

    /// Copies claimed partitions' stored offsets to Kafka (monitoring only, best effort), so lag
    /// is right after a restart even for a partition that gets no new record.
    fn commit_claimed(&self) -> Result<(), SinkError> {
        let claimed = self.consumer.context().take_claimed();
        if claimed.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(claimed.len());
        for (topic, partition, next) in &claimed {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|source| EngineError::Kafka {
                    operation: "building the offsets to commit",
                    source,
                })?;
        }
        if let Err(error) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(%error, "Copying the stored offsets to Kafka failed.");
        }
        Ok(())
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

/// The poison policy for one record or row.
fn poison(
    policy: PoisonPolicy,
    dead_letters: Option<&mut DeadLetters>,
    stats: &mut WorkerStats,
    telemetry: &Telemetry,
    message: &OwnedMessage,
    class: &str,
    error: &str,
) -> Result<(), SinkError> {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    match (policy, dead_letters) {
        (PoisonPolicy::Fail, _) => {
            return Err(SinkError::Poison {
                topic: topic.into(),
                partition,
                offset,
                error: error.into(),
            })
        }
        (PoisonPolicy::DeadLetter, Some(dead_letters)) => {
            dead_letters.send(message, class, error)?;
            stats.dead_lettered += 1;
            telemetry
                .metrics
                .poison_records
                .get_or_create(&KindLabel {
                    kind: "dead_lettered",
                })
                .inc();
            tracing::warn!(
                topic,
                partition,
                offset,
                error,
                "Dead-lettered a record the sink cannot write."
            );
        }
        _ => {
            stats.skipped += 1;
            telemetry
                .metrics
                .poison_records
                .get_or_create(&KindLabel { kind: "skipped" })
                .inc();
            tracing::warn!(
                topic,
                partition,
                offset,
                error,
                "Skipped a record the sink cannot write."
            );
        }
    }
    Ok(())
}
