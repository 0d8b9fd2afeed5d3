//! Printing bench results: a table for people, JSON lines for programs.

use std::io::Write;

use super::Row;

/// One JSON object on one line.
pub(crate) fn json_line(out: &mut impl Write, row: &Row) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, row)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn fmt_opt(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"))
}

fn fmt_rate(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

/// The table: one line per (workload, mode).
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
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                serde_json::to_value(r.workload)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                serde_json::to_value(r.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.workers.to_string(),
                r.tasks.to_string(),
                format!("{:.3} s", r.wall_s),
                fmt_opt(r.speedup, 2).to_string() + "x",
                fmt_opt(r.efficiency, 2),
                fmt_rate(r.tasks_per_s),
                r.p50_us
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs")),
                r.p99_us
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs")),
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
            let pad = width - cell.chars().count();
            if i < 2 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
            text.push_str("  ");
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header.map(str::to_owned))?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule)?;
    for row in &cells {
        line(out, row)?;
    }
    out.flush()?;
    Ok(())
}
