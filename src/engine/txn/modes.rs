//! What a commit is in each delivery mode.
//!
//! ```text
//!   exactly_once:  positions + group metadata ──► the commit thread (send_offsets_to_transaction,
//!                  await deliveries, commit_transaction)
//!   at_least_once: await deliveries ──► a delivery failed? abort (rewind) ──► commit offsets
//!   at_most_once:  commit offsets (the worker sends the held outputs after this returns)
//! ```
//!
//! The offsets are the consumer's positions (the next offset to read) of exactly the partitions
//! the batch read, read on the worker's thread before any record of the next batch is consumed:
//! never "last offset + 1" arithmetic, since positions skip control records. A partition the
//! batch read that has no position any more makes the batch abort, never commit without it.
//!
//! A consumer offset commit (at_least_once, at_most_once) races every rebalance: the group
//! answers REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID while it moves the
//! partitions. Those abort the batch (rewind to where it began; in these modes a repeat is
//! legitimate) instead of stopping the stage.

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use super::producer::TransactionalProducer;
use super::state::{CommitEnd, Span};
use crate::config::DeliveryMode;
use crate::engine::broken::Broken;
use crate::engine::offsets::{self, Positions};
use crate::engine::retry::{retrying, Retried};
use crate::error::EngineError;

/// What a commit of exactly_once sends with the transaction.
pub(super) enum Prepared {
    /// The positions and group metadata; `None` when the negative control
    /// `offsets_outside_txn` has just committed them outside the transaction.
    Offsets(Option<(TopicPartitionList, ConsumerGroupMetadata)>),
    /// The batch must abort (a partition it read has no position).
    Abort,
}

/// exactly_once: the offsets to send in the transaction.
pub(super) fn transaction_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    span: &Span,
    producer: &TransactionalProducer,
) -> Result<Prepared, EngineError> {
    let Some(positions) = complete(offsets::positions(consumer, span)?) else {
        return Ok(Prepared::Abort);
    };
    let metadata = consumer.group_metadata().ok_or_else(|| {
        EngineError::Startup("the consumer has no group metadata (not in a group)".into())
    })?;
    if Broken::OffsetsOutsideTxn.active() {
        retrying(
            "committing offsets outside the transaction",
            producer.deadline(),
            || consumer.commit(&positions, CommitMode::Sync),
        )
        .map_err(|e| producer.fatal("committing offsets outside the transaction", e))?;
        return Ok(Prepared::Offsets(None));
    }
    Ok(Prepared::Offsets(Some((positions, metadata))))
}

/// at_least_once and at_most_once: commits the consumer offsets (at_least_once: once every
/// delivery succeeded; a failed one asks for an abort, so the batch is produced again).
pub(super) fn commit_consumer_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    span: &Span,
    producer: &TransactionalProducer,
    failed_at_open: u64,
) -> Result<CommitEnd, EngineError> {
    if producer.mode() == DeliveryMode::AtLeastOnce {
        producer.drain()?;
        if producer.failed_deliveries() > failed_at_open {
            tracing::warn!(
                error = producer
                    .last_delivery_error()
                    .as_deref()
                    .unwrap_or("unknown"),
                "A delivery failed; rewinding so the batch is produced again."
            );
            return Ok(CommitEnd::Abortable);
        }
    }
    let Some(positions) = complete(offsets::positions(consumer, span)?) else {
        return Ok(CommitEnd::Abortable);
    };
    match retrying("committing offsets", producer.deadline(), || {
        consumer.commit(&positions, CommitMode::Sync)
    }) {
        Ok(()) => Ok(CommitEnd::Committed),
        Err(Retried::Failed(error)) if moved_by_a_rebalance(&error) => {
            tracing::warn!(%error, "The offset commit raced a rebalance; rewinding the batch.");
            Ok(CommitEnd::Abortable)
        }
        Err(error) => Err(producer.fatal("committing offsets", error)),
    }
}

/// The positions, or `None` (logged) when a partition the batch read has none.
fn complete(positions: Positions) -> Option<TopicPartitionList> {
    match positions {
        Positions::Complete(list) => Some(list),
        Positions::Missing { topic, partition } => {
            tracing::warn!(
                topic,
                partition,
                "A partition the batch read has no consumer position (it is no longer fetched); aborting the batch."
            );
            None
        }
    }
}

/// A consumer commit refused because the group is moving (or has moved) the partitions.
fn moved_by_a_rebalance(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}
