//! The `--report` page: one self-contained HTML file (inline SVG and CSS,
//! nothing fetched) with, per workload, a bar chart of wall time per mode and
//! a per-worker timeline of each mode.

use std::fmt::Write;

use super::{Row, Workload, curve, report};

const WIDTH: f64 = 860.0;
const LABEL: f64 = 125.0;
const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(index: usize) -> &'static str {
    COLORS[index % COLORS.len()]
}

/// A readable time for an axis or a label.
fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// Horizontal bars: wall time per mode.
fn bar_chart(rows: &[&Row]) -> String {
    let max = rows
        .iter()
        .map(|r| r.wall_s)
        .fold(f64::MIN_POSITIVE, f64::max);
    let bar_h = 26.0;
    let height = rows.len() as f64 * (bar_h + 8.0) + 10.0;
    let mut svg = format!(
        r#"<svg width="{WIDTH}" height="{height}" role="img" aria-label="wall time per mode">"#
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 5.0 + i as f64 * (bar_h + 8.0);
        let w = ((WIDTH - LABEL - 200.0) * row.wall_s / max).max(1.0);
        let _ = write!(
            svg,
            r#"<text x="0" y="{ty}" class="label">{mode}</text><rect x="{LABEL}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{c}"><title>{mode}: {wall}</title></rect><text x="{tx:.1}" y="{ty}" class="value">{wall} · {speedup:.2}× · {workers}</text>"#,
            ty = y + bar_h * 0.7,
            mode = row.mode,
            c = color(i),
            tx = LABEL + w + 6.0,
            wall = seconds(row.wall_s),
            speedup = row.speedup,
            workers = plural(row.workers, "worker"),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// "1 worker", "2 workers".
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Lanes per worker, a box per task, on the run's own time axis.
fn timeline(row: &Row, index: usize) -> String {
    let lanes = row.spans.iter().map(|s| s.worker + 1).max().unwrap_or(1);
    let lane_h = if lanes > 16 { 4.0 } else { 14.0 };
    let plot_w = WIDTH - LABEL - 10.0;
    let end = row
        .spans
        .iter()
        .map(|s| s.end)
        .fold(row.wall_s.min(f64::MAX), f64::max)
        .max(f64::MIN_POSITIVE);
    let height = lanes as f64 * lane_h + 24.0;
    let mut svg = format!(
        r#"<svg width="{WIDTH}" height="{height}" role="img" aria-label="timeline of {mode}">"#,
        mode = row.mode
    );
    if lanes <= 16 {
        for lane in 0..lanes {
            let _ = write!(
                svg,
                r#"<text x="0" y="{y:.1}" class="lane">worker {lane}</text>"#,
                y = lane as f64 * lane_h + lane_h * 0.8
            );
        }
    } else {
        let _ = write!(
            svg,
            r#"<text x="0" y="12" class="lane">{lanes} workers</text>"#
        );
    }
    for span in &row.spans {
        let x = LABEL + plot_w * span.start / end;
        let w = (plot_w * (span.end - span.start) / end).max(0.5);
        let y = span.worker as f64 * lane_h + 1.0;
        let _ = write!(
            svg,
            r#"<rect x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{h:.1}" fill="{c}"/>"#,
            h = lane_h - 2.0,
            c = color(index)
        );
    }
    let axis_y = lanes as f64 * lane_h + 4.0;
    for tick in 0..=4 {
        let t = end * f64::from(tick) / 4.0;
        let x = LABEL + plot_w * f64::from(tick) / 4.0;
        let anchor = if tick == 4 { "end" } else { "start" };
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{y2:.1}" class="tick"/><text x="{x:.1}" y="{ty:.1}" class="axis" text-anchor="{anchor}">{label}</text>"#,
            y2 = axis_y + 4.0,
            ty = axis_y + 16.0,
            label = seconds(t)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn explain(workload: Workload) -> &'static str {
    match workload {
        Workload::Cpu => {
            "The CPU experiment: is_prime(112272535095293) by trial division, once per task. \
             The work is all computation, so it goes as fast as there are cores: threads and \
             processes split it across both, with no GIL to hold them back."
        }
        Workload::Io => {
            "Tasks that only wait (50 ms each). Waiting needs no core, so the more tasks wait at \
             once the sooner all are done: many threads help, and coroutines wait for all of them \
             at once on a single thread."
        }
        Workload::Overhead => {
            "Trivial tasks: what remains is each executor's own cost per task — queueing, waking \
             a worker and handing the result back. The timeline shows the first tasks only."
        }
        Workload::Payload => {
            "Echo tasks whose argument and result are N bytes: what moving data to a worker and \
             back costs. MB/s counts both directions; memcpy is this machine's copy rate, \
             measured in the same run, the limit for any copy. Threads (and the Rust thread \
             peers) hand over a pointer, so their MB/s is no copy rate at all."
        }
    }
}

/// Series per mode of the payload rows: `value` of each size; memcpy, one
/// size only, is drawn flat across all sizes.
fn payload_series(rows: &[&Row], value: impl Fn(&Row) -> Option<f64>) -> Vec<curve::Series> {
    let sizes: Vec<f64> = rows
        .iter()
        .filter(|r| r.mode != "memcpy")
        .filter_map(|r| r.payload_bytes)
        .map(|b| b as f64)
        .collect();
    let (lo, hi) = sizes
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let mut series: Vec<curve::Series> = Vec::new();
    for row in rows {
        let (Some(bytes), Some(y)) = (row.payload_bytes, value(row)) else {
            continue;
        };
        let points = if row.mode == "memcpy" && lo <= hi {
            vec![(lo, y), (hi, y)]
        } else {
            vec![(bytes as f64, y)]
        };
        match series.iter_mut().find(|(m, _)| *m == row.mode) {
            Some((_, p)) => p.extend(points),
            None => series.push((row.mode.clone(), points)),
        }
    }
    series
}

/// The payload section's charts: MB/s and round trip against size.
fn payload_charts(rows: &[&Row]) -> String {
    let rate = curve::log_chart(
        "MB/s against payload size",
        &payload_series(rows, |r| r.mb_per_s),
        curve::bytes_si,
        |v| format!("{} MB/s", curve::count(v)),
    );
    let trip = curve::log_chart(
        "round trip against payload size",
        &payload_series(rows, |r| r.p50_us.filter(|_| r.mode != "memcpy")),
        curve::bytes_si,
        curve::micros,
    );
    format!(
        "<h3>MB/s against payload size (both directions counted; memcpy is the limit)</h3>{rate}\
         <h3>Round trip (p50) against payload size</h3>{trip}"
    )
}

/// The tasks/s curve, if it was measured.
fn tasks_curve(points: &[curve::Point], has_payload: bool) -> String {
    if points.is_empty() {
        return String::new();
    }
    let chart = curve::log_chart(
        "tasks/s against number of tasks",
        &curve::tasks_series(points),
        curve::count,
        |v| format!("{}/s", curve::count(v)),
    );
    format!(
        "<section><h2>How cost grows</h2><p>Trivial tasks, all submitted at once, with a \
         handle each: tasks per second against the number of tasks (one run per point), so \
         the curve shows where each mode stops scaling.</p><h3>tasks/s against number of \
         tasks</h3>{chart}{note}</section>",
        note = if has_payload {
            "<p class=\"meta\">Round trip against payload size: in the payload section.</p>"
        } else {
            "<p class=\"meta\">Round trip against payload size: run with \
             <code>--workload payload</code> for that chart.</p>"
        }
    )
}

/// The whole page.
pub(crate) fn render(rows: &[Row], points: &[curve::Point]) -> String {
    let mut body = String::new();
    let mut workloads: Vec<Workload> = Vec::new();
    for row in rows {
        if !workloads.contains(&row.workload) {
            workloads.push(row.workload);
        }
    }
    for workload in workloads {
        let of: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        if workload == Workload::Payload {
            let _ = write!(
                body,
                "<section><h2>payload</h2><p>{explain}</p>{charts}</section>",
                explain = explain(workload),
                charts = payload_charts(&of),
            );
            continue;
        }
        let tasks = of.first().map_or(0, |r| r.tasks);
        let _ = write!(
            body,
            "<section><h2>{name} <small>{tasks} tasks</small></h2><p>{explain}</p><h3>Wall time per mode</h3>{bars}<h3>Which worker ran which task, when</h3>",
            name = workload.name(),
            explain = explain(workload),
            bars = bar_chart(&of),
        );
        for (i, row) in of.iter().enumerate() {
            if row.spans.is_empty() {
                // Rows from another program (the Rust peers) carry no timeline.
                continue;
            }
            let _ = write!(
                body,
                "<h4>{mode} — {workers}, {wall}, efficiency {eff:.2}</h4>{svg}",
                mode = row.mode,
                workers = plural(row.workers, "worker"),
                wall = seconds(row.wall_s),
                eff = row.efficiency,
                svg = timeline(row, i)
            );
        }
        body.push_str("</section>");
    }
    let has_payload = rows.iter().any(|r| r.workload == Workload::Payload);
    body.push_str(&tasks_curve(points, has_payload));
    let best: Vec<String> = report::best(rows)
        .iter()
        .map(|(w, r)| format!("{} → <b>{}</b>", w.name(), r.mode))
        .collect();
    let versus: Vec<String> = report::versus_python(rows)
        .iter()
        .map(|(w, ours, theirs, ratio)| {
            format!(
                "{} <b>{ratio:.1}×</b> ({} vs {})",
                w.name(),
                ours.mode,
                theirs.mode
            )
        })
        .collect();
    let versus = if versus.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"meta\">troika vs Python, best mode each: {}</p>",
            versus.join(", ")
        )
    };
    let rust = report::versus_rust(rows);
    let versus = if rust.is_empty() {
        versus
    } else {
        format!(
            "{versus}<p class=\"meta\">troika vs Rust peers (× &gt; 1: troika ahead; each troika mode against the best peer of its kind with a handle per task):<br>{}</p>",
            rust.iter()
                .map(|l| escape(l))
                .collect::<Vec<_>>()
                .join("<br>")
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>troika bench</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #222; }}
h1 {{ margin-bottom: 0; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
h2 small {{ color: #777; font-weight: normal; font-size: 60%; }}
h4 {{ margin: 1em 0 0.2em; font-weight: 600; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #333; }}
svg .value {{ fill: #555; }} svg .axis, svg .lane {{ fill: #777; font-size: 11px; }}
svg .tick {{ stroke: #aaa; }} svg .grid {{ stroke: #e4e4e4; }}
.meta {{ color: #555; }}
</style></head><body>
<h1>troika bench</h1>
<p class="meta">machine: {machine} · best: {best}</p>
{versus}
{body}
</body></html>
"#,
        machine = escape(&report::machine()),
        best = best.join(", "),
    )
}
