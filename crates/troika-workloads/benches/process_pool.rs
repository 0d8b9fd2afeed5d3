//! The process pool from a criterion bench (no setup line needed: workers
//! start from troika's constructor): one task's round trip, and a chunked map.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troika::ProcessPool;
use troika_workloads::pool::inc;

fn round_trip(c: &mut Criterion) {
    let pool = ProcessPool::new(2).expect("pool");
    c.bench_function("process_pool/round_trip", |b| {
        b.iter(|| pool.submit(inc, black_box(1)).result().expect("task"))
    });
}

fn chunked_map(c: &mut Criterion) {
    const ITEMS: u64 = 100_000;
    let pool = ProcessPool::new(2).expect("pool");
    let mut group = c.benchmark_group("process_pool");
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("imap_chunk_8192_100k", |b| {
        b.iter(|| {
            pool.imap(inc, 0..ITEMS, 8192)
                .expect("chunk size")
                .map(|r| r.expect("task"))
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, round_trip, chunked_map);
criterion_main!(benches);
