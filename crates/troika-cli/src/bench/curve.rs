//! The report's tasks/s curve: the overhead workload at 10^3, 10^4, …
//! `--curve-max` tasks per mode, so a reader sees where each mode stops
//! scaling.

use super::{Mode, Workload, workloads};

/// One point of a mode's curve.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) mode: &'static str,
    pub(crate) tasks: u64,
    pub(crate) tasks_per_s: f64,
}

/// The task counts: powers of ten from 1,000 up to `max`.
pub(crate) fn counts(max: u64) -> Vec<u64> {
    std::iter::successors(Some(1_000u64), |n| n.checked_mul(10))
        .take_while(|n| *n <= max)
        .collect()
}

/// Measure every mode at every count.
pub(crate) fn measure(modes: &[Mode], workers: usize, max: u64) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for &mode in modes {
        for tasks in counts(max) {
            let measured = workloads::measure(Workload::Overhead, mode, tasks, workers)?;
            points.push(Point {
                mode: mode.name(),
                tasks,
                tasks_per_s: measured
                    .throughput
                    .unwrap_or(tasks as f64 / measured.wall.as_secs_f64().max(1e-9)),
            });
        }
    }
    Ok(points)
}

/// Colours of the curves (more than the timeline's four: peers add modes).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#edc948", "#9c755f",
    "#ff9da7", "#bab0ac",
];

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 40.0;

/// One line of a chart: its name and its (x, y) points.
pub(crate) type Series = (String, Vec<(f64, f64)>);

/// A log–log line chart with a legend on the right; `x_label` and `y_label`
/// format tick values.
pub(crate) fn log_chart(
    title: &str,
    series: &[Series],
    x_label: impl Fn(f64) -> String,
    y_label: impl Fn(f64) -> String,
) -> String {
    use std::fmt::Write;
    let points = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return format!("<p class=\"meta\">{title}: no points.</p>");
    }
    // Whole decades, so the ticks fall on powers of ten.
    let (lx0, lx1) = (
        x0.log10().floor(),
        x1.log10().ceil().max(x0.log10().floor() + 1.0),
    );
    let (ly0, ly1) = (
        y0.log10().floor(),
        y1.log10().ceil().max(y0.log10().floor() + 1.0),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + plot_w * (x.log10() - lx0) / (lx1 - lx0);
    let sy = |y: f64| TOP + plot_h * (1.0 - (y.log10() - ly0) / (ly1 - ly0));
    let mut svg =
        format!(r#"<svg width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}">"#);
    for d in (lx0 as i32)..=(lx1 as i32) {
        let x = sx(10f64.powi(d));
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{b:.1}" class="grid"/><text x="{x:.1}" y="{ty:.1}" class="axis" text-anchor="middle">{label}</text>"#,
            b = TOP + plot_h,
            ty = TOP + plot_h + 16.0,
            label = x_label(10f64.powi(d)),
        );
    }
    for d in (ly0 as i32)..=(ly1 as i32) {
        let y = sy(10f64.powi(d));
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" class="grid"/><text x="{tx:.1}" y="{ty:.1}" class="axis" text-anchor="end">{label}</text>"#,
            r = LEFT + plot_w,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = y_label(10f64.powi(d)),
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<&(f64, f64)> = pts.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).collect();
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        // A limit (memcpy) is dashed: it is a ceiling, not a mode.
        let dash = if name == "memcpy" {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for (x, y) in &pts {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{name}: {} → {}</title></circle>"#,
                sx(*x),
                sy(*y),
                x_label(*x),
                y_label(*y),
            );
        }
        let ly = TOP + 8.0 + i as f64 * 17.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{r:.1}" width="12" height="4" fill="{color}"/><text x="{tx:.1}" y="{ty:.1}" class="label">{name}</text>"#,
            r = ly - 4.0,
            tx = lx + 18.0,
            ty = ly + 1.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `n` in the first of `units` (size, suffix) it reaches, as `{n / size:.0}{suffix}`.
fn scaled(n: f64, units: &[(f64, &str)]) -> Option<String> {
    units
        .iter()
        .find(|(size, _)| n >= *size)
        .map(|(size, suffix)| format!("{:.0}{suffix}", n / size))
}

/// "1k", "10M": a count for an axis.
pub(crate) fn count(n: f64) -> String {
    scaled(n, &[(1e9, "G"), (1e6, "M"), (1e3, "k")]).unwrap_or_else(|| {
        if n >= 1.0 || n <= 0.0 {
            format!("{n:.0}")
        } else {
            // 0.1, 0.01: as many decimals as the first digit needs.
            let decimals = (-n.log10()).ceil().max(1.0) as usize;
            format!("{n:.decimals$}")
        }
    })
}

/// "10 B", "1 kB", "100 MB": a decimal size, for an axis of powers of ten.
pub(crate) fn bytes_si(n: f64) -> String {
    scaled(n, &[(1e9, " GB"), (1e6, " MB"), (1e3, " kB")]).unwrap_or_else(|| format!("{n:.0} B"))
}

/// "8 B", "64 KiB", "1 MiB".
pub(crate) fn bytes(n: f64) -> String {
    const UNITS: [(f64, &str); 3] = [
        ((1u64 << 30) as f64, " GiB"),
        ((1u64 << 20) as f64, " MiB"),
        (1024.0, " KiB"),
    ];
    scaled(n, &UNITS).unwrap_or_else(|| format!("{n:.0} B"))
}

/// A duration in microseconds, for an axis.
pub(crate) fn micros(us: f64) -> String {
    scaled(us, &[(1e6, " s"), (1e3, " ms"), (1.0, " µs")])
        .unwrap_or_else(|| format!("{:.0} ns", us * 1e3))
}

/// The tasks/s curve's series, one per mode.
pub(crate) fn tasks_series(points: &[Point]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for p in points {
        let at = match series.iter().position(|(m, _)| m == p.mode) {
            Some(i) => i,
            None => {
                series.push((p.mode.to_owned(), Vec::new()));
                series.len() - 1
            }
        };
        series[at].1.push((p.tasks as f64, p.tasks_per_s));
    }
    series
}

#[cfg(test)]
mod tests {
    use super::{bytes, bytes_si, count, counts, micros};

    /// An axis label: the formatter, its number and the label it gives.
    type Case = (fn(f64) -> String, f64, &'static str);

    #[test]
    fn axis_labels_pick_the_largest_unit_reached() {
        let cases: [Case; 16] = [
            (count, 2.4e9, "2G"),
            (count, 10e6, "10M"),
            (count, 1e3, "1k"),
            (count, 999.0, "999"),
            (count, 0.0, "0"),
            (count, 0.05, "0.05"),
            (bytes_si, 1e9, "1 GB"),
            (bytes_si, 64e3, "64 kB"),
            (bytes_si, 8.0, "8 B"),
            (bytes, (1u64 << 30) as f64, "1 GiB"),
            (bytes, (64u64 << 20) as f64, "64 MiB"),
            (bytes, 65536.0, "64 KiB"),
            (bytes, 1023.0, "1023 B"),
            (micros, 2e6, "2 s"),
            (micros, 1400.0, "1 ms"),
            (micros, 0.25, "250 ns"),
        ];
        for (label, n, want) in cases {
            assert_eq!(label(n), want, "{n}");
        }
    }

    #[test]
    fn counts_are_powers_of_ten_up_to_the_cap() {
        assert_eq!(counts(1_000), [1_000]);
        assert_eq!(counts(999_999), [1_000, 10_000, 100_000]);
        assert_eq!(counts(10_000_000).len(), 5);
        assert_eq!(counts(u64::MAX).last(), Some(&10_000_000_000_000_000_000));
    }
}
