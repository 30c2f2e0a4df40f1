//! Every transition of [`TxnState`], including the paths the integration tests take: begin,
//! send, commit OK, abortable, fatal, unknown outcome, revoke, lost, shutdown and watchdog.

use super::*;

fn open(partitions: &[(i32, i64)]) -> TxnState {
    let mut state = TxnState::Idle;
    for &(partition, offset) in partitions {
        state
            .record("in", partition, offset)
            .expect("a record is legal");
    }
    state
}

fn span(partitions: &[(i32, i64)]) -> Span {
    let mut span = Span::default();
    for &(partition, offset) in partitions {
        span.add("in", partition, offset);
    }
    span
}

#[test]
fn the_first_record_begins_a_transaction_and_later_ones_send_into_it() {
    let mut state = TxnState::Idle;
    assert_eq!(state.record("in", 0, 10), Ok(OnRecord::Begin));
    assert_eq!(state.record("in", 1, 5), Ok(OnRecord::Send));
    assert_eq!(state.record("in", 0, 11), Ok(OnRecord::Send));
    assert_eq!(state, TxnState::Open(span(&[(0, 10), (1, 5)])));
    assert_eq!(state.phase(), OnRecord::Send);
    assert!(state.is_open());
}

#[test]
fn a_due_batch_commits_and_returns_to_idle() {
    let mut state = open(&[(0, 10)]);
    assert_eq!(state.start_commit(), Ok(Some(span(&[(0, 10)]))));
    assert!(state.is_open(), "a commit in flight counts as open");
    assert_eq!(
        state.commit_ended(CommitEnd::Committed),
        Ok(Settled::Committed { begin_next: false })
    );
    assert_eq!(state, TxnState::Idle);
    assert!(!state.is_open());
}

#[test]
fn an_idle_stage_has_nothing_to_commit_or_abort() {
    let mut state = TxnState::Idle;
    assert_eq!(state.start_commit(), Ok(None));
    assert_eq!(state.abort(), Ok(Abort::Nothing));
    assert_eq!(state.revoke(false, false), Revoke::Nothing);
    assert_eq!(state.phase(), OnRecord::Begin);
}

#[test]
fn records_read_while_a_commit_is_in_flight_are_held_for_the_next_transaction() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    assert_eq!(state.record("in", 0, 20), Ok(OnRecord::Hold));
    assert_eq!(state.record("in", 2, 3), Ok(OnRecord::Hold));
    assert_eq!(state.phase(), OnRecord::Hold);
    assert_eq!(
        state.commit_ended(CommitEnd::Committed),
        Ok(Settled::Committed { begin_next: true })
    );
    assert_eq!(state, TxnState::Open(span(&[(0, 20), (2, 3)])));
}

#[test]
fn a_second_commit_while_one_is_in_flight_is_illegal() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    let before = state.clone();
    assert!(state.start_commit().is_err());
    assert_eq!(state, before, "an illegal call leaves the state as it was");
    assert!(state.abort().is_err(), "abort must settle the commit first");
    assert_eq!(state, before);
}

#[test]
fn an_abortable_commit_reopens_both_batches_for_one_abort_and_rewind() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.record("in", 0, 15).expect("held");
    state.record("in", 1, 7).expect("held");
    assert_eq!(
        state.commit_ended(CommitEnd::Abortable),
        Ok(Settled::MustAbort)
    );
    assert_eq!(
        state.abort(),
        Ok(Abort::Rewind(span(&[(0, 10), (1, 7)]))),
        "the earlier first offset wins; the held batch adds its own partitions"
    );
    assert_eq!(state, TxnState::Idle);
}

#[test]
fn an_abort_of_an_open_batch_returns_its_span_to_rewind() {
    let mut state = open(&[(3, 42)]);
    assert_eq!(state.abort(), Ok(Abort::Rewind(span(&[(3, 42)]))));
    assert_eq!(state, TxnState::Idle);
}

#[test]
fn a_commit_with_an_unknown_outcome_is_never_aborted_nor_committed() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.record("in", 0, 11).expect("held");
    assert_eq!(
        state.commit_ended(CommitEnd::Fatal { in_doubt: true }),
        Ok(Settled::Failed)
    );
    assert_eq!(state, TxnState::InDoubt(span(&[(0, 10)])));
    assert_eq!(state.abort(), Ok(Abort::Refused));
    assert_eq!(state, TxnState::InDoubt(span(&[(0, 10)])), "still in doubt");
    assert!(state.start_commit().is_err());
    assert!(state.record("in", 0, 12).is_err());
    assert_eq!(state.revoke(false, false), Revoke::Nothing);
    assert_eq!(state.revoke(true, false), Revoke::Nothing);
    state.fail();
    assert_eq!(state, TxnState::InDoubt(span(&[(0, 10)])));
}

#[test]
fn the_watchdog_giving_a_commit_up_leaves_it_in_doubt() {
    // The watchdog reports a hung commit as a fatal end with an unknown outcome.
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state
        .commit_ended(CommitEnd::Fatal { in_doubt: true })
        .expect("in flight");
    assert!(matches!(state, TxnState::InDoubt(_)));
}

#[test]
fn a_fatal_commit_error_with_a_known_outcome_allows_one_best_effort_abort() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    assert_eq!(
        state.commit_ended(CommitEnd::Fatal { in_doubt: false }),
        Ok(Settled::Failed)
    );
    assert_eq!(state.revoke(false, false), Revoke::Abort, "never commit");
    assert_eq!(state.abort(), Ok(Abort::Rewind(span(&[(0, 10)]))));
    assert_eq!(state, TxnState::Defunct(None));
    assert_eq!(state.abort(), Ok(Abort::Nothing));
    assert!(state.record("in", 0, 11).is_err());
    assert!(
        state.start_commit().is_err(),
        "a defunct worker commits nothing"
    );
}

#[test]
fn a_fatal_error_outside_the_commit_makes_the_open_batch_uncommittable() {
    let mut state = open(&[(0, 10)]);
    state.fail();
    assert_eq!(state, TxnState::Defunct(Some(span(&[(0, 10)]))));
    assert!(state.start_commit().is_err());
    assert_eq!(state.revoke(false, false), Revoke::Abort);
    let mut idle = TxnState::Idle;
    idle.fail();
    assert_eq!(idle, TxnState::Defunct(None));
    assert_eq!(idle.revoke(false, false), Revoke::Nothing);
}

#[test]
fn a_fatal_error_while_a_commit_is_in_flight_leaves_that_commit_in_doubt() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.fail();
    assert_eq!(state, TxnState::InDoubt(span(&[(0, 10)])));
}

#[test]
fn a_clean_revoke_commits_and_a_lost_one_aborts() {
    let state = open(&[(0, 10)]);
    assert_eq!(state.revoke(false, false), Revoke::Commit);
    assert_eq!(state.revoke(true, false), Revoke::Abort);
}

#[test]
fn a_revoke_while_the_thread_unwinds_from_a_panic_never_commits() {
    let state = open(&[(0, 10)]);
    assert_eq!(state.revoke(false, true), Revoke::Abort);
}

#[test]
fn a_revoke_during_a_commit_settles_it_first_and_drops_the_held_batch() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.record("in", 1, 4).expect("held");
    assert_eq!(state.revoke(false, false), Revoke::Settle);
    assert_eq!(
        state.commit_ended_at_revoke(CommitEnd::Committed),
        Ok((
            Settled::Committed { begin_next: false },
            Some(span(&[(1, 4)]))
        ))
    );
    assert_eq!(state, TxnState::Idle);
    assert_eq!(state.revoke(false, false), Revoke::Nothing);
}

#[test]
fn a_failed_commit_at_revoke_keeps_the_held_batch_for_the_abort() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.record("in", 1, 4).expect("held");
    assert_eq!(
        state.commit_ended_at_revoke(CommitEnd::Abortable),
        Ok((Settled::MustAbort, None))
    );
    assert_eq!(state.abort(), Ok(Abort::Rewind(span(&[(0, 10), (1, 4)]))));
}

#[test]
fn shutdown_commits_the_open_batch_like_any_due_batch() {
    // Shutdown is "start_commit, then wait": no separate path that could skip the commit.
    let mut state = open(&[(0, 10), (1, 0)]);
    let committing = state.start_commit().expect("legal").expect("open");
    assert_eq!(committing.read.len(), 2);
    state.commit_ended(CommitEnd::Committed).expect("in flight");
    assert_eq!(state, TxnState::Idle);
}

#[test]
fn commit_ended_without_a_commit_in_flight_is_illegal() {
    let mut state = open(&[(0, 10)]);
    assert!(state.commit_ended(CommitEnd::Committed).is_err());
    let mut idle = TxnState::Idle;
    assert!(idle.commit_ended(CommitEnd::Abortable).is_err());
}

#[test]
fn an_illegal_call_names_the_call_and_the_state() {
    let mut state = TxnState::Defunct(None);
    let error = state.record("in", 0, 1).expect_err("illegal");
    assert_eq!(
        error.to_string(),
        "a record is not allowed in state Defunct"
    );
}

#[test]
fn a_batch_in_doubt_keeps_its_held_successor_and_a_new_producer_settles_both() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state
        .record("in", 1, 7)
        .expect("held: a partition new to the next batch");
    state
        .commit_ended(CommitEnd::Fatal { in_doubt: true })
        .expect("in flight");
    assert_eq!(state, TxnState::InDoubt(span(&[(0, 10), (1, 7)])));
    assert_eq!(state.abort(), Ok(Abort::Refused), "never aborted");
    assert_eq!(
        state.recovered(),
        Some((span(&[(0, 10), (1, 7)]), true)),
        "in doubt: rewound to the committed offsets"
    );
    assert_eq!(state, TxnState::Idle);
    assert_eq!(state.record("in", 0, 12), Ok(OnRecord::Begin));
}

#[test]
fn a_defunct_batch_is_rewound_to_its_first_offsets_once_a_new_producer_aborted_it() {
    let mut state = open(&[(0, 10)]);
    state.start_commit().expect("open batch commits");
    state.record("in", 2, 3).expect("held");
    state
        .commit_ended(CommitEnd::Fatal { in_doubt: false })
        .expect("in flight");
    assert_eq!(state, TxnState::Defunct(Some(span(&[(0, 10), (2, 3)]))));
    assert_eq!(state.recovered(), Some((span(&[(0, 10), (2, 3)]), false)));
    assert_eq!(state, TxnState::Idle);
    assert_eq!(state.recovered(), None, "nothing left to settle");
}
