//! kstage's integration tests, as one test binary: one module per area, the shared fixture
//! (`common`) compiled and linked once.
//!
//! The binary has its own harness ([`harness`], on `libtest-mimic`), so that a test whose
//! environment is missing (no broker, no schema registry, not the full reliability run) is
//! reported as *ignored*, never as passed. Arguments are libtest's: a name filter, `--exact`,
//! `--skip`, `--test-threads`, `--list`, `--include-ignored` (several name filters select the
//! tests matching any of them), for example
//! `cargo test --features fault-injection --test it -- crash::` or `scripts/test.sh --test it --
//! poison`. Test names are `<module>::<function>`.
//!
//! `tests/interop/` is not Rust: the Python client script that `avro::` drives.

#[macro_use]
mod harness;
#[macro_use]
mod common;

#[cfg(feature = "fault-injection")]
mod abort;
mod avro;
mod cli;
mod crash;
#[cfg(feature = "fault-injection")]
mod engine_paths;
mod exactly_once;
mod fencing;
mod poison;
mod registry_outage;
mod reliability;
mod reliability_floor;
mod reliability_network;
mod reliability_soak;
#[cfg(feature = "fault-injection")]
mod renew;
mod rolling;
#[cfg(feature = "fault-injection")]
mod safety;
mod security;
mod shutdown;
mod sink;
mod state;
mod verify;

fn main() -> std::process::ExitCode {
    let (arguments, filters) = harness::arguments();
    let mut trials = Vec::new();
    trials.extend(cli::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(abort::trials());
    trials.extend(avro::trials());
    trials.extend(crash::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(crash::fail_points::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(engine_paths::trials());
    trials.extend(exactly_once::trials());
    trials.extend(fencing::trials());
    trials.extend(poison::trials());
    trials.extend(registry_outage::trials());
    trials.extend(reliability::trials());
    trials.extend(reliability_floor::trials());
    trials.extend(reliability_network::trials());
    trials.extend(reliability_soak::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(renew::trials());
    trials.extend(rolling::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(safety::trials());
    trials.extend(security::trials());
    trials.extend(shutdown::trials());
    trials.extend(sink::trials());
    trials.extend(state::trials());
    trials.extend(state::rebalance::trials());
    trials.extend(state::typed::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::typed::crashes::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::rebalance::broken::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::restore_failover::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::wall::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::kills::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(state::fail_points::trials());
    trials.extend(sink::verify_table::trials());
    trials.extend(sink::avro::trials());
    trials.extend(sink::topology::trials());
    trials.extend(sink::copy_staged::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(sink::fail_points::trials());
    #[cfg(feature = "fault-injection")]
    trials.extend(sink::kills::trials());
    trials.extend(verify::trials());
    harness::run(arguments, &filters, trials)
}
