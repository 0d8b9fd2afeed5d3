//! Python's `threading.Lock`: threads record themselves in a shared set under a
//! lock, sleep, then remove themselves and print who is still running.
//!
//! In Python the lock and the set are two objects and nothing stops code
//! from touching the set without the lock. Here the lock *owns* the set —
//! `Lock<BTreeSet<String>>` — so the only way to reach the set is the guard
//! from `lock()`, which is also Python's `with lock:`. The Python version
//! sleeps 2–4 s per thread; here 20–40 ms.
//!
//! Run with `cargo run -p troika --example lock_shared_set`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troika::sync::{Lock, Thread, current_thread_name};

/// A small pseudo-random sequence (Python uses `randrange`), seeded from
/// the clock; no dependency needed for a demo.
fn pseudo_random(seed: &mut u64, lo: u64, hi: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    lo + *seed % (hi - lo)
}

fn show(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "NONE".to_owned()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::from(d.subsec_nanos()) | 1);
    let remaining = Arc::new(Lock::with_data(BTreeSet::new()));

    // loops = (randrange(2, 5) for x in xrange(randrange(3, 7)))
    let nthreads = pseudo_random(&mut seed, 3, 7);
    let threads = (0..nthreads)
        .map(|i| {
            let pause = Duration::from_millis(10 * pseudo_random(&mut seed, 2, 5));
            let remaining = Arc::clone(&remaining);
            Thread::spawn(format!("Thread-{}", i + 1), move || {
                let myname = current_thread_name();
                {
                    // with lock: remaining.add(myname); print ...
                    let mut set = remaining.lock();
                    set.insert(myname.clone());
                    println!("[{:>5.1} ms] Started {myname}", ms(start));
                }
                std::thread::sleep(pause);
                let mut set = remaining.lock();
                set.remove(&myname);
                println!("[{:>5.1} ms] Completed {myname} ({pause:?})", ms(start));
                println!("    (remaining: {})", show(&set));
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for t in threads {
        if let Err(e) = t.join() {
            eprintln!("a thread failed: {e}");
        }
    }

    // Python's style is there too: a lock with no data, acquire/release.
    let lock = Lock::new();
    lock.acquire();
    println!("Python-style lock held: {}", lock.locked());
    if let Err(e) = lock.release() {
        eprintln!("release failed: {e}");
    }
    // Releasing twice is Python's RuntimeError; here a typed error.
    println!("second release: {:?}", lock.release());

    println!("all DONE at {:.1} ms", ms(start));
    Ok(())
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
