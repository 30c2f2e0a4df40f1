//! The state of one input partition while it is owned: its local store, the writes staged by
//! the open transaction, the current record's undo log, its stream time and its timers.
//!
//! ```text
//!   topology ──► Store::put/delete ──► staged (per store, this transaction) + undo (this record)
//!   Store::get/range ◄── staged over the local store (reads see the staged writes)
//!   record ok      ──► its written keys become changelog writes (sent in the transaction)
//!   record poison  ──► undo: the record's writes and stream time are rolled back
//!   committed      ──► staged + offsets reached ──► LocalStore::apply (one atomic write)
//!   aborted        ──► staged dropped, stream time back to the committed one
//! ```
//!
//! Invariants:
//! * The local store changes only in [`PartitionState::committed`], after the transaction that
//!   carried the same writes to the changelog committed.
//! * Every staged write of a record that succeeded is also a changelog write of the same
//!   transaction (`changelog`), with the value it has when the record ends; a record that
//!   fails leaves neither.
//! * The stream time (largest timestamp seen) is state too: it is written to the timer store
//!   whenever it advances, so a restore brings it back with the timers.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::cursor::EventCursor;
use super::store::{LocalStore, Writes};
use super::timers::{self, STREAM_TIME_KEY};
use super::{StateError, StoreDef};

/// A write to send to a changelog topic inside the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangelogWrite {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) key: Vec<u8>,
    /// `None`: a tombstone (the key was deleted).
    pub(crate) value: Option<Vec<u8>>,
}

/// A record's write to undo: the store, the key, and its staged entry before (`None`: none).
type Undo = (usize, Vec<u8>, Option<Option<Vec<u8>>>);

/// One owned input partition's state.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) partition: i32,
    pub(crate) local: LocalStore,
    pub(crate) stores: Arc<[StoreDef]>,
    /// The open transaction's writes, per store (same index as `stores`).
    staged: Vec<Writes>,
    /// The stores the open transaction wrote to (their offsets advance at its commit).
    touched: Vec<bool>,
    /// The current record's writes, to roll back if it fails: (store, key, staged entry before).
    undo: Vec<Undo>,
    /// Stream time before the current record.
    undo_stream_time: Option<i64>,
    /// Stream time: the largest record timestamp seen, as staged.
    pub(crate) stream_time: Option<i64>,
    /// Stream time as of the last commit.
    committed_stream_time: Option<i64>,
    /// Changelog writes of succeeded records, not yet sent.
    changelog: Vec<ChangelogWrite>,
    /// The wall clock the topology sees (`None`: the system clock); set while wall-clock
    /// timers fire, and by [`super::TestState::set_wall_clock`].
    pub(crate) wall_now: Option<i64>,
    /// Lower bounds on the live event timers: where the due check starts, and whether it
    /// must look at all (`super::cursor`).
    pub(crate) cursor: EventCursor,
}

impl PartitionState {
    /// Wraps a restored local store; the stream time is read back from the timer store.
    pub(crate) fn new(
        partition: i32,
        local: LocalStore,
        stores: Arc<[StoreDef]>,
    ) -> Result<Self, StateError> {
        let stream_time = match stores.iter().find(|s| s.timers) {
            Some(def) => local
                .get(&def.name, STREAM_TIME_KEY)?
                .and_then(|v| timers::decode_time(&v)),
            None => None,
        };
        Ok(Self {
            staged: vec![Writes::new(); stores.len()],
            touched: vec![false; stores.len()],
            partition,
            local,
            stores,
            undo: Vec::new(),
            undo_stream_time: stream_time,
            stream_time,
            committed_stream_time: stream_time,
            changelog: Vec::new(),
            wall_now: None,
            cursor: EventCursor::default(),
        })
    }

    /// The index of the store called `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.stores.iter().position(|s| s.name == name)
    }

    /// The index of the timer store, if the topology declared one.
    pub(crate) fn timer_index(&self) -> Option<usize> {
        self.stores.iter().position(|s| s.timers)
    }

    /// A record begins: its writes are undone if it fails. Its timestamp advances stream time.
    pub(crate) fn begin_record(&mut self, timestamp: Option<i64>) -> Result<(), StateError> {
        self.undo.clear();
        self.undo_stream_time = self.stream_time;
        if let Some(ts) = timestamp {
            if self.stream_time.is_none_or(|now| ts > now) {
                self.stream_time = Some(ts);
                if let Some(index) = self.timer_index() {
                    self.put(index, STREAM_TIME_KEY, Some(timers::encode_time(ts)));
                }
            }
        }
        Ok(())
    }

    /// The current record failed: its writes and its stream time are rolled back.
    pub(crate) fn undo_record(&mut self) {
        for (index, key, before) in self.undo.drain(..).rev() {
            if let Some(staged) = self.staged.get_mut(index) {
                match before {
                    Some(entry) => staged.insert(key, entry),
                    None => staged.remove(&key),
                };
            }
        }
        self.stream_time = self.undo_stream_time;
        self.cursor.reset();
    }

    /// The current record (and the timers it fired) succeeded: its writes become changelog
    /// writes, each key once, with its value as of now.
    pub(crate) fn end_record(&mut self) {
        let mut seen = std::collections::BTreeSet::new();
        for (index, key, _) in self.undo.drain(..) {
            if !seen.insert((index, key.clone())) {
                continue;
            }
            let (Some(def), Some(staged)) = (self.stores.get(index), self.staged.get(index)) else {
                continue;
            };
            let value = staged.get(&key).cloned().flatten();
            self.changelog.push(ChangelogWrite {
                topic: Arc::clone(&def.changelog),
                partition: self.partition,
                key,
                value,
            });
        }
    }

    /// Takes the changelog writes not sent yet.
    pub(crate) fn take_changelog(&mut self, into: &mut Vec<ChangelogWrite>) {
        into.append(&mut self.changelog);
    }

    /// Whether the open transaction has staged writes.
    pub(crate) fn has_staged(&self) -> bool {
        self.staged.iter().any(|s| !s.is_empty())
    }

    /// Stages a write (`None`: delete), remembering what to undo.
    pub(crate) fn put(&mut self, index: usize, key: &[u8], value: Option<Vec<u8>>) {
        let Some(staged) = self.staged.get_mut(index) else {
            return;
        };
        if value.is_some() && self.stores.get(index).is_some_and(|def| def.timers) {
            self.cursor.set(key);
        }
        let before = staged.insert(key.to_vec(), value);
        self.undo.push((index, key.to_vec(), before));
        if let Some(touched) = self.touched.get_mut(index) {
            *touched = true;
        }
    }

    /// The value of `key`: the staged write if any, else the local store's.
    pub(crate) fn get(&self, index: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(entry) = self.staged.get(index).and_then(|s| s.get(key)) {
            return Ok(entry.clone());
        }
        match self.stores.get(index) {
            Some(def) => self.local.get(&def.name, key),
            None => Ok(None),
        }
    }

    /// Entries with keys in `[from, to)` (`to = None`: to the end), staged over local, in key
    /// order, at most `limit`.
    pub(crate) fn range(
        &self,
        index: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<super::Entry>, StateError> {
        let Some(def) = self.stores.get(index) else {
            return Ok(Vec::new());
        };
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        let staged = self.staged.get(index);
        let staged_in_range = staged.map_or(0, |s| {
            s.range::<[u8], _>((Bound::Included(from), upper)).count()
        });
        // Deleted entries may hide local ones: read enough local entries to fill `limit`.
        let local = self.local.range(
            &def.name,
            (Bound::Included(from), upper),
            limit.saturating_add(staged_in_range),
        )?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = local.into_iter().collect();
        if let Some(staged) = staged {
            for (key, value) in staged.range::<[u8], _>((Bound::Included(from), upper)) {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// The transaction committed: apply its staged writes to the local store, with the
    /// changelog offsets reached (`reached(topic)`: the next offset after this producer's last
    /// delivered record there; `None` keeps the store's offset, which is safe: see
    /// [`super::store`]).
    pub(crate) fn committed(
        &mut self,
        reached: impl Fn(&str) -> Option<u64>,
    ) -> Result<(), StateError> {
        self.committed_stream_time = self.stream_time;
        if !self.touched.iter().any(|t| *t) {
            return Ok(());
        }
        let stores = Arc::clone(&self.stores);
        let writes = stores
            .iter()
            .zip(&self.staged)
            .zip(&self.touched)
            .filter(|(_, touched)| **touched)
            .map(|((def, w), _)| (def.name.as_str(), w, reached(&def.changelog)));
        self.local.apply(writes)?;
        self.clear();
        Ok(())
    }

    /// Negative control only (`KSTAGE_BROKEN_MODE=state_before_commit`): writes the staged
    /// writes to the local store now, before the transaction's outcome is known.
    pub(crate) fn apply_now(&mut self) -> Result<(), StateError> {
        let stores = Arc::clone(&self.stores);
        let writes = stores
            .iter()
            .zip(&self.staged)
            .filter(|(_, w)| !w.is_empty())
            .map(|(def, w)| (def.name.as_str(), w, None));
        self.local.apply(writes)?;
        for staged in &mut self.staged {
            staged.clear();
        }
        Ok(())
    }

    fn clear(&mut self) {
        for staged in &mut self.staged {
            staged.clear();
        }
        for touched in &mut self.touched {
            *touched = false;
        }
    }

    /// The transaction aborted (or will never commit): forget its writes.
    pub(crate) fn aborted(&mut self) {
        self.clear();
        self.undo.clear();
        self.changelog.clear();
        self.stream_time = self.committed_stream_time;
        self.undo_stream_time = self.committed_stream_time;
        self.cursor.reset();
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
