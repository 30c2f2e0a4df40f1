//! Deliberately broken behaviours, for negative controls only.
//!
//! A verifier that passes everything proves nothing, so the reliability harness also runs stages
//! that are wrong on purpose and checks that it catches them. These exist only in builds with the
//! `fault-injection` feature, selected by the environment variable `KSTAGE_BROKEN_MODE`:
//!
//! * `offsets_outside_txn`: commit the input offsets with a plain consumer commit before
//!   committing the transaction, instead of inside it (a crash in between loses records).
//! * `no_rewind`: after an abort, go on from the consumer's position instead of rewinding to the
//!   committed offsets (the aborted batch's records are lost).
//! * `read_uncommitted`: read the input `read_uncommitted` (records of aborted upstream
//!   transactions leak downstream).
//! * `no_recreate`: never re-create the transactional producer (see [`super::txn`]): after a
//!   commit or abort that needed a retry or saw a coordinator request time out, the next
//!   transaction runs on the same epoch, and a late EndTxn can land on it (KAFKA-17754); a
//!   hung or timed-out commit stops the worker with its batch in doubt, as before re-creation.
//! * `state_before_commit`: write each record's state changes to the local store as soon as the
//!   record is processed, before its transaction commits (an abort or a crash then leaves
//!   counts in the local store that the changelog never committed: over-counting).
//!
//! In builds without the feature every check is `false` and compiles away.

/// A deliberately broken behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    OffsetsOutsideTxn,
    NoRewind,
    ReadUncommitted,
    NoRecreate,
    StateBeforeCommit,
}

impl Broken {
    fn name(self) -> &'static str {
        match self {
            Self::OffsetsOutsideTxn => "offsets_outside_txn",
            Self::NoRewind => "no_rewind",
            Self::ReadUncommitted => "read_uncommitted",
            Self::NoRecreate => "no_recreate",
            Self::StateBeforeCommit => "state_before_commit",
        }
    }

    /// Whether this broken behaviour is switched on.
    pub(crate) fn active(self) -> bool {
        mode_active(self.name())
    }
}

/// Whether the broken behaviour `name` is listed in `KSTAGE_BROKEN_MODE` (comma-separated; the
/// engine's and the sink's modes share the variable). Always `false` without `fault-injection`.
#[cfg(feature = "fault-injection")]
pub(crate) fn mode_active(name: &str) -> bool {
    std::env::var("KSTAGE_BROKEN_MODE").is_ok_and(|mode| mode.split(',').any(|m| m == name))
}

/// Whether the broken behaviour `name` is switched on: never, without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
pub(crate) fn mode_active(name: &str) -> bool {
    let _ = name;
    false
}

/// A crash point: with the `fault-injection` feature and `FAILPOINTS=<name>=return`, the process
/// aborts here as if killed.
pub(crate) fn crash_point(name: &str) {
    let _ = name;
    fail::fail_point!(name, |_| {
        eprintln!("fail point {name}: aborting the process");
        std::process::abort()
    });
}
