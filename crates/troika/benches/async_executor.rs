//! The async mode's cost over its substrate: 100,000 trivial tasks with a
//! handle each on a 2-worker runtime, through plain `tokio::spawn` (the
//! yardstick) and through [`AsyncExecutor`], in the same run.
//!
//! ```text
//! cargo bench -p troika --bench async_executor
//! ```
//!
//! On a loaded machine the tasks/s depend on how much CPU the run gets; set
//! `ASYNC_BENCH_CPU=ROUNDS` to print instead, per variant, the median over
//! ROUNDS rounds (alternating the variants) of the CPU time the whole
//! process spent per task, a figure the load does not change.
//! `ASYNC_BENCH_ONLY=NAME,NAME` keeps only the named variants (to profile
//! one with `perf record`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};

mod support;
use troika::aio::AsyncExecutor;

/// The same allocator as the `troika` command, so the figures agree.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: u64 = 100_000;
const WORKERS: usize = 2;

/// The substrate and the executor on it, both of [`WORKERS`] workers.
fn substrates() -> (tokio::runtime::Runtime, AsyncExecutor) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    let executor = AsyncExecutor::builder()
        .workers(WORKERS)
        .build()
        .expect("executor");
    (runtime, executor)
}

/// A variant: its name, and one round of [`TASKS`] tasks returning their sum.
type Variant<'a> = (&'static str, Box<dyn Fn() -> u64 + 'a>);

/// Every variant, the yardstick first.
fn variants<'a>(
    runtime: &'a tokio::runtime::Runtime,
    executor: &'a AsyncExecutor,
) -> [Variant<'a>; 4] {
    [
        // (a) The yardstick: tokio's own spawn, JoinHandles collected from
        // sync code, then awaited one by one.
        (
            "tokio_spawn",
            Box::new(|| {
                let handles: Vec<_> = (0..TASKS)
                    .map(|i| runtime.spawn(async move { black_box(i) * 2 }))
                    .collect();
                runtime.block_on(async {
                    let mut sum = 0u64;
                    for handle in handles {
                        sum += handle.await.expect("task");
                    }
                    sum
                })
            }),
        ),
        // (a') The same, spawned and awaited from async code.
        (
            "tokio_spawn_in_async",
            Box::new(|| {
                runtime.block_on(async {
                    let handles: Vec<_> = (0..TASKS)
                        .map(|i| tokio::spawn(async move { black_box(i) * 2 }))
                        .collect();
                    let mut sum = 0u64;
                    for handle in handles {
                        sum += handle.await.expect("task");
                    }
                    sum
                })
            }),
        ),
        // (b) troika's async mode from sync code: a handle per task, `result()`.
        (
            "executor_submit_result",
            Box::new(|| {
                let handles: Vec<_> = (0..TASKS)
                    .map(|i| executor.submit(async move { black_box(i) * 2 }))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.result().expect("task"))
                    .sum::<u64>()
            }),
        ),
        // (c) The same, submitted and awaited from async code.
        (
            "executor_submit_in_async",
            Box::new(|| {
                executor
                    .block_on(async {
                        let handles: Vec<_> = (0..TASKS)
                            .map(|i| executor.submit(async move { black_box(i) * 2 }))
                            .collect();
                        let mut sum = 0u64;
                        for handle in handles {
                            sum += handle.await.expect("task");
                        }
                        sum
                    })
                    .expect("block_on")
            }),
        ),
    ]
}

fn burst(c: &mut Criterion) {
    let (runtime, executor) = substrates();
    let mut group = c.benchmark_group("async_100k");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(20);
    for (name, run) in variants(&runtime, &executor) {
        group.bench_function(name, |b| b.iter(&run));
    }
    group.finish();
}

criterion_group!(benches, burst);

/// Median CPU ns and wall ns per task of each variant over `rounds`.
fn cpu_report(rounds: usize) {
    let (runtime, executor) = substrates();
    let only = std::env::var("ASYNC_BENCH_ONLY").ok();
    let variants: Vec<_> = variants(&runtime, &executor)
        .into_iter()
        .filter(|(name, _)| {
            only.as_ref()
                .is_none_or(|only| only.split(',').any(|n| n == *name))
        })
        .collect();
    let runs: Vec<(u64, &dyn Fn() -> u64)> = variants
        .iter()
        .map(|(_, run)| (TASKS, &**run as _))
        .collect();
    let medians = support::medians_per_task(rounds, &runs);
    let Some((base_name, _)) = variants.first() else {
        return;
    };
    let (base_cpu, base_wall) = medians[0];
    for ((name, _), (c, w)) in variants.iter().zip(medians) {
        println!(
            "{name:26} cpu {c:7.1} ns/task ({:5.1} % of {base_name}'s tasks per CPU-second), \
             wall {w:7.1} ns/task ({:5.1} % of its tasks/s)",
            100.0 * base_cpu / c,
            100.0 * base_wall / w,
        );
    }
}

fn main() {
    if let Some(rounds) = std::env::var_os("ASYNC_BENCH_CPU") {
        let rounds = rounds.to_str().and_then(|r| r.parse().ok()).unwrap_or(21);
        cpu_report(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
