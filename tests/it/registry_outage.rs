//! The schema registry as a dependency that fails: unreachable at start-up, or gone in the middle
//! of a run. Neither is the records' fault: the stage exits 1 with a clear message, dead-letters
//! nothing for it, and a restart once the registry is back accounts for every record exactly
//! once. A pause shorter than `--schema-registry-unavailable-timeout` is ridden out.
//!
//! The mid-run tests start a private registry (`scripts/registry.sh` on a free port) and pause it
//! with SIGSTOP: Apicurio keeps schemas in memory, so a restarted one would have forgotten them.

use crate::common;

use std::collections::BTreeSet;

use common::ledger::{copies, Destination, Expect, Ledger};
use common::mix::{bad_kinds, mix, Encoding};
use common::orders::{order, OrderV3};
use common::orders_stage::{stop_cleanly, wait_exit_code, OrdersPipeline, ValueFormat};
use common::raw::{Coordinates, RawRecord, RawWriter};
use common::read::{end_offsets, Isolation};
use common::registry::{avro_codecs, OwnRegistry};
use common::values::avro_values;
use common::PATIENCE;
use kstage::codec::Part;

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("local address").port()
}

fn registry_down_at_start_exits_1_and_writes_nothing() {
    let broker = require_broker!();
    let pipeline = OrdersPipeline::new(&broker, 2);
    let mut writer = pipeline.writer();
    let mut ledger = Ledger::new(pipeline.input());
    let records = (0..10)
        .map(|n| {
            (
                RawRecord::new(Some(&format!("k{n}")), Some(vec![0, 0, 0, 0, 1, 2, b'x'])),
                Expect::Output,
            )
        })
        .collect();
    pipeline.write(&mut writer, &mut ledger, records);
    let url = format!("http://127.0.0.1:{}/apis/ccompat/v7", dead_port());
    let mut stage = pipeline
        .dead_letter_stage(ValueFormat::Avro, Some(&url))
        .arg("--schema-registry-unavailable-timeout", "5s")
        .spawn();
    let code = wait_exit_code(&mut stage, PATIENCE);
    if code != Some(1) {
        stage.fail(&format!(
            "an unreachable registry at start should exit 1, got {code:?}"
        ));
    }
    if !stage.stderr().contains("schema registry is not usable") {
        stage.fail("the error does not say the schema registry is not usable");
    }
    for topic in [pipeline.output(), &pipeline.invalid, &pipeline.dead_letters] {
        let ends = end_offsets(&broker.bootstrap, topic, Isolation::ReadUncommitted);
        assert!(
            ends.iter().all(|e| *e == 0),
            "{topic} holds records: {ends:?}"
        );
    }
    assert!(
        pipeline
            .group_offsets(true)
            .committed()
            .iter()
            .all(Option::is_none),
        "offsets were committed"
    );
}

/// A stage over an `orders-avro` pipeline whose registry the test owns: the first input (a mix
/// with every bad kind) is processed, and records of a writer schema the stage has not met yet are
/// ready to be written while the registry is paused.
struct Outage {
    registry: OwnRegistry,
    pipeline: OrdersPipeline,
    codecs: kstage::codec::Codecs,
    ledger: Ledger,
    writer: RawWriter,
    /// Orders in a newer writer schema (registered now, so the stage must fetch it by id).
    newer: Vec<(RawRecord, Expect)>,
}

impl Outage {
    fn new(broker: &common::Broker, tag: &str) -> Self {
        let registry = OwnRegistry::start();
        let pipeline = OrdersPipeline::new(broker, 2);
        let topics = [
            pipeline.input(),
            pipeline.output(),
            pipeline.invalid.as_str(),
        ];
        let codecs = avro_codecs(&registry.url, &topics);
        let mut ledger = Ledger::new(pipeline.input());
        let mut writer = pipeline.writer();
        let encoding = Encoding::Avro {
            codecs: &codecs,
            topic: pipeline.input(),
        };
        let first = mix(&encoding, tag, bad_kinds(&encoding), 3);
        pipeline.write(&mut writer, &mut ledger, first);
        let v3_codecs = avro_codecs(&registry.url, &[pipeline.input()]);
        let newer = (0..6)
            .map(|n| {
                let base = order(&format!("{tag}-v3-{n}"), 1, 2, 700, "web");
                let v3 = OrderV3 {
                    id: base.id.clone(),
                    customer: base.customer,
                    currency: base.currency,
                    items: base.items,
                    channel: base.channel,
                    coupon: "NEW".into(),
                };
                let value = v3_codecs
                    .encode(pipeline.input(), Part::Value, &v3)
                    .expect("encode a v3 order");
                (RawRecord::new(Some(&base.id), Some(value)), Expect::Output)
            })
            .collect();
        Self {
            registry,
            pipeline,
            codecs,
            ledger,
            writer,
            newer,
        }
    }

    /// The dead-letter stage with the registry retry budget `unavailable_timeout`, below
    /// `transaction_timeout`.
    fn spec(&self, unavailable_timeout: &str, transaction_timeout: &str) -> common::StageSpec {
        self.pipeline
            .dead_letter_stage(ValueFormat::Avro, Some(&self.registry.url))
            .arg("--schema-registry-unavailable-timeout", unavailable_timeout)
            .arg("--transaction-timeout", transaction_timeout)
    }

    /// Starts the stage and waits until it has processed the first input.
    fn start_and_drain(&self, spec: &common::StageSpec) -> common::Stage {
        let mut stage = spec.spawn();
        self.pipeline
            .base
            .wait_drained(&mut stage, &self.writer.end_offsets());
        let dead = self.pipeline.read_all(Isolation::ReadCommitted)[2].len();
        assert_eq!(
            dead,
            self.ledger.count_bad(),
            "the first input's bad records are dead-lettered"
        );
        stage
    }

    /// Writes the newer-schema records; returns where they landed.
    fn write_newer(&mut self) -> BTreeSet<Coordinates> {
        let newer = std::mem::take(&mut self.newer);
        let places = self
            .writer
            .write_all(newer.iter().map(|(r, _)| r.clone()).collect());
        self.writer.flush();
        for (at, (record, expect)) in places.iter().zip(newer) {
            self.ledger.add(*at, record, expect);
        }
        places.into_iter().collect()
    }

    /// Every record exactly once (read_committed); only truly bad ones dead-lettered.
    fn assert_accounted(&self, context: &str) {
        let check = avro_values(&self.codecs, &self.pipeline);
        let accounting = self
            .pipeline
            .account(&self.ledger, Isolation::ReadCommitted, &check);
        accounting.assert_exactly_once(context);
        assert_eq!(
            accounting.totals[&Destination::DeadLetter],
            self.ledger.count_bad()
        );
    }
}

fn registry_outage_mid_run_stops_the_stage_without_dead_lettering() {
    let broker = require_broker!();
    // Skips without a registry like the other Avro tests, though it starts its own.
    let _shared = require_registry!();
    let mut outage = Outage::new(&broker, "ro");
    let spec = outage.spec("5s", "30s");
    let mut stage = outage.start_and_drain(&spec);

    outage.registry.pause();
    let newer = outage.write_newer();
    let code = wait_exit_code(&mut stage, PATIENCE);
    outage.registry.resume();
    if code != Some(1) {
        stage.fail(&format!(
            "a registry outage past the timeout should exit 1, got {code:?}"
        ));
    }
    if !stage.stderr().contains("did not answer") {
        stage.fail("the error does not say the registry did not answer");
    }
    // Nothing was dead-lettered for the outage, not even in an aborted transaction.
    let dead = outage.pipeline.read_all(Isolation::ReadUncommitted)[2].clone();
    let wrongly: Vec<_> = copies(&dead)
        .into_keys()
        .filter(|at| newer.contains(at))
        .collect();
    assert!(
        wrongly.is_empty(),
        "records dead-lettered for the outage: {wrongly:?}"
    );

    // Back, and restarted: every record exactly once.
    assert!(
        common::wait_until(PATIENCE, || outage.registry.answers()),
        "the registry did not come back"
    );
    outage
        .pipeline
        .run_to_end(&spec, &outage.writer.end_offsets());
    outage.assert_accounted("after the registry outage and a restart (read_committed)");
}

fn registry_pause_shorter_than_the_timeout_is_ridden_out() {
    let broker = require_broker!();
    let _shared = require_registry!();
    let mut outage = Outage::new(&broker, "rb");
    // A request timeout of 10 s and a retry budget of 60 s: a pause that outlasts one request
    // (and so is certainly met) but not the budget is only a delay.
    let spec = outage.spec("60s", "90s");
    let mut stage = outage.start_and_drain(&spec);

    outage.registry.pause();
    outage.write_newer();
    // The stage has met a newer record and is waiting on the paused registry once it says so
    // (its request times out after 10 s and is retried): only then can "nothing committed" fail.
    stage.wait_for_stderr(PATIENCE, "The schema registry does not answer; retrying.");
    assert!(
        stage.try_exit().is_none(),
        "the stage exited during a short registry pause"
    );
    // Without the registry the newer records cannot have been decoded, let alone committed.
    let ends = outage.writer.end_offsets();
    assert!(
        !outage.pipeline.group_offsets(false).caught_up(&ends),
        "the stage committed records of an unknown schema while the registry was paused"
    );
    outage.registry.resume();
    outage
        .pipeline
        .base
        .wait_drained(&mut stage, &outage.writer.end_offsets());
    stop_cleanly(&mut stage);
    outage.assert_accounted("after a short registry pause (read_committed)");
}

trials! {
    registry_down_at_start_exits_1_and_writes_nothing => [Broker],
    registry_outage_mid_run_stops_the_stage_without_dead_lettering => [Broker, Registry, OwnBrokers],
    registry_pause_shorter_than_the_timeout_is_ridden_out => [Broker, Registry, OwnBrokers],
}
