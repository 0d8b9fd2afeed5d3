//! What the benches' CPU-time reports share (each bench includes this with
//! `mod support;`): the process's CPU time, and interleaved rounds of
//! variants reduced to medians per task.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The CPU time (user + system, every thread) this process has used.
pub(crate) fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to a writable `rusage`; getrusage fills it in.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: zeroed is a valid `rusage`, and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs each variant (its number of tasks per run, and the run) `rounds`
/// times, the variants interleaved within each round so that a change of
/// the machine's load falls on all of them; returns per variant the median
/// CPU ns and wall ns per task (and, in the environment variable
/// `BENCH_MIN=1`, prints each variant's least CPU ns per task too).
pub(crate) fn medians_per_task(
    rounds: usize,
    variants: &[(u64, &dyn Fn() -> u64)],
) -> Vec<(f64, f64)> {
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut wall = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        // Each round starts at another variant, so that no variant always
        // follows the same one (the heap and the caches a run leaves
        // behind change the next run's cost).
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (tasks, run) = &variants[i];
            let (c0, w0) = (cpu_time(), Instant::now());
            black_box(run());
            cpu[i].push((cpu_time() - c0).as_nanos() as f64 / *tasks as f64);
            wall[i].push(w0.elapsed().as_nanos() as f64 / *tasks as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    if std::env::var_os("BENCH_MIN").is_some() {
        for (i, c) in cpu.iter().enumerate() {
            let min = c.iter().copied().fold(f64::INFINITY, f64::min);
            println!("variant {i}: least cpu {min:7.1} ns/task");
        }
    }
    cpu.into_iter()
        .zip(wall)
        .map(|(c, w)| (median(c), median(w)))
        .collect()
}
