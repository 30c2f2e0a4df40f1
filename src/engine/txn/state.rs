//! The transaction of one worker as an explicit state machine: pure, no Kafka, unit-tested.
//!
//! ```text
//!                 first record                  batch due
//!     ┌──────┐ ─────────────────► ┌──────┐ ──────────────────► ┌────────────┐
//!     │ Idle │                    │ Open │                     │ Committing │ ── records read
//!     └──────┘ ◄───────────────── └──────┘ ◄─────────────┐     └────────────┘    meanwhile are
//!        ▲         abort (rewind)     │    committed,     │       │  │  │         held (next)
//!        │                            │    next waiting   └───────┘  │  │
//!        └──────────────── committed, nothing waiting ───────────────┘  │
//!        ▲                                                              │ outcome unknown
//!        │ abortable: Open(committing + next) ──► abort ──► Idle         │ (timeout, watchdog)
//!                                                                       ▼
//!     ┌─────────┐  fatal error anywhere            ┌─────────┐
//!     │ Defunct │ ◄──────────────────────────────  │ InDoubt │  never committed again,
//!     └─────────┘  may be aborted, never committed  └─────────┘  never aborted
//!          └──────── recovered (a new producer's init settled it) ──────┴──► Idle + rewind
//! ```
//!
//! A [`Span`] (defined with the other batch bookkeeping in [`crate::engine::offsets`]) is what
//! a commit and a rewind need of a batch: the input partitions it read and
//! the first offset it read from each. The per-record counts (records, bytes, outputs) are the
//! worker's own tally, kept without a lock (see [`super::WorkerTxn`]).
//!
//! Invariants, each enforced by the type or by a transition here:
//! * At most one transaction is open and at most one commit is in flight; records read while a
//!   commit is in flight belong to `next`, whose transaction has not begun.
//! * A batch whose commit outcome is unknown is never aborted and never committed
//!   ([`TxnState::abort`] refuses it). It leaves InDoubt (as Defunct does) only through
//!   [`TxnState::recovered`], once a new producer's `init_transactions` has settled it: then
//!   it is rewound to the committed offsets, which say whether it committed.
//! * After a fatal error nothing commits ([`TxnState::Defunct`]); its open transaction may be
//!   aborted, best effort.
//! * A revoke while the thread unwinds from a panic, or of lost partitions, aborts; only a
//!   clean revoke commits.
//! * Every illegal call (a record after a fatal error, a commit while one is in flight) is a
//!   typed error, never a silent no-op.

use std::fmt;

pub(crate) use crate::engine::offsets::Span;

/// The transaction state of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnState {
    /// No batch is open and no commit is running.
    Idle,
    /// A batch is open (in exactly_once, its transaction has begun).
    Open(Span),
    /// `committing` is being committed; `next` holds the partitions of records read meanwhile
    /// (pipelined commits), whose transaction has not begun.
    Committing {
        committing: Span,
        next: Option<Span>,
    },
    /// A commit ended with its outcome unknown: never aborted, never committed. A re-created
    /// producer's `init_transactions` settles it ([`Self::recovered`]), or the stage stops and
    /// the restarted instance's does. Holds the held batch's partitions too.
    InDoubt(Span),
    /// A fatal error: nothing commits any more. `Some`: a transaction still open, to abort (best
    /// effort).
    Defunct(Option<Span>),
}

/// A call the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Illegal {
    pub(crate) call: &'static str,
    pub(crate) state: &'static str,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not allowed in state {}", self.call, self.state)
    }
}

/// What the caller does with a record of a partition new to the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRecord {
    /// The first record of a batch: begin the transaction, then send.
    Begin,
    /// Send into the open transaction.
    Send,
    /// A commit is in flight: hold the outputs until the next transaction begins.
    Hold,
}

/// How a commit ended, as the commit phases report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitEnd {
    Committed,
    /// An abortable error: the transaction must be aborted.
    Abortable,
    /// A fatal error; `in_doubt` when commit_transaction's outcome is unknown (also when the
    /// watchdog gave the commit up).
    Fatal {
        in_doubt: bool,
    },
}

/// What a settled commit asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Committed; `begin_next`: the held batch is open now, begin its transaction and send its
    /// held outputs.
    Committed { begin_next: bool },
    /// Call [`TxnState::abort`]: the failed transaction, with the held batch merged in, is the
    /// open one again.
    MustAbort,
    /// The stage must stop (the state is InDoubt or Defunct now).
    Failed,
}

/// What an abort asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Abort {
    /// Nothing was open.
    Nothing,
    /// Abort the transaction (exactly_once), then rewind this span.
    Rewind(Span),
    /// The open transaction's outcome is unknown: it must not be aborted. Rewind nothing.
    Refused,
}

/// What a revoke (a rebalance taking partitions away) asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoke {
    Nothing,
    /// Commit the open batch now, while this member still owns its partitions.
    Commit,
    /// Abort the open batch: the partitions are lost, or the thread unwinds from a panic.
    Abort,
    /// Settle the commit in flight first, then ask again.
    Settle,
}

impl TxnState {
    /// The state's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Open(_) => "Open",
            Self::Committing { .. } => "Committing",
            Self::InDoubt(_) => "InDoubt",
            Self::Defunct(_) => "Defunct",
        }
    }

    fn illegal(&self, call: &'static str) -> Illegal {
        Illegal {
            call,
            state: self.name(),
        }
    }

    /// Whether records go straight into the open transaction (`Send`), are held (`Hold`), or
    /// none is open (`Begin`); what a record of a partition already in the batch needs.
    pub(crate) fn phase(&self) -> OnRecord {
        match self {
            Self::Open(_) => OnRecord::Send,
            Self::Committing { .. } => OnRecord::Hold,
            _ => OnRecord::Begin,
        }
    }

    /// A record of a partition the batch has not read yet (or the first record of a batch).
    #[cfg(test)]
    pub(crate) fn record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<OnRecord, Illegal> {
        self.record_with(topic, partition, offset, true)
    }

    /// As [`Self::record`]; `consumed: false` when no record of the partition was read, only
    /// its wall-clock timers fired (`offset`: where its consumer stands).
    pub(crate) fn record_with(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        consumed: bool,
    ) -> Result<OnRecord, Illegal> {
        let starting = || {
            let mut span = Span::default();
            span.add_with(topic, partition, offset, consumed);
            span
        };
        match self {
            Self::Idle => {
                *self = Self::Open(starting());
                Ok(OnRecord::Begin)
            }
            Self::Open(span) => {
                span.add_with(topic, partition, offset, consumed);
                Ok(OnRecord::Send)
            }
            Self::Committing { next, .. } => {
                match next {
                    Some(span) => span.add_with(topic, partition, offset, consumed),
                    None => *next = Some(starting()),
                }
                Ok(OnRecord::Hold)
            }
            Self::InDoubt(_) | Self::Defunct(_) => Err(self.illegal("a record")),
        }
    }

    /// The open batch is due: it starts committing. Returns its span, or `None` when nothing is
    /// open.
    pub(crate) fn start_commit(&mut self) -> Result<Option<Span>, Illegal> {
        match std::mem::replace(self, Self::Idle) {
            Self::Idle => Ok(None),
            Self::Open(span) => {
                *self = Self::Committing {
                    committing: span.clone(),
                    next: None,
                };
                Ok(Some(span))
            }
            other => {
                *self = other;
                Err(self.illegal("start_commit"))
            }
        }
    }

    /// The commit in flight ended.
    pub(crate) fn commit_ended(&mut self, end: CommitEnd) -> Result<Settled, Illegal> {
        if !matches!(self, Self::Committing { .. }) {
            return Err(self.illegal("commit_ended (no commit in flight)"));
        }
        let Self::Committing { committing, next } = std::mem::replace(self, Self::Idle) else {
            return Err(self.illegal("commit_ended"));
        };
        Ok(match end {
            CommitEnd::Committed => {
                let begin_next = next.is_some();
                *self = next.map_or(Self::Idle, Self::Open);
                Settled::Committed { begin_next }
            }
            CommitEnd::Abortable => {
                *self = Self::Open(committing.merged(next));
                Settled::MustAbort
            }
            // The held batch's records were read but never sent: a re-created producer rewinds
            // them with the failed batch ([`Self::recovered`]).
            CommitEnd::Fatal { in_doubt: true } => {
                *self = Self::InDoubt(committing.merged(next));
                Settled::Failed
            }
            CommitEnd::Fatal { in_doubt: false } => {
                *self = Self::Defunct(Some(committing.merged(next)));
                Settled::Failed
            }
        })
    }

    /// The commit in flight ended, but the partitions are being revoked: a committed batch's
    /// held successor is dropped (its records were never sent, its transaction never began)
    /// and returned to be rewound.
    pub(crate) fn commit_ended_at_revoke(
        &mut self,
        end: CommitEnd,
    ) -> Result<(Settled, Option<Span>), Illegal> {
        if end == CommitEnd::Committed {
            if let Self::Committing { next, .. } = self {
                let dropped = next.take();
                return self.commit_ended(end).map(|settled| (settled, dropped));
            }
        }
        self.commit_ended(end).map(|settled| (settled, None))
    }

    /// Aborts the open batch: returns what to abort and rewind.
    pub(crate) fn abort(&mut self) -> Result<Abort, Illegal> {
        match std::mem::replace(self, Self::Idle) {
            Self::Idle => Ok(Abort::Nothing),
            Self::Open(span) => Ok(Abort::Rewind(span)),
            Self::Defunct(Some(span)) => {
                *self = Self::Defunct(None);
                Ok(Abort::Rewind(span))
            }
            Self::Defunct(None) => {
                *self = Self::Defunct(None);
                Ok(Abort::Nothing)
            }
            doubt @ Self::InDoubt(_) => {
                *self = doubt;
                Ok(Abort::Refused)
            }
            committing @ Self::Committing { .. } => {
                *self = committing;
                Err(self.illegal("abort (settle the commit first)"))
            }
        }
    }

    /// A fatal error outside the commit: nothing commits from now on.
    pub(crate) fn fail(&mut self) {
        *self = match std::mem::replace(self, Self::Idle) {
            Self::Idle | Self::Defunct(None) => Self::Defunct(None),
            Self::Open(span) | Self::Defunct(Some(span)) => Self::Defunct(Some(span)),
            // The transaction committing may have committed; its held successor never began.
            Self::Committing { committing, next } => Self::InDoubt(committing.merged(next)),
            doubt @ Self::InDoubt(_) => doubt,
        };
    }

    /// A new producer's `init_transactions` has settled what the failed one left: an open
    /// transaction is aborted, one in doubt is completed or aborted by its coordinator, and
    /// every late request of the old epoch is fenced. Back to Idle; returns the span to rewind
    /// and whether to rewind it to the committed offsets (`true`: it was in doubt, so only the
    /// committed offsets say whether it committed) rather than to its first offsets.
    pub(crate) fn recovered(&mut self) -> Option<(Span, bool)> {
        match std::mem::replace(self, Self::Idle) {
            Self::InDoubt(span) => Some((span, true)),
            Self::Defunct(Some(span)) | Self::Open(span) => Some((span, false)),
            Self::Committing { committing, next } => Some((committing.merged(next), true)),
            Self::Idle | Self::Defunct(None) => None,
        }
    }

    /// A rebalance takes partitions away. `lost`: the group gave them to someone else already;
    /// `unwinding`: the thread is panicking (the consumer's close runs this callback).
    pub(crate) fn revoke(&self, lost: bool, unwinding: bool) -> Revoke {
        match self {
            Self::Idle | Self::InDoubt(_) | Self::Defunct(None) => Revoke::Nothing,
            Self::Defunct(Some(_)) => Revoke::Abort,
            Self::Committing { .. } => Revoke::Settle,
            Self::Open(_) if lost || unwinding => Revoke::Abort,
            Self::Open(_) => Revoke::Commit,
        }
    }

    /// Whether a batch is open or a commit is in flight.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self, Self::Open(_) | Self::Committing { .. })
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
