//! Python's `threading` module against plain sequential code: two sleeping
//! loops run one after the other, then on two named threads, with the wall-clock time of each.
//!
//! The Python original sleeps 4 s and 2 s; here the loops sleep 40 ms and 20 ms, so the
//! sequential run takes about 60 ms and the threaded one about 40 ms (the
//! longest loop).
//!
//! Run with `cargo run -p troika --example seq_vs_threads`.

use std::time::{Duration, Instant};

use troika::sync::Thread;

/// (loop number, how long it sleeps): Python's `loops = [4, 2]`, scaled.
const LOOPS: [(usize, u64); 2] = [(0, 40), (1, 20)];

fn loop_body(start: Instant, nloop: usize, ms: u64) {
    println!("  start loop {nloop} at {:>5.1} ms", ms_since(start));
    std::thread::sleep(Duration::from_millis(ms));
    println!("  loop {nloop} done at {:>5.1} ms", ms_since(start));
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn main() -> std::io::Result<()> {
    println!("sequential:");
    let start = Instant::now();
    for (nloop, ms) in LOOPS {
        loop_body(start, nloop, ms);
    }
    let sequential = start.elapsed();
    println!("  all done at {:>5.1} ms", ms_since(start));

    println!("threads:");
    let start = Instant::now();
    // threading.Thread(target=loop, args=(i, loops[i])) for each loop...
    let threads = LOOPS
        .into_iter()
        .map(|(nloop, ms)| {
            Thread::spawn(format!("loop{nloop}"), move || loop_body(start, nloop, ms))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // ...then join them all.
    for t in threads {
        let name = t.name().to_owned();
        if let Err(e) = t.join() {
            eprintln!("{name} failed: {e}");
        }
    }
    let threaded = start.elapsed();
    println!("  all done at {:>5.1} ms", ms_since(start));

    println!(
        "sequential {:.1} ms, threads {:.1} ms ({:.2}x faster)",
        sequential.as_secs_f64() * 1e3,
        threaded.as_secs_f64() * 1e3,
        sequential.as_secs_f64() / threaded.as_secs_f64()
    );
    Ok(())
}
