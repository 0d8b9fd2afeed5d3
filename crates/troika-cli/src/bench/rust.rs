//! `--compare-rust`: the same workloads on rayon, tokio, the `threadpool`
//! crate and procspawn, run by the `troika-rust-peers` binary in the same
//! `troika bench` invocation, so the rows come from one run on one machine.
//!
//! The peers live in their own binary so that their dependencies stay out of
//! troika and out of this command. It is looked for in `$TROIKA_RUST_PEERS`,
//! then next to the `troika` executable.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::{Measured, Workload};

/// The binary's file name.
const BINARY: &str = "troika-rust-peers";

/// How to get the binary, for the message when it is missing.
pub(crate) const HOW_TO_BUILD: &str = "build it with `cargo build --release -p troika-rust-peers` \
(it lands next to troika) or point $TROIKA_RUST_PEERS at it";

/// How long one mode of a peer may take before it counts as hung (procspawn's
/// pool can stop answering); the whole run gets a deadline of its own.
const MODE_DEADLINE: Duration = Duration::from_secs(180);
const RUN_DEADLINE: Duration = Duration::from_secs(1800);

/// One line of the peers binary's output.
#[derive(Debug, Deserialize)]
struct PeerRow {
    workload: String,
    mode: String,
    workers: usize,
    tasks: u64,
    #[serde(default)]
    wall_s: f64,
    tasks_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    payload_bytes: Option<u64>,
    mb_per_s: Option<f64>,
    #[serde(default)]
    hung: bool,
}

/// A peer's run of one workload (and payload size) in one mode.
#[derive(Debug)]
pub(crate) struct PeerRun {
    pub(crate) workload: Workload,
    pub(crate) mode: String,
    pub(crate) tasks: u64,
    pub(crate) measured: Measured,
    /// For payload: the size and MB/s.
    pub(crate) payload: Option<(u64, f64)>,
}

/// What the peers binary reported.
#[derive(Debug, Default)]
pub(crate) struct PeerRuns {
    pub(crate) runs: Vec<PeerRun>,
    /// "mode on workload" of each mode that passed its deadline.
    pub(crate) hung: Vec<String>,
}

/// Where the peers binary is, if it is there.
pub(crate) fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TROIKA_RUST_PEERS") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "$TROIKA_RUST_PEERS ({}) is not a file",
                path.display()
            ))
        };
    }
    let beside = std::env::current_exe()
        .map_err(|e| format!("cannot find the troika executable: {e}"))?
        .with_file_name(BINARY);
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(format!(
            "{BINARY} not found next to troika ({})",
            beside.display()
        ))
    }
}

fn workload_of(name: &str) -> anyhow::Result<Workload> {
    Ok(match name {
        "cpu" => Workload::Cpu,
        "io" => Workload::Io,
        "overhead" => Workload::Overhead,
        "payload" => Workload::Payload,
        other => bail!("{BINARY} reported an unknown workload '{other}'"),
    })
}

/// Run the peers on `workloads`.
pub(crate) fn run(
    binary: &PathBuf,
    workloads: &[Workload],
    tasks: Option<u64>,
    workers: usize,
    sizes: &[usize],
) -> anyhow::Result<PeerRuns> {
    let names: Vec<&str> = workloads.iter().map(|w| w.name()).collect();
    let mut command = Command::new(binary);
    command
        .arg("--workload")
        .arg(names.join(","))
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--payload-sizes")
        .arg(
            sizes
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("--deadline-s")
        .arg(MODE_DEADLINE.as_secs().to_string());
    if let Some(tasks) = tasks {
        command.arg("--tasks").arg(tasks.to_string());
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("the peers' stdout")?;
    let stderr = child.stderr.take().context("the peers' stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: std::io::Result<Vec<String>> = BufReader::new(stdout).lines().collect();
        let _ = tx.send(lines);
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let lines = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(lines) => lines.context("cannot read the peers' output")?,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{BINARY} did not finish within {} s: stopped",
                RUN_DEADLINE.as_secs()
            );
        }
    };
    let status = child.wait().context("the peers binary did not finish")?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("{BINARY} failed ({status}): {}", errors.trim());
    }
    let mut out = PeerRuns::default();
    for line in lines {
        let row: PeerRow = serde_json::from_str(&line)
            .with_context(|| format!("bad line from {BINARY}: {line}"))?;
        let workload = workload_of(&row.workload)?;
        if row.hung {
            out.hung.push(format!("{} on {}", row.mode, row.workload));
            continue;
        }
        out.runs.push(PeerRun {
            workload,
            mode: row.mode,
            tasks: row.tasks,
            measured: Measured {
                workers: row.workers,
                wall: Duration::from_secs_f64(row.wall_s.max(0.0)),
                throughput: row.tasks_per_s,
                latency: row.p50_us.zip(row.p99_us).map(|(p50, p99)| {
                    (
                        Duration::from_secs_f64(p50.max(0.0) / 1e6),
                        Duration::from_secs_f64(p99.max(0.0) / 1e6),
                    )
                }),
                spans: Vec::new(),
            },
            payload: row.payload_bytes.zip(row.mb_per_s),
        });
    }
    Ok(out)
}

/// Whether a row's mode is a Rust peer's (`rayon::spawn`, `threadpool`, ...).
pub(crate) fn is_peer(mode: &str) -> bool {
    mode.contains("::") || mode == "threadpool"
}
