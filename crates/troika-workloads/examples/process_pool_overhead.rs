//! Measures a ProcessPool's overheads (the process side of Python's
//! `ProcessPoolExecutor` tutorials): pool start-up, round-trip latency, submit and map
//! throughput, worker replacement and idle CPU. Run it in release mode:
//! `cargo run --release -p troika-workloads --example process_pool_overhead`.

use std::time::{Duration, Instant};

use troika::ProcessPool;
use troika_workloads::pool as workloads;

troika::remote! {
    fn die(code: i32) -> u32 {
        std::process::exit(code)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn main() {
    troika::init();
    let quick = std::env::var_os("TROIKA_QUICK").is_some() || cfg!(debug_assertions);
    let scale = if quick { 100 } else { 1 };

    // Start-up: build() plus one answer from each worker.
    let start = Instant::now();
    let pool = ProcessPool::new(2).expect("pool");
    let built = start.elapsed();
    let first: Vec<_> = (0..2u64).map(|i| pool.submit(workloads::inc, i)).collect();
    for h in first {
        h.result().expect("first task");
    }
    println!(
        "pool of 2 ready:        build {:.2} ms, first answers {:.2} ms",
        built.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );

    let mut lat = workloads::round_trips(&pool, 20_000 / scale).expect("round trips");
    lat.sort();
    println!(
        "round trip:             p50 {:.1} us, p99 {:.1} us",
        percentile(&lat, 0.50).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6
    );

    let n = 400_000 / scale;
    let t = workloads::submit_throughput(&pool, n).expect("submit");
    println!(
        "submit throughput:      {:.0} tasks/s",
        n as f64 / t.as_secs_f64()
    );

    let n = 20_000_000 / scale;
    let t = workloads::map_throughput(&pool, n, 8192).expect("map");
    println!(
        "ordered map, chunk 8192: {:.1} M items/s",
        n as f64 / t.as_secs_f64() / 1e6
    );

    // Replacement: a task kills its worker; time until the pool answers again.
    let mut replace = Vec::new();
    for _ in 0..if quick { 3 } else { 10 } {
        let _ = pool.submit(die, 1).result();
        let t = Instant::now();
        pool.submit(workloads::inc, 1)
            .result()
            .expect("after death");
        replace.push(t.elapsed());
    }
    replace.sort();
    println!(
        "dead worker replaced:   median {:.2} ms (time from the death's error to the next answer)",
        percentile(&replace, 0.5).as_secs_f64() * 1e3
    );

    let (primes, t) = workloads::cpu(
        &pool,
        workloads::TUTORIAL_NUMBER,
        workloads::TUTORIAL_REPEAT / scale,
    )
    .expect("cpu");
    println!(
        "tutorial cpu workload:  {primes} primes in {:.3} s",
        t.as_secs_f64()
    );

    // Idle: the pool, its threads and workers should use no CPU.
    let mut pids = pool.worker_pids();
    pids.push(std::process::id());
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    std::thread::sleep(Duration::from_millis(if quick { 100 } else { 1000 }));
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    println!(
        "idle cpu:               {} clock ticks over the idle period",
        after - before
    );
    println!("stats: {:?}", pool.stats());
}
