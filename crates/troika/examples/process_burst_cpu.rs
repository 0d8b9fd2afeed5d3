//! Where a process-pool burst spends its CPU: bursts of trivial calls, each
//! with its handle, on 2 workers, then the CPU time every thread of the
//! parent and of the workers used, per call (from `/proc/<pid>/task/*/schedstat`:
//! Linux only, as troika).
//!
//! ```sh
//! cargo run --release -p troika --example process_burst_cpu -- [CALLS] [BURSTS]
//! cargo run --release -p troika --example process_burst_cpu -- 100000 10   # BENCHMARKS.md's figures
//! ```
//!
//! Prints the calls per second over all bursts, how long the submitting loop
//! took per call, and each thread's CPU time per call (threads under 1 ms in
//! all are left out), with the total. `troika bench --workload overhead`
//! times the same kind of burst; this shows which thread the time goes to.

use std::collections::HashMap;
use std::time::Instant;

// As the `troika` command: the submitter allocates, another thread frees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

troika::remote! {
    /// The call: as bench's overhead task, a number and an unused float in,
    /// a number out.
    fn trivial(x: (u64, f64)) -> u64 {
        x.0.wrapping_mul(2).wrapping_add(1)
    }
}

/// Nanoseconds of CPU each thread of this process and of its children has
/// used, by "pid/name".
fn cpu_by_thread() -> HashMap<String, u64> {
    let mut pids = vec![std::process::id()];
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    let mut cpu = HashMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            cpu.insert(format!("{pid}/{}", name.trim()), ns);
        }
    }
    cpu
}

fn arg(index: usize, default: u64) -> Result<u64, String> {
    match std::env::args().nth(index) {
        None => Ok(default),
        Some(text) => match text.parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "argument {index}: expected a positive whole number, got {text:?}"
            )),
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();
    let calls = arg(1, 20_000)?;
    let bursts = arg(2, 5)?;
    let pool = troika::ProcessPool::builder()
        .workers(2)
        .name("burst")
        .build()?;
    let burst = || -> Result<(), troika::TaskError> {
        let handles: Vec<_> = (0..calls).map(|i| pool.submit(trivial, (i, 0.0))).collect();
        for handle in handles {
            std::hint::black_box(handle.result()?);
        }
        Ok(())
    };
    // Warm: the workers' pages, the rings, the allocator's free lists.
    for _ in 0..3 {
        burst()?;
    }
    let before = cpu_by_thread();
    let start = Instant::now();
    for _ in 0..bursts {
        burst()?;
    }
    let wall = start.elapsed().as_secs_f64();
    let after = cpu_by_thread();
    let total = (calls * bursts) as f64;
    println!("{:.0} calls/s", total / wall);
    let mut used: Vec<(String, u64)> = after
        .into_iter()
        .map(|(name, ns)| {
            let was = before.get(&name).copied().unwrap_or(0);
            (name, ns.saturating_sub(was))
        })
        .collect();
    used.sort();
    let mut sum = 0;
    for (name, ns) in used {
        sum += ns;
        if ns > 1_000_000 {
            println!("  {name:28} {:6.0} ns/call", ns as f64 / total);
        }
    }
    println!("  {:28} {:6.0} ns/call", "all threads", sum as f64 / total);
    Ok(())
}
