//! What a commit is in each delivery mode.
//!
//! ```text
//!   exactly_once:  positions + group metadata ──► the commit thread (send_offsets_to_transaction,
//!                  await deliveries, commit_transaction)
//!   at_least_once: await deliveries ──► a delivery failed? abort (rewind) ──► commit offsets
//!   at_most_once:  commit offsets (the runner produces after this returns)
//! ```
//!
//! The offsets are the consumer's positions (the next offset to read) of exactly the partitions
//! the batch read, read on the worker's thread before any record of the next batch is consumed:
//! never "last offset + 1" arithmetic, since positions skip control records.

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::TopicPartitionList;

use super::producer::TransactionalProducer;
use super::state::{CommitEnd, Span};
use crate::config::DeliveryMode;
use crate::engine::broken::Broken;
use crate::engine::offsets;
use crate::engine::retry::retrying;
use crate::error::EngineError;

/// exactly_once: the offsets to send in the transaction, or `None` when the negative control
/// `offsets_outside_txn` has just committed them outside it.
pub(super) fn transaction_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    span: &Span,
    producer: &TransactionalProducer,
) -> Result<Option<(TopicPartitionList, ConsumerGroupMetadata)>, EngineError> {
    let positions = offsets::positions(consumer, span)?;
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
        return Ok(None);
    }
    Ok(Some((positions, metadata)))
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
    let positions = offsets::positions(consumer, span)?;
    retrying("committing offsets", producer.deadline(), || {
        consumer.commit(&positions, CommitMode::Sync)
    })
    .map_err(|e| producer.fatal("committing offsets", e))?;
    Ok(CommitEnd::Committed)
}
