//! The process pool under load and abuse: many threads at once, floods of
//! bad and good tasks, workers killed at random, shutdown at awkward moments,
//! and a parent killed outright. Nothing hangs, nothing is lost, no process is
//! left behind.

mod ipc_support;

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipc_support::{alive, wait_until};
use serde::{Serialize, Serializer};
use troika::{ErrorKind, Exit, ProcessPool, SubmitErrorReason};

/// A value that cannot be serialized.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct Unwritable(u32);

impl Serialize for Unwritable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("never"))
    }
}

troika::remote! {
    fn double(x: u64) -> u64 {
        x * 2
    }

    fn slow_double(x: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(2));
        x * 2
    }

    fn sleep_ms(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    fn crash(code: i32) -> u64 {
        std::process::exit(code)
    }

    fn swallow(x: Unwritable) -> u32 {
        x.0
    }

    fn worker_pid() -> u32 {
        std::process::id()
    }
}

/// Whether `pid` is a child of this process that has not been reaped.
fn unreaped_child(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some(ppid == std::process::id())
        })
        .unwrap_or(false)
}

#[test]
fn ten_threads_submit_map_and_cancel_at_once() {
    let pool = Arc::new(ProcessPool::new(2).unwrap());
    let threads: Vec<_> = (0..10u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..50)
                    .map(|i| (i, pool.submit(double, t * 1000 + i)))
                    .collect();
                let mapped: Vec<u64> = pool
                    .map(double, (0..200).map(|i| t * 1000 + i))
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(
                    mapped,
                    (0..200).map(|i| 2 * (t * 1000 + i)).collect::<Vec<_>>()
                );
                let doomed: Vec<_> = (0..5).map(|_| pool.submit(sleep_ms, 50)).collect();
                for handle in &doomed {
                    handle.cancel();
                }
                for (i, handle) in handles {
                    assert_eq!(handle.result().unwrap(), 2 * (t * 1000 + i));
                }
                for handle in doomed {
                    match handle.result() {
                        Ok(ms) => assert_eq!(ms, 50),
                        Err(e) => assert!(e.is_cancelled(), "{e}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(pool.submit(double, 21).result().unwrap(), 42);
}

#[test]
fn hundred_unserializable_then_hundred_good() {
    let pool = ProcessPool::new(2).unwrap();
    let bad: Vec<_> = (0..100)
        .map(|i| pool.submit(swallow, Unwritable(i)))
        .collect();
    for handle in bad {
        assert!(handle.result().unwrap_err().is_serialization());
    }
    let good: Vec<_> = (0..100).map(|i| pool.submit(double, i)).collect();
    for (i, handle) in good.into_iter().enumerate() {
        assert_eq!(handle.result().unwrap(), 2 * i as u64);
    }
    assert_eq!(pool.stats().failed, 100);
}

#[test]
fn hundred_thousand_trivial_tasks() {
    let pool = ProcessPool::new(2).unwrap();
    let n = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let handles: Vec<_> = (0..n).map(|i| pool.submit(double, i)).collect();
    let mut sum = 0u64;
    for handle in handles {
        sum += handle.result().unwrap();
    }
    assert_eq!(sum, n * (n - 1));
    let stats = pool.stats();
    assert_eq!(stats.succeeded as u64, n);
    assert_eq!(stats.queued, 0);
}

#[test]
fn workers_killed_at_random_during_a_long_map() {
    let pool = Arc::new(ProcessPool::new(2).unwrap());
    let n = 600u64;
    let resolved = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let handle = pool.submit(slow_double, i);
            let resolved = Arc::clone(&resolved);
            handle.add_done_callback(move |_| {
                resolved.fetch_add(1, Ordering::SeqCst);
            });
            handle
        })
        .collect();
    // A chaos thread kills a random worker now and then while tasks remain.
    let killer = {
        let pool = Arc::clone(&pool);
        let resolved = Arc::clone(&resolved);
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut seed = 0x9e37_79b9u32;
            while resolved.load(Ordering::SeqCst) < n as usize * 3 / 4 {
                std::thread::sleep(Duration::from_millis(15));
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let pids = pool.worker_pids();
                if let Some(&pid) = pids.get(seed as usize % pids.len().max(1)) {
                    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    kills += 1;
                }
            }
            kills
        })
    };
    let mut ok = 0;
    let mut died = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.result() {
            Ok(v) => {
                assert_eq!(v, 2 * i as u64);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), &ErrorKind::WorkerDied(Exit::Signal(9)), "{e}");
                died += 1;
            }
        }
    }
    let kills = killer.join().unwrap();
    assert_eq!(ok + died, n);
    assert_eq!(
        resolved.load(Ordering::SeqCst),
        n as usize,
        "each handle resolved once"
    );
    assert!(died <= kills, "a kill fails at most the one task it hit");
    assert!(kills > 0);
    // And an ordered map through the same chaos-survivor pool still works.
    let mapped: Vec<u64> = pool.map(double, 0..100).map(Result::unwrap).collect();
    assert_eq!(mapped, (0..100).map(|i| 2 * i).collect::<Vec<_>>());
}

#[test]
fn shutdown_while_tasks_are_queued() {
    let pool = ProcessPool::new(1).unwrap();
    let handles: Vec<_> = (0..20).map(|_| pool.submit(sleep_ms, 5)).collect();
    pool.shutdown(true, true);
    let (mut ran, mut cancelled) = (0, 0);
    for handle in handles {
        match handle.result() {
            Ok(5) => ran += 1,
            Err(e) if e.is_cancelled() => cancelled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ran + cancelled, 20);
    assert!(cancelled > 0);
    assert!(pool.submit(double, 1).result().unwrap_err().is_shut_down());
    // Without cancelling, queued tasks still run.
    let pool = ProcessPool::new(1).unwrap();
    let handles: Vec<_> = (0..20).map(|i| pool.submit(double, i)).collect();
    pool.shutdown(true, false);
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result().unwrap(), 2 * i as u64);
    }
}

#[test]
fn shutdown_while_a_worker_crashes() {
    let pool = ProcessPool::new(2).unwrap();
    let crashing: Vec<_> = (0..4).map(|_| pool.submit(crash, 7)).collect();
    let good: Vec<_> = (0..20).map(|i| pool.submit(double, i)).collect();
    pool.shutdown(true, false);
    for handle in crashing {
        assert_eq!(
            handle.result().unwrap_err().kind(),
            &ErrorKind::WorkerDied(Exit::Code(7))
        );
    }
    for (i, handle) in good.into_iter().enumerate() {
        assert_eq!(handle.result().unwrap(), 2 * i as u64);
    }
}

#[test]
fn shutdown_by_drop_finishes_queued_tasks_and_reaps_workers() {
    let pool = ProcessPool::new(2).unwrap();
    let pids = pool.worker_pids();
    let handles: Vec<_> = (0..50).map(|i| pool.submit(slow_double, i)).collect();
    drop(pool);
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result().unwrap(), 2 * i as u64);
    }
    for pid in pids {
        assert!(!unreaped_child(pid), "worker {pid} was reaped");
    }
}

#[test]
fn terminate_stops_running_and_queued_tasks() {
    let pool = ProcessPool::new(1).unwrap();
    let running = pool.submit(sleep_ms, 60_000);
    let queued = pool.submit(double, 1);
    wait_until("the task to start", || running.is_running());
    pool.terminate();
    assert!(running.result().unwrap_err().is_shut_down());
    assert!(queued.result().unwrap_err().is_cancelled());
}

#[test]
fn no_zombies_after_deaths_and_drop() {
    let pool = ProcessPool::new(2).unwrap();
    let mut pids = pool.worker_pids();
    for _ in 0..5 {
        let _ = pool.submit(crash, 1).result();
        pids.extend(pool.worker_pids());
    }
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    pids.push(pid);
    drop(pool);
    for pid in pids {
        assert!(!unreaped_child(pid), "worker {pid} left a zombie");
    }
}

#[test]
fn bounded_queue_sheds_load() {
    let pool = ProcessPool::builder()
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let running = pool.submit(sleep_ms, 60_000);
    wait_until("the task to start", || running.is_running());
    let a = pool.try_submit(double, 1).unwrap();
    let b = pool.try_submit(double, 2).unwrap();
    let refused = pool.try_submit(double, 3).unwrap_err();
    assert_eq!(refused.reason, SubmitErrorReason::Full);
    assert_eq!(refused.task.arg, 3);
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.busy), (2, 1));
    assert!(running.cancel());
    assert_eq!(a.result().unwrap(), 2);
    assert_eq!(b.result().unwrap(), 4);
}

#[test]
fn pool_created_among_many_threads() {
    // A program that already runs many threads (as a tokio runtime does):
    // spawning must not fork them, and submitting from all of them works.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..16)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_add(1);
                    std::thread::yield_now();
                }
                x
            })
        })
        .collect();
    let pool = Arc::new(
        std::thread::spawn(|| ProcessPool::new(2).unwrap())
            .join()
            .unwrap(),
    );
    let users: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || pool.submit(double, t).result().unwrap())
        })
        .collect();
    for (t, user) in users.into_iter().enumerate() {
        assert_eq!(user.join().unwrap(), 2 * t as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        thread.join().unwrap();
    }
}

/// Not a test of its own: the parent process for
/// `parent_killed_leaves_no_worker`, run in a child test process.
#[test]
fn orphan_helper_parent() {
    if std::env::var_os("TROIKA_ORPHAN_HELPER").is_none() {
        return;
    }
    // Start the pool from a short-lived thread: the workers must survive that
    // thread (they are forked by the long-lived spawner) but not the process.
    let pool = std::thread::spawn(|| ProcessPool::new(2).unwrap())
        .join()
        .unwrap();
    let busy = pool.submit(sleep_ms, 600_000);
    wait_until("the task to start", || busy.is_running());
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    loop {
        std::thread::park();
    }
}

#[test]
fn parent_killed_leaves_no_worker() {
    let exe = std::env::current_exe().unwrap();
    /// Kills the helper if an assertion fails, so no test process is left.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut helper = std::process::Command::new(exe)
        .args([
            "orphan_helper_parent",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TROIKA_ORPHAN_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(Reap)
        .unwrap();
    let stdout = helper.0.stdout.take().unwrap();
    let mut pids = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest prints "test name ... " first, on the same line.
        if let Some((_, rest)) = line.split_once("PIDS ") {
            pids = rest
                .split_whitespace()
                .map(|p| p.parse::<u32>().unwrap())
                .collect();
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the helper reported its workers");
    assert!(pids.iter().all(|&p| alive(p)));
    helper.0.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
    helper.0.wait().unwrap();
    for pid in pids {
        wait_until("the orphaned worker to die", || !alive(pid));
    }
}

/// A pool created inside a running tokio runtime (its worker threads already
/// exist) works, and its handles can be awaited without blocking the runtime.
#[test]
fn a_pool_created_inside_a_tokio_runtime_works() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = runtime.block_on(async {
        let pool = ProcessPool::new(2).unwrap();
        let handles: Vec<_> = (1..=20u64).map(|i| pool.submit(double, i)).collect();
        let mut total = 0;
        for handle in handles {
            total += handle.await.unwrap();
        }
        // A task spawned on the runtime can await pool work too.
        let pool = Arc::new(pool);
        let inner = Arc::clone(&pool);
        total += tokio::spawn(async move { inner.submit(double, 100).await.unwrap() })
            .await
            .unwrap();
        total
    });
    assert_eq!(total, 420 + 200);
}
