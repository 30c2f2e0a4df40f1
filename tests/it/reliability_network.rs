//! Network faults on the wire, through Toxiproxy between the stages and the three brokers
//! (`common::chaos::proxy`): the class of fault that delays a transactional request instead of
//! killing a process, where a late EndTxn can land on a later transaction of the same epoch
//! (KAFKA-17754; the engine re-creates its producer to fence it, src/engine/txn/renew.rs).
//!
//! Each scenario feeds 20,000 records at 1,000/s through two instances with the chaos harness's
//! 10 s transaction timeout, injects the fault at 20 % of the input, heals it, drains, and ends
//! with `kstage verify` (exactly once, nothing aborted visible, no torn or hanging transaction)
//! and no unplanned exit beyond those listed. The short CI set runs the latency scenario (the
//! in-doubt and hung-call paths are in CI through `renew::`, deterministically);
//! `KSTAGE_RELIABILITY=full` (scripts/reliability.sh) runs all four and the negative control.

use std::time::Duration;

use crate::common;

use common::chaos::cluster::{exclusive, Cluster};
use common::chaos::faults::{Fault, Node};
use common::chaos::proxy::Toxic;
use common::chaos::{scenario, Scenario};

fn proxied(name: &'static str) -> Scenario {
    let mut s = Scenario::new(name, 20_000, 1_000);
    s.proxied = true;
    s
}

fn run(scenario: &Scenario) {
    let _serial = exclusive();
    let cluster = Cluster::three_brokers();
    let outcome = scenario::run(scenario, &cluster.bootstrap.clone(), Some(&cluster));
    outcome.assert_expected();
}

/// Latency with jitter on the transaction coordinator's link and a producer socket timeout
/// below the slowest round trips: EndTxn, AddOffsetsToTxn and TxnOffsetCommit time out and are
/// resent, so the engine must re-create its producer before the next transaction.
fn network_latency_and_jitter_on_the_coordinators_link_resend_transactional_requests() {
    let mut s = proxied("network: latency + jitter on the coordinator's link").at(
        0.2,
        Fault::Network {
            node: Node::TxnCoordinator,
            toxic: Toxic::Latency {
                latency_ms: 400,
                jitter_ms: 400,
            },
            hold: Duration::from_secs(15),
            kill: None,
        },
    );
    s.stage_args
        .push(("--producer-property", "socket.timeout.ms=1000".into()));
    run(&s);
}

/// Connections to the transaction coordinator reset 200 ms after they open, for 10 s: requests
/// in flight (EndTxn among them) are cut in the middle.
fn network_connection_resets_on_the_coordinators_link_cut_requests_in_flight() {
    let s = proxied("network: connection resets on the coordinator's link").at(
        0.2,
        Fault::Network {
            node: Node::TxnCoordinator,
            toxic: Toxic::ResetPeer { after_ms: 200 },
            hold: Duration::from_secs(10),
            kill: None,
        },
    );
    run(&s);
}

/// The coordinator's responses stop for 15 s (longer than the 10 s transaction timeout) while
/// its requests still arrive: EndTxn is processed but never answered, so the commit's outcome is
/// unknown; the coordinator also aborts the transaction that timed out.
fn network_one_way_stall_longer_than_the_transaction_timeout() {
    let mut s = proxied("network: one-way stall past the transaction timeout").at(
        0.2,
        Fault::Network {
            node: Node::TxnCoordinator,
            toxic: Toxic::Stall { after_ms: 0 },
            hold: Duration::from_secs(15),
            kill: None,
        },
    );
    // The coordinator aborts the transaction that outlived its timeout and bumps the epoch: the
    // next request of the instance is fenced (the same error as a takeover, which must stop).
    s.tolerated_exits = vec!["fenced"];
    run(&s);
}

/// Every link throttled to 256 KB/s while the transaction coordinator is killed and restarted:
/// a fail-over whose metadata, coordinator look-ups and re-sends all crawl.
fn network_bandwidth_limited_links_during_a_broker_fail_over() {
    let s = proxied("network: slow links during a coordinator fail-over").at(
        0.2,
        Fault::Network {
            node: Node::Random,
            toxic: Toxic::Bandwidth { kb_per_s: 256 },
            hold: Duration::from_secs(15),
            kill: Some(Node::TxnCoordinator),
        },
    );
    run(&s);
}

/// The negative control: the same network faults with producer re-creation switched off
/// (`KSTAGE_BROKEN_MODE=no_recreate`). The run must fall short of exactly-once-without-exits:
/// a verifier check fails (a late EndTxn landed on a later transaction) or an instance gives up
/// where the engine would have re-created its producer. Prints what each fault did.
fn negative_control_without_recreation_network_faults_are_not_ridden_out() {
    let faults = [
        (
            "network (no_recreate): one-way stall past the transaction timeout",
            Toxic::Stall { after_ms: 0 },
            15,
        ),
        (
            "network (no_recreate): connection resets on the coordinator's link",
            Toxic::ResetPeer { after_ms: 200 },
            10,
        ),
        (
            "network (no_recreate): latency + jitter on the coordinator's link",
            Toxic::Latency {
                latency_ms: 400,
                jitter_ms: 400,
            },
            15,
        ),
    ];
    let mut caught = Vec::new();
    for (name, toxic, hold) in faults {
        let mut s = proxied(name).at(
            0.2,
            Fault::Network {
                node: Node::TxnCoordinator,
                toxic,
                hold: Duration::from_secs(hold),
                kill: None,
            },
        );
        s.broken = Some(("no_recreate", common::chaos::faults::Target::Any));
        if matches!(toxic, Toxic::Latency { .. }) {
            s.stage_args
                .push(("--producer-property", "socket.timeout.ms=1000".into()));
        }
        let _serial = exclusive();
        let cluster = Cluster::three_brokers();
        let outcome = scenario::run(&s, &cluster.bootstrap.clone(), Some(&cluster));
        eprintln!("{}", outcome.summary());
        if !outcome.as_expected() {
            caught.push(name);
        }
    }
    assert!(
        !caught.is_empty(),
        "without producer re-creation every network scenario was still ridden out exactly once \
         without an exit: this control could not tell"
    );
    eprintln!("caught without re-creation: {caught:?}");
}

trials! {
    negative_control_without_recreation_network_faults_are_not_ridden_out => [ThreeBrokers, FullRun],
    network_latency_and_jitter_on_the_coordinators_link_resend_transactional_requests => [ThreeBrokers],
    network_connection_resets_on_the_coordinators_link_cut_requests_in_flight => [ThreeBrokers, FullRun],
    network_one_way_stall_longer_than_the_transaction_timeout => [ThreeBrokers, FullRun],
    network_bandwidth_limited_links_during_a_broker_fail_over => [ThreeBrokers, FullRun],
}
