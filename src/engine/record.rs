//! One input record through the topology: size check, `Topology::process`, routing, provenance
//! headers, and the poison policy for records that cannot be processed.
//!
//! Under every policy a poison record leaves no partial output: what the topology emitted for it
//! is discarded before anything is sent. Under `skip` and `dead_letter` the record still counts
//! as consumed, so its offset commits with the batch (and, under `dead_letter`, the dead-letter
//! record commits in the same transaction). Under `fail` the runner aborts the open transaction.
//! An `Unavailable` error (the schema registry does not answer) is not the record's fault: it
//! stops the stage under every policy, and nothing is dead-lettered for it.

use std::borrow::Cow;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders};

use super::rebalance::StageContext;
use crate::config::{PoisonPolicy, StageConfig};
use crate::error::EngineError;
use crate::observability::KindLabel;
use crate::topology::headers;
use crate::topology::{Context, Emitter, Headers, OutputRecord, Record, Topology, TopologyError};

/// How records are handled, resolved once from the config.
pub(crate) struct RecordHandling {
    /// Output name -> topic.
    routes: Vec<(String, String)>,
    poison_policy: PoisonPolicy,
    dead_letter_topic: Option<String>,
    provenance_headers: bool,
    max_value_bytes: usize,
}

impl RecordHandling {
    pub(crate) fn new(config: &StageConfig) -> Self {
        Self {
            routes: config
                .outputs
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
            poison_policy: config.poison_policy,
            dead_letter_topic: config.dead_letter_topic.clone(),
            provenance_headers: config.provenance_headers,
            max_value_bytes: config.max_value_bytes,
        }
    }

    fn topic(&self, output: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(name, _)| name == output)
            .map(|(_, topic)| topic.as_str())
    }
}

/// Both kinds of consumed message expose their headers as [`BorrowedHeaders`].
pub(crate) trait AsBorrowedHeaders {
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

/// Runs the topology on one record and sends its outputs, or applies the poison policy.
/// `open_batch` is false when the record's offset was already accounted for (at_most_once
/// produces after committing). Returns [`EngineError::Poison`] under policy `fail`.
pub(crate) fn handle<M>(
    topology: &mut dyn Topology,
    handling: &RecordHandling,
    consumer: &BaseConsumer<StageContext>,
    message: &M,
    open_batch: bool,
) -> Result<(), EngineError>
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
    let outputs = match transform(topology, handling, &record) {
        Ok(outputs) => outputs,
        Err(error) if !error.kind.is_poison() => {
            return Err(EngineError::Unavailable {
                topic: record.context.topic.to_string(),
                partition: record.context.partition,
                offset: record.context.offset,
                message: error.message,
            })
        }
        Err(error) => return poison(handling, consumer, &record, error, open_batch),
    };
    let mut transactions = consumer.context().transactions();
    if open_batch {
        transactions.record_consumed(
            record.context.topic,
            record.context.partition,
            record.context.offset,
            record_size(&record),
        )?;
    }
    let provenance = handling.provenance_headers.then_some(&record.context);
    for output in &outputs {
        // `transform` checked every route.
        if let Some(topic) = handling.topic(output.output) {
            transactions.send(topic, output, provenance)?;
        }
    }
    transactions.serve_deliveries();
    Ok(())
}

/// The topology's outputs for a record, every one routed to a topic; nothing is sent yet.
fn transform<'a>(
    topology: &mut dyn Topology,
    handling: &RecordHandling,
    record: &Record<'a>,
) -> Result<Vec<OutputRecord<'a>>, TopologyError> {
    if let Some(value) = record.value {
        if value.len() > handling.max_value_bytes {
            return Err(TopologyError::invalid(format!(
                "the value is {} bytes, above max_value_bytes ({})",
                value.len(),
                handling.max_value_bytes
            )));
        }
    }
    let mut emitter = Emitter::new();
    topology.process(record, &mut emitter)?;
    let outputs = emitter.into_records();
    if let Some(unrouted) = outputs.iter().find(|o| handling.topic(o.output).is_none()) {
        return Err(TopologyError::transform(format!(
            "the topology emitted to output {:?}, which it does not declare",
            unrouted.output
        )));
    }
    Ok(outputs)
}

/// Key plus value bytes, as counted by the metrics.
fn record_size(record: &Record<'_>) -> usize {
    record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len)
}

fn poison(
    handling: &RecordHandling,
    consumer: &BaseConsumer<StageContext>,
    record: &Record<'_>,
    error: TopologyError,
    open_batch: bool,
) -> Result<(), EngineError> {
    let Context {
        topic,
        partition,
        offset,
        timestamp,
    } = record.context;
    let dead_letter_topic = match (handling.poison_policy, &handling.dead_letter_topic) {
        (PoisonPolicy::Fail, _) => {
            return Err(EngineError::Poison {
                topic: topic.into(),
                partition,
                offset,
                error,
            })
        }
        (PoisonPolicy::DeadLetter, Some(dlq)) => Some(dlq.as_str()),
        _ => None,
    };
    let mut transactions = consumer.context().transactions();
    if open_batch {
        transactions.record_consumed(topic, partition, offset, record_size(record))?;
    }
    match dead_letter_topic {
        None => {
            transactions.stats.skipped += 1;
            transactions
                .metrics
                .poison_records
                .get_or_create(&KindLabel { kind: "skipped" })
                .inc();
            tracing::warn!(topic, partition, offset, error = %error, "Skipped a record that cannot be processed.");
        }
        Some(dlq) => {
            let mut letter = OutputRecord::new();
            letter.key = record.key.map(Cow::Borrowed);
            letter.value = record.value.map(Cow::Borrowed);
            letter.timestamp = timestamp;
            letter.headers = record
                .headers
                .iter()
                .map(|(name, value)| (Cow::Borrowed(name), value.map(Cow::Borrowed)))
                .collect();
            let mut add = |name: &'static str, value: String| {
                letter
                    .headers
                    .push((Cow::Borrowed(name), Some(Cow::Owned(value.into_bytes()))));
            };
            add(headers::ERROR_CLASS, error.kind.as_str().to_string());
            add(headers::ERROR_MESSAGE, error.message.clone());
            if let Some(ts) = timestamp {
                add(headers::SOURCE_TIMESTAMP, ts.to_string());
            }
            transactions.send(dlq, &letter, Some(&record.context))?;
            transactions.stats.dead_lettered += 1;
            let kind = KindLabel {
                kind: "dead_lettered",
            };
            transactions
                .metrics
                .poison_records
                .get_or_create(&kind)
                .inc();
            tracing::warn!(topic, partition, offset, dead_letter_topic = dlq, error = %error,
                "Dead-lettered a record that cannot be processed.");
        }
    }
    Ok(())
}
