//! The `troika bench` workloads on the async executor (the fourth mode).
//!
//! Each function starts an [`AsyncExecutor`], runs its workload and returns
//! an [`AsyncRun`] whose fields match the bench's own measurements, so the
//! bench only copies them over. Wall time includes starting and stopping the
//! executor, as the other modes' does.

// Called by `troika bench` once its async mode is wired; tested here.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use troika::aio::AsyncExecutor;

use crate::primes::{SEED_NUMBER, is_prime_trial};

/// What one async run measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AsyncRun {
    /// The runtime's worker threads, or for `io` the tasks in flight at once.
    pub(crate) workers: usize,
    /// Wall time of the whole run.
    pub(crate) wall: Duration,
    /// Tasks per second (overhead and io).
    pub(crate) throughput: Option<f64>,
    /// Round-trip latency percentiles (p50, p99) of one task at a time (overhead).
    pub(crate) latency: Option<(Duration, Duration)>,
}

/// The seed's CPU experiment as coroutines: `tasks` futures, each running
/// `is_prime(112272535095293)` by trial division, on a runtime with `workers`
/// threads. A coroutine that computes holds its thread, so this scales with
/// the runtime's threads, not with the number of tasks.
pub(crate) fn cpu(tasks: u64, workers: usize) -> anyhow::Result<AsyncRun> {
    let start = Instant::now();
    let executor = AsyncExecutor::builder().workers(workers).build()?;
    for prime in executor.map(
        |n| async move { is_prime_trial(black_box(n)) },
        (0..tasks).map(|_| SEED_NUMBER),
    ) {
        anyhow::ensure!(prime?, "the seed's number is prime");
    }
    drop(executor);
    Ok(AsyncRun {
        workers,
        wall: start.elapsed(),
        throughput: None,
        latency: None,
    })
}

/// Many trivial futures: throughput when every result is in, then the round
/// trip of one task at a time (submit from sync code, wait for the handle).
pub(crate) fn overhead(tasks: u64, workers: usize, samples: u64) -> anyhow::Result<AsyncRun> {
    let start = Instant::now();
    let executor = AsyncExecutor::builder().workers(workers).build()?;
    let handles: Vec<_> = (0..tasks)
        .map(|i| executor.submit(async move { trivial(i) }))
        .collect();
    let mut sum = 0u64;
    for handle in handles {
        sum = sum.wrapping_add(handle.result()?);
    }
    let wall = start.elapsed();
    black_box(sum);
    let mut latencies = Vec::with_capacity(samples.min(1 << 20) as usize);
    for i in 0..samples {
        let t = Instant::now();
        black_box(executor.submit(async move { trivial(i) }).result()?);
        latencies.push(t.elapsed());
    }
    drop(executor);
    Ok(AsyncRun {
        workers,
        wall,
        throughput: Some(tasks as f64 / wall.as_secs_f64().max(1e-9)),
        latency: Some(percentiles(latencies)),
    })
}

/// The I/O workload: `tasks` futures that each wait `wait` on a tokio timer,
/// all in flight at once (that is what coroutines are for), on a runtime with
/// `workers` threads. `workers` in the result is the tasks in flight.
pub(crate) fn io(tasks: u64, wait: Duration, workers: usize) -> anyhow::Result<AsyncRun> {
    let start = Instant::now();
    let executor = AsyncExecutor::builder().workers(workers).build()?;
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            executor.submit(async move {
                tokio::time::sleep(wait).await;
                i
            })
        })
        .collect();
    let mut sum = 0u64;
    for handle in handles {
        sum = sum.wrapping_add(handle.result()?);
    }
    black_box(sum);
    drop(executor);
    let wall = start.elapsed();
    Ok(AsyncRun {
        workers: usize::try_from(tasks).unwrap_or(usize::MAX),
        wall,
        throughput: Some(tasks as f64 / wall.as_secs_f64().max(1e-9)),
        latency: None,
    })
}

#[inline(never)]
fn trivial(i: u64) -> u64 {
    i.wrapping_mul(2).wrapping_add(1)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_runs() {
        let run = cpu(2, 2).unwrap();
        assert_eq!(run.workers, 2);
        let run = overhead(100, 2, 10).unwrap();
        assert!(run.throughput.is_some() && run.latency.is_some());
        let run = io(20, Duration::from_millis(5), 2).unwrap();
        assert_eq!(run.workers, 20);
    }
}
