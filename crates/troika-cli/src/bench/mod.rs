//! `troika bench`: the CPU, io, overhead and payload workloads, measured in every mode.
//!
//! Each (workload, mode) pair is one [`Row`]: wall time, speedup over the
//! serial run of the same workload, and parallel efficiency (speedup divided
//! by the workers the mode used). Wall time includes starting and stopping the
//! pool, as the Python tutorials' timing does.

mod cluster;
mod curve;
mod html;
mod payload;
mod python;
mod report;
mod rust;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

pub(crate) use crate::mode::Mode;

/// Options of `troika bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which workloads to run, comma-separated: cpu (112272535095293 tested
    /// by trial division, 100 times), io (200 waits of 50 ms), overhead
    /// (100,000 trivial tasks), payload (echo tasks of 8 B, 64 KiB, 1 MiB and
    /// 64 MiB, against the machine's memcpy rate), or all (cpu, io, overhead).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<WorkloadChoice>,
    /// Comma-separated modes to run (default: every available mode).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// Tasks per workload (default: 100 for cpu, 200 for io, 100000 for overhead).
    #[arg(long)]
    tasks: Option<u64>,
    /// Workers per pool for cpu and overhead (default: the available
    /// parallelism); io uses the concurrency that suits each mode.
    #[arg(long)]
    workers: Option<usize>,
    /// Run each (workload, mode) this many times and report the median with
    /// the min–max.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report (charts and per-worker timelines).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Also run the same workloads in CPython (python3 on the PATH: a plain
    /// loop, ThreadPoolExecutor, ProcessPoolExecutor, asyncio for io) and add its
    /// rows, so the comparison comes from one run.
    #[arg(long)]
    compare_python: bool,
    /// Also run the same workloads on rayon, tokio, the threadpool crate and
    /// procspawn (the `troika-rust-peers` binary next to troika, or
    /// $TROIKA_RUST_PEERS) and add their rows and a "troika vs Rust peers" line.
    #[arg(long)]
    compare_rust: bool,
    /// The largest task count of the report's tasks/s curve (from 1,000 up
    /// by powers of ten).
    #[arg(long, default_value_t = 1_000_000, value_name = "TASKS")]
    curve_max: u64,
    /// The payload workload's sizes in bytes, comma-separated (default: 8 B,
    /// 64 KiB, 1 MiB and 64 MiB).
    #[arg(long, value_delimiter = ',', value_name = "BYTES")]
    payload_sizes: Option<Vec<usize>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadChoice {
    Cpu,
    Io,
    Overhead,
    Payload,
    All,
}

/// A workload of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// Trial-division `is_prime(112272535095293)`, many times.
    Cpu,
    /// Tasks that wait 50 ms each: what coroutines are for.
    Io,
    /// Many trivial tasks: the executor's own cost per task.
    Overhead,
    /// Echo tasks of N bytes: what moving arguments and results costs.
    Payload,
}

impl Workload {
    fn default_tasks(self) -> u64 {
        match self {
            Workload::Cpu => 100,
            Workload::Io => 200,
            Workload::Overhead => 100_000,
            Workload::Payload => payload::DEFAULT_TASKS,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Cpu => "cpu",
            Workload::Io => "io",
            Workload::Overhead => "overhead",
            Workload::Payload => "payload",
        }
    }
}

/// The measurements of one (workload, mode), over `--repeat` runs.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    workload: Workload,
    /// A troika mode (`threads`) or a Python one (`python-processes`).
    mode: String,
    workers: usize,
    tasks: u64,
    /// Median wall time of the runs.
    wall_s: f64,
    wall_min_s: f64,
    wall_max_s: f64,
    runs: u32,
    /// Serial wall time over this mode's.
    speedup: f64,
    /// Speedup over workers.
    efficiency: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
    /// For payload: the argument's (and the result's) size.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_bytes: Option<u64>,
    /// For payload: MB/s, the argument and the result counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    mb_per_s: Option<f64>,
    /// Which worker ran which task when, from the median run (for the report).
    #[serde(skip)]
    spans: Vec<Span>,
}

/// One task on the timeline: the worker that ran it, and when (seconds since
/// the run started).
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
pub(crate) struct Span {
    pub(crate) worker: usize,
    pub(crate) start: f64,
    pub(crate) end: f64,
}

/// What one run produced.
#[derive(Clone, Debug)]
pub(crate) struct Measured {
    workers: usize,
    wall: Duration,
    /// For `overhead`: tasks per second, and round-trip latency percentiles.
    throughput: Option<f64>,
    latency: Option<(Duration, Duration)>,
    spans: Vec<Span>,
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let mut workloads: Vec<Workload> = Vec::new();
    for choice in &args.workload {
        let chosen: &[Workload] = match choice {
            WorkloadChoice::Cpu => &[Workload::Cpu],
            WorkloadChoice::Io => &[Workload::Io],
            WorkloadChoice::Overhead => &[Workload::Overhead],
            WorkloadChoice::Payload => &[Workload::Payload],
            WorkloadChoice::All => &[Workload::Cpu, Workload::Io, Workload::Overhead],
        };
        for &w in chosen {
            if !workloads.contains(&w) {
                workloads.push(w);
            }
        }
    }
    if args.curve_max < 1_000 {
        bail!("--curve-max must be at least 1000");
    }
    let sizes = args
        .payload_sizes
        .clone()
        .unwrap_or_else(|| payload::SIZES.to_vec());
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--payload-sizes: each size must be at least 1 byte");
    }
    // `cluster` is not a mode of one machine: its rows come from a local
    // Redis and local workers (bench/cluster.rs), and only when asked for.
    let cluster = args
        .modes
        .as_ref()
        .is_some_and(|names| names.iter().any(|n| n.trim() == "cluster"));
    let modes = match &args.modes {
        None => crate::mode::AVAILABLE.to_vec(),
        Some(names) => {
            let mut modes = Vec::new();
            for name in names.iter().filter(|n| n.trim() != "cluster") {
                let mode = Mode::parse(name).context("bad --modes")?;
                if !modes.contains(&mode) {
                    modes.push(mode);
                }
            }
            modes
        }
    };
    if modes.is_empty() && !cluster {
        bail!("--modes is empty");
    }
    if args.tasks == Some(0) {
        bail!("--tasks must be at least 1");
    }
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if let Some(path) = &args.report {
        // Fail before the runs, not after them.
        std::fs::File::create(path)
            .with_context(|| format!("cannot write --report {}", path.display()))?;
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let steps = workloads.len() as u64 * (modes.len() as u64 + 1) * u64::from(args.repeat);
    let progress =
        crate::progress::stderr_bar(Some(steps), "{bar:30} {pos}/{len} {msg} ({elapsed})", "");
    let mut rows = Vec::new();
    let mut serial_walls = Vec::new();
    let mut payload_serials: Vec<(u64, Duration)> = Vec::new();
    for &workload in &workloads {
        if workload == Workload::Payload {
            let emit = |row: &Row| {
                if args.json {
                    progress.suspend(|| report::json_line(&mut std::io::stdout().lock(), row))
                } else {
                    Ok(())
                }
            };
            payload_serials = payload_rows(
                &modes,
                &sizes,
                args.tasks,
                workers,
                args.repeat,
                &progress,
                &mut rows,
                emit,
            )?;
            continue;
        }
        let tasks = args.tasks.unwrap_or(workload.default_tasks());
        let runs_of = |mode: Mode| -> anyhow::Result<Vec<Measured>> {
            (0..args.repeat)
                .map(|_| {
                    progress.set_message(format!("{} on {}", workload.name(), mode.name()));
                    let measured = workloads::measure(workload, mode, tasks, workers);
                    progress.inc(1);
                    measured
                })
                .collect()
        };
        let measured = modes
            .iter()
            .map(|&mode| Ok((mode, runs_of(mode)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Speedups need the serial run of the same workload, even if not asked for.
        let serial_wall = match measured.iter().find(|(mode, _)| *mode == Mode::Serial) {
            Some((_, runs)) => median_run(runs).wall,
            None => median_run(&runs_of(Mode::Serial)?).wall,
        };
        serial_walls.push((workload, tasks, serial_wall));
        for (mode, runs) in measured {
            let row = Row::new(workload, mode.name().to_owned(), tasks, &runs, serial_wall);
            if args.json {
                progress.suspend(|| report::json_line(&mut std::io::stdout().lock(), &row))?;
            }
            rows.push(row);
        }
        if cluster && matches!(workload, Workload::Cpu | Workload::Overhead) {
            progress.set_message(format!("{} on cluster", workload.name()));
            let runs = (0..args.repeat)
                .map(|_| cluster::measure(workload, tasks, workers))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let row = Row::new(workload, "cluster".to_owned(), tasks, &runs, serial_wall);
            if args.json {
                progress.suspend(|| report::json_line(&mut std::io::stdout().lock(), &row))?;
            }
            rows.push(row);
        }
    }
    let mut python_failed = false;
    if args.compare_python {
        progress.set_message("the Python seed");
        if !python::available() {
            progress.suspend(|| eprintln!("troika: python3 not found: --compare-python skipped"));
        } else {
            let asked: Vec<(Workload, u64)> =
                serial_walls.iter().map(|(w, t, _)| (*w, *t)).collect();
            match python::run(&asked, workers) {
                Ok(runs) => {
                    for run in runs {
                        let Some((_, _, serial)) =
                            serial_walls.iter().find(|(w, _, _)| *w == run.workload)
                        else {
                            continue;
                        };
                        let row = Row::new(
                            run.workload,
                            run.mode,
                            run.tasks,
                            std::slice::from_ref(&run.measured),
                            *serial,
                        );
                        add_peer_row(&mut rows, row, args.json, &progress, |r, row| {
                            r.workload == row.workload
                        })?;
                    }
                }
                Err(e) => {
                    python_failed = true;
                    progress.suspend(|| eprintln!("troika: --compare-python: {e:#}"));
                }
            }
        }
    }
    let mut rust_failed = false;
    if args.compare_rust {
        progress.set_message("the Rust peers");
        match rust::locate() {
            Err(why) => progress.suspend(|| {
                eprintln!(
                    "troika: {why}: --compare-rust skipped; {}",
                    rust::HOW_TO_BUILD
                );
            }),
            Ok(binary) => match rust::run(&binary, &workloads, args.tasks, workers, &sizes) {
                Ok(peers) => {
                    for hung in &peers.hung {
                        progress.suspend(|| {
                            eprintln!(
                                "troika: --compare-rust: {hung} hung (stopped at its deadline)"
                            );
                        });
                    }
                    for run in peers.runs {
                        let size = run.payload.map(|(size, _)| size);
                        let serial = match size {
                            Some(size) => payload_serials
                                .iter()
                                .find(|(s, _)| *s == size)
                                .map(|(_, wall)| *wall),
                            None => serial_walls
                                .iter()
                                .find(|(w, _, _)| *w == run.workload)
                                .map(|(_, _, wall)| *wall),
                        };
                        let Some(serial) = serial else { continue };
                        let mut row = Row::new(
                            run.workload,
                            run.mode,
                            run.tasks,
                            std::slice::from_ref(&run.measured),
                            serial,
                        );
                        row.payload_bytes = size;
                        row.mb_per_s = run.payload.map(|(_, rate)| rate);
                        add_peer_row(&mut rows, row, args.json, &progress, |r, row| {
                            r.workload == row.workload && r.payload_bytes == row.payload_bytes
                        })?;
                    }
                }
                Err(e) => {
                    rust_failed = true;
                    progress.suspend(|| eprintln!("troika: --compare-rust: {e:#}"));
                }
            },
        }
    }
    let curve = if args.report.is_some() {
        progress.set_message("the tasks/s curve");
        curve::measure(&modes, workers, args.curve_max)?
    } else {
        Vec::new()
    };
    progress.finish_and_clear();
    if !args.json {
        report::table(&mut std::io::stdout().lock(), &rows)?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, html::render(&rows, &curve))
            .with_context(|| format!("cannot write --report {}", path.display()))?;
        if !args.json {
            println!("report: {}", path.display());
        }
    }
    Ok(if python_failed || rust_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A peer's row: printed at once with `--json`, and put in the table after
/// the last row it goes `with` (at the end when there is none).
fn add_peer_row(
    rows: &mut Vec<Row>,
    row: Row,
    json: bool,
    progress: &indicatif::ProgressBar,
    with: impl Fn(&Row, &Row) -> bool,
) -> anyhow::Result<()> {
    if json {
        progress.suspend(|| report::json_line(&mut std::io::stdout().lock(), &row))?;
    }
    let at = rows
        .iter()
        .rposition(|r| with(r, &row))
        .map_or(rows.len(), |i| i + 1);
    rows.insert(at, row);
    Ok(())
}

/// The payload workload: every size in every mode (and serially, for the
/// speedups), then the machine's memcpy rate. Returns the serial wall per size.
#[allow(
    clippy::too_many_arguments,
    reason = "the run's options, passed through"
)]
fn payload_rows(
    modes: &[Mode],
    sizes: &[usize],
    tasks: Option<u64>,
    workers: usize,
    repeat: u32,
    progress: &indicatif::ProgressBar,
    rows: &mut Vec<Row>,
    emit: impl Fn(&Row) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(u64, Duration)>> {
    let tasks = tasks.unwrap_or(payload::DEFAULT_TASKS);
    let mut serials = Vec::new();
    let mut all_modes = vec![Mode::Serial];
    all_modes.extend(modes.iter().filter(|m| **m != Mode::Serial));
    // (mode, size, tasks, runs with their MB/s)
    type Runs = Vec<(Measured, f64)>;
    let mut measured: Vec<(Mode, usize, u64, Runs)> = Vec::new();
    for &mode in &all_modes {
        progress.set_message(format!("payload on {}", mode.name()));
        for &size in sizes {
            let n = payload::tasks_for(size, tasks);
            let runs = (0..repeat)
                .map(|_| payload::measure(mode, size, n, workers))
                .collect::<anyhow::Result<Vec<_>>>()?;
            measured.push((mode, size, n, runs));
        }
        progress.inc(u64::from(repeat));
    }
    for (mode, size, _, runs) in &measured {
        let walls: Vec<Measured> = runs.iter().map(|(m, _)| m.clone()).collect();
        let median = median_run(&walls).wall;
        if *mode == Mode::Serial {
            serials.push((*size as u64, median));
        }
    }
    // Grouped by size, so each size's modes (and its peers) sit together.
    measured.sort_by_key(|(_, size, _, _)| *size);
    for (mode, size, n, runs) in measured {
        if mode == Mode::Serial && !modes.contains(&Mode::Serial) {
            continue;
        }
        let serial = serials
            .iter()
            .find(|(s, _)| *s == size as u64)
            .map_or(Duration::ZERO, |(_, wall)| *wall);
        let walls: Vec<Measured> = runs.iter().map(|(m, _)| m.clone()).collect();
        let median_wall = median_run(&walls).wall;
        let rate = runs
            .iter()
            .find(|(m, _)| m.wall == median_wall)
            .map_or(0.0, |(_, rate)| *rate);
        let mut row = Row::new(Workload::Payload, mode.name().to_owned(), n, &walls, serial);
        row.payload_bytes = Some(size as u64);
        row.mb_per_s = Some(rate);
        emit(&row)?;
        rows.push(row);
    }
    let (memcpy, rate) = payload::memcpy();
    let mut row = Row::new(
        Workload::Payload,
        "memcpy".to_owned(),
        payload::MEMCPY_COPIES,
        std::slice::from_ref(&memcpy),
        memcpy.wall,
    );
    row.payload_bytes = Some(payload::MEMCPY_SIZE);
    row.mb_per_s = Some(rate);
    emit(&row)?;
    rows.push(row);
    Ok(serials)
}

/// The run with the median wall time.
fn median_run(runs: &[Measured]) -> &Measured {
    let mut order: Vec<&Measured> = runs.iter().collect();
    order.sort_by_key(|m| m.wall);
    order[order.len() / 2]
}

impl Row {
    fn new(
        workload: Workload,
        mode: String,
        tasks: u64,
        runs: &[Measured],
        serial: Duration,
    ) -> Row {
        let median = median_run(runs);
        let wall_s = median.wall.as_secs_f64().max(1e-9);
        let speedup = serial.as_secs_f64() / wall_s;
        let walls = runs.iter().map(|m| m.wall.as_secs_f64());
        Row {
            workload,
            mode,
            workers: median.workers,
            tasks,
            wall_s,
            wall_min_s: walls.clone().fold(f64::INFINITY, f64::min),
            wall_max_s: walls.fold(0.0, f64::max),
            runs: runs.len() as u32,
            speedup,
            efficiency: speedup / median.workers as f64,
            tasks_per_s: median.throughput,
            p50_us: median.latency.map(|(p50, _)| p50.as_secs_f64() * 1e6),
            p99_us: median.latency.map(|(_, p99)| p99.as_secs_f64() * 1e6),
            payload_bytes: None,
            mb_per_s: None,
            spans: median.spans.clone(),
        }
    }
}
