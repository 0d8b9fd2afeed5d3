//! Python's `threading.BoundedSemaphore`: the candy machine — a producer refills and a consumer
//! buys from a tray guarded by a `BoundedSemaphore(5)`; refilling a full tray
//! is refused instead of overfilling it.
//!
//! Python's `BoundedSemaphore.release()` raises `ValueError` past the
//! starting value; troika's returns `Err(ReleaseError::AboveBound)`. Buying
//! from an empty tray is a non-blocking `try_acquire` that returns `false`.
//! A plain `Lock` keeps each step's messages together, as in the Python
//! version, which sleeps 0–2 s between steps; here 0–20 ms.
//!
//! Run with `cargo run -p troika --example candy_machine`.

use std::sync::Arc;
use std::time::Duration;

use troika::sync::{BoundedSemaphore, Lock, ReleaseError, Thread};

const MAX: usize = 5;

struct Machine {
    lock: Lock,
    tray: BoundedSemaphore,
}

impl Machine {
    fn refill(&self) {
        let _printing = self.lock.lock();
        print!("Refilling candy... ({} bars) ", self.tray.value());
        match self.tray.release() {
            Ok(()) => println!("OK"),
            Err(ReleaseError::AboveBound { bound }) => println!("full ({bound}), skipping"),
            Err(e) => println!("error: {e}"),
        }
    }

    fn buy(&self) {
        let _printing = self.lock.lock();
        print!("Buying candy...   ({} bars) ", self.tray.value());
        if self.tray.try_acquire() {
            println!("OK");
        } else {
            println!("empty, skipping");
        }
    }
}

/// A tiny pseudo-random source (Python uses `randrange`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn main() -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::from(d.subsec_nanos()) | 1);
    let mut rng = Rng(nanos);
    let machine = Arc::new(Machine {
        lock: Lock::new(),
        tray: BoundedSemaphore::new(MAX),
    });
    println!("THE CANDY MACHINE (full with {MAX} bars)!");

    // The machine starts full, so this first refill shows the bounded error.
    machine.refill();

    let nloops = 2 + rng.below(4); // randrange(2, 6)
    let consumer_loops = nloops + rng.below(MAX as u64 + 3); // randrange(nloops, nloops+MAX+3)
    let consumer = {
        let machine = Arc::clone(&machine);
        let mut rng = Rng(rng.below(u64::MAX) | 1);
        Thread::spawn("consumer", move || {
            for _ in 0..consumer_loops {
                machine.buy();
                std::thread::sleep(Duration::from_millis(10 * rng.below(3)));
            }
        })?
    };
    let producer = {
        let machine = Arc::clone(&machine);
        let mut rng = Rng(rng.below(u64::MAX) | 1);
        Thread::spawn("producer", move || {
            for _ in 0..nloops {
                machine.refill();
                std::thread::sleep(Duration::from_millis(10 * rng.below(3)));
            }
        })?
    };
    for t in [consumer, producer] {
        let name = t.name().to_owned();
        if let Err(e) = t.join() {
            eprintln!("{name} failed: {e}");
        }
    }
    println!("all done: {} bars left", machine.tray.value());
    Ok(())
}
