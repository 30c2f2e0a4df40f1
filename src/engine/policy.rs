//! When to close the open batch: the commit policy, asked once per turn of the worker loop.
//!
//! ```text
//!   batch tally (records, age) + commit in flight? + did the last poll find the queue empty?
//!        │
//!        ▼
//!   CommitTiming::decide ──► Commit now  |  Poll(at most this long, then ask again)
//!        ▲
//!   commit durations (CommitTiming::commit_took) ──► smoothed estimate (target_latency)
//! ```
//!
//! Every policy keeps two bounds: a batch is committed once it is `commit_interval` old or
//! holds `max_records_per_txn` records, whichever comes first. Within them:
//!
//! * [`CommitPolicy::Interval`] waits for one of the bounds (the classic policy; Kafka Streams'
//!   `commit.interval.ms`).
//! * [`CommitPolicy::BackToBack`] closes the batch as soon as records are waiting and no commit
//!   is running: blocking commits first drain what the consumer has already fetched (polls that
//!   do not wait) and commit when a poll finds nothing ready; pipelined commits close the held
//!   batch the moment the commit before it ends. At low load every transaction is small and
//!   records wait only for one commit; at full load records pile up while a commit runs, so
//!   transactions grow by themselves and throughput is kept.
//! * [`CommitPolicy::TargetLatency`] lets the batch grow for as long as its oldest record can
//!   still be committed within `target_latency`: once its age plus the expected commit time
//!   reaches the target, it closes the way `back_to_back` does. The expected commit time is
//!   smoothed the way TCP estimates a retransmission timeout (RFC 6298: mean plus four mean
//!   deviations), so a commit that is slower than usual still meets the target most of the
//!   time. Fewer, larger transactions than `back_to_back` at low load (less broker work); and
//!   where commits are slower than the target it is `back_to_back`, never one record per
//!   transaction (blocking commits still take the records already fetched first).
//!
//! Invariants: the decision is a pure function of its inputs (no clock, no Kafka; the caller
//! passes the batch's age), so it is unit-tested here; a wait is never longer than what is left
//! until a bound, nor than [`MAX_POLL_WAIT`]; with a batch open and nothing stopping it, some
//! bound is always reached, so no batch stays open past `commit_interval` (plus one poll).

use std::time::Duration;

use crate::config::CommitPolicy;

/// The longest a poll blocks, so shutdown is noticed promptly.
pub(crate) const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// While a pipelined commit runs (back_to_back), how long a poll blocks before the loop looks
/// again whether the commit has ended: its end is noticed between polls.
const COMMIT_CHECK_WAIT: Duration = Duration::from_millis(1);

/// What the loop knows of the open batch when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchView {
    /// Input records in the batch.
    pub(crate) records: usize,
    /// Since its first record was consumed.
    pub(crate) age: Duration,
    /// A commit is running (pipelined): this batch's transaction has not begun yet.
    pub(crate) commit_in_flight: bool,
    /// The last poll returned nothing: the consumer has no record ready.
    pub(crate) input_idle: bool,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Close the batch now.
    Commit,
    /// Poll, waiting at most this long, then ask again.
    Poll(Duration),
}

/// A smoothed commit duration (RFC 6298's estimator: gains 1/8 and 1/4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct CommitEstimate {
    /// Smoothed mean; `None` before the first commit.
    mean: Option<Duration>,
    /// Smoothed mean deviation.
    deviation: Duration,
}

impl CommitEstimate {
    fn observe(&mut self, took: Duration) {
        match self.mean {
            None => {
                self.mean = Some(took);
                self.deviation = took / 2;
            }
            Some(mean) => {
                let error = took.abs_diff(mean);
                self.deviation = self.deviation * 3 / 4 + error / 4;
                self.mean = Some(mean * 7 / 8 + took / 8);
            }
        }
    }

    /// Mean plus four deviations: what a commit should take at most, nearly always.
    fn bound(&self) -> Duration {
        self.mean.map_or(Duration::ZERO, |m| m + self.deviation * 4)
    }
}

/// The commit policy of one worker, with what it has learnt of its commits.
#[derive(Debug, Clone)]
pub(crate) struct CommitTiming {
    policy: CommitPolicy,
    commit_interval: Duration,
    max_records: usize,
    /// Commits run in the background while the worker reads on.
    pipelined: bool,
    /// [`CommitPolicy::TargetLatency`] only.
    target_latency: Duration,
    estimate: CommitEstimate,
}

impl CommitTiming {
    pub(crate) fn new(
        policy: CommitPolicy,
        commit_interval: Duration,
        max_records: usize,
        pipelined: bool,
        target_latency: Option<Duration>,
    ) -> Self {
        Self {
            policy,
            commit_interval,
            max_records,
            pipelined,
            target_latency: target_latency.unwrap_or(commit_interval),
            estimate: CommitEstimate::default(),
        }
    }

    /// A commit took this long (from its start to its end being noticed).
    pub(crate) fn commit_took(&mut self, took: Duration) {
        self.estimate.observe(took);
    }

    /// Commit now, or how long the next poll may wait. `batch`: the open batch, if any.
    pub(crate) fn decide(&self, batch: Option<BatchView>) -> Decision {
        let Some(batch) = batch else {
            return Decision::Poll(MAX_POLL_WAIT);
        };
        if batch.records >= self.max_records {
            return Decision::Commit;
        }
        let Some(left) = self
            .commit_interval
            .checked_sub(batch.age)
            .filter(|left| !left.is_zero())
        else {
            return Decision::Commit;
        };
        // How long the batch collects records before it may close early.
        let hold = match self.policy {
            CommitPolicy::Interval => return Decision::Poll(left.min(MAX_POLL_WAIT)),
            CommitPolicy::BackToBack => Duration::ZERO,
            CommitPolicy::TargetLatency => {
                self.target_latency.saturating_sub(self.estimate.bound())
            }
        };
        if let Some(held) = hold.checked_sub(batch.age).filter(|h| !h.is_zero()) {
            return Decision::Poll(held.min(left).min(MAX_POLL_WAIT));
        }
        match (batch.commit_in_flight, self.pipelined, batch.input_idle) {
            // Its end is noticed between polls: look again soon.
            (true, _, _) => Decision::Poll(left.min(COMMIT_CHECK_WAIT)),
            // Pipelined: the records held while the last commit ran go as soon as it has
            // ended; the worker reads on meanwhile.
            (false, true, _) | (false, false, true) => Decision::Commit,
            // Blocking commits: take the records already fetched without waiting first, then
            // commit when a poll finds none ready.
            (false, false, false) => Decision::Poll(Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing(policy: CommitPolicy, pipelined: bool, target: Option<Duration>) -> CommitTiming {
        CommitTiming::new(policy, 100 * MS, 1_000, pipelined, target)
    }

    fn batch(records: usize, age_ms: u64) -> BatchView {
        BatchView {
            records,
            age: Duration::from_millis(age_ms),
            commit_in_flight: false,
            input_idle: false,
        }
    }

    fn idle(view: BatchView) -> BatchView {
        BatchView {
            input_idle: true,
            ..view
        }
    }

    fn in_flight(view: BatchView) -> BatchView {
        BatchView {
            commit_in_flight: true,
            ..view
        }
    }

    const ALL: [CommitPolicy; 3] = [
        CommitPolicy::Interval,
        CommitPolicy::BackToBack,
        CommitPolicy::TargetLatency,
    ];

    #[test]
    fn without_a_batch_every_policy_polls_for_the_longest_wait() {
        for policy in ALL {
            for pipelined in [false, true] {
                let t = timing(policy, pipelined, Some(20 * MS));
                assert_eq!(t.decide(None), Decision::Poll(MAX_POLL_WAIT), "{policy:?}");
            }
        }
    }

    #[test]
    fn every_policy_commits_at_commit_interval_or_max_records() {
        for policy in ALL {
            for pipelined in [false, true] {
                let t = timing(policy, pipelined, Some(20 * MS));
                for view in [batch(1, 100), batch(1_000, 0), in_flight(batch(5, 150))] {
                    assert_eq!(
                        t.decide(Some(view)),
                        Decision::Commit,
                        "{policy:?} {view:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn interval_waits_for_what_is_left_of_commit_interval_even_when_idle() {
        let t = timing(CommitPolicy::Interval, false, None);
        assert_eq!(t.decide(Some(idle(batch(3, 30)))), Decision::Poll(70 * MS));
        assert_eq!(t.decide(Some(batch(3, 99))), Decision::Poll(MS));
        let long = CommitTiming::new(CommitPolicy::Interval, 1_000 * MS, 10, false, None);
        assert_eq!(
            long.decide(Some(batch(3, 1))),
            Decision::Poll(MAX_POLL_WAIT)
        );
    }

    #[test]
    fn back_to_back_blocking_drains_ready_records_then_commits_when_a_poll_finds_none() {
        let t = timing(CommitPolicy::BackToBack, false, None);
        assert_eq!(t.decide(Some(batch(3, 1))), Decision::Poll(Duration::ZERO));
        assert_eq!(t.decide(Some(idle(batch(3, 1)))), Decision::Commit);
    }

    #[test]
    fn back_to_back_pipelined_commits_as_soon_as_the_commit_before_has_ended() {
        let t = timing(CommitPolicy::BackToBack, true, None);
        // A commit runs: hold, and look again within a millisecond whether it has ended.
        assert_eq!(t.decide(Some(in_flight(batch(3, 1)))), Decision::Poll(MS));
        assert_eq!(
            t.decide(Some(in_flight(idle(batch(3, 1))))),
            Decision::Poll(MS)
        );
        // Ended: the held records go at once, ready records or not.
        assert_eq!(t.decide(Some(batch(3, 1))), Decision::Commit);
        assert_eq!(t.decide(Some(idle(batch(3, 1)))), Decision::Commit);
    }

    #[test]
    fn back_to_back_never_waits_past_commit_interval_while_a_commit_runs() {
        let t = timing(CommitPolicy::BackToBack, true, None);
        let view = in_flight(BatchView {
            age: 100 * MS - Duration::from_micros(300),
            ..batch(3, 0)
        });
        assert_eq!(
            t.decide(Some(view)),
            Decision::Poll(Duration::from_micros(300))
        );
    }

    #[test]
    fn target_latency_before_any_commit_waits_for_the_whole_target() {
        let t = timing(CommitPolicy::TargetLatency, false, Some(20 * MS));
        assert_eq!(t.decide(Some(idle(batch(3, 5)))), Decision::Poll(15 * MS));
        // Past the target: as back_to_back.
        assert_eq!(t.decide(Some(batch(3, 20))), Decision::Poll(Duration::ZERO));
        assert_eq!(t.decide(Some(idle(batch(3, 20)))), Decision::Commit);
    }

    #[test]
    fn target_latency_leaves_room_for_the_expected_commit() {
        let mut t = timing(CommitPolicy::TargetLatency, false, Some(20 * MS));
        for _ in 0..50 {
            t.commit_took(2 * MS);
        }
        // Steady 2 ms commits: the deviation has decayed to nearly nothing.
        let bound = t.estimate.bound();
        assert!(bound >= 2 * MS && bound < 3 * MS, "{bound:?}");
        assert_eq!(
            t.decide(Some(batch(3, 10))),
            Decision::Poll(20 * MS - bound - 10 * MS)
        );
        assert_eq!(t.decide(Some(idle(batch(3, 18)))), Decision::Commit);
    }

    #[test]
    fn target_latency_widens_its_margin_when_commits_vary() {
        let mut steady = timing(CommitPolicy::TargetLatency, false, Some(40 * MS));
        let mut jumpy = steady.clone();
        for i in 0..40 {
            steady.commit_took(5 * MS);
            jumpy.commit_took(if i % 2 == 0 { MS } else { 9 * MS });
        }
        assert!(jumpy.estimate.bound() > steady.estimate.bound() + 5 * MS);
        // Commits slower than the target: back_to_back at once (ready records first).
        let mut slow = timing(CommitPolicy::TargetLatency, false, Some(10 * MS));
        slow.commit_took(30 * MS);
        assert_eq!(
            slow.decide(Some(batch(1, 0))),
            Decision::Poll(Duration::ZERO)
        );
        assert_eq!(slow.decide(Some(idle(batch(1, 0)))), Decision::Commit);
        let mut slow_pipelined = timing(CommitPolicy::TargetLatency, true, Some(10 * MS));
        slow_pipelined.commit_took(30 * MS);
        assert_eq!(
            slow_pipelined.decide(Some(in_flight(batch(1, 0)))),
            Decision::Poll(MS)
        );
    }

    #[test]
    fn target_latency_is_capped_by_commit_interval() {
        let t = CommitTiming::new(
            CommitPolicy::TargetLatency,
            10 * MS,
            1_000,
            false,
            Some(50 * MS),
        );
        assert_eq!(t.decide(Some(batch(3, 4))), Decision::Poll(6 * MS));
    }

    #[test]
    fn the_estimate_follows_rfc_6298() {
        let mut e = CommitEstimate::default();
        assert_eq!(e.bound(), Duration::ZERO);
        e.observe(8 * MS);
        assert_eq!((e.mean, e.deviation), (Some(8 * MS), 4 * MS));
        e.observe(16 * MS);
        // deviation = 3/4 * 4 + 1/4 * 8 = 5; mean = 7/8 * 8 + 1/8 * 16 = 9
        assert_eq!((e.mean, e.deviation), (Some(9 * MS), 5 * MS));
        assert_eq!(e.bound(), 29 * MS);
    }
}
