//! Python's `multiprocessing.Pool`, `apply` vs `apply_async`: `apply` runs
//! tasks one at a time (each call waits), `apply_async` starts them all and
//! the results are gathered afterwards (`res.get()` is `result()`); then
//! close and join.

use std::time::{Duration, Instant};

use troika::ProcessPool;

troika::remote! {
    /// Python's `long_time_task(name)` (0.1 s here instead of 1 s).
    fn long_time_task(name: u32) -> String {
        println!("Run task {name} ({})...", std::process::id());
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        format!("Task {name} runs {:.2} seconds.", start.elapsed().as_secs_f64())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();
    println!("Parent process {}.", std::process::id());
    let pool = ProcessPool::new(3)?;

    let start = Instant::now();
    for i in 0..5 {
        println!("{}", pool.apply(long_time_task, i)?); // waits for each
    }
    println!(
        "apply: {:.2} s (one at a time)",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let results: Vec<_> = (0..5)
        .map(|i| pool.apply_async(long_time_task, i))
        .collect();
    for res in results {
        println!("{}", res.result()?); // Python's res.get()
    }
    println!(
        "apply_async: {:.2} s (three at a time)",
        start.elapsed().as_secs_f64()
    );

    println!("Waiting for all subprocesses done...");
    pool.close();
    pool.join();
    println!("All subprocesses done.");
    Ok(())
}
