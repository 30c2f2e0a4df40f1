//! The producer's librdkafka callbacks: its log lines into `tracing`, the last transaction error
//! it logged, and failed deliveries.
//!
//! librdkafka reports why a transaction failed only in a log line (facility `TXNERR`); a send
//! refused afterwards says no more than "erroneous state". The line is kept here so that the
//! engine can name the cause (a missing Write ACL, say) instead. Delivery failures are counted
//! so that a batch with a failed delivery never commits. A failure that a record itself causes
//! (the broker rejects it for what it is: no key for a compacted topic, larger than the topic's
//! `max.message.bytes`, a timestamp out of range) is noted apart: the broker fails the whole
//! produce request with it, so the worker finds the record by re-running the aborted batch one
//! record per transaction (see [`super::worker`]).
//!
//! The offset of the last record delivered to each changelog partition is kept too: after a
//! commit it is where the stateful stage's local store has reached (see `crate::state`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// The producer's context: counts failed deliveries and keeps the last transaction error.
#[derive(Debug, Default)]
pub(crate) struct ProducerHooks {
    /// Why the first output rejected for what it is since the last [`Self::take_rejected`] was.
    rejected: Mutex<Option<String>>,
    failed: AtomicU64,
    last_delivery_error: Mutex<Option<String>>,
    /// The last `TXNERR` log line: why the current transaction failed.
    txn_error: Mutex<Option<String>>,
    /// Requests of the transaction protocol that timed out (librdkafka's `REQTMOUT` lines)
    /// since [`Self::take_coordinator_timeouts`]: librdkafka resends them, and a late copy can
    /// land on a later transaction of the same epoch (KAFKA-17754).
    coordinator_timeouts: AtomicU64,
    /// The largest offset delivered per changelog topic and partition.
    changelog_offsets: Mutex<HashMap<(String, i32), i64>>,
}

impl ProducerHooks {
    /// Failed deliveries since the producer was created.
    pub(crate) fn failed_deliveries(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The last failed delivery's error.
    pub(crate) fn last_delivery_error(&self) -> Option<String> {
        self.last_delivery_error.lock().ok().and_then(|e| e.clone())
    }

    /// The last transaction error librdkafka logged since [`Self::forget_txn_error`].
    pub(crate) fn txn_error(&self) -> Option<String> {
        self.txn_error.lock().ok().and_then(|e| e.clone())
    }

    /// Why an output was rejected for what it is, if one was since the last call.
    pub(crate) fn take_rejected(&self) -> Option<String> {
        self.rejected.lock().ok().and_then(|mut r| r.take())
    }

    /// Timed-out requests of the transaction protocol since the last call.
    pub(crate) fn take_coordinator_timeouts(&self) -> u64 {
        self.coordinator_timeouts.swap(0, Ordering::Relaxed)
    }

    /// The largest offset this producer delivered to a changelog partition.
    pub(crate) fn delivered_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let offsets = self.changelog_offsets.lock().ok()?;
        offsets.get(&(topic.to_string(), partition)).copied()
    }

    /// Called when a transaction begins: earlier errors are not its own.
    pub(crate) fn forget_txn_error(&self) {
        if let Ok(mut txn_error) = self.txn_error.lock() {
            *txn_error = None;
        }
    }
}

impl ClientContext for ProducerHooks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "TXNERR" {
            if let Ok(mut txn_error) = self.txn_error.lock() {
                *txn_error = Some(log_message.to_string());
            }
        }
        if fac == "REQTMOUT" && names_a_transaction_request(log_message) {
            self.coordinator_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        // Levels as rdkafka's default context maps them.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
        }
    }
}

impl ProducerContext for ProducerHooks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Ok(message) = result {
            if message
                .topic()
                .ends_with(crate::state::topics::CHANGELOG_SUFFIX)
            {
                if let Ok(mut offsets) = self.changelog_offsets.lock() {
                    let entry = offsets
                        .entry((message.topic().to_string(), message.partition()))
                        .or_insert(-1);
                    *entry = (*entry).max(message.offset());
                }
            }
        }
        if let Err((error, message)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_delivery_error.lock() {
                *last = Some(error.to_string());
            }
            if rejected_for_what_it_is(error.rdkafka_error_code()) {
                if let Ok(mut rejected) = self.rejected.lock() {
                    rejected.get_or_insert_with(|| {
                        format!(
                            "the output to topic {} was rejected: {error}",
                            message.topic()
                        )
                    });
                }
            }
        }
    }
}

/// Whether the broker rejected a record for what it is: it would be rejected on every retry.
fn rejected_for_what_it_is(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTimestamp
        )
    )
}

/// Whether a librdkafka `REQTMOUT` line names a request of the transaction protocol, e.g.
/// `Timed out EndTxnRequest in flight (after 5001ms, timeout #0)` (rdkafka_broker.c logs one
/// such line per timed-out request, the first five of a scan).
fn names_a_transaction_request(line: &str) -> bool {
    [
        "Timed out EndTxnRequest",
        "Timed out AddOffsetsToTxnRequest",
        "Timed out TxnOffsetCommitRequest",
        "Timed out AddPartitionsToTxnRequest",
        "Timed out InitProducerIdRequest",
    ]
    .iter()
    .any(|name| line.contains(name))
}

/// The authorization error a librdkafka transaction error line names, e.g. `... Topic
/// authorization failed (after 3 ms) (TOPIC_AUTHORIZATION_FAILED)`.
pub(crate) fn authorization_code_in(reason: &str) -> Option<RDKafkaErrorCode> {
    [
        (
            "(TOPIC_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ),
        (
            "(GROUP_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ),
        (
            "(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ),
        (
            "(CLUSTER_AUTHORIZATION_FAILED)",
            RDKafkaErrorCode::ClusterAuthorizationFailed,
        ),
    ]
    .into_iter()
    .find_map(|(name, code)| reason.contains(name).then_some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_error_line_names_its_authorization_failure() {
        let line = "[thrd:main]: Current transaction failed in state InTransaction: Failed to add \
                    partition(s) to transaction on broker TxnCoordinator/1: Broker: Topic \
                    authorization failed (after 3 ms) (TOPIC_AUTHORIZATION_FAILED)";
        assert_eq!(
            authorization_code_in(line),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        );
        assert_eq!(
            authorization_code_in("[thrd:main]: Current transaction failed: (REQUEST_TIMED_OUT)"),
            None
        );
    }

    #[test]
    fn a_timed_out_transaction_request_is_counted_once() {
        let hooks = ProducerHooks::default();
        hooks.log(
            RDKafkaLogLevel::Notice,
            "REQTMOUT",
            "[thrd:TxnCoordinator]: TxnCoordinator/1: Timed out EndTxnRequest in flight \
             (after 5001ms, timeout #0)",
        );
        hooks.log(
            RDKafkaLogLevel::Notice,
            "REQTMOUT",
            "[thrd:127.0.0.1:9092/1]: Timed out ProduceRequest in flight (after 5001ms)",
        );
        hooks.log(
            RDKafkaLogLevel::Warning,
            "REQTMOUT",
            "Timed out 1 in-flight, 0 retry-queued, 0 out-queue, 0 partially-sent requests",
        );
        assert_eq!(hooks.take_coordinator_timeouts(), 1);
        assert_eq!(hooks.take_coordinator_timeouts(), 0);
    }

    #[test]
    fn a_txnerr_line_is_kept_until_the_next_transaction_begins() {
        let hooks = ProducerHooks::default();
        hooks.log(RDKafkaLogLevel::Debug, "BROKER", "not a transaction error");
        assert_eq!(hooks.txn_error(), None);
        hooks.log(
            RDKafkaLogLevel::Error,
            "TXNERR",
            "failed (TOPIC_AUTHORIZATION_FAILED)",
        );
        assert_eq!(
            hooks.txn_error().as_deref(),
            Some("failed (TOPIC_AUTHORIZATION_FAILED)")
        );
        hooks.forget_txn_error();
        assert_eq!(hooks.txn_error(), None);
    }
}
