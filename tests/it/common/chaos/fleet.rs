//! A fleet: the running instances of one stage (one consumer group), as child processes, with
//! the faults a stage can suffer and the supervision an orchestrator would give it.
//!
//! Instances have stable ids (`a0`, `a1`, ...; the transactional id is `<app_id>-<id>`). A
//! fault that kills an instance restarts it with the same id at once unless it says otherwise,
//! as a Kubernetes StatefulSet would. [`Fleet::supervise`] restarts any instance that exited
//! without being told to (an *unplanned exit*: the stage gave up on a fatal error), recording why.
//!
//! The instances are `kstage` processes, or for the fail-over comparison the Kafka Streams peer
//! ([`Runtime::KafkaStreams`], see [`super::instance`]): the same faults and supervision apply.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::instance::{Instance, StreamsApp};
use crate::common::stage::{exit_code, StageSpec};
use crate::common::PATIENCE;

/// What runs as the fleet's instances.
#[derive(Clone, Default)]
pub enum Runtime {
    /// `kstage run` with the fleet's [`StageSpec`].
    #[default]
    Kstage,
    /// The Kafka Streams peer on the same topics and group (fail points do not apply).
    KafkaStreams(Arc<StreamsApp>),
}

/// One instance.
struct Member {
    stage: Box<dyn Instance>,
    /// An exit is expected (an armed fail point, or a thawed zombie that should be fenced).
    expect_exit: bool,
    frozen: bool,
}

/// The instances of one stage.
pub struct Fleet {
    /// "A", "B": which stage of the pipeline.
    pub label: &'static str,
    spec: StageSpec,
    /// `FAILPOINTS` every instance runs with (e.g. random aborts), if any.
    base_failpoints: Option<String>,
    members: BTreeMap<String, Member>,
    next: usize,
    /// Exits nobody asked for, each with its status and stderr tail.
    pub unplanned_exits: Vec<String>,
    /// Exits a fault asked for (fail-point crashes, fenced zombies), with their status.
    pub planned_exits: Vec<String>,
    /// SIGTERMs that did not end with exit code 0.
    pub unclean_stops: Vec<String>,
    /// Static group membership (the engine's default, `group.instance.id` = the transactional
    /// id); off unless set, with `--static-membership false`.
    pub static_membership: bool,
    /// Producer re-creations logged by the instances [`Self::stop_all`] stopped.
    pub recreations: usize,
    /// What the instances are (`kstage` unless set).
    pub runtime: Runtime,
}

impl Fleet {
    /// Starts `instances` instances of `spec`.
    pub fn start(
        label: &'static str,
        spec: StageSpec,
        instances: usize,
        base_failpoints: Option<String>,
    ) -> Self {
        let mut fleet = Self::new(label, spec, base_failpoints);
        for _ in 0..instances {
            fleet.scale_out();
        }
        fleet
    }

    /// A fleet with no instance yet.
    pub fn new(label: &'static str, spec: StageSpec, base_failpoints: Option<String>) -> Self {
        Self {
            label,
            spec,
            base_failpoints,
            members: BTreeMap::new(),
            next: 0,
            unplanned_exits: Vec::new(),
            recreations: 0,
            planned_exits: Vec::new(),
            unclean_stops: Vec::new(),
            static_membership: false,
            runtime: Runtime::Kstage,
        }
    }

    /// The app id (consumer group).
    pub fn group(&self) -> &str {
        &self.spec.app_id
    }

    /// The transactional id of instance `id`.
    pub fn transactional_id(&self, id: &str) -> String {
        format!("{}-{id}", self.spec.app_id)
    }

    /// The client id instance `id`'s consumer has in the group's description.
    pub fn client_id(&self, id: &str) -> String {
        match self.runtime {
            Runtime::Kstage => self.transactional_id(id),
            Runtime::KafkaStreams(_) => {
                format!("{}-StreamThread-1-consumer", self.transactional_id(id))
            }
        }
    }

    /// Ids of the instances, in order.
    pub fn ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    fn spawn(&mut self, id: &str, armed: Option<&str>) {
        let failpoints: Vec<&str> = self
            .base_failpoints
            .as_deref()
            .into_iter()
            .chain(armed)
            .collect();
        let mut spec = self.spec.clone().instance(id);
        // Static membership is the engine's default for exactly_once (group.instance.id = the
        // transactional id); the harness turns it off unless a scenario asks for it, so that
        // scale-in and fail-over keep the dynamic-membership baseline they were measured with.
        if !self.static_membership {
            spec = spec.arg("--static-membership", "false");
        }
        if !failpoints.is_empty() {
            spec = spec.env("FAILPOINTS", &failpoints.join(";"));
        }
        let stage: Box<dyn Instance> = match &self.runtime {
            Runtime::Kstage => Box::new(spec.spawn()),
            Runtime::KafkaStreams(app) => Box::new(app.spawn(&spec, id, self.static_membership)),
        };
        let member = Member {
            stage,
            expect_exit: armed.is_some(),
            frozen: false,
        };
        self.members.insert(id.to_string(), member);
    }

    /// Restarts instances that exited; returns how many exited without being asked to.
    pub fn supervise(&mut self) -> usize {
        let mut unplanned = 0;
        for id in self.ids() {
            let Some(member) = self.members.get_mut(&id) else {
                continue;
            };
            let Some(status) = member.stage.try_exit() else {
                continue;
            };
            let what = format!("{} {id}: {status}", self.label);
            if member.expect_exit {
                self.planned_exits.push(what);
            } else {
                unplanned += 1;
                let tail = member.stage.stderr_tail(8);
                eprintln!("unplanned exit of {what}; restarting. stderr tail:\n{tail}");
                self.unplanned_exits
                    .push(format!("{what}: {}", last_line(&tail)));
            }
            self.spawn(&id, None);
        }
        unplanned
    }

    /// SIGKILL of `id`, restarted at once with the same id.
    pub fn kill(&mut self, id: &str) {
        if let Some(member) = self.members.get_mut(id) {
            member.stage.sigkill();
        }
        self.spawn(id, None);
    }

    /// Starts instance `id` (again).
    pub fn start_instance(&mut self, id: &str) {
        self.spawn(id, None);
    }

    /// SIGKILL of `id`, not restarted (a hard scale-in).
    pub fn kill_for_good(&mut self, id: &str) {
        if let Some(mut member) = self.members.remove(id) {
            member.stage.sigkill();
        }
    }

    /// SIGTERM of `id` (a clean shutdown, exit 0 expected), restarted with the same id.
    pub fn term(&mut self, id: &str) {
        self.stop(id);
        self.spawn(id, None);
    }

    /// Stops `id` cleanly, then restarts it armed with `failpoint` (e.g.
    /// `kstage::before_commit=3*off->return`): it crashes there after a few transactions, and
    /// [`Fleet::supervise`] restarts it unarmed.
    pub fn arm(&mut self, id: &str, failpoint: &str) {
        self.stop(id);
        self.spawn(id, Some(failpoint));
    }

    /// SIGSTOP of `id`: it keeps its sockets and its open transaction, and stops heartbeating.
    pub fn freeze(&mut self, id: &str) {
        if let Some(member) = self.members.get_mut(id) {
            member.stage.sigstop();
            member.frozen = true;
        }
    }

    /// SIGCONT of a frozen `id`. It has been replaced meanwhile, so it is expected to find out
    /// it was fenced and exit (supervision then restarts it).
    pub fn thaw(&mut self, id: &str) {
        if let Some(member) = self.members.get_mut(id) {
            member.stage.sigcont();
            member.frozen = false;
            member.expect_exit = true;
        }
    }

    /// Whether an exit of `id` is expected from now on.
    pub fn expect_exit(&mut self, id: &str, expect: bool) {
        if let Some(member) = self.members.get_mut(id) {
            member.expect_exit = expect;
        }
    }

    /// Bytes `id` has written to stderr so far.
    pub fn stderr_len(&self, id: &str) -> usize {
        self.members.get(id).map_or(0, |m| m.stage.stderr().len())
    }

    /// What `id` logged since byte `from` about losing its partitions or being fenced (the
    /// first few such lines, without timestamps).
    pub fn zombie_lines(&self, id: &str, from: usize) -> String {
        let Some(member) = self.members.get(id) else {
            return String::new();
        };
        let text = member.stage.stderr();
        let keys = ["lost", "fenc", "Fenc", "epoch", "abort", "Abort", "failed"];
        text.get(from..)
            .unwrap_or_default()
            .lines()
            .filter(|line| keys.iter().any(|k| line.contains(k)))
            .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest).trim())
            .map(|line| line.chars().take(200).collect::<String>())
            .take(4)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The exit status of `id` if it has exited (not reaped by supervision yet).
    pub fn exited(&mut self, id: &str) -> Option<ExitStatus> {
        self.members.get_mut(id).and_then(|m| m.stage.try_exit())
    }

    /// Starts one more instance with a fresh id; returns the id.
    pub fn scale_out(&mut self) -> String {
        let id = format!("{}{}", self.label.to_lowercase(), self.next);
        self.next += 1;
        self.spawn(&id, None);
        id
    }

    /// Stops the newest instance cleanly (if more than one runs); returns its id.
    pub fn scale_in(&mut self) -> Option<String> {
        if self.members.len() < 2 {
            return None;
        }
        let id = self.members.keys().next_back().cloned()?;
        self.stop(&id);
        self.members.remove(&id);
        Some(id)
    }

    /// SIGTERM and wait; records a non-zero exit.
    fn stop(&mut self, id: &str) {
        let Some(member) = self.members.get_mut(id) else {
            return;
        };
        if member.frozen {
            member.stage.sigcont();
            member.frozen = false;
        }
        if member.stage.try_exit().is_some() {
            return;
        }
        member.stage.sigterm();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = member.stage.try_exit() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match status {
            Some(status) if exit_code(status) == Some(0) => {}
            Some(status) => {
                let tail = member.stage.stderr_tail(8);
                self.unclean_stops.push(format!(
                    "{} {id}: {status}: {}",
                    self.label,
                    last_line(&tail)
                ));
            }
            None => {
                self.unclean_stops.push(format!(
                    "{} {id}: still running {PATIENCE:?} after SIGTERM",
                    self.label
                ));
                member.stage.sigkill();
            }
        }
    }

    /// Stops every instance cleanly (thawing frozen ones first).
    pub fn stop_all(&mut self) {
        for member in self.members.values() {
            self.recreations += member
                .stage
                .stderr()
                .matches("Re-created the transactional producer")
                .count();
        }
        for id in self.ids() {
            if self
                .members
                .get_mut(&id)
                .and_then(|m| m.stage.try_exit())
                .is_some()
            {
                self.supervise();
            }
            self.stop(&id);
        }
        self.members.clear();
    }

    /// Thaws frozen instances and brings the fleet back to at least `min` instances.
    pub fn heal(&mut self, min: usize) {
        for id in self.ids() {
            if self.members.get(&id).is_some_and(|m| m.frozen) {
                self.thaw(&id);
            }
        }
        while self.members.len() < min {
            self.scale_out();
        }
    }

    /// Diagnostics of every running instance (for a failed wait).
    pub fn diagnostics(&mut self) -> String {
        self.members
            .values_mut()
            .map(|m| m.stage.diagnostics())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}
