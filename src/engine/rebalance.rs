//! The consumer context: what a worker does when the group moves its partitions.
//!
//! librdkafka runs these callbacks inside `poll`, on the worker's own thread, before the
//! assignment changes. The state machine per worker:
//!
//! ```text
//!            assign (incremental)                      revoke (not lost)
//!   ┌──────┐ ───────────────────► ┌──────────┐ ─────────────────────────────► commit the open
//!   │ idle │                      │ assigned │                                transaction, then
//!   └──────┘ ◄─────────────────── └──────────┘ ─────────────────────────────► give them up
//!              revoke of the last partition   revoke (lost: session timed out,
//!                                             or fenced from the group)      abort the open
//!                                                                             transaction
//! ```
//!
//! * **Revoke**: the open transaction holds records of the partitions being taken away; it is
//!   committed *now*, while this member still owns them, so the next owner starts exactly at our
//!   committed positions. With the cooperative-sticky assignor only the moving partitions are
//!   revoked, and the others keep flowing.
//! * **Lost**: the group has already handed the partitions to someone else; committing would be
//!   rejected (our group metadata is stale), so the transaction is aborted.
//!
//! A callback cannot return an error, so it reaches the worker's transaction through one narrow
//! handle ([`TxnHandle`]) that keeps what it did for the worker loop, which looks after every
//! poll: a fatal error stops the worker; an abort leaves a span to rewind from (the record
//! polled after the callback is dropped and read again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use super::txn::TxnHandle;
use crate::observability::{KindLabel, PartitionLabel, Telemetry, WorkerHealth};

/// The consumer context of a worker: the rebalance callbacks, statistics and client errors.
pub(crate) struct StageContext {
    /// The worker's transaction, for commit on revoke and abort on lost.
    txn: Arc<TxnHandle>,
    /// An authentication failure reported by librdkafka (it retries them forever otherwise).
    authentication: Mutex<Option<String>>,
    /// Rebalances seen (assignments and revocations).
    rebalances: AtomicU64,
    telemetry: Telemetry,
    /// This worker's readiness.
    health: Arc<WorkerHealth>,
    /// Partitions revoked (or lost) since the worker last took them: a stateful worker closes
    /// their stores.
    revoked: Mutex<Vec<(String, i32)>>,
}

impl StageContext {
    pub(crate) fn new(
        txn: Arc<TxnHandle>,
        telemetry: Telemetry,
        health: Arc<WorkerHealth>,
    ) -> Self {
        Self {
            health,
            txn,
            authentication: Mutex::new(None),
            rebalances: AtomicU64::new(0),
            telemetry,
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The partitions revoked since the last call.
    pub(crate) fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Rebalances seen so far.
    pub(crate) fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// An authentication failure librdkafka reported since the last call.
    pub(crate) fn take_authentication_failure(&self) -> Option<String> {
        self.authentication
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn count_rebalance(&self, kind: &'static str) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        self.telemetry
            .metrics
            .rebalances
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let partitions = revoked.count();
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(
                revoked
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition())),
            );
        let lost = consumer.assignment_lost();
        self.count_rebalance(if lost { "lost" } else { "revoke" });
        if lost {
            self.health.set_in_group(false);
        }
        self.txn.revoke(consumer, partitions, lost);
    }
}

impl ClientContext for StageContext {
    fn stats(&self, statistics: Statistics) {
        let lag = &self.telemetry.metrics.consumer_lag;
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                // librdkafka's own `consumer_lag` is based on offsets the consumer committed
                // itself, which a transactional stage never does; use the position (the offset
                // after the last record handed to the stage) against the last stable offset,
                // the end a read_committed consumer can reach. -1 means unknown; partition -1
                // is librdkafka's internal one.
                if *id >= 0 && partition.app_offset >= 0 && partition.ls_offset >= 0 {
                    let label = PartitionLabel {
                        topic: name.clone(),
                        partition: *id,
                    };
                    lag.get_or_create(&label)
                        .set((partition.ls_offset - partition.app_offset).max(0));
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if crate::error::is_authorization(&error) {
            *self
                .authentication
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(format!("{error}: {reason}"));
        }
        tracing::error!(%error, reason, "librdkafka reported an error.");
    }
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.on_revoke(consumer, tpl),
            Rebalance::Assign(tpl) => {
                self.count_rebalance("assign");
                self.health.set_in_group(true);
                tracing::info!(partitions = tpl.count(), "Partitions assigned.");
            }
            Rebalance::Error(error) => {
                tracing::error!(%error, "The consumer group rebalance failed.");
            }
        }
    }
}
