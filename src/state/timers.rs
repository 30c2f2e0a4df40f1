//! Event-time and wall-clock timers, kept as entries of the topology's timer store, so they are
//! changelogged, restored and committed exactly like any other state.
//!
//! ```text
//!   key:  0x00 | at (8 bytes, order-preserving) | tag     value: empty   (event time)
//!   key:  0x01 | at (8 bytes, order-preserving) | tag     value: empty   (wall clock)
//!   key:  0xFF | "stream_time"                             value: stream time (8 bytes)
//! ```
//!
//! Keys sort by kind, then firing time, so the due timers of a kind are one range scan from
//! `kind` to `kind | now + 1` (event time: now is the stream time; wall clock: the engine's
//! clock). A timer fires once: firing deletes it in the same transaction as
//! whatever its callback writes and emits; if that transaction aborts, the timer is back and
//! fires again after the rewind.

/// The stream time's key in the timer store.
pub(crate) const STREAM_TIME_KEY: &[u8] = b"\xffstream_time";

/// The first byte of an event-time timer's key.
const EVENT: u8 = 0;

/// The first byte of a wall-clock timer's key.
const WALL: u8 = 1;

/// A time in milliseconds as 8 bytes that sort like the numbers (sign bit flipped).
pub(crate) fn encode_time(at: i64) -> Vec<u8> {
    ((at as u64) ^ (1 << 63)).to_be_bytes().to_vec()
}

/// The inverse of [`encode_time`].
pub(crate) fn decode_time(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

fn timer_key(kind: u8, at: i64, tag: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + tag.len());
    key.push(kind);
    key.extend_from_slice(&encode_time(at));
    key.extend_from_slice(tag);
    key
}

fn bound(kind: u8, now: i64) -> Vec<u8> {
    match now.checked_add(1) {
        Some(next) => timer_key(kind, next, &[]),
        None => vec![kind + 1],
    }
}

fn parse(kind: u8, key: &[u8]) -> Option<(i64, &[u8])> {
    match key.split_first() {
        Some((first, rest)) if *first == kind => Some((decode_time(rest)?, rest.get(8..)?)),
        _ => None,
    }
}

/// The key of an event-time timer firing at `at` with `tag`.
pub(crate) fn event_key(at: i64, tag: &[u8]) -> Vec<u8> {
    timer_key(EVENT, at, tag)
}

/// The first key past every event timer due at `now` (those with `at <= now`).
pub(crate) fn due_bound(now: i64) -> Vec<u8> {
    bound(EVENT, now)
}

/// The start of the event timers.
pub(crate) fn first_key() -> Vec<u8> {
    vec![EVENT]
}

/// An event timer's time and tag, from its key.
pub(crate) fn parse_event_key(key: &[u8]) -> Option<(i64, &[u8])> {
    parse(EVENT, key)
}

/// The key of a wall-clock timer firing at `at` (ms since the Unix epoch) with `tag`.
pub(crate) fn wall_key(at: i64, tag: &[u8]) -> Vec<u8> {
    timer_key(WALL, at, tag)
}

/// The first key past every wall-clock timer due at `now` (those with `at <= now`).
pub(crate) fn wall_due_bound(now: i64) -> Vec<u8> {
    bound(WALL, now)
}

/// The start of the wall-clock timers.
pub(crate) fn wall_first_key() -> Vec<u8> {
    vec![WALL]
}

/// A wall-clock timer's time and tag, from its key.
pub(crate) fn parse_wall_key(key: &[u8]) -> Option<(i64, &[u8])> {
    parse(WALL, key)
}

/// The engine's wall clock: ms since the Unix epoch.
pub(crate) fn wall_clock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_time_including_negative_times() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let keys: Vec<Vec<u8>> = times.iter().map(|t| event_key(*t, b"x")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (t, k) in times.iter().zip(&keys) {
            assert_eq!(parse_event_key(k), Some((*t, &b"x"[..])));
        }
    }

    #[test]
    fn the_due_bound_includes_timers_at_now_and_excludes_later_ones() {
        let now = 1_000;
        assert!(event_key(now, b"zzz") < due_bound(now));
        assert!(event_key(now + 1, b"") >= due_bound(now));
        assert!(STREAM_TIME_KEY > due_bound(i64::MAX).as_slice());
    }

    #[test]
    fn wall_timers_sort_after_every_event_timer_and_before_the_stream_time() {
        let wall = wall_key(i64::MIN, b"");
        assert!(wall >= due_bound(i64::MAX));
        assert!(event_key(i64::MAX, b"\xff\xff") < wall);
        assert!(STREAM_TIME_KEY > wall_due_bound(i64::MAX).as_slice());
        assert_eq!(parse_event_key(&wall), None);
        assert_eq!(parse_wall_key(&wall_key(42, b"t")), Some((42, &b"t"[..])));
        assert!(wall_key(42, b"zz") < wall_due_bound(42));
        assert!(wall_key(43, b"") >= wall_due_bound(42));
    }
}
