//! The payload workload: echo tasks whose argument and result are N bytes,
//! per mode, against the machine's `memcpy` rate measured in the same run.
//!
//! For each size, `tasks` echoes are submitted at once and every result
//! collected (MB/s counts the argument and the result), then up to
//! [`SAMPLES`] run one at a time (the round trip). Only the transfers are
//! timed: the pool is built and the arguments made beforehand. The counts are
//! the ones `troika-rust-peers` uses, so the rows compare.

use std::hint::black_box;
use std::time::{Duration, Instant};

use troika::{Handle, ProcessPool};

use super::{Measured, Mode};

/// Argument (and result) sizes: 8 B, 64 KiB, 1 MiB, 64 MiB.
pub(crate) const SIZES: [usize; 4] = [8, 64 << 10, 1 << 20, 64 << 20];

/// Tasks per size unless `--tasks` says otherwise.
pub(crate) const DEFAULT_TASKS: u64 = 1_000;

/// Round trips timed per size (at most).
const SAMPLES: u64 = 100;

/// Small echoes run before the timed ones.
const WARM_UP: usize = 16;

/// Bytes one size may send one way, to bound the run.
const BUDGET: usize = 256 << 20;

/// The buffer `memcpy` copies, and how many times.
const MEMCPY_BYTES: usize = 64 << 20;
const MEMCPY_TIMES: u32 = 8;

troika::remote! {
    /// The payload task in a worker process: the argument, back.
    fn echo_bytes(bytes: Vec<u8>) -> Vec<u8> {
        black_box(bytes)
    }
}

/// Tasks of one size: `tasks`, but at most [`BUDGET`] bytes one way (and at
/// least 2 tasks).
pub(crate) fn tasks_for(size: usize, tasks: u64) -> u64 {
    tasks.min((BUDGET / size).max(2) as u64)
}

/// A buffer of `size` bytes with a pattern the echo is checked against.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn echoed(echo: &[u8], size: usize) -> bool {
    echo.len() == size && echo.last().copied() == Some(((size - 1) % 251) as u8)
}

/// One size in one mode: the transfer phase's wall and round trips, and its
/// MB/s.
pub(crate) fn measure(
    mode: Mode,
    size: usize,
    tasks: u64,
    workers: usize,
) -> anyhow::Result<(Measured, f64)> {
    let template = pattern(size);
    let args: Vec<Vec<u8>> = (0..tasks).map(|_| template.clone()).collect();
    let (workers, wall, latencies) = match mode {
        Mode::Serial => {
            let start = Instant::now();
            let echoes: Vec<Vec<u8>> = args.into_iter().map(black_box).collect();
            let wall = start.elapsed();
            anyhow::ensure!(echoes.iter().all(|e| echoed(e, size)), "echoes came back");
            let latencies = (0..tasks.min(SAMPLES))
                .map(|_| {
                    let arg = template.clone();
                    let t = Instant::now();
                    black_box(black_box(arg));
                    t.elapsed()
                })
                .collect();
            (1, wall, latencies)
        }
        Mode::Threads => {
            let pool = troika::ThreadPool::builder().workers(workers).build()?;
            let (wall, lat) = transfers(&template, args, |a| pool.submit(move || black_box(a)))?;
            (workers, wall, lat)
        }
        Mode::Processes => {
            let pool = ProcessPool::builder().workers(workers).build()?;
            let (wall, lat) = transfers(&template, args, |a| pool.submit(echo_bytes, a))?;
            (workers, wall, lat)
        }
        Mode::Async => {
            let executor = troika::AsyncExecutor::builder().workers(workers).build()?;
            let (wall, lat) = transfers(&template, args, |a| {
                executor.submit(async move { black_box(a) })
            })?;
            (workers, wall, lat)
        }
    };
    let wall_s = wall.as_secs_f64().max(1e-9);
    let measured = Measured {
        workers,
        wall,
        throughput: Some(tasks as f64 / wall_s),
        latency: Some(super::workloads::percentiles(latencies)),
        spans: Vec::new(),
    };
    Ok((measured, 2.0 * size as f64 * tasks as f64 / wall_s / 1e6))
}

/// All `args` at once, then round trips of copies of `template`.
fn transfers(
    template: &[u8],
    args: Vec<Vec<u8>>,
    submit: impl Fn(Vec<u8>) -> Handle<Vec<u8>>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let size = template.len();
    let tasks = args.len() as u64;
    // Wake the workers first, so the first size does not pay for it.
    for _ in 0..WARM_UP {
        submit(vec![1]).result()?;
    }
    let start = Instant::now();
    let handles: Vec<_> = args.into_iter().map(&submit).collect();
    let echoes = handles
        .into_iter()
        .map(Handle::result)
        .collect::<Result<Vec<_>, _>>()?;
    let wall = start.elapsed();
    anyhow::ensure!(
        echoes.iter().all(|e| echoed(e, size)),
        "every echo came back whole"
    );
    drop(echoes);
    let mut latencies = Vec::new();
    for _ in 0..tasks.min(SAMPLES) {
        let arg = template.to_vec();
        let t = Instant::now();
        let echo = submit(arg).result()?;
        latencies.push(t.elapsed());
        anyhow::ensure!(echoed(&echo, size), "the echo came back whole");
    }
    Ok((wall, latencies))
}

/// The machine's copy rate: a 64 MiB buffer copied [`MEMCPY_TIMES`] times
/// (after one untimed copy that faults the pages in), in MB/s.
pub(crate) fn memcpy() -> (Measured, f64) {
    let source = pattern(MEMCPY_BYTES);
    let mut target = vec![0u8; MEMCPY_BYTES];
    target.copy_from_slice(&source);
    let start = Instant::now();
    for _ in 0..MEMCPY_TIMES {
        target.copy_from_slice(black_box(&source));
        black_box(&mut target);
    }
    let wall = start.elapsed();
    let wall_s = wall.as_secs_f64().max(1e-9);
    let measured = Measured {
        workers: 1,
        wall,
        throughput: None,
        latency: None,
        spans: Vec::new(),
    };
    (
        measured,
        MEMCPY_BYTES as f64 * f64::from(MEMCPY_TIMES) / wall_s / 1e6,
    )
}

/// The size `memcpy` copies.
pub(crate) const MEMCPY_SIZE: u64 = MEMCPY_BYTES as u64;

/// How many times `memcpy` copies its buffer (the memcpy row's task count).
pub(crate) const MEMCPY_COPIES: u64 = MEMCPY_TIMES as u64;
