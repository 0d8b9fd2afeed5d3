//! The machine's floor for a cross-thread round trip: two threads bounce a
//! counter between two cache lines (each value alone on its line), 200,000
//! times, both spinning; prints the p10, p50, p90 and p99 in nanoseconds.
//! A thread pool's round trip (submit, run, see the result) cannot beat it:
//! it moves at least these two lines, and in practice several more (the
//! queue's slot and tail, the handle's state and outcome).
//!
//!     rustc -O -o /tmp/line_pingpong benchmarks/line_pingpong.rs && /tmp/line_pingpong
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[repr(align(128))]
struct Line(AtomicU64);

fn main() {
    let lines = Arc::new((Line(AtomicU64::new(0)), Line(AtomicU64::new(0))));
    let other = Arc::clone(&lines);
    let n = 200_000u64;
    let echo = std::thread::spawn(move || {
        for i in 1..=n {
            while other.0.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            other.1.0.store(i, Ordering::Release);
        }
    });
    let mut ns = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let start = Instant::now();
        lines.0.0.store(i, Ordering::Release);
        while lines.1.0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        ns.push(start.elapsed().as_nanos());
    }
    echo.join().unwrap();
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "cache-line round trip: p10 {} ns, p50 {} ns, p90 {} ns, p99 {} ns",
        at(0.10),
        at(0.50),
        at(0.90),
        at(0.99)
    );
}
