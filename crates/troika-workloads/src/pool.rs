//! Ready-made workloads for benchmarking a [`ProcessPool`]: the CPU-bound
//! experiment of Python's `ProcessPoolExecutor` tutorials and the per-task
//! overhead measurements.
//!
//! The functions are registered in this crate, so any binary that links it
//! can run them in its workers.
//!
//! # Examples
//!
//! ```
//! use troika::ProcessPool;
//! use troika_workloads::pool;
//!
//! fn main() {
//!     troika::init();
//!     let workers = ProcessPool::new(2).unwrap();
//!     let (primes, _elapsed) = pool::cpu(&workers, 97, 4).unwrap();
//!     assert_eq!(primes, 4);
//!     let latency = pool::round_trips(&workers, 100).unwrap();
//!     assert_eq!(latency.len(), 100);
//! }
//! ```

use std::time::{Duration, Instant};

use troika::{ErrorKind, ProcessPool, TaskError};

pub use crate::primes::{TUTORIAL_NUMBER, is_prime_trial};

/// How many times the tutorials check [`TUTORIAL_NUMBER`].
pub const TUTORIAL_REPEAT: usize = 100;

troika::remote! {
    /// [`is_prime_trial`] as a function workers can run.
    pub fn is_prime(n: u64) -> bool {
        is_prime_trial(n)
    }

    /// The overhead benchmarks' trivial task (Python peer: `inc`).
    pub fn inc(x: u64) -> u64 {
        x.wrapping_add(1)
    }
}

/// The tutorials' CPU experiment on `pool`: check `n` for primality `repeat`
/// times, one task each, and return how many were prime and the wall time.
pub fn cpu(pool: &ProcessPool, n: u64, repeat: usize) -> Result<(usize, Duration), TaskError> {
    let start = Instant::now();
    let handles: Vec<_> = (0..repeat).map(|_| pool.submit(is_prime, n)).collect();
    let mut primes = 0;
    for handle in handles {
        primes += usize::from(handle.result()?);
    }
    Ok((primes, start.elapsed()))
}

/// Round-trip latency of one trivial task at a time (submit, wait for the
/// result), `count` times. The latencies are returned in the order measured.
pub fn round_trips(pool: &ProcessPool, count: usize) -> Result<Vec<Duration>, TaskError> {
    // Warm up: every worker has started and answered once.
    for i in 0..pool.workers() as u64 * 4 {
        pool.submit(inc, i).result()?;
    }
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let start = Instant::now();
        pool.submit(inc, i).result()?;
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// Submit `count` trivial tasks as fast as possible, then wait for all;
/// returns the wall time (throughput is `count / time`).
pub fn submit_throughput(pool: &ProcessPool, count: usize) -> Result<Duration, TaskError> {
    pool.submit(inc, 0).result()?;
    let start = Instant::now();
    let handles: Vec<_> = (0..count as u64).map(|i| pool.submit(inc, i)).collect();
    for handle in handles {
        handle.result()?;
    }
    Ok(start.elapsed())
}

/// An ordered, chunked `map` of `count` trivial items; returns the wall time.
pub fn map_throughput(
    pool: &ProcessPool,
    count: usize,
    chunksize: usize,
) -> Result<Duration, TaskError> {
    pool.submit(inc, 0).result()?;
    let start = Instant::now();
    for (expected, value) in (1u64..).zip(
        pool.imap(inc, 0..count as u64, chunksize)
            .map_err(|e| TaskError::new(ErrorKind::Failed(e.to_string())))?,
    ) {
        if value? != expected {
            return Err(TaskError::new(ErrorKind::Failed(
                "map returned a wrong value".into(),
            )));
        }
    }
    Ok(start.elapsed())
}
