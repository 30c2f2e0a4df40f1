//! `kstage verify` against hand-made pipelines on a real broker: outputs written directly (a
//! faithful copy, then copies with a record missing, one twice, one foreign, two swapped),
//! transactional middle topics with an aborted transaction, an open transaction, a lagging
//! group. Each check must pass on the faithful copy and fail on the fault it is for: a verifier
//! that passes everything proves nothing.

use crate::common;

use std::time::Duration;

use common::chaos::verifier::Verification;
use common::raw::{RawRecord, RawWriter};
use common::{create_topic, unique_name, InputRecord};
use kstage::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use kstage::verify::Report;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A copy of input record `r` of topic `input`, as a stage would write it.
fn copy_of(input: &str, r: &InputRecord) -> RawRecord {
    let value = serde_json::json!({ "id": r.id, "partition": r.partition, "seq": r.seq });
    RawRecord::new(Some(&r.id), Some(value.to_string().into_bytes()))
        .header(SOURCE_TOPIC, input)
        .header(SOURCE_PARTITION, &r.partition.to_string())
        .header(SOURCE_OFFSET, &r.seq.to_string())
}

struct Fixture {
    bootstrap: String,
    input: String,
    written: Vec<InputRecord>,
}

/// An input topic of 3 partitions holding `n` records (offset == seq).
fn fixture(bootstrap: &str, n: usize) -> Fixture {
    let input = unique_name("verify-in");
    create_topic(bootstrap, &input, 3);
    let writer = common::seed(bootstrap, &input, 3, n);
    Fixture {
        bootstrap: bootstrap.to_string(),
        input,
        written: writer.written,
    }
}

impl Fixture {
    /// An output topic holding `records`, each written to the partition of its input record.
    fn output(&self, records: &[&InputRecord]) -> String {
        let output = unique_name("verify-out");
        create_topic(&self.bootstrap, &output, 3);
        let mut writer = RawWriter::new(&self.bootstrap, &output, 3);
        for r in records {
            writer.write(r.partition, copy_of(&self.input, r));
        }
        writer.flush();
        output
    }

    fn verify(&self, output: &str, id_field: Option<&str>) -> Report {
        Verification {
            bootstrap: self.bootstrap.clone(),
            inputs: vec![self.input.clone()],
            outputs: vec![output.to_string()],
            id_field: id_field.map(str::to_string),
            settle_timeout: Duration::from_secs(2),
            ..Verification::default()
        }
        .run()
        .0
    }
}

fn a_faithful_copy_passes_and_each_tampering_fails_its_check() {
    let broker = require_broker!();
    let f = fixture(&broker.bootstrap, 30);
    let all: Vec<&InputRecord> = f.written.iter().collect();
    let faithful = f.output(&all);
    for id_field in [None, Some("id")] {
        let report = f.verify(&faithful, id_field);
        assert!(report.passed, "faithful copy ({id_field:?}):\n{report}");
    }

    // Record 4 missing, record 5 twice, records 9 and 12 (same partition) swapped.
    let mut tampered: Vec<&InputRecord> = all.clone();
    tampered.remove(4);
    tampered.insert(5, all[5]);
    let (a, b) = (
        tampered.iter().position(|r| r.id == all[9].id).expect("9"),
        tampered
            .iter()
            .position(|r| r.id == all[12].id)
            .expect("12"),
    );
    tampered.swap(a, b);
    // And one record no input has.
    let stranger = InputRecord {
        id: "id-stranger".into(),
        partition: 0,
        seq: 999,
    };
    tampered.push(&stranger);
    let output = f.output(&tampered);

    for id_field in [None, Some("id")] {
        let report = f.verify(&output, id_field);
        assert!(!report.passed, "{report}");
        assert_eq!(report.lost.count, 1, "lost ({id_field:?}):\n{report}");
        assert!(
            report.lost.examples[0].ends_with(&format!("[{}]@{}", all[4].partition, all[4].seq))
        );
        assert_eq!(
            report.duplicated.count, 1,
            "duplicated ({id_field:?}):\n{report}"
        );
        assert_eq!(
            report.unexpected.count, 1,
            "unexpected ({id_field:?}):\n{report}"
        );
        assert!(
            report.order_violations.count >= 1,
            "order ({id_field:?}):\n{report}"
        );
    }
}

/// A transactional producer for hand-made transactions.
fn transactional(bootstrap: &str) -> BaseProducer {
    let producer: BaseProducer = common::broker::client_config(bootstrap)
        .set("transactional.id", unique_name("verify-txn"))
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, record: &RawRecord) {
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for (k, v) in &record.headers {
        headers = headers.insert(rdkafka::message::Header {
            key: k,
            value: Some(v),
        });
    }
    let base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
        .partition(partition)
        .key(record.key.as_deref().unwrap_or_default())
        .payload(record.value.as_deref().unwrap_or_default())
        .headers(headers);
    producer.send(base).map_err(|(e, _)| e).expect("send");
}

fn an_output_derived_from_an_aborted_upstream_transaction_is_reported_through_the_middle_topic() {
    let broker = require_broker!();
    let f = fixture(&broker.bootstrap, 6);
    let middle = unique_name("verify-mid");
    create_topic(&f.bootstrap, &middle, 1);
    // Middle: records 0-2 committed; 3-5 aborted; 3-5 again, committed.
    let producer = transactional(&f.bootstrap);
    for (range, commit) in [(0..3, true), (3..6, false), (3..6, true)] {
        producer.begin_transaction().expect("begin");
        for r in &f.written[range] {
            send(&producer, &middle, 0, &copy_of(&f.input, r));
        }
        producer.flush(TIMEOUT).expect("flush");
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    }
    // Output: a copy of every middle record, aborted ones included (a stage reading
    // read_uncommitted would do this), with provenance pointing into the middle topic.
    let seen = common::read_topic(&f.bootstrap, &middle, common::Isolation::ReadUncommitted);
    assert_eq!(seen.len(), 9);
    let output = unique_name("verify-out");
    create_topic(&f.bootstrap, &output, 1);
    let mut writer = RawWriter::new(&f.bootstrap, &output, 1);
    for record in &seen {
        let mut copy = RawRecord::new(record.key.as_deref(), Some(record.value.clone()));
        for (k, v) in &record.headers {
            copy = copy.header(
                k,
                &String::from_utf8_lossy(v.as_deref().unwrap_or_default()),
            );
        }
        copy = copy
            .header(SOURCE_TOPIC, &middle)
            .header(SOURCE_PARTITION, "0")
            .header(SOURCE_OFFSET, &record.offset.to_string());
        writer.write(0, copy);
    }
    writer.flush();

    let report = Verification {
        bootstrap: f.bootstrap.clone(),
        inputs: vec![f.input.clone()],
        through: vec![middle.clone()],
        outputs: vec![output.clone()],
        settle_timeout: Duration::from_secs(2),
        ..Verification::default()
    }
    .run()
    .0;
    assert_eq!(report.aborted_visible.count, 3, "{report}");
    assert!(
        report.aborted_visible.examples[0].contains(&middle),
        "{report}"
    );
    assert_eq!(
        (report.lost.count, report.duplicated.count),
        (0, 0),
        "{report}"
    );

    // Without following the middle topic, the nearest hop is an unknown topic: still a failure.
    let report = f.verify(&output, None);
    assert_eq!(report.unexpected.count, 9, "{report}");
}

fn an_open_transaction_is_reported_hanging_until_it_ends() {
    let broker = require_broker!();
    let f = fixture(&broker.bootstrap, 6);
    let all: Vec<&InputRecord> = f.written.iter().collect();
    let output = f.output(&all);
    let producer = transactional(&f.bootstrap);
    producer.begin_transaction().expect("begin");
    send(&producer, &output, 1, &copy_of(&f.input, all[1]));
    producer.flush(TIMEOUT).expect("flush");

    let report = f.verify(&output, None);
    assert_eq!(report.hanging_transactions.count, 1, "{report}");
    assert!(
        report.hanging_transactions.examples[0].contains("[1]"),
        "{report}"
    );
    assert!(
        report.duplicated.ok(),
        "the open record is not read_committed: {report}"
    );

    producer.abort_transaction(TIMEOUT).expect("abort");
    let report = f.verify(&output, None);
    assert!(report.passed, "{report}");
    assert_eq!(report.aborted_records, 1, "{report}");
}

fn a_group_behind_the_end_of_its_input_is_reported() {
    let broker = require_broker!();
    let f = fixture(&broker.bootstrap, 9);
    let all: Vec<&InputRecord> = f.written.iter().collect();
    let output = f.output(&all);
    let group = unique_name("verify-group");
    let consumer: BaseConsumer = common::broker::client_config(&f.bootstrap)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let commit = |offsets: [i64; 3]| {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in (0..).zip(offsets) {
            tpl.add_partition_offset(&f.input, p, Offset::Offset(o))
                .expect("offset");
        }
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    };
    commit([3, 1, 3]);
    let verify = || {
        Verification {
            bootstrap: f.bootstrap.clone(),
            inputs: vec![f.input.clone()],
            outputs: vec![output.clone()],
            groups: vec![group.clone()],
            settle_timeout: Duration::from_secs(2),
            ..Verification::default()
        }
        .run()
        .0
    };
    let report = verify();
    assert_eq!(report.group_lag.count, 1, "{report}");
    assert!(
        report.group_lag.examples[0].contains("2 records left"),
        "{report}"
    );
    commit([3, 3, 3]);
    let report = verify();
    assert!(report.passed, "{report}");
}

trials! {
    a_faithful_copy_passes_and_each_tampering_fails_its_check => [Broker],
    an_output_derived_from_an_aborted_upstream_transaction_is_reported_through_the_middle_topic => [Broker],
    an_open_transaction_is_reported_hanging_until_it_ends => [Broker],
    a_group_behind_the_end_of_its_input_is_reported => [Broker],
}
