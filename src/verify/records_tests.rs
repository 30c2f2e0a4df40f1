//! Unit tests of the checks over records already read: each names the fault it must catch.

use super::*;
use crate::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};

/// Input record `n` of partition `partition`, at offset `offset`: key and JSON id `id-n`.
fn input(partition: i32, offset: i64, n: u32) -> Record {
    Record {
        partition,
        offset,
        key: Some(format!("id-{n}").into_bytes()),
        value: Some(format!(r#"{{"id":"id-{n}","seq":{offset}}}"#).into_bytes()),
        headers: Vec::new(),
    }
}

/// A copy of `of` at `partition`/`offset` of an output topic, with provenance headers naming it.
fn copy(of: &Record, partition: i32, offset: i64) -> Record {
    let header = |name: &str, value: String| (name.to_string(), Some(value.into_bytes()));
    Record {
        partition,
        offset,
        key: of.key.clone(),
        value: of.value.clone(),
        headers: vec![
            header(SOURCE_TOPIC, "in".into()),
            header(SOURCE_PARTITION, of.partition.to_string()),
            header(SOURCE_OFFSET, of.offset.to_string()),
        ],
    }
}

/// `inputs` records 0..n on partition 0; the output holds copies of the input offsets listed.
fn run(identity: &Identity, n: u32, copies_of: &[usize]) -> Report {
    let inputs: Vec<Record> = (0..n).map(|i| input(0, i64::from(i), i)).collect();
    let outputs: Vec<Record> = copies_of
        .iter()
        .zip(0..)
        .map(|(&i, offset)| copy(&inputs[i], 0, offset))
        .collect();
    check_one(identity, &inputs, &outputs)
}

/// `check_records` over one input topic `in` and one output topic `out`, ten examples.
fn check_one(identity: &Identity, inputs: &[Record], outputs: &[Record]) -> Report {
    check_records(
        identity,
        &[TopicRecords {
            topic: "in",
            records: inputs,
        }],
        &[TopicRecords {
            topic: "out",
            records: outputs,
        }],
        10,
    )
}

#[test]
fn a_faithful_copy_passes_under_every_identity() {
    for identity in [
        Identity::Provenance,
        Identity::Key,
        Identity::Field("id".into()),
    ] {
        let report = run(&identity, 4, &[0, 1, 2, 3]);
        assert!(report.passed, "{identity}: {report}");
        assert!(report.is_exactly_once());
        assert_eq!(report.order_lanes, 1);
    }
}

#[test]
fn a_missing_record_is_lost_and_a_replayed_one_duplicated() {
    let report = run(&Identity::Field("id".into()), 3, &[0, 1, 1]);
    assert!(!report.passed);
    assert_eq!(report.lost.count, 1);
    assert_eq!(report.lost.examples, ["in[0]@2"]);
    assert_eq!(report.duplicated.count, 1);
    assert_eq!(report.order_violations.count, 1, "a repeat is out of order");
    assert!(!report.is_exactly_once());
}

#[test]
fn an_output_naming_no_given_input_record_is_unexpected() {
    let inputs = [input(0, 0, 0)];
    let stranger = input(0, 7, 7);
    let outputs = [copy(&inputs[0], 0, 0), copy(&stranger, 0, 1)];
    for identity in [Identity::Provenance, Identity::Key] {
        let report = check_one(&identity, &inputs, &outputs);
        assert_eq!(report.unexpected.count, 1, "{identity}: {report}");
        assert!(report.lost.ok() && report.duplicated.ok());
    }
}

#[test]
fn records_out_of_input_order_within_a_lane_are_violations_but_other_lanes_are_not() {
    let report = run(&Identity::Provenance, 4, &[0, 2, 1, 3]);
    assert_eq!(report.order_violations.count, 1, "{report}");
    assert!(report.is_exactly_once(), "order is not counting");
    // Two input partitions into one output partition interleave freely.
    let inputs = [input(0, 0, 0), input(1, 0, 1), input(0, 1, 2)];
    let outputs = [
        copy(&inputs[1], 0, 0),
        copy(&inputs[0], 0, 1),
        copy(&inputs[2], 0, 2),
    ];
    let report = check_one(&Identity::Provenance, &inputs, &outputs);
    assert!(report.passed, "{report}");
    assert_eq!(report.order_lanes, 2);
}

#[test]
fn one_record_per_input_across_several_outputs_passes_and_two_fail() {
    let inputs: Vec<Record> = (0..3).map(|i| input(0, i64::from(i), i)).collect();
    let good = [copy(&inputs[0], 0, 0), copy(&inputs[2], 0, 1)];
    let dead_letters = [copy(&inputs[1], 0, 0)];
    let in_both = [copy(&inputs[1], 0, 0), copy(&inputs[2], 0, 1)];
    let check = |dead: &[Record]| {
        check_records(
            &Identity::Provenance,
            &[TopicRecords {
                topic: "in",
                records: &inputs,
            }],
            &[
                TopicRecords {
                    topic: "out",
                    records: &good,
                },
                TopicRecords {
                    topic: "dlq",
                    records: dead,
                },
            ],
            10,
        )
    };
    assert!(check(&dead_letters).passed);
    let twice = check(&in_both);
    assert_eq!(twice.duplicated.count, 1, "{twice}");
}

#[test]
fn a_repeated_input_id_is_reported_rather_than_guessed() {
    let inputs = [input(0, 0, 5), input(0, 1, 5)];
    let outputs = [copy(&inputs[0], 0, 0)];
    let report = check_one(&Identity::Key, &inputs, &outputs);
    assert!(!report.passed);
    assert!(
        report
            .unexpected
            .examples
            .iter()
            .any(|e| e.contains("repeats")),
        "{report}"
    );
}
