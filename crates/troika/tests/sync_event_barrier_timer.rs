//! `troika::sync::{Event, Barrier, Timer}`.

mod ipc_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use ipc_support::wait_until;
use troika::sync::{Barrier, BarrierError, Event, Thread, Timer};

const PATIENCE: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------- Event

#[test]
fn event_set_clear_is_set() {
    let e = Event::new();
    assert!(!e.is_set());
    e.set();
    assert!(e.is_set());
    e.wait(); // returns at once
    assert!(e.wait_timeout(SHORT));
    assert!(e.wait_deadline(Instant::now()));
    e.clear();
    assert!(!e.is_set());
    assert!(format!("{e:?}").contains("Event"));
}

#[test]
fn event_wait_timeout_times_out_when_not_set() {
    let e = Event::default();
    assert!(!e.wait_timeout(SHORT));
    assert!(!e.wait_deadline(Instant::now() + SHORT));
    assert!(!e.wait_deadline(Instant::now() - Duration::from_millis(1)));
}

#[test]
fn event_set_wakes_every_waiter() {
    let e = Arc::new(Event::new());
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let e = Arc::clone(&e);
            Thread::spawn(format!("w{i}"), move || {
                if i == 0 {
                    e.wait();
                    true
                } else {
                    e.wait_timeout(PATIENCE)
                }
            })
            .unwrap()
        })
        .collect();
    e.set();
    for w in waiters {
        assert!(w.join_timeout(PATIENCE).unwrap());
    }
}

#[test]
fn event_huge_timeout_does_not_overflow() {
    let e = Arc::new(Event::new());
    let waiter = {
        let e = Arc::clone(&e);
        Thread::spawn("w", move || e.wait_timeout(Duration::MAX)).unwrap()
    };
    e.set();
    assert!(waiter.join_timeout(PATIENCE).unwrap());
}

// ---------------------------------------------------------------- Barrier

fn spawn_waiters(
    barrier: &Arc<Barrier>,
    n: usize,
    timeout: Duration,
) -> Vec<Thread<Result<usize, BarrierError>>> {
    (0..n)
        .map(|i| {
            let b = Arc::clone(barrier);
            Thread::spawn(format!("party-{i}"), move || b.wait_timeout(timeout)).unwrap()
        })
        .collect()
}

#[test]
fn zero_parties_is_a_constructor_error() {
    let err = Barrier::new(0).unwrap_err();
    assert!(err.to_string().contains("at least one party"), "{err}");
    assert!(Barrier::with_action(0, || {}).is_err());
}

#[test]
fn barrier_releases_all_parties_with_distinct_indices_round_after_round() {
    let b = Arc::new(Barrier::new(3).unwrap());
    assert_eq!(b.parties(), 3);
    for _round in 0..20 {
        let mut indices: Vec<usize> = spawn_waiters(&b, 3, PATIENCE)
            .into_iter()
            .map(|t| t.join_timeout(PATIENCE).unwrap().unwrap())
            .collect();
        indices.sort_unstable();
        assert_eq!(indices, [0, 1, 2]);
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.is_broken());
}

#[test]
fn one_party_barrier_passes_at_once() {
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait(), Ok(0));
    assert_eq!(b.wait(), Ok(0));
}

#[test]
fn n_waiting_counts_parties_in_the_current_round() {
    let b = Arc::new(Barrier::new(3).unwrap());
    let first = spawn_waiters(&b, 2, PATIENCE);
    wait_until("two waiters", || b.n_waiting() == 2);
    assert_eq!(b.wait(), Ok(2), "the last to arrive has the last index");
    for t in first {
        assert!(t.join_timeout(PATIENCE).unwrap().is_ok());
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(format!("{b:?}").contains("parties: 3"));
}

#[test]
fn a_timed_out_waiter_breaks_the_barrier_for_everyone() {
    let b = Arc::new(Barrier::new(3).unwrap());
    let patient = spawn_waiters(&b, 1, PATIENCE);
    wait_until("one waiter", || b.n_waiting() == 1);
    // The second party gives up: it gets Timeout, the first gets Broken.
    assert_eq!(b.wait_timeout(SHORT), Err(BarrierError::Timeout));
    for t in patient {
        assert_eq!(t.join_timeout(PATIENCE).unwrap(), Err(BarrierError::Broken));
    }
    assert!(b.is_broken());
    // Later waits fail at once until reset.
    assert_eq!(b.wait(), Err(BarrierError::Broken));
    assert_eq!(b.wait_timeout(PATIENCE), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.is_broken());
    let ok = spawn_waiters(&b, 3, PATIENCE);
    for t in ok {
        assert!(t.join_timeout(PATIENCE).unwrap().is_ok());
    }
    assert_eq!(BarrierError::Broken.to_string(), "the barrier is broken");
    assert!(BarrierError::Timeout.to_string().contains("timed out"));
}

#[test]
fn abort_breaks_waiting_parties() {
    let b = Arc::new(Barrier::new(3).unwrap());
    let waiting = spawn_waiters(&b, 2, PATIENCE);
    wait_until("two waiters", || b.n_waiting() == 2);
    b.abort();
    for t in waiting {
        assert_eq!(t.join_timeout(PATIENCE).unwrap(), Err(BarrierError::Broken));
    }
    assert!(b.is_broken());
    assert_eq!(b.wait(), Err(BarrierError::Broken));
}

#[test]
fn reset_breaks_the_current_round_and_reopens_the_barrier() {
    let b = Arc::new(Barrier::new(2).unwrap());
    let waiting = spawn_waiters(&b, 1, PATIENCE);
    wait_until("one waiter", || b.n_waiting() == 1);
    b.reset();
    assert_eq!(
        waiting
            .into_iter()
            .next()
            .unwrap()
            .join_timeout(PATIENCE)
            .unwrap(),
        Err(BarrierError::Broken)
    );
    assert!(!b.is_broken(), "reset leaves the barrier usable");
    let pair = spawn_waiters(&b, 2, PATIENCE);
    for t in pair {
        assert!(t.join_timeout(PATIENCE).unwrap().is_ok());
    }
    // Reset of an idle barrier is harmless.
    b.reset();
    assert!(!b.is_broken());
}

#[test]
fn a_late_waker_learns_the_outcome_of_its_own_round() {
    // More threads than parties: rounds trip back to back while earlier
    // waiters may not have woken yet. Every round must trip; only the final
    // abort may break anyone.
    let b = Arc::new(Barrier::new(2).unwrap());
    let passes = Arc::new(AtomicUsize::new(0));
    let aborted = Arc::new(Event::new());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (b, passes, aborted) = (Arc::clone(&b), Arc::clone(&passes), Arc::clone(&aborted));
            Thread::spawn(format!("t{i}"), move || {
                loop {
                    match b.wait_timeout(PATIENCE) {
                        Ok(_) => {
                            passes.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(BarrierError::Broken) => {
                            assert!(aborted.is_set(), "broken before the abort");
                            return;
                        }
                        Err(BarrierError::Timeout) => panic!("a round never filled"),
                    }
                }
            })
            .unwrap()
        })
        .collect();
    wait_until("2000 passes", || passes.load(Ordering::SeqCst) >= 2_000);
    aborted.set();
    b.abort();
    for t in threads {
        t.join_timeout(PATIENCE).unwrap();
    }
    assert_eq!(passes.load(Ordering::SeqCst) % 2, 0, "whole rounds only");
}

#[test]
fn barrier_action_runs_once_per_round_before_release() {
    let runs = Arc::new(AtomicUsize::new(0));
    let b = {
        let runs = Arc::clone(&runs);
        Arc::new(
            Barrier::with_action(3, move || {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap(),
        )
    };
    for round in 1..=5 {
        let parties: Vec<_> = (0..3)
            .map(|i| {
                let (b, runs) = (Arc::clone(&b), Arc::clone(&runs));
                Thread::spawn(format!("p{i}"), move || {
                    b.wait_timeout(PATIENCE).unwrap();
                    runs.load(Ordering::SeqCst)
                })
                .unwrap()
            })
            .collect();
        for p in parties {
            // Everyone sees the action's effect after passing.
            assert_eq!(p.join_timeout(PATIENCE).unwrap(), round);
        }
    }
}

#[test]
fn a_panicking_action_breaks_the_barrier_and_panics_its_runner() {
    let b = Arc::new(Barrier::with_action(2, || panic!("action failed")).unwrap());
    let parties = spawn_waiters(&b, 2, PATIENCE);
    let mut broken = 0;
    let mut panicked = 0;
    for p in parties {
        match p.join_timeout(PATIENCE) {
            Ok(Err(BarrierError::Broken)) => broken += 1,
            Err(e) => {
                let e = match e {
                    troika::sync::JoinTimeoutError::Failed(e) => e,
                    other => panic!("unexpected {other}"),
                };
                assert_eq!(e.panic_message(), Some("action failed"));
                panicked += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((broken, panicked), (1, 1));
    assert!(b.is_broken());
}

/// A barrier whose action can reach the barrier itself.
fn barrier_with_self_action(
    parties: usize,
    action: impl Fn(&Barrier) + Send + Sync + 'static,
) -> Arc<Barrier> {
    let cell: Arc<OnceLock<Weak<Barrier>>> = Arc::new(OnceLock::new());
    let b = {
        let cell = Arc::clone(&cell);
        Arc::new(
            Barrier::with_action(parties, move || {
                if let Some(b) = cell.get().and_then(Weak::upgrade) {
                    action(&b);
                }
            })
            .unwrap(),
        )
    };
    cell.set(Arc::downgrade(&b)).unwrap();
    b
}

#[test]
fn the_action_may_use_its_own_barrier() {
    let seen = Arc::new(AtomicUsize::new(usize::MAX));
    let b = {
        let seen = Arc::clone(&seen);
        barrier_with_self_action(2, move |b| {
            // No deadlock: the action runs outside the barrier's lock.
            seen.store(
                b.n_waiting() + 10 * usize::from(b.is_broken()),
                Ordering::SeqCst,
            );
        })
    };
    for t in spawn_waiters(&b, 2, PATIENCE) {
        assert!(t.join_timeout(PATIENCE).unwrap().is_ok());
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "both parties counted, not broken"
    );
}

#[test]
fn an_action_that_aborts_breaks_the_whole_round() {
    let b = barrier_with_self_action(2, Barrier::abort);
    for t in spawn_waiters(&b, 2, PATIENCE) {
        assert_eq!(t.join_timeout(PATIENCE).unwrap(), Err(BarrierError::Broken));
    }
    assert!(b.is_broken());
}

#[test]
fn parties_arriving_during_the_action_join_the_next_round() {
    // The action of round 1 lets the round-2 parties arrive while it runs,
    // and waits until both of them are queued behind it.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let rounds = Arc::new(AtomicUsize::new(0));
    let b = {
        let rounds = Arc::clone(&rounds);
        barrier_with_self_action(2, move |_| {
            if rounds.fetch_add(1, Ordering::SeqCst) == 0 {
                let rx = go_rx.lock().unwrap();
                rx.recv_timeout(PATIENCE).unwrap();
            }
        })
    };
    let first = spawn_waiters(&b, 2, PATIENCE);
    wait_until("the first action to start", || {
        rounds.load(Ordering::SeqCst) == 1
    });
    let second = spawn_waiters(&b, 2, PATIENCE);
    go_tx.send(()).unwrap();
    for t in first.into_iter().chain(second) {
        assert!(t.join_timeout(PATIENCE).unwrap().is_ok());
    }
    assert_eq!(rounds.load(Ordering::SeqCst), 2, "one action per round");
    assert!(!b.is_broken());
}

// ---------------------------------------------------------------- Timer

#[test]
fn timer_runs_its_closure_after_the_delay() {
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let delay = Duration::from_millis(30);
    let t = Timer::start(delay, move || tx.send(Instant::now()).unwrap()).unwrap();
    assert_eq!(t.delay(), delay);
    assert!(t.name().starts_with("Thread-"));
    let fired_at = rx.recv_timeout(PATIENCE).unwrap();
    assert!(fired_at.duration_since(started) >= delay, "never early");
    assert!(!t.cancel(), "too late to cancel");
    assert!(t.wait_timeout(PATIENCE));
    assert!(!t.is_alive());
    assert_eq!(t.join(), Ok(true));
}

#[test]
fn cancelled_timer_never_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let t = {
        let ran = Arc::clone(&ran);
        Timer::start_named("alarm", Duration::from_secs(3600), move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
    };
    assert_eq!(t.name(), "alarm");
    assert!(t.is_alive());
    assert!(format!("{t:?}").contains("Waiting"));
    assert!(t.cancel());
    assert!(!t.cancel(), "second cancel does nothing");
    // Cancelling wakes the timer thread at once: no hour-long wait.
    assert_eq!(t.join(), Ok(false));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn timer_wait_timeout_times_out_while_waiting() {
    let t = Timer::start(Duration::from_secs(3600), || {}).unwrap();
    assert!(!t.wait_timeout(SHORT));
    assert!(t.cancel());
    assert!(t.wait_timeout(PATIENCE));
}

#[test]
fn timer_with_zero_delay_and_huge_delay() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Timer::start(Duration::ZERO, move || tx.send(()).unwrap()).unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(t.join(), Ok(true));
    let t = Timer::start(Duration::MAX, || {}).unwrap();
    assert!(t.cancel());
    assert_eq!(t.join(), Ok(false));
}

#[test]
fn a_panicking_timer_reports_the_panic() {
    let t = Timer::start(Duration::ZERO, || panic!("timer boom")).unwrap();
    let err = t.join().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("timer boom"));
}
