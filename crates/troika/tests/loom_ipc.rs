//! Loom models of the futex algorithms behind `troika::ipc` (the same code the
//! library runs, over loom's atomics and an emulated futex).
//!
//! Run with:
//! `RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --test loom_ipc`

#![cfg(troika_loom)]

use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use troika::ipc::futex::model::{LoomWord, ProcessTable};
use troika::ipc::raw::{self, Acquired};

#[test]
fn lock_excludes_and_wakes() {
    loom::model(|| {
        let word = Arc::new(LoomWord::new_patient(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let table = ProcessTable::new(2);
        let handles: Vec<_> = (1..=2)
            .map(|pid| {
                let (word, inside, env) = (word.clone(), inside.clone(), table.view(pid));
                loom::thread::spawn(move || {
                    assert_eq!(raw::lock(&*word, &env, None), Some(Acquired::Clean));
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                    inside.fetch_sub(1, SeqCst);
                    assert!(raw::unlock(&*word, &env));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// The owner-dead path spins (time out, check the holder, sleep again), so
/// these models need more branches than loom's default and a bound on
/// preemptions.
fn spinning_model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    b.preemption_bound = Some(2);
    b.check(f);
}

#[test]
fn a_dead_holder_is_taken_over_exactly_once() {
    spinning_model(|| {
        let word = Arc::new(LoomWord::new(0));
        let table = ProcessTable::new(3);
        let holder = table.view(1);
        // Process 1 takes the lock and dies holding it.
        assert_eq!(raw::lock(&*word, &holder, None), Some(Acquired::Clean));
        holder.die();
        let died = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (2..=3)
            .map(|pid| {
                let (word, env, died, inside) =
                    (word.clone(), table.view(pid), died.clone(), inside.clone());
                loom::thread::spawn(move || {
                    let got = raw::lock(&*word, &env, None).unwrap();
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                    if got == Acquired::HolderDied {
                        died.fetch_add(1, SeqCst);
                    }
                    inside.fetch_sub(1, SeqCst);
                    assert!(raw::unlock(&*word, &env));
                })
            })
            .collect();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(
            died.load(SeqCst),
            1,
            "exactly one waiter learns of the death"
        );
    });
}

#[test]
fn a_holder_dying_while_a_waiter_sleeps_is_detected() {
    spinning_model(|| {
        let word = Arc::new(LoomWord::new(0));
        let table = ProcessTable::new(2);
        let holder = table.view(1);
        assert_eq!(raw::lock(&*word, &holder, None), Some(Acquired::Clean));
        let (w2, env) = (word.clone(), table.view(2));
        let waiter = loom::thread::spawn(move || {
            let got = raw::lock(&*w2, &env, None);
            assert!(raw::unlock(&*w2, &env));
            got
        });
        holder.die();
        assert_eq!(waiter.join().unwrap(), Some(Acquired::HolderDied));
    });
}

#[test]
fn a_released_lock_is_not_reported_as_a_death() {
    spinning_model(|| {
        let word = Arc::new(LoomWord::new(0));
        let table = ProcessTable::new(2);
        let holder = table.view(1);
        assert_eq!(raw::lock(&*word, &holder, None), Some(Acquired::Clean));
        let (w2, env) = (word.clone(), table.view(2));
        let waiter = loom::thread::spawn(move || {
            let got = raw::lock(&*w2, &env, None);
            assert!(raw::unlock(&*w2, &env));
            got
        });
        assert!(raw::unlock(&*word, &holder));
        assert_eq!(waiter.join().unwrap(), Some(Acquired::Clean));
    });
}

#[test]
fn semaphore_never_loses_a_wakeup() {
    loom::model(|| {
        let word = Arc::new(LoomWord::new_patient(0));
        let w2 = word.clone();
        let t = loom::thread::spawn(move || assert!(raw::sem_acquire(&*w2, None)));
        assert!(raw::sem_release(&*word, raw::SEM_MAX));
        t.join().unwrap();
        assert_eq!(raw::sem_value(&*word), 0);
    });
}

#[test]
fn semaphore_wakes_every_sleeper_in_turn() {
    // Three threads: bound the preemptions to keep the search short.
    spinning_model(|| {
        let word = Arc::new(LoomWord::new_patient(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let w = word.clone();
                loom::thread::spawn(move || assert!(raw::sem_acquire(&*w, None)))
            })
            .collect();
        assert!(raw::sem_release(&*word, raw::SEM_MAX));
        assert!(raw::sem_release(&*word, raw::SEM_MAX));
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(raw::sem_value(&*word), 0);
    });
}

#[test]
fn bounded_semaphore_caps_its_count() {
    loom::model(|| {
        let word = Arc::new(LoomWord::new_patient(1));
        let w2 = word.clone();
        let t = loom::thread::spawn(move || raw::sem_release(&*w2, 1));
        let mine = raw::sem_try_acquire(&*word);
        let released = t.join().unwrap();
        // Either order is fine, but the count never passes 1.
        assert!(raw::sem_value(&*word) <= 1);
        if !mine {
            assert!(!released);
        }
    });
}

#[test]
fn event_wakes_its_waiter() {
    loom::model(|| {
        let flag = Arc::new(LoomWord::new_patient(0));
        let f2 = flag.clone();
        let t = loom::thread::spawn(move || assert!(raw::event_wait(&*f2, None)));
        raw::event_set(&*flag);
        t.join().unwrap();
    });
}

#[test]
fn barrier_releases_both_with_one_leader() {
    loom::model(|| {
        let count = Arc::new(LoomWord::new_patient(0));
        let generation = Arc::new(LoomWord::new_patient(0));
        let (c2, g2) = (count.clone(), generation.clone());
        let t = loom::thread::spawn(move || raw::barrier_wait(&*c2, &*g2, 2, None).unwrap());
        let mine = raw::barrier_wait(&*count, &*generation, 2, None).unwrap();
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs, "exactly one leader");
    });
}
