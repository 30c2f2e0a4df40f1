//! Runs the engine on its own thread and turns SIGTERM / SIGINT into a graceful shutdown.
//!
//! The first signal sets the shutdown flag: the worker commits its open transaction, leaves the
//! group and returns. A second signal exits at once with code 130 (the open transaction, if any,
//! is then aborted by the broker after `transaction_timeout`, or at once by a restarted
//! instance with the same id).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::engine::WorkerStats;
use crate::error::EngineError;

/// Runs `engine` on a dedicated thread until it returns; signals set `shutdown`.
pub(crate) fn run_until_signal<F>(
    shutdown: Arc<AtomicBool>,
    engine: F,
) -> Result<WorkerStats, EngineError>
where
    F: FnOnce() -> Result<WorkerStats, EngineError> + Send + 'static,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("kstage-worker".into())
        .spawn(move || {
            let result = engine();
            let _ = done_tx.send(());
            result
        })
        .map_err(|e| EngineError::Startup(format!("cannot start the worker thread: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Startup(format!("cannot start the signal runtime: {e}")))?;
    runtime.block_on(wait_for_signals(shutdown, done_rx))?;
    worker
        .join()
        .unwrap_or_else(|_| Err(EngineError::Startup("the worker thread panicked".into())))
}

async fn wait_for_signals(
    shutdown: Arc<AtomicBool>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), EngineError> {
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| EngineError::Startup(format!("cannot listen for signals: {e}")))
    };
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    tokio::select! {
        _ = &mut done => return Ok(()),
        _ = term.recv() => tracing::info!("SIGTERM received; committing the open transaction and stopping."),
        _ = int.recv() => tracing::info!("SIGINT received; committing the open transaction and stopping."),
    }
    shutdown.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = &mut done => Ok(()),
        _ = term.recv() => force_exit(),
        _ = int.recv() => force_exit(),
    }
}

fn force_exit() -> ! {
    eprintln!("kstage: second signal received; exiting without finishing the transaction");
    std::process::exit(130)
}
