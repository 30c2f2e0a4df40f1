//! Broker-side request counts: what each contender's transactions cost the broker, counted by
//! the broker itself rather than estimated from markers.
//!
//! ```text
//! broker started with remote JMX on 127.0.0.1:<port + 7> (no auth, loopback only)
//! before the load / after the output is read: JmxTool --one-time reads the Count of every
//!   kafka.network:type=RequestMetrics,name=RequestsPerSec,request=<Name>,version=<v> meter
//! difference, summed over versions, for COUNTED; per 1,000 records offered and per second
//! ```
//!
//! The counts are the broker's, so they include every client of the window: the contender, and
//! for `Produce` also the harness's own load producer (its batches at `linger.ms=1`); the
//! clients' transaction requests (AddPartitionsToTxn v0-3, AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn) come only from the contender, and the broker's own (AddPartitionsToTxn v4+,
//! AddPartitionsToTxnVerification, WriteTxnMarkers: the single broker sends them to itself) on
//! behalf of the contender's transactions. A broker the harness did not start has no
//! JMX here and gets no counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

/// The request types whose counts the harness reports. AddPartitionsToTxn versions 0-3 are the
/// clients' own; versions 4 and up are sent only by brokers (a partition leader adding a
/// partition for a KIP-890 "transaction v2" client, or verifying one,
/// `AddPartitionsToTxnVerification`), so [`parse`] counts them apart as `AddPartitionsToTxn v4+`.
pub const COUNTED: [&str; 8] = [
    "Produce",
    "AddPartitionsToTxn",
    "AddPartitionsToTxn v4+",
    "AddPartitionsToTxnVerification",
    "AddOffsetsToTxn",
    "TxnOffsetCommit",
    "EndTxn",
    "WriteTxnMarkers",
];

/// The broker's JMX port, given its client port.
pub fn jmx_port(port: u16) -> u16 {
    port + 7
}

/// The broker JVM options that open remote JMX on `jmx_port`, loopback only, unauthenticated
/// (a private benchmark broker; nothing else listens there).
pub fn jvm_opts(jmx_port: u16) -> String {
    [
        "-Dcom.sun.management.jmxremote".to_string(),
        format!("-Dcom.sun.management.jmxremote.port={jmx_port}"),
        format!("-Dcom.sun.management.jmxremote.rmi.port={jmx_port}"),
        "-Dcom.sun.management.jmxremote.authenticate=false".to_string(),
        "-Dcom.sun.management.jmxremote.ssl=false".to_string(),
        "-Dcom.sun.management.jmxremote.host=127.0.0.1".to_string(),
        "-Djava.rmi.server.hostname=127.0.0.1".to_string(),
    ]
    .join(" ")
}

/// Reads the broker's request meters through Kafka's JmxTool (`scripts/kafka.sh tool`).
#[derive(Debug, Clone)]
pub struct Jmx {
    script: PathBuf,
    url: String,
}

impl Jmx {
    /// The reader of a broker whose JMX listens on `jmx_port`.
    pub fn new(repo: &Path, jmx_port: u16) -> Self {
        Self {
            script: repo.join("scripts/kafka.sh"),
            url: format!("service:jmx:rmi:///jndi/rmi://127.0.0.1:{jmx_port}/jmxrmi"),
        }
    }

    /// The total count of every request type the broker has received, summed over versions.
    pub fn totals(&self) -> Result<BTreeMap<String, u64>> {
        let output = Command::new(&self.script)
            .args([
                "tool",
                "org.apache.kafka.tools.JmxTool",
                "--jmx-url",
                &self.url,
            ])
            .args([
                "--object-name",
                "kafka.network:type=RequestMetrics,name=RequestsPerSec,*",
                "--attributes",
                "Count",
                "--one-time",
                "true",
                "--report-format",
                "properties",
            ])
            // A small, quick JVM: it starts twice per run.
            .env(
                "KSTAGE_TOOL_JVM_OPTS",
                "-Xmx64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
            )
            .output()
            .context("running JmxTool")?;
        if !output.status.success() {
            bail!(
                "JmxTool failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let totals = parse(&String::from_utf8_lossy(&output.stdout));
        if totals.is_empty() {
            bail!("JmxTool printed no request meter");
        }
        Ok(totals)
    }
}

/// Sums JmxTool's `properties` lines
/// (`kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count=5`)
/// per request type (AddPartitionsToTxn v4+ apart, see [`COUNTED`]); other lines are ignored.
pub fn parse(output: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for line in output.lines() {
        let Some((name, count)) = line.trim().rsplit_once(":Count=") else {
            continue;
        };
        let Ok(count) = count.trim().parse::<f64>() else {
            continue;
        };
        let Some(request) = name
            .split(',')
            .find_map(|part| part.strip_prefix("request="))
        else {
            continue;
        };
        let version = name
            .split(',')
            .find_map(|part| part.strip_prefix("version="))
            .and_then(|v| v.parse::<u32>().ok());
        let key = match (request, version) {
            ("AddPartitionsToTxn", Some(v)) if v >= 4 => "AddPartitionsToTxn v4+".to_string(),
            _ => request.to_string(),
        };
        *totals.entry(key).or_insert(0) += count as u64;
    }
    totals
}

/// The broker's requests of one run: counts, and the same per 1,000 records and per second.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCounts {
    /// Seconds between the two readings.
    pub window_s: f64,
    /// Records offered in the window (the load, probes excluded).
    pub records: u64,
    /// Requests of each counted type received in the window.
    pub counts: BTreeMap<String, u64>,
    /// The same per 1,000 records.
    pub per_1k_records: BTreeMap<String, f64>,
    /// The same per second of the window.
    pub per_s: BTreeMap<String, f64>,
}

impl RequestCounts {
    /// The difference of two readings `window_s` apart, over `records` records.
    pub fn between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        window_s: f64,
        records: u64,
    ) -> Self {
        let counts: BTreeMap<String, u64> = COUNTED
            .iter()
            .map(|&name| {
                let of = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
                (name.to_string(), of(after).saturating_sub(of(before)))
            })
            .collect();
        let scaled = |factor: f64| {
            counts
                .iter()
                .map(|(name, &n)| (name.clone(), n as f64 * factor))
                .collect()
        };
        Self {
            window_s,
            records,
            per_1k_records: scaled(1000.0 / records.max(1) as f64),
            per_s: scaled(1.0 / window_s.max(1e-3)),
            counts,
        }
    }

    /// Requests of `name` per 1,000 records, if counted.
    pub fn per_1k(&self, name: &str) -> Option<f64> {
        self.per_1k_records.get(name).copied()
    }

    /// Requests of `name` per second, if counted.
    pub fn per_second(&self, name: &str) -> Option<f64> {
        self.per_s.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_over_versions() {
        let output = "Trying to connect to JMX url: service:jmx:rmi:///jndi/rmi://:9999/jmxrmi\n\
             time=1796287755280\n\
             kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=9:Count=5\n\
             kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count=7\n\
             kafka.network:type=RequestMetrics,name=RequestsPerSec,request=EndTxn,version=1:Count=3.0\n\
             kafka.network:type=RequestMetrics,name=RequestsPerSec,request=AddPartitionsToTxn,version=0:Count=4\n\
             kafka.network:type=RequestMetrics,name=RequestsPerSec,request=AddPartitionsToTxn,version=5:Count=6\n";
        let totals = parse(output);
        assert_eq!(totals.get("Produce"), Some(&12));
        assert_eq!(totals.get("EndTxn"), Some(&3));
        assert_eq!(totals.get("AddPartitionsToTxn"), Some(&4));
        assert_eq!(totals.get("AddPartitionsToTxn v4+"), Some(&6));
        assert_eq!(totals.len(), 4);
    }

    #[test]
    fn differences_per_record_and_second() {
        let before = parse("x:type=R,request=EndTxn,version=1:Count=10\n");
        let after = parse(
            "x:type=R,request=EndTxn,version=1:Count=30\n\
             x:type=R,request=AddPartitionsToTxn,version=3:Count=40\n",
        );
        let counts = RequestCounts::between(&before, &after, 4.0, 2000);
        assert_eq!(counts.counts["EndTxn"], 20);
        assert_eq!(counts.counts["AddPartitionsToTxn"], 40);
        assert_eq!(counts.counts["WriteTxnMarkers"], 0);
        assert_eq!(counts.per_1k("EndTxn"), Some(10.0));
        assert_eq!(counts.per_second("AddPartitionsToTxn"), Some(10.0));
    }
}
