//! The engine's side of state: the partitions a worker owns, restore before a partition's first
//! record, a record's run with its state and timers, and the transaction outcomes.
//!
//! ```text
//!   runner: record of partition p ──► open(p): restore if p is new to this worker
//!   record::process ──► run(topology, record): begin, process, fire due timers
//!                   ──► end_record (outputs ok) │ undo_record (poison, panic)
//!   runner ──► take_changelog ──► WorkerTxn::send (inside the transaction)
//!   WorkerTxn outcome Committed ──► committed: every partition applies its staged writes
//!                     Aborted / Dropped / fatal ──► aborted: staged writes dropped
//!   revoke (after its commit or abort ended) ──► close(p)
//! ```
//!
//! Invariants:
//! * A partition's first record is processed only after its restore completed
//!   ([`StateRuntime::open`] is called before `record::process`, and returns only then).
//! * The local store of a partition is written only on the `Committed` outcome of the worker's
//!   transaction (or by a restore). An in-doubt commit never reports `Committed`: the worker
//!   stops, and the restore after the restart learns the outcome from the changelog.
//! * Stateful stages run exactly_once without pipelined commits (checked at start-up), so at
//!   most one batch is unsettled: `Committed` applies, everything else discards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::partition::{ChangelogWrite, PartitionState};
use super::restore::Restorer;
use super::store::LocalStore;
use super::timers;
use super::{FiredTimer, State, StateError, StatefulTopology, StoreDef, StoreSpec};
use crate::engine::broken::Broken;
use crate::error::EngineError;
use crate::observability::{StageMetrics, StoreLabel, WorkerHealth};
use crate::topology::{Emitter, Record, Topology, TopologyError};

#[path = "wall.rs"]
mod wall;
pub(crate) use wall::fire_wall_on;

/// Timers one record may fire at the most (a callback that sets a due timer again would loop).
const MAX_TIMERS_PER_RECORD: usize = 100_000;

/// The state of one worker.
#[derive(Debug)]
pub(crate) struct StateRuntime {
    stores: Arc<[StoreDef]>,
    /// `<state_dir>/<app_id>/<transactional id>`.
    dir: PathBuf,
    restorer: Restorer,
    partitions: BTreeMap<(String, i32), PartitionState>,
    /// The partition of the record being processed.
    current: Option<(String, i32)>,
    metrics: Arc<StageMetrics>,
    health: Arc<WorkerHealth>,
    /// When the store-size gauges were last updated.
    sizes_at: Instant,
    /// When the worker last looked for due wall-clock timers.
    pub(crate) wall_checked_at: Option<Instant>,
}

/// How often the store-size and pending-timer gauges are refreshed (after a commit).
const SIZES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) use super::restore::RestoreContext;

/// The restore clients (see [`Restorer`]).
pub(crate) fn restorer(
    committed: rdkafka::config::ClientConfig,
    uncommitted: rdkafka::consumer::BaseConsumer<super::restore::RestoreContext>,
    patience: std::time::Duration,
) -> Restorer {
    Restorer {
        committed,
        uncommitted,
        patience,
    }
}

fn storage(error: StateError) -> EngineError {
    EngineError::State(error)
}

impl StateRuntime {
    pub(crate) fn new(
        app_id: &str,
        specs: &[StoreSpec],
        dir: PathBuf,
        restorer: Restorer,
        telemetry: (Arc<StageMetrics>, Arc<WorkerHealth>),
    ) -> Self {
        let stores: Vec<StoreDef> = specs
            .iter()
            .map(|spec| StoreDef {
                name: spec.name.to_string(),
                changelog: Arc::from(super::topics::changelog_topic(app_id, spec.name)),
                timers: spec.timers,
            })
            .collect();
        Self {
            stores: stores.into(),
            dir,
            restorer,
            partitions: BTreeMap::new(),
            current: None,
            metrics: telemetry.0,
            health: telemetry.1,
            sizes_at: Instant::now(),
            wall_checked_at: None,
        }
    }

    /// The local store file of an input partition.
    fn path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}.redb"))
    }

    /// Makes `partition` ready for its next record: if this worker does not hold it yet, opens
    /// its local store and restores it from the changelogs. Returns whether it was opened now.
    pub(crate) fn open(&mut self, topic: &str, partition: i32) -> Result<bool, EngineError> {
        let key = (topic.to_string(), partition);
        self.current = Some(key.clone());
        if self.partitions.contains_key(&key) {
            return Ok(false);
        }
        let started = Instant::now();
        let path = self.path(topic, partition);
        let local = LocalStore::open(&path).map_err(storage)?;
        self.health.set_restoring(true);
        self.metrics.state_restoring_partitions.inc();
        let restored = self.restore(&local, topic, partition);
        self.metrics.state_restoring_partitions.dec();
        self.health.set_restoring(false);
        let records = restored?;
        self.metrics
            .state_restore_seconds
            .observe(started.elapsed().as_secs_f64());
        let state =
            PartitionState::new(partition, local, Arc::clone(&self.stores)).map_err(storage)?;
        tracing::info!(
            topic,
            partition,
            records,
            seconds = started.elapsed().as_secs_f64(),
            path = %path.display(),
            "The partition's state is restored; processing it."
        );
        self.partitions.insert(key, state);
        Ok(true)
    }

    /// Restores every store of one partition; returns the records applied.
    fn restore(&self, local: &LocalStore, topic: &str, partition: i32) -> Result<u64, EngineError> {
        let mut records = 0;
        for def in self.stores.iter() {
            let label = StoreLabel {
                store: def.name.clone(),
            };
            let remaining = self
                .metrics
                .state_restore_remaining
                .get_or_create(&label)
                .clone();
            let applied = self
                .metrics
                .state_restore_records
                .get_or_create(&label)
                .clone();
            let mut reported = 0;
            let restored = self
                .restorer
                .restore(local, def, partition, |done, left| {
                    remaining.set(i64::try_from(left).unwrap_or(i64::MAX));
                    applied.inc_by(done - reported);
                    reported = done;
                })
                .map_err(|e| {
                    tracing::error!(topic, partition, error = %e, "The restore failed.");
                    EngineError::State(e)
                })?;
            remaining.set(0);
            records += restored.records;
            tracing::info!(
                store = %def.name,
                changelog = %def.changelog,
                partition,
                records = restored.records,
                from = restored.from,
                high_watermark = restored.to,
                "Restored a store from its changelog."
            );
        }
        Ok(records)
    }

    /// Refreshes the store-size and pending-timer gauges, at most every [`SIZES_EVERY`].
    fn refresh_sizes(&mut self) {
        if self.sizes_at.elapsed() < SIZES_EVERY {
            return;
        }
        self.sizes_at = Instant::now();
        let mut timers = 0;
        for (store, entries) in self.sizes() {
            let is_timers = self.stores.iter().any(|d| d.name == store && d.timers);
            if is_timers {
                // One entry per partition is its stream time, not a timer.
                timers += entries.saturating_sub(self.partitions.len() as u64);
            }
            self.metrics
                .state_entries
                .get_or_create(&StoreLabel { store })
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
        self.metrics
            .state_timers_pending
            .set(i64::try_from(timers).unwrap_or(i64::MAX));
    }

    /// Selects `partition` for the next record if this worker holds its state already (no
    /// allocation when it is the current one, the common case); `false` if it must be opened.
    pub(crate) fn select(&mut self, topic: &str, partition: i32) -> bool {
        if self
            .current
            .as_ref()
            .is_some_and(|(t, p)| *p == partition && t == topic)
        {
            return true;
        }
        let key = (topic.to_string(), partition);
        if self.partitions.contains_key(&key) {
            self.current = Some(key);
            return true;
        }
        false
    }

    fn current(&mut self) -> Result<&mut PartitionState, TopologyError> {
        let key = self.current.as_ref();
        key.and_then(|k| self.partitions.get_mut(k)).ok_or_else(|| {
            TopologyError::transform("the record's partition has no open state (engine bug)")
        })
    }

    /// Runs a stateful topology on a record with its partition's state, then fires the event
    /// timers the record's timestamp made due. The caller ends or undoes the record.
    pub(crate) fn run<'a>(
        &mut self,
        topology: &mut dyn Topology,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let part = self.current()?;
        part.begin_record(record.context.timestamp)
            .map_err(|e| TopologyError::unavailable(e.to_string()))?;
        match topology.as_stateful() {
            Some(topology) => run_on(part, topology, record, out),
            None => topology.process(record, out),
        }
    }

    /// The current record succeeded: its writes go to the changelog.
    pub(crate) fn end_record(&mut self) -> Result<(), EngineError> {
        let Ok(part) = self.current() else {
            return Ok(());
        };
        part.end_record();
        Ok(())
    }

    /// The worker is about to commit a transaction that wrote state (its changelog writes are
    /// sent): the fail point between the changelog send and the commit.
    pub(crate) fn before_commit(&mut self) -> Result<(), EngineError> {
        if Broken::StateBeforeCommit.active() {
            // Negative control: the local store is written before the outcome is known.
            tracing::warn!(
                "KSTAGE_BROKEN_MODE: writing state before the commit (negative control)"
            );
            for part in self.partitions.values_mut() {
                part.apply_now().map_err(storage)?;
            }
        }
        crate::engine::broken::crash_point("kstage::state_before_commit");
        Ok(())
    }

    /// The current record failed: its writes are rolled back.
    pub(crate) fn undo_record(&mut self) {
        if let Ok(part) = self.current() {
            part.undo_record();
        }
    }

    /// Changelog writes of the records that succeeded, to send now.
    pub(crate) fn take_changelog(&mut self) -> Vec<ChangelogWrite> {
        let mut writes = Vec::new();
        if let Ok(part) = self.current() {
            part.take_changelog(&mut writes);
        }
        writes
    }

    /// Whether the open transaction wrote state.
    pub(crate) fn has_staged(&self) -> bool {
        self.partitions.values().any(PartitionState::has_staged)
    }

    /// The worker's transaction committed: apply every partition's staged writes, each with
    /// the offset after this producer's last delivered changelog record (`reached`).
    pub(crate) fn committed(
        &mut self,
        reached: impl Fn(&str, i32) -> Option<i64>,
    ) -> Result<(), EngineError> {
        crate::engine::broken::crash_point("kstage::state_before_apply");
        for part in self.partitions.values_mut() {
            let partition = part.partition;
            part.committed(|topic| {
                reached(topic, partition).and_then(|o| u64::try_from(o + 1).ok())
            })
            .map_err(|e| {
                EngineError::Internal(format!(
                    "the transaction committed but its state could not be applied to the local \
                     store (the next start restores it from the changelog): {e}"
                ))
            })?;
        }
        self.refresh_sizes();
        Ok(())
    }

    /// The worker's transaction aborted, was dropped, or will never commit.
    pub(crate) fn aborted(&mut self) {
        for part in self.partitions.values_mut() {
            part.aborted();
        }
    }

    /// Closes the stores of `partitions` while this worker keeps them: the next record of each
    /// opens and restores it again (after a batch settled by a re-created producer, whose
    /// changelog records may have committed without being applied here).
    pub(crate) fn reload(&mut self, partitions: &[(String, i32)]) {
        for key in partitions {
            if self.partitions.remove(key).is_some() {
                tracing::info!(topic = %key.0, partition = key.1,
                    "A settled batch's partition restores its store from the changelog again.");
            }
        }
        if self
            .current
            .as_ref()
            .is_some_and(|k| !self.partitions.contains_key(k))
        {
            self.current = None;
        }
    }

    /// Closes the stores of partitions no longer owned (their transaction has ended).
    pub(crate) fn close(&mut self, revoked: &[(String, i32)], topology: &mut dyn Topology) {
        for key in revoked {
            if let Some(part) = self.partitions.remove(key) {
                if part.has_staged() {
                    tracing::warn!(topic = %key.0, partition = key.1,
                        "Closing a partition's store with staged writes; they are dropped.");
                }
                tracing::info!(topic = %key.0, partition = key.1, path = %part.local.path().display(),
                    "Partition revoked; its store is closed.");
                if let Some(stateful) = topology.as_stateful() {
                    stateful.on_revoked(&key.0, key.1);
                }
            }
        }
        if self
            .current
            .as_ref()
            .is_some_and(|k| !self.partitions.contains_key(k))
        {
            self.current = None;
        }
    }

    /// Entries per store over the open partitions, for the metrics.
    pub(crate) fn sizes(&self) -> BTreeMap<String, u64> {
        let mut sizes = BTreeMap::new();
        for part in self.partitions.values() {
            if let Ok(per_store) = part.local.sizes() {
                for (store, n) in per_store {
                    *sizes.entry(store).or_insert(0) += n;
                }
            }
        }
        sizes
    }
}

/// Runs a stateful topology on one record (begun on `part`), then fires the event timers that
/// are due at the partition's stream time, each deleted as it fires, their outputs appended.
/// The search starts at the partition's [`super::cursor::EventCursor`] floor (not at the
/// timers fired earlier in the transaction) and is skipped while no timer can be due.
pub(crate) fn run_on<'a>(
    part: &mut PartitionState,
    topology: &mut dyn StatefulTopology,
    record: &Record<'a>,
    out: &mut Emitter<'a>,
) -> Result<(), TopologyError> {
    topology.process(record, &mut State { part }, out)?;
    let (Some(index), Some(now)) = (part.timer_index(), part.stream_time) else {
        return Ok(());
    };
    if part.cursor.none_due(now) {
        return Ok(());
    }
    let unavailable = |e: StateError| TopologyError::unavailable(e.to_string());
    let mut fired = 0;
    loop {
        let floor = part.cursor.floor.clone();
        let due = part
            .range(index, &floor, Some(&timers::due_bound(now)), 256)
            .map_err(unavailable)?;
        if due.is_empty() {
            let next = part
                .range(index, &floor, Some(&timers::wall_first_key()), 1)
                .map_err(unavailable)?;
            let earliest = next
                .first()
                .and_then(|(key, _)| timers::parse_event_key(key))
                .map(|(at, _)| at);
            part.cursor.nothing_due(earliest);
            return Ok(());
        }
        part.cursor.scan_started();
        for (key, _) in due {
            let Some((at, tag)) = timers::parse_event_key(&key) else {
                continue;
            };
            let timer = FiredTimer {
                at,
                tag: tag.to_vec(),
            };
            part.put(index, &key, None);
            part.cursor.fired(&key);
            let mut emitted = Emitter::new();
            topology.on_timer(&timer, &mut State { part }, &mut emitted)?;
            for output in emitted.into_records() {
                out.emit(output);
            }
            fired += 1;
            if fired > MAX_TIMERS_PER_RECORD {
                return Err(TopologyError::transform(format!(
                    "more than {MAX_TIMERS_PER_RECORD} timers fired for one record: a timer \
                     callback keeps setting due timers"
                )));
            }
        }
    }
}
