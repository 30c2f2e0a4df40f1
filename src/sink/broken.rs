//! Deliberately broken sink behaviours, for negative controls only: a test that passes against
//! these proves nothing, so the sink tests run them and check that they lose or duplicate rows.
//! They exist only in builds with the `fault-injection` feature, selected by the environment
//! variable `KSTAGE_BROKEN_MODE` (comma-separated, shared with the engine's own):
//!
//! * `sink_kafka_offsets` (transactional): keep no offsets in the database; start each assigned
//!   partition from Kafka's committed offset, and commit Kafka offsets *before* the database
//!   commit (a crash in between loses the batch's rows).
//! * `sink_plain_insert` (idempotent): a plain INSERT instead of the upsert (redelivered records
//!   become duplicate rows).
//! * `sink_no_fencing` (transactional): a batch's offset update ignores the owner epoch, and
//!   settling after a lost connection ignores an epoch that changed (a zombie writes its batch
//!   again over its successor's rows).
//!
//! In builds without the feature every check is `false`.

/// A deliberately broken sink behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    KafkaOffsets,
    PlainInsert,
    NoFencing,
}

impl Broken {
    fn name(self) -> &'static str {
        match self {
            Self::KafkaOffsets => "sink_kafka_offsets",
            Self::PlainInsert => "sink_plain_insert",
            Self::NoFencing => "sink_no_fencing",
        }
    }

    /// Whether this broken behaviour is switched on.
    pub(crate) fn active(self) -> bool {
        crate::engine::broken::mode_active(self.name())
    }
}
