//! `troika::sync::{Lock, RLock, Condition}`: exclusion, the Python-style
//! acquire/release, misuse as errors, timeouts and waking; and (issue 12's
//! lost wake-up class) `Event`'s set-then-clear.

mod ipc_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use troika::sync::{Condition, Lock, RLock, ReleaseError, Thread};

const PATIENCE: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(20);

fn stress_iterations() -> u64 {
    if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    }
}

// ---------------------------------------------------------------- Lock

#[test]
fn lock_guard_gives_exclusive_access_to_the_data() {
    let counter = Arc::new(Lock::with_data(0u64));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let counter = Arc::clone(&counter);
            Thread::spawn(format!("adder-{i}"), move || {
                for _ in 0..stress_iterations() {
                    *counter.lock() += 1;
                }
            })
            .unwrap()
        })
        .collect();
    for t in threads {
        t.join_timeout(PATIENCE).unwrap();
    }
    assert_eq!(*counter.lock(), 4 * stress_iterations());
    let mut counter = Arc::try_unwrap(counter).unwrap();
    *counter.get_mut() += 1;
    assert_eq!(counter.into_inner(), 4 * stress_iterations() + 1);
}

#[test]
fn python_style_acquire_release_excludes_too() {
    // A read-modify-write that is only correct under the lock.
    let lock = Arc::new(Lock::new());
    let value = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (lock, value) = (Arc::clone(&lock), Arc::clone(&value));
            Thread::spawn(format!("worker-{i}"), move || {
                for n in 0..stress_iterations() {
                    match n % 3 {
                        0 => lock.acquire(),
                        1 => assert!(lock.acquire_timeout(PATIENCE)),
                        _ => {
                            while !lock.try_acquire() {
                                std::thread::yield_now();
                            }
                        }
                    }
                    let v = value.load(Ordering::Relaxed);
                    value.store(v + 1, Ordering::Relaxed);
                    lock.release().unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for t in threads {
        t.join_timeout(PATIENCE).unwrap();
    }
    assert_eq!(value.load(Ordering::Relaxed), 4 * stress_iterations());
    assert!(!lock.locked());
}

#[test]
fn releasing_a_free_lock_is_an_error() {
    let lock = Lock::new();
    assert_eq!(lock.release(), Err(ReleaseError::NotLocked));
    lock.acquire();
    lock.release().unwrap();
    assert_eq!(lock.release(), Err(ReleaseError::NotLocked));
    assert_eq!(
        ReleaseError::NotLocked.to_string(),
        "release of a lock that is not held"
    );
}

#[test]
fn releasing_a_guard_held_lock_is_an_error() {
    let lock = Lock::new();
    let guard = lock.lock();
    assert!(lock.locked());
    assert_eq!(lock.release(), Err(ReleaseError::HeldByGuard));
    assert!(lock.locked(), "the failed release changed nothing");
    drop(guard);
    assert!(!lock.locked());
}

#[test]
fn another_thread_may_release_an_acquired_lock() {
    // Python's low-level `_thread` pattern: main acquires, the worker releases
    // when done, main waits by acquiring again.
    let lock = Arc::new(Lock::new());
    lock.acquire();
    let worker = {
        let lock = Arc::clone(&lock);
        Thread::spawn("loop0", move || lock.release()).unwrap()
    };
    assert!(lock.acquire_timeout(PATIENCE));
    assert_eq!(worker.join_timeout(PATIENCE).unwrap(), Ok(()));
    lock.release().unwrap();
}

#[test]
fn try_and_timed_locking_give_up_while_held() {
    let lock = Lock::with_data(5);
    let guard = lock.lock();
    assert!(lock.try_lock().is_none());
    assert!(lock.lock_timeout(SHORT).is_none());
    assert!(!lock.try_acquire());
    assert!(!lock.acquire_timeout(SHORT));
    assert!(format!("{lock:?}").contains("<locked>"));
    assert_eq!(format!("{guard:?}"), "LockGuard(5)");
    drop(guard);
    let guard = lock.try_lock().expect("free now");
    drop(guard);
    assert!(lock.lock_timeout(SHORT).is_some());
    assert_eq!(format!("{lock:?}"), "Lock { data: 5 }");
    let default: Lock<Vec<u8>> = Lock::default();
    assert!(default.lock().is_empty());
}

#[test]
fn a_guard_wait_is_woken_when_the_holder_releases() {
    let lock = Arc::new(Lock::with_data(Vec::new()));
    let guard = lock.lock();
    let waiter = {
        let lock = Arc::clone(&lock);
        Thread::spawn("waiter", move || {
            lock.lock_timeout(PATIENCE).map(|mut v| v.push(2))
        })
        .unwrap()
    };
    drop(guard);
    assert!(waiter.join_timeout(PATIENCE).unwrap().is_some());
    assert_eq!(*lock.lock(), [2]);
}

// ---------------------------------------------------------------- RLock

#[test]
fn rlock_is_reentrant_and_counts_depth() {
    let r = RLock::new();
    assert!(!r.locked() && !r.is_owned());
    r.acquire();
    assert!(r.try_acquire());
    assert!(r.acquire_timeout(SHORT));
    assert_eq!(r.depth(), 3);
    assert!(r.is_owned());
    for _ in 0..3 {
        r.release().unwrap();
    }
    assert_eq!(r.depth(), 0);
    assert!(!r.locked());
    assert_eq!(r.release(), Err(ReleaseError::NotLocked));
}

#[test]
fn rlock_guards_nest() {
    let r = RLock::new();
    let a = r.lock();
    let b = r.try_lock().expect("reentrant");
    let c = r.lock_timeout(SHORT).expect("reentrant");
    assert_eq!(r.depth(), 3);
    drop(c);
    drop(b);
    assert!(r.locked());
    drop(a);
    assert!(!r.locked());
    assert!(format!("{r:?}").contains("RLock"));
}

#[test]
fn rlock_release_from_another_thread_is_an_error() {
    let r = Arc::new(RLock::new());
    r.acquire();
    let intruder = {
        let r = Arc::clone(&r);
        Thread::spawn("intruder", move || {
            (
                r.release(),
                r.try_acquire(),
                r.acquire_timeout(SHORT),
                r.try_lock().is_some(),
                r.lock_timeout(SHORT).is_some(),
                r.is_owned(),
            )
        })
        .unwrap()
    };
    assert_eq!(
        intruder.join_timeout(PATIENCE).unwrap(),
        (
            Err(ReleaseError::NotOwner),
            false,
            false,
            false,
            false,
            false
        )
    );
    assert_eq!(r.depth(), 1, "the failed release changed nothing");
    r.release().unwrap();
    assert!(
        ReleaseError::NotOwner
            .to_string()
            .contains("another thread")
    );
}

#[test]
fn rlock_is_handed_over_when_fully_released() {
    let r = Arc::new(RLock::new());
    r.acquire();
    r.acquire();
    let other = {
        let r = Arc::clone(&r);
        Thread::spawn("other", move || {
            let _g = r.lock();
            r.is_owned()
        })
        .unwrap()
    };
    r.release().unwrap();
    r.release().unwrap();
    assert!(other.join_timeout(PATIENCE).unwrap());
}

#[test]
fn rlock_excludes_other_threads() {
    let r = Arc::new(RLock::new());
    let value = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (r, value) = (Arc::clone(&r), Arc::clone(&value));
            Thread::spawn(format!("r-{i}"), move || {
                for _ in 0..stress_iterations() {
                    let _outer = r.lock();
                    let _inner = r.lock();
                    let v = value.load(Ordering::Relaxed);
                    value.store(v + 1, Ordering::Relaxed);
                }
            })
            .unwrap()
        })
        .collect();
    for t in threads {
        t.join_timeout(PATIENCE).unwrap();
    }
    assert_eq!(value.load(Ordering::Relaxed), 4 * stress_iterations());
}

// ---------------------------------------------------------------- Condition

#[derive(Default)]
struct Shared {
    waiting: bool,
    go: bool,
    items: Vec<u32>,
}

#[test]
fn condition_wait_for_sees_the_change() {
    let cond = Arc::new(Condition::with_data(Shared::default()));
    let consumer = {
        let cond = Arc::clone(&cond);
        Thread::spawn("consumer", move || {
            let mut g = cond.lock();
            g.wait_for(|s| !s.items.is_empty());
            g.items.pop()
        })
        .unwrap()
    };
    cond.lock().items.push(9);
    cond.notify();
    assert_eq!(consumer.join_timeout(PATIENCE).unwrap(), Some(9));
}

#[test]
fn condition_wait_timeout_and_wait_for_timeout_time_out() {
    let cond = Condition::with_data(0);
    let mut g = cond.lock();
    assert!(!g.wait_timeout(SHORT));
    assert!(!g.wait_for_timeout(|n| *n > 0, SHORT));
    *g = 1;
    assert!(
        g.wait_for_timeout(|n| *n > 0, SHORT),
        "already true: no wait"
    );
    // The lock is held again after a timed-out wait.
    assert!(cond.bound_lock().locked());
    assert!(cond.try_lock().is_none());
    drop(g);
    assert!(cond.lock_timeout(SHORT).is_some());
}

#[test]
fn condition_notify_n_wakes_a_known_waiter() {
    let cond = Arc::new(Condition::with_data(Shared::default()));
    let waiter = {
        let cond = Arc::clone(&cond);
        Thread::spawn("waiter", move || {
            let mut g = cond.lock();
            g.waiting = true;
            cond.notify_all(); // tell the main thread we are about to wait
            g.wait_for(|s| s.go);
        })
        .unwrap()
    };
    let mut g = cond.lock();
    assert!(g.wait_for_timeout(|s| s.waiting, PATIENCE));
    // We hold the lock and the waiter set `waiting` under it and then waited,
    // so it is asleep on the condition now.
    g.go = true;
    assert_eq!(cond.notify_n(5), 1);
    drop(g);
    waiter.join_timeout(PATIENCE).unwrap();
    assert_eq!(cond.notify_n(3), 0);
    assert_eq!(cond.notify_all(), 0);
}

#[test]
fn condition_notify_all_releases_every_waiter() {
    let cond = Arc::new(Condition::with_data(Shared::default()));
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let cond = Arc::clone(&cond);
            Thread::spawn(format!("w{i}"), move || {
                let mut g = cond.lock();
                g.wait_for(|s| s.go);
                g.items.push(i);
            })
            .unwrap()
        })
        .collect();
    cond.lock().go = true;
    cond.notify_all();
    for w in waiters {
        w.join_timeout(PATIENCE).unwrap();
    }
    let mut items = cond.lock().items.clone();
    items.sort_unstable();
    assert_eq!(items, [0, 1, 2, 3]);
}

#[test]
fn two_conditions_can_share_one_lock() {
    // A bounded buffer: "not empty" and "not full" over one lock.
    let lock = Arc::new(Lock::with_data(Vec::<u32>::new()));
    let not_empty = Arc::new(Condition::with_lock(Arc::clone(&lock)));
    let not_full = Arc::new(Condition::with_lock(Arc::clone(&lock)));
    let producer = {
        let (not_empty, not_full) = (Arc::clone(&not_empty), Arc::clone(&not_full));
        Thread::spawn("producer", move || {
            for i in 0..500 {
                let mut g = not_full.lock();
                g.wait_for(|buf| buf.len() < 2);
                g.push(i);
                drop(g);
                not_empty.notify();
            }
        })
        .unwrap()
    };
    let mut got = Vec::new();
    while got.len() < 500 {
        let mut g = not_empty.lock();
        assert!(g.wait_for_timeout(|buf| !buf.is_empty(), PATIENCE));
        got.push(g.remove(0));
        drop(g);
        not_full.notify();
    }
    producer.join_timeout(PATIENCE).unwrap();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[test]
fn condition_wait_loop_and_debug() {
    let cond = Arc::new(Condition::new());
    let flag = Arc::new(AtomicU64::new(0));
    let setter = {
        let (cond, flag) = (Arc::clone(&cond), Arc::clone(&flag));
        Thread::spawn("setter", move || {
            let _g = cond.lock();
            flag.store(1, Ordering::SeqCst);
            cond.notify_all();
        })
        .unwrap()
    };
    let mut g = cond.lock();
    while flag.load(Ordering::SeqCst) == 0 {
        g.wait();
    }
    drop(g);
    setter.join_timeout(PATIENCE).unwrap();
    assert!(format!("{cond:?}").contains("Condition"));
    let d: Condition<u8> = Condition::default();
    assert_eq!(format!("{:?}", d.lock()), "ConditionGuard(0)");
}

// ---------------------------------------------------------------- regressions

/// A failed `try_lock`/`lock_timeout` used to build a guard and drop it,
/// freeing a lock that another holder still had.
#[test]
fn regression_failed_try_lock_does_not_free_the_holders_lock() {
    let lock = Lock::new();
    let _held = lock.lock();
    assert!(lock.try_lock().is_none());
    assert!(lock.locked());
    assert!(lock.lock_timeout(SHORT).is_none());
    assert!(lock.locked());
    assert!(
        lock.try_lock().is_none(),
        "still held after the failed attempts"
    );

    let r = Arc::new(RLock::new());
    r.acquire();
    let other = {
        let r = Arc::clone(&r);
        Thread::spawn("other", move || {
            let a = r.try_lock().is_none();
            let b = r.lock_timeout(SHORT).is_none();
            (a, b)
        })
        .unwrap()
    };
    assert_eq!(other.join_timeout(PATIENCE).unwrap(), (true, true));
    assert_eq!(r.depth(), 1);
    assert!(r.is_owned());
    r.release().unwrap();
}

/// A thread asleep in `Event::wait` when the event is set and at once
/// cleared must return (Python's `Event.wait` does); before issue 12 it
/// slept on with its wake-up lost.
#[test]
fn event_set_then_clear_wakes_a_sleeping_waiter() {
    ipc_support::guarded(
        "event_set_then_clear_wakes_a_sleeping_waiter",
        PATIENCE * 3,
        || {
            for _ in 0..20 {
                let ev = Arc::new(troika::sync::Event::new());
                let (tx, rx) = std::sync::mpsc::channel();
                let t = {
                    let ev = Arc::clone(&ev);
                    std::thread::spawn(move || {
                        tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                            .unwrap();
                        ev.wait();
                    })
                };
                let tid = rx.recv().unwrap();
                loop {
                    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                        .unwrap_or_default();
                    let state = stat
                        .rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('S'));
                    if state == Some(true) {
                        break;
                    }
                    std::thread::yield_now();
                }
                ev.set();
                ev.clear();
                t.join().unwrap();
                assert!(!ev.is_set());
            }
        },
    );
}
