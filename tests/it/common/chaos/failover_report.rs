//! Running one fail-over [`Setup`] and reporting it: the times as a line on stderr and, with
//! `KSTAGE_RELIABILITY_RESULTS`, as one JSON line (which `scripts/reliability.sh` renders into
//! the fail-over table); then the checks every setup must pass: exactly-once (`kstage verify`
//! and the live read_committed tail) and every fail-over within its bound.
//!
//! Also [`broker_setting`], which reads a broker's configuration (for the KIP-848 bound: the
//! broker's consumer-protocol session timeout).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use super::append_line;
use super::failover::{measure, FailoverTimes, Resumed, Setup};
use crate::common::broker::client_config;

/// Measures `rounds` rounds of `setup`, reports them as `contender`, and asserts exactly-once
/// and that no fail-over took longer than `bound`.
pub fn measure_and_check(
    bootstrap: &str,
    contender: &str,
    setup: &Setup,
    rounds: usize,
    bound: Duration,
) {
    let times = measure(bootstrap, rounds, setup);
    report(contender, setup, &times);
    assert!(times.report.passed, "{contender}: {}", times.report);
    assert_eq!(
        times.live_unsettled, 0,
        "{contender}: live reader unsettled"
    );
    let all = times
        .restart
        .iter()
        .chain(&times.takeover)
        .chain(&times.zombie)
        .chain(&times.rolling);
    for t in all {
        assert!(
            t.input.max(t.output) <= bound,
            "{contender}: a fail-over took {t:?}, above {bound:?}"
        );
    }
}

fn secs(d: &[Resumed], output: bool) -> Vec<f64> {
    d.iter()
        .map(|r| if output { r.output } else { r.input }.as_secs_f64())
        .collect()
}

fn report(contender: &str, setup: &Setup, times: &FailoverTimes) {
    let static_membership = setup.static_membership;
    let (input, output) = (false, true);
    eprintln!(
        "fail-over of {contender} (static membership: {static_membership}), input resumed / \
         output readable after: restart {:?} / {:?} s, takeover {:?} / {:?} s, zombie {:?} / \
         {:?} s, rolling {:?} / {:?} s; zombies: {:?}; unplanned exits: {:?}; unclean \
         stops: {:?}\n{}",
        secs(&times.restart, input),
        secs(&times.restart, output),
        secs(&times.takeover, input),
        secs(&times.takeover, output),
        secs(&times.zombie, input),
        secs(&times.zombie, output),
        secs(&times.rolling, input),
        secs(&times.rolling, output),
        times.zombie_exits,
        times.unplanned_exits,
        times.unclean_stops,
        times.report
    );
    if let Ok(path) = std::env::var("KSTAGE_RELIABILITY_RESULTS") {
        let line = serde_json::json!({
            "failover": true,
            "contender": contender,
            "static_membership": static_membership,
            "consumer_protocol": setup.consumer_protocol,
            "records": times.records,
            "restart_s": secs(&times.restart, input),
            "restart_visible_s": secs(&times.restart, output),
            "takeover_s": secs(&times.takeover, input),
            "takeover_visible_s": secs(&times.takeover, output),
            "zombie_s": secs(&times.zombie, input),
            "zombie_visible_s": secs(&times.zombie, output),
            "rolling_s": secs(&times.rolling, input),
            "rolling_visible_s": secs(&times.rolling, output),
            "zombie_exits": times.zombie_exits,
            "unplanned_exits": times.unplanned_exits,
            "passed": times.report.passed,
            "live_unsettled": times.live_unsettled,
        });
        append_line(&path, &line);
    }
}

/// The value of `key` in the configuration of the first broker in `bootstrap`'s metadata.
pub fn broker_setting(bootstrap: &str, key: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().ok()?;
    let broker = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .ok()?
        .brokers()
        .first()?
        .id();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let resource = ResourceSpecifier::Broker(broker);
    let results = runtime
        .block_on(admin.describe_configs([&resource], &options))
        .ok()?;
    results
        .into_iter()
        .next()?
        .ok()?
        .get(key)
        .and_then(|entry| entry.value.clone())
}
