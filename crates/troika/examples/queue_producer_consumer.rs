//! Python's `queue.Queue` between threads: producers put work on a bounded
//! `troika::sync::Queue`, consumers take it, mark each item done with
//! `task_done`, and the main thread waits for all of it with `join`.
//!
//! A writer/reader pair ("write data" → "read data") is the first part; the
//! second is the shape of a threaded crawler, with
//! two producers, three consumers, a bounded queue (back-pressure) and a
//! `None` sentinel per consumer to stop them. Work is simulated with
//! millisecond sleeps.
//!
//! Run with `cargo run -p troika --example queue_producer_consumer`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troika::sync::{Queue, QueueError, Thread, current_thread_name};

fn main() -> std::io::Result<()> {
    // --- One writer, one reader.
    let q = Arc::new(Queue::new(0));
    let writer = {
        let q = Arc::clone(&q);
        Thread::spawn("writer", move || q.put("write data to mysql".to_owned()))?
    };
    let reader = {
        let q = Arc::clone(&q);
        Thread::spawn("reader", move || {
            let res = q.get();
            println!("{}", res.replace("write", "read").replace("to", "from"));
        })?
    };
    for t in [reader, writer] {
        if let Err(e) = t.join() {
            eprintln!("failed: {e}");
        }
    }

    // --- Producers and consumers with task_done/join.
    let start = Instant::now();
    let urls: Arc<Queue<Option<String>>> = Arc::new(Queue::new(4));
    let producers = (0..2)
        .map(|p| {
            let urls = Arc::clone(&urls);
            Thread::spawn(format!("producer-{p}"), move || {
                for page in 0..10 {
                    // Blocks while 4 URLs are waiting: back-pressure.
                    urls.put(Some(format!("https://example.com/{p}/{page}")));
                }
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let consumers = (0..3)
        .map(|c| {
            let urls = Arc::clone(&urls);
            Thread::spawn(format!("consumer-{c}"), move || {
                let mut crawled = 0;
                while let Some(url) = urls.get() {
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
        urls.put(None);
    }
    for c in consumers {
        let name = c.name().to_owned();
        match c.join() {
            Ok(n) => println!("{name} crawled {n} pages"),
            Err(e) => eprintln!("{name} failed: {e}"),
        }
    }

    // The failure paths are typed errors, not exceptions.
    println!("get_nowait on an empty queue: {:?}", urls.get_nowait());
    println!(
        "get with a 5 ms timeout: {:?}",
        urls.get_timeout(Duration::from_millis(5))
    );
    println!("task_done once too often: {:?}", urls.task_done());
    let small = Queue::new(1);
    small.put(1);
    match small.put_nowait(2) {
        Err(e) if e.error() == QueueError::Full => println!(
            "put_nowait on a full queue: Full, got {} back",
            e.into_inner()
        ),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
