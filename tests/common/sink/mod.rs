//! Fixtures for the sink tests (`tests/sink.rs`): the PostgreSQL under test, a sink config
//! written to a file, the sink as a child process, and keyed input.
//!
//! Self-contained: it uses the shared fixture (`tests/common`) only through its public helpers.
#![allow(dead_code)]

pub mod keyed;
pub mod pg;
pub mod process;

pub use pg::{pg_url, Pg};
pub use process::{SinkProcess, SinkSpec};
