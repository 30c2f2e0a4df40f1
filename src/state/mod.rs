//! Stateful topologies: keyed stores scoped to an input partition, event-time and wall-clock
//! timers, and the recipe that keeps them exactly-once through the stage's Kafka transaction.
//!
//! ```text
//!  record ──► StatefulTopology::process(record, State, out)
//!               State::store(name).put/delete ──► staged in memory (reads see them)
//!  record ok ──► each staged write ──► <app_id>-<store>-changelog, partition = input partition,
//!                                      in the SAME transaction as outputs and offsets
//!  committed ──► staged writes + changelog offset reached ──► local redb file, one atomic write
//!  aborted   ──► staged writes dropped (the rewind re-reads the records)
//!  first record of a newly owned partition ──► restore: local offset .. changelog end,
//!                                      read_committed, before the record is processed
//! ```
//!
//! Why no wipe is ever needed after a crash (docs/STATE.md has the long form):
//! * before the commit, the local store is untouched (writes are only staged);
//! * between the commit and the local write, the changelog holds the writes and the local
//!   offset still points before them, so the next restore replays them;
//! * an in-doubt commit (outcome unknown) stops the worker without applying anything: the
//!   restore after the restart finds out from the changelog what committed.
//!
//! * [`api`]: [`State`] and [`Store`], what a topology calls.
//! * `partition`: staging, undo per record, stream time, apply on commit.
//! * `store`: the local redb file of one partition.
//! * `restore`: local offset to changelog end, read_committed.
//! * `runtime`: the engine's side: partitions owned, transaction outcomes, timers firing;
//!   its `wall` part fires wall-clock timers without input.
//! * `timers`: timer keys in the timer store.
//! * [`TestState`]: runs a stateful topology without a broker, for unit tests.
//! * [`topics`]: changelog names, the start-up check and `kstage topics create`.

mod api;
mod cursor;
mod partition;
mod restore;
pub(crate) mod runtime;
mod store;
mod testing;
mod timers;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

pub use api::{FiredTimer, State, Store};
pub use testing::TestState;
pub(crate) use timers::wall_clock_now;

use crate::topology::{Emitter, Record, StageInfo, Topology, TopologyError};

/// A store entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A store a topology declares: its name (the changelog is `<app_id>-<name>-changelog`), what
/// its keys and values are (for `kstage state inspect` and the docs), and for windowed stores
/// how long entries are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// The store's name: lowercase letters, digits, `-` and `_`.
    pub name: &'static str,
    /// What a key is, in words (e.g. "the input key, raw bytes").
    pub key: &'static str,
    /// What a value is, in words (e.g. "count, u64 big-endian").
    pub value: &'static str,
    /// Windowed stores: how long after a window closes its entry may remain (informational;
    /// windowed topologies delete closed windows themselves).
    pub retention: Option<Duration>,
    /// The timer store: holds the event-time and wall-clock timers and the stream time.
    pub timers: bool,
}

impl StoreSpec {
    /// A keyed store.
    pub const fn keyed(name: &'static str, key: &'static str, value: &'static str) -> Self {
        Self {
            name,
            key,
            value,
            retention: None,
            timers: false,
        }
    }

    /// A windowed store whose entries are kept `retention` past their window's end.
    pub const fn windowed(
        name: &'static str,
        key: &'static str,
        value: &'static str,
        retention: Duration,
    ) -> Self {
        Self {
            name,
            key,
            value,
            retention: Some(retention),
            timers: false,
        }
    }

    /// The timer store (event-time and wall-clock timers, stream time), named `timers`.
    pub const fn timers() -> Self {
        Self {
            name: "timers",
            key: "event timer: 0x00 | time | tag; wall-clock timer: 0x01 | time | tag; stream \
                  time: 0xff stream_time",
            value: "empty; stream time: 8 bytes",
            retention: None,
            timers: true,
        }
    }
}

/// A declared store as the engine uses it: its name and its changelog topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreDef {
    pub(crate) name: String,
    pub(crate) changelog: Arc<str>,
    pub(crate) timers: bool,
}

/// Why state could not be read, written or restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The local store file failed (disk full, permissions, a corrupt file).
    #[error("the local state store failed: {0}")]
    Storage(String),
    /// The changelog could not be read to its end.
    #[error("restoring from the changelog failed: {0}")]
    Restore(String),
}

/// A topology with state. Only [`StatefulTopology::stores`] and [`StatefulTopology::process`]
/// are required; register it with [`stateful`].
///
/// The engine calls it from one thread at a time, with the [`State`] of the record's input
/// partition. Everything it writes to the state and emits for one record commits or aborts
/// together with that record's offset; when the record fails (poison), its state writes are
/// rolled back with its outputs.
pub trait StatefulTopology: Send {
    /// The stores this topology uses; the stage checks their changelogs at start-up.
    fn stores(&self) -> Vec<StoreSpec>;

    /// Processes one record with its partition's state.
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        state: &mut State<'_>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError>;

    /// An event-time timer fired (the partition's stream time reached it), in the same
    /// transaction as the record that advanced the stream time. An error stops the stage.
    fn on_timer(
        &mut self,
        timer: &FiredTimer,
        state: &mut State<'_>,
        out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        let _ = (timer, state, out);
        Ok(())
    }

    /// A wall-clock timer fired (the engine's clock reached it), even if the partition has
    /// had no record since: in the same transaction as what this callback writes and emits,
    /// which deletes the timer (an abort brings it back, and it fires again). Its outputs
    /// carry no provenance headers (no input record made them). An error stops the stage.
    fn on_wall_timer(
        &mut self,
        timer: &FiredTimer,
        state: &mut State<'_>,
        out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        let _ = (timer, state, out);
        Ok(())
    }

    /// Whether this topology sets wall-clock timers. `true` makes the engine look for due ones
    /// every 100 ms, and open (restore) every assigned partition's state as soon as it is
    /// assigned rather than at its first record, so that a quiet partition's timers fire after
    /// a restart or a rebalance too.
    fn wall_timers(&self) -> bool {
        false
    }

    /// The output names besides the default one (see [`Topology::outputs`]).
    fn outputs(&self) -> &[&'static str] {
        &[]
    }

    /// Called once before the first record (see [`Topology::on_start`]).
    fn on_start(&mut self, stage: &StageInfo) -> Result<(), String> {
        let _ = stage;
        Ok(())
    }

    /// A partition's state was restored and its records are about to be processed.
    fn on_assigned(&mut self, topic: &str, partition: i32) {
        let _ = (topic, partition);
    }

    /// A partition was revoked: its last transaction has ended and its store is closed.
    fn on_revoked(&mut self, topic: &str, partition: i32) {
        let _ = (topic, partition);
    }

    /// The stage is shutting down, after its last commit.
    fn on_close(&mut self) {}
}

/// Wraps a stateful topology so that the registry and the engine can run it.
pub fn stateful<T: StatefulTopology + 'static>(topology: T) -> Box<dyn Topology> {
    Box::new(Stateful(topology))
}

/// The adapter [`stateful`] returns.
struct Stateful<T>(T);

impl<T: StatefulTopology> Topology for Stateful<T> {
    fn process<'a>(
        &mut self,
        _record: &Record<'a>,
        _out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        Err(TopologyError::transform(
            "a stateful topology was run without its state",
        ))
    }

    fn outputs(&self) -> &[&'static str] {
        self.0.outputs()
    }

    fn on_start(&mut self, stage: &StageInfo) -> Result<(), String> {
        self.0.on_start(stage)
    }

    fn as_stateful(&mut self) -> Option<&mut dyn StatefulTopology> {
        Some(&mut self.0)
    }

    fn stores(&self) -> Vec<StoreSpec> {
        self.0.stores()
    }
}
