//! The typed stateful topology `order-totals` against the real broker: typed orders keyed by
//! customer in, each customer's running `CustomerTotal` out, in JSON and in Avro through the
//! schema registry. The check reads the output read_committed and compares, per customer, the
//! update sequence (orders 1, 2, ..., n in order) and the last total against the test's own sum
//! in integer cents. JSON runs through crashes at the fail point between the changelog send and
//! the commit; the negative control runs the same crashes with the state written before the
//! commit (`KSTAGE_BROKEN_MODE=state_before_commit`) and must over-count.

use kstage::codec::Part;

use crate::common;

use common::orders::Order;
use common::orders_stage::stop_cleanly;
use common::raw::RawWriter;
use common::read::Isolation;
use common::registry::{avro_codecs, latest_schema};
use common::state::totals::{check, write_orders};
use common::state::StatePipeline;

/// Avro on both sides through the registry, one clean run: the totals are exact, and the
/// stage registered `kstage.examples.CustomerTotal` for the output.
fn order_totals_are_exact_in_avro_through_the_registry() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = StatePipeline::new(&broker, 2, &["totals"]);
    let p = &pipeline.pipeline;
    let codecs = avro_codecs(&url, &[&p.input, &p.output]);
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let encode = |o: &Order| codecs.encode(&p.input, Part::Value, o).expect("encode");
    let truth = write_orders(&mut writer, 3_000, 100, &encode);
    let ends = writer.end_offsets();
    let spec = pipeline
        .stage("order-totals")
        .arg("--format", &format!("{}=string:avro", p.input))
        .arg("--format", &format!("{}=string:avro", p.output))
        .arg("--schema-registry-url", &url)
        .arg("--metrics-address", "off");
    let mut stage = spec.spawn();
    p.wait_drained(&mut stage, &ends);
    stop_cleanly(&mut stage);
    let report = check(
        &p.bootstrap,
        &p.output,
        Isolation::ReadCommitted,
        &codecs,
        &truth,
    );
    assert!(report.exact(), "order totals (avro): {report:?}");
    assert_eq!(report.updates, 3_000, "one update per order");
    let schema = latest_schema(&url, &format!("{}-value", p.output)).expect("output schema");
    assert_eq!(
        schema["name"]
            .as_str()
            .map(|n| n.trim_start_matches("kstage.examples.")),
        Some("CustomerTotal"),
        "{schema}"
    );
}

#[cfg(feature = "fault-injection")]
pub mod crashes {
    use super::*;
    use common::stage::{exit_code, exit_signal};
    use common::state::totals::Report;
    use common::state::verify_expect;
    use common::PATIENCE;
    use kstage::codec::Codecs;

    /// JSON on both sides; the stage crashes `CRASHES` times at the fail point between the
    /// changelog send and the commit (after a random number of passes), then drains. Returns
    /// the check's report and `kstage verify --expect order-totals`' exit code and output.
    fn totals_across_crashes_before_commit(
        broken: Option<&str>,
    ) -> (Report, (Option<i32>, String)) {
        const CRASHES: usize = 2;
        let broker = require_broker!();
        let pipeline = StatePipeline::new(&broker, 3, &["totals"]);
        let p = &pipeline.pipeline;
        let codecs = Codecs::plain();
        let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
        let encode = |o: &Order| serde_json::to_vec(o).expect("json");
        let truth = write_orders(&mut writer, 4_000, 200, &encode);
        let ends = writer.end_offsets();
        let offsets = p.group_offsets(false);
        let mut base = pipeline
            .stage_with_batch("order-totals", 300)
            .arg("--format", &format!("{}=string:json", p.input))
            .arg("--metrics-address", "off");
        if let Some(mode) = broken {
            base = base.env("KSTAGE_BROKEN_MODE", mode);
        }
        for crash in 0..CRASHES {
            let skip = rand::random_range(1..=4);
            let failpoints = format!("kstage::state_before_commit={skip}*off->return");
            let mut stage = base.clone().env("FAILPOINTS", &failpoints).spawn();
            let Some(status) =
                stage.wait_until_or_exit(PATIENCE, "the stage crashes before a commit", || {
                    offsets.caught_up(&ends)
                })
            else {
                stage.fail(&format!("the input drained before crash {crash}"));
            };
            if exit_signal(status).is_none() && exit_code(status).is_none_or(|code| code <= 2) {
                stage.fail(&format!("expected a fail-point crash, got {status}"));
            }
        }
        let mut stage = base.spawn();
        p.wait_drained(&mut stage, &ends);
        stop_cleanly(&mut stage);
        let report = check(
            &p.bootstrap,
            &p.output,
            Isolation::ReadCommitted,
            &codecs,
            &truth,
        );
        (report, verify_expect(p, "order-totals"))
    }

    fn order_totals_are_exact_in_json_across_crashes_before_commit() {
        let (report, (code, said)) = totals_across_crashes_before_commit(None);
        assert!(report.exact(), "order totals (json): {report:?}");
        assert_eq!(code, Some(0), "kstage verify --expect order-totals: {said}");
    }

    /// Negative control: with the local store written before the commit, the crashed
    /// transactions' orders are added again after the restart.
    fn state_written_before_the_commit_over_counts_order_totals() {
        let (report, (code, said)) =
            totals_across_crashes_before_commit(Some("state_before_commit"));
        assert!(
            report.over_counted > 0,
            "state_before_commit should over-count: {report:?}"
        );
        assert_eq!(
            code,
            Some(1),
            "kstage verify --expect order-totals should fail too: {said}"
        );
    }

    trials! {
        order_totals_are_exact_in_json_across_crashes_before_commit => [Broker],
        state_written_before_the_commit_over_counts_order_totals => [Broker],
    }
}

trials! {
    order_totals_are_exact_in_avro_through_the_registry => [Broker, Registry],
}
