//! The dead-letter producer of a sink: a poison record (one the mapping cannot read, or a row
//! the database rejects) goes to `dead_letter_topic` with its original key, value and headers,
//! plus headers naming the error and the source topic, partition and offset.
//!
//! Dead letters are flushed (and every delivery checked) *before* the database commit of their
//! batch, so a committed batch never lost one. A crash between the flush and the commit writes
//! the batch's dead letters again when it is redone: the dead-letter topic is at-least-once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::config::StageConfig;
use crate::error::EngineError;
use crate::topology::headers;

/// How long a flush of the dead letters may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts failed deliveries.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "A dead letter was not delivered.");
        }
    }
}

/// Writes dead letters to one topic.
pub(super) struct DeadLetters {
    producer: BaseProducer<Deliveries>,
    topic: String,
    pending: usize,
}

impl DeadLetters {
    pub(super) fn new(config: &StageConfig, topic: &str) -> Result<Self, EngineError> {
        let mut client = ClientConfig::new();
        client.set(
            "client.id",
            format!("{}-dead-letters", config.transactional_id()),
        );
        config.security.apply(&mut client);
        for (key, value) in config.kafka.iter().chain(&config.producer) {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true");
        let producer = client
            .create_with_context(Deliveries::default())
            .map_err(|source| EngineError::Kafka {
                operation: "creating the dead-letter producer",
                source,
            })?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            pending: 0,
        })
    }

    /// Queues the dead letter of `message` (`class`: `decode` or `rejected`).
    pub(super) fn send<M: Message>(
        &mut self,
        message: &M,
        class: &str,
        error: &str,
    ) -> Result<(), EngineError> {
        let mut out = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let (partition, offset) = (
            message.partition().to_string(),
            message.offset().to_string(),
        );
        let timestamp = message.timestamp().to_millis().map(|t| t.to_string());
        for (key, value) in [
            (headers::ERROR_CLASS, Some(class)),
            (headers::ERROR_MESSAGE, Some(error)),
            (headers::SOURCE_TOPIC, Some(message.topic())),
            (headers::SOURCE_PARTITION, Some(partition.as_str())),
            (headers::SOURCE_OFFSET, Some(offset.as_str())),
            (headers::SOURCE_TIMESTAMP, timestamp.as_deref()),
        ] {
            if let Some(value) = value {
                out = out.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(out);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((source, _)) => {
                    return Err(EngineError::Kafka {
                        operation: "sending a dead letter",
                        source,
                    })
                }
            }
        }
        self.pending += 1;
        Ok(())
    }

    /// Waits until every queued dead letter is delivered; an error if one was not.
    pub(super) fn flush(&mut self) -> Result<(), EngineError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|source| EngineError::Kafka {
                operation: "flushing the dead letters",
                source,
            })?;
        self.pending = 0;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            return Err(EngineError::Internal(format!(
                "{failed} dead letter(s) were not delivered to {}; the batch is not committed",
                self.topic
            )));
        }
        Ok(())
    }
}
