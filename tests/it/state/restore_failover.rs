//! A restore from nothing on three brokers, with the changelog partition's leader killed
//! (SIGKILL) while the restore reads it.
//!
//! What flows: keyed records into a replication-3 input; a `count` stage (its changelog made by
//! `kstage topics create --replication-factor 3`) counts them and stops; its local state is
//! deleted; more input is written; the stage starts again and restores every partition from
//! changelog offset 0. As soon as its `kstage_state_restoring_partitions` gauge shows a restore
//! in progress, the test kills the leader of the first changelog partition not yet restored
//! whose leader is not the group coordinator, then restarts that broker. (When the killed
//! leader was also the group coordinator, the stage was fenced — FencedInstanceId — right after
//! its 11 s restore of one partition and exited 1; librdkafka makes that error fatal, and the
//! stage's message now names a coordinator failover as a cause and a restart as the remedy.
//! Riding it out in-process, with a new consumer, is not built.)
//!
//! What it keeps: the restore finishes (on the new leader) and the read_committed output has
//! every key counted exactly 1..n, n its true count; `kstage verify --expect count` agrees. That
//! the kill landed during the restore is shown by the stage's own log: a restore from offset 0
//! finished after the kill's timestamp. With `kstage::inject_abort` one transaction in ten
//! aborts, so the read_uncommitted view of the same output must fail the same check: the check
//! can fail.
//!
//! Status. 2026-12-02: three runs passed once and failed twice. `Restorer::restore`
//! (src/state/restore.rs) returned the first `fetch_watermarks` error, NotLeaderForPartition;
//! such errors are now retried with backoff. 2026-12-03, 14:15-15:00 UTC, twelve runs on a
//! private cluster (`KSTAGE_RELIABILITY=full KSTAGE_RELIABILITY_PORT=...`), with two helpers'
//! builds loading the machine: nine passed. One did not start its cluster: the port base 45200
//! lies in the ephemeral range, and a broker's port was taken; the default 29092 lies below it.
//! One failed the same way as before, but with librdkafka's local UnknownPartition on the
//! watermark read of a killed leader's partition. One exited 1 with its log not kept, so its
//! cause is unknown. Then UnknownPartition was retried, and three more runs were made
//! (16:15-16:25 UTC): two passed. One retried UnknownPartition for the restore's whole 60 s
//! patience and failed: the client's metadata cache stayed stale. A retry after
//! UnknownPartition now first asks for the changelog's metadata. Since that change (2026-12-03,
//! 17:38-17:46 UTC, `KSTAGE_RELIABILITY=full KSTAGE_RELIABILITY_PORT=29300`, two helpers'
//! builds loading the machine) three of three runs passed (133-155 s each), and two more at
//! 18:57-19:00 UTC (72-76 s each), so it runs in CI's short set.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common;

use common::broker::client_config;
use common::chaos::cluster::{exclusive, Cluster};
use common::http::free_port;
use common::kills::drain_then_stop;
use common::orders_stage::stop_cleanly;
use common::raw::RawWriter;
use common::state::{changelog, check_counts, write_keyed, StatePipeline};
use common::{unique_name, Isolation, Pipeline, PATIENCE};

const PARTITIONS: i32 = 3;
/// Input before the deletion: enough that restoring its changelog takes seconds here.
const RECORDS: usize = 200_000;
const KEYS: usize = 20_000;

/// A finished restore from the stage's log: when, which partition, from which offset, records.
#[derive(Debug)]
struct Restore {
    at: SystemTime,
    partition: i32,
    from: u64,
    records: u64,
}

/// The value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The "Restored a store from its changelog." lines of a stage's log, with their timestamps.
fn finished_restores(stderr: &str) -> Vec<Restore> {
    stderr
        .lines()
        .filter(|line| line.contains("Restored a store from its changelog."))
        .filter_map(|line| {
            let stamp = line.split_whitespace().next()?;
            let stamp = stamp.trim_start_matches(|c: char| !c.is_ascii_digit());
            let stamp = &stamp[..=stamp.find('Z')?];
            Some(Restore {
                at: humantime::parse_rfc3339_weak(stamp).ok()?,
                partition: i32::try_from(field(line, "partition")?).ok()?,
                from: field(line, "from")?,
                records: field(line, "records")?,
            })
        })
        .collect()
}

/// The stage's `kstage_state_restoring_partitions` gauge, or `None` when it does not answer.
fn restoring(metrics: SocketAddr) -> Option<i64> {
    let body = reqwest::blocking::Client::new()
        .get(format!("http://{metrics}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .ok()?
        .text()
        .ok()?;
    body.lines()
        .find(|l| l.starts_with("kstage_state_restoring_partitions "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The leader (node id) of each partition of `topic`.
fn leaders(bootstrap: &str, topic: &str) -> BTreeMap<i32, u32> {
    let consumer: BaseConsumer = client_config(bootstrap).create().expect("metadata client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .filter_map(|p| Some((p.id(), u32::try_from(p.leader()).ok()?)))
        .collect()
}

/// `kstage topics create --replication-factor 3` for a `count` stage: makes its changelog.
fn create_changelog(p: &Pipeline, dir: &std::path::Path) {
    let config = dir.join("stage.toml");
    let toml = format!(
        "topology = \"count\"\nbootstrap_servers = \"{}\"\ninputs = [\"{}\"]\napp_id = \"{}\"\n\
         [outputs]\ndefault = \"{}\"\n",
        p.bootstrap, p.input, p.app_id, p.output
    );
    std::fs::write(&config, toml).expect("write the config");
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_kstage"))
        .args(["topics", "create", "--replication-factor", "3", "--config"])
        .arg(&config)
        .output()
        .expect("run kstage topics create");
    assert!(
        created.status.success(),
        "kstage topics create: {} {}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
}

fn count_restores_from_nothing_through_a_kill_of_the_changelog_leader() {
    let _serial = exclusive();
    let cluster = Cluster::three_brokers();
    let p = Pipeline {
        bootstrap: cluster.bootstrap.clone(),
        input: unique_name("in"),
        output: unique_name("out"),
        app_id: unique_name("app"),
        partitions: PARTITIONS,
    };
    cluster.create_topic(&p.input, PARTITIONS);
    cluster.create_topic(&p.output, PARTITIONS);
    let pipeline = StatePipeline {
        pipeline: p,
        stores: vec!["counts".into()],
        state_dir: tempfile::tempdir().expect("a state directory"),
    };
    let p = &pipeline.pipeline;
    create_changelog(p, pipeline.state_dir.path());
    let topic = changelog(&p.app_id, "counts");

    let mut writer = RawWriter::bulk(&p.bootstrap, &p.input, p.partitions);
    let mut truth = write_keyed(&mut writer, RECORDS, KEYS);
    let spec = pipeline
        .stage_with_batch("count", 5_000)
        .env("FAILPOINTS", "kstage::inject_abort=10%return");
    drain_then_stop(p, &spec, &writer.end_offsets());
    let dir = pipeline.instance_dir("i0");
    assert!(dir.is_dir(), "no local state at {}", dir.display());
    std::fs::remove_dir_all(&dir).expect("delete the local state");
    for (key, n) in write_keyed(&mut writer, 20_000, KEYS) {
        *truth.entry(key).or_insert(0) += n;
    }

    // Looked up before the restart, so that the kill follows the restore's start at once. Not
    // the group coordinator: its loss fenced the restoring instance (see the module doc).
    let coordinator = cluster.group_coordinator(&p.app_id);
    let leaders = leaders(&p.bootstrap, &topic);
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut stage = spec
        .clone()
        .arg("--metrics-address", &metrics.to_string())
        .spawn();
    stage.wait_until(PATIENCE, "the restore begins", || {
        restoring(metrics).is_some_and(|n| n > 0)
    });
    let done: Vec<i32> = finished_restores(&stage.stderr())
        .iter()
        .map(|r| r.partition)
        .collect();
    let Some((target, leader)) = leaders
        .iter()
        .map(|(&n, &leader)| (n, leader))
        .find(|&(n, leader)| !done.contains(&n) && leader != coordinator)
    else {
        stage.fail(&format!(
            "no unrestored changelog partition led by a broker other than the group \
             coordinator {coordinator}: leaders {leaders:?}, restored {done:?}"
        ));
    };
    let killed_at = SystemTime::now();
    cluster.kill(leader);
    eprintln!(
        "killed broker {leader}, leader of {topic} partition {target}, at {} (restored before: \
         {done:?})",
        humantime::format_rfc3339_micros(killed_at)
    );
    std::thread::sleep(common::chaos::faults::BROKER_DOWN);
    cluster.restart(leader);

    p.wait_drained(&mut stage, &writer.end_offsets());
    stop_cleanly(&mut stage);
    let restores = finished_restores(&stage.stderr());
    for r in &restores {
        eprintln!(
            "restored partition {} from {}: {} records, finished at {}",
            r.partition,
            r.from,
            r.records,
            humantime::format_rfc3339_micros(r.at)
        );
    }
    assert!(
        restores
            .iter()
            .any(|r| r.from == 0 && r.records > 0 && r.at > killed_at),
        "no restore from offset 0 finished after the kill at {}: {restores:?}",
        humantime::format_rfc3339_micros(killed_at)
    );
    let report = check_counts(&p.bootstrap, &p.output, Isolation::ReadCommitted, &truth);
    assert!(
        report.exact(),
        "count output after the restore through a broker kill: {report}"
    );
    let (code, said) = super::verify_counts(p);
    assert_eq!(code, Some(0), "kstage verify --expect count: {said}");
    let leaked = check_counts(&p.bootstrap, &p.output, Isolation::ReadUncommitted, &truth);
    assert!(
        !leaked.exact(),
        "the read_uncommitted view holds the aborted updates and should fail the check: {leaked}"
    );
}

trials! {
    count_restores_from_nothing_through_a_kill_of_the_changelog_leader => [ThreeBrokers],
}
