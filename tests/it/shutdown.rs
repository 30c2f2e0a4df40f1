//! Clean shutdown: SIGTERM in the middle of a stream commits the in-flight transaction, leaves no
//! transaction open, exits 0, and leaves committed offsets that match the output exactly; a restart
//! then processes the rest exactly once.

use crate::common;
use common::orders_stage::stop_cleanly;

use std::time::Duration;

use common::below_committed;
use common::stage::exit_code;
use common::{BackgroundWriter, Pipeline, Verdict, PATIENCE};

const RECORDS: usize = 100_000;

fn sigterm_mid_stream_commits_cleanly_and_restart_resumes_exactly_once() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    // Input keeps arriving while the stage runs and after it stops: SIGTERM lands mid-stream.
    let mut writer = pipeline.writer();
    writer.write(RECORDS / 5);
    writer.flush();
    let background = BackgroundWriter::start(writer, 200, Duration::from_millis(5));

    // A one-second commit interval, so that SIGTERM very likely finds a transaction in flight.
    let spec = pipeline
        .stage("passthrough")
        .instance("t")
        .arg("--commit-interval", "1s");
    let mut stage = spec.spawn();
    let offsets = pipeline.group_offsets(false);
    let mark = (RECORDS / 10) as i64;
    stage.wait_until(
        PATIENCE,
        &format!("committed progress passes {mark}"),
        || offsets.progress() >= mark,
    );
    stage.sigterm();
    let status = stage.wait_exit(PATIENCE);
    if exit_code(status) != Some(0) {
        stage.fail(&format!("SIGTERM mid-stream should exit 0, got {status}"));
    }
    let writer = background.stop();
    let ends = writer.end_offsets();
    let total: i64 = ends.iter().sum();
    pipeline.assert_seq_is_offset(&writer.written);

    assert!(
        pipeline.output_settled(),
        "the stage left a transaction open (last stable offset < high watermark)"
    );

    // Every committed input record is in the output exactly once, and nothing else is.
    let committed = pipeline.group_offsets(true).committed();
    let done: i64 = committed.iter().map(|o| o.unwrap_or(0)).sum();
    eprintln!("after SIGTERM: committed {committed:?} ({done} of {total} records)");
    let report = pipeline.check_committed(&below_committed(&writer.written, &committed));
    report.assert_exactly_once_in_order("read_committed output vs committed offsets after SIGTERM");
    // A clean stop aborts nothing: the read_uncommitted view holds the same records.
    let uncommitted = pipeline.check_uncommitted(&below_committed(&writer.written, &committed));
    uncommitted.assert_exactly_once_in_order("read_uncommitted output after a clean SIGTERM");

    // The restart picks up exactly where the committed offsets say and drains the rest.
    let mut stage = spec.spawn();
    pipeline.wait_drained(&mut stage, &ends);
    stop_cleanly(&mut stage);
    let report = pipeline.check_committed(&writer.written);
    report.assert_exactly_once_in_order("read_committed output after the restart drained");
    pipeline.assert_settled_at(&ends);
}

trials! {
    sigterm_mid_stream_commits_cleanly_and_restart_resumes_exactly_once => [Broker],
}
