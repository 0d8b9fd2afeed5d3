//! troika bench's workloads, written once over [`Exec`] and run on every peer.
//!
//! The counts and the clock match `troika bench` (crates/troika-cli/src/bench):
//! cpu, io and overhead time from before the pool is built until every result
//! is in; payload times only the transfers, on a pool built beforehand.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use troika_workloads::payload::{pattern, tasks_for};

use crate::exec::{Exec, RayonSpawn, Threadpool, TokioBlocking, TokioSpawn, runtime};
use crate::{Options, Row, procspawn_peer};

/// Every workload, in the order they run.
pub(crate) const ALL: [&str; 4] = ["cpu", "io", "overhead", "payload"];

/// The CPU workload's number (prime, so trial division runs to its square
/// root) and the very trial division `troika bench` runs.
pub(crate) use troika_workloads::primes::{TUTORIAL_NUMBER, is_prime_trial};
/// How long each io task waits.
pub(crate) const IO_WAIT: Duration = Duration::from_millis(50);
/// Threads for io, as troika's thread pool uses.
const IO_THREADS: usize = 64;
/// Processes for io, as troika's process pool uses.
pub(crate) const IO_PROCESSES: usize = 8;
/// Bursts of the overhead workload timed after the first one, which also
/// pays for starting the pool: tasks/s is the median burst's, as in
/// `troika bench`.
const OVERHEAD_BURSTS: usize = 5;
/// The extra bursts stop early once they took this long.
const OVERHEAD_BURSTS_BUDGET: Duration = Duration::from_secs(3);

/// The median of up to [`OVERHEAD_BURSTS`] runs of `burst` (at least one),
/// stopping early past [`OVERHEAD_BURSTS_BUDGET`].
fn median_burst(mut burst: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut walls = Vec::with_capacity(OVERHEAD_BURSTS);
    let budget = Instant::now();
    while walls.is_empty()
        || (walls.len() < OVERHEAD_BURSTS && budget.elapsed() < OVERHEAD_BURSTS_BUDGET)
    {
        let t = Instant::now();
        burst()?;
        walls.push(t.elapsed());
    }
    walls.sort_unstable();
    Ok(walls[walls.len() / 2])
}

/// One-at-a-time round trips timed for the overhead percentiles.
const LATENCY_SAMPLES: u64 = 10_000;

/// Default tasks of a workload, as `troika bench` has them.
fn default_tasks(workload: &str) -> u64 {
    match workload {
        "cpu" => 100,
        "io" => 200,
        "overhead" => 100_000,
        _ => 1_000,
    }
}

/// The overhead workload's task.
#[inline(never)]
pub(crate) fn trivial(i: u64) -> u64 {
    i.wrapping_mul(2).wrapping_add(1)
}

/// Σ (2i + 1) for i < n = n².
pub(crate) fn expected_sum(n: u64) -> u64 {
    n.wrapping_mul(n)
}

/// The 50th and 99th percentiles, in microseconds.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples
            .get(index)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e6
    };
    (at(0.50), at(0.99))
}

/// Run one workload on every peer (or the `--modes` asked for).
pub(crate) fn run(workload: &str, options: &Options) -> anyhow::Result<Vec<Row>> {
    let tasks = options.tasks.unwrap_or_else(|| default_tasks(workload));
    let workers = options.workers;
    let wanted = |mode: &str| {
        options
            .modes
            .as_ref()
            .is_none_or(|modes| modes.iter().any(|m| m == mode))
    };
    let mut rows = Vec::new();
    let mut add = |mode: &str, row: &mut dyn FnMut() -> anyhow::Result<Vec<Row>>| {
        if wanted(mode) {
            rows.extend(row()?);
        }
        anyhow::Ok(())
    };
    let kind = match workload {
        "cpu" => Kind::Cpu,
        "io" => Kind::Io,
        "overhead" => Kind::Overhead,
        "payload" => Kind::Payload(&options.sizes),
        other => anyhow::bail!("unknown workload '{other}'"),
    };
    // io runs on as many threads as troika's thread pool uses for it.
    let threads = if matches!(kind, Kind::Io) {
        IO_THREADS
    } else {
        workers
    };
    add("rayon::spawn", &mut || {
        kind.on(|| RayonSpawn::new(threads), tasks, threads)
    })?;
    match kind {
        Kind::Cpu => {
            add("rayon::scope", &mut || Ok(vec![cpu_scope(tasks, workers)?]))?;
            add("rayon::par_iter", &mut || {
                Ok(vec![cpu_par_iter(tasks, workers)?])
            })?;
        }
        Kind::Io => add("rayon::scope", &mut || Ok(vec![io_scope(tasks)?]))?,
        Kind::Overhead => add("rayon::scope", &mut || {
            Ok(vec![overhead_scope(tasks, workers)?])
        })?,
        Kind::Payload(_) => {}
    }
    add("tokio::spawn", &mut || match kind {
        // Every wait in flight at once on one runtime thread instead.
        Kind::Io => Ok(vec![io_tokio(tasks)?]),
        _ => kind.on(
            || Ok(TokioSpawn(runtime(workers, workers)?)),
            tasks,
            workers,
        ),
    })?;
    add("tokio::spawn_blocking", &mut || {
        kind.on(|| Ok(TokioBlocking(runtime(1, threads)?)), tasks, threads)
    })?;
    add("threadpool", &mut || {
        kind.on(|| Ok(Threadpool::new(threads)), tasks, threads)
    })?;
    if wanted(procspawn_peer::MODE) {
        rows.extend(procspawn_peer::run(workload, tasks, options)?);
    }
    Ok(rows)
}

/// A workload, to run on any [`Exec`].
#[derive(Clone, Copy)]
enum Kind<'a> {
    Cpu,
    Io,
    Overhead,
    /// Every one of these sizes.
    Payload(&'a [usize]),
}

impl Kind<'_> {
    /// This workload's rows on the pool `make` builds, of `threads` threads.
    fn on<E: Exec>(
        self,
        make: impl FnOnce() -> anyhow::Result<E>,
        tasks: u64,
        threads: usize,
    ) -> anyhow::Result<Vec<Row>> {
        Ok(match self {
            Self::Cpu => vec![cpu(make, tasks, threads)?],
            Self::Io => vec![io(make, tasks, threads)?],
            Self::Overhead => vec![overhead(make, tasks, threads)?],
            Self::Payload(sizes) => payload_all(&make()?, sizes, tasks, threads)?,
        })
    }
}

fn row(workload: &'static str, mode: &str, workers: usize, tasks: u64, wall: Duration) -> Row {
    Row {
        workload,
        mode: mode.to_owned(),
        workers,
        tasks,
        wall_s: wall.as_secs_f64().max(1e-9),
        ..Row::default()
    }
}

/// `tasks` runs of `task` on the pool `make` builds, timed from before it is
/// built until it has stopped; `check` sees every result.
fn each_task<E: Exec, R: Send + 'static>(
    workload: &'static str,
    make: impl FnOnce() -> anyhow::Result<E>,
    tasks: u64,
    threads: usize,
    task: impl FnOnce() -> R + Send + Copy + 'static,
    check: impl Fn(R) -> anyhow::Result<()>,
) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let exec = make()?;
    let handles: Vec<_> = (0..tasks).map(|_| exec.submit(task)).collect();
    for handle in handles {
        check(exec.wait(handle)?)?;
    }
    let name = exec.name();
    drop(exec);
    Ok(row(workload, name, threads, tasks, origin.elapsed()))
}

/// `is_prime_trial(TUTORIAL_NUMBER)` `tasks` times, pool start to pool stop.
fn cpu<E: Exec>(
    make: impl FnOnce() -> anyhow::Result<E>,
    tasks: u64,
    workers: usize,
) -> anyhow::Result<Row> {
    let task = || is_prime_trial(black_box(TUTORIAL_NUMBER));
    each_task("cpu", make, tasks, workers, task, |prime| {
        anyhow::ensure!(prime, "112272535095293 is prime");
        Ok(())
    })
}

fn rayon_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

fn cpu_scope(tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = rayon_pool(workers)?;
    let mut primes = vec![false; tasks as usize];
    pool.scope(|s| {
        for slot in &mut primes {
            s.spawn(move |_| *slot = is_prime_trial(black_box(TUTORIAL_NUMBER)));
        }
    });
    anyhow::ensure!(primes.iter().all(|p| *p), "112272535095293 is prime");
    drop(pool);
    Ok(row("cpu", "rayon::scope", workers, tasks, origin.elapsed()))
}

fn cpu_par_iter(tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = rayon_pool(workers)?;
    let primes: Vec<bool> = pool.install(|| {
        (0..tasks)
            .into_par_iter()
            .map(|_| is_prime_trial(black_box(TUTORIAL_NUMBER)))
            .collect()
    });
    anyhow::ensure!(primes.iter().all(|p| *p), "112272535095293 is prime");
    drop(pool);
    Ok(row(
        "cpu",
        "rayon::par_iter",
        workers,
        tasks,
        origin.elapsed(),
    ))
}

/// `tasks` blocking waits of [`IO_WAIT`] on `threads` threads.
fn io<E: Exec>(
    make: impl FnOnce() -> anyhow::Result<E>,
    tasks: u64,
    threads: usize,
) -> anyhow::Result<Row> {
    let task = || std::thread::sleep(IO_WAIT);
    each_task("io", make, tasks, threads, task, |()| Ok(()))
}

fn io_scope(tasks: u64) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = rayon_pool(IO_THREADS)?;
    pool.scope(|s| {
        for _ in 0..tasks {
            s.spawn(|_| std::thread::sleep(IO_WAIT));
        }
    });
    drop(pool);
    Ok(row(
        "io",
        "rayon::scope",
        IO_THREADS,
        tasks,
        origin.elapsed(),
    ))
}

/// Every wait in flight at once on one runtime thread, as troika's async mode.
fn io_tokio(tasks: u64) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let rt = runtime(1, 1)?;
    let handles: Vec<_> = (0..tasks)
        .map(|_| rt.spawn(async { tokio::time::sleep(IO_WAIT).await }))
        .collect();
    for handle in handles {
        rt.block_on(handle)?;
    }
    drop(rt);
    let workers = usize::try_from(tasks).unwrap_or(usize::MAX);
    Ok(row("io", "tokio::spawn", workers, tasks, origin.elapsed()))
}

/// `tasks` trivial tasks at once (throughput), then one-at-a-time round trips.
fn overhead<E: Exec>(
    make: impl FnOnce() -> anyhow::Result<E>,
    tasks: u64,
    workers: usize,
) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let exec = make()?;
    let handles: Vec<_> = (0..tasks)
        .map(|i| exec.submit(move || trivial(i)))
        .collect();
    let sum = exec
        .wait_all(handles)?
        .into_iter()
        .fold(0u64, u64::wrapping_add);
    let wall = origin.elapsed();
    anyhow::ensure!(sum == expected_sum(tasks), "every result arrived");
    let burst = median_burst(|| {
        let handles: Vec<_> = (0..tasks)
            .map(|i| exec.submit(move || trivial(i)))
            .collect();
        black_box(exec.wait_all(handles)?);
        Ok(())
    })?;
    let mut latencies = Vec::new();
    for i in 0..tasks.min(LATENCY_SAMPLES) {
        let t = Instant::now();
        black_box(exec.wait(exec.submit(move || trivial(i)))?);
        latencies.push(t.elapsed());
    }
    let (p50, p99) = percentiles(latencies);
    Ok(Row {
        tasks_per_s: Some(tasks as f64 / burst.as_secs_f64().max(1e-9)),
        p50_us: Some(p50),
        p99_us: Some(p99),
        ..row("overhead", exec.name(), workers, tasks, wall)
    })
}

/// rayon's scope has no handle: each task writes its result into its slot.
fn overhead_scope(tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = rayon_pool(workers)?;
    let mut results = vec![0u64; tasks as usize];
    pool.scope(|s| {
        for (i, slot) in results.iter_mut().enumerate() {
            s.spawn(move |_| *slot = trivial(i as u64));
        }
    });
    let wall = origin.elapsed();
    let sum = results.iter().fold(0u64, |a, v| a.wrapping_add(*v));
    anyhow::ensure!(sum == expected_sum(tasks), "every result arrived");
    let burst = median_burst(|| {
        pool.scope(|s| {
            for (i, slot) in results.iter_mut().enumerate() {
                s.spawn(move |_| *slot = trivial(i as u64));
            }
        });
        black_box(&results);
        Ok(())
    })?;
    let mut latencies = Vec::new();
    for i in 0..tasks.min(LATENCY_SAMPLES) {
        let t = Instant::now();
        let mut value = 0;
        pool.scope(|s| s.spawn(|_| value = trivial(i)));
        black_box(value);
        latencies.push(t.elapsed());
    }
    let (p50, p99) = percentiles(latencies);
    Ok(Row {
        tasks_per_s: Some(tasks as f64 / burst.as_secs_f64().max(1e-9)),
        p50_us: Some(p50),
        p99_us: Some(p99),
        ..row("overhead", "rayon::scope", workers, tasks, wall)
    })
}

/// Every payload size on one pool.
fn payload_all<E: Exec>(
    exec: &E,
    sizes: &[usize],
    tasks: u64,
    workers: usize,
) -> anyhow::Result<Vec<Row>> {
    sizes
        .iter()
        .map(|&size| payload_one(exec, size, tasks_for(size, tasks), workers))
        .collect()
}

/// Echo tasks of `size` bytes: all at once (MB/s, both directions counted),
/// then one at a time (round trip).
fn payload_one<E: Exec>(exec: &E, size: usize, tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let (wall, latencies) = troika_workloads::payload::transfers(
        &pattern(size),
        tasks,
        |arg| exec.submit(move || black_box(arg)),
        |handle| exec.wait(handle),
    )?;
    Ok(payload_row(
        exec.name(),
        workers,
        size,
        tasks,
        wall,
        latencies,
    ))
}

/// A payload row: MB/s counts the argument and the result.
pub(crate) fn payload_row(
    mode: &str,
    workers: usize,
    size: usize,
    tasks: u64,
    wall: Duration,
    latencies: Vec<Duration>,
) -> Row {
    let wall_s = wall.as_secs_f64().max(1e-9);
    let (p50, p99) = percentiles(latencies);
    Row {
        tasks_per_s: Some(tasks as f64 / wall_s),
        p50_us: Some(p50),
        p99_us: Some(p99),
        payload_bytes: Some(size as u64),
        mb_per_s: Some(2.0 * size as f64 * tasks as f64 / wall_s / 1e6),
        ..row("payload", mode, workers, tasks, wall)
    }
}
