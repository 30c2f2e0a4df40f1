//! Wall-clock timers, the state side: which held partitions have timers due at the engine's
//! clock, and firing them with no input record.
//!
//! ```text
//!   engine tick (every WALL_TICK, input or not) ──► wall_due(now): partitions with a timer
//!       at <= now (one range scan of the timer store each, limit 1)
//!   per due partition: the worker opens the transaction ──► fire_wall(topology, p, now)
//!       begin (undo log) ──► each due timer: delete it, on_wall_timer(timer, State, out)
//!       ──► end_record (the deletes and the callback's writes become changelog writes) or,
//!           on an error, undo_record (the timers stay; the stage stops)
//! ```
//!
//! Invariants:
//! * A wall-clock timer fires once: its delete is staged in the same transaction as what its
//!   callback writes and emits, so both commit or neither does; an abort drops the delete
//!   (the local store still holds the timer) and the timer fires again at the next tick.
//! * Only partitions this worker holds (restored) fire; the worker opens every assigned
//!   partition of a topology that uses wall-clock timers as soon as it is assigned
//!   ([`super::StatefulTopology::wall_timers`]), so a crash or a rebalance does not leave a
//!   quiet partition's timers unfired.

use super::StateRuntime;
use crate::state::partition::PartitionState;
use crate::state::timers;
use crate::state::{FiredTimer, State, StatefulTopology};
use crate::topology::{Emitter, OutputRecord, Topology, TopologyError};

/// Wall-clock timers one partition may fire in one tick at the most (a callback that keeps
/// setting due timers would loop); the rest fire at the next tick.
const MAX_WALL_TIMERS_PER_TICK: usize = 10_000;

impl StateRuntime {
    /// Whether the topology declared a timer store.
    pub(crate) fn has_timer_store(&self) -> bool {
        self.stores.iter().any(|d| d.timers)
    }

    /// Whether this worker holds (has restored) the state of `partition`.
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .contains_key(&(topic.to_string(), partition))
    }

    /// The held partitions with a wall-clock timer due at `now` (ms since the Unix epoch).
    pub(crate) fn wall_due(&self, now: i64) -> Result<Vec<(String, i32)>, TopologyError> {
        let mut due = Vec::new();
        for (key, part) in &self.partitions {
            let Some(index) = part.timer_index() else {
                continue;
            };
            let first = part
                .range(
                    index,
                    &timers::wall_first_key(),
                    Some(&timers::wall_due_bound(now)),
                    1,
                )
                .map_err(|e| TopologyError::unavailable(e.to_string()))?;
            if !first.is_empty() {
                due.push(key.clone());
            }
        }
        Ok(due)
    }

    /// Fires the wall-clock timers of `partition` due at `now`, each deleted as it fires, and
    /// returns what their callbacks emitted. The caller has opened the transaction; it ends
    /// the firing with [`Self::end_record`] (sent) or [`Self::undo_record`] (failed).
    pub(crate) fn fire_wall(
        &mut self,
        topology: &mut dyn Topology,
        topic: &str,
        partition: i32,
        now: i64,
    ) -> Result<Vec<OutputRecord<'static>>, TopologyError> {
        if !self.select(topic, partition) {
            return Ok(Vec::new());
        }
        let part = self.current()?;
        part.begin_record(None)
            .map_err(|e| TopologyError::unavailable(e.to_string()))?;
        let Some(stateful) = topology.as_stateful() else {
            return Ok(Vec::new());
        };
        part.wall_now = Some(now);
        let result = fire_wall_on(part, stateful, now);
        part.wall_now = None;
        result
    }
}

/// Fires the wall-clock timers of `part` due at `now` (begun), each deleted as it fires;
/// returns what the callbacks emitted.
pub(crate) fn fire_wall_on(
    part: &mut PartitionState,
    stateful: &mut dyn StatefulTopology,
    now: i64,
) -> Result<Vec<OutputRecord<'static>>, TopologyError> {
    let Some(index) = part.timer_index() else {
        return Ok(Vec::new());
    };
    let mut out = Emitter::new();
    let mut fired = 0;
    loop {
        let due = part
            .range(
                index,
                &timers::wall_first_key(),
                Some(&timers::wall_due_bound(now)),
                256,
            )
            .map_err(|e| TopologyError::unavailable(e.to_string()))?;
        if due.is_empty() || fired >= MAX_WALL_TIMERS_PER_TICK {
            return Ok(out.into_records());
        }
        for (key, _) in due {
            let Some((at, tag)) = timers::parse_wall_key(&key) else {
                continue;
            };
            let timer = FiredTimer {
                at,
                tag: tag.to_vec(),
            };
            part.put(index, &key, None);
            stateful.on_wall_timer(&timer, &mut State { part }, &mut out)?;
            fired += 1;
        }
    }
}
