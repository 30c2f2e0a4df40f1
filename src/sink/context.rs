//! The sink consumer's context: what happens when the group moves partitions.
//!
//! ```text
//!  assign ──► transactional: claim in the database (owner_epoch + 1, read next_offset) and put
//!  │          next_offset into the assignment itself, so fetching starts exactly there (no seek
//!  │          race); idempotent: Kafka's committed offset, as usual
//!  │          └─► the partition is owned with its epoch; records below next_offset are dropped
//!  revoke / lost ──► first waits for the write in flight (inflight.rs) to be settled; then
//!                    the partition is no longer owned: the loop drops its rows from the open
//!                    batch (they were not committed; the next owner reads them again from the
//!                    offset in the database, or from Kafka's committed offset)
//! ```
//!
//! The callbacks run inside `poll` on the worker's thread. A claim that fails (the database is
//! gone for `retry_timeout`) cannot be returned from a callback: it is kept, the partition is
//! assigned but not owned (its records are dropped), and the loop stops after the poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::broken::Broken;
use super::db::Db;
use super::error::SinkError;
use super::inflight::WriteGate;
use crate::observability::{KindLabel, Telemetry, WorkerHealth};

/// A partition this instance owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owned {
    /// The owner epoch claimed in the database (0 where no epoch is kept).
    epoch: i64,
    /// Records below this offset are already in the database.
    from: i64,
    /// Whether `from` is an offset the database committed (not the start of an empty partition
    /// row), so it may be copied to Kafka.
    stored: bool,
}

#[derive(Debug, Default)]
struct Ownership {
    owned: HashMap<(String, i32), Owned>,
    /// Partitions given up since the loop last looked.
    given_up: Vec<(String, i32)>,
    /// Kafka's committed offsets may be behind the database's (a claim read stored offsets, or
    /// a commit to Kafka failed): the loop copies them until a commit succeeds.
    kafka_behind: bool,
    error: Option<SinkError>,
}

/// The consumer context of a sink worker.
pub(super) struct SinkContext {
    db: Arc<Mutex<Db>>,
    /// Whether a batch's write is in flight: a revoke waits for its outcome.
    gate: Arc<WriteGate>,
    ownership: Mutex<Ownership>,
    /// Claim partitions in the offsets table (transactional mode, not the negative control).
    claims: Option<(String, String)>,
    telemetry: Telemetry,
    /// This worker's readiness (in the group or not).
    health: Arc<WorkerHealth>,
}

impl SinkContext {
    /// `claims`: the offsets table and group id, in transactional mode.
    pub(super) fn new(
        db: Arc<Mutex<Db>>,
        claims: Option<(String, String)>,
        telemetry: Telemetry,
        health: Arc<WorkerHealth>,
    ) -> Self {
        let claims = claims.filter(|_| !Broken::KafkaOffsets.active());
        Self {
            db,
            gate: Arc::default(),
            ownership: Mutex::default(),
            claims,
            telemetry,
            health,
        }
    }

    /// The database session (the loop and the callbacks share it, on one thread).
    pub(super) fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared session and write gate, for a write thread.
    pub(super) fn shared(&self) -> (&Arc<Mutex<Db>>, &Arc<WriteGate>) {
        (&self.db, &self.gate)
    }

    fn ownership(&self) -> MutexGuard<'_, Ownership> {
        self.ownership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch to commit a record with, or `None` when the record must be dropped (its
    /// partition is not owned, or the record is already in the database).
    pub(super) fn accept(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let ownership = self.ownership();
        let owned = ownership.owned.get(&(topic.to_string(), partition))?;
        (offset >= owned.from).then_some(owned.epoch)
    }

    /// What the callbacks left for the loop: partitions given up, and a fatal error.
    pub(super) fn take_events(&self) -> (Vec<(String, i32)>, Option<SinkError>) {
        let mut ownership = self.ownership();
        (
            std::mem::take(&mut ownership.given_up),
            ownership.error.take(),
        )
    }

    /// A batch committed in the database: its partitions, where still owned under the same
    /// epoch, now start at its ends. Returns those ends (the ones to commit to Kafka: a
    /// partition given up while its write was in flight belongs to its next owner).
    pub(super) fn committed(
        &self,
        ends: &[super::write::PartitionEnd],
    ) -> Vec<super::write::PartitionEnd> {
        let mut ownership = self.ownership();
        let mut kept = Vec::with_capacity(ends.len());
        for end in ends {
            if let Some(owned) = ownership.owned.get_mut(&(end.topic.clone(), end.partition)) {
                if owned.epoch == end.epoch {
                    owned.from = end.next_offset;
                    owned.stored = true;
                    kept.push(end.clone());
                }
            }
        }
        kept
    }

    /// The partitions of `ends` no longer owned under the epoch they were read with.
    pub(super) fn not_owned(&self, ends: &[super::write::PartitionEnd]) -> Vec<(String, i32)> {
        let ownership = self.ownership();
        ends.iter()
            .filter(|end| {
                ownership
                    .owned
                    .get(&(end.topic.clone(), end.partition))
                    .is_none_or(|owned| owned.epoch != end.epoch)
            })
            .map(|end| (end.topic.clone(), end.partition))
            .collect()
    }

    /// A commit to Kafka failed: copy the database's offsets again later.
    pub(super) fn kafka_behind(&self) {
        self.ownership().kafka_behind = true;
    }

    /// When Kafka's offsets may be behind: the owned partitions' stored offsets, to copy to
    /// Kafka (clearing the mark; a failed copy sets it again). Empty otherwise.
    pub(super) fn offsets_to_copy(&self) -> Vec<(String, i32, i64)> {
        let mut ownership = self.ownership();
        if !std::mem::take(&mut ownership.kafka_behind) {
            return Vec::new();
        }
        ownership
            .owned
            .iter()
            .filter(|(_, owned)| owned.stored)
            .map(|((topic, partition), owned)| (topic.clone(), *partition, owned.from))
            .collect()
    }

    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        // (A claim also takes the session lock, which a write in flight holds.)
        self.gate.wait();
        self.count("assign");
        self.health.set_in_group(true);
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let claimed = match &self.claims {
            None => Ok(vec![None; partitions.len()]),
            Some((table, group)) => self
                .db()
                .claim(table, group, &partitions)
                .map(|claims| claims.into_iter().map(Some).collect()),
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(%error, "Cannot claim the assigned partitions in the database.");
                self.ownership().error.get_or_insert(error);
                return;
            }
        };
        let mut ownership = self.ownership();
        for ((topic, partition), claim) in partitions.into_iter().zip(claimed) {
            let (epoch, from, stored) = match claim {
                Some(claim) => {
                    let offset = claim.next_offset.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(error) = tpl.set_partition_offset(&topic, partition, offset) {
                        ownership.error.get_or_insert(SinkError::Database {
                            operation: "setting an assigned partition's offset",
                            message: error.to_string(),
                        });
                    }
                    ownership.kafka_behind |= claim.next_offset.is_some();
                    (
                        claim.epoch,
                        claim.next_offset.unwrap_or(0),
                        claim.next_offset.is_some(),
                    )
                }
                None => (0, 0, false),
            };
            tracing::info!(topic, partition, epoch, from, "Partition assigned.");
            ownership.owned.insert(
                (topic, partition),
                Owned {
                    epoch,
                    from,
                    stored,
                },
            );
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        // A write in flight may hold revoked partitions: its outcome first, so that their next
        // owner claims (and reads) only after it.
        self.gate.wait();
        let lost = consumer.assignment_lost();
        self.count(if lost { "lost" } else { "revoke" });
        let mut ownership = self.ownership();
        for element in tpl.elements() {
            let key = (element.topic().to_string(), element.partition());
            ownership.owned.remove(&key);
            ownership.given_up.push(key);
        }
        if ownership.owned.is_empty() {
            self.health.set_in_group(!lost);
        }
        tracing::info!(partitions = tpl.count(), lost, "Partitions revoked.");
    }

    fn count(&self, kind: &'static str) {
        self.telemetry
            .metrics
            .rebalances
            .get_or_create(&KindLabel { kind })
            .inc();
    }
}

impl ClientContext for SinkContext {
    /// Consumer lag against the last stable offset (what a read_committed reader can reach).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = &self.telemetry.metrics.consumer_lag;
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.app_offset >= 0 && partition.ls_offset >= 0 {
                    let label = crate::observability::PartitionLabel {
                        topic: name.clone(),
                        partition: *id,
                    };
                    lag.get_or_create(&label)
                        .set((partition.ls_offset - partition.app_offset).max(0));
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::error!(%error, reason, "librdkafka reported an error.");
    }
}

impl std::fmt::Debug for SinkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkContext")
            .field("ownership", &*self.ownership())
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl ConsumerContext for SinkContext {
    /// A commit to Kafka failed (offsets are monitoring only in transactional mode; in
    /// idempotent mode the next batch's commit covers them): mark them to be copied again.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(error) = result {
            tracing::debug!(%error, "A commit to Kafka failed; the stored offsets are copied again.");
            self.kafka_behind();
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "The consumer group rebalance failed.");
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "Applying the new assignment failed.");
            self.ownership().error.get_or_insert(SinkError::Engine(
                crate::error::EngineError::Kafka {
                    operation: "applying a rebalance",
                    source: error,
                },
            ));
        }
    }
}
