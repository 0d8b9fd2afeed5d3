//! Round trips of a large `Vec<u8>` (argument and result) through a
//! one-worker ProcessPool: wall time per round trip (min and median) and
//! CPU time per round trip in the parent and in the worker, against the
//! machine's `memcpy` rate (64 MiB between warm buffers, as `troika bench`
//! measures it). CPU time moves less than wall time with the load of a
//! shared machine. Run it in release mode:
//! `cargo run --release -p troika-workloads --example payload_roundtrip [SIZE:TRIPS ...]`
//! (default `1048576:200 67108864:20`).
//!
//! `burst:SIZE:TASKS:ROUNDS` measures bursts instead, as `troika bench`'s
//! payload rows do: a fresh pool of 2 workers, then ROUNDS times TASKS
//! echoes submitted at once and all waited for; per burst the wall time,
//! the CPU time of the parent and its workers, and MB/s both ways (the
//! first burst is the fresh pool's, the others find it warm).

use std::hint::black_box;
use std::time::{Duration, Instant};

use troika::ProcessPool;

troika::remote! {
    fn echo(bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }

    fn worker_pid(_unit: ()) -> u32 {
        std::process::id()
    }
}

/// User plus system CPU time of process `pid` (`self` for this one), from
/// `/proc` (in clock ticks of 10 ms: read it over many round trips).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn main() {
    troika::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let specs = if args.is_empty() {
        vec!["1048576:200".to_string(), "67108864:20".to_string()]
    } else {
        args
    };
    let pool = ProcessPool::builder().workers(1).build().expect("pool");
    let pid = pool
        .submit(worker_pid, ())
        .result()
        .expect("pid")
        .to_string();
    for _ in 0..16 {
        pool.submit(echo, vec![1]).result().expect("warm-up");
    }
    // The memcpy rate: the best of 8 copies of 64 MiB between warm buffers.
    let source: Vec<u8> = (0..64usize << 20).map(|i| (i % 251) as u8).collect();
    let mut target = source.clone();
    let copy = (0..8)
        .map(|_| {
            let t = Instant::now();
            target.copy_from_slice(black_box(&source));
            black_box(&mut target);
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    let memcpy_mb_s = source.len() as f64 / copy.as_secs_f64() / 1e6;
    drop((source, target));
    println!("memcpy: {memcpy_mb_s:.0} MB/s (64 MiB, best of 8)");
    for spec in specs {
        if let Some(burst) = spec.strip_prefix("burst:") {
            bursts(burst, memcpy_mb_s);
            continue;
        }
        let (size, trips) = spec.split_once(':').expect("SIZE:TRIPS");
        let size: usize = size.parse().expect("size");
        let trips: usize = trips.parse().expect("trips");
        let template: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();

        let mut walls = Vec::with_capacity(trips);
        let mut parent_cpu = Duration::ZERO;
        let mut worker_cpu = Duration::ZERO;
        for _ in 0..trips {
            let arg = template.clone();
            let (p0, w0) = (cpu_time("self"), cpu_time(&pid));
            let t = Instant::now();
            let back = pool.submit(echo, arg).result().expect("echo");
            walls.push(t.elapsed());
            parent_cpu += cpu_time("self").saturating_sub(p0);
            worker_cpu += cpu_time(&pid).saturating_sub(w0);
            assert_eq!(back.len(), size);
            assert_eq!(back.last(), template.last());
        }
        walls.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let n = trips as u32;
        let best = 2.0 * size as f64 / walls[0].as_secs_f64() / 1e6;
        let typical = 2.0 * size as f64 / walls[walls.len() / 2].as_secs_f64() / 1e6;
        println!(
            "{size} B x {trips}: round trip min {:.3} ms, median {:.3} ms; CPU per trip: parent {:.3} ms, \
             worker {:.3} ms; MB/s both ways: best {best:.0} ({:.1} % of memcpy), median {typical:.0} ({:.1} %)",
            ms(walls[0]),
            ms(walls[walls.len() / 2]),
            ms(parent_cpu / n),
            ms(worker_cpu / n),
            100.0 * best / memcpy_mb_s,
            100.0 * typical / memcpy_mb_s,
        );
    }
}

/// The CPU time of this process's children (the pool's workers).
fn children_cpu() -> Duration {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command: ppid is field 4.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == me).then(|| cpu_time(&pid))
        })
        .sum()
}

/// `SIZE:TASKS:ROUNDS`: bursts on a fresh pool of 2 workers.
fn bursts(spec: &str, memcpy_mb_s: f64) {
    let fields: Vec<usize> = spec
        .split(':')
        .map(|f| f.parse().expect("burst:SIZE:TASKS:ROUNDS"))
        .collect();
    let [size, tasks, rounds] = fields[..] else {
        panic!("burst:SIZE:TASKS:ROUNDS");
    };
    let template: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let pool = ProcessPool::builder().workers(2).build().expect("pool");
    for _ in 0..16 {
        pool.submit(echo, vec![1]).result().expect("warm-up");
    }
    for round in 0..rounds {
        let args: Vec<Vec<u8>> = (0..tasks).map(|_| template.clone()).collect();
        let (p0, w0) = (cpu_time("self"), children_cpu());
        let t = Instant::now();
        let handles: Vec<_> = args.into_iter().map(|a| pool.submit(echo, a)).collect();
        let backs: Vec<Vec<u8>> = handles
            .into_iter()
            .map(|h| h.result().expect("echo"))
            .collect();
        let wall = t.elapsed();
        let (parent, workers) = (
            cpu_time("self").saturating_sub(p0),
            children_cpu().saturating_sub(w0),
        );
        assert!(
            backs
                .iter()
                .all(|b| b.len() == size && b.last() == template.last())
        );
        drop(backs);
        let rate = 2.0 * (size * tasks) as f64 / wall.as_secs_f64() / 1e6;
        println!(
            "burst {round} ({}): {tasks} x {size} B: wall {:.1} ms, CPU parent {:.0} ms + workers {:.0} ms; \
             {rate:.0} MB/s both ways ({:.1} % of memcpy)",
            if round == 0 { "fresh pool" } else { "warm" },
            wall.as_secs_f64() * 1e3,
            parent.as_secs_f64() * 1e3,
            workers.as_secs_f64() * 1e3,
            100.0 * rate / memcpy_mb_s,
        );
    }
}
