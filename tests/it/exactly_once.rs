//! The baseline exactly-once claim on a real broker, without faults: every input record reaches the
//! read_committed output once, in input order per input partition, and a clean shutdown leaves the
//! group's offsets at the input's end and no transaction open.

use crate::common;
use common::orders_stage::stop_cleanly;

use common::input::ID_HEADER;
use common::{Isolation, Pipeline};

const RECORDS: usize = 100_000;

fn passthrough_delivers_every_record_exactly_once_in_input_order() {
    let broker = require_broker!();
    let pipeline = Pipeline::new(&broker, 3);
    let writer = pipeline.seed(RECORDS);
    let ends = writer.end_offsets();

    let mut stage = pipeline.stage("passthrough").spawn();
    pipeline.wait_drained(&mut stage, &ends);

    let committed_view = pipeline.read_output(Isolation::ReadCommitted);
    let report = common::check(&writer.written, &committed_view);
    if !report.is_exactly_once() || !report.order_violations.ok() {
        stage.fail(&format!("read_committed output after the drain: {report}"));
    }
    // Passthrough copies key and headers along with the value.
    for record in &committed_view {
        let id = common::origin(record).expect("checked above").id;
        assert_eq!(
            record.key.as_deref(),
            Some(id.as_str()),
            "key of {id} not copied"
        );
        assert_eq!(
            record.header(ID_HEADER),
            Some(id.as_bytes()),
            "header of {id} not copied"
        );
    }

    stop_cleanly(&mut stage);

    pipeline.assert_settled_at(&ends);

    // Duplicates there are not asserted against (an abort on a retriable error would be
    // legitimate), but the read_uncommitted view holds everything read_committed does.
    let uncommitted = pipeline.check_uncommitted(&writer.written);
    eprintln!("read_uncommitted view of the fault-free run: {uncommitted}");
    assert!(
        uncommitted.lost.ok() && uncommitted.unexpected.ok(),
        "the read_uncommitted view lost records or holds foreign ones: {uncommitted}"
    );

    // The check above can fail: the same committed view with one record replayed and one
    // dropped is caught as both.
    let mut tampered = committed_view.clone();
    let dropped = tampered.pop().expect("the output is not empty");
    let mut replayed = tampered[0].clone();
    replayed.offset = dropped.offset;
    replayed.partition = dropped.partition;
    tampered.push(replayed);
    let caught = common::check(&writer.written, &tampered);
    assert!(
        caught.lost.count == 1 && caught.duplicated.count == 1,
        "the checker missed a replayed and a dropped record: {caught}"
    );
}

trials! {
    passthrough_delivers_every_record_exactly_once_in_input_order => [Broker],
}
