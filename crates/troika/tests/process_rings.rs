//! The shared-memory rings that carry a pool's calls and replies: a worker
//! killed or stopped in the middle of writing a frame (small, or larger than
//! the ring) settles its task and is replaced; a worker that writes garbage
//! into its ring or corrupts its position is treated as broken; replies
//! larger than the ring arrive whole; every task is settled exactly once; no
//! descriptor or mapping outlives the pool; an idle pool burns no CPU.

mod ipc_support;

use std::time::Duration;

use ipc_support::{Bytes, guarded, one_worker_with_timeout};
use troika::{ErrorKind, Exit, ProcessPool};

const SIGKILL: i32 = 9;
/// Bytes of each ring (`process::channel::RING_BYTES`).
const RING: usize = 128 << 10;

troika::remote! {
    fn worker_pid() -> u32 {
        std::process::id()
    }
}

troika::remote! {
    fn echo(bytes: Bytes) -> Bytes {
        bytes
    }
}

troika::remote! {
    fn double(n: u64) -> u64 {
        n * 2
    }
}

troika::remote! {
    /// Exit without answering when `n` is a multiple of 997.
    fn double_or_die(n: u64) -> u64 {
        if n.is_multiple_of(997) {
            std::process::exit(3);
        }
        n * 2
    }
}

troika::remote! {
    /// Write the first `written` bytes of a reply frame announcing
    /// `announced` bytes into the reply stream, then kill this worker
    /// (`stop` false) or stop it (`stop` true): a worker that dies or
    /// freezes in the middle of writing a frame.
    fn break_mid_reply(announced: u64, written: usize, stop: bool) -> u32 {
        let mut frame = ipc_support::reply_header(0, u64::MAX - 1, announced);
        frame.extend((0..written).map(|i| i as u8));
        assert!(troika::process::__test::forge_reply_for_test(Some(&frame)));
        let signal = if stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::KILL
        };
        let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        // Reached only after a SIGCONT.
        0
    }
}

troika::remote! {
    /// Publish garbage into the reply ring: a frame of no known kind
    /// (`bytes` true), or a ring position that cannot be.
    fn scribble(bytes: bool) -> u32 {
        if bytes {
            let mut frame = ipc_support::reply_header(0, 7, 0);
            frame[..2].copy_from_slice(&0x0777u16.to_le_bytes());
            assert!(troika::process::__test::forge_reply_for_test(Some(&frame)));
        } else {
            assert!(troika::process::__test::forge_reply_for_test(None));
        }
        // No honest reply follows: the parent kills this worker.
        loop {
            std::thread::park();
        }
    }
}

fn one_worker() -> ProcessPool {
    ProcessPool::builder().workers(1).build().unwrap()
}

/// A worker `SIGKILL`ed after writing part of a reply — a few bytes, or more
/// than the ring holds — fails its task as a death and is replaced.
#[test]
fn a_worker_killed_mid_reply_settles_its_task() {
    guarded(
        "a_worker_killed_mid_reply_settles_its_task",
        Duration::from_secs(120),
        || {
            let pool = one_worker();
            for (announced, written) in [(100, 10), (2 * RING as u64, RING + 1000)] {
                let pid = pool.submit(worker_pid, ()).result().unwrap();
                let err = pool
                    .submit(break_mid_reply, (announced, written, false))
                    .result()
                    .unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::WorkerDied(Exit::Signal(SIGKILL))),
                    "{err}"
                );
                assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
                assert_eq!(pool.submit(double, 21).result().unwrap(), 42);
            }
        },
    );
}

/// A worker stopped (`SIGSTOP`) in the middle of a reply holds its task only
/// until the task's timeout: then it is killed, and the pool goes on.
#[test]
fn a_worker_stopped_mid_reply_times_out() {
    guarded(
        "a_worker_stopped_mid_reply_times_out",
        Duration::from_secs(120),
        || {
            let limit = Duration::from_millis(300);
            let pool = one_worker_with_timeout(limit);
            for (announced, written) in [(100, 10), (2 * RING as u64, RING + 1000)] {
                let err = pool
                    .submit(break_mid_reply, (announced, written, true))
                    .result()
                    .unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::TimedOut(l) if *l == limit),
                    "{err}"
                );
                assert_eq!(pool.submit(double, 4).result().unwrap(), 8);
            }
        },
    );
}

/// A call larger than the ring sent to a stopped worker: the sender waits
/// for room until the task's timeout kills the worker, then fails instead
/// of waiting for ever, and the pool goes on.
#[test]
fn a_call_larger_than_the_ring_to_a_stopped_worker_times_out() {
    guarded(
        "a_call_larger_than_the_ring_to_a_stopped_worker_times_out",
        Duration::from_secs(120),
        || {
            let limit = Duration::from_millis(300);
            let pool = one_worker_with_timeout(limit);
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
            let big = Bytes(vec![5; RING + RING / 2]);
            let err = pool.submit(echo, big).result().unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::TimedOut(_)), "{err}");
            assert_eq!(pool.submit(double, 5).result().unwrap(), 10);
        },
    );
}

troika::remote! {
    /// Fork a process that keeps every descriptor of this worker (its call
    /// socket among them) open until it is killed or the process `test`
    /// (the test's) exits; its pid.
    fn fork_a_holder(test: i32) -> i32 {
        // SAFETY: the child makes raw system calls only (async-signal-safe),
        // so it does not touch state another thread of the worker may have
        // held at the fork.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: as above; `pidfd_open` takes a pid and flags, and
                // `poll` one `pollfd` that lives on this stack.
                unsafe {
                    let pidfd = libc::syscall(libc::SYS_pidfd_open, test, 0) as i32;
                    let mut fds = libc::pollfd {
                        fd: pidfd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if pidfd < 0 {
                        loop {
                            libc::pause();
                        }
                    }
                    while libc::poll(&mut fds, 1, -1) <= 0 {}
                    libc::_exit(0)
                }
            }
            pid => pid,
        }
    }
}

/// Kills a process when dropped (so a failed assertion leaves none behind).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The sender of a call larger than the ring waits for room while its
/// worker is stopped, then the worker is killed; a process the worker
/// forked still holds the call socket open, so the socket alone never says
/// the worker is gone. The sender must still stop waiting, the task fail
/// as a death, and the pool go on (no task timeout is set: nothing else
/// would end the wait).
#[test]
fn a_call_waiting_for_room_ends_when_its_worker_dies_though_a_child_holds_the_socket() {
    guarded(
        "a_call_waiting_for_room_ends_when_its_worker_dies_though_a_child_holds_the_socket",
        Duration::from_secs(120),
        || {
            let pool = one_worker();
            let test = std::process::id() as i32;
            let _holder = KillOnDrop(pool.submit(fork_a_holder, test).result().unwrap());
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
            std::thread::scope(|scope| {
                let sent = scope.spawn(|| pool.submit(echo, Bytes(vec![5; 3 * RING])).result());
                // The call is the worker's (its sender writes it, or waits
                // for room to): there is no event to wait on but the count.
                while pool.stats().busy == 0 {
                    std::thread::yield_now();
                }
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                let err = sent.join().unwrap().unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::WorkerDied(Exit::Signal(SIGKILL))),
                    "{err}"
                );
            });
            assert_eq!(pool.submit(double, 5).result().unwrap(), 10);
        },
    );
}

/// Replies and calls larger than the ring (below and above the size that
/// goes in a memfd) arrive whole, many times over, so the ring wraps.
#[test]
fn messages_larger_than_the_ring_arrive_whole() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let sizes = [
        RING - 24,
        RING,
        RING + 1,
        2 * RING - 7,
        (256 << 10) - 40,
        300 << 10,
    ];
    let handles: Vec<_> = (0..6)
        .flat_map(|round| sizes.map(move |len| (round, len)))
        .map(|(round, len)| {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ round as u8).collect();
            (bytes.clone(), pool.submit(echo, Bytes(bytes)))
        })
        .collect();
    for (sent, handle) in handles {
        assert!(handle.result().unwrap().0 == sent);
    }
}

/// A worker that publishes a frame of no known kind, or a ring position
/// that cannot be, fails its task as a protocol error and is replaced.
#[test]
fn a_worker_writing_garbage_into_its_ring_is_replaced() {
    guarded(
        "a_worker_writing_garbage_into_its_ring_is_replaced",
        Duration::from_secs(120),
        || {
            let pool = one_worker();
            for bytes in [true, false] {
                let pid = pool.submit(worker_pid, ()).result().unwrap();
                let err = pool.submit(scribble, bytes).result().unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::Failed(m) if m.contains("protocol")),
                    "{err}"
                );
                assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
                assert_eq!(pool.submit(double, 1).result().unwrap(), 2);
            }
        },
    );
}

/// Every one of many tasks is settled exactly once, with deaths among them:
/// the dying ones as deaths, every other one with its value.
#[test]
fn many_tasks_with_deaths_among_them_are_each_settled_once() {
    guarded(
        "many_tasks_with_deaths_among_them_are_each_settled_once",
        Duration::from_secs(300),
        || {
            let pool = ProcessPool::builder().workers(2).build().unwrap();
            let n: u64 = if cfg!(debug_assertions) {
                20_000
            } else {
                100_000
            };
            let handles: Vec<_> = (1..=n)
                .map(|i| (i, pool.submit(double_or_die, i)))
                .collect();
            let (mut ok, mut died) = (0u64, 0u64);
            for (i, handle) in handles {
                match handle.result() {
                    Ok(v) => {
                        assert_eq!(v, 2 * i);
                        ok += 1;
                    }
                    Err(e) => {
                        assert_eq!(i % 997, 0, "task {i}: {e}");
                        assert!(
                            matches!(e.kind(), ErrorKind::WorkerDied(Exit::Code(3))),
                            "{e}"
                        );
                        died += 1;
                    }
                }
            }
            assert_eq!(died, n / 997);
            assert_eq!(ok + died, n);
            let stats = pool.stats();
            assert_eq!((stats.succeeded + stats.failed) as u64, n, "{stats:?}");
        },
    );
}

/// The descriptors and mappings open in this process that name the rings.
fn ring_resources() -> (usize, Vec<String>) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let rings = maps
        .lines()
        .filter(|l| l.contains("troika-rings"))
        .map(str::to_owned)
        .collect();
    (fds, rings)
}

/// A pool leaves no descriptor and no mapping of its rings behind, also
/// after replacing dead workers.
#[test]
fn no_descriptor_or_mapping_outlives_the_pool() {
    guarded(
        "no_descriptor_or_mapping_outlives_the_pool",
        Duration::from_secs(120),
        || {
            let (fds, rings) = ring_resources();
            assert!(rings.is_empty(), "{rings:?}");
            {
                let pool = ProcessPool::builder().workers(2).build().unwrap();
                assert_eq!(pool.submit(double, 1).result().unwrap(), 2);
                let (_, during) = ring_resources();
                assert!(!during.is_empty(), "the pool maps its rings");
                let err = pool
                    .submit(break_mid_reply, (100, 10, false))
                    .result()
                    .unwrap_err();
                assert!(err.is_worker_died(), "{err}");
                assert_eq!(pool.submit(double, 3).result().unwrap(), 6);
            }
            let (fds_after, rings_after) = ring_resources();
            assert_eq!(fds_after, fds);
            assert!(rings_after.is_empty(), "{rings_after:?}");
        },
    );
}

/// CPU time (ns) used so far by this process's threads and by `pids`.
fn cpu_ns(pids: &[u32]) -> u64 {
    let schedstat = |path: String| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let ours: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| schedstat(format!("{}/schedstat", t.path().display())))
        .sum();
    let theirs: u64 = pids
        .iter()
        .map(|pid| schedstat(format!("/proc/{pid}/schedstat")))
        .sum();
    ours + theirs
}

/// An idle pool (after a burst of work) uses next to no CPU: its readers
/// and workers stop spinning and sleep.
#[test]
fn an_idle_pool_uses_no_cpu() {
    guarded("an_idle_pool_uses_no_cpu", Duration::from_secs(120), || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let handles: Vec<_> = (0..2000).map(|i| pool.submit(double, i)).collect();
        for handle in handles {
            handle.result().unwrap();
        }
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2);
        // The measurement window is the idle period itself (not a wait
        // for an event): a spinning thread would use all of it.
        let window = Duration::from_millis(500);
        let before = cpu_ns(&pids);
        std::thread::sleep(window);
        let used = Duration::from_nanos(cpu_ns(&pids) - before);
        assert!(
            used < window / 10,
            "an idle pool used {used:?} of CPU in {window:?}"
        );
    });
}

troika::remote! {
    /// Busy for `micros` microseconds (work, not a wait for an event), then
    /// `n * 2`.
    fn double_after(n: u64, micros: u64) -> u64 {
        let until = std::time::Instant::now() + Duration::from_micros(micros);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        n * 2
    }
}

/// Quick calls travel in batches through the ring: a slow call among them
/// still times out on its own clock (started when its predecessor
/// answered), the quick ones around it do not, and every `cancel()` that
/// returns true means a cancelled task, every other one a value.
#[test]
fn batched_calls_keep_timeouts_and_cancel_exact() {
    guarded(
        "batched_calls_keep_timeouts_and_cancel_exact",
        Duration::from_secs(300),
        || {
            let limit = Duration::from_millis(200);
            let pool = one_worker_with_timeout(limit);
            for round in 0..5u64 {
                let mut handles: Vec<_> = (0..3000u64)
                    .map(|i| (i, pool.submit(double_after, (i, 0))))
                    .collect();
                let slow = pool.submit(double_after, (round, 2_000_000));
                handles.extend((3000..6000u64).map(|i| (i, pool.submit(double_after, (i, 0)))));
                let cancelled: Vec<bool> = handles
                    .iter()
                    .map(|(i, h)| i % 101 == 7 && h.cancel())
                    .collect();
                for ((i, handle), cancelled) in handles.into_iter().zip(cancelled) {
                    match handle.result() {
                        Ok(v) => {
                            assert!(!cancelled, "task {i}: cancel() said true, yet it ran");
                            assert_eq!(v, 2 * i);
                        }
                        Err(e) => {
                            assert!(cancelled, "task {i}: {e}");
                            assert!(e.is_cancelled(), "task {i}: {e}");
                        }
                    }
                }
                let err = slow.result().unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::TimedOut(l) if *l == limit),
                    "{err}"
                );
            }
        },
    );
}

/// The pool's counters hold a task by the time its handle resolves: a
/// caller that has just seen the result (or the failure) finds it counted.
#[test]
fn stats_count_a_task_before_its_handle_resolves() {
    guarded(
        "stats_count_a_task_before_its_handle_resolves",
        Duration::from_secs(120),
        || {
            let pool = ProcessPool::new(1).unwrap();
            for i in 1..=2_000u64 {
                let outcome = pool.submit(double_or_die, i).result();
                assert_eq!(outcome.is_ok(), !i.is_multiple_of(997), "task {i}");
                let stats = pool.stats();
                assert_eq!((stats.succeeded + stats.failed) as u64, i, "{stats:?}");
            }
        },
    );
}
