//! Short calls are pipelined: a worker that runs them gets its next batch
//! while it still has calls in flight. Under a flood of short calls,
//! cancels and killed workers, every task still settles once, with its own
//! value or the error of what happened to it.

mod ipc_support;

use std::time::Duration;

use ipc_support::guarded;
use rustix::process::{Pid, Signal, kill_process};
use troika::ProcessPool;

troika::remote! {
    fn worker_pid(_x: u64) -> u32 {
        std::process::id()
    }

    fn double(x: u64) -> u64 {
        x.wrapping_mul(2)
    }

    /// The bytes' sum and length, to check that an argument arrived whole.
    fn digest(bytes: Vec<u8>) -> (u64, usize) {
        (bytes.iter().map(|&b| u64::from(b)).sum(), bytes.len())
    }

    /// `double`, noting in the file at `path` that `x` ran (one 8-byte
    /// append, atomic among the workers).
    fn noted_double(x: u64, path: String) -> u64 {
        use std::io::Write;
        static FILE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
        let file = FILE.get_or_init(|| {
            std::fs::OpenOptions::new().append(true).open(&path).expect("open the notes")
        });
        (&*file).write_all(&x.to_le_bytes()).expect("note");
        x.wrapping_mul(2)
    }
}

/// The tasks that ran, from the notes of `noted_double`.
fn ran(path: &std::path::Path) -> std::collections::HashSet<u64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Generous: each test runs in well under a second when it works.
const LIMIT: Duration = Duration::from_secs(120);
const TASKS: u64 = if cfg!(miri) { 200 } else { 40_000 };

/// Cancel every 7th task soon after submitting it, in a flood of short
/// calls: a cancel that returns true always means `Cancelled` and that the
/// call does not run to its end unless it was running (then its worker is
/// killed), and one that returns false means the call runs and its value
/// arrives — whether the call waited in the queue, in a batch behind the
/// running call, or in a batch pipelined behind that one (which must not
/// be cancellable before it reaches the front).
#[test]
fn cancels_in_a_flood_of_pipelined_calls_decide_exactly() {
    guarded(
        "cancels_in_a_flood_of_pipelined_calls_decide_exactly",
        LIMIT,
        || {
            let notes =
                std::env::temp_dir().join(format!("troika-pipeline-{}", std::process::id()));
            std::fs::write(&notes, b"").unwrap();
            let path = notes.to_string_lossy().into_owned();
            let pool = ProcessPool::new(2).unwrap();
            let mut handles = Vec::new();
            let mut cancelled = std::collections::HashSet::new();
            for x in 0..TASKS {
                handles.push((x, pool.submit(noted_double, (x, path.clone()))));
                // Cancel a task submitted a little earlier: by now it may
                // wait in the queue, in a batch in flight, or run.
                let back = 1 + x % 31;
                if x % 7 == 3 && x >= back && handles[(x - back) as usize].1.cancel() {
                    cancelled.insert(x - back);
                }
            }
            let mut kept = 0;
            for (x, handle) in handles {
                let outcome = handle.result_timeout(LIMIT).expect("settled");
                if cancelled.contains(&x) {
                    assert!(outcome.unwrap_err().is_cancelled(), "task {x}");
                } else {
                    assert_eq!(outcome.unwrap(), x * 2, "task {x}");
                    kept += 1;
                }
            }
            assert!(kept >= TASKS * 6 / 7);
            // A cancelled call ran to its end only if it was running when
            // cancelled, which killed its worker.
            let ran = ran(&notes);
            let finished = cancelled.iter().filter(|x| ran.contains(x)).count();
            let restarts = pool.stats().restarts;
            assert!(
                finished <= restarts,
                "{finished} cancelled calls ran, {restarts} workers were killed"
            );
            let _ = std::fs::remove_file(&notes);
            // The pool still works.
            assert_eq!(pool.submit(double, 21).result().unwrap(), 42);
        },
    );
}

/// Workers `SIGKILL`ed at random while short calls are pipelined to them:
/// only the call each death interrupted fails (as `WorkerDied`), every
/// other call, in flight behind it or queued, runs and answers once.
#[test]
fn workers_killed_under_pipelined_calls_fail_only_the_running_call() {
    guarded(
        "workers_killed_under_pipelined_calls_fail_only_the_running_call",
        LIMIT,
        || {
            let pool = ProcessPool::new(2).unwrap();
            let handles: Vec<_> = (0..TASKS).map(|x| (x, pool.submit(double, x))).collect();
            let mut kills = 0;
            let mut died = 0;
            for (x, handle) in handles {
                if x % (TASKS / 8) == 0 {
                    // Kill whichever worker is there now, busy or not (none,
                    // if both are being replaced at this moment).
                    let pids = pool.worker_pids();
                    if let Some(&pid) = pids.get((x as usize / 7) % pids.len().max(1))
                        && let Some(pid) = Pid::from_raw(pid as i32)
                    {
                        let _ = kill_process(pid, Signal::KILL);
                        kills += 1;
                    }
                }
                match handle.result_timeout(LIMIT).expect("settled") {
                    Ok(value) => assert_eq!(value, x * 2, "task {x}"),
                    Err(e) => {
                        assert!(e.is_worker_died(), "task {x}: {e}");
                        died += 1;
                    }
                }
            }
            // The last kill may have hit an idle worker whose death the
            // pool has not seen yet: the next call sent to it fails as that
            // death, once.
            let last = match pool.submit(double, 21).result() {
                Err(e) if e.is_worker_died() => {
                    died += 1;
                    pool.submit(double, 21).result()
                }
                other => other,
            };
            assert_eq!(last.unwrap(), 42);
            assert!(died <= kills, "{died} tasks failed for {kills} kills");
        },
    );
}

/// `max_tasks_per_worker` holds under a flood of short calls: a worker
/// that is always fed (pipelined) still becomes idle once it has run its
/// share, and is replaced. (A worker may run a little beyond the limit: the
/// limit is checked when it is idle, and a batch holds at most 64 calls.)
#[test]
fn workers_are_recycled_under_a_flood_of_pipelined_calls() {
    guarded(
        "workers_are_recycled_under_a_flood_of_pipelined_calls",
        LIMIT,
        || {
            const MAX: usize = 500;
            let pool = ProcessPool::builder()
                .workers(2)
                .max_tasks_per_worker(MAX)
                .build()
                .unwrap();
            let handles: Vec<_> = (0..TASKS).map(|x| pool.submit(worker_pid, x)).collect();
            let mut served = std::collections::HashMap::<u32, usize>::new();
            for handle in handles {
                let pid = handle.result_timeout(LIMIT).expect("settled").unwrap();
                *served.entry(pid).or_default() += 1;
            }
            let most = served.values().max().copied().unwrap_or(0);
            assert!(most <= MAX + 64, "a worker ran {most} tasks (limit {MAX})");
            assert!(served.len() as u64 >= TASKS / (MAX as u64 + 64));
        },
    );
}

/// A small call's frame lives in its handle's allocation (issue 16: the
/// I/O thread then frees nothing of the call); larger ones, and those in
/// shared memory, in their own. Around both limits, with handles dropped
/// before their replies (the I/O thread frees the call), kept past the
/// pool, and with a worker killed while such calls are in flight (they are
/// sent again from the frame kept in the handle), every call arrives whole
/// and settles once.
#[test]
fn calls_whose_frame_lives_in_the_handle_settle_once_whoever_frees_them() {
    guarded(
        "calls_whose_frame_lives_in_the_handle_settle_once_whoever_frees_them",
        LIMIT,
        || {
            let pool = ProcessPool::new(2).unwrap();
            let sizes = [0usize, 1, 3_990, 4_080, 4_096, 4_200, 70_000, 600_000];
            let arg = |size: usize, i: usize| -> Vec<u8> {
                (0..size).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect()
            };
            let expected = |bytes: &[u8]| {
                (
                    bytes.iter().map(|&b| u64::from(b)).sum::<u64>(),
                    bytes.len(),
                )
            };
            for round in 0..3 {
                // Dropped at once: their replies find no handle.
                for (i, &size) in sizes.iter().enumerate() {
                    drop(pool.submit(digest, arg(size, i + round)));
                }
                let kept: Vec<_> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &size)| {
                        let bytes = arg(size, i + round);
                        (expected(&bytes), pool.submit(digest, bytes))
                    })
                    .collect();
                if round == 1 {
                    // Kill a worker with small calls queued behind it.
                    let pid = pool.submit(worker_pid, 0).result().unwrap();
                    let flood: Vec<_> = (0..2_000u64).map(|x| pool.submit(double, x)).collect();
                    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
                    for (x, handle) in (0..2_000u64).zip(flood) {
                        match handle.result() {
                            Ok(value) => assert_eq!(value, x * 2),
                            // The call the killed worker ran fails with it.
                            Err(err) => assert!(
                                err.to_string().contains("worker"),
                                "a call lost with its worker says so: {err}"
                            ),
                        }
                    }
                }
                for (want, handle) in kept {
                    assert_eq!(handle.result().unwrap(), want);
                }
            }
            let late = pool.submit(digest, arg(100, 7));
            let want = expected(&arg(100, 7));
            drop(pool);
            assert_eq!(
                late.result().unwrap(),
                want,
                "a handle kept past the pool settles"
            );
        },
    );
}
