//! `--compare-python`: the same workloads in CPython, run in the same
//! `troika bench` invocation so the ratios come from one run on one machine.
//!
//! The Python program (`python/seed_bench.py`, written for troika) is built
//! into the binary and fed to `python3 -`, so it works from any directory.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::{Measured, Span, Workload};

const SCRIPT: &str = include_str!("python/seed_bench.py");

/// One line of the Python program's output.
#[derive(Debug, Deserialize)]
struct PyRow {
    workload: String,
    mode: String,
    workers: usize,
    #[allow(dead_code, reason = "the count is checked against what was asked")]
    tasks: u64,
    wall_s: f64,
    #[serde(default)]
    spans: Vec<(usize, f64, f64)>,
    tasks_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// A Python run of one workload in one mode.
pub(crate) struct PyRun {
    pub(crate) workload: Workload,
    pub(crate) mode: String,
    pub(crate) tasks: u64,
    pub(crate) measured: Measured,
}

/// Whether `python3` can be run here.
pub(crate) fn available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run the Python program for `workloads` with the given task counts.
pub(crate) fn run(workloads: &[(Workload, u64)], workers: usize) -> anyhow::Result<Vec<PyRun>> {
    let tasks_of = |w: Workload| {
        workloads
            .iter()
            .find(|(x, _)| *x == w)
            .map_or(1, |(_, t)| *t)
    };
    let names: Vec<&str> = workloads.iter().map(|(w, _)| w.name()).collect();
    let mut child = Command::new("python3")
        .arg("-")
        .arg(names.join(","))
        .arg(tasks_of(Workload::Cpu).to_string())
        .arg(tasks_of(Workload::Io).to_string())
        .arg(tasks_of(Workload::Overhead).to_string())
        .arg(workers.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start python3")?;
    child
        .stdin
        .take()
        .context("python3's stdin")?
        .write_all(SCRIPT.as_bytes())
        .context("cannot send the program to python3")?;
    let output = child.wait_with_output().context("python3 did not finish")?;
    if !output.status.success() {
        bail!(
            "python3 failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8(output.stdout).context("python3 printed non-UTF-8 output")?;
    stdout
        .lines()
        .map(|line| {
            let row: PyRow = serde_json::from_str(line)
                .with_context(|| format!("bad line from python3: {line}"))?;
            let workload = match row.workload.as_str() {
                "cpu" => Workload::Cpu,
                "io" => Workload::Io,
                "overhead" => Workload::Overhead,
                other => bail!("python3 reported an unknown workload '{other}'"),
            };
            Ok(PyRun {
                workload,
                mode: row.mode,
                tasks: tasks_of(workload),
                measured: Measured {
                    workers: row.workers,
                    wall: Duration::from_secs_f64(row.wall_s.max(0.0)),
                    throughput: row.tasks_per_s,
                    latency: row.p50_us.zip(row.p99_us).map(|(p50, p99)| {
                        (
                            Duration::from_secs_f64(p50 / 1e6),
                            Duration::from_secs_f64(p99 / 1e6),
                        )
                    }),
                    spans: row
                        .spans
                        .into_iter()
                        .map(|(worker, start, end)| Span { worker, start, end })
                        .collect(),
                },
            })
        })
        .collect()
}
