//! `troika::sync::{Semaphore, BoundedSemaphore}`: counting, limits, the
//! bounded release error (the candy machine of Python tutorials), timeouts and guards.

mod ipc_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use troika::sync::{BoundedSemaphore, ReleaseError, Semaphore, Thread};

const PATIENCE: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(20);

type Op = Arc<dyn Fn() + Send + Sync>;

#[test]
fn semaphore_counts_units() {
    let s = Semaphore::new(2);
    assert_eq!(s.value(), 2);
    s.acquire();
    assert!(s.try_acquire());
    assert_eq!(s.value(), 0);
    assert!(!s.try_acquire());
    assert!(!s.acquire_timeout(SHORT));
    s.release().unwrap();
    assert!(s.acquire_timeout(SHORT));
    // A plain semaphore may grow past its start value, as in Python.
    s.release_n(5).unwrap();
    assert_eq!(s.value(), 5);
    assert_eq!(Semaphore::default().value(), 1);
    assert!(format!("{s:?}").contains("Semaphore"));
}

#[test]
fn semaphore_overflow_is_an_error() {
    let s = Semaphore::new(usize::MAX);
    assert_eq!(s.release(), Err(ReleaseError::Overflow));
    assert_eq!(s.value(), usize::MAX);
    let s = Semaphore::new(1);
    assert_eq!(s.release_n(usize::MAX), Err(ReleaseError::Overflow));
    assert_eq!(s.value(), 1, "a refused release changes nothing");
    assert_eq!(
        ReleaseError::Overflow.to_string(),
        "semaphore counter overflow"
    );
}

#[test]
fn bounded_semaphore_refuses_release_past_its_start_value() {
    let tray = BoundedSemaphore::new(3);
    assert_eq!(tray.bound(), 3);
    assert_eq!(tray.release(), Err(ReleaseError::AboveBound { bound: 3 }));
    assert!(tray.try_acquire());
    assert!(tray.try_acquire());
    // All or nothing: 2 back would be fine, 3 would pass the bound.
    assert_eq!(
        tray.release_n(3),
        Err(ReleaseError::AboveBound { bound: 3 })
    );
    assert_eq!(tray.value(), 1);
    tray.release_n(2).unwrap();
    assert_eq!(tray.value(), 3);
    assert_eq!(
        ReleaseError::AboveBound { bound: 3 }.to_string(),
        "semaphore released too many times (its bound is 3)"
    );
}

#[test]
fn candy_machine_never_overfills_or_goes_negative() {
    // The candy machine: a producer refills, a consumer buys; both non-blocking.
    const MAX: usize = 5;
    let tray = Arc::new(BoundedSemaphore::new(MAX));
    let refused = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (tray, refused) = (Arc::clone(&tray), Arc::clone(&refused));
        Thread::spawn("producer", move || {
            for _ in 0..2_000 {
                match tray.release() {
                    Ok(()) => {}
                    Err(ReleaseError::AboveBound { bound }) => {
                        assert_eq!(bound, MAX);
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                assert!(tray.value() <= MAX);
            }
        })
        .unwrap()
    };
    let consumer = {
        let tray = Arc::clone(&tray);
        Thread::spawn("consumer", move || {
            let mut bought = 0;
            for _ in 0..2_000 {
                if tray.try_acquire() {
                    bought += 1;
                }
            }
            bought
        })
        .unwrap()
    };
    producer.join_timeout(PATIENCE).unwrap();
    let bought = consumer.join_timeout(PATIENCE).unwrap();
    let refills = 2_000 - refused.load(Ordering::Relaxed);
    assert_eq!(tray.value(), MAX + refills - bought);
}

#[test]
fn blocked_acquire_is_woken_by_release() {
    for bounded in [false, true] {
        let (acquire, release): (Op, Op) = if bounded {
            let s = Arc::new(BoundedSemaphore::new(1));
            assert!(s.try_acquire());
            let s2 = Arc::clone(&s);
            (
                Arc::new(move || assert!(s2.acquire_timeout(PATIENCE))),
                Arc::new(move || s.release().unwrap()),
            )
        } else {
            let s = Arc::new(Semaphore::new(0));
            let s2 = Arc::clone(&s);
            (
                Arc::new(move || s2.acquire()),
                Arc::new(move || s.release().unwrap()),
            )
        };
        let waiter = Thread::spawn("waiter", move || acquire()).unwrap();
        release();
        waiter.join_timeout(PATIENCE).unwrap();
    }
}

#[test]
fn release_n_wakes_several_waiters() {
    let s = Arc::new(Semaphore::new(0));
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let s = Arc::clone(&s);
            Thread::spawn(format!("w{i}"), move || s.acquire_timeout(PATIENCE)).unwrap()
        })
        .collect();
    s.release_n(3).unwrap();
    for w in waiters {
        assert!(w.join_timeout(PATIENCE).unwrap());
    }
    assert_eq!(s.value(), 0);
}

#[test]
fn semaphore_limits_concurrency() {
    const LIMIT: usize = 3;
    let s = Arc::new(Semaphore::new(LIMIT));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (s, inside, most) = (Arc::clone(&s), Arc::clone(&inside), Arc::clone(&most));
            Thread::spawn(format!("crawler-{i}"), move || {
                for n in 0..500 {
                    let _slot = match n % 3 {
                        0 => s.access(),
                        1 => s.access_timeout(PATIENCE).expect("a slot frees up"),
                        _ => loop {
                            if let Some(slot) = s.try_access() {
                                break slot;
                            }
                            std::thread::yield_now();
                        },
                    };
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .unwrap()
        })
        .collect();
    for t in threads {
        t.join_timeout(PATIENCE).unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= LIMIT);
    assert_eq!(s.value(), LIMIT);
}

#[test]
fn guards_give_their_unit_back() {
    let s = BoundedSemaphore::new(2);
    let a = s.access();
    let b = s.try_access().expect("one left");
    assert!(s.try_access().is_none());
    assert!(s.access_timeout(SHORT).is_none());
    assert_eq!(
        s.value(),
        0,
        "failed attempts took nothing and gave nothing back"
    );
    drop(a);
    assert_eq!(s.value(), 1);
    drop(b);
    assert_eq!(s.value(), 2);
    assert!(format!("{s:?}").contains("BoundedSemaphore"));
}

#[test]
fn guard_drop_after_a_manual_refill_does_not_pass_the_bound() {
    let s = BoundedSemaphore::new(1);
    let guard = s.access();
    s.release().unwrap(); // refilled by hand while the guard lives
    drop(guard); // must neither panic nor overfill
    assert_eq!(s.value(), 1);
}

/// A failed `try_access`/`access_timeout` used to build a guard and drop it,
/// giving back a unit that was never taken.
#[test]
fn regression_failed_try_access_gives_nothing_back() {
    let s = Semaphore::new(1);
    let _held = s.access();
    for _ in 0..3 {
        assert!(s.try_access().is_none());
        assert!(s.access_timeout(SHORT).is_none());
    }
    assert_eq!(s.value(), 0);
}

/// Thread `tid` of this process is asleep (state `S` in /proc).
fn asleep(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('S'))
        })
        .unwrap_or(false)
}

/// Issue 12's lost wake-up at thread level: two threads asleep in
/// `acquire`, two quick releases, both wake (the guard's deadline catches a
/// hang).
#[test]
fn semaphore_two_sleeping_threads_two_quick_releases_both_wake() {
    ipc_support::guarded(
        "semaphore_two_sleeping_threads_two_quick_releases_both_wake",
        PATIENCE * 3,
        || {
            for _ in 0..20 {
                let s = Arc::new(Semaphore::new(0));
                let (tx, rx) = std::sync::mpsc::channel();
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let (s, tx) = (Arc::clone(&s), tx.clone());
                        std::thread::spawn(move || {
                            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                                .unwrap();
                            s.acquire();
                        })
                    })
                    .collect();
                for _ in 0..2 {
                    let tid = rx.recv().unwrap();
                    while !asleep(tid) {
                        std::thread::yield_now();
                    }
                }
                s.release().unwrap();
                s.release().unwrap();
                for t in threads {
                    t.join().unwrap();
                }
                assert_eq!(s.value(), 0);
            }
        },
    );
}
