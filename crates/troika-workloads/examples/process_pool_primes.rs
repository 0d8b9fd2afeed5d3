//! Python's `ProcessPoolExecutor` tutorial ("map and submit"): its trial
//! division `is_prime`, run serially and on a process pool with `map` and
//! with `submit`. (The tutorial checks 112272535095293 a hundred times; this
//! example checks it a few times to stay quick.)

use std::time::Instant;

use troika::ProcessPool;
use troika_workloads::pool::{TUTORIAL_NUMBER, is_prime, is_prime_trial};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();
    let repeat = if cfg!(debug_assertions) { 4 } else { 20 };
    let parameter = vec![TUTORIAL_NUMBER; repeat];

    let start = Instant::now();
    let serial: Vec<bool> = parameter.iter().map(|&n| is_prime_trial(n)).collect();
    println!("serial:  {:.3} s", start.elapsed().as_secs_f64());

    let pool = ProcessPool::new(2)?;
    let start = Instant::now();
    let mapped: Vec<bool> = pool
        .map(is_prime, parameter.clone())
        .collect::<Result<_, _>>()?;
    println!("map:     {:.3} s", start.elapsed().as_secs_f64());

    let start = Instant::now();
    let handles: Vec<_> = parameter
        .iter()
        .map(|&n| pool.submit(is_prime, n))
        .collect();
    let submitted: Vec<bool> = handles
        .into_iter()
        .map(|h| h.result())
        .collect::<Result<_, _>>()?;
    println!("submit:  {:.3} s", start.elapsed().as_secs_f64());

    assert_eq!(serial, mapped);
    assert_eq!(serial, submitted);
    println!("{TUTORIAL_NUMBER} is prime: {}", serial[0]);
    Ok(())
}
