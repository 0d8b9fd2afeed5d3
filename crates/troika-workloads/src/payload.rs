//! The payload workload, as `troika bench` and the Rust peers' runner both
//! run it: echo tasks whose argument and result are `size` bytes, first all
//! at once (the transfer rate, both directions counted), then one at a time
//! (the round trip), every echo checked.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Argument (and result) sizes: 8 B, 64 KiB, 1 MiB, 64 MiB.
pub const SIZES: [usize; 4] = [8, 64 << 10, 1 << 20, 64 << 20];
/// Round trips timed per size (at most).
pub const SAMPLES: u64 = 100;
/// Echoes of each size run, all at once and untimed, before its timed
/// ones (at most this many, and at most the timed burst's): they wake the
/// workers, and give the few tasks of a large size the warm state (pages,
/// buffers, kept shared memory) that the first of a small size's thousand
/// tasks give the rest.
pub const WARM_UP: usize = 16;
/// Bytes one size may send one way, to bound the run.
const BUDGET: usize = 256 << 20;

/// Tasks of one size: `tasks`, but at most [`BUDGET`] bytes one way (and at
/// least 2 tasks).
pub fn tasks_for(size: usize, tasks: u64) -> u64 {
    tasks.min((BUDGET / size.max(1)).max(2) as u64)
}

/// A buffer of `size` bytes with the pattern an echo is checked against.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Whether `echo` came back whole (its length and its last byte).
pub fn echoed(echo: &[u8], size: usize) -> bool {
    echo.len() == size && echo.last().copied() == size.checked_sub(1).map(|l| (l % 251) as u8)
}

/// An echo that did not come back whole.
#[derive(Debug, thiserror::Error)]
#[error("an echo of {size} bytes did not come back whole")]
pub struct NotEchoed {
    /// The size sent.
    pub size: usize,
}

/// Echoes of copies of `template` through `submit` and `wait`: up to
/// [`WARM_UP`] (at most `tasks`) submitted at once, untimed, then `tasks`
/// submitted all at once and waited for (the wall time returned), then up
/// to [`SAMPLES`] one at a time (the round trips returned).
pub fn transfers<H, E: From<NotEchoed>>(
    template: &[u8],
    tasks: u64,
    submit: impl Fn(Vec<u8>) -> H,
    wait: impl Fn(H) -> Result<Vec<u8>, E>,
) -> Result<(Duration, Vec<Duration>), E> {
    let size = template.len();
    let whole = |echo: &[u8]| {
        if echoed(echo, size) {
            Ok(())
        } else {
            Err(E::from(NotEchoed { size }))
        }
    };
    let warm_up = (WARM_UP as u64).min(tasks);
    let handles: Vec<H> = (0..warm_up).map(|_| submit(template.to_vec())).collect();
    for handle in handles {
        whole(&wait(handle)?)?;
    }
    let args: Vec<Vec<u8>> = (0..tasks).map(|_| template.to_vec()).collect();
    let start = Instant::now();
    let handles: Vec<H> = args.into_iter().map(&submit).collect();
    let echoes = handles
        .into_iter()
        .map(&wait)
        .collect::<Result<Vec<_>, _>>()?;
    let wall = start.elapsed();
    echoes.iter().try_for_each(|e| whole(e))?;
    drop(black_box(echoes));
    let mut latencies = Vec::new();
    for _ in 0..tasks.min(SAMPLES) {
        let arg = template.to_vec();
        let t = Instant::now();
        let echo = wait(submit(arg))?;
        latencies.push(t.elapsed());
        whole(&echo)?;
    }
    Ok((wall, latencies))
}
