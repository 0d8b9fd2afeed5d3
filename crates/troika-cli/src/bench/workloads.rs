//! The workloads, run in each mode, each task timed for the report's timeline.

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use troika::aio::AsyncExecutor;
use troika::{Handle, ProcessPool, ThreadPool};
use troika_workloads::primes::{TUTORIAL_NUMBER, is_prime_trial};

use super::{Measured, Mode, Span, Workload};

/// How many one-at-a-time round trips the overhead workload times for its
/// latency percentiles.
const LATENCY_SAMPLES: u64 = 10_000;

/// The overhead workload's bursts timed after the first one (which also
/// pays for starting the pool and warming its memory): its tasks/s is the
/// median burst's, so that a moment when a loaded machine lent the run less
/// CPU does not decide the figure. A 100,000-task burst lasts 30-80 ms.
const OVERHEAD_BURSTS: usize = 5;

/// The extra bursts stop early once they took this long (a slow mode).
const OVERHEAD_BURSTS_BUDGET: Duration = Duration::from_secs(3);

/// How long each io task waits.
const IO_WAIT: Duration = Duration::from_millis(50);

/// Threads for the io workload: waiting tasks want many of them.
const IO_THREADS: usize = 64;

/// The overhead workload times only its first tasks for the timeline, so the
/// clock reads do not weigh on the throughput it measures.
const OVERHEAD_SPANS: u64 = 2_000;

/// Worker threads' name prefix.
const THREAD_NAME: &str = "bench";

/// Seconds since the Unix epoch: the one clock a parent and its worker
/// processes share, for the timeline.
fn epoch_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

troika::remote! {
    /// The cpu task in a worker process, timed against the parent's `origin`.
    fn timed_is_prime(n: u64, origin: f64) -> (bool, Span) {
        let start = epoch_s() - origin;
        let prime = is_prime_trial(black_box(n));
        (prime, Span { worker: std::process::id() as usize, start, end: epoch_s() - origin })
    }

    /// The io task in a worker process: a blocking wait.
    fn timed_wait(millis: u64, origin: f64) -> Span {
        let start = epoch_s() - origin;
        std::thread::sleep(Duration::from_millis(millis));
        Span { worker: std::process::id() as usize, start, end: epoch_s() - origin }
    }

    /// The overhead task in a worker process; only the first ones are timed.
    fn process_trivial(i: u64, origin: f64) -> (u64, Option<Span>) {
        if i < OVERHEAD_SPANS {
            let start = epoch_s() - origin;
            let value = trivial(i);
            (value, Some(Span { worker: std::process::id() as usize, start, end: epoch_s() - origin }))
        } else {
            (trivial(i), None)
        }
    }
}

/// Processes for the io workload.
const IO_PROCESSES: usize = 8;

fn process_pool(workers: usize) -> anyhow::Result<ProcessPool> {
    Ok(ProcessPool::builder()
        .workers(workers)
        .name(THREAD_NAME)
        .build()?)
}

/// Run `workload` in `mode` and measure it.
pub(crate) fn measure(
    workload: Workload,
    mode: Mode,
    tasks: u64,
    workers: usize,
) -> anyhow::Result<Measured> {
    match workload {
        Workload::Cpu => cpu(mode, tasks, workers),
        Workload::Io => io(mode, tasks),
        Workload::Overhead => overhead(mode, tasks, workers),
        Workload::Payload => anyhow::bail!("payload is measured per size (bench/payload.rs)"),
    }
}

/// A number that names the current thread (unique in this process); the
/// report's lanes are these, renumbered from 0 per run by [`lanes_from_zero`].
fn lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    LANE.with(|lane| *lane)
}

/// Renumber the spans' threads 0, 1, … in order of first appearance.
fn lanes_from_zero(mut spans: Vec<Span>) -> Vec<Span> {
    let mut seen: Vec<usize> = Vec::new();
    for span in &mut spans {
        span.worker = match seen.iter().position(|&t| t == span.worker) {
            Some(i) => i,
            None => {
                seen.push(span.worker);
                seen.len() - 1
            }
        };
    }
    spans
}

fn executor(workers: usize) -> anyhow::Result<AsyncExecutor> {
    Ok(AsyncExecutor::builder()
        .workers(workers)
        .name(THREAD_NAME)
        .build()?)
}

/// Run `f`, returning its value and its span relative to `origin`.
fn timed<R>(origin: Instant, f: impl FnOnce() -> R) -> (R, Span) {
    let start = origin.elapsed().as_secs_f64();
    let value = f();
    let end = origin.elapsed().as_secs_f64();
    (
        value,
        Span {
            worker: lane(),
            start,
            end,
        },
    )
}

fn pool(workers: usize) -> anyhow::Result<ThreadPool> {
    Ok(ThreadPool::builder()
        .workers(workers)
        .name(THREAD_NAME)
        .build()?)
}

/// The CPU experiment: `is_prime(112272535095293)` `tasks` times.
fn cpu(mode: Mode, tasks: u64, workers: usize) -> anyhow::Result<Measured> {
    let origin = Instant::now();
    let check = move |n: u64| timed(origin, || is_prime_trial(black_box(n)));
    let (workers, outcomes): (usize, Vec<(bool, Span)>) = match mode {
        Mode::Serial => (1, (0..tasks).map(|_| check(TUTORIAL_NUMBER)).collect()),
        Mode::Threads => {
            let pool = pool(workers)?;
            let outcomes = pool
                .map(check, (0..tasks).map(|_| TUTORIAL_NUMBER))
                .collect::<Result<_, _>>()?;
            drop(pool);
            (workers, outcomes)
        }
        Mode::Processes => {
            let origin_epoch = epoch_s() - origin.elapsed().as_secs_f64();
            let pool = process_pool(workers)?;
            let outcomes = pool
                .map(
                    timed_is_prime,
                    (0..tasks).map(|_| (TUTORIAL_NUMBER, origin_epoch)),
                )
                .collect::<Result<_, _>>()?;
            drop(pool);
            (workers, outcomes)
        }
        Mode::Async => {
            // A coroutine that computes holds its runtime thread: this scales
            // with the runtime's threads, not with the tasks.
            let executor = executor(workers)?;
            let outcomes = executor
                .map(
                    move |n| async move { check(n) },
                    (0..tasks).map(|_| TUTORIAL_NUMBER),
                )
                .collect::<Result<_, _>>()?;
            drop(executor);
            (workers, outcomes)
        }
    };
    let wall = origin.elapsed();
    anyhow::ensure!(
        outcomes.iter().all(|(prime, _)| *prime),
        "112272535095293 is prime"
    );
    Ok(Measured {
        workers,
        wall,
        throughput: None,
        latency: None,
        spans: lanes_from_zero(outcomes.into_iter().map(|(_, span)| span).collect()),
    })
}

/// Tasks that only wait: a blocking wait on threads, all at once on async.
fn io(mode: Mode, tasks: u64) -> anyhow::Result<Measured> {
    let origin = Instant::now();
    let wait = move |_: u64| timed(origin, || std::thread::sleep(IO_WAIT)).1;
    let (workers, spans): (usize, Vec<Span>) = match mode {
        Mode::Serial => (1, (0..tasks).map(wait).collect()),
        Mode::Threads => {
            let pool = pool(IO_THREADS)?;
            let spans = pool.map(wait, 0..tasks).collect::<Result<_, _>>()?;
            drop(pool);
            (IO_THREADS, spans)
        }
        Mode::Processes => {
            let origin_epoch = epoch_s() - origin.elapsed().as_secs_f64();
            let millis = IO_WAIT.as_millis() as u64;
            let pool = process_pool(IO_PROCESSES)?;
            let spans = pool
                .map(timed_wait, (0..tasks).map(|_| (millis, origin_epoch)))
                .collect::<Result<_, _>>()?;
            drop(pool);
            (IO_PROCESSES, spans)
        }
        Mode::Async => {
            // Every task in flight at once, each waiting on a timer.
            let executor = executor(1)?;
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    executor.submit(async move {
                        let start = origin.elapsed().as_secs_f64();
                        tokio::time::sleep(IO_WAIT).await;
                        Span {
                            worker: lane(),
                            start,
                            end: origin.elapsed().as_secs_f64(),
                        }
                    })
                })
                .collect();
            let spans = handles
                .into_iter()
                .map(|h| h.result())
                .collect::<Result<_, _>>()?;
            drop(executor);
            (usize::try_from(tasks).unwrap_or(usize::MAX), spans)
        }
    };
    Ok(Measured {
        workers,
        wall: origin.elapsed(),
        throughput: None,
        latency: None,
        spans: lanes_from_zero(spans),
    })
}

/// Many trivial tasks: throughput counted when every result is received, then
/// the round trip of one task at a time.
fn overhead(mode: Mode, tasks: u64, workers: usize) -> anyhow::Result<Measured> {
    let samples = tasks.min(LATENCY_SAMPLES);
    let origin = Instant::now();
    let task = move |i: u64| {
        if i < OVERHEAD_SPANS {
            let (value, span) = timed(origin, || trivial(i));
            (value, Some(span))
        } else {
            (trivial(i), None)
        }
    };
    let (workers, wall, burst, outcomes, latencies) = match mode {
        Mode::Serial => {
            let outcomes: Vec<_> = (0..tasks).map(|i| task(black_box(i))).collect();
            let wall = origin.elapsed();
            let latencies = (0..samples)
                .map(|i| {
                    let t = Instant::now();
                    black_box(trivial(black_box(i)));
                    t.elapsed()
                })
                .collect();
            (1, wall, wall, outcomes, latencies)
        }
        Mode::Threads => {
            let pool = pool(workers)?;
            let (wall, burst, outcomes, latencies) = burst_then_round_trips(
                origin,
                tasks,
                samples,
                |i| pool.submit(move || task(i)),
                |i| pool.submit(move || trivial(i)),
            )?;
            drop(pool);
            (workers, wall, burst, outcomes, latencies)
        }
        Mode::Processes => {
            let origin_epoch = epoch_s() - origin.elapsed().as_secs_f64();
            let pool = process_pool(workers)?;
            let (wall, burst, outcomes, latencies) = burst_then_round_trips(
                origin,
                tasks,
                samples,
                |i| pool.submit(process_trivial, (i, origin_epoch)),
                |_| pool.submit(process_trivial, (u64::MAX, 0.0)),
            )?;
            drop(pool);
            (workers, wall, burst, outcomes, latencies)
        }
        Mode::Async => {
            let executor = executor(workers)?;
            let (wall, burst, outcomes, latencies) = burst_then_round_trips(
                origin,
                tasks,
                samples,
                |i| executor.submit(async move { task(i) }),
                |i| executor.submit(async move { trivial(i) }),
            )?;
            drop(executor);
            (workers, wall, burst, outcomes, latencies)
        }
    };
    let sum = outcomes
        .iter()
        .fold(0u64, |acc, (v, _)| acc.wrapping_add(*v));
    anyhow::ensure!(
        sum == expected_sum(tasks),
        "every trivial task's result arrived"
    );
    Ok(Measured {
        workers,
        wall,
        throughput: Some(tasks as f64 / burst.as_secs_f64().max(1e-9)),
        latency: Some(percentiles(latencies)),
        spans: lanes_from_zero(outcomes.into_iter().filter_map(|(_, span)| span).collect()),
    })
}

/// Submit `tasks` tasks at once and collect every result (the throughput
/// phase, timed from `origin`), then time `samples` round trips of one task at
/// a time.
/// The first burst (timed from `origin`, for the timeline), then up to
/// [`OVERHEAD_BURSTS`] more of plain tasks, then `samples` round trips.
/// Returns the first burst's wall time, the median of the others', the
/// first burst's outcomes and the round trips.
fn burst_then_round_trips<T, R>(
    origin: Instant,
    tasks: u64,
    samples: u64,
    submit: impl Fn(u64) -> Handle<T>,
    one: impl Fn(u64) -> Handle<R>,
) -> anyhow::Result<(Duration, Duration, Vec<T>, Vec<Duration>)> {
    let handles: Vec<_> = (0..tasks).map(&submit).collect();
    let outcomes = handles
        .into_iter()
        .map(Handle::result)
        .collect::<Result<Vec<_>, _>>()?;
    let wall = origin.elapsed();
    let mut bursts = Vec::with_capacity(OVERHEAD_BURSTS);
    let budget = Instant::now();
    while bursts.len() < OVERHEAD_BURSTS && budget.elapsed() < OVERHEAD_BURSTS_BUDGET {
        let t = Instant::now();
        let handles: Vec<_> = (0..tasks).map(&one).collect();
        for handle in handles {
            black_box(handle.result()?);
        }
        bursts.push(t.elapsed());
    }
    bursts.sort_unstable();
    let burst = bursts.get(bursts.len() / 2).copied().unwrap_or(wall);
    let mut latencies = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        let t = Instant::now();
        black_box(one(i).result()?);
        latencies.push(t.elapsed());
    }
    Ok((wall, burst, outcomes, latencies))
}

#[inline(never)]
fn trivial(i: u64) -> u64 {
    i.wrapping_mul(2).wrapping_add(1)
}

/// Σ (2i + 1) for i < n = n², wrapping like the tasks do.
fn expected_sum(n: u64) -> u64 {
    n.wrapping_mul(n)
}

/// The 50th and 99th percentiles.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}
