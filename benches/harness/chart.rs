//! The report's chart, as a hand-written SVG: median drain throughput per contender (top) and
//! end-to-end latency percentiles at the latency load (bottom).

use std::fmt::Write as _;

use crate::report::Summary;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 170.0;
const BAR_H: f64 = 22.0;
const GAP: f64 = 10.0;
const PLOT_W: f64 = WIDTH - LABEL_W - 150.0;
const COLORS: [&str; 3] = ["#4c78a8", "#f58518", "#e45756"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart for `summaries`, titled `title`.
pub fn svg(title: &str, latency_caption: &str, summaries: &[Summary]) -> String {
    let n = summaries.len() as f64;
    let top_h = 40.0 + n * (BAR_H + GAP);
    let lat_row = 3.0 * 14.0 + GAP;
    let bottom_h = 50.0 + n * lat_row;
    let height = 50.0 + top_h + bottom_h + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="24" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );

    // Throughput.
    let mut y = 50.0;
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" font-weight="bold">Drain throughput, records/s (median; ratio to kstage-eos)</text>"##,
        y + 12.0
    );
    y += 28.0;
    let max_rps = summaries
        .iter()
        .filter_map(|x| x.records_per_s)
        .fold(1.0, f64::max);
    for x in summaries {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LABEL_W - 8.0,
            y + BAR_H * 0.7,
            x.contender.name()
        );
        if let Some(rps) = x.records_per_s {
            let w = (rps / max_rps * PLOT_W).max(1.0);
            let _ = writeln!(
                s,
                r##"<rect x="{LABEL_W}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{}"/>"##,
                if x.contender == crate::contender::Kind::KstageEos {
                    "#54a24b"
                } else {
                    COLORS[0]
                }
            );
            let ratio = x
                .ratio_to_kstage_eos
                .map(|r| format!(" ({r:.2}×)"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}">{:.0}{}</text>"##,
                LABEL_W + w + 6.0,
                y + BAR_H * 0.7,
                rps,
                ratio
            );
        } else {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#888">no completed run</text>"##,
                LABEL_W + 6.0,
                y + BAR_H * 0.7
            );
        }
        y += BAR_H + GAP;
    }

    // Latency.
    y += 20.0;
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" font-weight="bold">{}</text>"##,
        y + 12.0,
        escape(latency_caption)
    );
    y += 22.0;
    for (i, name) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let lx = LABEL_W + i as f64 * 80.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{name}</text>"##,
            COLORS[i],
            lx + 16.0,
            y + 10.0
        );
    }
    y += 22.0;
    let max_ms = summaries
        .iter()
        .filter_map(|x| x.p999_ms)
        .fold(1.0, f64::max);
    for x in summaries {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LABEL_W - 8.0,
            y + 3.0 * 14.0 / 2.0 + 4.0,
            x.contender.name()
        );
        let values = [x.p50_ms, x.p99_ms, x.p999_ms];
        if values.iter().all(Option::is_none) {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#888">not measured</text>"##,
                LABEL_W + 6.0,
                y + 25.0
            );
        }
        for (i, value) in values.iter().enumerate() {
            if let Some(ms) = value {
                let w = (ms / max_ms * PLOT_W).max(1.0);
                let by = y + i as f64 * 14.0;
                let _ = writeln!(
                    s,
                    r##"<rect x="{LABEL_W}" y="{by}" width="{w:.1}" height="12" fill="{}"/><text x="{:.1}" y="{}" font-size="11">{ms:.1}</text>"##,
                    COLORS[i],
                    LABEL_W + w + 4.0,
                    by + 10.0
                );
            }
        }
        y += lat_row;
    }
    let _ = writeln!(s, "</svg>");
    s
}
