//! Where the search for due event-time timers starts, and whether it is needed at all: a
//! partition's lower bounds on its live event timers (the staged writes over the local store),
//! so that the check after each record neither re-reads the timers fired earlier in the open
//! transaction (their deletes are staged, the local store still holds them) nor opens a read of
//! the local store while no timer can be due.
//!
//! ```text
//!   set timer k (at)   ──► floor = min(floor, k), next = min(next, at)
//!   delete timer       ──► nothing (fewer live timers keeps both bounds true)
//!   fire k (in order)  ──► floor = k, unless a callback set a lower key during this scan
//!   scan found none due ──► next = the earliest live timer's `at` (i64::MAX: none)
//!   undo / abort       ──► reset (a fired timer may be live again)
//! ```
//!
//! Invariants (both are lower bounds, so a stale value costs a scan, never a missed timer):
//! * every live event-timer key is `>= floor`;
//! * when `next` is `Some(t)`, every live event timer has `at >= t`.

use super::timers;

/// Lower bounds on a partition's live event timers.
#[derive(Debug, Clone)]
pub(crate) struct EventCursor {
    /// No live event-timer key sorts below it.
    pub(crate) floor: Vec<u8>,
    /// No live event timer fires before it (`None`: unknown).
    next: Option<i64>,
    /// A timer was set below the floor since [`Self::scan_started`].
    lowered: bool,
}

impl Default for EventCursor {
    fn default() -> Self {
        Self {
            floor: timers::first_key(),
            next: None,
            lowered: false,
        }
    }
}

impl EventCursor {
    /// Forgets both bounds (after an undo or an abort: deleted timers may be live again).
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// An event timer `key` was set (staged as live).
    pub(crate) fn set(&mut self, key: &[u8]) {
        if key < self.floor.as_slice() {
            self.floor = key.to_vec();
            self.lowered = true;
        }
        if let (Some(next), Some((at, _))) = (self.next, timers::parse_event_key(key)) {
            self.next = Some(next.min(at));
        }
    }

    /// Whether no event timer can be due at stream time `now`.
    pub(crate) fn none_due(&self, now: i64) -> bool {
        self.next.is_some_and(|next| now < next)
    }

    /// A scan for due timers begins at [`Self::floor`].
    pub(crate) fn scan_started(&mut self) {
        self.lowered = false;
    }

    /// The due timer `key`, the smallest live one, was deleted to fire.
    pub(crate) fn fired(&mut self, key: &[u8]) {
        if !self.lowered {
            self.floor = key.to_vec();
        }
    }

    /// A scan found nothing due; `earliest` is the earliest live timer's time, if any.
    pub(crate) fn nothing_due(&mut self, earliest: Option<i64>) {
        self.next = Some(earliest.unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_set_below_the_floor_lowers_it_and_the_next_time() {
        let mut cursor = EventCursor::default();
        cursor.nothing_due(Some(100));
        assert!(cursor.none_due(99));
        assert!(!cursor.none_due(100));
        cursor.scan_started();
        cursor.fired(&timers::event_key(50, b"a"));
        assert_eq!(cursor.floor, timers::event_key(50, b"a"));
        cursor.set(&timers::event_key(20, b"b"));
        assert_eq!(cursor.floor, timers::event_key(20, b"b"));
        assert!(!cursor.none_due(20));
        // A later fire in the same scan must not raise the floor past the new timer.
        cursor.fired(&timers::event_key(60, b"c"));
        assert_eq!(cursor.floor, timers::event_key(20, b"b"));
        cursor.reset();
        assert_eq!(cursor.floor, timers::first_key());
        assert!(!cursor.none_due(i64::MIN));
    }

    #[test]
    fn with_no_timer_left_nothing_is_due_until_one_is_set() {
        let mut cursor = EventCursor::default();
        cursor.nothing_due(None);
        assert!(cursor.none_due(i64::MAX - 1));
        cursor.set(&timers::event_key(7, b""));
        assert!(cursor.none_due(6));
        assert!(!cursor.none_due(7));
    }
}
