//! The poison policy of a sink, for one record the mapping cannot turn into a row (class
//! `decode`) or one row the database rejected (class `rejected`, with the database's text).
//!
//! `fail` returns [`SinkError::Poison`] (the caller rolls back and stops, committing nothing of
//! the batch); `skip` counts and logs it, and its offset commits with the batch; `dead_letter`
//! queues the original record with error headers on the dead-letter producer, which the batch
//! flushes before its database COMMIT (so a committed batch never lost a letter). Counted in the
//! `poison_records` metric and the worker's stats, logged once per record (poison is rare).

use rdkafka::message::{Message, OwnedMessage};

use super::dead_letter::DeadLetters;
use super::error::SinkError;
use crate::config::PoisonPolicy;
use crate::engine::WorkerStats;
use crate::observability::{KindLabel, Telemetry};

/// The poison policy for one record or row.
pub(super) fn poison(
    policy: PoisonPolicy,
    dead_letters: Option<&mut DeadLetters>,
    stats: &mut WorkerStats,
    telemetry: &Telemetry,
    message: &OwnedMessage,
    class: &str,
    error: &str,
) -> Result<(), SinkError> {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    match (policy, dead_letters) {
        (PoisonPolicy::Fail, _) => {
            return Err(SinkError::Poison {
                topic: topic.into(),
                partition,
                offset,
                error: error.into(),
            })
        }
        (PoisonPolicy::DeadLetter, Some(dead_letters)) => {
            dead_letters.send(message, class, error)?;
            stats.dead_lettered += 1;
            telemetry
                .metrics
                .poison_records
                .get_or_create(&KindLabel {
                    kind: "dead_lettered",
                })
                .inc();
            tracing::warn!(
                topic,
                partition,
                offset,
                error,
                "Dead-lettered a record the sink cannot write."
            );
        }
        _ => {
            stats.skipped += 1;
            telemetry
                .metrics
                .poison_records
                .get_or_create(&KindLabel { kind: "skipped" })
                .inc();
            tracing::warn!(
                topic,
                partition,
                offset,
                error,
                "Skipped a record the sink cannot write."
            );
        }
    }
    Ok(())
}
