//! The worker's state hooks: a stateful topology's changelog writes go out through the
//! transaction's send path (held with the outputs when a commit is in flight), and its staged
//! writes follow the outcomes: `Committed` applies them to the local stores, with the offset of
//! the last changelog record this producer delivered to each partition; `Aborted`, `Dropped`
//! and a fatal error drop them. Kept apart from `worker.rs` so the transaction code stays
//! readable; see `crate::state` for the recipe.
//!
//! Wall-clock timers fire here, between two polls, input or not:
//!
//! ```text
//!   every WALL_TICK, if the topology uses wall-clock timers:
//!     no batch open ──► open (restore) every assigned partition not held yet, on_assigned
//!     each held partition with a timer due at the clock ──► its consumer's offset (position,
//!       or the group's committed offset when no record was consumed since the assignment)
//!       ──► the batch's transaction opens for it (no record: `consumed = false`)
//!       ──► fire_wall: timers deleted + callbacks ──► outputs and changelog writes sent
//!   the commit policy then commits the batch like any other: offsets (the same ones, so the
//!   group's generation fences a zombie), outputs, changelog; Committed applies the deletes.
//! ```

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::WorkerTxn;
use crate::engine::offsets::{Batch, Span};
use crate::engine::record::RecordHandling;
use crate::error::EngineError;
use crate::topology::{OutputRecord, Topology};

/// How often the worker looks for due wall-clock timers (and for assigned partitions to open).
pub(crate) const WALL_TICK: Duration = Duration::from_millis(100);

/// How long the group's committed offset of a partition may take to read (it waits while a
/// transaction on it is pending, as it must).
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(30);

impl WorkerTxn {
    /// Sends the changelog writes of the record just processed, inside its transaction.
    pub(crate) fn send_changelog(&mut self) -> Result<(), EngineError> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        for write in state.take_changelog() {
            let mut record = OutputRecord::new();
            record.key = Some(write.key.into());
            record.value = write.value.map(Into::into);
            record.partition = Some(write.partition);
            self.send(&write.topic, &record, None)?;
        }
        Ok(())
    }

    /// State hook of the `Committed` outcome: apply the staged writes to the local stores.
    pub(super) fn state_committed(&mut self) -> Result<(), EngineError> {
        let hooks = self.producer.client().context();
        match &mut self.state {
            Some(state) => {
                state.committed(|topic, partition| hooks.delivered_offset(topic, partition))
            }
            None => Ok(()),
        }
    }

    /// State hook of the `Aborted` and `Dropped` outcomes and of a fatal error.
    pub(super) fn state_aborted(&mut self) {
        if let Some(state) = &mut self.state {
            state.aborted();
        }
    }

    /// State hook of an `Aborted` outcome that settled a batch whose commit outcome was unknown
    /// (a re-created producer's init decided it; `span.to_committed`): the staged writes are
    /// dropped, and if the batch did commit, its changelog records are committed while the local
    /// stores lack them. Its partitions' stores are closed, so the next record of each restores
    /// from the changelog again (read_committed: exactly what committed), as after a crash
    /// between the commit and the local apply.
    pub(super) fn state_settled(&mut self, span: &Span) {
        let Some(state) = &mut self.state else {
            return;
        };
        state.aborted();
        if span.to_committed {
            let partitions: Vec<(String, i32)> = span
                .read
                .iter()
                .map(|read| (read.topic.clone(), read.partition))
                .collect();
            state.reload(&partitions);
        }
    }

    /// Fires the wall-clock timers that are due, each in the open batch's transaction (one
    /// is opened for them if none is), at most every [`WALL_TICK`]; first opens the assigned
    /// partitions this worker does not hold yet, between transactions. A no-op unless the
    /// topology uses wall-clock timers.
    pub(crate) fn fire_wall_timers<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topology: &mut dyn Topology,
        handling: &RecordHandling,
    ) -> Result<(), EngineError> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        if !state.has_timer_store()
            || !topology.as_stateful().is_some_and(|t| t.wall_timers())
            || state
                .wall_checked_at
                .is_some_and(|at| at.elapsed() < WALL_TICK)
        {
            return Ok(());
        }
        state.wall_checked_at = Some(Instant::now());
        if self.open.is_none() && self.committing.is_empty() {
            self.open_assigned(consumer, topology)?;
        }
        let now = crate::state::wall_clock_now();
        let due = match &self.state {
            Some(state) => state.wall_due(now).map_err(wall_failed)?,
            None => return Ok(()),
        };
        for (topic, partition) in due {
            let Some(offset) = consumer_offset(consumer, &topic, partition)? else {
                tracing::debug!(
                    topic,
                    partition,
                    "A wall-clock timer is due but the partition has no committed offset yet."
                );
                continue;
            };
            self.open_for_timers(&topic, partition, offset)?;
            let Some(state) = &mut self.state else {
                return Ok(());
            };
            let outputs = match state.fire_wall(topology, &topic, partition, now) {
                Ok(outputs) => outputs,
                Err(error) => {
                    state.undo_record();
                    return Err(EngineError::Internal(format!(
                        "a wall-clock timer of {topic}/{partition} failed ({error}); the stage \
                         stops without committing it"
                    )));
                }
            };
            state.end_record()?;
            for output in &outputs {
                let Some(target) = handling.topic(output.output) else {
                    return Err(EngineError::Internal(format!(
                        "a wall-clock timer emitted to output {:?}, which the topology does \
                         not declare",
                        output.output
                    )));
                };
                self.send(target, output, None)?;
            }
            self.send_changelog()?;
            tracing::debug!(
                topic,
                partition,
                outputs = outputs.len(),
                "Wall-clock timers fired."
            );
        }
        Ok(())
    }

    /// Opens (restores) every assigned partition this worker does not hold yet.
    fn open_assigned<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topology: &mut dyn Topology,
    ) -> Result<(), EngineError> {
        let assigned = consumer.assignment().map_err(|source| EngineError::Kafka {
            operation: "reading the assignment",
            source,
        })?;
        for elem in assigned.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let Some(state) = &mut self.state else {
                return Ok(());
            };
            if state.holds(topic, partition) {
                continue;
            }
            state.open(topic, partition)?;
            if let Some(stateful) = topology.as_stateful() {
                stateful.on_assigned(topic, partition);
            }
        }
        Ok(())
    }

    /// Opens the batch, and its transaction, for the wall-clock timers of a partition whose
    /// consumer stands at `offset`; no record is counted.
    fn open_for_timers(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), EngineError> {
        let (metrics, health) = (&self.metrics, &self.health);
        self.open.get_or_insert_with(|| {
            metrics.transaction_opened();
            health.transaction_opened();
            Batch::new(Instant::now())
        });
        self.locked(|core| core.record(topic, partition, offset, false))?;
        Ok(())
    }
}

fn wall_failed(error: crate::topology::TopologyError) -> EngineError {
    EngineError::Internal(format!("looking for due wall-clock timers failed: {error}"))
}

/// Where the consumer of a partition stands: its position, or, when it has consumed no record
/// since the assignment, the group's committed offset (`None`: there is none).
fn consumer_offset<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, EngineError> {
    let kafka = |operation| move |source| EngineError::Kafka { operation, source };
    let positions = consumer
        .position()
        .map_err(kafka("reading consumer positions"))?;
    if let Some(Offset::Offset(offset)) = positions
        .find_partition(topic, partition)
        .map(|elem| elem.offset())
    {
        return Ok(Some(offset));
    }
    let mut wanted = TopicPartitionList::with_capacity(1);
    wanted.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(wanted, COMMITTED_TIMEOUT)
        .map_err(kafka("reading the committed offset"))?;
    Ok(
        match committed
            .find_partition(topic, partition)
            .map(|elem| elem.offset())
        {
            Some(Offset::Offset(offset)) => Some(offset),
            _ => None,
        },
    )
}
