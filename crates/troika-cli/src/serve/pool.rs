//! The pool that does the CPU work of `/is_prime`, behind one small enum so
//! the handlers do not care whether it is made of threads or processes.
//!
//! A request's numbers go to the pool in a few chunks ([`chunks`]); each chunk
//! is one task that returns its verdicts. The handler awaits the tasks'
//! [`Handle`]s (a `Handle` is a `Future`), so no tokio worker ever blocks on
//! the CPU work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use troika::{ErrorKind, Handle, ProcessPool, SubmitErrorReason, TaskError, ThreadPool};
use troika_workloads::primes::{Algorithm, Verdict};

troika::remote! {
    /// One chunk of `/is_prime`, in a worker process. A request that ends
    /// early cancels it through its handle, which kills the worker, so no
    /// stop flag has to cross the process boundary.
    pub(crate) fn serve_check_chunk(numbers: Vec<u64>, algorithm: Algorithm, crash_on: Vec<u64>) -> Vec<Verdict> {
        if numbers.iter().any(|n| crash_on.contains(n)) {
            // Fault injection ([faults] crash_on): a worker that really dies.
            std::process::abort();
        }
        numbers.iter().map(|&n| algorithm.check(n)).collect()
    }
}

/// Which pool `--pool` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PoolKind {
    /// troika's process pool: a crashing check takes down only its worker.
    Processes,
    /// troika's thread pool.
    Threads,
}

/// The pool behind `/is_prime`.
#[derive(Debug)]
pub(crate) enum Backend {
    /// Chunks run as closures on troika's [`ThreadPool`].
    Threads(ThreadPool),
    /// Chunks run as [`serve_check_chunk`] in troika's [`ProcessPool`].
    Processes(ProcessPool),
}

/// What `/metrics` shows of the pool.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BackendStats {
    pub(crate) workers: usize,
    pub(crate) queued: usize,
    pub(crate) busy: usize,
    pub(crate) restarts: usize,
}

/// Why a chunk was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The pool's queue is full: shed the request (503).
    Full,
    /// The pool is shutting down (503).
    ShutDown,
}

/// What a request's chunks can check between numbers to stop early.
pub(crate) type StopFlag = Arc<AtomicBool>;

impl Backend {
    /// Start the pool. `task_timeout` bounds one chunk's run: a chunk that is
    /// still running when its request's deadline has passed is useless, so its
    /// worker is replaced (a thread cannot be killed; the process pool kills it).
    pub(crate) fn start(
        kind: PoolKind,
        workers: usize,
        queue_capacity: usize,
        task_timeout: Duration,
    ) -> anyhow::Result<Backend> {
        match kind {
            PoolKind::Threads => {
                let pool = ThreadPool::builder()
                    .workers(workers)
                    .name("serve-worker")
                    .queue_capacity(queue_capacity)
                    .task_timeout(task_timeout)
                    .build()?;
                Ok(Backend::Threads(pool))
            }
            PoolKind::Processes => {
                let pool = ProcessPool::builder()
                    .workers(workers)
                    .name("serve-worker")
                    .queue_capacity(queue_capacity)
                    .task_timeout(task_timeout)
                    .build()?;
                Ok(Backend::Processes(pool))
            }
        }
    }

    /// Queue one chunk of numbers. The task checks `stop` between numbers and
    /// gives up early once it is set (the request was answered or abandoned).
    pub(crate) fn try_check(
        &self,
        numbers: Vec<u64>,
        algorithm: Algorithm,
        stop: StopFlag,
        crash_on: Arc<[u64]>,
    ) -> Result<Handle<Vec<Verdict>>, Refused> {
        match self {
            Backend::Threads(pool) => pool
                .try_submit(move || check_chunk(&numbers, algorithm, &stop, &crash_on))
                .map_err(|e| refused(e.reason)),
            Backend::Processes(pool) => pool
                .try_submit(serve_check_chunk, (numbers, algorithm, crash_on.to_vec()))
                .map_err(|e| refused(e.reason)),
        }
    }

    /// Queue depth, busy workers and restarts, for `/metrics`.
    pub(crate) fn stats(&self) -> BackendStats {
        match self {
            Backend::Threads(pool) => {
                let s = pool.stats();
                BackendStats {
                    workers: s.workers,
                    queued: s.queued,
                    busy: s.busy,
                    restarts: s.restarts,
                }
            }
            Backend::Processes(pool) => {
                let s = pool.stats();
                BackendStats {
                    workers: s.workers,
                    queued: s.queued,
                    busy: s.busy,
                    restarts: s.restarts,
                }
            }
        }
    }

    /// The pool's name in logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Threads(_) => "threads",
            Backend::Processes(_) => "processes",
        }
    }

    /// Stop the pool: queued tasks are cancelled, running ones finish.
    pub(crate) fn shutdown(&self) {
        match self {
            Backend::Threads(pool) => pool.shutdown(true, true),
            Backend::Processes(pool) => pool.shutdown(true, true),
        }
    }
}

fn refused(reason: SubmitErrorReason) -> Refused {
    match reason {
        SubmitErrorReason::Full => Refused::Full,
        _ => Refused::ShutDown,
    }
}

/// The work of one pool task: check `numbers` in order, stopping early when
/// `stop` is set. This is the function the process pool will register.
pub(crate) fn check_chunk(
    numbers: &[u64],
    algorithm: Algorithm,
    stop: &AtomicBool,
    crash_on: &[u64],
) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(numbers.len());
    for &n in numbers {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if crash_on.contains(&n) {
            // Fault injection ([faults] crash_on): a worker that fails mid-task.
            panic!("fault injection: crash_on {n}");
        }
        match check_stoppable(n, algorithm, stop) {
            Some(verdict) => verdicts.push(verdict),
            None => break,
        }
    }
    verdicts
}

/// Divisors tried between two looks at the stop flag: a few milliseconds
/// of trial division at most.
const DIVISORS_PER_LOOK: u64 = 1 << 16;

/// [`Algorithm::check`], except that trial division, which takes seconds
/// near 2^64, looks at `stop` as it goes and gives the number up (`None`)
/// once it is set. Miller–Rabin takes microseconds and runs to its end.
pub(crate) fn check_stoppable(n: u64, algorithm: Algorithm, stop: &AtomicBool) -> Option<Verdict> {
    if algorithm != Algorithm::Trial {
        return Some(algorithm.check(n));
    }
    // Trial division, as `troika_workloads::primes::smallest_factor_trial`
    // does it: even numbers first, then every odd divisor up to the root.
    let factor = if n < 4 {
        None
    } else if n.is_multiple_of(2) {
        Some(2)
    } else {
        let limit = n.isqrt();
        let mut divisor = 3;
        let mut found = None;
        while divisor <= limit {
            let end = limit.min(divisor.saturating_add(2 * DIVISORS_PER_LOOK));
            while divisor <= end {
                if n.is_multiple_of(divisor) {
                    found = Some(divisor);
                    break;
                }
                divisor += 2;
            }
            if found.is_some() || divisor > limit {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
        }
        found
    };
    Some(Verdict {
        n,
        prime: n >= 2 && factor.is_none(),
        factor,
    })
}

/// Split `count` numbers into chunk sizes: a few tasks per worker so the work
/// spreads over the pool, but never chunks so small that the hand-off costs
/// more than the checks (Miller–Rabin takes about a microsecond a number).
pub(crate) fn chunk_len(count: usize, workers: usize, algorithm: Algorithm) -> usize {
    let min_chunk = match algorithm {
        Algorithm::Trial => 1,
        _ => 256,
    };
    let tasks = workers.max(1).saturating_mul(2);
    count.div_ceil(tasks).max(min_chunk).max(1)
}

/// How a failed pool task reads to the client: its status and message.
pub(crate) fn describe_failure(error: &TaskError) -> (u16, String) {
    match error.kind() {
        ErrorKind::TimedOut(_) => (504, "the check ran past the request deadline".into()),
        ErrorKind::Cancelled => (504, "the check was cancelled".into()),
        ErrorKind::ShutDown => (503, "the server is shutting down".into()),
        ErrorKind::WorkerDied(exit) => (
            503,
            format!("a pool worker died during the check ({exit}); it has been replaced, retry"),
        ),
        ErrorKind::Panicked(msg) => (
            503,
            format!("a pool worker failed during the check ({msg}); retry"),
        ),
        other => (503, format!("the pool could not run the check: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stoppable_trial_division_agrees_with_plain_trial_division() {
        let go = AtomicBool::new(false);
        let mut numbers: Vec<u64> = (0..2000).collect();
        numbers.extend([
            112_272_535_095_293,
            (1 << 31) - 1,
            65_537 * 65_537,
            65_521 * 65_539,
            4_294_967_291 * 3,
            u64::from(u32::MAX) * 2 + 1,
        ]);
        for n in numbers {
            assert_eq!(
                check_stoppable(n, Algorithm::Trial, &go),
                Some(Algorithm::Trial.check(n)),
                "{n}"
            );
        }
    }

    #[test]
    fn a_stopped_trial_division_gives_up_the_number() {
        let stopped = AtomicBool::new(true);
        // The largest prime below 2^64: 2^31 divisions if it ran to its end.
        assert_eq!(
            check_stoppable(18_446_744_073_709_551_557, Algorithm::Trial, &stopped),
            None
        );
        // Numbers done within the first stretch still get their verdict.
        assert!(check_stoppable(97, Algorithm::Trial, &stopped).is_some_and(|v| v.prime));
    }

    #[test]
    fn chunks_are_few_and_not_tiny() {
        assert_eq!(chunk_len(1, 2, Algorithm::MillerRabin), 256);
        assert_eq!(chunk_len(1000, 2, Algorithm::MillerRabin), 256);
        assert_eq!(chunk_len(100_000, 2, Algorithm::MillerRabin), 25_000);
        assert_eq!(chunk_len(1000, 2, Algorithm::Trial), 250);
        assert_eq!(chunk_len(3, 2, Algorithm::Trial), 1);
    }
}
