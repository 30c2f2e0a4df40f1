//! A scenario: a pipeline (one stage, or two in a chain), an input fed at a steady rate, a
//! schedule of faults, and what the verifier must say at the end.
//!
//! The run: create fresh topics; start the feeder, a live read_committed tail of the final
//! output and the stage instances; inject each fault when its trigger is reached (a share of
//! the input committed, or a time since the start), supervising the instances meanwhile; once
//! the input is written, heal everything (brokers back, zombies thawed, at least one instance
//! per stage), wait until every group has drained its input, stop the instances with SIGTERM,
//! and run `kstage verify`. The live tail's sightings must all be in the settled output.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::cluster::{create_topic_replicated, Cluster};
use super::faults::{Chaos, Fault, Target};
use super::feed::{drained, Feeder, Progress};
use super::fleet::Fleet;
use super::verifier::Verification;
use super::{record, seed, Outcome};
use crate::common::broker::unique_name;
use crate::common::read::{read_topic, seen_but_not_settled, Isolation, LiveReader};
use crate::common::{InputWriter, StageSpec};

/// `transaction.timeout.ms` of every stage in the scenarios: 10 s, or
/// `KSTAGE_CHAOS_TRANSACTION_TIMEOUT` seconds.
pub fn transaction_timeout() -> Duration {
    let secs = std::env::var("KSTAGE_CHAOS_TRANSACTION_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}
/// How long the pipeline gets to drain after the last fault is healed.
const DRAIN: Duration = Duration::from_secs(300);
/// Draining gives up earlier when no group's committed offsets moved for this long (a broken
/// mode that skipped records never catches up): long enough for a hanging transaction of a
/// dead instance to be aborted by its coordinator and for the group to rebalance.
pub const DRAIN_STALL: Duration = Duration::from_secs(45);

/// When a fault is injected.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// Once stage A's group has committed this share of the input.
    Progress(f64),
    /// This long after the start.
    Elapsed(Duration),
}

/// What the verifier must conclude.
#[derive(Clone, Debug)]
pub enum Expect {
    /// Every check passes and the live tail saw nothing it should not have.
    ExactlyOnce,
    /// A negative control: at least one of these checks must fail.
    Failure(&'static [&'static str]),
}

/// One scenario (see the module docs).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub records: u64,
    /// Input records per second (0: all at once).
    pub rate: u64,
    pub input_partitions: i32,
    /// Partitions of the middle topic (if a chain) and of the output.
    pub output_partitions: i32,
    /// Two stages in series through a middle topic.
    pub chain: bool,
    /// Instances per stage at the start.
    pub instances: usize,
    /// About a third of all transactions aborted by the `kstage::inject_abort` fail point.
    pub aborts: bool,
    /// A deliberately broken mode (`KSTAGE_BROKEN_MODE`) and the stage(s) running it.
    pub broken: Option<(&'static str, Target)>,
    /// Extra `kstage run` flags of every instance.
    pub stage_args: Vec<(&'static str, String)>,
    pub steps: Vec<(Trigger, Fault)>,
    pub expect: Expect,
    /// Draining gives up when no group progressed for this long (default [`DRAIN_STALL`]).
    pub drain_stall: Duration,
    /// The seed of the run's random choices (default: [`super::seed`]).
    pub seed: Option<u64>,
    /// Unplanned exits this scenario tolerates, each named by a piece of the exit's last log
    /// line. Empty (the default): the stage is meant to survive every fault of the scenario,
    /// so any unplanned exit fails it even when the output is exactly once.
    pub tolerated_exits: Vec<&'static str>,
    /// The stages reach the brokers through Toxiproxy ([`super::proxy`]; three brokers only).
    pub proxied: bool,
}

/// The exits a broker fault may cause with the chaos harness's short transaction timeout (10 s):
/// the coordinator aborts the transaction that timed out meanwhile and bumps the epoch, so the
/// instance is fenced ("fenced", seen in CI; the same error as a takeover by another producer,
/// which must stop the instance). The README documents that it costs a restart and loses
/// nothing. Any other exit fails the run: a commit whose retries outlast the transaction timeout
/// ("kept failing for") or that blocks past the watchdog ("did not end within",
/// librdkafka#5456), both tolerated before, are now settled by a re-created producer
/// (src/engine/txn/renew.rs) without an exit.
const BROKER_FAULT_EXITS: [&str; 1] = ["fenced"];

impl Scenario {
    /// The unplanned exits this run tolerates: the scenario's own list, and
    /// [`BROKER_FAULT_EXITS`] when it kills, stops or freezes a broker.
    fn tolerated(&self) -> Vec<&'static str> {
        let broker_fault = self.steps.iter().any(|(_, fault)| {
            matches!(
                fault,
                Fault::KillBroker(_)
                    | Fault::TermBroker(_)
                    | Fault::PauseBroker(..)
                    | Fault::Network { kill: Some(_), .. }
            )
        });
        let mut tolerated = self.tolerated_exits.clone();
        if broker_fault {
            tolerated.extend(BROKER_FAULT_EXITS);
        }
        tolerated
    }

    /// A one-stage scenario with defaults: 3 → 3 partitions, two instances, no faults.
    pub fn new(name: &'static str, records: u64, rate: u64) -> Self {
        Self {
            name,
            records,
            rate,
            input_partitions: 3,
            output_partitions: 3,
            chain: false,
            instances: 2,
            aborts: false,
            broken: None,
            stage_args: Vec::new(),
            steps: Vec::new(),
            expect: Expect::ExactlyOnce,
            drain_stall: DRAIN_STALL,
            seed: None,
            tolerated_exits: Vec::new(),
            proxied: false,
        }
    }

    /// Adds a fault at a share of the input committed.
    pub fn at(mut self, progress: f64, fault: Fault) -> Self {
        self.steps.push((Trigger::Progress(progress), fault));
        self
    }

    /// Spreads `faults`, in a seeded random order, evenly over `over` since the start.
    pub fn spread(mut self, mut faults: Vec<Fault>, over: Duration, rng: &mut StdRng) -> Self {
        use rand::seq::SliceRandom;
        faults.shuffle(rng);
        let n = faults.len() as u32 + 1;
        for (i, fault) in (1..).zip(faults) {
            self.steps.push((Trigger::Elapsed(over * i / n), fault));
        }
        self
    }
}

/// Runs `scenario` against `bootstrap` (`cluster`: the three-broker cluster, if that is where).
pub fn run(scenario: &Scenario, bootstrap: &str, cluster: Option<&Cluster>) -> Outcome {
    let seed = scenario.seed.unwrap_or_else(|| seed(scenario.name));
    let started = Instant::now();
    let replication = if cluster.is_some() { 3 } else { 1 };
    let topic = |what: &str, partitions: i32| {
        let name = unique_name(what);
        create_topic_replicated(bootstrap, &name, partitions, replication);
        name
    };
    let input = topic("chaos-in", scenario.input_partitions);
    let middle = scenario
        .chain
        .then(|| topic("chaos-mid", scenario.output_partitions));
    let output = topic("chaos-out", scenario.output_partitions);

    let writer = InputWriter::new(bootstrap, &input, scenario.input_partitions);
    let feeder = Feeder::start(writer, scenario.records, scenario.rate);
    let live = LiveReader::start(bootstrap, &output, Isolation::ReadCommitted);

    let proxies = scenario.proxied.then(|| {
        cluster
            .expect("a proxied scenario needs the three-broker cluster")
            .proxies()
    });
    let stage_bootstrap = proxies
        .as_ref()
        .map_or_else(|| bootstrap.to_string(), |p| p.bootstrap());
    let stage_spec = |label: &'static str, from: &str, to: &str| {
        let mut spec = StageSpec::new(
            &stage_bootstrap,
            "passthrough",
            from,
            to,
            &unique_name("app"),
        )
        .arg(
            "--transaction-timeout",
            &format!("{}s", transaction_timeout().as_secs()),
        )
        .arg("--kafka", "heartbeat.interval.ms=1000")
        .arg("--metrics-address", "off");
        for (flag, value) in &scenario.stage_args {
            spec = spec.arg(flag, value);
        }
        if let Some((mode, target)) = scenario.broken {
            let hit = matches!(
                (target, label),
                (Target::Any, _) | (Target::A, "A") | (Target::B, "B")
            );
            if hit {
                spec = spec.env("KSTAGE_BROKEN_MODE", mode);
            }
        }
        spec
    };
    let failpoints = scenario
        .aborts
        .then(|| "kstage::inject_abort=33%return".to_string());
    let first_output = middle.as_deref().unwrap_or(&output);
    let mut fleets = vec![Fleet::start(
        "A",
        stage_spec("A", &input, first_output),
        scenario.instances,
        failpoints.clone(),
    )];
    if let Some(middle) = &middle {
        fleets.push(Fleet::start(
            "B",
            stage_spec("B", middle, &output),
            scenario.instances,
            failpoints,
        ));
    }
    let group_a = fleets[0].group().to_string();
    let mut chaos = Chaos {
        fleets,
        cluster,
        proxies: proxies.as_ref(),
        rng: StdRng::seed_from_u64(seed),
        counts: Default::default(),
        log: Vec::new(),
        zombies: Vec::new(),
        transaction_timeout: transaction_timeout(),
        started,
    };

    let mut progress = Progress::new(bootstrap, &group_a, &input);
    let mut skipped = 0;
    for (trigger, fault) in &scenario.steps {
        loop {
            chaos.supervise();
            let reached = match *trigger {
                Trigger::Progress(share) => {
                    progress.get() as f64 >= share * scenario.records as f64
                }
                Trigger::Elapsed(after) => started.elapsed() >= after,
            };
            if reached {
                chaos.inject(fault);
                break;
            }
            if feeder.is_done() && progress.get() as u64 >= scenario.records {
                eprintln!("fault {fault:?} skipped: the input was consumed before its trigger");
                skipped += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    while !feeder.is_done() {
        chaos.wait(Duration::from_millis(500));
    }
    let writer = feeder.finish();
    let written = writer.written.len() as u64;
    let faults_done = started.elapsed();

    // Heal and drain.
    if let Some(cluster) = cluster {
        cluster.heal();
    }
    if let Some(proxies) = chaos.proxies {
        proxies.heal();
    }
    for fleet in &mut chaos.fleets {
        fleet.heal(1);
    }
    let mut groups = vec![(group_a.clone(), input.clone())];
    if let (Some(middle), Some(b)) = (&middle, chaos.fleets.get(1)) {
        groups.push((b.group().to_string(), middle.clone()));
    }
    let drain_deadline = Instant::now() + DRAIN;
    let mut probes: Vec<Progress> = groups
        .iter()
        .map(|(g, t)| Progress::new(bootstrap, g, t))
        .collect();
    let (mut last, mut last_change) = (Vec::new(), Instant::now());
    let mut drained_all = false;
    while Instant::now() < drain_deadline && last_change.elapsed() < scenario.drain_stall {
        chaos.wait(Duration::from_millis(500));
        if groups.iter().all(|(g, t)| drained(bootstrap, g, t)) {
            drained_all = true;
            break;
        }
        let now: Vec<i64> = probes.iter_mut().map(Progress::get).collect();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    if !drained_all {
        let diagnostics: Vec<String> = chaos.fleets.iter_mut().map(Fleet::diagnostics).collect();
        eprintln!(
            "the pipeline did not drain (deadline {DRAIN:?}, or no progress for {:?}):\n{}",
            scenario.drain_stall,
            diagnostics.join("\n")
        );
    }
    let drain_time = started.elapsed() - faults_done;
    for fleet in &mut chaos.fleets {
        fleet.stop_all();
    }
    // Network scenarios: no transaction of the stages left open, by Kafka's own
    // TransactionsCommand (a late EndTxn(abort) could leave one hanging); an instance killed
    // meanwhile may leave one until its coordinator aborts it, so wait for that first.
    let mut open_transactions = Vec::new();
    if let (true, Some(cluster)) = (scenario.proxied, cluster) {
        let apps: Vec<String> = chaos.fleets.iter().map(|f| f.group().to_string()).collect();
        let until = Instant::now() + transaction_timeout() * 3;
        loop {
            open_transactions = apps
                .iter()
                .flat_map(|app| cluster.open_transactions(&format!("{app}-")))
                .collect();
            if open_transactions.is_empty() || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let live_unsettled = seen_but_not_settled(
        &live.stop(),
        &read_topic(bootstrap, &output, Isolation::ReadCommitted),
    );

    let verification = Verification {
        bootstrap: bootstrap.to_string(),
        inputs: vec![input.clone()],
        through: middle.iter().cloned().collect(),
        outputs: vec![output.clone()],
        groups: groups.iter().map(|(g, t)| format!("{g}={t}")).collect(),
        id_field: None,
        settle_timeout: transaction_timeout() * 3,
    };
    let (report, verify_time) = verification.run();
    let outcome = Outcome {
        scenario: scenario.name.to_string(),
        seed,
        brokers: if cluster.is_some() { 3 } else { 1 },
        records: written,
        chain: scenario.chain,
        expect: scenario.expect.clone(),
        faults: chaos.counts.clone(),
        fault_log: chaos.log.clone(),
        skipped_faults: skipped,
        zombies: chaos.zombies.clone(),
        tolerated_exits: scenario.tolerated(),
        unplanned_exits: chaos
            .fleets
            .iter()
            .flat_map(|f| f.unplanned_exits.clone())
            .collect(),
        unclean_stops: chaos
            .fleets
            .iter()
            .flat_map(|f| f.unclean_stops.clone())
            .collect(),
        recreations: chaos.fleets.iter().map(|f| f.recreations).sum(),
        open_transactions,
        drained: drained_all,
        live_unsettled,
        run_time: started.elapsed(),
        drain_time,
        verify_time,
        verify_command: format!("kstage {}", verification.args().join(" ")),
        report,
    };
    record(&outcome);
    outcome
}
