//! Medians, ratios and the Markdown report of a harness run.
//!
//! Ratios are taken per run pair: run `r` of a contender divided by run `r` of kstage exactly_once
//! (the same round, so both ran under the same conditions as nearly as the machine allows), and
//! the report gives the median of those ratios next to the medians of the raw values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::contender::Kind;
use crate::drain::DrainRun;
use crate::latency::LatencyRun;
use crate::requests::{RequestCounts, COUNTED};

/// The median of some values (the mean of the middle two for an even count); `None` if empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// One contender's medians.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The contender.
    pub contender: Kind,
    /// Throughput runs that completed, of those made.
    pub runs_completed: usize,
    /// Throughput runs made.
    pub runs: usize,
    /// Median drain throughput, records/s.
    pub records_per_s: Option<f64>,
    /// Median drain throughput, MB/s.
    pub mb_per_s: Option<f64>,
    /// Median of the per-round throughput ratios to kstage exactly_once.
    pub ratio_to_kstage_eos: Option<f64>,
    /// Median CPU seconds from start to done.
    pub cpu_s: Option<f64>,
    /// Median CPU seconds per million records while draining.
    pub cpu_s_per_million: Option<f64>,
    /// Median peak RSS, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Median of the per-round peak-RSS ratios to kstage exactly_once.
    pub rss_ratio_to_kstage_eos: Option<f64>,
    /// Median start-up time (start to first commit), s.
    pub startup_s: Option<f64>,
    /// Offered load of the latency runs, records/s.
    pub latency_rate: Option<f64>,
    /// Median p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// Median p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Median p99.9 latency, ms.
    pub p999_ms: Option<f64>,
    /// Latency runs that completed, of those made.
    pub latency_runs_completed: usize,
}

/// Builds the summaries, in the order the contenders were given.
pub fn summarise(
    contenders: &[Kind],
    drains: &[DrainRun],
    latencies: &[LatencyRun],
) -> Vec<Summary> {
    let ok: Vec<&DrainRun> = drains.iter().filter(|r| r.completed).collect();
    let base: BTreeMap<usize, &DrainRun> = ok
        .iter()
        .filter(|r| r.contender == Kind::KstageEos)
        .map(|r| (r.round, *r))
        .collect();
    contenders
        .iter()
        .map(|&kind| {
            let mine: Vec<&DrainRun> = ok.iter().copied().filter(|r| r.contender == kind).collect();
            let of = |f: &dyn Fn(&DrainRun) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let ratio = |f: &dyn Fn(&DrainRun) -> f64| {
                median(
                    mine.iter()
                        .filter_map(|r| base.get(&r.round).map(|b| f(r) / f(b)))
                        .collect(),
                )
            };
            let lat: Vec<&LatencyRun> = latencies
                .iter()
                .filter(|r| r.contender == kind && r.error.is_none())
                .collect();
            let lat_of =
                |f: &dyn Fn(&LatencyRun) -> f64| median(lat.iter().map(|r| f(r)).collect());
            Summary {
                contender: kind,
                runs_completed: mine.len(),
                runs: drains.iter().filter(|r| r.contender == kind).count(),
                records_per_s: of(&|r| r.records_per_s),
                mb_per_s: of(&|r| r.mb_per_s),
                ratio_to_kstage_eos: ratio(&|r| r.records_per_s),
                cpu_s: of(&|r| r.cpu_s),
                cpu_s_per_million: of(&|r| r.cpu_s_per_million),
                peak_rss_mib: of(&|r| r.peak_rss_mib),
                rss_ratio_to_kstage_eos: ratio(&|r| r.peak_rss_mib),
                startup_s: of(&|r| r.startup_s),
                latency_rate: lat_of(&|r| r.rate),
                p50_ms: lat_of(&|r| r.p50_ms),
                p99_ms: lat_of(&|r| r.p99_ms),
                p999_ms: lat_of(&|r| r.p999_ms),
                latency_runs_completed: lat.len(),
            }
        })
        .collect()
}

fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "–".into(),
    }
}

fn thousands(value: Option<f64>) -> String {
    let Some(v) = value else { return "–".into() };
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The report: how it was run, the medians table, and every run.
pub fn markdown(
    heading: &str,
    context_lines: &[String],
    summaries: &[Summary],
    drains: &[DrainRun],
    latencies: &[LatencyRun],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {heading}\n");
    for line in context_lines {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "\n| contender | runs ok | drain rec/s | MB/s | × kstage-eos | CPU s | CPU s / 1M rec | peak RSS MiB | RSS × kstage-eos | start-up s | latency load rec/s | p50 ms | p99 ms | p99.9 ms |"
    );
    let _ = writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in summaries {
        let _ = writeln!(
            md,
            "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.contender.name(),
            s.runs_completed,
            s.runs,
            thousands(s.records_per_s),
            num(s.mb_per_s, 1),
            num(s.ratio_to_kstage_eos, 2),
            num(s.cpu_s, 1),
            num(s.cpu_s_per_million, 2),
            num(s.peak_rss_mib, 0),
            num(s.rss_ratio_to_kstage_eos, 2),
            num(s.startup_s, 1),
            thousands(s.latency_rate),
            num(s.p50_ms, 1),
            num(s.p99_ms, 1),
            num(s.p999_ms, 1),
        );
    }
    let _ = writeln!(md, "\nContenders:\n");
    for s in summaries {
        let _ = writeln!(
            md,
            "- `{}`: {}",
            s.contender.name(),
            s.contender.description()
        );
    }
    let _ = writeln!(md, "\n### Every throughput run\n");
    let _ = writeln!(
        md,
        "| round | contender | rec/s | start-up s | window s | wall s | CPU s | CPU s in window | broker CPU s in window | machine busy core-s in window | peak RSS MiB | output (records / missing / dup) | exit | error |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for r in drains {
        let output = r
            .output
            .map(|o| format!("{} / {} / {}", o.records, o.missing, o.duplicates))
            .unwrap_or_else(|| "not checked".into());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.0} | {} | {} | {} |",
            r.round + 1,
            r.contender.name(),
            thousands(Some(r.records_per_s)),
            r.startup_s,
            r.window_s,
            r.wall_s,
            r.cpu_s,
            r.cpu_window_s,
            num(r.broker_cpu_window_s, 1),
            r.machine_busy_window_s,
            r.peak_rss_mib,
            output,
            r.exit,
            r.error.as_deref().unwrap_or(""),
        );
    }
    if !latencies.is_empty() {
        let _ = writeln!(md, "\n### Every latency run\n");
        let _ = writeln!(
            md,
            "CPU µs per record: the contender's (and the broker's) CPU time over the load divided \
             by the records offered. Markers: output offsets that hold no record (one commit or \
             abort marker per output partition a transaction wrote to), per 1,000 input records.\n"
        );
        let _ = writeln!(
            md,
            "| round | contender | load × own max | offered rec/s | achieved rec/s | measured | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs / rec | broker CPU µs / rec | markers / 1k rec | error |"
        );
        let _ = writeln!(
            md,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in latencies {
            let per_record = |cpu_per_s: f64| cpu_per_s / r.rate.max(1.0) * 1e6;
            let markers = r
                .output_markers
                .zip(r.input_records)
                .filter(|(_, input)| *input > 0)
                .map(|(markers, input)| markers as f64 * 1000.0 / input as f64);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                r.round + 1,
                r.contender.name(),
                num(r.load_fraction, 2),
                thousands(Some(r.rate)),
                thousands(Some(r.achieved_rate)),
                r.measured,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_ms,
                per_record(r.cpu_per_s),
                num(r.broker_cpu_per_s.map(per_record), 1),
                num(markers, 1),
                r.error.as_deref().unwrap_or(""),
            );
        }
        broker_requests(&mut md, latencies);
    }
    md
}

/// The broker's request counts of each latency run that has them: per 1,000 records offered,
/// and per second in brackets.
fn broker_requests(md: &mut String, latencies: &[LatencyRun]) {
    let counted: Vec<(&LatencyRun, &RequestCounts)> = latencies
        .iter()
        .filter_map(|r| r.broker_requests.as_ref().map(|c| (r, c)))
        .collect();
    if counted.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Broker requests per latency run\n\nCounted by the broker (JMX \
         `kafka.network:type=RequestMetrics,name=RequestsPerSec`) from just before the load until \
         the output was read: per 1,000 records offered (per second in brackets). Produce \
         includes the harness's load producer.\n"
    );
    let _ = writeln!(
        md,
        "| round | contender | load × own max | offered rec/s | window s | {} |",
        COUNTED.join(" | ")
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:{}|",
        "|---:".repeat(COUNTED.len())
    );
    for (r, counts) in counted {
        let cells: Vec<String> = COUNTED
            .iter()
            .map(|name| {
                format!(
                    "{} ({})",
                    num(counts.per_1k(name), 2),
                    num(counts.per_second(name), 1)
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {} |",
            r.round + 1,
            r.contender.name(),
            num(r.load_fraction, 2),
            thousands(Some(r.rate)),
            counts.window_s,
            cells.join(" | ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(thousands(Some(1234567.4)), "1,234,567");
        assert_eq!(thousands(Some(999.0)), "999");
    }
}
