//! Stage metrics in the Prometheus text format.
//!
//! The engine updates them once per committed or aborted batch, never per record: a batch counts
//! its records and bytes per topic as it goes (plain integers on the worker's thread) and hands the
//! totals over at commit. Consumer lag comes from librdkafka's statistics (every
//! `statistics.interval.ms`, 5 s by default when metrics are on). The two "age" gauges are computed
//! when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A topic label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The topic.
    pub topic: String,
}

/// A topic and partition label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A state store label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// The store's name.
    pub store: String,
}

/// A kind label (outcome, rebalance kind, poison action).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: &'static str,
}

/// Every metric of a stage.
pub struct StageMetrics {
    registry: Registry,
    /// Input records in committed batches, per input topic.
    pub records_in: Family<TopicLabel, Counter>,
    /// Input bytes (key + value) in committed batches, per input topic.
    pub bytes_in: Family<TopicLabel, Counter>,
    /// Output records committed, per output topic.
    pub records_out: Family<TopicLabel, Counter>,
    /// Output bytes committed, per output topic.
    pub bytes_out: Family<TopicLabel, Counter>,
    /// Transactions (batches) by outcome: committed, aborted.
    pub transactions: Family<KindLabel, Counter>,
    /// Time to commit a batch (send offsets, await deliveries, commit).
    pub commit_seconds: Histogram,
    /// Input records per committed transaction.
    pub records_per_transaction: Histogram,
    /// Consumer lag per input partition, from librdkafka statistics.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Rebalance callbacks by kind: assign, revoke, lost.
    pub rebalances: Family<KindLabel, Counter>,
    /// Poison records by action: skipped, dead_lettered.
    pub poison_records: Family<KindLabel, Counter>,
    /// Times this instance was fenced by another with its transactional id.
    pub fenced: Counter,
    /// Times a worker re-created its transactional producer (same transactional id, new
    /// epoch) after a commit or abort that needed a retry, timed out or hung.
    pub producer_recreations: Counter,
    /// Stateful topologies: entries per store over the partitions this instance holds.
    pub state_entries: Family<StoreLabel, Gauge>,
    /// Stateful topologies: event-time timers not fired yet.
    pub state_timers_pending: Gauge,
    /// Stateful topologies: changelog records applied by restores, per store.
    pub state_restore_records: Family<StoreLabel, Counter>,
    /// Stateful topologies: changelog records a running restore still has to read, per store
    /// (the changelog lag of the local store).
    pub state_restore_remaining: Family<StoreLabel, Gauge>,
    /// Stateful topologies: partitions being restored now.
    pub state_restoring_partitions: Gauge,
    /// Stateful topologies: time to restore one partition (all its stores).
    pub state_restore_seconds: Histogram,
    seconds_since_last_commit: Gauge<f64, AtomicU64>,
    open_transaction_age: Gauge<f64, AtomicU64>,
    /// Unix ms of the last successful commit (0: none yet).
    last_commit_ms: AtomicU64,
    /// Unix ms when the open transaction began (0: none open).
    open_since_ms: AtomicU64,
}

impl std::fmt::Debug for StageMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageMetrics").finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for StageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StageMetrics {
    /// Creates and registers every metric under the `kstage_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kstage");
        let metrics = Self {
            records_in: Family::default(),
            bytes_in: Family::default(),
            records_out: Family::default(),
            bytes_out: Family::default(),
            transactions: Family::default(),
            // 0.5 ms .. ~16 s
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 .. ~32k records
            records_per_transaction: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            consumer_lag: Family::default(),
            rebalances: Family::default(),
            poison_records: Family::default(),
            fenced: Counter::default(),
            producer_recreations: Counter::default(),
            state_entries: Family::default(),
            state_timers_pending: Gauge::default(),
            state_restore_records: Family::default(),
            state_restore_remaining: Family::default(),
            state_restoring_partitions: Gauge::default(),
            // 1 ms .. ~9 h
            state_restore_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 25)),
            seconds_since_last_commit: Gauge::default(),
            open_transaction_age: Gauge::default(),
            last_commit_ms: AtomicU64::new(0),
            open_since_ms: AtomicU64::new(0),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "records_in",
            "Input records in committed batches",
            m.records_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Input key and value bytes in committed batches",
            m.bytes_in.clone(),
        );
        registry.register(
            "records_out",
            "Output records committed",
            m.records_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Output key and value bytes committed",
            m.bytes_out.clone(),
        );
        registry.register(
            "transactions",
            "Transactions (batches) by outcome",
            m.transactions.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time to commit a batch",
            m.commit_seconds.clone(),
        );
        registry.register(
            "records_per_transaction",
            "Input records per committed transaction",
            m.records_per_transaction.clone(),
        );
        registry.register(
            "consumer_lag",
            "Consumer lag per input partition",
            m.consumer_lag.clone(),
        );
        registry.register(
            "rebalances",
            "Rebalance callbacks by kind",
            m.rebalances.clone(),
        );
        registry.register(
            "poison_records",
            "Poison records by action",
            m.poison_records.clone(),
        );
        registry.register("fenced", "Times this instance was fenced", m.fenced.clone());
        registry.register(
            "producer_recreations",
            "Times a worker re-created its transactional producer to fence late requests",
            m.producer_recreations.clone(),
        );
        registry.register(
            "state_entries",
            "Entries per state store over the partitions held",
            m.state_entries.clone(),
        );
        registry.register(
            "state_timers_pending",
            "Event-time timers not fired yet",
            m.state_timers_pending.clone(),
        );
        registry.register(
            "state_restore_records",
            "Changelog records applied by restores",
            m.state_restore_records.clone(),
        );
        registry.register(
            "state_restore_remaining",
            "Changelog records a running restore still has to read",
            m.state_restore_remaining.clone(),
        );
        registry.register(
            "state_restoring_partitions",
            "Partitions being restored now",
            m.state_restoring_partitions.clone(),
        );
        registry.register(
            "state_restore_seconds",
            "Time to restore one partition's state",
            m.state_restore_seconds.clone(),
        );
        registry.register(
            "seconds_since_last_commit",
            "Seconds since the last successful commit (0 before the first)",
            m.seconds_since_last_commit.clone(),
        );
        registry.register(
            "open_transaction_age_seconds",
            "Age of the open transaction (0 when none is open)",
            m.open_transaction_age.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Notes that a transaction (batch) opened now.
    pub fn transaction_opened(&self) {
        self.open_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Notes that the open transaction ended (committed or aborted).
    pub fn transaction_closed(&self, committed: bool) {
        self.open_since_ms.store(0, Ordering::Relaxed);
        let kind = if committed { "committed" } else { "aborted" };
        self.transactions.get_or_create(&KindLabel { kind }).inc();
        if committed {
            self.last_commit_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Age of the open transaction in ms, if one is open.
    pub fn open_transaction_ms(&self) -> Option<u64> {
        match self.open_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(now_ms().saturating_sub(since)),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let now = now_ms();
        let age = |since: u64| {
            if since == 0 {
                0.0
            } else {
                now.saturating_sub(since) as f64 / 1000.0
            }
        };
        self.seconds_since_last_commit
            .set(age(self.last_commit_ms.load(Ordering::Relaxed)));
        self.open_transaction_age
            .set(age(self.open_since_ms.load(Ordering::Relaxed)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_histograms_and_ages() {
        let metrics = StageMetrics::new();
        metrics
            .records_in
            .get_or_create(&TopicLabel { topic: "in".into() })
            .inc_by(3);
        metrics.transaction_opened();
        assert!(metrics.open_transaction_ms().is_some());
        metrics.transaction_closed(true);
        metrics.commit_seconds.observe(0.002);
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("kstage_records_in_total{topic=\"in\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kstage_transactions_total{kind=\"committed\"} 1"),
            "{text}"
        );
        assert!(text.contains("kstage_commit_seconds_bucket"), "{text}");
        assert!(
            text.contains("kstage_open_transaction_age_seconds 0.0"),
            "{text}"
        );
        assert!(metrics.open_transaction_ms().is_none());
    }
}
