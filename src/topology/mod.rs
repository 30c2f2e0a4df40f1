//! The topology API: what a user implements to turn input records into output records.
//!
//! A topology is a small, synchronous transform. The engine polls records from the input topics,
//! hands each one to [`Topology::process`] as a borrowed [`Record`], and writes whatever the
//! topology emits through the [`Emitter`] to the output topics, inside the stage's transaction (in
//! `exactly_once` mode). A topology never talks to Kafka itself, so everything it emits for one
//! input record is committed, or aborted, together with that record's offset.
//!
//! ```
//! use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError};
//!
//! /// Upper-cases UTF-8 values; keys and headers pass through.
//! struct Shout;
//!
//! impl Topology for Shout {
//!     fn process<'a>(
//!         &mut self,
//!         record: &Record<'a>,
//!         out: &mut Emitter<'a>,
//!     ) -> Result<(), TopologyError> {
//!         let text = record.value_str()?;
//!         out.emit(OutputRecord::from_input(record).value(text.to_uppercase().into_bytes()));
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Outputs are addressed by name, not by topic: a topology emits to [`DEFAULT_OUTPUT`] or to any
//! other name it declares in [`Topology::outputs`], and the stage's configuration maps each name to
//! a topic (`[outputs]` in the config file, `--output` / `--route NAME=TOPIC` on the command line).
//! The same topology can so run in any environment, and a stage refuses to start when one of the
//! declared outputs has no topic.
//!
//! Errors are values: a [`TopologyError`] returned from `process` goes through the stage's poison
//! policy (see [`crate::config::PoisonPolicy`]); nothing in a topology should panic.

pub mod headers;
mod record;
mod registry;
mod typed;

pub use record::{Context, Emitter, Headers, OutputHeader, OutputRecord, Record};
pub use registry::{Registry, SinkTopologyInfo, TopologyFactory, TopologyInfo, TopologyParams};
pub use typed::{typed, TypedEmitter, TypedRecord, TypedTopology};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::Codecs;

use std::fmt;

/// The name of the output every topology has; `--output TOPIC` routes it.
pub const DEFAULT_OUTPUT: &str = "default";

/// A user's transform, run by a stage for every input record.
///
/// Only [`Topology::process`] is required. The engine calls a topology from one thread at a time
/// (each worker owns its own instance), so `&mut self` state needs no locking; it must be `Send`
/// so the engine can move it onto its worker thread.
pub trait Topology: Send {
    /// Transforms one input record into zero or more outputs.
    ///
    /// The emitter borrows from the record (`'a`), so a topology can forward the input's key, value
    /// or headers without copying them. Returning an error hands the record to the stage's poison
    /// policy; outputs already emitted for this record are discarded in that case.
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError>;

    /// The output names this topology emits to, besides [`DEFAULT_OUTPUT`]. The stage checks at
    /// start-up that each one is routed to a topic.
    fn outputs(&self) -> &[&'static str] {
        &[]
    }

    /// Called once before the first record, with what the stage was configured with: the codecs
    /// (formats, schema registry) and the output topics. An error stops the stage at start-up.
    fn on_start(&mut self, stage: &StageInfo) -> Result<(), String> {
        let _ = stage;
        Ok(())
    }

    /// Whether this topology emits to [`DEFAULT_OUTPUT`]. A sink-like topology that only routes to
    /// named outputs returns `false`, so the stage does not require `--output`.
    fn uses_default_output(&self) -> bool {
        true
    }

    /// The stores this topology uses (stateful topologies, see [`crate::state`]); the stage
    /// checks their changelogs at start-up. A stateless topology has none.
    fn stores(&self) -> Vec<crate::state::StoreSpec> {
        Vec::new()
    }

    /// The stateful topology behind this one, if it is one: [`crate::state::stateful`] wraps a
    /// [`crate::state::StatefulTopology`] so; the engine then runs it with its state.
    #[doc(hidden)]
    fn as_stateful(&mut self) -> Option<&mut dyn crate::state::StatefulTopology> {
        None
    }
}

/// What a stage hands its topology at start-up.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// The stage's codecs: formats per topic and the schema registry client.
    pub codecs: Arc<Codecs>,
    /// Output name -> topic.
    pub outputs: Arc<BTreeMap<String, String>>,
}

/// Why a topology could not process a record.
///
/// The class decides nothing by itself: every error goes through the stage's poison policy, and
/// the class and message end up in the log line (and, with a dead-letter policy, in the error
/// headers of the dead-lettered record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    /// What kind of failure this is.
    pub kind: TopologyErrorKind,
    /// A sentence saying what was wrong with the record.
    pub message: String,
}

/// The kind of a [`TopologyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyErrorKind {
    /// The record's bytes could not be decoded (malformed JSON, bad UTF-8, wrong wire format).
    Decode,
    /// The record decoded, but its content is not acceptable (a field missing or out of range).
    Invalid,
    /// The topology itself failed (a bug or an unmet precondition in the transform).
    Transform,
    /// A service the topology depends on (the schema registry) did not answer. Not the record's
    /// fault: the stage stops instead of applying the poison policy.
    Unavailable,
    /// The topology panicked on the record. The engine catches the panic, so nothing of the
    /// record's batch commits because of it; the record follows the poison policy.
    Panic,
    /// The record's output was rejected by Kafka for what it is (too large for
    /// `message.max.bytes`, no key for a compacted topic, ...): it would be rejected on every
    /// retry, so it follows the poison policy.
    OutputRejected,
}

impl TopologyError {
    /// A record whose bytes could not be decoded.
    pub fn decode(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::Decode,
            message: message.into(),
        }
    }

    /// A decoded record whose content is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// A service the record's processing depends on did not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// A failure of the transform itself.
    pub fn transform(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::Transform,
            message: message.into(),
        }
    }

    /// A panic of the topology, caught by the engine.
    pub fn panic(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::Panic,
            message: message.into(),
        }
    }

    /// An output Kafka rejects for what it is.
    pub fn output_rejected(message: impl Into<String>) -> Self {
        Self {
            kind: TopologyErrorKind::OutputRejected,
            message: message.into(),
        }
    }
}

impl TopologyErrorKind {
    /// The kind as a short lowercase word, as used in logs and error headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Invalid => "invalid",
            Self::Transform => "transform",
            Self::Unavailable => "unavailable",
            Self::Panic => "panic",
            Self::OutputRejected => "output_rejected",
        }
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for TopologyError {}
