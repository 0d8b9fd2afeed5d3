//! Process-shared Lock, Semaphore, BoundedSemaphore, Event and Barrier across
//! real child processes (this test binary re-executed).

mod ipc_support;

use ipc_support::{LONG, join, join_ok, kill, role, spawn};
use std::time::Duration;
use troika::ipc::{Barrier, BoundedSemaphore, Event, Lock, Semaphore, Value};

/// Parks the current thread for ever (a child waiting to be killed).
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

#[test]
fn lock_holder_killed_is_taken_over_by_a_waiter() {
    if let Some(r) = role() {
        assert_eq!(r, "hold");
        let (lock, ready): (Lock, Event) = ipc_support::arg();
        let _g = lock.lock();
        ready.set();
        park_forever();
    }
    let lock = Lock::new().unwrap();
    let ready = Event::new().unwrap();
    let child = spawn(
        "lock_holder_killed_is_taken_over_by_a_waiter",
        "hold",
        &(&lock, &ready),
    );
    assert!(ready.wait_timeout(LONG), "child never took the lock");
    assert_eq!(lock.holder(), Some(child.id()));
    // A waiter already blocked when the holder dies.
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.lock_timeout(LONG).map(|g| g.holder_died()))
    };
    assert!(lock.try_lock().is_none(), "the child holds the lock");
    kill(child);
    assert!(
        waiter.join().unwrap().unwrap(),
        "the waiter must be told the holder died"
    );
    let g = lock.lock_timeout(LONG).unwrap();
    assert!(!g.holder_died(), "a normal release is not a death");
}

#[test]
fn lock_holder_killed_and_not_yet_reaped_counts_as_dead() {
    if let Some(_r) = role() {
        let (lock, ready): (Lock, Event) = ipc_support::arg();
        let _g = lock.lock();
        ready.set();
        park_forever();
    }
    let lock = Lock::new().unwrap();
    let ready = Event::new().unwrap();
    let mut child = spawn(
        "lock_holder_killed_and_not_yet_reaped_counts_as_dead",
        "hold",
        &(&lock, &ready),
    );
    assert!(ready.wait_timeout(LONG));
    // SIGKILL without reaping: the holder is a zombie while we take over.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let g = lock.lock_timeout(LONG).unwrap();
    assert!(g.holder_died());
    drop(g);
    child.wait().unwrap();
}

#[test]
fn lock_excludes_processes() {
    const ROUNDS: u64 = 300;
    if let Some(_r) = role() {
        let (lock, counter): (Lock, Value<u64>) = ipc_support::arg();
        for _ in 0..ROUNDS {
            let g = lock.lock();
            assert!(!g.holder_died());
            // Two separate locked operations: only the outer lock makes the
            // increment atomic.
            let v = counter.get();
            std::thread::yield_now();
            counter.set(v + 1);
        }
        return;
    }
    let lock = Lock::new().unwrap();
    let counter = Value::new(0u64).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| spawn("lock_excludes_processes", "inc", &(&lock, &counter)))
        .collect();
    for _ in 0..ROUNDS {
        let _g = lock.lock();
        let v = counter.get();
        counter.set(v + 1);
    }
    children.into_iter().for_each(join_ok);
    assert_eq!(counter.get(), 4 * ROUNDS);
}

#[test]
fn lock_timeout_and_try_lock() {
    let lock = Lock::new().unwrap();
    let g = lock.lock();
    let other = lock.clone();
    // Same process, other thread: the holder is alive, so it times out.
    let r = std::thread::spawn(move || other.lock_timeout(Duration::from_millis(30)).is_some())
        .join()
        .unwrap();
    assert!(!r, "timed out: None");
    drop(g);
    assert!(lock.try_lock().is_some());
    assert_eq!(lock.holder(), None);
}

#[test]
fn semaphore_bounds_concurrency_across_processes() {
    if let Some(_r) = role() {
        let (sem, inside, peak): (Semaphore, Value<u32>, Value<u32>) = ipc_support::arg();
        for _ in 0..100 {
            assert!(sem.acquire_timeout(LONG));
            {
                let mut n = inside.lock();
                *n += 1;
                let mut p = peak.lock();
                *p = (*p).max(*n);
            }
            std::thread::yield_now();
            *inside.lock() -= 1;
            sem.release().unwrap();
        }
        return;
    }
    let sem = Semaphore::new(2).unwrap();
    let inside = Value::new(0u32).unwrap();
    let peak = Value::new(0u32).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            spawn(
                "semaphore_bounds_concurrency_across_processes",
                "w",
                &(&sem, &inside, &peak),
            )
        })
        .collect();
    children.into_iter().for_each(join_ok);
    assert!(
        peak.get() <= 2,
        "peak {} above the semaphore's 2",
        peak.get()
    );
    assert_eq!(sem.value(), 2);
}

#[test]
fn semaphore_timeout_and_wakeup() {
    let sem = Semaphore::new(0).unwrap();
    assert!(!sem.try_acquire());
    assert!(!sem.acquire_timeout(Duration::from_millis(10)));
    let s2 = sem.clone();
    let t = std::thread::spawn(move || s2.acquire_timeout(LONG));
    sem.release().unwrap();
    assert!(t.join().unwrap());
    assert_eq!(sem.value(), 0);
}

#[test]
fn bounded_semaphore_refuses_overflow() {
    let tray = BoundedSemaphore::new(2).unwrap();
    let err = tray.release().unwrap_err();
    assert!(matches!(
        err,
        troika::ipc::ReleaseError::AboveBound { bound: 2 }
    ));
    tray.acquire();
    tray.acquire();
    assert!(!tray.try_acquire());
    tray.release().unwrap();
    tray.release().unwrap();
    assert!(tray.release().is_err());
    assert_eq!(tray.value(), 2);
    assert_eq!(tray.bound(), 2);
}

#[test]
fn plain_semaphore_reports_overflow_like_sync() {
    // The largest count a shared word holds is 2^31 - 1; more is clamped,
    // and a release past it is refused with the error `sync` uses.
    let sem = Semaphore::new(u32::MAX).unwrap();
    assert_eq!(sem.value(), (1 << 31) - 1);
    assert_eq!(sem.release(), Err(troika::ipc::ReleaseError::Overflow));
    assert_eq!(sem.value(), (1 << 31) - 1);
    // The same release on `sync::Semaphore` at its largest count.
    let local = troika::sync::Semaphore::new(usize::MAX);
    assert_eq!(local.release(), Err(troika::sync::ReleaseError::Overflow));
}

#[test]
fn semaphore_guards_give_the_unit_back() {
    let sem = Semaphore::new(1).unwrap();
    {
        let _unit = sem.access();
        assert!(sem.try_access().is_none());
        assert!(sem.access_timeout(Duration::from_millis(5)).is_none());
    }
    let unit = sem.try_access().unwrap();
    drop(unit);
    assert_eq!(sem.value(), 1);
}

#[test]
fn event_wakes_a_child_and_the_child_answers() {
    if let Some(_r) = role() {
        let (go, done): (Event, Event) = ipc_support::arg();
        assert!(go.wait_timeout(LONG));
        done.set();
        return;
    }
    let go = Event::new().unwrap();
    let done = Event::new().unwrap();
    let child = spawn(
        "event_wakes_a_child_and_the_child_answers",
        "w",
        &(&go, &done),
    );
    assert!(!done.is_set());
    go.set();
    assert!(done.wait_timeout(LONG));
    join_ok(child);
    go.clear();
    assert!(!go.is_set());
    assert!(!go.wait_timeout(Duration::from_millis(5)));
}

#[test]
fn barrier_releases_all_parties_with_one_leader() {
    const ROUNDS: u32 = 20;
    if let Some(_r) = role() {
        let (b, leaders): (Barrier, Value<u32>) = ipc_support::arg();
        for _ in 0..ROUNDS {
            if b.wait_timeout(LONG).unwrap() == 2 {
                *leaders.lock() += 1;
            }
        }
        return;
    }
    let b = Barrier::new(3).unwrap();
    let leaders = Value::new(0u32).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            spawn(
                "barrier_releases_all_parties_with_one_leader",
                "w",
                &(&b, &leaders),
            )
        })
        .collect();
    for _ in 0..ROUNDS {
        if b.wait_timeout(LONG).unwrap() == 2 {
            *leaders.lock() += 1;
        }
    }
    children.into_iter().for_each(join_ok);
    assert_eq!(leaders.get(), ROUNDS);
    assert_eq!(b.parties(), 3);
}

#[test]
fn barrier_timeout_breaks_it_for_everyone() {
    let b = Barrier::new(3).unwrap();
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.wait_timeout(LONG));
    // Only two of three parties come: the short timeout is the behaviour
    // under test.
    let mine = b.wait_timeout(Duration::from_millis(20));
    let theirs = t.join().unwrap();
    let errs = [mine.unwrap_err(), theirs.unwrap_err()];
    assert!(errs.iter().any(|e| e.is_timeout()));
    assert!(b.is_broken());
    assert!(matches!(b.wait(), Err(troika::ipc::BarrierError::Broken)));
    b.reset();
    assert!(!b.is_broken());
}

#[test]
fn a_handle_from_a_dead_process_is_an_error_not_a_hang() {
    if let Some(_r) = role() {
        let back: troika::ipc::Queue<String> = ipc_support::arg();
        let lock = Lock::new().unwrap();
        back.put(&serde_json::to_string(&lock).unwrap()).unwrap();
        park_forever();
    }
    let back = troika::ipc::Queue::<String>::new(4).unwrap();
    let child = spawn(
        "a_handle_from_a_dead_process_is_an_error_not_a_hang",
        "w",
        &back,
    );
    let json = back.get_timeout(LONG).unwrap();
    // While the creator lives, the handle opens and works.
    let live: Lock = serde_json::from_str(&json).unwrap();
    drop(live.lock());
    kill(child);
    // The segment we mapped outlives its creator...
    drop(live.lock());
    // ...but a handle naming the dead creator cannot be opened.
    let err = serde_json::from_str::<Lock>(&json).unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
    let _ = join;
}

/// The state letter of thread `tid` of process `pid` (`S`: asleep).
fn task_state(pid: u32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // "tid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until thread `tid` of `pid` is asleep (in the futex wait it is
/// about to enter: the caller knows it has nothing else to block on). The
/// guarded test's outer deadline is the failure path.
fn wait_asleep(pid: u32, tid: i32) {
    while task_state(pid, tid) != Some('S') {
        std::thread::yield_now();
    }
}

/// Two threads asleep in `acquire`, two quick releases: both must wake.
fn two_sleeping_threads_two_releases(acquire: fn(&Semaphore), release: fn(&Semaphore)) {
    let sem = Semaphore::new(0).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (sem, tx) = (sem.clone(), tx.clone());
            std::thread::spawn(move || {
                tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                    .unwrap();
                acquire(&sem);
            })
        })
        .collect();
    for _ in 0..2 {
        wait_asleep(std::process::id(), rx.recv().unwrap());
    }
    release(&sem);
    release(&sem);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sem.value(), 0);
}

#[test]
fn semaphore_two_sleeping_threads_two_quick_releases_both_wake() {
    ipc_support::guarded(
        "semaphore_two_sleeping_threads_two_quick_releases_both_wake",
        Duration::from_secs(30),
        || {
            for _ in 0..20 {
                two_sleeping_threads_two_releases(|s| s.acquire(), |s| s.release().unwrap());
            }
        },
    );
}

#[test]
fn bounded_semaphore_two_sleeping_threads_two_quick_releases_both_wake() {
    ipc_support::guarded(
        "bounded_semaphore_two_sleeping_threads_two_quick_releases_both_wake",
        Duration::from_secs(30),
        || {
            for _ in 0..20 {
                let sem = BoundedSemaphore::new(2).unwrap();
                assert!(sem.try_acquire() && sem.try_acquire());
                let (tx, rx) = std::sync::mpsc::channel();
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let (sem, tx) = (sem.clone(), tx.clone());
                        std::thread::spawn(move || {
                            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                                .unwrap();
                            sem.acquire();
                        })
                    })
                    .collect();
                for _ in 0..2 {
                    wait_asleep(std::process::id(), rx.recv().unwrap());
                }
                sem.release().unwrap();
                sem.release().unwrap();
                for t in threads {
                    t.join().unwrap();
                }
                assert_eq!(sem.value(), 0);
            }
        },
    );
}

#[test]
fn semaphore_two_sleeping_processes_two_quick_releases_both_wake() {
    const NAME: &str = "semaphore_two_sleeping_processes_two_quick_releases_both_wake";
    if let Some(r) = role() {
        assert_eq!(r, "acquire");
        let (sem, tid): (Semaphore, Value<i32>) = ipc_support::arg();
        tid.set(rustix::thread::gettid().as_raw_nonzero().get());
        sem.acquire();
        return;
    }
    ipc_support::guarded(NAME, Duration::from_secs(60), || {
        for _ in 0..5 {
            let sem = Semaphore::new(0).unwrap();
            let children: Vec<_> = (0..2)
                .map(|_| {
                    let tid = Value::new(0i32).unwrap();
                    let child = spawn(NAME, "acquire", &(&sem, &tid));
                    (child, tid)
                })
                .collect();
            for (child, tid) in &children {
                let tid = loop {
                    match tid.get() {
                        0 => std::thread::yield_now(),
                        t => break t,
                    }
                };
                wait_asleep(child.id(), tid);
            }
            sem.release().unwrap();
            sem.release().unwrap();
            for (child, _) in children {
                join_ok(child);
            }
            assert_eq!(sem.value(), 0);
        }
    });
}

/// A waiter asleep on an event when it is set and cleared again at once.
#[test]
fn event_set_then_clear_wakes_a_sleeping_waiter() {
    ipc_support::guarded(
        "event_set_then_clear_wakes_a_sleeping_waiter",
        Duration::from_secs(30),
        || {
            for _ in 0..20 {
                let ev = Event::new().unwrap();
                let (tx, rx) = std::sync::mpsc::channel();
                let ev2 = ev.clone();
                let t = std::thread::spawn(move || {
                    tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                        .unwrap();
                    ev2.wait();
                });
                wait_asleep(std::process::id(), rx.recv().unwrap());
                ev.set();
                ev.clear();
                t.join().unwrap();
                assert!(!ev.is_set());
            }
        },
    );
}

#[test]
fn barrier_refuses_zero_and_too_many_parties() {
    for bad in [0, 65_536, u32::MAX] {
        let err = Barrier::new(bad).unwrap_err();
        assert!(
            matches!(err, troika::ipc::IpcError::InvalidArgument(_)),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
    assert_eq!(Barrier::new(65_535).unwrap().parties(), 65_535);
}

/// Every "try" and timed call returns on time while the process holding the
/// lock word (and the semaphores' units) is SIGSTOPped: nothing spins on, or
/// sleeps without limit behind, a stopped peer.
#[test]
fn try_and_timeout_calls_return_while_the_holder_is_stopped() {
    const NAME: &str = "try_and_timeout_calls_return_while_the_holder_is_stopped";
    if let Some(r) = role() {
        assert_eq!(r, "hold");
        let (lock, sem, bsem, ready): (Lock, Semaphore, BoundedSemaphore, Event) =
            ipc_support::arg();
        let _g = lock.lock();
        sem.acquire();
        bsem.acquire();
        ready.set();
        park_forever();
    }
    ipc_support::guarded(NAME, Duration::from_secs(60), || {
        use rustix::process::{Pid, Signal, kill_process};
        let lock = Lock::new().unwrap();
        let sem = Semaphore::new(1).unwrap();
        let bsem = BoundedSemaphore::new(1).unwrap();
        let ready = Event::new().unwrap();
        let child = spawn(NAME, "hold", &(&lock, &sem, &bsem, &ready));
        assert!(ready.wait_timeout(LONG), "child never took the lock");
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        kill_process(pid, Signal::STOP).unwrap();
        // Wait until the whole child is stopped (state T).
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
            if stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('T')
            {
                break;
            }
            std::thread::yield_now();
        }
        let short = Duration::from_millis(50);
        assert!(lock.try_lock().is_none());
        assert!(lock.lock_timeout(short).is_none());
        assert!(!sem.try_acquire());
        assert!(!sem.acquire_timeout(short));
        assert!(!bsem.try_acquire());
        assert!(!bsem.acquire_timeout(short));
        let never = Event::new().unwrap();
        assert!(!never.wait_timeout(short));
        let barrier = Barrier::new(2).unwrap();
        assert!(barrier.wait_timeout(short).unwrap_err().is_timeout());
        assert!(barrier.is_broken());
        kill_process(pid, Signal::CONT).unwrap();
        kill(child);
        // The lock's holder is gone: taken over, and told so.
        assert!(lock.lock_timeout(LONG).unwrap().holder_died());
    });
}

/// Descriptors of this process, and its memfd mappings.
fn fds_and_memfd_maps() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:"))
        .count();
    (fds, maps)
}

/// The last clone of a lock, semaphore, event or barrier releases its
/// segment: descriptor and mapping, at once.
#[test]
fn dropping_the_last_clone_releases_descriptor_and_mapping() {
    ipc_support::guarded(
        "dropping_the_last_clone_releases_descriptor_and_mapping",
        Duration::from_secs(30),
        || {
            let before = fds_and_memfd_maps();
            {
                let lock = Lock::new().unwrap();
                let sem = Semaphore::new(1).unwrap();
                let bsem = BoundedSemaphore::new(1).unwrap();
                let ev = Event::new().unwrap();
                let barrier = Barrier::new(1).unwrap();
                let clones = (
                    lock.clone(),
                    sem.clone(),
                    bsem.clone(),
                    ev.clone(),
                    barrier.clone(),
                );
                drop(lock.lock());
                sem.acquire();
                sem.release().unwrap();
                bsem.acquire();
                bsem.release().unwrap();
                ev.set();
                assert_eq!(barrier.wait().unwrap(), 0);
                assert_ne!(fds_and_memfd_maps(), before);
                drop((lock, sem, bsem, ev, barrier));
                assert_ne!(fds_and_memfd_maps(), before, "clones still alive");
                drop(clones);
            }
            assert_eq!(fds_and_memfd_maps(), before);
        },
    );
}

/// A lock word names its holder's pid, which troika caches: a child made by
/// `fork` (no exec) must lock under its own pid, not its parent's, or a
/// holder that dies would never be recognised as dead.
#[test]
fn a_forked_child_locks_under_its_own_pid() {
    ipc_support::guarded(
        "a_forked_child_locks_under_its_own_pid",
        Duration::from_secs(60),
        || {
            let lock = Lock::new().unwrap();
            // Locking once fills the cache with this process's pid.
            drop(lock.lock());
            // SAFETY: the child only takes and reads the lock (no allocation,
            // no other lock) and leaves with `_exit`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let guard = lock.lock();
                let own = lock.holder() == Some(std::process::id());
                drop(guard);
                // SAFETY: ends the forked child without running the parent's
                // exit handlers.
                unsafe { libc::_exit(if own { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the forked child locked under another pid (status {status:#x})"
            );
        },
    );
}
