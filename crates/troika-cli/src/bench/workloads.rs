//! The workloads, run in each mode.

use std::hint::black_box;
use std::time::{Duration, Instant};

use troika::ThreadPool;

use super::{Measured, Mode, Workload};
use troika::primes::{SEED_NUMBER, is_prime_trial};

/// How many one-at-a-time round trips the overhead workload times for its
/// latency percentiles.
const LATENCY_SAMPLES: u64 = 10_000;

/// Run `workload` in `mode` and measure it.
pub(crate) fn measure(
    workload: Workload,
    mode: Mode,
    tasks: u64,
    workers: usize,
) -> anyhow::Result<Measured> {
    match workload {
        Workload::Cpu => cpu(mode, tasks, workers),
        Workload::Overhead => overhead(mode, tasks, workers),
    }
}

/// The seed's experiment: `is_prime(112272535095293)` `tasks` times.
fn cpu(mode: Mode, tasks: u64, workers: usize) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let workers = match mode {
        Mode::Serial => {
            for _ in 0..tasks {
                anyhow::ensure!(
                    is_prime_trial(black_box(SEED_NUMBER)),
                    "the seed's number is prime"
                );
            }
            1
        }
        Mode::Threads => {
            let pool = ThreadPool::new(workers)?;
            for prime in pool.map(
                |n| is_prime_trial(black_box(n)),
                (0..tasks).map(|_| SEED_NUMBER),
            ) {
                anyhow::ensure!(prime?, "the seed's number is prime");
            }
            drop(pool);
            workers
        }
        other => anyhow::bail!(
            "mode '{}' cannot run the cpu workload in this build",
            other.name()
        ),
    };
    Ok(Measured {
        workers,
        wall: start.elapsed(),
        throughput: None,
        latency: None,
    })
}

/// Many trivial tasks: throughput counted when every result is received, then
/// the round trip of one task at a time.
fn overhead(mode: Mode, tasks: u64, workers: usize) -> anyhow::Result<Measured> {
    let samples = tasks.min(LATENCY_SAMPLES);
    match mode {
        Mode::Serial => {
            let start = Instant::now();
            let mut sum = 0u64;
            for i in 0..tasks {
                sum = sum.wrapping_add(black_box(trivial(i)));
            }
            black_box(sum);
            let wall = start.elapsed();
            let latencies = (0..samples)
                .map(|i| {
                    let t = Instant::now();
                    black_box(trivial(black_box(i)));
                    t.elapsed()
                })
                .collect();
            Ok(Measured {
                workers: 1,
                wall,
                throughput: Some(tasks as f64 / wall.as_secs_f64().max(1e-9)),
                latency: Some(percentiles(latencies)),
            })
        }
        Mode::Threads => {
            let start = Instant::now();
            let pool = ThreadPool::new(workers)?;
            let handles: Vec<_> = (0..tasks)
                .map(|i| pool.submit(move || trivial(i)))
                .collect();
            let mut sum = 0u64;
            for handle in handles {
                sum = sum.wrapping_add(handle.result()?);
            }
            let wall = start.elapsed();
            black_box(sum);
            let mut latencies = Vec::with_capacity(samples as usize);
            for i in 0..samples {
                let t = Instant::now();
                black_box(pool.submit(move || trivial(i)).result()?);
                latencies.push(t.elapsed());
            }
            drop(pool);
            Ok(Measured {
                workers,
                wall,
                throughput: Some(tasks as f64 / wall.as_secs_f64().max(1e-9)),
                latency: Some(percentiles(latencies)),
            })
        }
        other => anyhow::bail!(
            "mode '{}' cannot run the overhead workload in this build",
            other.name()
        ),
    }
}

#[inline(never)]
fn trivial(i: u64) -> u64 {
    i.wrapping_mul(2).wrapping_add(1)
}

/// The 50th and 99th percentiles.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}
