//! The poison policy of a sink, for one record the mapping cannot turn into a row (class
//! `decode`) or one row the database rejected (class `rejected`, with the database's text).
//!
//! `fail` returns [`SinkError::Poison`] (the caller rolls back and stops, committing nothing of
//! the batch); `skip` counts and logs it, and its offset commits with the batch; `dead_letter`
//! queues the original record with error headers on the dead-letter producer, which the batch
//! flushes before its database COMMIT (so a committed batch never lost a letter). Counted in the
//! `poison_records` metric and the worker's stats, logged once per record (poison is rare).
//! Only `dead_letter` needs the record's bytes; the others name it by its coordinates, so a
//! batch keeps the bytes of its records under `dead_letter` only ([`super::batch`]).

use rdkafka::message::Message;

use super::dead_letter::DeadLetters;
use super::error::SinkError;
use crate::config::PoisonPolicy;
use crate::engine::WorkerStats;
use crate::observability::{KindLabel, Telemetry};

/// The record a poison record or row came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoisonSource<'a, M> {
    /// The input topic.
    pub(super) topic: &'a str,
    /// The input partition.
    pub(super) partition: i32,
    /// The record's offset.
    pub(super) offset: i64,
    /// The record itself: needed (and kept) under `dead_letter` only.
    pub(super) message: Option<&'a M>,
}

/// The poison policy for one record or row.
pub(super) fn poison<M: Message>(
    policy: PoisonPolicy,
    dead_letters: Option<&mut DeadLetters>,
    stats: &mut WorkerStats,
    telemetry: &Telemetry,
    source: PoisonSource<'_, M>,
    class: &str,
    error: &str,
) -> Result<(), SinkError> {
    let PoisonSource {
        topic,
        partition,
        offset,
        message,
    } = source;
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
            let message = message.ok_or_else(|| SinkError::Database {
                operation: "dead-lettering a record",
                message: format!("the record {topic}[{partition}]@{offset} was not kept"),
            })?;
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
