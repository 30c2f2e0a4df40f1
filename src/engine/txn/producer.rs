//! The worker's producer: creation, `init_transactions`, `begin_transaction`, one record's send
//! with its provenance headers, and delivery tracking.
//!
//! ```text
//!   OutputRecord + Context ──► BaseRecord (+ kstage.source.* headers) ──► librdkafka queue
//!                                        full queue: serve delivery reports, retry until the
//!                                        transaction timeout
//! ```
//!
//! The producer is shared (an `Arc`) by the worker, which sends, and the commit thread, which
//! commits: librdkafka's producer is thread-safe, so no lock is taken to send. Every error leaves
//! here as an [`EngineError`] that names the operation and the transactional id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;

use super::log::{authorization_code_in, ProducerHooks};
use crate::config::DeliveryMode;
use crate::engine::retry::{retrying, retrying_counted, Retried};
use crate::error::{classify, EngineError, ErrorClass};
use crate::observability::StageMetrics;
use crate::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use crate::topology::{Context, OutputRecord};

/// The producer of one worker; transactional in exactly_once mode.
pub(crate) struct TransactionalProducer {
    producer: BaseProducer<ProducerHooks>,
    /// The settings it was created with: a re-created producer ([`Self::recreated`]) gets the
    /// same ones, the same transactional id included.
    config: ClientConfig,
    /// 0 for the worker's first producer, +1 for each re-creation (for messages).
    generation: u32,
    mode: DeliveryMode,
    /// `<app_id>-<instance_id>[-<worker>]`, for messages.
    transactional_id: String,
    /// Bounds every blocking call and retry loop of the commit path.
    transaction_timeout: Duration,
    /// For the fenced counter.
    metrics: Arc<StageMetrics>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("mode", &self.mode)
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Creates the producer. In exactly_once mode [`Self::init`] must run before the first
    /// transaction.
    pub(crate) fn new(
        mode: DeliveryMode,
        config: &ClientConfig,
        transactional_id: String,
        transaction_timeout: Duration,
        metrics: Arc<StageMetrics>,
    ) -> Result<Self, EngineError> {
        let producer = config
            .create_with_context(ProducerHooks::default())
            .map_err(|source| EngineError::Kafka {
                operation: "creating the producer",
                source,
            })?;
        Ok(Self {
            producer,
            config: config.clone(),
            generation: 0,
            mode,
            transactional_id,
            transaction_timeout,
            metrics,
        })
    }

    /// A new producer with the same settings and transactional id. Its [`Self::init`] bumps the
    /// epoch: every request still in flight from this one (a late EndTxn) is fenced.
    pub(crate) fn recreated(&self) -> Result<Self, EngineError> {
        let mut next = Self::new(
            self.mode,
            &self.config,
            self.transactional_id.clone(),
            self.transaction_timeout,
            Arc::clone(&self.metrics),
        )?;
        next.generation = self.generation + 1;
        Ok(next)
    }

    /// Counts a re-creation in the metrics.
    pub(crate) fn count_recreation(&self) {
        self.metrics.producer_recreations.inc();
    }

    /// How many times this worker's producer was re-created before this one.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// Timed-out requests of the transaction protocol since the last call.
    pub(crate) fn take_coordinator_timeouts(&self) -> u64 {
        self.producer.context().take_coordinator_timeouts()
    }

    pub(crate) fn mode(&self) -> DeliveryMode {
        self.mode
    }

    pub(crate) fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    pub(crate) fn transaction_timeout(&self) -> Duration {
        self.transaction_timeout
    }

    /// The librdkafka producer, for the commit phases.
    pub(crate) fn client(&self) -> &BaseProducer<ProducerHooks> {
        &self.producer
    }

    /// A deadline one transaction timeout from now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.transaction_timeout
    }

    /// `init_transactions` (exactly_once): registers the transactional id with its coordinator,
    /// fences any predecessor with the same id and aborts its open transaction at once.
    pub(crate) fn init(&self) -> Result<(), EngineError> {
        if self.mode != DeliveryMode::ExactlyOnce {
            return Ok(());
        }
        let deadline = self.deadline();
        retrying("init_transactions", deadline, || {
            self.producer
                .init_transactions(super::commit::left(deadline))
        })
        .map_err(|e| self.fatal("init_transactions", e))
    }

    /// `begin_transaction` (exactly_once); forgets the last transaction's error line.
    pub(crate) fn begin(&self) -> Result<(), EngineError> {
        if self.mode == DeliveryMode::ExactlyOnce {
            self.producer
                .begin_transaction()
                .map_err(|e| EngineError::kafka("begin_transaction", e, &self.transactional_id))?;
        }
        self.producer.context().forget_txn_error();
        Ok(())
    }

    /// Sends one output record, with the provenance headers of `provenance` if given, and
    /// returns its key + value bytes. A full local queue is waited out by serving delivery
    /// reports, until the transaction timeout.
    pub(crate) fn send(
        &self,
        topic: &str,
        record: &OutputRecord<'_>,
        provenance: Option<&Context<'_>>,
    ) -> Result<usize, EngineError> {
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
        if let Some(partition) = record.partition {
            base = base.partition(partition);
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
                Ok(()) => return Ok(size),
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

    /// Serves the delivery reports that are ready, without blocking.
    pub(crate) fn serve_deliveries(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Polls delivery reports in 1 ms slices until nothing is in flight: rdkafka's flush polls
    /// in 100 ms slices, which would add up to 100 ms to every commit.
    pub(crate) fn await_deliveries(&self, deadline: Instant) -> Result<(), KafkaError> {
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// [`Self::await_deliveries`] before a commit: returns librdkafka's reason as soon as it
    /// has failed the transaction (a `TXNERR` since it began). Its queued messages then wait for
    /// the abort's epoch bump (after OUT_OF_ORDER_SEQUENCE_NUMBER, say) and would hold the wait
    /// until the deadline, and the commit could only fail.
    pub(crate) fn await_commit_deliveries(
        &self,
        deadline: Instant,
    ) -> Result<Option<String>, KafkaError> {
        while self.producer.in_flight_count() > 0 {
            if let Some(reason) = self.producer.context().txn_error() {
                return Ok(Some(reason));
            }
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(None)
    }

    /// Awaits every delivery before the process exits, bounded by the transaction timeout.
    pub(crate) fn drain(&self) -> Result<(), EngineError> {
        self.await_deliveries(self.deadline())
            .map_err(|source| EngineError::RetriesExhausted {
                operation: "awaiting deliveries",
                waited_secs: self.transaction_timeout.as_secs(),
                source,
            })
    }

    /// Failed deliveries since the producer was created.
    pub(crate) fn failed_deliveries(&self) -> u64 {
        self.producer.context().failed_deliveries()
    }

    /// Why an output was rejected for what it is, if one was since the last call.
    pub(crate) fn take_rejected(&self) -> Option<String> {
        self.producer.context().take_rejected()
    }

    /// The last failed delivery's error.
    pub(crate) fn last_delivery_error(&self) -> Option<String> {
        self.producer.context().last_delivery_error()
    }

    /// `abort_transaction`, retried until the transaction timeout; returns how many times it was
    /// repeated. Each call's timeout is what is left of that deadline. Deliveries are awaited first
    /// (bounded: a broker that is gone must not hold the abort): aborting while the first
    /// produce of a transaction is still in flight can reach a coordinator that has not
    /// registered the partition yet and turn into a fatal `INVALID_TXN_STATE` (librdkafka#4849).
    ///
    /// Once librdkafka has failed the transaction, outputs it still holds wait for the abort's
    /// epoch bump (after OUT_OF_ORDER_SEQUENCE_NUMBER, say), and librdkafka's abort flushes them
    /// first, waiting for every delivery report to be served (seen here: the abort hung until
    /// the watchdog). They belong to the transaction being aborted, so they are purged and their
    /// reports served before the abort.
    pub(crate) fn abort_transaction(&self) -> Result<u32, EngineError> {
        let _ = self.await_commit_deliveries(Instant::now() + Duration::from_secs(5));
        let held = self.producer.in_flight_count();
        if held > 0 {
            tracing::debug!(
                held,
                "Purging the aborted transaction's undelivered outputs."
            );
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            // Their delivery reports must be served too: librdkafka's abort flushes until no
            // message is left (rd_kafka_flush), and with the event API only a poll here serves
            // them; the commit thread would wait on itself.
            let _ = self.await_deliveries(Instant::now() + Duration::from_secs(5));
        }
        let (deadline, mut retries) = (self.deadline(), 0);
        retrying_counted("abort_transaction", deadline, &mut retries, || {
            self.producer
                .abort_transaction(super::commit::left(deadline))
        })
        .map_err(|e| self.fatal("abort_transaction", e))?;
        Ok(retries)
    }

    /// The error for a refused send. A send into a transaction that has already failed is
    /// refused with an erroneous state (`_STATE`); the cause is in librdkafka's last `TXNERR`
    /// line. An authorization failure named there (a missing Write ACL on an output makes
    /// AddPartitionsToTxn fail) is reported as such; anything else is
    /// [`EngineError::SendRefused`], which the worker answers with an abort and a rewind (under
    /// load the next send nearly always meets the failure before the commit does).
    fn send_failed(&self, error: KafkaError) -> EngineError {
        let refused_state = error.rdkafka_error_code() == Some(RDKafkaErrorCode::State);
        if self.mode == DeliveryMode::ExactlyOnce && refused_state {
            let reason = self.producer.context().txn_error();
            if let Some(code) = reason.as_deref().and_then(authorization_code_in) {
                tracing::error!(reason, "The transaction had failed before this send.");
                return EngineError::kafka(
                    "producing",
                    KafkaError::MessageProduction(code),
                    &self.transactional_id,
                );
            }
            // Failed in the background: abortable. The abort says whether it was fatal.
            return EngineError::SendRefused {
                reason: reason.unwrap_or_else(|| error.to_string()),
            };
        }
        self.fatal("producing", Retried::Failed(error))
    }

    /// Turns a final error into an [`EngineError`], recognising fencing and preferring the
    /// producer's recorded fatal error (a fatal state makes later calls report only `_FATAL`).
    pub(crate) fn fatal(&self, operation: &'static str, error: Retried) -> EngineError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::ClientContext;

    /// A producer that never connects (creating one does not): enough for the error mapping.
    fn producer(mode: DeliveryMode) -> TransactionalProducer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        if mode == DeliveryMode::ExactlyOnce {
            config.set("transactional.id", "unit-test");
        }
        TransactionalProducer::new(
            mode,
            &config,
            "unit-test".into(),
            Duration::from_secs(10),
            Arc::new(StageMetrics::new()),
        )
        .expect("a producer is created without connecting")
    }

    #[test]
    fn a_send_refused_by_a_failed_transaction_is_abortable_not_fatal() {
        let producer = producer(DeliveryMode::ExactlyOnce);
        producer.client().context().log(
            RDKafkaLogLevel::Error,
            "TXNERR",
            "Current transaction failed in state InTransaction: ProduceRequest failed: \
             Broker: Unknown producer id (UNKNOWN_PRODUCER_ID)",
        );
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::State);
        let error = producer.send_failed(refused);
        assert!(
            matches!(&error, EngineError::SendRefused { reason } if reason.contains("UNKNOWN_PRODUCER_ID")),
            "{error:?}"
        );
    }

    #[test]
    fn a_send_refused_for_a_missing_acl_names_the_authorization_failure() {
        let producer = producer(DeliveryMode::ExactlyOnce);
        producer.client().context().log(
            RDKafkaLogLevel::Error,
            "TXNERR",
            "Failed to add partition(s) to transaction: Broker: Topic authorization failed \
             (TOPIC_AUTHORIZATION_FAILED)",
        );
        let error = producer.send_failed(KafkaError::MessageProduction(RDKafkaErrorCode::State));
        assert!(
            matches!(error, EngineError::NotAuthorized { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn outside_exactly_once_a_refused_send_stays_fatal() {
        let producer = producer(DeliveryMode::AtLeastOnce);
        let error = producer.send_failed(KafkaError::MessageProduction(RDKafkaErrorCode::State));
        assert!(
            !matches!(error, EngineError::SendRefused { .. }),
            "{error:?}"
        );
    }
}
