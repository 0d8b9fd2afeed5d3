//! Loom model checks of the state machines in `troika::sync`.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --test loom_sync --release
//! ```
//!
//! Under `--cfg troika_loom` the primitives' mutex and condition variable are
//! loom models (`src/loom.rs`), so each test below runs in every interleaving
//! loom explores. The condition variable wakes only waiters already queued,
//! and since loom does not model time, a timed wait may time out at any point
//! while queued; a lost wake-up shows up as a deadlock, which loom reports.
#![cfg(troika_loom)]

use loom::sync::Arc;
use loom::thread;

use troika::sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, Event, GetError, Lock, PutError, Queue,
    RLock, ReleaseError, Semaphore,
};

#[test]
fn lock_guards_exclude_each_other() {
    loom::model(|| {
        let lock = Arc::new(Lock::with_data(0u32));
        let other = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut g = lock.lock();
                let v = *g;
                thread::yield_now();
                *g = v + 1;
            })
        };
        {
            let mut g = lock.lock();
            let v = *g;
            thread::yield_now();
            *g = v + 1;
        }
        other.join().unwrap();
        assert_eq!(*lock.lock(), 2);
        assert!(!lock.locked());
    });
}

#[test]
fn lock_acquired_here_released_there() {
    loom::model(|| {
        let lock = Arc::new(Lock::new());
        lock.acquire();
        let releaser = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.release())
        };
        // Blocks until the other thread has released it.
        lock.acquire();
        assert_eq!(releaser.join().unwrap(), Ok(()));
        assert_eq!(lock.release(), Ok(()));
        assert_eq!(lock.release(), Err(ReleaseError::NotLocked));
    });
}

#[test]
fn rlock_is_reentrant_and_exclusive() {
    loom::model(|| {
        let r = Arc::new(RLock::new());
        let other = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let _a = r.lock();
                let _b = r.lock();
                r.depth()
            })
        };
        let release_result = {
            let _a = r.lock();
            r.acquire();
            assert_eq!(r.depth(), 2);
            r.release()
        };
        assert_eq!(release_result, Ok(()));
        assert_eq!(other.join().unwrap(), 2);
        assert!(!r.locked());
    });
}

#[test]
fn condition_wait_for_never_misses_the_notify() {
    loom::model(|| {
        let cond = Arc::new(Condition::with_data(false));
        let setter = {
            let cond = Arc::clone(&cond);
            thread::spawn(move || {
                *cond.lock() = true;
                cond.notify();
            })
        };
        let mut g = cond.lock();
        g.wait_for(|ready| *ready);
        assert!(*g);
        drop(g);
        setter.join().unwrap();
    });
}

#[test]
fn condition_waiter_frees_the_lock_for_others() {
    // While one thread waits, another takes the same lock, changes the data
    // and notifies; the waiter gets the lock back with the change.
    loom::model(|| {
        let cond = Arc::new(Condition::with_data(0u32));
        let waiter = {
            let cond = Arc::clone(&cond);
            thread::spawn(move || {
                let mut g = cond.lock();
                g.wait_for(|n| *n > 0);
                *g += 10;
                *g
            })
        };
        {
            let mut g = cond.lock();
            *g += 1;
        }
        cond.notify_all();
        let seen = waiter.join().unwrap();
        assert_eq!(seen, 11);
        assert_eq!(*cond.lock(), 11);
    });
}

#[test]
fn semaphore_hands_units_over() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(0));
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.acquire())
        };
        s.release().unwrap();
        waiter.join().unwrap();
        assert_eq!(s.value(), 0);
    });
}

#[test]
fn bounded_semaphore_never_passes_its_bound() {
    loom::model(|| {
        let s = Arc::new(BoundedSemaphore::new(1));
        assert!(s.try_acquire());
        let a = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.release())
        };
        let b = s.release();
        let a = a.join().unwrap();
        // Exactly one of the two releases fits.
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        assert_eq!(s.value(), 1);
    });
}

#[test]
fn bounded_queue_passes_items_in_order() {
    loom::model(|| {
        let q = Arc::new(Queue::new(1));
        let producer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                q.put(1).unwrap();
                q.put(2).unwrap();
            })
        };
        assert_eq!(q.get(), Ok(1));
        assert_eq!(q.get(), Ok(2));
        producer.join().unwrap();
    });
}

/// A close racing a getter on an empty queue: the getter must wake and fail,
/// whether it was asleep or not yet waiting (a close that notified before
/// it queued must not be lost).
#[test]
fn close_wakes_a_blocked_getter() {
    loom::model(|| {
        let q: Arc<Queue<u8>> = Arc::new(Queue::new(1));
        let getter = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.get())
        };
        q.close();
        assert_eq!(getter.join().unwrap(), Err(GetError));
    });
}

/// The same for a putter on a full queue; what was put before the close is
/// still there to get.
#[test]
fn close_wakes_a_blocked_putter() {
    loom::model(|| {
        let q = Arc::new(Queue::new(1));
        q.put(0u8).unwrap();
        let putter = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.put(1))
        };
        q.close();
        assert_eq!(putter.join().unwrap(), Err(PutError(1)));
        assert_eq!(q.get(), Ok(0));
    });
}

#[test]
fn queue_join_waits_for_task_done() {
    loom::model(|| {
        let q = Arc::new(Queue::new(0));
        q.put(7).unwrap();
        let consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let item = q.get().unwrap();
                q.task_done().unwrap();
                item
            })
        };
        q.join();
        assert_eq!(q.unfinished_tasks(), 0);
        assert_eq!(consumer.join().unwrap(), 7);
    });
}

#[test]
fn event_set_wakes_the_waiter() {
    loom::model(|| {
        let e = Arc::new(Event::new());
        let waiter = {
            let e = Arc::clone(&e);
            thread::spawn(move || e.wait())
        };
        e.set();
        waiter.join().unwrap();
        assert!(e.is_set());
    });
}

#[test]
fn barrier_trips_twice() {
    loom::model(|| {
        let b = Arc::new(Barrier::new(2).unwrap());
        let other = {
            let b = Arc::clone(&b);
            thread::spawn(move || (b.wait(), b.wait()))
        };
        let mine = (b.wait(), b.wait());
        let theirs = other.join().unwrap();
        for (a, c) in [(mine.0, theirs.0), (mine.1, theirs.1)] {
            let mut indices = [a.unwrap(), c.unwrap()];
            indices.sort_unstable();
            assert_eq!(indices, [0, 1]);
        }
    });
}

#[test]
fn barrier_abort_breaks_a_waiter_or_a_later_wait() {
    loom::model(|| {
        let b = Arc::new(Barrier::new(2).unwrap());
        let waiter = {
            let b = Arc::clone(&b);
            thread::spawn(move || b.wait())
        };
        b.abort();
        // Whether it arrived before or after the abort, it is broken.
        assert_eq!(waiter.join().unwrap(), Err(BarrierError::Broken));
        assert!(b.is_broken());
    });
}

#[test]
fn barrier_action_runs_once_per_round_before_release() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    loom::model(|| {
        let runs = Arc::new(AtomicUsize::new(0));
        let b = {
            let runs = Arc::clone(&runs);
            Arc::new(
                Barrier::with_action(2, move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
            )
        };
        let other = {
            let (b, runs) = (Arc::clone(&b), Arc::clone(&runs));
            thread::spawn(move || {
                for round in 1..=2 {
                    b.wait().unwrap();
                    assert!(runs.load(Ordering::SeqCst) >= round);
                }
            })
        };
        for round in 1..=2 {
            b.wait().unwrap();
            assert!(runs.load(Ordering::SeqCst) >= round);
        }
        other.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn barrier_abort_racing_a_round_breaks_both_parties_or_neither() {
    loom::model(|| {
        let b = Arc::new(Barrier::with_action(2, || {}).unwrap());
        let parties: Vec<_> = (0..2)
            .map(|_| {
                let b = Arc::clone(&b);
                thread::spawn(move || b.wait())
            })
            .collect();
        b.abort();
        let results: Vec<_> = parties.into_iter().map(|t| t.join().unwrap()).collect();
        match (results[0], results[1]) {
            (Ok(x), Ok(y)) => assert_ne!(x, y),
            (Err(BarrierError::Broken), Err(BarrierError::Broken)) => {}
            other => panic!("a round half passed: {other:?}"),
        }
        assert!(b.is_broken());
    });
}

/// Issue 12's lost wake-up, at thread level: two waiters, two releases in a
/// row; both must get a unit (loom's condition variable wakes only queued
/// waiters, so a missed notify deadlocks here).
#[test]
fn semaphore_two_waiters_two_releases_both_wake() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let s = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || s.acquire())
            })
            .collect();
        s.release().unwrap();
        s.release().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(s.value(), 0);
    });
}

#[test]
fn bounded_semaphore_release_n_wakes_two_waiters() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let s = Arc::new(BoundedSemaphore::new(2));
        assert!(s.try_acquire() && s.try_acquire());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || s.acquire())
            })
            .collect();
        s.release_n(2).unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(s.value(), 0);
    });
}

#[test]
fn condition_notify_n_wakes_two_waiters() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let cond = Arc::new(Condition::with_data(0u32));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let cond = Arc::clone(&cond);
                thread::spawn(move || {
                    let mut g = cond.lock();
                    g.wait_for(|v| *v > 0);
                    *g -= 1;
                })
            })
            .collect();
        *cond.lock() += 2;
        cond.notify_n(2);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*cond.lock(), 0);
    });
}

/// A long timeout: under loom a timed wait may time out at any point while
/// it is queued, whatever the duration.
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A timed waiter and an untimed one, two releases: the timed one's timeout
/// never swallows the wake-up the other needs, and no unit is lost.
#[test]
fn semaphore_timed_waiter_never_swallows_a_wakeup() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let s = Arc::new(Semaphore::new(0));
        let timed = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.acquire_timeout(HOUR))
        };
        let untimed = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.acquire())
        };
        s.release().unwrap();
        s.release().unwrap();
        let got = timed.join().unwrap();
        untimed.join().unwrap();
        assert_eq!(s.value(), usize::from(!got));
    });
}

/// A holder, a waiter with a timeout and one without: the unlock's wake-up
/// reaches a waiter that still needs it.
#[test]
fn lock_timeout_never_swallows_a_wakeup() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let lock = Arc::new(Lock::new());
        let held = lock.lock();
        let timed = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.lock_timeout(HOUR).is_some())
        };
        let untimed = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || drop(lock.lock()))
        };
        drop(held);
        timed.join().unwrap();
        untimed.join().unwrap();
        assert!(lock.try_lock().is_some());
    });
}

/// A timed event wait racing `set` ends either way, and the flag stays set.
#[test]
fn event_timed_wait_racing_set_ends() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let waiter = {
            let ev = Arc::clone(&ev);
            thread::spawn(move || ev.wait_timeout(HOUR))
        };
        ev.set();
        waiter.join().unwrap();
        assert!(ev.is_set());
    });
}
