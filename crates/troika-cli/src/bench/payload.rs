//! The payload workload: echo tasks whose argument and result are N bytes,
//! per mode, against the machine's `memcpy` rate measured in the same run.
//!
//! For each size, `tasks` echoes are submitted at once and every result
//! collected (MB/s counts the argument and the result), then up to
//! [`SAMPLES`] run one at a time (the round trip). Only the transfers are
//! timed: the pool is built and the arguments made beforehand. The workload
//! is `troika_workloads::payload`, the one `troika-rust-peers` runs, so the
//! rows compare.

use std::hint::black_box;
use std::time::{Duration, Instant};

use troika::{Handle, ProcessPool};
use troika_workloads::payload::{SAMPLES, echoed, pattern};
pub(crate) use troika_workloads::payload::{SIZES, tasks_for};

use super::{Measured, Mode};

/// Tasks per size unless `--tasks` says otherwise.
pub(crate) const DEFAULT_TASKS: u64 = 1_000;

/// The buffer `memcpy` copies, and how many times.
const MEMCPY_BYTES: usize = 64 << 20;
const MEMCPY_TIMES: u32 = 8;

troika::remote! {
    /// The payload task in a worker process: the argument, back.
    fn echo_bytes(bytes: Vec<u8>) -> Vec<u8> {
        black_box(bytes)
    }
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
    let (workers, wall, latencies) = match mode {
        Mode::Serial => {
            let args: Vec<Vec<u8>> = (0..tasks).map(|_| template.clone()).collect();
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
            let (wall, lat) = transfers(&template, tasks, |a| pool.submit(move || black_box(a)))?;
            (workers, wall, lat)
        }
        Mode::Processes => {
            let pool = ProcessPool::builder().workers(workers).build()?;
            let (wall, lat) = transfers(&template, tasks, |a| pool.submit(echo_bytes, a))?;
            (workers, wall, lat)
        }
        Mode::Async => {
            let executor = troika::AsyncExecutor::builder().workers(workers).build()?;
            let (wall, lat) = transfers(&template, tasks, |a| {
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

/// The payload workload through `submit`, waiting on each handle.
fn transfers(
    template: &[u8],
    tasks: u64,
    submit: impl Fn(Vec<u8>) -> Handle<Vec<u8>>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    troika_workloads::payload::transfers(template, tasks, submit, |h| {
        h.result().map_err(anyhow::Error::from)
    })
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
