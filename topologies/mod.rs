//! The built-in topologies, compiled into the `kstage` binary.
//!
//! Each one is a module that uses only `kstage`'s public API, exactly as a user's topology would.
//! To add your own: write `topologies/my_transform.rs` implementing
//! [`kstage::topology::Topology`], declare it below, and register it in [`registry`]; then run it
//! with `kstage run --topology my-transform ...`.

pub mod bench_enrich;
pub mod count;
pub mod dedupe;
pub mod order_lines;
pub mod order_totals;
pub mod orders;
pub mod orders_avro;
pub mod passthrough;
#[cfg(feature = "fault-injection")]
pub mod testing;
pub mod windowed_count;

use kstage::topology::Registry;

/// Every built-in topology by name.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register("passthrough", passthrough::DESCRIPTION, passthrough::build)
        .register("count", count::DESCRIPTION, count::build)
        .register("dedupe", dedupe::DESCRIPTION, dedupe::build)
        .register(
            "windowed-count",
            windowed_count::DESCRIPTION,
            windowed_count::build,
        )
        .register("orders", orders::DESCRIPTION, orders::build)
        .register("orders-avro", orders_avro::DESCRIPTION, orders_avro::build)
        .register(
            "order-totals",
            order_totals::DESCRIPTION,
            order_totals::build,
        )
        .register(
            "bench-enrich",
            bench_enrich::DESCRIPTION,
            bench_enrich::build,
        )
        .register_sink("order-lines", order_lines::DESCRIPTION, order_lines::build);
    #[cfg(feature = "fault-injection")]
    registry.register("fail-on", testing::DESCRIPTION, testing::build);
    registry
}
