//! The thread pool's own cost: one task's round trip, and a burst of trivial
//! tasks submitted and collected.
//!
//! On a loaded machine the rates depend on how much CPU the run gets; set
//! `THREAD_BENCH_CPU=ROUNDS` to print instead the median over ROUNDS rounds
//! of the CPU time the whole process spent per task (all threads) and the
//! wall time per task, for a burst of 100,000 tasks and for 10,000 round
//! trips, to compare builds run one after the other.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};

mod support;
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

/// Median CPU ns and wall ns per task of a burst and of round trips.
fn cpu_report(rounds: usize) {
    const BURST: u64 = 100_000;
    const TRIPS: u64 = 10_000;
    let pool = ThreadPool::new(2).expect("pool");
    let burst = || {
        let handles: Vec<_> = (0..BURST)
            .map(|i| pool.submit(move || black_box(i) * 2))
            .collect();
        handles
            .into_iter()
            .map(|h| h.result().expect("task"))
            .sum::<u64>()
    };
    let trips = || {
        (0..TRIPS)
            .map(|i| {
                pool.submit(move || black_box(i) + 1)
                    .result()
                    .expect("task")
            })
            .sum::<u64>()
    };
    let variants: [(&str, u64, &dyn Fn() -> u64); 2] = [
        ("burst_100k", BURST, &burst),
        ("round_trips_10k", TRIPS, &trips),
    ];
    let runs: Vec<(u64, &dyn Fn() -> u64)> = variants
        .iter()
        .map(|(_, tasks, run)| (*tasks, *run))
        .collect();
    let medians = support::medians_per_task(rounds, &runs);
    for ((name, _, _), (cpu, wall)) in variants.iter().zip(medians) {
        println!("{name:16} cpu {cpu:7.1} ns/task, wall {wall:7.1} ns/task");
    }
}

fn main() {
    if let Some(rounds) = std::env::var_os("THREAD_BENCH_CPU") {
        let rounds = rounds.to_str().and_then(|r| r.parse().ok()).unwrap_or(21);
        cpu_report(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
