//! Python's `multiprocessing.Process` start/join and join ordering: start
//! two processes and join both, then start/join one after the other so they
//! run in turn.
//! Each child prints its greeting; `join` returns its value.

use std::time::{Duration, Instant};

use troika::Process;

troika::remote! {
    /// Python's `f(name)`: greet, then pause (0.2 s here, 5 s in Python).
    fn f(name: String) -> u32 {
        println!("hello {name} (from process {})", std::process::id());
        std::thread::sleep(Duration::from_millis(200));
        std::process::id()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();

    // p.start(); p1.start(); p.join(); p1.join(): both run at once.
    let start = Instant::now();
    let p = Process::spawn(f, "bob".into())?;
    let p1 = Process::spawn(f, "lis".into())?;
    let (pid, pid1) = (p.join()?, p1.join()?);
    println!(
        "both joined after {:.1} s (pids {pid}, {pid1})",
        start.elapsed().as_secs_f64()
    );

    // p.start(); p.join(); p1.start(); p1.join(): one after the other.
    let start = Instant::now();
    Process::spawn(f, "bob".into())?.join()?;
    Process::spawn(f, "lis".into())?.join()?;
    println!("in turn, done after {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
