//! Python's `concurrent.futures.ThreadPoolExecutor` three ways — `map` (results in input order),
//! `submit` with each `future.result()` in submission order, and `as_completed`
//! (results in completion order).

use std::time::Duration;

use troika::{ThreadPool, as_completed};

/// Stands in for Python's `craw(url)`: a page fetch that takes a while.
fn craw(page: u64) -> String {
    std::thread::sleep(Duration::from_millis(5 * (page % 4)));
    format!("page {page}: {} bytes", 1000 + page * 17)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPool::new(4)?;

    println!("-- map: results in input order");
    for result in pool.map(craw, 1..=6) {
        println!("{}", result?);
    }

    println!("-- submit: each result in submission order");
    let handles: Vec<_> = (1..=6)
        .map(|page| pool.submit(move || craw(page)))
        .collect();
    for handle in handles {
        println!("{}", handle.result()?);
    }

    println!("-- as_completed: results in completion order");
    let handles: Vec<_> = (1..=6)
        .map(|page| pool.submit(move || craw(page)))
        .collect();
    for (position, handle) in as_completed(handles) {
        println!("#{position} -> {}", handle.result()?);
    }
    Ok(())
}
