//! One input record through the topology: size check, `Topology::process`, routing, and the
//! poison policy's decision for a record that cannot be processed. No Kafka call is made here:
//! the runner sends what this returns.
//!
//! ```text
//!   message ──► Record ──► max_value_bytes? ──► Topology::process ──► every output routed?
//!                              │                     │ error                  │
//!                              └──── poison ◄────────┴────────────────────────┘
//!   poison: fail ──► EngineError::Poison        skip ──► Processed::Skipped
//!           dead_letter ──► Processed::DeadLetter (original key, value, headers + error headers)
//! ```
//!
//! Under every policy a poison record leaves no partial output: what the topology emitted for it
//! is discarded. An `Unavailable` error (the schema registry does not answer) is not the
//! record's fault: it stops the stage under every policy, and nothing is dead-lettered for it.

use std::borrow::Cow;

use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders};

use crate::config::{PoisonPolicy, StageConfig};
use crate::error::EngineError;
use crate::topology::headers;
use crate::topology::{Context, Emitter, Headers, OutputRecord, Record, Topology, TopologyError};

/// How records are handled, resolved once from the config.
#[derive(Debug)]
pub(crate) struct RecordHandling {
    /// Output name -> topic.
    routes: Vec<(String, String)>,
    poison_policy: PoisonPolicy,
    dead_letter_topic: Option<String>,
    pub(crate) provenance_headers: bool,
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

/// What to send for one input record.
#[derive(Debug)]
pub(crate) enum Processed<'a, 'h> {
    /// The topology's outputs, each with its topic.
    Outputs(Vec<(&'h str, OutputRecord<'a>)>),
    /// A poison record under `skip`: nothing is sent, its offset commits with the batch.
    Skipped(TopologyError),
    /// A poison record under `dead_letter`: this letter goes to the dead-letter topic, in the
    /// same transaction as the record's offset.
    DeadLetter {
        topic: &'h str,
        letter: OutputRecord<'a>,
        error: TopologyError,
    },
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

/// The topology's view of a consumed message.
pub(crate) fn record_of<M>(message: &M) -> Record<'_>
where
    M: Message,
    M::Headers: AsBorrowedHeaders,
{
    let headers = message
        .headers()
        .map(AsBorrowedHeaders::as_borrowed_headers);
    Record {
        key: message.key(),
        value: message.payload(),
        headers: Headers::from_kafka(headers),
        context: Context {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
        },
    }
}

/// Key plus value bytes, as counted by the metrics.
pub(crate) fn record_size(record: &Record<'_>) -> usize {
    record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len)
}

/// Runs the topology on one record and returns what to send, or the poison policy's decision.
/// Returns [`EngineError::Poison`] under policy `fail`, [`EngineError::Unavailable`] when a
/// service the record needs does not answer.
pub(crate) fn process<'a, 'h>(
    topology: &mut dyn Topology,
    handling: &'h RecordHandling,
    record: &Record<'a>,
) -> Result<Processed<'a, 'h>, EngineError> {
    let error = match transform(topology, handling, record) {
        Ok(outputs) => return Ok(Processed::Outputs(outputs)),
        Err(error) => error,
    };
    let Context {
        topic,
        partition,
        offset,
        timestamp,
    } = record.context;
    if !error.kind.is_poison() {
        return Err(EngineError::Unavailable {
            topic: topic.to_string(),
            partition,
            offset,
            message: error.message,
        });
    }
    match (handling.poison_policy, &handling.dead_letter_topic) {
        (PoisonPolicy::Fail, _) => Err(EngineError::Poison {
            topic: topic.into(),
            partition,
            offset,
            error,
        }),
        (PoisonPolicy::DeadLetter, Some(dead_letter_topic)) => {
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
            Ok(Processed::DeadLetter {
                topic: dead_letter_topic,
                letter,
                error,
            })
        }
        _ => Ok(Processed::Skipped(error)),
    }
}

/// The topology's outputs for a record, every one routed to a topic; nothing is sent yet.
fn transform<'a, 'h>(
    topology: &mut dyn Topology,
    handling: &'h RecordHandling,
    record: &Record<'a>,
) -> Result<Vec<(&'h str, OutputRecord<'a>)>, TopologyError> {
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
    emitter
        .into_records()
        .into_iter()
        .map(|output| match handling.topic(output.output) {
            Some(topic) => Ok((topic, output)),
            None => Err(TopologyError::transform(format!(
                "the topology emitted to output {:?}, which it does not declare",
                output.output
            ))),
        })
        .collect()
}
