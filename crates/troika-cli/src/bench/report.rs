//! Printing bench results: a table for people, JSON lines for programs.

use std::io::Write;

use super::{Row, Workload, curve, rust};

/// One JSON object on one line.
pub(crate) fn json_line(out: &mut impl Write, row: &Row) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, row)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn fmt_rate(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

/// MB/s: plain up to 99,999; beyond that (a pointer handed over, not a
/// copy) in powers of ten.
fn fmt_mb(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v >= 1e5 => format!("{v:.1e}"),
        Some(v) if v >= 10.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_us(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs"))
}

fn fmt_wall(row: &Row) -> String {
    if row.runs > 1 {
        format!(
            "{:.3} s ({:.3}–{:.3})",
            row.wall_s, row.wall_min_s, row.wall_max_s
        )
    } else {
        format!("{:.3} s", row.wall_s)
    }
}

/// The machine, for the footer: cores and CPU model.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

/// The fastest row of each workload (payload's sizes do not compare by wall
/// time, so it has none).
pub(crate) fn best(rows: &[Row]) -> Vec<(Workload, &Row)> {
    let mut best: Vec<(Workload, &Row)> = Vec::new();
    for row in rows.iter().filter(|r| r.workload != Workload::Payload) {
        match best.iter_mut().find(|(w, _)| *w == row.workload) {
            Some((_, current)) if row.wall_s < current.wall_s => *current = row,
            Some(_) => {}
            None => best.push((row.workload, row)),
        }
    }
    best
}

/// Per workload with Python rows: troika's best row, Python's best row, and
/// how many times faster troika's is.
pub(crate) fn versus_python(rows: &[Row]) -> Vec<(Workload, &Row, &Row, f64)> {
    let (python, troika): (Vec<Row>, Vec<Row>) = rows
        .iter()
        .filter(|r| !rust::is_peer(&r.mode))
        .cloned()
        .partition(|r| r.mode.starts_with("python-"));
    let best_py = best(&python);
    best(&troika)
        .into_iter()
        .filter_map(|(w, ours)| {
            let (_, theirs) = best_py.iter().find(|(pw, _)| *pw == w)?;
            let ours = rows
                .iter()
                .find(|r| r.workload == w && r.mode == ours.mode)?;
            let theirs = rows
                .iter()
                .find(|r| r.workload == w && r.mode == theirs.mode)?;
            Some((w, ours, theirs, theirs.wall_s / ours.wall_s))
        })
        .collect()
}

/// The troika mode each Rust peer compares with. rayon's `scope` and
/// `par_iter` hand back no handle per task, so they are shown but not
/// compared.
fn counterpart(peer: &str) -> Option<&'static str> {
    match peer {
        "rayon::scope" | "rayon::par_iter" => None,
        "tokio::spawn" => Some("async"),
        "procspawn::Pool" => Some("processes"),
        p if rust::is_peer(p) => Some("threads"),
        _ => None,
    }
}

/// A row's figure of merit, higher is better: MB/s for payload, tasks/s for
/// overhead, 1/wall otherwise; and how to print it.
fn merit(row: &Row) -> (f64, String) {
    if let Some(rate) = row.mb_per_s {
        (rate, format!("{} MB/s", fmt_mb(Some(rate))))
    } else if let Some(rate) = row.tasks_per_s {
        (rate, format!("{}/s", fmt_rate(Some(rate))))
    } else {
        (1.0 / row.wall_s, format!("{:.3} s", row.wall_s))
    }
}

/// Per workload (and payload size) with Rust peers' rows: each troika mode
/// against the best peer of its kind with a handle per task (threads against
/// `rayon::spawn`, threadpool and spawn_blocking; async against tokio::spawn;
/// processes against procspawn),
/// with how many times better troika's figure is.
pub(crate) fn versus_rust(rows: &[Row]) -> Vec<String> {
    let mut keys: Vec<(Workload, Option<u64>)> = Vec::new();
    for row in rows.iter().filter(|r| rust::is_peer(&r.mode)) {
        if !keys.contains(&(row.workload, row.payload_bytes)) {
            keys.push((row.workload, row.payload_bytes));
        }
    }
    keys.into_iter()
        .filter_map(|(workload, bytes)| {
            let of = rows
                .iter()
                .filter(|r| r.workload == workload && r.payload_bytes == bytes);
            let mut pairs = Vec::new();
            for ours in ["threads", "async", "processes"] {
                let Some(mine) = of.clone().find(|r| r.mode == ours) else {
                    continue;
                };
                let Some(theirs) = of
                    .clone()
                    .filter(|r| counterpart(&r.mode) == Some(ours))
                    .max_by(|a, b| merit(a).0.total_cmp(&merit(b).0))
                else {
                    continue;
                };
                let ((m, m_text), (t, t_text)) = (merit(mine), merit(theirs));
                pairs.push(format!(
                    "{ours} {m_text} vs {} {t_text} {:.2}×",
                    theirs.mode,
                    m / t
                ));
            }
            if pairs.is_empty() {
                return None;
            }
            let name = match bytes {
                Some(b) => format!("{} {}", workload.name(), curve::bytes(b as f64)),
                None => workload.name().to_owned(),
            };
            Some(format!("{name}: {}", pairs.join("; ")))
        })
        .collect()
}

/// The table: one line per (workload, mode), then the machine and the best modes.
pub(crate) fn table(out: &mut impl Write, rows: &[Row]) -> anyhow::Result<()> {
    let header = [
        "workload",
        "mode",
        "workers",
        "tasks",
        "wall",
        "speedup",
        "efficiency",
        "tasks/s",
        "p50",
        "p99",
        "MB/s",
    ];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                match r.payload_bytes {
                    Some(b) => format!("{} {}", r.workload.name(), curve::bytes(b as f64)),
                    None => r.workload.name().to_owned(),
                },
                r.mode.to_owned(),
                r.workers.to_string(),
                r.tasks.to_string(),
                fmt_wall(r),
                format!("{:.2}x", r.speedup),
                format!("{:.2}", r.efficiency),
                fmt_rate(r.tasks_per_s),
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_mb(r.mb_per_s),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            if i < 2 {
                text.push_str(cell);
                text.push_str(&pad);
            } else {
                text.push_str(&pad);
                text.push_str(cell);
            }
            text.push_str("  ");
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header.map(str::to_owned))?;
    line(out, &widths.map(|w| "-".repeat(w)))?;
    for row in &cells {
        line(out, row)?;
    }
    writeln!(out)?;
    writeln!(out, "machine: {}", machine())?;
    let best: Vec<String> = best(rows)
        .iter()
        .map(|(w, r)| format!("{} → {} ({:.3} s)", w.name(), r.mode, r.wall_s))
        .collect();
    writeln!(out, "best: {}", best.join(", "))?;
    let versus: Vec<String> = versus_python(rows)
        .iter()
        .map(|(w, ours, theirs, ratio)| {
            format!(
                "{} {ratio:.1}× ({} {:.3} s vs {} {:.3} s)",
                w.name(),
                ours.mode,
                ours.wall_s,
                theirs.mode,
                theirs.wall_s
            )
        })
        .collect();
    if !versus.is_empty() {
        writeln!(
            out,
            "troika vs Python, best mode each: {}",
            versus.join(", ")
        )?;
    }
    let rust = versus_rust(rows);
    if !rust.is_empty() {
        writeln!(
            out,
            "troika vs Rust peers (× > 1: troika ahead; each troika mode against the best peer of its kind with a handle per task):"
        )?;
        for line in rust {
            writeln!(out, "  {line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
