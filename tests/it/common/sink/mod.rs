//! Fixtures for the sink tests (`tests/it/sink.rs`): the PostgreSQL under test, a sink config
//! built as TOML and started through the shared stage helper (`common::stage`, subcommand
//! `sink`), and keyed input.

pub mod exact;
pub mod keyed;
pub mod kills;
pub mod pg;
pub mod spec;

pub use pg::{pg_url, Pg};
pub use spec::SinkSpec;
