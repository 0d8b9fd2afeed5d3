//! The thread pool's own cost: one task's round trip, and a burst of trivial
//! tasks submitted and collected.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troika::ThreadPool;

/// The same allocator as the `troika` command, so the figures agree.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn round_trip(c: &mut Criterion) {
    let pool = ThreadPool::new(2).expect("pool");
    c.bench_function("thread_pool/round_trip", |b| {
        b.iter(|| pool.submit(|| black_box(1u64) + 1).result().expect("task"))
    });
}

fn burst(c: &mut Criterion) {
    const TASKS: u64 = 10_000;
    let pool = ThreadPool::new(2).expect("pool");
    let mut group = c.benchmark_group("thread_pool");
    group.throughput(Throughput::Elements(TASKS));
    group.bench_function("submit_burst_10k", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| pool.submit(move || black_box(i) * 2))
                .collect();
            handles
                .into_iter()
                .map(|h| h.result().expect("task"))
                .sum::<u64>()
        })
    });
    group.bench_function("imap_chunked_10k", |b| {
        b.iter(|| {
            pool.imap(|x: u64| x * 2, 0..TASKS, 1000)
                .expect("chunk size")
                .map(|r| r.expect("task"))
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, round_trip, burst);
criterion_main!(benches);
