//! Python's `multiprocessing.Process` attributes: a child's pid, name and
//! `is_alive`, before and after it ends, and its exit status.

use std::time::Duration;

use troika::Process;

troika::remote! {
    /// Python's `worker(interval)`: some CPU work, `interval` rounds of it.
    fn worker(interval: u64) -> u64 {
        println!("The time is {:?} (in the child)", std::time::SystemTime::now());
        let mut acc = 0u64;
        for i in 0..interval {
            // Numeric work that keeps the CPU busy.
            acc = acc.wrapping_add((0..10_000u64).fold(i, |a, b| a.wrapping_mul(31).wrapping_add(b)));
        }
        acc
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();
    let p = Process::builder().name("worker-1").spawn(worker, 1000)?;
    println!("p.pid: {}", p.pid());
    println!("p.name: {}", p.name());
    println!("p.is_alive: {}", p.is_alive());
    if p.join_timeout(Duration::from_secs(30)) {
        println!("p.is_alive after join: {}", p.is_alive());
        println!("p.exit_status: {:?}", p.exit_status());
    }
    println!("result: {}", p.join()?);
    Ok(())
}
