//! Python's Flask-plus-`ThreadPoolExecutor` service as plain code — read a
//! file, a database and an API at once; the total is about the slowest call,
//! not the sum.

use std::time::{Duration, Instant};

use troika::ThreadPool;

fn read_file() -> &'static str {
    std::thread::sleep(Duration::from_millis(10));
    "file result"
}

fn read_db() -> &'static str {
    std::thread::sleep(Duration::from_millis(20));
    "db result"
}

fn read_api() -> &'static str {
    std::thread::sleep(Duration::from_millis(30));
    "api result"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPool::new(3)?;

    let start = Instant::now();
    let sequential = (read_file(), read_db(), read_api());
    println!("one after another: {sequential:?} in {:?}", start.elapsed());

    let start = Instant::now();
    let file = pool.submit(read_file);
    let db = pool.submit(read_db);
    let api = pool.submit(read_api);
    let fanned = (file.result()?, db.result()?, api.result()?);
    let elapsed = start.elapsed();
    println!(
        "{{\"result_file\": {:?}, \"result_db\": {:?}, \"result_api\": {:?}}} in {elapsed:?} (about the slowest call, 30 ms)",
        fanned.0, fanned.1, fanned.2
    );
    Ok(())
}
