//! The faults a scenario injects, and how each is healed.
//!
//! | fault | what happens | healed by |
//! |---|---|---|
//! | `KillStage` | SIGKILL of one instance | restart at once, same instance id |
//! | `TermStage` | SIGTERM (clean shutdown, exit 0 expected) | restart at once |
//! | `BounceStages` | every instance of every stage in turn, SIGKILL or SIGTERM | restart at once |
//! | `CrashAt` | clean restart with a fail point armed in the commit path; the process aborts there after 1-8 transactions | supervision restarts it unarmed |
//! | `Zombie` | SIGSTOP past `transaction.timeout.ms` while another instance takes over | SIGCONT; it must be fenced |
//! | `KillStageForGood` | SIGKILL, no restart (hard scale-in: its transaction hangs until the coordinator aborts it) | a later scale-out |
//! | `ScaleOut` / `ScaleIn` | one more instance / SIGTERM of the newest | (rebalances) |
//! | `KillBroker` / `TermBroker` | kill -9 / SIGTERM of a node (a chosen one, or the transaction or group coordinator) | restart after a few seconds |
//! | `PauseBroker` | SIGSTOP of a node for a while | SIGCONT |
//! | `Network` | a Toxiproxy toxic on a node's link from the stages (latency, reset, one-way stall, bandwidth), optionally with a kill -9 of another node meanwhile | the toxic removed |

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngExt;

use super::cluster::Cluster;
use super::fleet::Fleet;
use super::proxy::{Proxies, Toxic};

/// How long a killed broker stays down before its restart.
pub const BROKER_DOWN: Duration = Duration::from_secs(5);
/// How long a zombie gets, after SIGCONT, to find out it was fenced and exit.
const ZOMBIE_EXIT: Duration = Duration::from_secs(30);
/// How long an instance armed with a fail point gets to reach it.
const CRASH_WITHIN: Duration = Duration::from_secs(20);

/// Which stage of the pipeline a fault hits.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The first stage (the only one without a chain).
    A,
    /// The second stage of a chain.
    B,
    /// Either, chosen at random.
    Any,
}

/// Which broker a fault hits.
#[derive(Clone, Copy, Debug)]
pub enum Node {
    /// Node 1, 2 or 3.
    Id(u32),
    /// The transaction coordinator of a random instance of stage A.
    TxnCoordinator,
    /// The group coordinator of stage A's group.
    GroupCoordinator,
    /// Any node.
    Random,
}

/// One fault (see the module docs).
#[derive(Clone, Debug)]
pub enum Fault {
    KillStage(Target),
    TermStage(Target),
    BounceStages {
        hard: bool,
    },
    CrashAt(Target, &'static str),
    Zombie(Target),
    KillStageForGood(Target),
    ScaleOut(Target),
    ScaleIn(Target),
    KillBroker(Node),
    TermBroker(Node),
    PauseBroker(Node, Duration),
    /// A toxic on `node`'s link for `hold`; with `kill`, that node is killed (kill -9) and
    /// restarted meanwhile (a fail-over over slow links).
    Network {
        node: Node,
        toxic: Toxic,
        hold: Duration,
        kill: Option<Node>,
    },
}

/// The running pipeline a fault acts on, and the record of what was done.
pub struct Chaos<'a> {
    pub fleets: Vec<Fleet>,
    pub cluster: Option<&'a Cluster>,
    /// Toxiproxy in front of the brokers (network-fault scenarios).
    pub proxies: Option<&'a Proxies>,
    pub rng: StdRng,
    /// Faults injected, by kind.
    pub counts: BTreeMap<String, u32>,
    /// Every fault with its time since the start.
    pub log: Vec<String>,
    /// What each zombie did after SIGCONT.
    pub zombies: Vec<String>,
    pub transaction_timeout: Duration,
    pub started: Instant,
}

impl Chaos<'_> {
    fn note(&mut self, kind: &str, what: String) {
        *self.counts.entry(kind.to_string()).or_default() += 1;
        let line = format!("[{:>7.1}s] {what}", self.started.elapsed().as_secs_f64());
        eprintln!("fault {line}");
        self.log.push(line);
    }

    /// Restarts instances that exited on their own.
    pub fn supervise(&mut self) {
        for fleet in &mut self.fleets {
            fleet.supervise();
        }
    }

    /// Waits `duration`, supervising.
    pub fn wait(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.supervise();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fleet(&mut self, target: Target) -> usize {
        match target {
            Target::A => 0,
            Target::B => 1.min(self.fleets.len() - 1),
            Target::Any => self.rng.random_range(0..self.fleets.len()),
        }
    }

    fn instance(&mut self, fleet: usize) -> String {
        let ids = self.fleets[fleet].ids();
        if ids.is_empty() {
            return self.fleets[fleet].scale_out();
        }
        ids[self.rng.random_range(0..ids.len())].clone()
    }

    fn node(&mut self, node: Node) -> (u32, String) {
        let cluster = self
            .cluster
            .expect("a broker fault needs the three-broker cluster");
        match node {
            Node::Id(n) => (n, format!("node {n}")),
            Node::Random => {
                let n = self.rng.random_range(1..=cluster.nodes);
                (n, format!("node {n}"))
            }
            Node::TxnCoordinator => {
                let id = self.instance(0);
                let txn = self.fleets[0].transactional_id(&id);
                let n = cluster.txn_coordinator(&txn);
                (n, format!("node {n} (transaction coordinator of {txn})"))
            }
            Node::GroupCoordinator => {
                let group = self.fleets[0].group().to_string();
                let n = cluster.group_coordinator(&group);
                (n, format!("node {n} (group coordinator of {group})"))
            }
        }
    }

    /// Injects `fault` and heals it (blocking for the fault's own duration).
    pub fn inject(&mut self, fault: &Fault) {
        match *fault {
            Fault::KillStage(t) => {
                let f = self.fleet(t);
                let id = self.instance(f);
                self.note(
                    "stage SIGKILL",
                    format!("SIGKILL {} {id}, restart", self.fleets[f].label),
                );
                self.fleets[f].kill(&id);
            }
            Fault::TermStage(t) => {
                let f = self.fleet(t);
                let id = self.instance(f);
                self.note(
                    "stage SIGTERM",
                    format!("SIGTERM {} {id}, restart", self.fleets[f].label),
                );
                self.fleets[f].term(&id);
            }
            Fault::BounceStages { hard } => {
                for f in 0..self.fleets.len() {
                    for id in self.fleets[f].ids() {
                        let label = self.fleets[f].label;
                        if hard {
                            self.note("stage SIGKILL", format!("SIGKILL {label} {id}, restart"));
                            self.fleets[f].kill(&id);
                        } else {
                            self.note("stage SIGTERM", format!("SIGTERM {label} {id}, restart"));
                            self.fleets[f].term(&id);
                        }
                        self.wait(Duration::from_secs(1));
                    }
                }
            }
            Fault::CrashAt(t, point) => {
                let f = self.fleet(t);
                let first = self.instance(f);
                let mut ids = self.fleets[f].ids();
                let start = ids.iter().position(|i| *i == first).unwrap_or(0);
                ids.rotate_left(start);
                let label = self.fleets[f].label;
                // An instance without partitions never reaches the commit path: try the next.
                let crashed = ids.iter().find(|id| {
                    let skip = self.rng.random_range(1..=8);
                    let spec = format!("kstage::{point}={skip}*off->return");
                    let line = format!(
                        "{label} {id} restarted to crash at {point} after {skip} transactions"
                    );
                    eprintln!("fault {line}");
                    self.fleets[f].arm(id, &spec);
                    self.await_crash(f, id, point)
                });
                match crashed {
                    Some(id) => self.note(
                        &format!("crash at {point}"),
                        format!("{label} {id} crashed at {point}"),
                    ),
                    None => self.note(
                        "crash point not reached",
                        format!("no {label} instance reached {point}"),
                    ),
                }
            }
            Fault::Zombie(t) => self.zombie(t),
            Fault::KillStageForGood(t) => {
                let f = self.fleet(t);
                if self.fleets[f].len() < 2 {
                    self.fleets[f].scale_out();
                }
                let id = self.instance(f);
                let label = self.fleets[f].label;
                self.note(
                    "rebalance (hard scale-in)",
                    format!("SIGKILL {label} {id} for good"),
                );
                self.fleets[f].kill_for_good(&id);
            }
            Fault::ScaleOut(t) => {
                let f = self.fleet(t);
                let id = self.fleets[f].scale_out();
                let label = self.fleets[f].label;
                self.note("rebalance (scale-out)", format!("scale out {label}: +{id}"));
            }
            Fault::ScaleIn(t) => {
                let f = self.fleet(t);
                if self.fleets[f].len() < 2 {
                    self.fleets[f].scale_out();
                }
                let label = self.fleets[f].label;
                if let Some(id) = self.fleets[f].scale_in() {
                    self.note(
                        "rebalance (scale-in)",
                        format!("scale in {label}: -{id} (SIGTERM)"),
                    );
                }
            }
            Fault::KillBroker(node) => {
                let (n, what) = self.node(node);
                self.note("broker kill -9", format!("kill -9 {what}"));
                let cluster = self.cluster.expect("cluster");
                cluster.kill(n);
                self.wait(BROKER_DOWN);
                cluster.restart(n);
            }
            Fault::TermBroker(node) => {
                let (n, what) = self.node(node);
                self.note("broker SIGTERM", format!("SIGTERM {what}"));
                let cluster = self.cluster.expect("cluster");
                cluster.term(n);
                self.wait(BROKER_DOWN);
                cluster.restart(n);
            }
            Fault::PauseBroker(node, pause) => {
                let (n, what) = self.node(node);
                self.note("broker SIGSTOP", format!("SIGSTOP {what} for {pause:?}"));
                let cluster = self.cluster.expect("cluster");
                cluster.pause(n);
                self.wait(pause);
                cluster.resume(n);
            }
            Fault::Network {
                node,
                toxic,
                hold,
                kill,
            } => {
                let proxies = self
                    .proxies
                    .expect("a network fault needs a proxied scenario");
                // Every link when the toxic goes with a fail-over: the stages' clients follow
                // the moved leaders and coordinators over slow links too.
                let nodes: Vec<(u32, String)> = match kill {
                    Some(_) => {
                        let all = self.cluster.map_or(3, |c| c.nodes);
                        (1..=all).map(|n| (n, format!("node {n}"))).collect()
                    }
                    None => vec![self.node(node)],
                };
                let names: Vec<&str> = nodes.iter().map(|(_, w)| w.as_str()).collect();
                self.note(
                    "network fault",
                    format!("{} on {} for {hold:?}", toxic.describe(), names.join(", ")),
                );
                for (n, _) in &nodes {
                    proxies.add(*n, toxic);
                }
                match kill {
                    Some(victim) => {
                        let (n, what) = self.node(victim);
                        self.note("broker kill -9", format!("kill -9 {what} over slow links"));
                        let cluster = self.cluster.expect("cluster");
                        cluster.kill(n);
                        self.wait(hold);
                        cluster.restart(n);
                    }
                    None => self.wait(hold),
                }
                proxies.heal();
            }
        }
    }

    /// Waits until the armed instance `id` has crashed at `point` (supervising the others).
    /// Waits until the armed instance `id` has crashed at `point` (supervising the others);
    /// false (and `id` restarted unarmed) if it did not get there in time.
    fn await_crash(&mut self, f: usize, id: &str, point: &str) -> bool {
        let until = Instant::now() + CRASH_WITHIN;
        let crashed = loop {
            if let Some(status) = self.fleets[f].exited(id) {
                eprintln!(
                    "fault {} {id}: crashed at {point} ({status})",
                    self.fleets[f].label
                );
                break true;
            }
            if Instant::now() > until {
                self.fleets[f].expect_exit(id, false);
                self.fleets[f].term(id);
                break false;
            }
            self.supervise_others(f);
            std::thread::sleep(Duration::from_millis(50));
        };
        self.supervise();
        crashed
    }

    fn supervise_others(&mut self, f: usize) {
        for (i, fleet) in self.fleets.iter_mut().enumerate() {
            if i != f {
                fleet.supervise();
            }
        }
    }

    /// SIGSTOP an instance past the transaction timeout while another takes its partitions,
    /// then SIGCONT it and see whether it finds out it was fenced.
    fn zombie(&mut self, t: Target) {
        let f = self.fleet(t);
        if self.fleets[f].len() < 2 {
            self.fleets[f].scale_out();
            self.wait(Duration::from_secs(3));
        }
        let id = self.instance(f);
        let label = self.fleets[f].label;
        let pause = self.transaction_timeout + Duration::from_secs(5);
        self.note(
            "zombie (SIGSTOP past the txn timeout)",
            format!("SIGSTOP {label} {id} for {pause:?}"),
        );
        self.fleets[f].freeze(&id);
        self.wait(pause);
        let log_from = self.fleets[f].stderr_len(&id);
        self.fleets[f].thaw(&id);
        let until = Instant::now() + ZOMBIE_EXIT;
        let outcome = loop {
            if let Some(status) = self.fleets[f].exited(&id) {
                break format!("{label} {id}: exited ({status}) after SIGCONT");
            }
            if Instant::now() > until {
                self.fleets[f].expect_exit(&id, false);
                break format!("{label} {id}: still running {ZOMBIE_EXIT:?} after SIGCONT");
            }
            self.supervise_others(f);
            std::thread::sleep(Duration::from_millis(100));
        };
        let outcome = format!(
            "{outcome}; log: {}",
            self.fleets[f].zombie_lines(&id, log_from)
        );
        eprintln!("zombie: {outcome}");
        self.zombies.push(outcome);
        self.supervise();
    }
}
