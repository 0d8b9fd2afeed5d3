//! Python's thread-safe `queue.Queue` between threads: producers put work on a
//! bounded `troika::sync::Queue`, consumers take it, mark each item done with
//! `task_done`, and the main thread waits for all of it with `join`.
//!
//! The classic writer/reader pair ("write data to mysql" → "read data from
//! mysql") is the first part; the second is a producer/consumer crawler, with
//! two producers, three consumers, a bounded queue (back-pressure) and a
//! `None` sentinel per consumer to stop them. Work is simulated with
//! millisecond sleeps.
//!
//! Run with `cargo run -p troika --example queue_producer_consumer`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troika::sync::{Queue, Thread, TryPutError, current_thread_name};

fn main() -> std::io::Result<()> {
    // --- Part 1: one writer, one reader.
    let q = Arc::new(Queue::new(0));
    let writer = {
        let q = Arc::clone(&q);
        Thread::spawn("writer", move || {
            if let Err(e) = q.put("write data to mysql".to_owned()) {
                eprintln!("{e}");
            }
        })?
    };
    let reader = {
        let q = Arc::clone(&q);
        Thread::spawn("reader", move || match q.get() {
            Ok(res) => println!("{}", res.replace("write", "read").replace("to", "from")),
            Err(e) => eprintln!("{e}"),
        })?
    };
    for t in [reader, writer] {
        if let Err(e) = t.join() {
            eprintln!("failed: {e}");
        }
    }

    // --- Part 2: producers and consumers with task_done/join.
    let start = Instant::now();
    let urls: Arc<Queue<Option<String>>> = Arc::new(Queue::new(4));
    let producers = (0..2)
        .map(|p| {
            let urls = Arc::clone(&urls);
            Thread::spawn(format!("producer-{p}"), move || {
                for page in 0..10 {
                    // Blocks while 4 URLs are waiting: back-pressure.
                    if urls
                        .put(Some(format!("https://example.com/{p}/{page}")))
                        .is_err()
                    {
                        break; // closed: nobody takes work any more
                    }
                }
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let consumers = (0..3)
        .map(|c| {
            let urls = Arc::clone(&urls);
            Thread::spawn(format!("consumer-{c}"), move || {
                let mut crawled = 0;
                while let Ok(Some(url)) = urls.get() {
                    std::thread::sleep(Duration::from_millis(2)); // "fetch" it
                    crawled += 1;
                    if crawled == 1 {
                        println!("{} crawled its first page: {url}", current_thread_name());
                    }
                    if let Err(e) = urls.task_done() {
                        eprintln!("{e}");
                    }
                }
                // The sentinel counts as a put item too.
                if let Err(e) = urls.task_done() {
                    eprintln!("{e}");
                }
                crawled
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;

    for p in producers {
        if let Err(e) = p.join() {
            eprintln!("producer failed: {e}");
        }
    }
    // Every URL put has now been taken *and* processed.
    urls.join();
    println!(
        "all 20 pages processed after {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    for _ in &consumers {
        if let Err(e) = urls.put(None) {
            eprintln!("{e}");
        }
    }
    for c in consumers {
        let name = c.name().to_owned();
        match c.join() {
            Ok(n) => println!("{name} crawled {n} pages"),
            Err(e) => eprintln!("{name} failed: {e}"),
        }
    }

    // The failure paths are typed errors, not exceptions.
    println!("try_get on an empty queue: {:?}", urls.try_get());
    println!(
        "get with a 5 ms timeout: {:?}",
        urls.get_timeout(Duration::from_millis(5))
    );
    println!("task_done once too often: {:?}", urls.task_done());
    let small = Queue::new(1);
    if let Err(e) = small.put(1) {
        eprintln!("{e}");
    }
    match small.try_put(2) {
        Err(TryPutError::Full(item)) => {
            println!("try_put on a full queue: Full, got {item} back")
        }
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
