//! `count`: a running count per key, emitting each update (Kafka Streams'
//! `groupByKey().count().toStream()`).
//!
//! For every input record with key `k` the count of `k` in the store `counts` goes up by one, and
//! the new count is written to the default output with key `k` and the count in decimal as the
//! value. The count is state: it commits with the record's offset, so a crash, a rebalance or an
//! abort never counts a record twice or drops one. A record without a key is invalid (it
//! follows the poison policy): there is nothing to count it under.

use kstage::state::{stateful, State, StatefulTopology, StoreSpec};
use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "stateful: running count per key (store `counts`), emits the new count on each record";

/// The store's name; its changelog is `<app_id>-counts-changelog`.
pub const STORE: &str = "counts";

/// Counts records per key.
#[derive(Debug, Default)]
pub struct Count;

/// Builds the topology; it takes no parameters.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&[])?;
    Ok(stateful(Count))
}

/// Decodes a stored count (8 bytes, big-endian).
pub fn decode(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl StatefulTopology for Count {
    fn stores(&self) -> Vec<StoreSpec> {
        vec![StoreSpec::keyed(
            STORE,
            "the input key, raw bytes",
            "the count, u64 big-endian",
        )]
    }

    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        state: &mut State<'_>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let key = record
            .key
            .ok_or_else(|| TopologyError::invalid("the record has no key to count it under"))?;
        let mut counts = state.store(STORE)?;
        let count = match counts.get(key)? {
            Some(bytes) => decode(&bytes).ok_or_else(|| {
                TopologyError::transform("a stored count is not 8 bytes (another topology's?)")
            })?,
            None => 0,
        } + 1;
        counts.put(key, &count.to_be_bytes());
        let mut update = OutputRecord::new()
            .key(key)
            .value(count.to_string().into_bytes());
        update.timestamp = record.context.timestamp;
        out.emit(update);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::state::TestState;
    use kstage::topology::{Context, Headers};

    fn record(key: Option<&'static [u8]>, offset: i64) -> Record<'static> {
        Record {
            key,
            value: Some(b"v"),
            headers: Headers::from_slice(&[]),
            context: Context {
                topic: "in",
                partition: 0,
                offset,
                timestamp: Some(offset),
            },
        }
    }

    #[test]
    fn emits_the_running_count_of_each_key() {
        let mut count = Count;
        let mut state = TestState::new(&count, 0).expect("state");
        let mut values = Vec::new();
        for (offset, key) in [b"a", b"b", b"a", b"a"].into_iter().enumerate() {
            let out = state
                .process(&mut count, &record(Some(key), offset as i64))
                .expect("counted");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].key.as_deref(), Some(&key[..]));
            values.push(String::from_utf8(
                out[0].value.as_deref().unwrap_or_default().to_vec(),
            ));
        }
        let values: Vec<String> = values.into_iter().map(|v| v.expect("utf-8")).collect();
        assert_eq!(values, ["1", "1", "2", "3"]);
        let stored = state
            .state()
            .store(STORE)
            .expect("store")
            .get(b"a")
            .expect("get");
        assert_eq!(stored.as_deref().and_then(decode), Some(3));
    }

    #[test]
    fn a_record_without_a_key_is_invalid_and_changes_nothing() {
        let mut count = Count;
        let mut state = TestState::new(&count, 0).expect("state");
        let error = state
            .process(&mut count, &record(None, 0))
            .expect_err("no key");
        assert_eq!(error.kind, kstage::topology::TopologyErrorKind::Invalid);
        let all = state
            .state()
            .store(STORE)
            .expect("store")
            .range(b"", None, 10);
        assert_eq!(all.expect("range"), Vec::new());
    }
}
