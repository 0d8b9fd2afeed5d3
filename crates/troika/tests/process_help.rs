//! Threads that wait on a process pool's tasks read and settle their
//! workers' replies themselves (`process/pool/help.rs`) while the slots' I/O
//! threads sleep outside the reader's lock. These tests attack that handoff:
//! many waiters on few workers, workers stopped, continued and killed while
//! a thread waits, replies a helper must leave to the I/O thread (large
//! bodies, the initializer's reply), user code (`Deserialize`, done-callbacks)
//! run by a waiting thread, cancels and timeouts, and a pool dropped while a
//! thread waits. Every task must settle exactly once, with its own value or
//! the error of what happened to it, and no wait may hang (each test runs
//! under an outer deadline).

mod ipc_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use ipc_support::{Bytes, guarded};
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use troika::ProcessPool;

/// A value whose `Deserialize` (in the parent) panics on 202.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Touchy(u32);

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
        match u32::deserialize(d)? {
            202 => panic!("deserialize refuses 202"),
            n => Ok(Touchy(n)),
        }
    }
}

troika::remote! {
    fn double(x: u64) -> u64 {
        x.wrapping_mul(2)
    }

    fn worker_pid(_x: u64) -> u32 {
        std::process::id()
    }

    fn make(n: u32) -> Touchy {
        Touchy(n)
    }

    /// `len` bytes, byte `k` being `31 k + seed`.
    fn make_bytes(len: usize, seed: u8) -> Bytes {
        Bytes((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect())
    }

    fn set_base(base: u64) -> () {
        BASE.store(base, std::sync::atomic::Ordering::SeqCst);
    }

    fn add_base(x: u64) -> u64 {
        BASE.load(std::sync::atomic::Ordering::SeqCst) + x
    }

    /// Sleep `ms` milliseconds (in the worker), then `len` bytes as
    /// [`make_bytes`] makes them.
    fn late_bytes(len: usize, seed: u8, ms: u64) -> Bytes {
        std::thread::sleep(Duration::from_millis(ms));
        Bytes((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect())
    }

    /// Break this worker as the I/O thread alone can see: with `forge`,
    /// answer with a reply whose arena is shorter than the body it
    /// announces (a protocol fault); else die of SIGKILL.
    fn break_worker(forge: bool) -> u64 {
        if forge {
            use rustix::fs::{MemfdFlags, SealFlags};
            let memfd = rustix::fs::memfd_create(
                "troika-arena",
                MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
            )
            .unwrap();
            rustix::fs::ftruncate(&memfd, 1 << 20).unwrap();
            rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK).unwrap();
            ipc_support::send_fd(ipc_support::worker_call_socket(), std::os::fd::AsFd::as_fd(&memfd));
            // REPLY, in a memfd that is an arena, announcing 10 MiB.
            let header = ipc_support::reply_header(0x8000 | 0x4000, u64::MAX, 10 << 20);
            assert!(troika::process::__test::forge_reply_for_test(Some(&header)));
            // The worker's real reply would follow; it is killed first.
            std::thread::sleep(Duration::from_secs(60));
            0
        } else {
            let _ = kill_process(rustix::process::getpid(), Signal::KILL);
            0
        }
    }

    /// Sleep `ms` milliseconds (in the worker), then return `x`.
    fn nap(x: u64, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        x
    }
}

static BASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Generous: each test runs in a few seconds when it works.
const LIMIT: Duration = Duration::from_secs(120);
const THREADS: u64 = 4;
const PER_THREAD: u64 = if cfg!(miri) { 50 } else { 5_000 };

fn signal(pid: u32, sig: Signal) {
    let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), sig);
}

/// Several threads submit and wait at once on a 2-worker pool, each in its
/// own pattern (one at a time, batches waited in order, batches waited in
/// reverse so that a waiter helps a slot its own call is not on): every
/// value is exact, and the stats count every task once.
#[test]
fn many_waiters_on_two_workers_get_exact_results_and_counts() {
    guarded(
        "many_waiters_on_two_workers_get_exact_results_and_counts",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(2).unwrap());
            let start = Arc::new(Barrier::new(THREADS as usize));
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    let start = Arc::clone(&start);
                    std::thread::spawn(move || {
                        start.wait();
                        let base = t * 1_000_000;
                        let mut x = base;
                        while x < base + PER_THREAD {
                            let batch = 1 + (t + x) % 8;
                            let handles: Vec<_> = (x..(x + batch).min(base + PER_THREAD))
                                .map(|y| (y, pool.submit(double, y)))
                                .collect();
                            x += handles.len() as u64;
                            let ordered: Vec<_> = if t % 2 == 0 {
                                handles
                            } else {
                                handles.into_iter().rev().collect()
                            };
                            for (y, handle) in ordered {
                                let got = handle.result_timeout(LIMIT).expect("settled");
                                assert_eq!(got.unwrap(), y * 2, "thread {t} task {y}");
                            }
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let stats = pool.stats();
            assert_eq!(
                stats.succeeded,
                (THREADS * PER_THREAD) as usize,
                "{stats:?}"
            );
            assert_eq!(stats.failed, 0, "{stats:?}");
            assert_eq!(stats.restarts, 0, "{stats:?}");
        },
    );
}

/// Workers are stopped (`SIGSTOP`) and continued again and again while
/// several threads submit and wait: a waiter that held a stopped worker's
/// reader lets go and the reply, published once the worker runs again,
/// still reaches its handle (through the doorbell the helper asked for
/// again, or a helper). Every value is exact.
#[test]
fn workers_stopped_and_continued_under_waiting_threads_lose_no_reply() {
    guarded(
        "workers_stopped_and_continued_under_waiting_threads_lose_no_reply",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(2).unwrap());
            let finished = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    let finished = Arc::clone(&finished);
                    std::thread::spawn(move || {
                        for x in 0..PER_THREAD / 2 {
                            let y = t * 1_000_000 + x;
                            let got = pool.submit(double, y).result_timeout(LIMIT);
                            assert_eq!(got.expect("settled").unwrap(), y * 2, "task {y}");
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            // The fault injector: a stop held for a moment (the adversary's
            // timing, not a wait for an event), then continue.
            let mut round = 0usize;
            while finished.load(Ordering::SeqCst) < THREADS as usize {
                let pids = pool.worker_pids();
                if let Some(&pid) = pids.get(round % pids.len().max(1)) {
                    signal(pid, Signal::STOP);
                    std::thread::sleep(Duration::from_micros(200 + (round as u64 % 7) * 150));
                    signal(pid, Signal::CONT);
                }
                round += 1;
                std::thread::yield_now();
            }
            for thread in threads {
                thread.join().unwrap();
            }
            assert!(round > 0);
            let stats = pool.stats();
            assert_eq!(
                stats.succeeded,
                (THREADS * PER_THREAD / 2) as usize,
                "{stats:?}"
            );
            assert_eq!(stats.restarts, 0, "{stats:?}");
        },
    );
}

/// A thread waits on a call of a stopped worker; the worker is then either
/// continued (the value arrives) or killed while still stopped (the call
/// fails as `WorkerDied`); either way the pool goes on.
#[test]
fn a_call_of_a_stopped_worker_settles_when_continued_or_killed() {
    guarded(
        "a_call_of_a_stopped_worker_settles_when_continued_or_killed",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            for round in 0..40u64 {
                let pid = pool.submit(worker_pid, 0).result().unwrap();
                signal(pid, Signal::STOP);
                let (tx, rx) = std::sync::mpsc::channel();
                let waiter = {
                    let pool = Arc::clone(&pool);
                    std::thread::spawn(move || {
                        let handle = pool.submit(double, round);
                        tx.send(()).unwrap();
                        handle.result_timeout(LIMIT).expect("settled")
                    })
                };
                rx.recv().unwrap();
                // Vary the moment: the waiter may still spin on the reader,
                // or already sleep on its handle.
                for _ in 0..round * 50 {
                    std::thread::yield_now();
                }
                if round % 2 == 0 {
                    signal(pid, Signal::CONT);
                    assert_eq!(waiter.join().unwrap().unwrap(), round * 2, "round {round}");
                } else {
                    signal(pid, Signal::KILL);
                    let err = waiter.join().unwrap().unwrap_err();
                    assert!(err.is_worker_died(), "round {round}: {err}");
                }
            }
            assert_eq!(pool.submit(double, 21).result().unwrap(), 42);
        },
    );
}

/// Replies a helper must leave to the I/O thread (bodies in an arena or a
/// memfd, bodies longer than the ring, the initializer's reply) mixed with
/// small ones, waited on by several threads: every byte is exact.
#[test]
fn waiters_on_large_replies_and_after_an_initializer_get_exact_bytes() {
    guarded(
        "waiters_on_large_replies_and_after_an_initializer_get_exact_bytes",
        LIMIT,
        || {
            const SIZES: [usize; 6] = [8, 1 << 10, 100 << 10, 300 << 10, 600 << 10, 3 << 20];
            for _ in 0..3 {
                // A fresh pool each time: the first replies come right after
                // the workers' READY and the initializer's reply.
                let pool = Arc::new(
                    ProcessPool::builder()
                        .workers(2)
                        .initializer(set_base, 1000)
                        .build()
                        .unwrap(),
                );
                let threads: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let pool = Arc::clone(&pool);
                        std::thread::spawn(move || {
                            assert_eq!(pool.submit(add_base, t).result().unwrap(), 1000 + t);
                            for i in 0..24usize {
                                let len = SIZES[(i + t as usize) % SIZES.len()];
                                let seed = (i as u8).wrapping_add(t as u8);
                                let small = pool.submit(add_base, i as u64);
                                let big = pool.submit(make_bytes, (len, seed));
                                let expected: Vec<u8> = (0..len)
                                    .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
                                    .collect();
                                // Wait on the small one first: its waiter
                                // meets the large body in the ring's order.
                                assert_eq!(small.result().unwrap(), 1000 + i as u64);
                                let got = big.result_timeout(LIMIT).expect("settled").unwrap();
                                assert!(got.0 == expected, "thread {t}, {len} bytes");
                            }
                        })
                    })
                    .collect();
                for thread in threads {
                    thread.join().unwrap();
                }
                let stats = pool.stats();
                assert_eq!(stats.succeeded, (THREADS * 49) as usize, "{stats:?}");
                assert_eq!(stats.failed, 0, "{stats:?}");
            }
        },
    );
}

/// A `Deserialize` that panics on a reply a waiting thread settles fails
/// only its own task (as a panic, with the message); the waiting thread
/// lives on, and so do the pool and the counts.
#[test]
fn a_deserialize_panic_on_a_helped_reply_fails_only_its_task() {
    guarded(
        "a_deserialize_panic_on_a_helped_reply_fails_only_its_task",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(2).unwrap());
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    std::thread::spawn(move || {
                        let mut panics = 0;
                        for i in 0..500u32 {
                            let n = if i % 5 == 0 { 202 } else { i + 1000 * t as u32 };
                            let outcome = pool.submit(make, n).result();
                            if n == 202 {
                                let err = outcome.unwrap_err();
                                assert!(err.is_panic(), "{err}");
                                assert!(
                                    err.panic_message()
                                        .is_some_and(|m| m.contains("deserialize refuses 202")),
                                    "{err}"
                                );
                                panics += 1;
                            } else {
                                assert_eq!(outcome.unwrap(), Touchy(n));
                            }
                        }
                        panics
                    })
                })
                .collect();
            let panics: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let stats = pool.stats();
            assert_eq!(stats.failed, panics, "{stats:?}");
            assert_eq!(
                stats.succeeded,
                THREADS as usize * 500 - panics,
                "{stats:?}"
            );
            assert_eq!(stats.restarts, 0, "{stats:?}");
        },
    );
}

/// Cancels and task timeouts race the threads that wait and read replies:
/// each task settles once, with its value, `Cancelled` (only if `cancel`
/// said so) or `TimedOut`; the pool still works.
#[test]
fn cancels_and_timeouts_racing_waiting_threads_settle_each_task_once() {
    guarded(
        "cancels_and_timeouts_racing_waiting_threads_settle_each_task_once",
        LIMIT,
        || {
            let pool = Arc::new(
                ProcessPool::builder()
                    .workers(2)
                    .task_timeout(Duration::from_millis(500))
                    .build()
                    .unwrap(),
            );
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    std::thread::spawn(move || {
                        let mut timed_out = 0;
                        for i in 0..300u64 {
                            let x = t * 1_000_000 + i;
                            // Every 97th call overruns the timeout (which
                            // is long enough for a fresh worker's first
                            // call on a loaded machine).
                            let ms = if i % 97 == 5 { 5_000 } else { 0 };
                            let handle = pool.submit(nap, (x, ms));
                            let cancelled = i % 11 == 3 && handle.cancel();
                            let outcome = handle.result_timeout(LIMIT).expect("settled");
                            match outcome {
                                Ok(v) => {
                                    assert!(!cancelled, "task {x}: cancelled, yet {v}");
                                    assert_eq!(v, x);
                                    assert_eq!(ms, 0, "task {x} outran its timeout");
                                }
                                Err(e) if cancelled => assert!(e.is_cancelled(), "{x}: {e}"),
                                Err(e) => {
                                    assert!(e.is_timeout(), "task {x}: {e}");
                                    assert!(ms > 0, "task {x} timed out");
                                    timed_out += 1;
                                }
                            }
                        }
                        timed_out
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(pool.submit(double, 21).result().unwrap(), 42);
        },
    );
}

/// The pool is dropped while other threads wait on its tasks: every wait
/// returns (the task's value, or the error of the shutdown), none hangs.
#[test]
fn a_pool_dropped_while_threads_wait_releases_every_waiter() {
    guarded(
        "a_pool_dropped_while_threads_wait_releases_every_waiter",
        LIMIT,
        || {
            for round in 0..20u64 {
                let pool = ProcessPool::builder()
                    .workers(2)
                    .drop_timeout(Duration::from_millis(50))
                    .build()
                    .unwrap();
                let handles: Vec<_> = (0..64u64)
                    .map(|i| (i, pool.submit(nap, (i, if i % 16 == 0 { 20 } else { 0 }))))
                    .collect();
                let go = Arc::new(AtomicBool::new(false));
                let waiters: Vec<_> = handles
                    .into_iter()
                    .map(|(i, handle)| {
                        let go = Arc::clone(&go);
                        std::thread::spawn(move || {
                            while !go.load(Ordering::SeqCst) {
                                std::hint::spin_loop();
                            }
                            (i, handle.result_timeout(LIMIT).expect("settled"))
                        })
                    })
                    .collect();
                go.store(true, Ordering::SeqCst);
                for _ in 0..round * 20 {
                    std::thread::yield_now();
                }
                drop(pool);
                for waiter in waiters {
                    let (i, outcome) = waiter.join().unwrap();
                    if let Ok(v) = outcome {
                        assert_eq!(v, i);
                    }
                }
            }
        },
    );
}

/// A done-callback, run by whichever thread settles the task (now maybe a
/// thread waiting on another task), submits and waits on another task of
/// the same pool. One worker: the second call goes to the worker whose
/// reply the callback's thread is settling.
///
/// Deadlocked (hung 30 s, 2 runs) when the thread that runs the callback
/// held the slot's reply reader (the I/O thread in `serve`, a helper in
/// `serve_replies`) while the callback waited for a reply only that reader
/// could read — already so before the helpers came, for the I/O thread.
#[test]
fn a_done_callback_may_wait_on_another_task_of_the_same_pool() {
    guarded(
        "a_done_callback_may_wait_on_another_task_of_the_same_pool",
        Duration::from_secs(30),
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            for round in 0..20u64 {
                let (tx, rx) = std::sync::mpsc::channel();
                let handle = pool.submit(double, round);
                let inner = Arc::clone(&pool);
                handle.add_done_callback(move |_| {
                    // Every fourth round the awaited task outlasts a waiting
                    // thread's spin: a callback run by the I/O thread then
                    // waits longer than the reading it would otherwise leave
                    // to that very thread.
                    let got = if round % 4 == 3 {
                        inner.submit(nap, (1000 + round, 5)).result_timeout(LIMIT)
                    } else {
                        inner.submit(double, 1000 + round).result_timeout(LIMIT)
                    };
                    let _ = tx.send(got.map(|r| r.ok()).ok().flatten());
                });
                assert_eq!(handle.result().unwrap(), round * 2);
                let expected = if round % 4 == 3 {
                    1000 + round
                } else {
                    (1000 + round) * 2
                };
                assert_eq!(rx.recv().unwrap(), Some(expected), "round {round}");
            }
        },
    );
}

/// The same with a large reply: its done-callback (run by the slot's I/O
/// thread, which alone reads a body over 64 KiB: from its buffer, or from
/// the worker's shared memory from 512 KiB on) submits and waits on a small
/// task of the same worker. The task naps first, so that the callback is
/// in place before the reply comes.
///
/// Hung (killed at the deadline) when the I/O thread published a large
/// reply still holding the slot's reader: the callback's wait could not
/// read the small reply behind it.
#[test]
fn a_done_callback_of_a_large_reply_may_wait_on_another_task_of_the_same_worker() {
    guarded(
        "a_done_callback_of_a_large_reply_may_wait_on_another_task_of_the_same_worker",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            for (round, len) in [100 << 10, 1 << 20, 3 << 20, 200 << 10]
                .into_iter()
                .enumerate()
            {
                let round = round as u64;
                let (tx, rx) = std::sync::mpsc::channel();
                let handle = pool.submit(late_bytes, (len, round as u8, 20));
                let inner = Arc::clone(&pool);
                handle.add_done_callback(move |outcome| {
                    let len = outcome.map(|b| b.0.len()).ok();
                    let got = inner.submit(double, 1000 + round).result_timeout(LIMIT);
                    let _ = tx.send((len, got.map(|r| r.ok()).ok().flatten()));
                });
                let bytes = handle.result().unwrap();
                assert_eq!(bytes.0.len(), len);
                assert!(
                    bytes
                        .0
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(round as u8)),
                    "round {round}: the bytes are exact"
                );
                assert_eq!(
                    rx.recv().unwrap(),
                    (Some(len), Some((1000 + round) * 2)),
                    "round {round}"
                );
            }
            let stats = pool.stats();
            assert_eq!((stats.succeeded, stats.failed), (8, 0), "{stats:?}");
        },
    );
}

/// Run `wait` in a done-callback of `handle` and return what it returned,
/// checking that the pool's I/O thread ran it. The caller waits on a
/// channel, not on a handle, so that the I/O thread settles every reply
/// (and runs every callback).
fn on_io_thread<R, T>(
    handle: &troika::Handle<R>,
    round: usize,
    wait: impl FnOnce(Result<&R, &troika::TaskError>) -> T + Send + 'static,
) -> T
where
    R: Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    handle.add_done_callback(move |outcome| {
        let got = wait(outcome);
        let _ = tx.send((std::thread::current().name().map(str::to_owned), got));
    });
    let (thread, got) = rx.recv_timeout(LIMIT).unwrap();
    assert!(
        thread.is_some_and(|name| name.contains("io")),
        "round {round}: the I/O thread ran the callback"
    );
    got
}

/// A done-callback run by the slot's I/O thread waits on a task of the same
/// worker whose reply is in shared memory (≥ 512 KiB), which only the I/O
/// thread reads: the callback's wait stands in for that thread and reads
/// it (see [`on_io_thread`]).
///
/// Hung (killed at the deadline) when the stand-in left such a reply to
/// the I/O thread, that is to itself.
#[test]
fn a_done_callback_on_the_io_thread_may_wait_on_a_reply_in_shared_memory() {
    guarded(
        "a_done_callback_on_the_io_thread_may_wait_on_a_reply_in_shared_memory",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            let rounds = [
                (8, 1 << 20),
                (1 << 20, 600 << 10),
                (8, 3 << 20),
                (100 << 10, 1 << 20),
            ];
            for (round, (first, awaited)) in rounds.into_iter().enumerate() {
                let seed = round as u8;
                let handle = pool.submit(late_bytes, (first, seed, 20));
                let inner = Arc::clone(&pool);
                let (got_first, bytes) = on_io_thread(&handle, round, move |outcome| {
                    let first = outcome.map(|b| b.0.len()).ok();
                    let got = inner
                        .submit(make_bytes, (awaited, seed.wrapping_add(1)))
                        .result_timeout(LIMIT);
                    (first, got.ok().and_then(Result::ok))
                });
                assert_eq!(got_first, Some(first), "round {round}");
                let bytes = bytes.expect("the awaited task's bytes");
                assert_eq!(bytes.0.len(), awaited, "round {round}");
                assert!(
                    bytes.0.iter().enumerate().all(|(i, b)| *b
                        == (i as u8)
                            .wrapping_mul(31)
                            .wrapping_add(seed.wrapping_add(1))),
                    "round {round}: the bytes are exact"
                );
                assert_eq!(handle.result().unwrap().0.len(), first);
            }
            let stats = pool.stats();
            assert_eq!((stats.succeeded, stats.failed), (8, 0), "{stats:?}");
        },
    );
}

/// A done-callback run by the slot's I/O thread waits, with a deadline, on
/// a task of the same worker that kills its worker or answers with a forged
/// reply in shared memory: a death or a fault only the I/O thread acts on,
/// and it is the thread waiting. The wait stands in for it until the
/// deadline (it reports the fault and retires the stream), then gives up;
/// the callback returns, the I/O thread fails the task and replaces the
/// worker, and the pool runs on.
///
/// Hung (killed at the test's deadline) when the stand-in ignored its
/// caller's deadline.
#[test]
fn a_done_callback_on_the_io_thread_gives_up_at_its_deadline_when_its_worker_breaks() {
    guarded(
        "a_done_callback_on_the_io_thread_gives_up_at_its_deadline_when_its_worker_breaks",
        LIMIT,
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            for (round, forge) in [false, true, false, true].into_iter().enumerate() {
                let handle = pool.submit(nap, (round as u64, 20));
                let inner = Arc::clone(&pool);
                let waited = on_io_thread(&handle, round, move |_| {
                    inner
                        .submit(break_worker, forge)
                        .result_timeout(Duration::from_millis(300))
                });
                let broken = waited.expect_err("the wait gave up at its deadline");
                let err = broken.result().unwrap_err();
                if forge {
                    assert!(err.to_string().contains("broke the protocol"), "{err}");
                } else {
                    assert!(err.is_worker_died(), "{err:?}");
                }
                assert_eq!(handle.result().unwrap(), round as u64);
                assert_eq!(
                    pool.submit(double, 21).result().unwrap(),
                    42,
                    "round {round}"
                );
            }
            let stats = pool.stats();
            assert_eq!((stats.succeeded, stats.failed), (8, 4), "{stats:?}");
        },
    );
}

/// The I/O thread claims the replies already read together and settles
/// them one by one: a done-callback of one of them that waits on a task
/// whose reply is further in that batch (claimed, so gone from the ring)
/// must still get it. The main thread waits on a channel, not a handle, so
/// the I/O thread reads every reply; the calls go out in bursts, so their
/// replies arrive together.
#[test]
fn a_done_callback_may_wait_on_a_task_whose_reply_came_in_the_same_batch() {
    guarded(
        "a_done_callback_may_wait_on_a_task_whose_reply_came_in_the_same_batch",
        LIMIT,
        || {
            let pool = ProcessPool::new(1).unwrap();
            for round in 0..20u64 {
                let (tx, rx) = std::sync::mpsc::channel();
                let mut handles = Vec::new();
                for pair in 0..50u64 {
                    let x = round * 1000 + pair;
                    let first = pool.submit(double, x);
                    let second = Arc::new(Mutex::new(Some(pool.submit(double, x + 1))));
                    let awaited = Arc::clone(&second);
                    let tx = tx.clone();
                    first.add_done_callback(move |outcome| {
                        let mine = outcome.copied().unwrap_or(u64::MAX);
                        let theirs = awaited
                            .lock()
                            .unwrap()
                            .take()
                            .map(|h| h.result_timeout(LIMIT));
                        let _ =
                            tx.send((x, mine, theirs.and_then(|r| r.ok()).and_then(|r| r.ok())));
                    });
                    handles.push(first);
                }
                drop(tx);
                let mut got: Vec<_> = rx.iter().collect();
                got.sort_unstable();
                assert_eq!(got.len(), 50, "round {round}");
                for (x, mine, theirs) in got {
                    assert_eq!(mine, 2 * x, "round {round}");
                    assert_eq!(theirs, Some(2 * (x + 1)), "round {round}");
                }
                for handle in handles {
                    assert!(handle.is_done());
                }
            }
        },
    );
}

/// A waiting thread claims the replies already in a worker's ring together
/// and settles them one by one, running their done-callbacks: a callback
/// of one of them that waits on a task whose reply was claimed with its
/// own must still get it, as must one that waits on another pool's task
/// meanwhile. The main thread waits on the last call of each burst, so it
/// is the thread that reads the replies (when the I/O thread does not get
/// there first). Hangs until the deadline, and fails, without a wait
/// settling the claimed replies first (planted and seen).
#[test]
fn a_done_callback_run_by_a_waiter_may_wait_on_a_reply_claimed_with_its_own() {
    guarded(
        "a_done_callback_run_by_a_waiter_may_wait_on_a_reply_claimed_with_its_own",
        LIMIT,
        || {
            let pool = ProcessPool::new(1).unwrap();
            let other = Arc::new(ProcessPool::new(1).unwrap());
            for round in 0..20u64 {
                let (tx, rx) = std::sync::mpsc::channel();
                for pair in 0..50u64 {
                    let x = round * 1000 + pair;
                    let first = pool.submit(double, x);
                    let second = pool.submit(double, x + 1);
                    let elsewhere = (pair % 5 == 0).then(|| other.submit(double, x + 2));
                    let tx = tx.clone();
                    first.add_done_callback(move |outcome| {
                        let mine = outcome.copied().unwrap_or(u64::MAX);
                        let theirs = second.result_timeout(LIMIT).ok().and_then(|r| r.ok());
                        let far =
                            elsewhere.map(|h| h.result_timeout(LIMIT).ok().and_then(|r| r.ok()));
                        let _ = tx.send((x, mine, theirs, far));
                    });
                }
                drop(tx);
                assert_eq!(pool.submit(double, 7).result().unwrap(), 14);
                let mut got: Vec<_> = rx.iter().collect();
                got.sort_unstable();
                assert_eq!(got.len(), 50, "round {round}");
                for (x, mine, theirs, far) in got {
                    assert_eq!(mine, 2 * x, "round {round}");
                    assert_eq!(theirs, Some(2 * (x + 1)), "round {round}");
                    if let Some(far) = far {
                        assert_eq!(far, Some(2 * (x + 2)), "round {round}");
                    }
                }
            }
        },
    );
}

/// Threads wait on tasks of two pools at once (each waiter helps the pool
/// of its own handle only): every value is exact.
#[test]
fn waiters_on_several_pools_at_once_get_their_own_values() {
    guarded(
        "waiters_on_several_pools_at_once_get_their_own_values",
        LIMIT,
        || {
            let pools = [
                Arc::new(ProcessPool::new(1).unwrap()),
                Arc::new(ProcessPool::new(2).unwrap()),
            ];
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let pools = pools.clone();
                    std::thread::spawn(move || {
                        for x in 0..PER_THREAD / 4 {
                            let a = pools[0].submit(double, x);
                            let b = pools[1].submit(double, x + 7);
                            let (first, second) = if (x + t) % 2 == 0 { (a, b) } else { (b, a) };
                            let one = first.result().unwrap();
                            let two = second.result().unwrap();
                            assert_eq!(one + two, 4 * x + 14, "thread {t} task {x}");
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let total: usize = pools.iter().map(|p| p.stats().succeeded).sum();
            assert_eq!(total, (THREADS * PER_THREAD / 4 * 2) as usize);
        },
    );
}

/// The waiting thread and the worker pinned to one CPU: every round trip
/// meets the worker spinning on the waiter's own CPU, so the waiter stops
/// helping and sleeps, and the I/O thread settles the reply. Each of many
/// round trips still gets its exact value.
#[test]
fn a_waiter_on_its_worker_s_cpu_sleeps_and_still_gets_every_reply() {
    guarded(
        "a_waiter_on_its_worker_s_cpu_sleeps_and_still_gets_every_reply",
        LIMIT,
        || {
            let pool = ProcessPool::new(1).unwrap();
            let pid = pool.submit(worker_pid, 0).result().unwrap();
            let mut one = rustix::thread::CpuSet::new();
            one.set(0);
            rustix::thread::sched_setaffinity(None, &one).unwrap();
            rustix::thread::sched_setaffinity(Pid::from_raw(pid as i32), &one).unwrap();
            for x in 0..2_000u64 {
                assert_eq!(pool.submit(double, x).result().unwrap(), 2 * x, "task {x}");
            }
            assert_eq!(pool.submit(worker_pid, 0).result().unwrap(), pid);
        },
    );
}
