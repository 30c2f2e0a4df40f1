//! Beyond the floor, on three brokers: coordinator kills and broker pauses, a two-stage chain
//! with faults in both stages, the soak (at least 1,000,000 records through the chain with at
//! least 20 stage kills, 3 broker kills and 5 rebalances in one run).
//! All of them run only with `KSTAGE_RELIABILITY=full` (`scripts/reliability.sh`).
//!
//! `KSTAGE_SOAK_RECORDS` and `KSTAGE_SOAK_RATE` resize the soak (defaults 1,000,000 records at
//! 2,500 records/s).

use crate::common;

use std::time::Duration;

use common::chaos::cluster::{exclusive, Cluster};
use common::chaos::faults::{Fault, Node, Target};
use common::chaos::{scenario, seed, Scenario};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn three_brokers(scenario: &Scenario) {
    let _serial = exclusive();
    let cluster = Cluster::three_brokers();
    let outcome = scenario::run(scenario, &cluster.bootstrap.clone(), Some(&cluster));
    outcome.assert_expected();
}

fn coordinator_kills_and_a_paused_broker_keep_exactly_once() {
    let mut s = Scenario::new("3 brokers: coordinator kills, broker pause", 60_000, 1_000)
        .at(0.15, Fault::KillBroker(Node::TxnCoordinator))
        .at(0.4, Fault::KillBroker(Node::GroupCoordinator))
        .at(
            0.65,
            Fault::PauseBroker(Node::Random, Duration::from_secs(15)),
        );
    s.aborts = true;
    three_brokers(&s);
}

fn a_chain_of_two_stages_stays_exactly_once_end_to_end_with_faults_in_both() {
    let mut s = Scenario::new("3 brokers: chain A -> B, faults in both", 60_000, 500)
        .at(0.1, Fault::KillStage(Target::A))
        .at(0.2, Fault::KillStage(Target::B))
        .at(0.3, Fault::CrashAt(Target::B, "before_commit"))
        .at(0.4, Fault::KillBroker(Node::TxnCoordinator))
        .at(0.5, Fault::ScaleOut(Target::B))
        .at(0.6, Fault::Zombie(Target::A))
        .at(0.7, Fault::ScaleIn(Target::B))
        .at(0.8, Fault::CrashAt(Target::A, "after_send_offsets"));
    s.chain = true;
    s.aborts = true;
    three_brokers(&s);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn soak_a_million_records_through_the_chain_with_kills_broker_faults_and_rebalances() {
    let records = env_u64("KSTAGE_SOAK_RECORDS", 1_000_000);
    let rate = env_u64("KSTAGE_SOAK_RATE", 2_500);
    let mut faults = Vec::new();
    for i in 0..22 {
        let target = if i % 2 == 0 { Target::A } else { Target::B };
        faults.push(Fault::KillStage(target));
    }
    for (t, point) in [
        (Target::A, "after_produce"),
        (Target::B, "after_send_offsets"),
        (Target::A, "before_commit"),
        (Target::B, "after_commit"),
    ] {
        faults.push(Fault::CrashAt(t, point));
    }
    faults.push(Fault::TermStage(Target::Any));
    faults.push(Fault::TermStage(Target::Any));
    faults.push(Fault::KillBroker(Node::TxnCoordinator));
    faults.push(Fault::KillBroker(Node::GroupCoordinator));
    faults.push(Fault::KillBroker(Node::Random));
    faults.push(Fault::PauseBroker(Node::Random, Duration::from_secs(10)));
    for target in [Target::A, Target::B, Target::A] {
        faults.push(Fault::ScaleOut(target));
        faults.push(Fault::ScaleIn(target));
    }
    faults.push(Fault::KillStageForGood(Target::B));
    faults.push(Fault::ScaleOut(Target::B));
    faults.push(Fault::Zombie(Target::Any));
    // The faults spread over the time the input takes to write, minus a margin.
    let over = Duration::from_secs(records / rate.max(1)).mul_f64(0.9);
    let seed = seed("soak");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s =
        Scenario::new("soak: chain, 1M records", records, rate).spread(faults, over, &mut rng);
    s.seed = Some(seed);
    s.chain = true;
    s.aborts = true;
    let _serial = exclusive();
    let cluster = Cluster::three_brokers();
    let outcome = scenario::run(&s, &cluster.bootstrap.clone(), Some(&cluster));
    outcome.assert_expected();
    let kills = outcome.faults_of("SIGKILL") + outcome.faults_of("crash at");
    assert!(
        kills >= 20,
        "only {kills} stage kills: {:?}",
        outcome.faults
    );
    assert!(
        outcome.faults_of("broker kill") >= 3,
        "{:?}",
        outcome.faults
    );
    assert!(outcome.faults_of("rebalance") >= 5, "{:?}", outcome.faults);
}

trials! {
    coordinator_kills_and_a_paused_broker_keep_exactly_once => [ThreeBrokers, FullRun],
    a_chain_of_two_stages_stays_exactly_once_end_to_end_with_faults_in_both => [ThreeBrokers, FullRun],
    soak_a_million_records_through_the_chain_with_kills_broker_faults_and_rebalances => [ThreeBrokers, FullRun],
}
