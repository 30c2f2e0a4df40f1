//! The floor: Kafka's own transactions system test, on three brokers on one machine. 100,000
//! records from 2 input partitions to 3 output partitions through two stage instances while
//! each broker in turn, or every stage instance three times (at 20%, 40% and 60% of the input),
//! is bounced hard (SIGKILL) or clean (SIGTERM); plus an ordered 1 → 1 partition variant. Every
//! scenario must end with 0 lost, 0 duplicated, 0 aborted visible and no hanging transaction.
//!
//! The short CI set runs the hard broker bounces on 30,000 records; `KSTAGE_RELIABILITY=full`
//! runs all five at full size.

use crate::common;

use common::chaos::cluster::{exclusive, Cluster};
use common::chaos::faults::{Fault, Node};
use common::chaos::{full, scenario, Scenario};

/// Records of a floor scenario (the system test's 100,000; fewer in the short CI set).
fn records() -> u64 {
    if full() {
        100_000
    } else {
        30_000
    }
}

fn three_brokers(scenario: &Scenario) {
    let _serial = exclusive();
    let cluster = Cluster::three_brokers();
    let outcome = scenario::run(scenario, &cluster.bootstrap.clone(), Some(&cluster));
    outcome.assert_expected();
}

/// 2 → 3 partitions, two instances, input at 1,000 records/s so that the bounces land while
/// the input is still being written and processed.
fn floor(name: &'static str) -> Scenario {
    let mut s = Scenario::new(name, records(), 1_000);
    s.input_partitions = 2;
    s.output_partitions = 3;
    s
}

fn floor_hard_bounces_of_each_broker_in_turn() {
    let s = floor("floor: hard bounce of each broker")
        .at(0.2, Fault::KillBroker(Node::Id(1)))
        .at(0.4, Fault::KillBroker(Node::Id(2)))
        .at(0.6, Fault::KillBroker(Node::Id(3)));
    three_brokers(&s);
}

fn floor_clean_bounces_of_each_broker_in_turn() {
    let s = floor("floor: clean bounce of each broker")
        .at(0.2, Fault::TermBroker(Node::Id(1)))
        .at(0.4, Fault::TermBroker(Node::Id(2)))
        .at(0.6, Fault::TermBroker(Node::Id(3)));
    three_brokers(&s);
}

fn floor_hard_bounces_of_every_stage_instance_three_times() {
    let s = floor("floor: hard bounce of the stage instances x3")
        .at(0.2, Fault::BounceStages { hard: true })
        .at(0.4, Fault::BounceStages { hard: true })
        .at(0.6, Fault::BounceStages { hard: true });
    three_brokers(&s);
}

fn floor_clean_bounces_of_every_stage_instance_three_times() {
    let s = floor("floor: clean bounce of the stage instances x3")
        .at(0.2, Fault::BounceStages { hard: false })
        .at(0.4, Fault::BounceStages { hard: false })
        .at(0.6, Fault::BounceStages { hard: false });
    three_brokers(&s);
}

fn floor_ordered_one_partition_to_one_keeps_order_through_hard_bounces() {
    let mut s = floor("floor: ordered 1 -> 1 partition, hard bounces")
        .at(0.15, Fault::KillBroker(Node::Id(1)))
        .at(0.3, Fault::BounceStages { hard: true })
        .at(0.45, Fault::KillBroker(Node::Id(2)))
        .at(0.6, Fault::BounceStages { hard: true })
        .at(0.75, Fault::KillBroker(Node::Id(3)));
    s.input_partitions = 1;
    s.output_partitions = 1;
    three_brokers(&s);
}

trials! {
    floor_hard_bounces_of_each_broker_in_turn => [ThreeBrokers],
    floor_clean_bounces_of_each_broker_in_turn => [ThreeBrokers, FullRun],
    floor_hard_bounces_of_every_stage_instance_three_times => [ThreeBrokers, FullRun],
    floor_clean_bounces_of_every_stage_instance_three_times => [ThreeBrokers, FullRun],
    floor_ordered_one_partition_to_one_keeps_order_through_hard_bounces => [ThreeBrokers, FullRun],
}
