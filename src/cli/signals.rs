//! Runs the engine on its own thread and turns SIGTERM / SIGINT into a graceful shutdown.
//!
//! The first signal sets the shutdown flag: the worker commits its open transaction, leaves the
//! group and returns. A second signal exits at once with code 130, and so does (with code 1) a
//! shutdown that takes longer than the grace period (`--shutdown-grace`, 30 s): the open
//! transaction, if any, is then aborted by the broker after `transaction_timeout`, or at once by
//! a restarted instance with the same id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::engine::WorkerStats;
use crate::error::EngineError;
use crate::observability::Telemetry;

/// Runs `engine` on a dedicated thread until it returns; signals set `shutdown`.
/// Serves the metrics and health endpoint meanwhile, when given an address.
pub(crate) fn run_until_signal<F, E>(
    shutdown: Arc<AtomicBool>,
    grace: Duration,
    http: Option<(SocketAddr, Telemetry)>,
    engine: F,
) -> Result<WorkerStats, E>
where
    F: FnOnce() -> Result<WorkerStats, E> + Send + 'static,
    E: From<EngineError> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Startup(format!("cannot start the signal runtime: {e}")))?;
    // The handlers are installed before the engine starts: a SIGTERM during start-up is a clean
    // stop, never the default action (death by signal).
    let signals = {
        let _runtime = runtime.enter();
        Signals::listen()?
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("kstage-worker".into())
        .spawn(move || {
            let result = engine();
            let _ = done_tx.send(());
            result
        })
        .map_err(|e| EngineError::Startup(format!("cannot start the worker thread: {e}")))?;
    // With `fault-injection`, `FAILPOINTS=kstage::after_worker_start=sleep(<ms>)` widens the
    // start-up window in which a SIGTERM must already be handled (the start-up race's test).
    fail::fail_point!("kstage::after_worker_start");
    if let Some((address, telemetry)) = http {
        runtime.spawn(async move {
            // A stage that cannot expose metrics still processes; its probes will fail.
            if let Err(error) = crate::observability::serve(address, telemetry).await {
                tracing::error!(%error, %address, "Cannot serve /metrics, /healthz and /readyz.");
            }
        });
    }
    runtime.block_on(wait_for_signals(signals, shutdown, grace, done_rx));
    worker
        .join()
        .unwrap_or_else(|_| Err(EngineError::Startup("the worker thread panicked".into()).into()))
}

/// SIGTERM and SIGINT, listened for.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the runtime.
    fn listen() -> Result<Self, EngineError> {
        let listen = |kind: SignalKind| {
            signal(kind)
                .map_err(|e| EngineError::Startup(format!("cannot listen for signals: {e}")))
        };
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }
}

async fn wait_for_signals(
    signals: Signals,
    shutdown: Arc<AtomicBool>,
    grace: Duration,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let Signals { mut term, mut int } = signals;
    tokio::select! {
        _ = &mut done => return,
        _ = term.recv() => tracing::info!("SIGTERM received; committing the open transaction and stopping."),
        _ = int.recv() => tracing::info!("SIGINT received; committing the open transaction and stopping."),
    }
    shutdown.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = &mut done => {},
        _ = term.recv() => force_exit("a second signal arrived", 130),
        _ = int.recv() => force_exit("a second signal arrived", 130),
        _ = tokio::time::sleep(grace) => force_exit("the shutdown grace period ran out", 1),
    }
}

fn force_exit(why: &str, code: i32) -> ! {
    tracing::error!("Exiting before the stage finished stopping: {why}.");
    eprintln!(
        "kstage: {why}; exiting without finishing the open transaction (the broker aborts it)"
    );
    std::process::exit(code)
}
