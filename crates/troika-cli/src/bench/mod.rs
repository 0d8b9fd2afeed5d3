//! `troika bench`: the seeds' experiment, measured in every mode.
//!
//! Each (workload, mode) pair is one [`Row`]: wall time, speedup over the
//! serial run of the same workload, and parallel efficiency (speedup divided
//! by the workers the mode used). Wall time includes starting and stopping the
//! pool, as the seed's timing does.

mod report;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

pub(crate) use crate::mode::Mode;

/// Options of `troika bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadChoice::All)]
    workload: WorkloadChoice,
    /// Comma-separated modes to run.
    #[arg(long, value_delimiter = ',', default_value = "serial,threads")]
    modes: Vec<String>,
    /// Tasks per workload (default: 100 for cpu, 100000 for overhead).
    #[arg(long)]
    tasks: Option<u64>,
    /// Workers per pool (default: the available parallelism).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadChoice {
    Cpu,
    Overhead,
    All,
}

/// A workload of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// The seed's trial-division `is_prime(112272535095293)`, many times.
    Cpu,
    /// Many trivial tasks: the executor's own cost per task.
    Overhead,
}

impl Workload {
    fn default_tasks(self) -> u64 {
        match self {
            Workload::Cpu => 100,
            Workload::Overhead => 100_000,
        }
    }
}

/// The measurements of one (workload, mode) run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    workload: Workload,
    mode: Mode,
    workers: usize,
    tasks: u64,
    wall_s: f64,
    /// Serial wall time over this mode's; `None` if no serial run was made.
    speedup: Option<f64>,
    /// Speedup over workers.
    efficiency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
}

/// What one measured run produced before speedups are known.
pub(crate) struct Measured {
    workers: usize,
    wall: Duration,
    /// For `overhead`: tasks per second, and round-trip latency percentiles.
    throughput: Option<f64>,
    latency: Option<(Duration, Duration)>,
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let workloads: &[Workload] = match args.workload {
        WorkloadChoice::Cpu => &[Workload::Cpu],
        WorkloadChoice::Overhead => &[Workload::Overhead],
        WorkloadChoice::All => &[Workload::Cpu, Workload::Overhead],
    };
    let mut modes = Vec::new();
    for name in &args.modes {
        let mode = Mode::parse(name).context("bad --modes")?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        bail!("--modes is empty (expected: serial, threads)");
    }
    if args.tasks == Some(0) {
        bail!("--tasks must be at least 1");
    }
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let mut rows = Vec::new();
    for &workload in workloads {
        let tasks = args.tasks.unwrap_or(workload.default_tasks());
        let measured = modes
            .iter()
            .map(|&mode| Ok((mode, workloads::measure(workload, mode, tasks, workers)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Speedups need the serial run of the same workload, even if not asked for.
        let serial_wall = match measured.iter().find(|(mode, _)| *mode == Mode::Serial) {
            Some((_, m)) => m.wall,
            None => workloads::measure(workload, Mode::Serial, tasks, workers)?.wall,
        };
        for (mode, m) in &measured {
            let row = Row::new(workload, *mode, tasks, m, serial_wall);
            if args.json {
                report::json_line(&mut std::io::stdout().lock(), &row)?;
            }
            rows.push(row);
        }
    }
    if !args.json {
        report::table(&mut std::io::stdout().lock(), &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

impl Row {
    fn new(workload: Workload, mode: Mode, tasks: u64, m: &Measured, serial: Duration) -> Row {
        let wall_s = m.wall.as_secs_f64().max(1e-9);
        let speedup = serial.as_secs_f64() / wall_s;
        Row {
            workload,
            mode,
            workers: m.workers,
            tasks,
            wall_s,
            speedup: Some(speedup),
            efficiency: Some(speedup / m.workers as f64),
            tasks_per_s: m.throughput,
            p50_us: m.latency.map(|(p50, _)| p50.as_secs_f64() * 1e6),
            p99_us: m.latency.map(|(_, p99)| p99.as_secs_f64() * 1e6),
        }
    }
}
