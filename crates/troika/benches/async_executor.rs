//! The async mode's cost over its substrate: 100,000 trivial tasks with a
//! handle each on a 2-worker runtime, through plain `tokio::spawn` (the
//! yardstick) and through [`AsyncExecutor`], in the same run.
//!
//! ```text
//! cargo bench -p troika --bench async_executor
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troika::aio::AsyncExecutor;

/// The same allocator as the `troika` command, so the figures agree.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: u64 = 100_000;
const WORKERS: usize = 2;

fn burst(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    let executor = AsyncExecutor::builder()
        .workers(WORKERS)
        .build()
        .expect("executor");
    let mut group = c.benchmark_group("async_100k");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(20);
    // (a) The yardstick: tokio's own spawn, JoinHandles collected from sync
    // code, then awaited one by one.
    group.bench_function("tokio_spawn", |b| {
        b.iter(|| {
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
        })
    });
    // (a') The same, spawned and awaited from async code.
    group.bench_function("tokio_spawn_in_async", |b| {
        b.iter(|| {
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
        })
    });
    // (b) troika's async mode from sync code: a handle per task, `result()`.
    group.bench_function("executor_submit_result", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| executor.submit(async move { black_box(i) * 2 }))
                .collect();
            handles
                .into_iter()
                .map(|h| h.result().expect("task"))
                .sum::<u64>()
        })
    });
    // (c) The same, submitted and awaited from async code.
    group.bench_function("executor_submit_in_async", |b| {
        b.iter(|| {
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
        })
    });
    group.finish();
}

criterion_group!(benches, burst);
criterion_main!(benches);
