//! procspawn's process pool (`procspawn::Pool`, 1.0.x).
//!
//! Its pool is known to stop running jobs after a `kill`, so nothing here ever
//! kills a job; and each workload runs on its own thread under an outer
//! deadline, so a pool that stops answering is reported as `hung` instead of
//! hanging the run. Each task holds a few sockets until it is joined, so at
//! most [`IN_FLIGHT`] are submitted ahead of the results (the file limit would
//! stop 100,000 at once). Payload tasks are submitted at most one per worker
//! ahead: with more queued than workers, a 1 MiB argument blocks the submit
//! for good (seen with procspawn 1.0.2: 4 tasks on 2 workers never finish).

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use troika_workloads::payload::{SAMPLES, WARM_UP, echoed, pattern, tasks_for};

use crate::workloads::{
    IO_PROCESSES, IO_WAIT, TUTORIAL_NUMBER, expected_sum, is_prime_trial, payload_row, percentiles,
    trivial,
};
use crate::{Options, Row};

/// The mode's name in the output.
pub(crate) const MODE: &str = "procspawn::Pool";

/// Tasks submitted ahead of their results.
const IN_FLIGHT: usize = 512;

/// Round trips timed for the overhead percentiles (fewer than troika's
/// 10,000: each costs a fresh pair of sockets here).
const LATENCY_SAMPLES: u64 = 2_000;

fn prime_task(n: u64) -> bool {
    is_prime_trial(black_box(n))
}

fn wait_task(millis: u64) {
    std::thread::sleep(Duration::from_millis(millis));
}

fn trivial_task(i: u64) -> u64 {
    trivial(i)
}

fn echo_task(bytes: Vec<u8>) -> Vec<u8> {
    black_box(bytes)
}

/// Run `workload` on the pool under `options.deadline`.
pub(crate) fn run(workload: &str, tasks: u64, options: &Options) -> anyhow::Result<Vec<Row>> {
    let workload: &'static str = match workload {
        "cpu" => "cpu",
        "io" => "io",
        "overhead" => "overhead",
        "payload" => "payload",
        other => anyhow::bail!("unknown workload '{other}'"),
    };
    let workers = options.workers;
    let sizes = options.sizes.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("procspawn-peer".to_owned())
        .spawn(move || {
            let rows = match workload {
                "cpu" => cpu(tasks, workers).map(|r| vec![r]),
                "io" => io(tasks).map(|r| vec![r]),
                "overhead" => overhead(tasks, workers).map(|r| vec![r]),
                _ => payload_all(&sizes, tasks, workers),
            };
            let _ = tx.send(rows);
        })
        .context("cannot start the procspawn thread")?;
    match rx.recv_timeout(options.deadline) {
        Ok(rows) => rows,
        Err(_) => Ok(vec![Row {
            workload,
            mode: MODE.to_owned(),
            workers,
            tasks,
            hung: true,
            ..Row::default()
        }]),
    }
}

fn pool(size: usize) -> anyhow::Result<procspawn::Pool> {
    procspawn::Pool::new(size).context("cannot start procspawn's pool")
}

/// Submit `args` with at most `in_flight` waiting, handing each result to `each`.
fn pipelined<A, R>(
    pool: &procspawn::Pool,
    in_flight: usize,
    args: impl IntoIterator<Item = A>,
    func: fn(A) -> R,
    mut each: impl FnMut(R) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut waiting = VecDeque::new();
    for arg in args {
        if waiting.len() >= in_flight {
            let handle: procspawn::JoinHandle<R> =
                waiting.pop_front().context("a handle is waiting")?;
            each(handle.join()?)?;
        }
        waiting.push_back(pool.spawn(arg, func));
    }
    for handle in waiting {
        each(handle.join()?)?;
    }
    Ok(())
}

fn cpu(tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = pool(workers)?;
    pipelined(
        &pool,
        IN_FLIGHT,
        (0..tasks).map(|_| TUTORIAL_NUMBER),
        prime_task,
        |p| {
            anyhow::ensure!(p, "112272535095293 is prime");
            Ok(())
        },
    )?;
    pool.shutdown();
    Ok(Row {
        workload: "cpu",
        mode: MODE.to_owned(),
        workers,
        tasks,
        wall_s: origin.elapsed().as_secs_f64(),
        ..Row::default()
    })
}

fn io(tasks: u64) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = pool(IO_PROCESSES)?;
    let millis = IO_WAIT.as_millis() as u64;
    pipelined(
        &pool,
        IN_FLIGHT,
        (0..tasks).map(|_| millis),
        wait_task,
        |()| Ok(()),
    )?;
    pool.shutdown();
    Ok(Row {
        workload: "io",
        mode: MODE.to_owned(),
        workers: IO_PROCESSES,
        tasks,
        wall_s: origin.elapsed().as_secs_f64(),
        ..Row::default()
    })
}

fn overhead(tasks: u64, workers: usize) -> anyhow::Result<Row> {
    let origin = Instant::now();
    let pool = pool(workers)?;
    let mut sum = 0u64;
    pipelined(&pool, IN_FLIGHT, 0..tasks, trivial_task, |v| {
        sum = sum.wrapping_add(v);
        Ok(())
    })?;
    let wall = origin.elapsed();
    anyhow::ensure!(sum == expected_sum(tasks), "every result arrived");
    let mut latencies = Vec::new();
    for i in 0..tasks.min(LATENCY_SAMPLES) {
        let t = Instant::now();
        black_box(pool.spawn(i, trivial_task).join()?);
        latencies.push(t.elapsed());
    }
    pool.shutdown();
    let (p50, p99) = percentiles(latencies);
    let wall_s = wall.as_secs_f64().max(1e-9);
    Ok(Row {
        workload: "overhead",
        mode: MODE.to_owned(),
        workers,
        tasks,
        wall_s,
        tasks_per_s: Some(tasks as f64 / wall_s),
        p50_us: Some(p50),
        p99_us: Some(p99),
        ..Row::default()
    })
}

fn payload_all(sizes: &[usize], tasks: u64, workers: usize) -> anyhow::Result<Vec<Row>> {
    let pool = pool(workers)?;
    let rows = sizes
        .iter()
        .map(|&size| {
            let tasks = tasks_for(size, tasks);
            let template = pattern(size);
            // The warm-up `transfers` gives troika's and the other peers'
            // rows: echoes of this size, at once, untimed.
            let warm_up = (WARM_UP as u64).min(tasks);
            let warm: Vec<Vec<u8>> = (0..warm_up).map(|_| template.clone()).collect();
            let mut whole = true;
            pipelined(&pool, workers, warm, echo_task, |echo| {
                whole &= echoed(&echo, size);
                Ok(())
            })?;
            anyhow::ensure!(whole, "every warm-up echo came back whole");
            let args: Vec<Vec<u8>> = (0..tasks).map(|_| template.clone()).collect();
            let start = Instant::now();
            let mut whole = true;
            pipelined(&pool, workers, args, echo_task, |echo| {
                whole &= echoed(&echo, size);
                Ok(())
            })?;
            let wall = start.elapsed();
            anyhow::ensure!(whole, "every echo came back whole");
            let mut latencies = Vec::new();
            for _ in 0..tasks.min(SAMPLES) {
                let arg = template.clone();
                let t = Instant::now();
                let echo = pool.spawn(arg, echo_task).join()?;
                latencies.push(t.elapsed());
                anyhow::ensure!(echoed(&echo, size), "the echo came back whole");
            }
            Ok(payload_row(MODE, workers, size, tasks, wall, latencies))
        })
        .collect();
    pool.shutdown();
    rows
}
