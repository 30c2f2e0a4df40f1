//! `windowed-count`: counts records per key in event-time windows, tumbling or hopping, with a
//! grace period, and emits one final result per window when it closes (Kafka Streams'
//! `windowedBy(...).count().suppress(untilWindowCloses(...))`).
//!
//! Parameters: `size` (window length, e.g. `1m`), `advance` (hop; default `size`: tumbling),
//! `grace` (how long after a window's end late records are still counted; default `0s`).
//!
//! Event time is the record's timestamp; the partition's stream time is the largest timestamp
//! seen. The window `[start, start + size)` closes when the stream time reaches
//! `start + size + grace`: a timer fires then, and the window's count is emitted once, with the
//! input key as key and `{"key","start","end","count"}` (JSON) as value, and deleted from the
//! store, in the same transaction as the record that advanced the stream time.
//!
//! **Late records** (the documented rule): a record counts in each of its windows that is still
//! open. A record none of whose windows is open any more is *late*: it is an `invalid` record,
//! so it follows the stage's poison policy (`skip` counts and logs it, `dead_letter` keeps it,
//! `fail` stops the stage). With hopping windows, a record whose earlier windows closed but whose
//! later ones are open counts in the open ones only.
//!
//! **Closing on idle** (`idle_close`, a duration; off by default): event time moves only with
//! records, so a partition that goes quiet keeps its last windows open. With `idle_close`, a
//! wall-clock timer fires when the partition has had no record for that long (wall time; the
//! timer is re-armed at most every tenth of the period, so it fires between 0.9 and 1 times
//! `idle_close` after the last record, plus the engine's 100 ms tick). It closes every open
//! window of the partition at once, emitting each window's result as above, and records the
//! latest window end it closed: from then on a window ending at or before it counts as closed
//! (its records are late), so no window is ever emitted twice. The timer, the closed windows
//! and the mark commit in one transaction with the emitted results.

use std::time::Duration;

use kstage::state::{stateful, FiredTimer, State, StatefulTopology, StoreSpec};
use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str = "stateful: count per key in event-time windows (params size, \
                               advance, grace); one final result per window when it closes";

/// The store of open windows' counts.
pub const STORE: &str = "windows";

/// `idle_close`: the key (in [`STORE`]; shorter than a window key) of the pending idle timer's
/// wall-clock time.
const IDLE_AT: &[u8] = b"idle";

/// `idle_close`: the key of the latest window end closed on idle.
const CLOSED_UPTO: &[u8] = b"closed";

/// The tag of the idle timer.
const IDLE_TAG: &[u8] = b"idle";

/// Window settings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowedCount {
    pub size: i64,
    pub advance: i64,
    pub grace: i64,
    /// Close every open window once the partition had no record for this long (wall ms).
    pub idle_close: Option<i64>,
}

fn millis(params: &TopologyParams, key: &str, default: Option<Duration>) -> Result<i64, String> {
    let text = match (params.get(key), default) {
        (Some(text), _) => text.to_string(),
        (None, Some(d)) => return Ok(d.as_millis() as i64),
        (None, None) => params.require(key, "a duration such as 10s")?.to_string(),
    };
    humantime::parse_duration(&text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("params.{key}: {text:?} is not a duration ({e}); e.g. 10s or 1m"))
}

/// Builds the topology from `size`, `advance` and `grace`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&["size", "advance", "grace", "idle_close"])?;
    let size = millis(params, "size", None)?;
    let advance = match params.get("advance") {
        Some(_) => millis(params, "advance", None)?,
        None => size,
    };
    let grace = millis(params, "grace", Some(Duration::ZERO))?;
    let idle_close = match params.get("idle_close") {
        Some(_) => Some(millis(params, "idle_close", None)?),
        None => None,
    };
    if idle_close.is_some_and(|idle| idle <= 0) {
        return Err("params.idle_close: must be longer than 0 ms (e.g. 30s)".into());
    }
    if size <= 0 {
        return Err("params.size: must be longer than 0 ms".into());
    }
    if advance <= 0 || advance > size {
        return Err(format!(
            "params.advance: must be from 1 ms to size ({size} ms); equal to size is tumbling"
        ));
    }
    Ok(stateful(WindowedCount {
        size,
        advance,
        grace,
        idle_close,
    }))
}

/// The store key of a window: its start (8 bytes, order-preserving) then the input key.
fn window_key(start: i64, key: &[u8]) -> Vec<u8> {
    let mut k = ((start as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

fn read_u64(bytes: Option<Vec<u8>>) -> Option<u64> {
    Some(u64::from_be_bytes(bytes?.get(..8)?.try_into().ok()?))
}

fn parse_window_key(k: &[u8]) -> Option<(i64, &[u8])> {
    let raw: [u8; 8] = k.get(..8)?.try_into().ok()?;
    Some(((u64::from_be_bytes(raw) ^ (1 << 63)) as i64, k.get(8..)?))
}

impl WindowedCount {
    /// The starts of the windows that contain `ts`, earliest first.
    pub fn windows(&self, ts: i64) -> impl Iterator<Item = i64> + '_ {
        let last = ts.div_euclid(self.advance) * self.advance;
        let first = last - (self.size - 1).div_euclid(self.advance) * self.advance;
        (0..)
            .map(move |i| first + i * self.advance)
            .take_while(move |s| *s <= last)
            .filter(move |s| ts < s + self.size)
    }

    /// When the window starting at `start` closes.
    pub fn closes_at(&self, start: i64) -> i64 {
        start + self.size + self.grace
    }

    /// The result of a window, removed from the store with its event-time timer.
    fn close(
        &self,
        k: &[u8],
        state: &mut State<'_>,
        out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        let Some((start, key)) = parse_window_key(k) else {
            return Ok(());
        };
        let mut windows = state.store(STORE)?;
        let count = read_u64(windows.get(k)?);
        windows.delete(k);
        let Some(count) = count else {
            return Ok(());
        };
        state.cancel_timer(self.closes_at(start), k)?;
        let value = serde_json::json!({
            "key": String::from_utf8_lossy(key),
            "start": start,
            "end": start + self.size,
            "count": count,
        });
        let mut result = OutputRecord::new()
            .key(key.to_vec())
            .value(value.to_string().into_bytes());
        result.timestamp = Some(start + self.size - 1);
        out.emit(result);
        Ok(())
    }

    /// `idle_close`: (re-)arms the idle timer after a record, at most every tenth of the
    /// period.
    fn arm_idle(&self, idle: i64, state: &mut State<'_>) -> Result<(), TopologyError> {
        let at = state.wall_clock().saturating_add(idle);
        let pending = read_u64(state.store(STORE)?.get(IDLE_AT)?).map(|v| v as i64);
        if pending.is_some_and(|p| at - p < (idle / 10).max(1)) {
            return Ok(());
        }
        if let Some(p) = pending {
            state.cancel_wall_timer(p, IDLE_TAG)?;
        }
        state.set_wall_timer(at, IDLE_TAG)?;
        state.store(STORE)?.put(IDLE_AT, &(at as u64).to_be_bytes());
        Ok(())
    }
}

impl StatefulTopology for WindowedCount {
    fn stores(&self) -> Vec<StoreSpec> {
        vec![
            StoreSpec::windowed(
                STORE,
                "window start (8 bytes, order-preserving) | input key",
                "the count, u64 big-endian",
                Duration::from_millis(self.grace as u64),
            ),
            StoreSpec::timers(),
        ]
    }

    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        state: &mut State<'_>,
        _out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let key = record.key.unwrap_or_default();
        let ts = record
            .context
            .timestamp
            .ok_or_else(|| TopologyError::invalid("the record has no timestamp"))?;
        let now = state.stream_time().unwrap_or(ts);
        let closed_upto = match self.idle_close {
            Some(_) => read_u64(state.store(STORE)?.get(CLOSED_UPTO)?).map(|v| v as i64),
            None => None,
        };
        let open: Vec<i64> = self
            .windows(ts)
            .filter(|s| now < self.closes_at(*s))
            .filter(|s| closed_upto.is_none_or(|c| s + self.size > c))
            .collect();
        if open.is_empty() {
            return Err(TopologyError::invalid(format!(
                "late record: timestamp {ts} ms, stream time {now} ms; every window it belongs \
                 to closed (grace {} ms)",
                self.grace
            )));
        }
        for start in open {
            let k = window_key(start, key);
            let count = {
                let windows = state.store(STORE)?;
                windows
                    .get(&k)?
                    .and_then(|b| Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?)))
                    .unwrap_or(0)
            };
            if count == 0 {
                state.set_timer(self.closes_at(start), &k)?;
            }
            state.store(STORE)?.put(&k, &(count + 1).to_be_bytes());
        }
        if let Some(idle) = self.idle_close {
            self.arm_idle(idle, state)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &FiredTimer,
        state: &mut State<'_>,
        out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        self.close(&timer.tag, state, out)
    }

    fn wall_timers(&self) -> bool {
        self.idle_close.is_some()
    }

    /// `idle_close`: the partition had no record for the period: every open window closes.
    fn on_wall_timer(
        &mut self,
        timer: &FiredTimer,
        state: &mut State<'_>,
        out: &mut Emitter<'static>,
    ) -> Result<(), TopologyError> {
        if timer.tag != IDLE_TAG {
            return Ok(());
        }
        state.store(STORE)?.delete(IDLE_AT);
        let mut closed_upto = read_u64(state.store(STORE)?.get(CLOSED_UPTO)?).map(|v| v as i64);
        loop {
            let open: Vec<Vec<u8>> = state
                .store(STORE)?
                .range(&[], None, 256)?
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| parse_window_key(k).is_some())
                .collect();
            if open.is_empty() {
                break;
            }
            for k in open {
                if let Some((start, _)) = parse_window_key(&k) {
                    let end = start + self.size;
                    closed_upto = Some(closed_upto.map_or(end, |c| c.max(end)));
                }
                self.close(&k, state, out)?;
            }
        }
        if let Some(upto) = closed_upto {
            state
                .store(STORE)?
                .put(CLOSED_UPTO, &(upto as u64).to_be_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::state::TestState;
    use kstage::topology::{Context, Headers};

    fn record(key: &'static [u8], ts: i64) -> Record<'static> {
        Record {
            key: Some(key),
            value: Some(b"v"),
            headers: Headers::from_slice(&[]),
            context: Context {
                topic: "in",
                partition: 0,
                offset: 0,
                timestamp: Some(ts),
            },
        }
    }

    fn results(out: &[OutputRecord<'_>]) -> Vec<(i64, u64)> {
        out.iter()
            .map(|r| {
                let v: serde_json::Value =
                    serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("json");
                (
                    v["start"].as_i64().unwrap_or(-1),
                    v["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn hopping_windows_contain_each_timestamp_size_over_advance_times() {
        let w = WindowedCount {
            size: 10,
            advance: 5,
            grace: 0,
            idle_close: None,
        };
        assert_eq!(w.windows(12).collect::<Vec<_>>(), vec![5, 10]);
        assert_eq!(w.windows(-1).collect::<Vec<_>>(), vec![-10, -5]);
        let t = WindowedCount {
            size: 10,
            advance: 10,
            grace: 0,
            idle_close: None,
        };
        assert_eq!(t.windows(19).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn emits_one_final_count_per_window_when_stream_time_passes_end_plus_grace() {
        let mut w = WindowedCount {
            size: 10,
            advance: 10,
            grace: 5,
            idle_close: None,
        };
        let mut state = TestState::new(&w, 0).expect("state");
        for ts in [1, 3, 9, 12] {
            let out = state.process(&mut w, &record(b"a", ts)).expect("counted");
            assert!(out.is_empty(), "nothing closes before 15: {ts}");
        }
        // Within grace: still counted into [0, 10).
        assert!(state
            .process(&mut w, &record(b"a", 8))
            .expect("in grace")
            .is_empty());
        let out = state
            .process(&mut w, &record(b"b", 15))
            .expect("closes [0,10)");
        assert_eq!(results(&out), vec![(0, 4)]);
        let late = state.process(&mut w, &record(b"a", 2)).expect_err("late");
        assert_eq!(late.kind, kstage::topology::TopologyErrorKind::Invalid);
        let out = state
            .process(&mut w, &record(b"a", 100))
            .expect("closes the rest");
        assert_eq!(results(&out), vec![(10, 1), (10, 1)]);
    }

    #[test]
    fn idle_close_emits_every_open_window_once_without_input_and_later_records_are_late() {
        let mut w = WindowedCount {
            size: 10,
            advance: 10,
            grace: 0,
            idle_close: Some(1_000),
        };
        let mut state = TestState::new(&w, 0).expect("state");
        state.set_wall_clock(50_000);
        for (key, ts) in [(&b"a"[..], 1), (b"a", 3), (b"b", 5)] {
            assert!(state
                .process(&mut w, &record(key, ts))
                .expect("counted")
                .is_empty());
        }
        // Before the idle period ends nothing fires.
        assert!(state
            .fire_wall_timers(&mut w, 50_999)
            .expect("tick")
            .is_empty());
        let mut closed = results(&state.fire_wall_timers(&mut w, 51_000).expect("idle"));
        closed.sort();
        assert_eq!(closed, vec![(0, 1), (0, 2)]);
        // Fired once: a later tick emits nothing, and no timer is left.
        assert!(state
            .fire_wall_timers(&mut w, 99_000)
            .expect("tick")
            .is_empty());
        assert!(state
            .state()
            .pending_wall_timers(10)
            .expect("timers")
            .is_empty());
        assert!(state.state().pending_timers(10).expect("timers").is_empty());
        // A record of a window closed on idle is late; a later window opens and re-arms.
        let late = state.process(&mut w, &record(b"a", 7)).expect_err("late");
        assert_eq!(late.kind, kstage::topology::TopologyErrorKind::Invalid);
        assert!(state
            .process(&mut w, &record(b"a", 25))
            .expect("new")
            .is_empty());
        assert_eq!(
            state.state().pending_wall_timers(10).expect("timers").len(),
            1
        );
    }
}
