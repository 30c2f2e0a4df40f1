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
//! A callback cannot return an error, so its results are left here for the worker loop, which
//! checks them after every poll: a fatal error stops the worker; an abort leaves a batch to
//! rewind from (any record polled after the callback is dropped and read again).

use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::offsets::Batch;
use super::transaction::{CommitOutcome, Transactions};
use crate::error::EngineError;
use crate::observability::{KindLabel, PartitionLabel, Telemetry};

/// What the rebalance callbacks leave for the worker loop.
#[derive(Default)]
pub(crate) struct Pending {
    /// An authentication failure reported by librdkafka (it retries them forever otherwise).
    pub(crate) authentication: Option<String>,
    /// A fatal error met in a callback.
    pub(crate) fatal: Option<EngineError>,
    /// A batch aborted in a callback: the loop must rewind before processing again.
    pub(crate) rewind: Option<Batch>,
    /// Rebalances seen (assignments and revocations).
    pub(crate) rebalances: u64,
}

/// The consumer context of a worker: owns the producer side so the rebalance callbacks can
/// commit or abort the open transaction.
pub(crate) struct StageContext {
    transactions: Mutex<Transactions>,
    pending: Mutex<Pending>,
    telemetry: Telemetry,
}

impl StageContext {
    pub(crate) fn new(transactions: Transactions, telemetry: Telemetry) -> Self {
        Self {
            transactions: Mutex::new(transactions),
            pending: Mutex::new(Pending::default()),
            telemetry,
        }
    }

    fn count_rebalance(&self, kind: &'static str) {
        self.telemetry
            .metrics
            .rebalances
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The producer side. Only the worker's thread locks it (the callbacks run there too), so it
    /// is never contended; a poisoned lock is recovered because the state it guards is only
    /// mutated by whole commits and aborts.
    pub(crate) fn transactions(&self) -> MutexGuard<'_, Transactions> {
        self.transactions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the callbacks left for the loop.
    pub(crate) fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, partitions: usize) {
        let lost = consumer.assignment_lost();
        self.count_rebalance(if lost { "lost" } else { "revoke" });
        if lost {
            self.telemetry.health.set_in_group(false);
        }
        let mut transactions = self.transactions();
        if !transactions.is_open() {
            tracing::info!(
                partitions,
                lost,
                "Partitions revoked; no transaction was open."
            );
            return;
        }
        let result = if lost {
            tracing::warn!(
                partitions,
                "Partitions lost; aborting the open transaction."
            );
            transactions.abort()
        } else {
            tracing::info!(
                partitions,
                "Partitions revoked; committing the open transaction first."
            );
            transactions.commit(consumer)
        };
        drop(transactions);
        let mut pending = self.pending();
        match result {
            Ok(CommitOutcome::Committed) => {}
            Ok(CommitOutcome::Aborted(batch)) => pending.rewind = Some(batch),
            Err(error) => pending.fatal = Some(error),
        }
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
            self.pending().authentication = Some(format!("{error}: {reason}"));
        }
        tracing::error!(%error, reason, "librdkafka reported an error.");
    }
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.on_revoke(consumer, tpl.count()),
            Rebalance::Assign(tpl) => {
                self.count_rebalance("assign");
                self.telemetry.health.set_in_group(true);
                tracing::info!(partitions = tpl.count(), "Partitions assigned.");
            }
            Rebalance::Error(error) => {
                tracing::error!(%error, "The consumer group rebalance failed.");
            }
        }
        self.pending().rebalances += 1;
    }
}
