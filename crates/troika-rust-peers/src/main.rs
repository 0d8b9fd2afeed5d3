//! `troika-rust-peers`: troika's bench workloads on the Rust libraries a user
//! would pick instead of troika — rayon, tokio, the `threadpool` crate and
//! procspawn's process pool — printing the same JSON lines as
//! `troika bench --json`, so `troika bench --compare-rust` can put them in the
//! same table.
//!
//! ```text
//! troika-rust-peers [--workload cpu,io,overhead,payload] [--tasks N]
//!                   [--workers N] [--payload-sizes 8,65536,...] [--deadline-s S]
//! ```
//!
//! Every workload is the one `troika bench` runs (see `workloads.rs`): the
//! same task bodies, the same counts, and the same clock (pool start and stop
//! included for cpu, io and overhead; only the transfers for payload).

mod exec;
mod procspawn_peer;
mod workloads;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// One measured (workload, mode): the fields `troika bench --json` prints.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Row {
    pub(crate) workload: &'static str,
    pub(crate) mode: String,
    pub(crate) workers: usize,
    pub(crate) tasks: u64,
    pub(crate) wall_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tasks_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mb_per_s: Option<f64>,
    /// Set when the mode did not finish within `--deadline-s`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) hung: bool,
}

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) workloads: Vec<String>,
    pub(crate) tasks: Option<u64>,
    pub(crate) workers: usize,
    pub(crate) sizes: Vec<usize>,
    pub(crate) deadline: Duration,
    pub(crate) modes: Option<Vec<String>>,
}

const USAGE: &str = "usage: troika-rust-peers [--workload cpu,io,overhead,payload|all] [--tasks N] \
[--workers N] [--payload-sizes BYTES,...] [--modes MODE,...] [--deadline-s SECONDS]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        workloads: workloads::ALL.iter().map(|w| (*w).to_owned()).collect(),
        tasks: None,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sizes: troika_workloads::payload::SIZES.to_vec(),
        deadline: Duration::from_secs(120),
        modes: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--workload" => {
                let value = value()?;
                options.workloads = if value == "all" {
                    workloads::ALL.iter().map(|w| (*w).to_owned()).collect()
                } else {
                    value.split(',').map(str::to_owned).collect()
                };
                for w in &options.workloads {
                    if !workloads::ALL.contains(&w.as_str()) {
                        bail!("unknown workload '{w}' (cpu, io, overhead, payload or all)");
                    }
                }
            }
            "--tasks" => {
                let tasks: u64 = value()?.parse().context("--tasks: not a number")?;
                if tasks == 0 {
                    bail!("--tasks must be at least 1");
                }
                options.tasks = Some(tasks);
            }
            "--workers" => {
                options.workers = value()?.parse().context("--workers: not a number")?;
                if options.workers == 0 {
                    bail!("--workers must be at least 1");
                }
            }
            "--payload-sizes" => {
                options.sizes = value()?
                    .split(',')
                    .map(|s| s.parse::<usize>().context("--payload-sizes: not a number"))
                    .collect::<anyhow::Result<_>>()?;
                if options.sizes.contains(&0) {
                    bail!("--payload-sizes: a size must be at least 1 byte");
                }
            }
            "--modes" => {
                options.modes = Some(value()?.split(',').map(str::to_owned).collect());
            }
            "--deadline-s" => {
                let secs: f64 = value()?.parse().context("--deadline-s: not a number")?;
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("--deadline-s must be positive");
                }
                options.deadline = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    Ok(options)
}

fn main() -> std::process::ExitCode {
    // A procspawn worker process runs this binary again: `init` turns it into
    // a worker and never returns there.
    procspawn::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|options| run(&options)) {
        Ok(hung) => {
            if hung {
                // A hung pool's threads cannot be joined: leave without them.
                let _ = std::io::stdout().flush();
                std::process::exit(0);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("troika-rust-peers: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Run every asked workload in every mode, printing each row as it is done.
/// Returns whether some mode hung.
fn run(options: &Options) -> anyhow::Result<bool> {
    let mut hung = false;
    let stdout = std::io::stdout();
    for workload in &options.workloads {
        for row in workloads::run(workload, options)? {
            hung |= row.hung;
            let mut out = stdout.lock();
            serde_json::to_writer(&mut out, &row)?;
            writeln!(out)?;
            out.flush()?;
        }
    }
    Ok(hung)
}
