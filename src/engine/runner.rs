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
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders, OwnedMessage};

use super::offsets;
use super::rebalance::StageContext;
use super::transaction::{CommitOutcome, WorkerStats};
use crate::config::{DeliveryMode, PoisonPolicy, StageConfig};
use crate::error::{classify_consumer, EngineError, ErrorClass};
use crate::topology::{Context, Emitter, Headers, Record, Topology, TopologyError};

/// The longest a poll blocks, so shutdown is noticed promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// How often a progress line is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Output name -> topic, resolved once.
pub(crate) struct Routes(Vec<(String, String)>);

impl Routes {
    pub(crate) fn new(config: &StageConfig) -> Self {
        Self(
            config
                .outputs
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
        )
    }

    fn topic(&self, output: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == output)
            .map(|(_, topic)| topic.as_str())
    }
}

/// One worker: a consumer (whose context owns the producer) and a topology instance.
pub(crate) struct Worker {
    pub(crate) consumer: BaseConsumer<StageContext>,
    pub(crate) topology: Box<dyn Topology>,
    pub(crate) routes: Routes,
    pub(crate) mode: DeliveryMode,
    pub(crate) poison_policy: PoisonPolicy,
    pub(crate) commit_interval: Duration,
    pub(crate) max_records_per_txn: usize,
    pub(crate) shutdown: Arc<AtomicBool>,
}

impl Worker {
    /// Runs until shutdown is requested (then commits and returns) or a fatal error.
    pub(crate) fn run(mut self) -> Result<WorkerStats, EngineError> {
        let mut buffer: Vec<OwnedMessage> = Vec::new();
        let mut last_summary = Instant::now();
        let mut summarised = WorkerStats::default();
        loop {
            self.handle_callback_results(&mut buffer)?;
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            if self.batch_due() {
                self.commit(&mut buffer)?;
            }
            if last_summary.elapsed() >= SUMMARY_EVERY {
                summarised = self.log_summary(summarised);
                last_summary = Instant::now();
            }
            let Some(polled) = self.consumer.poll(self.poll_wait()) else {
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
                    let outcome = process(
                        &mut *self.topology,
                        &self.routes,
                        &self.consumer,
                        &message,
                        true,
                    );
                    self.on_processed(outcome)?;
                }
                Err(error) => match classify_consumer(&error) {
                    ErrorClass::Fatal => {
                        return Err(EngineError::Kafka {
                            operation: "consuming",
                            source: error,
                        })
                    }
                    _ => {
                        tracing::warn!(%error, "The consumer reported an error; it keeps retrying.")
                    }
                },
            }
        }
        tracing::info!("Shutting down: committing the open batch.");
        self.commit(&mut buffer)?;
        let transactions = self.consumer.context().transactions();
        transactions.drain()?;
        let stats = transactions.stats;
        drop(transactions);
        self.log_summary(summarised);
        // Dropping the consumer closes it: it leaves the group (revoking with nothing open).
        Ok(stats)
    }

    fn on_processed(&self, outcome: Result<(), Poison>) -> Result<(), EngineError> {
        match outcome {
            Ok(()) => Ok(()),
            Err(Poison::Engine(error)) => Err(error),
            Err(Poison::Record {
                topic,
                partition,
                offset,
                error,
            }) => match self.poison_policy {
                PoisonPolicy::Fail => {
                    let aborted = self.consumer.context().transactions().abort();
                    if let Err(abort_error) = aborted {
                        tracing::error!(error = %abort_error, "Aborting after a poison record failed.");
                    }
                    Err(EngineError::Poison {
                        topic,
                        partition,
                        offset,
                        error,
                    })
                }
            },
        }
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
            buffer.clear();
            offsets::rewind(&self.consumer, &batch)?;
        }
        // at_most_once: a revoke committed the buffered records' offsets; produce them now.
        if !buffer.is_empty() && !self.consumer.context().transactions().is_open() {
            self.produce_buffer(buffer)?;
        }
        Ok(())
    }

    fn batch_due(&self) -> bool {
        let transactions = self.consumer.context().transactions();
        transactions.batch().is_some_and(|batch| {
            batch.records >= self.max_records_per_txn
                || batch.started.elapsed() >= self.commit_interval
        })
    }

    fn poll_wait(&self) -> Duration {
        let transactions = self.consumer.context().transactions();
        match transactions.batch() {
            Some(batch) => {
                (batch.started + self.commit_interval).saturating_duration_since(Instant::now())
            }
            None => MAX_POLL_WAIT,
        }
        .min(MAX_POLL_WAIT)
    }

    /// Commits the open batch; after an abort, rewinds. In at_most_once mode, produces the
    /// buffered records once their offsets are committed.
    fn commit(&mut self, buffer: &mut Vec<OwnedMessage>) -> Result<(), EngineError> {
        let outcome = self
            .consumer
            .context()
            .transactions()
            .commit(&self.consumer)?;
        match outcome {
            CommitOutcome::Committed => self.produce_buffer(buffer),
            CommitOutcome::Aborted(batch) => {
                buffer.clear();
                offsets::rewind(&self.consumer, &batch)
            }
        }
    }

    fn produce_buffer(&mut self, buffer: &mut Vec<OwnedMessage>) -> Result<(), EngineError> {
        for message in buffer.drain(..) {
            let outcome = process(
                &mut *self.topology,
                &self.routes,
                &self.consumer,
                &message,
                false,
            );
            self.on_processed(outcome)?;
        }
        Ok(())
    }

    fn log_summary(&self, before: WorkerStats) -> WorkerStats {
        let now = self.consumer.context().transactions().stats;
        let rebalances = self.consumer.context().pending().rebalances;
        tracing::info!(
            records_in = now.records_in,
            records_out = now.records_out,
            commits = now.commits,
            aborts = now.aborts,
            rebalances,
            records_in_since_last = now.records_in - before.records_in,
            "Stage progress."
        );
        now
    }
}

/// Why a record was not processed.
enum Poison {
    /// The record itself is bad (the poison policy decides).
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        error: TopologyError,
    },
    /// Kafka failed while writing the outputs.
    Engine(EngineError),
}

impl From<EngineError> for Poison {
    fn from(error: EngineError) -> Self {
        Self::Engine(error)
    }
}

fn note_consumed(
    consumer: &BaseConsumer<StageContext>,
    message: &BorrowedMessage<'_>,
) -> Result<(), EngineError> {
    consumer.context().transactions().record_consumed(
        message.topic(),
        message.partition(),
        message.offset(),
    )
}

/// Runs the topology on one record and sends its outputs. `open_batch` is false when the batch
/// was already accounted for (at_most_once produces after committing).
fn process<M>(
    topology: &mut dyn Topology,
    routes: &Routes,
    consumer: &BaseConsumer<StageContext>,
    message: &M,
    open_batch: bool,
) -> Result<(), Poison>
where
    M: Message,
    M::Headers: AsBorrowedHeaders,
{
    let headers = message
        .headers()
        .map(AsBorrowedHeaders::as_borrowed_headers);
    let record = Record {
        key: message.key(),
        value: message.payload(),
        headers: Headers::from_kafka(headers),
        context: Context {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
        },
    };
    let poison = |error: TopologyError| Poison::Record {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        error,
    };
    let mut emitter = Emitter::new();
    topology.process(&record, &mut emitter).map_err(poison)?;
    let outputs = emitter.into_records();
    // Resolve every route before sending anything, so a bad output name sends nothing.
    let mut topics = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let topic = routes.topic(output.output).ok_or_else(|| {
            poison(TopologyError::transform(format!(
                "the topology emitted to output {:?}, which it does not declare",
                output.output
            )))
        })?;
        topics.push(topic);
    }
    let mut transactions = consumer.context().transactions();
    if open_batch {
        transactions.record_consumed(message.topic(), message.partition(), message.offset())?;
    }
    for (output, topic) in outputs.iter().zip(topics) {
        transactions.send(topic, output)?;
    }
    transactions.serve_deliveries();
    Ok(())
}

/// Both kinds of consumed message expose their headers as [`BorrowedHeaders`].
trait AsBorrowedHeaders {
    fn as_borrowed_headers(&self) -> &BorrowedHeaders;
}

impl AsBorrowedHeaders for BorrowedHeaders {
    fn as_borrowed_headers(&self) -> &BorrowedHeaders {
        self
    }
}

impl AsBorrowedHeaders for OwnedHeaders {
    fn as_borrowed_headers(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}
