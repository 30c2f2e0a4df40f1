//! `dedupe`: drops a record whose id was seen within a retention period, and forwards the rest
//! unchanged. The classic answer to duplicates an at-least-once producer upstream wrote (a
//! retry after a lost acknowledgement writes the same record twice).
//!
//! Parameters: `id_field` (a top-level field of a JSON value that holds the id; default: the
//! record key is the id), `retention` (how long an id is remembered, in event time; default
//! `1h`).
//!
//! The store `seen` maps an id to the timestamp it was first forwarded at; an event-time timer
//! at that time plus the retention deletes it, so the store holds only the ids of the last
//! retention period. A record whose id is in the store with a timestamp less than a retention
//! before its own is a duplicate and is dropped; everything else is forwarded and remembered.
//! Because the store commits with the offsets, a crash or a rebalance neither forwards a
//! duplicate nor drops a first occurrence. A record without an id (no key, or no such field)
//! is invalid and follows the poison policy.

use std::time::Duration;

use kstage::state::{stateful, FiredTimer, State, StatefulTopology, StoreSpec};
use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str = "stateful: drops records whose id (key, or params id_field of a \
                               JSON value) was seen within params retention (default 1h)";

/// The store of ids seen.
pub const STORE: &str = "seen";

/// Drops records whose id was seen within `retention` ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    pub id_field: Option<String>,
    pub retention: i64,
}

/// Builds the topology from `id_field` and `retention`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&["id_field", "retention"])?;
    let retention = match params.get("retention") {
        None => Duration::from_secs(3600),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            format!("params.retention: {text:?} is not a duration ({e}); e.g. 10m or 1h")
        })?,
    };
    if retention.is_zero() {
        return Err("params.retention: must be longer than 0".into());
    }
    Ok(stateful(Dedupe {
        id_field: params.get("id_field").map(str::to_string),
        retention: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
    }))
}

impl Dedupe {
    /// The record's id: its key, or the `id_field` of its JSON value.
    fn id(&self, record: &Record<'_>) -> Result<Vec<u8>, TopologyError> {
        let Some(field) = &self.id_field else {
            return record
                .key
                .map(<[u8]>::to_vec)
                .ok_or_else(|| TopologyError::invalid("the record has no key (its id)"));
        };
        let value: serde_json::Value = serde_json::from_slice(record.value.unwrap_or_default())
            .map_err(|e| TopologyError::decode(format!("the value is not JSON: {e}")))?;
        match value.get(field) {
            Some(serde_json::Value::String(id)) => Ok(id.as_bytes().to_vec()),
            Some(serde_json::Value::Number(id)) => Ok(id.to_string().into_bytes()),
            _ => Err(TopologyError::invalid(format!(
                "the value has no string or number field {field:?} (its id)"
            ))),
        }
    }
}

fn decode(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl StatefulTopology for Dedupe {
    fn stores(&self) -> Vec<StoreSpec> {
        vec![
            StoreSpec::windowed(
                STORE,
                "the record's id",
                "timestamp first forwarded, i64 big-endian",
                Duration::from_millis(self.retention as u64),
            ),
            StoreSpec::timers(),
        ]
    }

    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        state: &mut State<'_>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let id = self.id(record)?;
        let ts = record
            .context
            .timestamp
            .ok_or_else(|| TopologyError::invalid("the record has no timestamp"))?;
        let seen = state.store(STORE)?.get(&id)?.as_deref().and_then(decode);
        if seen.is_some_and(|first| ts < first.saturating_add(self.retention)) {
            return Ok(());
        }
        state.store(STORE)?.put(&id, &ts.to_be_bytes());
        state.set_timer(ts.saturating_add(self.retention), &id)?;
        out.emit(OutputRecord::from_input(record));
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &FiredTimer,
        state: &mut State<'_>,
        _out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        let mut seen = state.store(STORE)?;
        let first = seen.get(&timer.tag)?.as_deref().and_then(decode);
        // A later forward of the same id set a later timer: keep it until that one.
        if first.is_some_and(|first| first.saturating_add(self.retention) <= timer.at) {
            seen.delete(&timer.tag);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::state::TestState;
    use kstage::topology::{Context, Headers};

    fn record(key: &'static [u8], value: &'static [u8], ts: i64) -> Record<'static> {
        Record {
            key: Some(key),
            value: Some(value),
            headers: Headers::from_slice(&[]),
            context: Context {
                topic: "in",
                partition: 0,
                offset: 0,
                timestamp: Some(ts),
            },
        }
    }

    #[test]
    fn drops_an_id_seen_within_the_retention_and_forwards_it_after() {
        let mut dedupe = Dedupe {
            id_field: None,
            retention: 100,
        };
        let mut state = TestState::new(&dedupe, 0).expect("state");
        let mut forwarded = |key: &'static [u8], ts| {
            state
                .process(&mut dedupe, &record(key, b"{}", ts))
                .expect("processed")
                .len()
        };
        assert_eq!(forwarded(b"a", 0), 1);
        assert_eq!(forwarded(b"a", 50), 0, "a duplicate within the retention");
        assert_eq!(forwarded(b"b", 60), 1);
        assert_eq!(forwarded(b"a", 99), 0);
        assert_eq!(forwarded(b"a", 100), 1, "the retention has passed");
        assert_eq!(forwarded(b"a", 150), 0);
    }

    #[test]
    fn forgets_ids_once_their_retention_passed_in_event_time() {
        let mut dedupe = Dedupe {
            id_field: Some("id".into()),
            retention: 100,
        };
        let mut state = TestState::new(&dedupe, 0).expect("state");
        let out = state
            .process(&mut dedupe, &record(b"k", br#"{"id": 7}"#, 0))
            .expect("first");
        assert_eq!(out.len(), 1);
        state
            .process(&mut dedupe, &record(b"k", br#"{"id": "other"}"#, 500))
            .expect("advances stream time");
        let left = state
            .state()
            .store(STORE)
            .expect("store")
            .range(b"", None, 10);
        let ids: Vec<Vec<u8>> = left.expect("range").into_iter().map(|(k, _)| k).collect();
        assert_eq!(ids, vec![b"other".to_vec()], "id 7 expired and was deleted");
        let missing = state
            .process(&mut dedupe, &record(b"k", br#"{"no": 1}"#, 501))
            .expect_err("no id");
        assert_eq!(missing.kind, kstage::topology::TopologyErrorKind::Invalid);
    }
}
