//! The stage engine: a consume-transform-produce loop that commits outputs and input offsets in
//! one Kafka transaction.
//!
//! ```text
//! poll batch ──► Topology::process ──► produce (inside the transaction)
//!                                           │
//!     send_offsets_to_transaction(positions, group_metadata) ──► commit_transaction
//! ```
//!
//! * [`runner`]: the loop (batching, poison policy, rewind after aborts, shutdown).
//! * [`policy`]: when to close a batch (`commit_policy` within `commit_interval` and
//!   `max_records_per_txn`), pure and unit-tested.
//! * [`record`]: one record through the topology and the poison policy (no Kafka calls).
//! * [`txn`]: the transaction as a state machine, the producer, the commit thread, the
//!   delivery modes.
//! * [`rebalance`]: the consumer's callbacks: commit on revoke, abort on lost.
//! * [`offsets`]: positions to commit, and the rewind.
//! * [`retry`]: retriable calls, with backoff and a deadline.
//! * [`clients`]: librdkafka settings and the start-up check.
//!
//! One worker is one consumer and one transactional producer (KIP-447, "EOS v2"): the broker
//! fences a zombie through the consumer group metadata sent with the offsets, so no producer per
//! partition is needed. All Kafka calls of a worker, which block, run on the worker's own thread,
//! never on an async runtime.
//!
//! The late-EndTxn rule (KAFKA-17754; librdkafka speaks EndTxn v0-1 only, librdkafka#5423):
//! after any commit or abort that needed a retried call or saw a request to the transaction
//! coordinator time out, and after one that failed that way or hung past the watchdog, the
//! worker re-creates its producer with the same transactional id before the next transaction.
//! The new `init_transactions` bumps the epoch, so no late request of the old one can land on a
//! later transaction. A batch whose commit outcome is unknown stays in doubt, is never aborted,
//! and is settled by that init and the group's committed offsets. Every transactional call has
//! a bound and a consequence at it (see `txn::renew`): a re-created producer, or a stop with the
//! batch in doubt, never a hang. Consumers of exactly_once workers are static group members
//! (`group.instance.id` = the transactional id), so a restarted instance resumes without a
//! rebalance.

pub(crate) mod broken;
mod clients;
mod offsets;
pub(crate) mod policy;
mod rebalance;
mod record;
mod retry;
mod runner;
mod txn;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

pub use txn::WorkerStats;

/// The commit watchdog's bound, in transaction timeouts (validated against max.poll.interval.ms).
pub(crate) use txn::WATCHDOG_FACTOR;

/// The consumer settings of a stage, for the database sinks (`src/sink`), which read like a stage.
pub(crate) use clients::consumer_config;

use crate::codec::Codecs;
use crate::config::StageConfig;
use crate::error::EngineError;
use crate::observability::Telemetry;
use crate::topology::{StageInfo, Topology};

/// How long start-up waits for the cluster to answer before it gives up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `fetch.wait.max.ms` of the restore consumers: how long the fetch at a changelog's end waits
/// before the partition EOF that ends a restore (librdkafka's default is 500 ms; measured in
/// docs/BENCHMARKS.md, "Stateful").
const RESTORE_FETCH_WAIT_MS: &str = "10";

/// Runs one stage until `shutdown` is set (then commits the open transactions, leaves the group
/// and returns its counters) or a fatal error.
///
/// `topologies` holds one topology instance per worker (`workers` in the config). One worker is
/// one consumer and one transactional producer, each on its own thread; a single worker runs on
/// the calling thread. When one worker fails the others are stopped (they commit what they
/// hold) and the first error is returned.
///
/// Blocks the calling thread: call it from a dedicated thread or `spawn_blocking`. The config
/// must have passed [`StageConfig::validate`], which also builds the topologies.
pub fn run(
    config: &StageConfig,
    topologies: Vec<Box<dyn Topology>>,
    shutdown: Arc<AtomicBool>,
    telemetry: Telemetry,
) -> Result<WorkerStats, EngineError> {
    let codecs = Codecs::new(
        config.default_format.clone(),
        config.formats.clone(),
        config.schema_registry.as_ref(),
    )
    .map_err(EngineError::Startup)?;
    codecs
        .check_registry()
        .map_err(|e| EngineError::Startup(format!("the schema registry is not usable: {e}")))?;
    let stage = StageInfo {
        codecs: Arc::new(codecs),
        outputs: Arc::new(config.outputs.clone()),
    };
    let workers = topologies.len();
    if workers <= 1 {
        let topology = topologies
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Startup("no topology instance to run".to_string()))?;
        return run_worker(
            config,
            config.transactional_id(),
            topology,
            &stage,
            shutdown,
            telemetry,
        );
    }
    let results: Vec<Result<WorkerStats, EngineError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = topologies
            .into_iter()
            .enumerate()
            .map(|(index, topology)| {
                let (stage, shutdown, telemetry) =
                    (&stage, Arc::clone(&shutdown), telemetry.clone());
                let transactional_id = format!("{}-{index}", config.transactional_id());
                std::thread::Builder::new()
                    .name(format!("kstage-worker-{index}"))
                    .spawn_scoped(scope, move || {
                        // A worker that panics stops the others too (they commit and leave).
                        let _stop_on_panic = StopOnPanic(&shutdown);
                        let result = run_worker(
                            config,
                            transactional_id,
                            topology,
                            stage,
                            Arc::clone(&shutdown),
                            telemetry,
                        );
                        if result.is_err() {
                            // One worker down stops the stage: the others commit and leave.
                            shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        result
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(EngineError::Startup("a worker thread panicked".to_string()))
                }),
                Err(e) => Err(EngineError::Startup(format!(
                    "cannot start a worker thread: {e}"
                ))),
            })
            .collect()
    });
    let mut total = WorkerStats::default();
    for result in results {
        total.add(&result?);
    }
    Ok(total)
}

/// Sets the shutdown flag when dropped while its thread unwinds from a panic.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One worker: its consumer and producer, from start-up checks to shutdown.
fn run_worker(
    config: &StageConfig,
    transactional_id: String,
    mut topology: Box<dyn Topology>,
    stage: &StageInfo,
    shutdown: Arc<AtomicBool>,
    telemetry: Telemetry,
) -> Result<WorkerStats, EngineError> {
    topology
        .on_start(stage)
        .map_err(|e| EngineError::Startup(format!("topology {}: {e}", config.topology)))?;
    let producer_config = clients::producer_config(config, &transactional_id);
    let max_message_bytes = producer_config
        .get("message.max.bytes")
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(record::DEFAULT_MESSAGE_MAX_BYTES);
    let producer = Arc::new(txn::TransactionalProducer::new(
        config.delivery,
        &producer_config,
        transactional_id.clone(),
        config.transaction_timeout,
        Arc::clone(&telemetry.metrics),
    )?);
    let handle = Arc::new(txn::TxnHandle::new(Arc::clone(&producer))?);
    let health = telemetry.health.worker(&transactional_id);
    let consumer: BaseConsumer<rebalance::StageContext> =
        clients::consumer_config(config, &transactional_id)
            .create_with_context(rebalance::StageContext::new(
                Arc::clone(&handle),
                telemetry.clone(),
                Arc::clone(&health),
            ))
            .map_err(|source| EngineError::Kafka {
                operation: "creating the consumer",
                source,
            })?;
    if !clients::preflight(&consumer, config, STARTUP_TIMEOUT, &shutdown)? {
        tracing::info!("Stopped during start-up; nothing was processed.");
        return Ok(WorkerStats::default());
    }
    let state = stateful_runtime(
        config,
        &transactional_id,
        topology.as_ref(),
        &consumer,
        (Arc::clone(&telemetry.metrics), Arc::clone(&health)),
    )?;
    handle.init(STARTUP_TIMEOUT)?;
    health.set_producer_ready();
    let inputs: Vec<&str> = config.inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&inputs)
        .map_err(|source| EngineError::Kafka {
            operation: "subscribing",
            source,
        })?;
    tracing::info!(
        app_id = %config.app_id,
        transactional_id = %transactional_id,
        delivery = config.delivery.as_str(),
        inputs = ?config.inputs,
        outputs = ?config.outputs,
        "Stage worker started."
    );
    let mut worker_txn =
        txn::WorkerTxn::new(handle, producer, Arc::clone(&telemetry.metrics), health);
    worker_txn.state = state;
    runner::Worker {
        consumer,
        txn: worker_txn,
        rebalances_seen: 0,
        topology,
        handling: record::RecordHandling::new(config, max_message_bytes),
        timing: policy::CommitTiming::new(
            config.commit_policy,
            config.commit_interval,
            config.max_records_per_txn,
            config.pipelined_commits,
            config.target_latency,
        ),
        input_idle: false,
        pipelined_commits: config.pipelined_commits,
        shutdown,
    }
    .run()
}

/// A stateful topology's runtime: checks its changelogs (exist, compacted, as many partitions
/// as the input) and creates the restore clients. `None` for a stateless topology.
fn stateful_runtime(
    config: &StageConfig,
    transactional_id: &str,
    topology: &dyn Topology,
    consumer: &BaseConsumer<rebalance::StageContext>,
    telemetry: (
        Arc<crate::observability::StageMetrics>,
        Arc<crate::observability::WorkerHealth>,
    ),
) -> Result<Option<crate::state::runtime::StateRuntime>, EngineError> {
    let stores = topology.stores();
    if stores.is_empty() {
        return Ok(None);
    }
    let input = config
        .inputs
        .first()
        .ok_or_else(|| EngineError::Startup("a stateful stage needs an input topic".into()))?;
    let metadata = consumer
        .fetch_metadata(Some(input), Duration::from_secs(10))
        .map_err(|source| EngineError::Kafka {
            operation: "reading topic metadata",
            source,
        })?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let client = clients::consumer_config(config, &format!("{transactional_id}-admin"));
    let plain: BaseConsumer = client.create().map_err(|source| EngineError::Kafka {
        operation: "creating the restore consumer",
        source,
    })?;
    crate::state::topics::check_changelogs(
        &client,
        &plain,
        &config.app_id,
        input,
        partitions,
        &stores,
    )
    .map_err(|e| EngineError::Startup(format!("{e} (on {})", config.bootstrap_servers)))?;
    let mut restore = clients::consumer_config(config, &format!("{transactional_id}-restore"));
    restore
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0")
        .set("isolation.level", "read_committed")
        // A restore ends at partition EOF, which the fetch at the end reports only once the
        // broker gives up waiting for new data: librdkafka's 500 ms default cost every restore
        // half a second, even one with nothing committed to read (after a kill, the changelog
        // tail is the killed transaction's aborted records). A fetch with data returns at once
        // either way (fetch.min.bytes = 1), so this costs reading nothing.
        .set("fetch.wait.max.ms", RESTORE_FETCH_WAIT_MS);
    use crate::state::runtime::RestoreContext;
    let committed = restore.clone();
    restore.set("isolation.level", "read_uncommitted");
    let uncommitted: BaseConsumer<RestoreContext> = restore
        .create_with_context(RestoreContext)
        .map_err(|source| EngineError::Kafka {
            operation: "creating the restore consumer",
            source,
        })?;
    let restorer = crate::state::runtime::restorer(
        committed,
        uncommitted,
        config.transaction_timeout + Duration::from_secs(30),
    );
    let dir = config.state_dir.join(transactional_id);
    tracing::info!(stores = stores.len(), dir = %dir.display(), "Stateful topology: changelogs checked.");
    Ok(Some(crate::state::runtime::StateRuntime::new(
        &config.app_id,
        &stores,
        dir,
        restorer,
        telemetry,
    )))
}
