//! The report's chart, drawn with plotters' SVG backend (no system fonts: the SVG names a
//! `sans-serif` family and the viewer renders it): median drain throughput per contender (top),
//! and end-to-end latency against offered load, one curve per contender, for p50, p99 and
//! p99.9 (bottom). A point is the median over the rounds at that load; with a single latency
//! load per contender each curve is one point.

use std::collections::BTreeMap;
use std::error::Error;

use plotters::prelude::*;

use crate::contender::Kind;
use crate::latency::LatencyRun;
use crate::report::{median, Summary};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
const FONT: &str = "sans-serif";

/// One contender's latency curve: (offered records/s, p50, p99, p99.9) ms, by load.
type Curve = Vec<(f64, f64, f64, f64)>;

/// The chart for `summaries` and the latency runs, titled `title`.
pub fn svg(
    title: &str,
    latency_caption: &str,
    summaries: &[Summary],
    latencies: &[LatencyRun],
) -> Result<String, Box<dyn Error>> {
    let mut out = String::new();
    draw(&mut out, title, latency_caption, summaries, latencies)?;
    Ok(out)
}

fn draw(
    out: &mut String,
    title: &str,
    latency_caption: &str,
    summaries: &[Summary],
    latencies: &[LatencyRun],
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let (top, bottom) = root.split_vertically(330);
    throughput(&top, summaries)?;
    let bottom = bottom.titled(latency_caption, (FONT, 14))?;
    let panels = bottom.split_evenly((1, 3));
    let curves = curves(latencies);
    let max_rate = curves.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    let min_ms = curves
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .clamp(0.5, 1000.0);
    let max_ms = curves.values().flatten().map(|p| p.3).fold(1.0, f64::max);
    let colours: BTreeMap<Kind, usize> = summaries
        .iter()
        .enumerate()
        .map(|(i, s)| (s.contender, i))
        .collect();
    type Pick = fn(&(f64, f64, f64, f64)) -> f64;
    let percentiles: [(&str, Pick); 3] = [("p50", |p| p.1), ("p99", |p| p.2), ("p99.9", |p| p.3)];
    for (index, (panel, (name, pick))) in panels.iter().zip(percentiles).enumerate() {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name}, ms (log scale)"), (FONT, 14))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(
                0.0..max_rate * 1.05,
                (min_ms / 2.0..max_ms * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("offered load, records/s")
            .x_labels(5)
            .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        for (kind, curve) in &curves {
            let colour = Palette99::pick(colours.get(kind).copied().unwrap_or(0)).to_rgba();
            let points: Vec<(f64, f64)> = curve.iter().map(|p| (p.0, pick(p).max(0.5))).collect();
            let series =
                chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
            if index == 0 {
                series
                    .label(kind.name())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            }
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )?;
        }
        if index == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 11))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// Horizontal bars of the median drain throughput, the value written after each bar.
fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    summaries: &[Summary],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let bars: Vec<(&str, f64)> = summaries
        .iter()
        .filter_map(|s| s.records_per_s.map(|r| (s.contender.name(), r)))
        .collect();
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.35;
    let rows = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("Median drain throughput, records/s", (FONT, 14))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max, 0.0..rows)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(6)
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    for (i, (name, rate)) in bars.iter().enumerate() {
        let y = rows - i as f64;
        let colour = Palette99::pick(i).to_rgba();
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.8), (*rate, y - 0.2)],
            colour.mix(0.7).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{name}: {rate:.0}"),
            (*rate + max * 0.01, y - 0.35),
            (FONT, 12),
        )))?;
    }
    Ok(())
}

/// Median p50 / p99 / p99.9 per contender and offered load, over the rounds that succeeded.
fn curves(latencies: &[LatencyRun]) -> BTreeMap<Kind, Curve> {
    let mut by_point: BTreeMap<(Kind, u64), Vec<&LatencyRun>> = BTreeMap::new();
    for run in latencies.iter().filter(|r| r.error.is_none()) {
        by_point
            .entry((run.contender, run.rate.round() as u64))
            .or_default()
            .push(run);
    }
    let mut curves: BTreeMap<Kind, Curve> = BTreeMap::new();
    for ((kind, rate), runs) in by_point {
        let med = |pick: fn(&LatencyRun) -> f64| {
            median(runs.iter().map(|r| pick(r)).collect()).unwrap_or(0.0)
        };
        curves.entry(kind).or_default().push((
            rate as f64,
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            med(|r| r.p999_ms),
        ));
    }
    curves
}
