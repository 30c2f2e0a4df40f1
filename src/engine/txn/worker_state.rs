//! The worker's state hooks: a stateful topology's changelog writes go out through the
//! transaction's send path (held with the outputs when a commit is in flight), and its staged
//! writes follow the outcomes: `Committed` applies them to the local stores, with the offset of
//! the last changelog record this producer delivered to each partition; `Aborted`, `Dropped`
//! and a fatal error drop them. Kept apart from `worker.rs` so the transaction code stays
//! readable; see `crate::state` for the recipe.

use rdkafka::producer::Producer;

use super::WorkerTxn;
use crate::engine::offsets::Span;
use crate::error::EngineError;
use crate::topology::OutputRecord;

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
}
