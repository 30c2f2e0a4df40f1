//! kstage: exactly-once stream processing stages for Apache Kafka.
//!
//! A *stage* reads input topics as a member of a consumer group, runs a [`topology::Topology`] on
//! every record, and writes the results to output topics. In the default `exactly_once` mode the
//! outputs and the input offsets that produced them commit in one Kafka transaction, so
//! `read_committed` readers downstream see every input record reflected exactly once, through
//! crashes, restarts and rebalances.
//!
//! * [`topology`]: the API a transform implements, and the registry of named topologies.
//! * [`config`]: the stage configuration and its validation.
//! * [`engine`]: the transactional consume-transform-produce loop.
//! * [`cli`]: the `kstage` command line, reusable by a binary that registers its own topologies.
//! * [`state`]: stateful topologies: stores, timers, changelogs, restore.
//! * [`sink`]: stages that end in PostgreSQL (`kstage sink`), transactional or idempotent.
//! * [`verify`]: checks a pipeline's output against its input (`kstage verify`).

// The engine promises no panic on its path: these lints hold the library to it (tests and the
// binary's edge may use `expect`; unit tests are compiled with `cfg(test)` and exempt).
#![cfg_attr(
    not(test),
    warn(
        clippy::panic,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::cast_possible_truncation
    )
)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod cli;
pub mod codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod observability;
pub mod sink;
pub mod state;
pub mod topology;
pub mod verify;

/// The README's Rust examples, compiled and run as doctests so that they cannot drift from the
/// API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
