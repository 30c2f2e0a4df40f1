//! [`TestState`]: runs a stateful topology on records without a broker, for unit tests of
//! topologies (the built-in ones use it, and so can a user's).
//!
//! Each [`TestState::process`] is one record in a transaction of its own that commits at once:
//! the same staging, undo on error, timers and local store as in a stage, with no changelog.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::partition::PartitionState;
use super::runtime::{fire_wall_on, run_on};
use super::store::LocalStore;
use super::{State, StatefulTopology, StoreDef};
use crate::topology::{Emitter, OutputRecord, Record, TopologyError};

/// One partition's state in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct TestState {
    part: PartitionState,
    dir: PathBuf,
}

impl TestState {
    /// Fresh, empty state for `topology`'s stores, as input partition `partition`.
    pub fn new(topology: &dyn StatefulTopology, partition: i32) -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kstage-test-state-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let defs: Vec<StoreDef> = topology
            .stores()
            .iter()
            .map(|spec| StoreDef {
                name: spec.name.to_string(),
                changelog: Arc::from(super::topics::changelog_topic("test", spec.name)),
                timers: spec.timers,
            })
            .collect();
        let local = LocalStore::open(&dir.join("state.redb")).map_err(|e| e.to_string())?;
        let part = PartitionState::new(partition, local, defs.into()).map_err(|e| e.to_string())?;
        Ok(Self { part, dir })
    }

    /// Runs one record (and the timers it makes due) and commits; on an error nothing of the
    /// record remains, as in a stage.
    pub fn process<'a>(
        &mut self,
        topology: &mut dyn StatefulTopology,
        record: &Record<'a>,
    ) -> Result<Vec<OutputRecord<'a>>, TopologyError> {
        self.part
            .begin_record(record.context.timestamp)
            .map_err(|e| TopologyError::unavailable(e.to_string()))?;
        let mut out = Emitter::new();
        match run_on(&mut self.part, topology, record, &mut out) {
            Ok(()) => {
                self.part.end_record();
                let mut sent = Vec::new();
                self.part.take_changelog(&mut sent);
                self.part
                    .committed(|_| None)
                    .map_err(|e| TopologyError::unavailable(e.to_string()))?;
                Ok(out.into_records())
            }
            Err(error) => {
                self.part.undo_record();
                Err(error)
            }
        }
    }

    /// Sets the wall clock the topology sees (ms since the Unix epoch) from now on; without
    /// it, the system clock.
    pub fn set_wall_clock(&mut self, now: i64) {
        self.part.wall_now = Some(now);
    }

    /// Fires the wall-clock timers due at `now` (as the engine does, input or not) and
    /// commits; sets the wall clock to `now`. On an error nothing of the firing remains.
    pub fn fire_wall_timers(
        &mut self,
        topology: &mut dyn StatefulTopology,
        now: i64,
    ) -> Result<Vec<OutputRecord<'static>>, TopologyError> {
        self.part
            .begin_record(None)
            .map_err(|e| TopologyError::unavailable(e.to_string()))?;
        self.part.wall_now = Some(now);
        match fire_wall_on(&mut self.part, topology, now) {
            Ok(out) => {
                self.part.end_record();
                let mut sent = Vec::new();
                self.part.take_changelog(&mut sent);
                self.part
                    .committed(|_| None)
                    .map_err(|e| TopologyError::unavailable(e.to_string()))?;
                self.part.wall_now = Some(now);
                Ok(out)
            }
            Err(error) => {
                self.part.undo_record();
                self.part.wall_now = Some(now);
                Err(error)
            }
        }
    }

    /// The state, to look into (or to set up) between records.
    pub fn state(&mut self) -> State<'_> {
        State {
            part: &mut self.part,
        }
    }
}

impl Drop for TestState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
