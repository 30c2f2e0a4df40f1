//! Reliability on one broker: exactly-once through stage crashes (SIGKILL, SIGTERM, and aborts
//! at each fail point of the commit path), random aborts, rebalances and a zombie, checked by
//! `kstage verify`; and the negative controls, deliberately broken stage modes the same harness
//! must catch; and fail-over times. Three-broker scenarios: `reliability_floor.rs` and
//! `reliability_soak.rs`.
//!
//! The short CI set runs by default; `KSTAGE_RELIABILITY=full` runs all (see
//! docs/RELIABILITY.md and `scripts/reliability.sh`).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::chaos::failover::{takeover_bound, Setup};
use common::chaos::failover_report::{broker_setting, measure_and_check};
use common::chaos::faults::{Fault, Target};
use common::chaos::fleet::Runtime;
use common::chaos::instance::StreamsApp;
use common::chaos::scenario::transaction_timeout;
use common::chaos::{scenario, Expect, Scenario};

/// A broken stage may never catch up with its input (it skipped records): stop waiting sooner.
const NEGATIVE_DRAIN_STALL: Duration = Duration::from_secs(15);

fn single_broker(scenario: &Scenario) {
    let broker = common::broker();
    let outcome = scenario::run(scenario, &broker.bootstrap, None);
    outcome.assert_expected();
}

/// The crash menu of the one-broker scenarios, at 8% steps of the input.
fn crashes(s: Scenario) -> Scenario {
    s.at(0.08, Fault::KillStage(Target::A))
        .at(0.16, Fault::CrashAt(Target::A, "after_produce"))
        .at(0.24, Fault::TermStage(Target::A))
        .at(0.32, Fault::CrashAt(Target::A, "after_send_offsets"))
        .at(0.40, Fault::ScaleOut(Target::A))
        .at(0.48, Fault::CrashAt(Target::A, "before_commit"))
        .at(0.56, Fault::KillStage(Target::A))
        .at(0.64, Fault::CrashAt(Target::A, "after_commit"))
        .at(0.72, Fault::ScaleIn(Target::A))
        .at(0.80, Fault::KillStage(Target::A))
}

fn exactly_once_through_crashes_at_every_commit_point_aborts_and_rebalances() {
    let mut s = crashes(Scenario::new(
        "1 broker: crashes, commit-path aborts, rebalances",
        40_000,
        1_000,
    ));
    s.aborts = true;
    single_broker(&s);
}

/// The same crash menu with back-to-back pipelined commits: a commit is nearly always in
/// flight, so the crashes and aborts land on it and on the held batch.
fn exactly_once_through_crashes_aborts_and_rebalances_with_back_to_back_commits() {
    let mut s = crashes(Scenario::new(
        "1 broker: back_to_back pipelined commits, crashes, aborts, rebalances",
        40_000,
        1_000,
    ));
    s.aborts = true;
    s.stage_args = back_to_back();
    single_broker(&s);
}

fn back_to_back() -> Vec<(&'static str, String)> {
    vec![
        ("--commit-policy", "back_to_back".into()),
        ("--pipelined-commits", "true".into()),
    ]
}

fn a_zombie_frozen_past_the_transaction_timeout_is_fenced_and_writes_nothing_visible() {
    let s = Scenario::new("1 broker: zombie instances", 60_000, 1_000)
        .at(0.2, Fault::Zombie(Target::A))
        .at(0.5, Fault::Zombie(Target::A));
    single_broker(&s);
}

fn negative_control_no_rewind_after_abort_is_caught_losing_records() {
    let mut s = Scenario::new("negative control: no rewind after abort", 10_000, 2_000);
    s.aborts = true;
    s.broken = Some(("no_rewind", Target::A));
    s.expect = Expect::Failure(&["lost"]);
    s.drain_stall = NEGATIVE_DRAIN_STALL;
    single_broker(&s);
}

/// The same negative control under back-to-back commits: the verifier still catches the loss.
fn negative_control_no_rewind_with_back_to_back_commits_is_caught_losing_records() {
    let mut s = Scenario::new(
        "negative control: no rewind after abort, back_to_back commits",
        10_000,
        2_000,
    );
    s.aborts = true;
    s.broken = Some(("no_rewind", Target::A));
    s.stage_args = back_to_back();
    s.expect = Expect::Failure(&["lost"]);
    s.drain_stall = NEGATIVE_DRAIN_STALL;
    single_broker(&s);
}

fn negative_control_offsets_committed_outside_the_transaction_is_caught_losing_records() {
    let mut s = crashes(Scenario::new(
        "negative control: offsets outside the transaction",
        20_000,
        1_000,
    ));
    s.aborts = true;
    s.broken = Some(("offsets_outside_txn", Target::A));
    s.expect = Expect::Failure(&["lost"]);
    s.drain_stall = NEGATIVE_DRAIN_STALL;
    single_broker(&s);
}

fn negative_control_read_uncommitted_downstream_is_caught_reading_aborted_records() {
    let mut s = Scenario::new(
        "negative control: stage B reads read_uncommitted",
        20_000,
        2_000,
    )
    .at(0.3, Fault::KillStage(Target::A))
    .at(0.6, Fault::KillStage(Target::A));
    s.chain = true;
    s.aborts = true;
    s.broken = Some(("read_uncommitted", Target::B));
    s.expect = Expect::Failure(&["aborted visible", "duplicated"]);
    s.drain_stall = NEGATIVE_DRAIN_STALL;
    single_broker(&s);
}

fn negative_control_at_least_once_is_caught_duplicating_records() {
    let mut s = Scenario::new("negative control: at_least_once delivery", 20_000, 1_000)
        .at(0.2, Fault::KillStage(Target::A))
        .at(0.4, Fault::KillStage(Target::A))
        .at(0.6, Fault::KillStage(Target::A))
        .at(0.8, Fault::KillStage(Target::A));
    s.stage_args = vec![("--delivery", "at_least_once".into())];
    s.expect = Expect::Failure(&["duplicated"]);
    s.drain_stall = NEGATIVE_DRAIN_STALL;
    single_broker(&s);
}

fn fail_over_is_within_seconds_on_restart_and_within_the_transaction_timeout_on_takeover() {
    let broker = common::broker();
    for static_membership in [false, true] {
        let setup = Setup {
            static_membership,
            ..Setup::default()
        };
        measure_and_check(&broker.bootstrap, "kstage", &setup, 3, takeover_bound());
    }
}

/// Kafka Streams (exactly_once_v2, the `PassthroughApp` of benches/kafka-streams) as the two
/// instances, without and with `group.instance.id`: restart, takeover and rolling step.
fn fail_over_of_kafka_streams_with_and_without_group_instance_id_in_the_same_harness() {
    let broker = common::broker();
    let app = Arc::new(StreamsApp::new(transaction_timeout()));
    for static_membership in [false, true] {
        let setup = Setup {
            static_membership,
            runtime: Runtime::KafkaStreams(Arc::clone(&app)),
            no_zombie: true,
            ..Setup::default()
        };
        measure_and_check(
            &broker.bootstrap,
            "kafka-streams",
            &setup,
            3,
            takeover_bound(),
        );
    }
}

/// KIP-848: the stages with `group.protocol=consumer`, static membership and not. The dead
/// member's partitions move after the broker's `group.consumer.session.timeout.ms` (45 s by
/// default; `scripts/reliability.sh` starts the broker with 6 s), which the bound adds.
fn fail_over_with_the_kip_848_consumer_protocol_stays_exactly_once() {
    let broker = common::broker();
    let session = broker_setting(&broker.bootstrap, "group.consumer.session.timeout.ms")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .expect("the broker's group.consumer.session.timeout.ms");
    for static_membership in [true, false] {
        let setup = Setup {
            static_membership,
            consumer_protocol: true,
            ..Setup::default()
        };
        measure_and_check(
            &broker.bootstrap,
            "kstage, group.protocol=consumer",
            &setup,
            3,
            takeover_bound() + session,
        );
    }
}

trials! {
    exactly_once_through_crashes_at_every_commit_point_aborts_and_rebalances => [Broker],
    a_zombie_frozen_past_the_transaction_timeout_is_fenced_and_writes_nothing_visible => [Broker, FullRun],
    negative_control_no_rewind_after_abort_is_caught_losing_records => [Broker],
    exactly_once_through_crashes_aborts_and_rebalances_with_back_to_back_commits => [Broker, FullRun],
    negative_control_no_rewind_with_back_to_back_commits_is_caught_losing_records => [Broker],
    negative_control_offsets_committed_outside_the_transaction_is_caught_losing_records => [Broker, FullRun],
    negative_control_read_uncommitted_downstream_is_caught_reading_aborted_records => [Broker, FullRun],
    negative_control_at_least_once_is_caught_duplicating_records => [Broker, FullRun],
    fail_over_is_within_seconds_on_restart_and_within_the_transaction_timeout_on_takeover => [Broker, FullRun],
    fail_over_of_kafka_streams_with_and_without_group_instance_id_in_the_same_harness => [Broker, FullRun],
    fail_over_with_the_kip_848_consumer_protocol_stays_exactly_once => [Broker, FullRun],
}
