//! Fail-over times: how long the partitions of a dead (or frozen) instance go without progress.
//!
//! Input is fed at a steady rate, so every partition always has something to commit. A
//! measurement waits until instance `a1` owns a partition in a stable group (the group
//! coordinator says so), snapshots the group's committed offsets and the output's last stable
//! offsets, hits `a1`, and times two things:
//!
//! * **input resumes**: every input partition's committed offset has moved past its snapshot
//!   (the survivor's at once, the victim's once someone processes them again);
//! * **output readable**: every output partition's LSO has moved past its snapshot. A dead
//!   instance's open transaction holds the LSO of every partition it wrote to, so read_committed
//!   readers downstream see nothing new there until that transaction is aborted, even while
//!   the input side has resumed.
//!
//! Three cases:
//!
//! * **restart**: SIGKILL, then the same instance id starts at once (its `init_transactions`
//!   fences the dead one and aborts its open transaction at once; the group rebalances when the
//!   dead member's session times out, or without a rebalance with static membership);
//! * **takeover**: SIGKILL, no restart: after the session timeout the survivor gets the
//!   partitions; the dead instance's transaction is aborted by its coordinator after
//!   `transaction.timeout.ms` (the broker checks every 10 s here);
//! * **zombie**: SIGSTOP instead of SIGKILL, then SIGCONT once the survivor has taken over;
//! * **rolling**: one step of a rolling restart: SIGTERM (a clean stop: commit, exit 0), then
//!   the same instance id starts again. A dynamic member leaves the group on the way out (one
//!   rebalance) and joins again (another); a static member does neither within the session
//!   timeout. The clean stop commits on its way out, so "first commit after the hit" says
//!   nothing here: this case reports the longest time any input partition (and any output
//!   partition's LSO) went without moving, over the [`ROLLING_WINDOW`] from the SIGTERM.
//!
//! What runs as the instances is a [`Setup`]: `kstage` with the classic group protocol (static
//! membership or not), `kstage` with KIP-848's `group.protocol=consumer`, or the Kafka Streams
//! peer (`group.instance.id` or not). The probes are the same for all: committed offsets and
//! LSOs time the fail-over; "`a1` owns a partition" comes from the classic DescribeGroups API,
//! or for a consumer-protocol group (which DescribeGroups does not describe) from
//! ConsumerGroupDescribe through Kafka's own `kafka-consumer-groups.sh` ([`described_owners`]).

use std::time::{Duration, Instant};

use kstage::verify::read::{Client, VerifyConsumer};
use kstage::verify::{Isolation, Report};

use super::feed::{assignment, described_owners, drained, Feeder, Progress};
use super::fleet::{Fleet, Runtime};
use super::scenario::transaction_timeout;
use super::verifier::Verification;
use crate::common::broker::{create_topic, unique_name};
use crate::common::read::{read_topic, seen_but_not_settled, LiveReader};
use crate::common::{InputWriter, StageSpec, PATIENCE};

/// How long a rolling-restart step is watched for stalls.
pub const ROLLING_WINDOW: Duration = Duration::from_secs(25);

/// The bound the issue sets for a takeover: transaction timeout plus 30 s.
pub fn takeover_bound() -> Duration {
    transaction_timeout() + Duration::from_secs(30)
}

/// When processing resumed after a hit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Resumed {
    /// Every input partition committed past its snapshot.
    pub input: Duration,
    /// Every output partition's LSO moved past its snapshot.
    pub output: Duration,
}

/// The measured times.
#[derive(Debug, Default)]
pub struct FailoverTimes {
    pub restart: Vec<Resumed>,
    pub takeover: Vec<Resumed>,
    pub zombie: Vec<Resumed>,
    pub rolling: Vec<Resumed>,
    /// What each zombie did after SIGCONT, with its log lines about it.
    pub zombie_exits: Vec<String>,
    /// Exits nobody asked for, and SIGTERMs that did not end with exit 0 (from the fleet).
    pub unplanned_exits: Vec<String>,
    pub unclean_stops: Vec<String>,
    pub report: Report,
    pub live_unsettled: usize,
    pub records: u64,
}

/// What runs as the two instances, and how their group works.
#[derive(Clone, Default)]
pub struct Setup {
    /// Static group membership (`group.instance.id`): kstage's default, Kafka Streams' option.
    pub static_membership: bool,
    /// `kstage` (the default) or the Kafka Streams peer.
    pub runtime: Runtime,
    /// KIP-848 (kstage only): `group.protocol=consumer`; the session timeout is then the
    /// broker's `group.consumer.session.timeout.ms`, not the harness's 6 s.
    pub consumer_protocol: bool,
    /// Skip the SIGSTOP case.
    pub no_zombie: bool,
}

/// The committed offsets of the group and the LSOs of the output.
struct Probe {
    progress: Progress,
    client: Client,
    consumer: VerifyConsumer,
    output: String,
}

impl Probe {
    fn snapshot(&self) -> Option<(Vec<i64>, Vec<i64>)> {
        let committed = self.progress.per_partition()?;
        let lso = self
            .client
            .watermarks(&self.consumer, &self.output, 3)
            .ok()?
            .into_iter()
            .map(|(_, lso)| lso)
            .collect();
        Some((committed, lso))
    }
}

/// Runs `rounds` of each measurement on one pipeline (3 → 3 partitions, two instances) and
/// verifies the pipeline at the end.
pub fn measure(bootstrap: &str, rounds: usize, setup: &Setup) -> FailoverTimes {
    let input = unique_name("failover-in");
    let output = unique_name("failover-out");
    create_topic(bootstrap, &input, 3);
    create_topic(bootstrap, &output, 3);
    let feeder = Feeder::start(InputWriter::new(bootstrap, &input, 3), u64::MAX, 300);
    let live = LiveReader::start(bootstrap, &output, Isolation::ReadCommitted);
    let mut spec = StageSpec::new(
        bootstrap,
        "passthrough",
        &input,
        &output,
        &unique_name("app"),
    )
    .arg(
        "--transaction-timeout",
        &format!("{}s", transaction_timeout().as_secs()),
    )
    .arg("--kafka", "heartbeat.interval.ms=1000")
    .arg("--metrics-address", "off");
    if setup.consumer_protocol {
        // librdkafka refuses the classic-only session and heartbeat settings with KIP-848.
        let classic_only = |p: &[String]| {
            p[0] == "--kafka"
                && ["session.", "heartbeat."]
                    .iter()
                    .any(|k| p[1].starts_with(k))
        };
        spec.args = (spec
            .args
            .chunks(2)
            .filter(|p| !classic_only(p))
            .flatten()
            .cloned())
        .collect();
        spec = spec.arg("--consumer-property", "group.protocol=consumer");
    }
    let mut fleet = Fleet::new("A", spec, None);
    fleet.static_membership = setup.static_membership;
    fleet.runtime = setup.runtime.clone();
    let owns = |fleet: &mut Fleet| owns_partitions(fleet, bootstrap, "a1", setup.consumer_protocol);
    fleet.scale_out();
    fleet.scale_out();
    let group = fleet.group().to_string();
    let client = Client::new(bootstrap, &[]);
    let probe = Probe {
        progress: Progress::new(bootstrap, &group, &input),
        consumer: client
            .consumer(Isolation::ReadCommitted, None)
            .expect("LSO consumer"),
        client,
        output: output.clone(),
    };
    let mut times = FailoverTimes::default();

    for round in 0..rounds {
        owns(&mut fleet);
        settled_ownership(&mut fleet, &probe);
        let t = resumed_after(&mut fleet, &probe, |f| f.kill("a1"));
        eprintln!("round {round}: SIGKILL, restart with the same id: {t:?}");
        times.restart.push(t);

        owns(&mut fleet);
        settled_ownership(&mut fleet, &probe);
        let t = resumed_after(&mut fleet, &probe, |f| f.kill_for_good("a1"));
        eprintln!("round {round}: SIGKILL, takeover by the survivor: {t:?}");
        times.takeover.push(t);
        fleet.start_instance("a1");

        if !setup.no_zombie {
            owns(&mut fleet);
            settled_ownership(&mut fleet, &probe);
            zombie(&mut fleet, &probe, round, &mut times);
        }

        owns(&mut fleet);
        settled_ownership(&mut fleet, &probe);
        let t = longest_stall(&mut fleet, &probe, |f| f.term("a1"));
        eprintln!("round {round}: SIGTERM and restart with the same id (rolling): {t:?}");
        times.rolling.push(t);
    }

    let writer = feeder.stop();
    times.records = writer.written.len() as u64;
    let deadline = Instant::now() + PATIENCE;
    while !drained(bootstrap, &group, &input) && Instant::now() < deadline {
        fleet.supervise();
        std::thread::sleep(Duration::from_millis(500));
    }
    fleet.stop_all();
    times.unplanned_exits = std::mem::take(&mut fleet.unplanned_exits);
    times.unclean_stops = std::mem::take(&mut fleet.unclean_stops);
    times.live_unsettled = seen_but_not_settled(
        &live.stop(),
        &read_topic(bootstrap, &output, Isolation::ReadCommitted),
    )
    .len();
    let (report, _) = Verification {
        bootstrap: bootstrap.to_string(),
        inputs: vec![input],
        outputs: vec![output],
        groups: vec![group],
        settle_timeout: transaction_timeout() * 3,
        // Kafka Streams writes no provenance headers: match by the value's id.
        id_field: matches!(setup.runtime, Runtime::KafkaStreams(_)).then(|| "id".to_string()),
        ..Verification::default()
    }
    .run();
    times.report = report;
    times
}

/// SIGSTOP of `a1` until the survivor took over, then SIGCONT: what the zombie did.
fn zombie(fleet: &mut Fleet, probe: &Probe, round: usize, times: &mut FailoverTimes) {
    let t = resumed_after(fleet, probe, |f| f.freeze("a1"));
    eprintln!("round {round}: SIGSTOP, takeover by the survivor: {t:?}");
    times.zombie.push(t);
    let log_from = fleet.stderr_len("a1");
    fleet.thaw("a1");
    let until = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = fleet.exited("a1") {
            break format!("exited ({status})");
        }
        if Instant::now() > until {
            fleet.expect_exit("a1", false);
            break "still running 30 s after SIGCONT".to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let exit = format!("{exit}; log: {}", fleet.zombie_lines("a1", log_from));
    eprintln!("round {round}: the zombie {exit}");
    times.zombie_exits.push(exit);
    fleet.supervise();
}

/// Waits until instance `id` owns a partition in a stable group (as the coordinator says;
/// for a consumer-protocol group: every partition owned, `id` some of them).
fn owns_partitions(fleet: &mut Fleet, bootstrap: &str, id: &str, consumer_protocol: bool) {
    let (group, client) = (fleet.group().to_string(), fleet.client_id(id));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let owners = if consumer_protocol {
            described_owners(bootstrap, &group).filter(|a| a.values().sum::<usize>() == 3)
        } else {
            assignment(bootstrap, &group)
        };
        let owned = owners.and_then(|a| a.get(&client).copied());
        if owned.unwrap_or(0) > 0 {
            return;
        }
        if Instant::now() > deadline {
            let diagnostics = fleet.diagnostics();
            panic!("instance {id} got no partition within {PATIENCE:?}\n{diagnostics}");
        }
        fleet.supervise();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every input partition has committed twice past its offset now: the second
/// time by its current owner (a revoked owner's last commit can land once after a rebalance).
fn settled_ownership(fleet: &mut Fleet, probe: &Probe) {
    for _ in 0..2 {
        let deadline = Instant::now() + PATIENCE;
        let before = loop {
            if let Some((committed, _)) = probe.snapshot() {
                break committed;
            }
            assert!(Instant::now() < deadline, "offsets unreadable");
            std::thread::sleep(Duration::from_millis(100));
        };
        loop {
            let now = probe.snapshot().map(|(c, _)| c).unwrap_or_default();
            if now.len() == before.len() && now.iter().zip(&before).all(|(n, b)| n > b) {
                break;
            }
            if Instant::now() > deadline {
                let diagnostics = fleet.diagnostics();
                panic!("no progress on every partition within {PATIENCE:?}\n{diagnostics}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Does `hit` and watches [`ROLLING_WINDOW`] from just before it: the longest time any input
/// partition's committed offset (and any output partition's LSO) stood still.
fn longest_stall(fleet: &mut Fleet, probe: &Probe, hit: impl FnOnce(&mut Fleet)) -> Resumed {
    let started = Instant::now();
    let first = loop {
        if let Some(snapshot) = probe.snapshot() {
            break snapshot;
        }
        assert!(started.elapsed() < PATIENCE, "offsets unreadable");
        std::thread::sleep(Duration::from_millis(50));
    };
    let begun = Instant::now();
    let mut last = (first.0.clone(), first.1.clone());
    let mut moved = (vec![begun; first.0.len()], vec![begun; first.1.len()]);
    let (mut input, mut output) = (Duration::ZERO, Duration::ZERO);
    hit(fleet);
    while begun.elapsed() < ROLLING_WINDOW {
        if let Some((c, l)) = probe.snapshot() {
            let now = Instant::now();
            for (i, (n, b)) in c.iter().zip(&mut last.0).enumerate() {
                if n > b {
                    input = input.max(now - moved.0[i]);
                    (*b, moved.0[i]) = (*n, now);
                }
            }
            for (i, (n, b)) in l.iter().zip(&mut last.1).enumerate() {
                if n > b {
                    output = output.max(now - moved.1[i]);
                    (*b, moved.1[i]) = (*n, now);
                }
            }
        }
        fleet.supervise();
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = Instant::now();
    // A partition that never moved again stalled for the whole rest of the window.
    input = moved.0.iter().fold(input, |m, t| m.max(now - *t));
    output = moved.1.iter().fold(output, |m, t| m.max(now - *t));
    Resumed { input, output }
}

/// Does `hit`, then times until every input partition committed past, and every output
/// partition's LSO moved past, the values they had just before.
fn resumed_after(fleet: &mut Fleet, probe: &Probe, hit: impl FnOnce(&mut Fleet)) -> Resumed {
    let deadline = Instant::now() + PATIENCE;
    let (committed, lso) = loop {
        if let Some(snapshot) = probe.snapshot() {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "offsets unreadable");
        std::thread::sleep(Duration::from_millis(100));
    };
    let started = Instant::now();
    hit(fleet);
    let timeout = takeover_bound() + Duration::from_secs(60);
    let (mut input, mut output) = (None, None);
    while input.is_none() || output.is_none() {
        if let Some((c, l)) = probe.snapshot() {
            let past = |now: &[i64], before: &[i64]| now.iter().zip(before).all(|(n, b)| n > b);
            if input.is_none() && past(&c, &committed) {
                input = Some(started.elapsed());
            }
            if output.is_none() && past(&l, &lso) {
                output = Some(started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            let diagnostics = fleet.diagnostics();
            panic!("no progress on every partition within {timeout:?}\n{diagnostics}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Resumed {
        input: input.unwrap_or_default(),
        output: output.unwrap_or_default(),
    }
}
