//! Python's `asyncio.gather`: two dishes cooked at once — both are done after
//! one dish's time.

use std::time::{Duration, Instant};

/// Python's 3 s per dish, scaled down to 30 ms.
const COOKING: Duration = Duration::from_millis(30);

async fn cook(dish: &'static str) -> &'static str {
    println!("开始炒{dish} (start cooking {dish})");
    tokio::time::sleep(COOKING).await;
    println!("{dish}出锅 ({dish} is done)");
    dish
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let executor = troika::AsyncExecutor::new()?;
    let started = Instant::now();
    let served = executor.block_on(troika::aio::gather([cook("地三鲜"), cook("回锅肉")]))?;
    let took = started.elapsed();
    for dish in served {
        println!("served: {}", dish?);
    }
    println!(
        "two dishes in {:.0} ms (one dish takes {} ms): cooked at once, not one after the other",
        took.as_secs_f64() * 1e3,
        COOKING.as_millis()
    );
    Ok(())
}
