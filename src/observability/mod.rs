//! Observability: logs, metrics, health.
//!
//! Logging: `tracing` to stderr, human-readable by default or JSON, level from `RUST_LOG`.
//! The engine logs per batch, rebalance, abort and error, and a periodic progress line; never
//! per record. librdkafka's own log lines arrive through the `log` facade and are bridged in.

mod health;
mod http;
mod metrics;

pub use health::{default_max_open_transaction, Health, Telemetry, WorkerHealth};
pub use http::serve;
pub use metrics::{now_ms, KindLabel, PartitionLabel, StageMetrics, StoreLabel, TopicLabel};

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` sets the level (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling the CLI entry point twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
