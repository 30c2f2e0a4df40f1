//! What a stateful topology sees: [`State`] (one input partition's stores, stream time, wall
//! clock and timers) and [`Store`] (one keyed store: get, put, delete, ordered range), raw bytes with
//! typed (serde JSON) helpers on top.
//!
//! Every write is staged in the open transaction and reaches the local store only after that
//! transaction committed; reads see the staged writes. A store error (the disk) is not the
//! record's fault: it comes back as an `unavailable` [`TopologyError`], which stops the stage
//! instead of going through the poison policy.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::partition::PartitionState;
use super::timers;
use crate::topology::TopologyError;

/// One input partition's state, handed to [`super::StatefulTopology::process`] and
/// [`super::StatefulTopology::on_timer`].
#[derive(Debug)]
pub struct State<'s> {
    pub(crate) part: &'s mut PartitionState,
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    /// The time (ms) it was set for: event time, or for a wall-clock timer ms since the Unix
    /// epoch.
    pub at: i64,
    /// The tag it was set with.
    pub tag: Vec<u8>,
}

impl<'s> State<'s> {
    /// The input partition this state belongs to.
    pub fn partition(&self) -> i32 {
        self.part.partition
    }

    /// The partition's stream time: the largest record timestamp seen (ms), including the
    /// current record's.
    pub fn stream_time(&self) -> Option<i64> {
        self.part.stream_time
    }

    /// The store called `name`, as declared in [`super::StatefulTopology::stores`].
    pub fn store(&mut self, name: &str) -> Result<Store<'_>, TopologyError> {
        let index = self.part.index(name).ok_or_else(|| {
            TopologyError::transform(format!(
                "the topology uses store {name:?}, which it does not declare in stores()"
            ))
        })?;
        Ok(Store {
            part: self.part,
            index,
        })
    }

    /// Sets an event-time timer: it fires once the partition's stream time reaches `at`, with
    /// `tag`; setting the same (`at`, `tag`) again is one timer. Needs a timer store
    /// ([`super::StoreSpec::timers`]).
    pub fn set_timer(&mut self, at: i64, tag: &[u8]) -> Result<(), TopologyError> {
        let index = self.timer_index()?;
        self.part
            .put(index, &timers::event_key(at, tag), Some(Vec::new()));
        Ok(())
    }

    /// Cancels an event-time timer set with the same `at` and `tag` (nothing if there is none).
    pub fn cancel_timer(&mut self, at: i64, tag: &[u8]) -> Result<(), TopologyError> {
        let index = self.timer_index()?;
        self.part.put(index, &timers::event_key(at, tag), None);
        Ok(())
    }

    /// Event-time timers not fired yet (at most `limit`), earliest first.
    pub fn pending_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, TopologyError> {
        let index = self.timer_index()?;
        let entries = self
            .part
            .range(index, &timers::first_key(), Some(&[1]), limit)
            .map_err(unavailable)?;
        Ok(entries
            .iter()
            .filter_map(|(key, _)| timers::parse_event_key(key))
            .map(|(at, tag)| FiredTimer {
                at,
                tag: tag.to_vec(),
            })
            .collect())
    }

    /// The wall clock (ms since the Unix epoch) as the engine sees it now; while a wall-clock
    /// timer fires, the time it fired at.
    pub fn wall_clock(&self) -> i64 {
        self.part.wall_now.unwrap_or_else(timers::wall_clock_now)
    }

    /// Sets a wall-clock timer: the engine fires it once its clock ([`Self::wall_clock`])
    /// reaches `at`, even if no record arrives, in a transaction of its own or of the records
    /// being processed then ([`super::StatefulTopology::on_wall_timer`]). Setting the same
    /// (`at`, `tag`) again is one timer. Needs a timer store ([`super::StoreSpec::timers`]).
    pub fn set_wall_timer(&mut self, at: i64, tag: &[u8]) -> Result<(), TopologyError> {
        let index = self.timer_index()?;
        self.part
            .put(index, &timers::wall_key(at, tag), Some(Vec::new()));
        Ok(())
    }

    /// Cancels a wall-clock timer set with the same `at` and `tag` (nothing if there is none).
    pub fn cancel_wall_timer(&mut self, at: i64, tag: &[u8]) -> Result<(), TopologyError> {
        let index = self.timer_index()?;
        self.part.put(index, &timers::wall_key(at, tag), None);
        Ok(())
    }

    /// Wall-clock timers not fired yet (at most `limit`), earliest first.
    pub fn pending_wall_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, TopologyError> {
        let index = self.timer_index()?;
        let entries = self
            .part
            .range(
                index,
                &timers::wall_first_key(),
                Some(&timers::wall_due_bound(i64::MAX)),
                limit,
            )
            .map_err(unavailable)?;
        Ok(entries
            .iter()
            .filter_map(|(key, _)| timers::parse_wall_key(key))
            .map(|(at, tag)| FiredTimer {
                at,
                tag: tag.to_vec(),
            })
            .collect())
    }

    fn timer_index(&self) -> Result<usize, TopologyError> {
        self.part.timer_index().ok_or_else(|| {
            TopologyError::transform(
                "the topology sets a timer but declares no timer store (StoreSpec::timers())",
            )
        })
    }
}

fn unavailable(error: super::StateError) -> TopologyError {
    TopologyError::unavailable(format!("the state store failed: {error}"))
}

/// One keyed store of one input partition.
#[derive(Debug)]
pub struct Store<'p> {
    part: &'p mut PartitionState,
    index: usize,
}

impl Store<'_> {
    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TopologyError> {
        self.part.get(self.index, key).map_err(unavailable)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.part.put(self.index, key, Some(value.to_vec()));
    }

    /// Deletes `key` (a tombstone in the changelog).
    pub fn delete(&mut self, key: &[u8]) {
        self.part.put(self.index, key, None);
    }

    /// Entries with keys from `from` (inclusive) to `to` (exclusive; `None`: to the end), in
    /// key order (bytewise), at most `limit`.
    pub fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<super::Entry>, TopologyError> {
        self.part
            .range(self.index, from, to, limit)
            .map_err(unavailable)
    }

    /// The value of `key` decoded from JSON; a value that does not decode is an error of the
    /// store (it was written by another version of the topology).
    pub fn get_json<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>, TopologyError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                TopologyError::transform(format!(
                    "a value in the state store does not decode as the store's type: {e}"
                ))
            }),
        }
    }

    /// Sets `key` to `value` encoded as JSON.
    pub fn put_json<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<(), TopologyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            TopologyError::transform(format!("cannot encode a state value as JSON: {e}"))
        })?;
        self.put(key, &bytes);
        Ok(())
    }
}
