//! The kill schedule of the sink tests: three instances of one sink, one of them SIGKILLed at a
//! time (at least six times) while input keeps arriving, and restarted at once under the same
//! instance id. Every kill is two rebalances: the restarted instance joins at once, and the dead
//! member's partitions move when its session times out (6 s, the broker's minimum).
//!
//! A chunk of input is written just before each kill, so the instances have a backlog to work on.
//! Every other kill is *aimed*: it waits (at most [`AIM_PATIENCE`]) until `pg_stat_activity`
//! shows the victim at the moment where a wrong commit order loses or duplicates, then kills:
//!
//! * [`Aim::InTransaction`]: inside a database transaction (a batch's rows written, not
//!   committed). A sink that moved Kafka's offsets before the COMMIT loses those rows.
//! * [`Aim::AfterCommit`]: just after a batch's COMMIT (the session idle, its last statement
//!   COMMIT, changed less than 30 ms ago), before the Kafka commit. An idempotent sink then
//!   receives the batch again; a plain INSERT duplicates it.
//!
//! The other kills land at a random moment (a random pause of up to 500 ms after the chunk). A negative
//! control (a broken mode) runs the very same schedule and the same check, and must fail it.

use std::time::{Duration, Instant};

use crate::common::stage::Stage;
use crate::common::PATIENCE;

use super::{Pg, SinkSpec};

/// How long an aimed kill waits for its moment before it kills anyway.
pub const AIM_PATIENCE: Duration = Duration::from_secs(10);

/// Where an aimed kill lands.
#[derive(Clone, Copy, Debug)]
pub enum Aim {
    /// Inside a database transaction: rows written, not committed.
    InTransaction,
    /// Just after a batch's COMMIT, before Kafka's offsets follow.
    AfterCommit,
}

/// One kill run: how much input, how many kills, which instances.
#[derive(Clone, Debug)]
pub struct KillPlan {
    /// Records written in all (in `kills + 1` chunks, one before each kill and one after).
    pub records: u64,
    /// SIGKILLs (each followed by a restart of the same instance).
    pub kills: usize,
    /// The instance ids (three in the tests).
    pub instances: Vec<String>,
    /// Where the aimed kills land.
    pub aim: Aim,
}

impl KillPlan {
    pub fn new(records: u64, kills: usize, aim: Aim) -> Self {
        Self {
            records,
            kills,
            instances: ["a", "b", "c"].map(String::from).to_vec(),
            aim,
        }
    }
}

/// What a kill run reports: how many aimed kills found their moment.
#[derive(Debug, Default)]
pub struct KillLog {
    pub aimed: usize,
    pub hit: usize,
}

/// The SQL condition (on `pg_stat_activity`) of `aim` for the session named `application`.
fn aim_sql(application: &str, aim: Aim) -> String {
    let moment = match aim {
        Aim::InTransaction => {
            "xact_start IS NOT NULL AND state IN ('active', 'idle in transaction')"
        }
        Aim::AfterCommit => {
            "state = 'idle' AND query = 'COMMIT' AND \
             clock_timestamp() - state_change < interval '30 milliseconds'"
        }
    };
    format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}' AND \
         {moment}"
    )
}

/// Runs `plan` against `spec` (group `app_id`): writes a chunk with `feed`, kills one instance
/// at random (aimed on even kills, else after a random pause of up to 500 ms) while the chunk
/// is being worked on, restarts it; after the last kill writes the rest, waits until `drained`,
/// and stops every instance with SIGTERM (each must exit 0). `progress` (rows or writes in the
/// database) is only logged.
pub fn run_with_kills(
    spec: &SinkSpec,
    app_id: &str,
    pg: &mut Pg,
    plan: &KillPlan,
    mut feed: impl FnMut(u64),
    mut progress: impl FnMut(&mut Pg) -> i64,
    mut drained: impl FnMut(&mut Pg) -> bool,
) -> KillLog {
    let mut sinks: Vec<Stage> = plan.instances.iter().map(|id| spec.spawn(id)).collect();
    let chunk = plan.records / (plan.kills as u64 + 1);
    let mut log = KillLog::default();
    let mut fed = 0;
    for kill in 0..plan.kills {
        // Fed just before the kill, so the instances have a backlog to be busy with.
        feed(chunk);
        fed += chunk;
        let who = rand::random_range(0..sinks.len());
        let victim = &plan.instances[who];
        let aimed = kill % 2 == 0;
        let hit = if aimed {
            log.aimed += 1;
            let sql = aim_sql(&format!("kstage-sink {app_id}-{victim}"), plan.aim);
            let deadline = Instant::now() + AIM_PATIENCE;
            loop {
                if pg.count(&sql) > 0 {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(rand::random_range(0..500)));
            false
        };
        let status = sinks[who].sigkill();
        log.hit += usize::from(hit);
        eprintln!(
            "kill {kill}: instance {victim} ({}) at progress {} ({status})",
            match (aimed, hit) {
                (false, _) => "at a random moment".to_string(),
                (true, true) => format!("aimed {:?}: hit", plan.aim),
                (true, false) => format!("aimed {:?}: not found in {AIM_PATIENCE:?}", plan.aim),
            },
            progress(pg)
        );
        sinks[who] = spec.spawn(victim);
    }
    feed(plan.records - fed);
    let deadline = Instant::now() + PATIENCE;
    while !drained(pg) {
        let exited = sinks.iter_mut().any(|sink| sink.try_exit().is_some());
        if exited || Instant::now() >= deadline {
            // Every instance's tail: the one that stopped making progress is rarely the first.
            let tails: Vec<String> = sinks.iter_mut().map(Stage::diagnostics).collect();
            panic!(
                "{} while waiting until the input is drained (progress {})\n{}",
                if exited {
                    "an instance exited"
                } else {
                    "timed out"
                },
                progress(pg),
                tails.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for sink in &mut sinks {
        assert_eq!(sink.stop(), Some(0), "SIGTERM after the drain exits 0");
    }
    eprintln!("kills: {log:?}");
    log
}
