//! A thread pool's round trip, alone: a burst of 100,000 tasks to warm the
//! pool, then one task at a time — submit, run, wait for the result — and
//! the round trips' percentiles in nanoseconds.
//!
//! ```sh
//! cargo run --release -p troika --example thread_round_trip -- [WORKERS] [ROUND_TRIPS]
//! taskset -c 0 target/release/examples/thread_round_trip 1   # waiter and worker on one CPU
//! ```
//!
//! `troika bench --workload overhead` times 10,000 of them after its
//! bursts; this runs more, and alone, so a change to the hand-off can be
//! compared build against build (`BENCHMARKS.md`, 2026-12-03). The floor
//! on the machine is a bare cache-line round trip between two threads:
//! `benchmarks/line_pingpong.rs`.

use std::hint::black_box;
use std::time::Instant;

// As the `troika` command.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let round_trips: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let pool = troika::ThreadPool::new(workers).expect("a thread pool");
    let burst: Vec<_> = (0..100_000u64).map(|i| pool.submit(move || i)).collect();
    for handle in burst {
        black_box(handle.result().expect("a burst task"));
    }
    let mut ns: Vec<u64> = Vec::with_capacity(round_trips as usize);
    for i in 0..round_trips {
        let start = Instant::now();
        let value = pool
            .submit(move || black_box(i).wrapping_mul(2))
            .result()
            .expect("a round trip");
        ns.push(start.elapsed().as_nanos() as u64);
        assert_eq!(value, i.wrapping_mul(2));
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "{workers} worker(s), {round_trips} round trips: p10 {} ns, p50 {} ns, p90 {} ns, p99 {} ns",
        at(0.10),
        at(0.50),
        at(0.90),
        at(0.99)
    );
}
