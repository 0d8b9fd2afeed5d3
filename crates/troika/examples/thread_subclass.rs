//! Python's `threading.Thread` subclass: a thread type with its own `run` method —
//! Python's `class MyThread(threading.Thread)` — as a struct implementing
//! `troika::sync::Runnable`.
//!
//! `Thread::start` moves the struct onto a new thread and calls `run`;
//! `join` hands the struct back, so what `run` stored (here the loop's
//! result) can be read afterwards — something Python's subclass does through
//! shared attributes. Python's 4 s / 2 s sleeps are 40 ms / 20 ms here.
//!
//! Run with `cargo run -p troika --example thread_subclass`.

use std::time::{Duration, Instant};

use troika::sync::{Runnable, Thread, current_thread_name};

/// Python's `MyThread(func, args, name)`: a function, its arguments and a
/// thread name, plus a slot for the result.
struct MyThread<A, R> {
    name: String,
    func: fn(A) -> R,
    args: Option<A>,
    result: Option<R>,
}

impl<A, R> MyThread<A, R> {
    fn new(func: fn(A) -> R, args: A, name: impl Into<String>) -> MyThread<A, R> {
        MyThread {
            name: name.into(),
            func,
            args: Some(args),
            result: None,
        }
    }
}

impl<A: Send + 'static, R: Send + 'static> Runnable for MyThread<A, R> {
    /// `def run(self): self.func(*self.args)`
    fn run(&mut self) {
        if let Some(args) = self.args.take() {
            self.result = Some((self.func)(args));
        }
    }

    fn name(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

/// Python's `loop(nloop, nsec)`, returning how long it slept.
fn sleepy_loop((nloop, ms): (usize, u64)) -> Duration {
    let start = Instant::now();
    println!("start loop {nloop} on thread {}", current_thread_name());
    std::thread::sleep(Duration::from_millis(ms));
    println!("loop {nloop} done");
    start.elapsed()
}

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let threads = [(0, 40), (1, 20)]
        .into_iter()
        .map(|(nloop, ms)| {
            Thread::start(MyThread::new(
                sleepy_loop,
                (nloop, ms),
                format!("loop{nloop}"),
            ))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for t in threads {
        let name = t.name().to_owned();
        match t.join() {
            Ok(done) => println!("{name} slept {:?}", done.result.unwrap_or_default()),
            Err(e) => eprintln!("{name} failed: {e}"),
        }
    }
    println!("all done in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
