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
//! is discarded. A panic in `Topology::process` is caught and is a poison record of class
//! `panic`. An `Unavailable` error (the schema registry does not answer) is not the
//! record's fault: it stops the stage under every policy, and nothing is dead-lettered for it.

use std::any::Any;
use std::borrow::Cow;
use std::panic::{self, AssertUnwindSafe};

use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders};

use crate::config::{PoisonPolicy, StageConfig};
use crate::error::EngineError;
use crate::state::runtime::StateRuntime;
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
    /// The producer's `message.max.bytes`: an output above it is rejected by librdkafka on
    /// every try, so it is poison (`output_rejected`) before anything of its record is sent.
    max_message_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
pub(crate) const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The most a record batch v2 adds to one record besides its key, value and headers (length,
/// attributes, timestamp and offset deltas, key, value and header-count varints), as
/// librdkafka counts it (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`), rounded up.
const RECORD_OVERHEAD: usize = 40;
/// The most a header adds besides its name and value (two varint lengths).
const HEADER_OVERHEAD: usize = 10;

impl RecordHandling {
    pub(crate) fn new(config: &StageConfig, max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
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

    pub(crate) fn topic(&self, output: &str) -> Option<&str> {
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
///
/// With `state` (a stateful topology), the record runs with its partition's state; its state
/// writes are kept only when its outputs are (`end_record`), and rolled back otherwise.
pub(crate) fn process<'a, 'h>(
    topology: &mut dyn Topology,
    handling: &'h RecordHandling,
    record: &Record<'a>,
    mut state: Option<&mut StateRuntime>,
) -> Result<Processed<'a, 'h>, EngineError> {
    let transformed = transform(topology, handling, record, state.as_deref_mut());
    match transformed.and_then(|outputs| {
        fits(handling, record, &outputs)?;
        Ok(outputs)
    }) {
        Ok(outputs) => {
            if let Some(state) = state {
                state.end_record()?;
            }
            Ok(Processed::Outputs(outputs))
        }
        Err(error) => {
            if let Some(state) = state {
                state.undo_record();
            }
            poison(handling, record, error)
        }
    }
}

/// The poison policy's decision for a record that cannot be processed (or whose output was
/// rejected); an `Unavailable` error stops the stage instead.
pub(crate) fn poison<'a, 'h>(
    handling: &'h RecordHandling,
    record: &Record<'a>,
    error: TopologyError,
) -> Result<Processed<'a, 'h>, EngineError> {
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
            truncate_to_fit(handling, &mut letter);
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
    state: Option<&mut StateRuntime>,
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
    // A panic in user code is caught here: it must never unwind through the worker (whose
    // consumer would close and revoke) and never commit anything of its batch. The topology
    // instance goes on being used; its outputs for this record are discarded.
    let processed = panic::catch_unwind(AssertUnwindSafe(|| match state {
        Some(state) => state.run(topology, record, &mut emitter),
        None => topology.process(record, &mut emitter),
    }));
    match processed {
        Ok(result) => result?,
        Err(payload) => return Err(TopologyError::panic(panic_message(payload.as_ref()))),
    }
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

/// The text a panic was raised with.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    format!("the topology panicked: {text}")
}

/// The size librdkafka gives a record on the wire, with the provenance headers if they are
/// added.
fn wire_size(record: &OutputRecord<'_>, provenance: Option<&Context<'_>>) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| HEADER_OVERHEAD + name.len() + value.as_ref().map_or(0, |v| v.len()))
        .sum();
    let provenance = provenance.map_or(0, |source| {
        let numbers = 11 + 20; // a partition and an offset, in decimal, at the most
        3 * HEADER_OVERHEAD
            + headers::SOURCE_TOPIC.len()
            + headers::SOURCE_PARTITION.len()
            + headers::SOURCE_OFFSET.len()
            + source.topic.len()
            + numbers
    });
    RECORD_OVERHEAD
        + record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + headers
        + provenance
}

/// Every output fits `message.max.bytes`; the first that does not is the record's poison.
fn fits(
    handling: &RecordHandling,
    record: &Record<'_>,
    outputs: &[(&str, OutputRecord<'_>)],
) -> Result<(), TopologyError> {
    let provenance = handling.provenance_headers.then_some(&record.context);
    for (topic, output) in outputs {
        let size = wire_size(output, provenance);
        if size > handling.max_message_bytes {
            return Err(TopologyError::output_rejected(format!(
                "the output to topic {topic} would be {size} bytes with its headers, above the \
                 producer's message.max.bytes ({})",
                handling.max_message_bytes
            )));
        }
    }
    Ok(())
}

/// Cuts a dead letter's value so that the letter fits `message.max.bytes`, saying so in a
/// `kstage.error.truncated` header (the original value's size): a dead letter always fits.
fn truncate_to_fit(handling: &RecordHandling, letter: &mut OutputRecord<'_>) {
    // The provenance headers go on every dead letter; the truncation header is counted too.
    let context = Context {
        topic: "",
        partition: 0,
        offset: 0,
        timestamp: None,
    };
    let extra = 249 + HEADER_OVERHEAD + headers::ERROR_TRUNCATED.len() + 20; // topic name max
    let size = wire_size(letter, Some(&context)) + extra;
    let Some(value) = &letter.value else {
        return;
    };
    if size <= handling.max_message_bytes {
        return;
    }
    let original = value.len();
    let keep = original.saturating_sub(size - handling.max_message_bytes);
    let kept = value.get(..keep).map(<[u8]>::to_vec).unwrap_or_default();
    letter.value = Some(Cow::Owned(kept));
    letter.headers.push((
        Cow::Borrowed(headers::ERROR_TRUNCATED),
        Some(Cow::Owned(original.to_string().into_bytes())),
    ));
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
