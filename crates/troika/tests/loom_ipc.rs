//! Loom models of the futex algorithms behind `troika::ipc` (the same code the
//! library runs, over loom's atomics and an emulated futex that behaves as the
//! kernel's: see `src/ipc/README.md`).
//!
//! The `fixture_*` modules keep the old, buggy algorithms of issue 12, and
//! the `the_model_catches_*` tests assert that the model finds their bugs
//! (each in a child process: see [`model_failure`]): a permanent proof that
//! the emulated futex can express those interleavings.
//!
//! Run with:
//! `RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --test loom_ipc`

#![cfg(troika_loom)]

use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};
use troika::ipc::futex::Word;
use troika::ipc::futex::model::{LoomWord, ProcessTable};
use troika::ipc::raw::{self, Acquired, BarrierFail};
use troika::process::handshake;

const FIXTURE_CHILD: &str = "TROIKA_LOOM_FIXTURE_CHILD";

/// Runs `model` — a model of an old, buggy algorithm — in a child process
/// (this test binary re-executed with `test`, the calling test's name, as
/// the exact filter) and returns the child's output if loom failed there
/// (a panic, a deadlock, or a branch explosion from a livelock), `None` if
/// the model passed. A child, not `catch_unwind`: when loom reports a
/// deadlock, unwinding drops loom objects whose destructors panic again,
/// and the process aborts.
fn model_failure(test: &str, model: impl FnOnce()) -> Option<String> {
    if std::env::var_os(FIXTURE_CHILD).is_some() {
        model();
        // The model passed: say so by a clean exit.
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(FIXTURE_CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success()).then_some(text)
}

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
fn lock_wakes_each_of_two_sleepers() {
    // The holder and two sleepers whose timed slices never time out: each
    // unlock's wake(1) must reach a sleeper that still needs it.
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let word = Arc::new(LoomWord::new_patient(0));
        let table = ProcessTable::new(3);
        let holder = table.view(1);
        assert_eq!(raw::lock(&*word, &holder, None), Some(Acquired::Clean));
        let ts: Vec<_> = (2..=3)
            .map(|pid| {
                let (word, env) = (word.clone(), table.view(pid));
                loom::thread::spawn(move || {
                    assert_eq!(raw::lock(&*word, &env, None), Some(Acquired::Clean));
                    assert!(raw::unlock(&*word, &env));
                })
            })
            .collect();
        assert!(raw::unlock(&*word, &holder));
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(word.load_for_test(), 0);
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
        let word = Arc::new(LoomWord::new_patient(0));
        let w2 = word.clone();
        let t = loom::thread::spawn(move || raw::barrier_wait(&*w2, 2, None).unwrap());
        let mine = raw::barrier_wait(&*word, 2, None).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 1, "arrival indices 0 and 1, one leader");
    });
}

/// The old semaphore: a release cleared the waiter flag and woke one
/// sleeper, so a second release right after saw no flag and woke nobody.
mod fixture_old_semaphore {
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use troika::ipc::futex::Word;
    use troika::ipc::raw::{SEM_MAX, SEM_WAITERS};

    pub(super) fn acquire<W: Word>(w: &W) {
        let mut slept = false;
        loop {
            let v = w.load(Relaxed);
            let count = v & SEM_MAX;
            if count > 0 {
                let flag = if slept { SEM_WAITERS } else { v & SEM_WAITERS };
                if w.compare_exchange(v, (count - 1) | flag, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if v & SEM_WAITERS == 0
                && w.compare_exchange(v, v | SEM_WAITERS, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            w.wait(SEM_WAITERS, None);
            slept = true;
        }
    }

    pub(super) fn release<W: Word>(w: &W) {
        let mut v = w.load(Relaxed);
        loop {
            let count = v & SEM_MAX;
            match w.compare_exchange(v, count + 1, Release, Relaxed) {
                Ok(_) => {
                    if v & SEM_WAITERS != 0 {
                        w.wake(1);
                    }
                    return;
                }
                Err(now) => v = now,
            }
        }
    }
}

/// Two sleepers, two releases: the model on `acquire`/`release`.
fn two_sleepers_two_releases(acquire: fn(&LoomWord), release: fn(&LoomWord)) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(move || {
        let word = Arc::new(LoomWord::new_patient(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let w = word.clone();
                loom::thread::spawn(move || acquire(&w))
            })
            .collect();
        release(&word);
        release(&word);
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(raw::sem_value(&*word), 0);
    });
}

#[test]
fn the_model_catches_the_old_semaphore_lost_wakeup() {
    let failure = model_failure("the_model_catches_the_old_semaphore_lost_wakeup", || {
        two_sleepers_two_releases(
            fixture_old_semaphore::acquire,
            fixture_old_semaphore::release,
        )
    })
    .expect("the futex model no longer sees the lost wake-up of the old semaphore");
    // The second sleeper sleeps for ever: loom reports a deadlock.
    assert!(failure.contains("deadlock"), "{failure}");
}

#[test]
fn semaphore_two_sleepers_two_releases_both_wake() {
    two_sleepers_two_releases(
        |w| assert!(raw::sem_acquire(w, None)),
        |w| assert!(raw::sem_release(w, raw::SEM_MAX)),
    );
}

#[test]
fn bounded_semaphore_two_sleepers_two_releases_both_wake() {
    // A BoundedSemaphore of 2, both units taken.
    two_sleepers_two_releases(
        |w| assert!(raw::sem_acquire(w, None)),
        |w| assert!(raw::sem_release(w, 2)),
    );
}

#[test]
fn semaphore_survives_spurious_wakeups_and_timeouts() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(|| {
        let word = Arc::new(LoomWord::new_spurious(0));
        let w2 = word.clone();
        // A timed acquire that may time out at any point, and an untimed
        // one whose waits may return spuriously.
        let timed = loom::thread::spawn(move || raw::sem_acquire(&*w2, far()));
        let w3 = word.clone();
        let untimed = loom::thread::spawn(move || assert!(raw::sem_acquire(&*w3, None)));
        assert!(raw::sem_release(&*word, raw::SEM_MAX));
        assert!(raw::sem_release(&*word, raw::SEM_MAX));
        let got = timed.join().unwrap();
        untimed.join().unwrap();
        // A unit is lost to nobody: either the timed one took one, or one
        // is still there.
        assert_eq!(raw::sem_value(&*word), u32::from(!got));
    });
}

/// The old event: `set` stored 1 and `clear` 0, and a waiter slept while the
/// word was 0 — so a set and a clear in a row could pass a sleeper by.
mod fixture_old_event {
    use std::sync::atomic::Ordering::{Acquire, Release};
    use troika::ipc::futex::Word;

    pub(super) fn set<W: Word>(w: &W) {
        if w.swap(1, Release) == 0 {
            w.wake(u32::MAX);
        }
    }
    pub(super) fn clear<W: Word>(w: &W) {
        w.store(0, Release);
    }
    pub(super) fn wait<W: Word>(w: &W) {
        while w.load(Acquire) == 0 {
            w.wait(0, None);
        }
    }
}

/// A waiter that is asleep when the event is set must return, even if the
/// flag is cleared right after. `fns` = (set, clear, wait).
fn set_then_clear_wakes_the_sleeper(set: fn(&LoomWord), clear: fn(&LoomWord), wait: fn(&LoomWord)) {
    loom::model(move || {
        let word = Arc::new(LoomWord::new_patient(0));
        let w2 = word.clone();
        let t = loom::thread::spawn(move || wait(&w2));
        // Only once the waiter sleeps (else the set is simply early).
        while word.queued_for_test() == 0 {
            loom::thread::yield_now();
        }
        set(&word);
        clear(&word);
        t.join().unwrap();
    });
}

#[test]
fn the_model_catches_the_old_event_set_clear_race() {
    let failure = model_failure("the_model_catches_the_old_event_set_clear_race", || {
        set_then_clear_wakes_the_sleeper(
            fixture_old_event::set,
            fixture_old_event::clear,
            fixture_old_event::wait,
        )
    })
    .expect("the futex model no longer sees the old event pass a sleeper by");
    assert!(failure.contains("deadlock"), "{failure}");
}

#[test]
fn event_set_then_clear_wakes_the_sleeper() {
    set_then_clear_wakes_the_sleeper(raw::event_set, raw::event_clear, |w| {
        assert!(raw::event_wait(w, None))
    });
}

/// A deadline that only the model's timeouts reach (loom lets a timed wait
/// time out at any point).
fn far() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(3600))
}

/// The old barrier: the arrival count and the round in two words, so a
/// party could read the round, then count itself into the next round that
/// the leader had just opened, and leave with the old round.
mod fixture_old_barrier {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    use std::time::Duration;
    use troika::ipc::futex::{Wake, Word};

    const BROKEN: u32 = 1 << 31;

    /// `Some(leader)`, or `None` when broken or timed out.
    pub(super) fn wait<W: Word>(count: &W, generation: &W, parties: u32) -> Option<bool> {
        let g = generation.load(Acquire);
        if g & BROKEN != 0 {
            return None;
        }
        let arrived = count.fetch_add(1, AcqRel) + 1;
        if arrived >= parties {
            count.store(0, Relaxed);
            let next = g.wrapping_add(1) & !BROKEN;
            return match generation.compare_exchange(g, next, Release, Acquire) {
                Ok(_) => {
                    generation.wake(u32::MAX);
                    Some(true)
                }
                Err(_) => None,
            };
        }
        let mut expired = false;
        loop {
            let now = generation.load(Acquire);
            if now != g {
                return if now == g | BROKEN { None } else { Some(false) };
            }
            if expired {
                if generation
                    .compare_exchange(g, g | BROKEN, AcqRel, Acquire)
                    .is_ok()
                {
                    generation.wake(u32::MAX);
                    return None;
                }
                continue;
            }
            expired = generation.wait(g, Some(Duration::from_secs(3600))) == Wake::TimedOut;
        }
    }
}

/// Parties = 2 and three threads whose waits may time out: every pass must
/// belong to a full round (one leader per two passes). `wait(a, b)` returns
/// `Some(leader)` for a pass, `None` for a waiter that timed out or found the
/// barrier broken.
fn three_threads_at_a_barrier_of_two(wait: fn(&LoomWord, &LoomWord) -> Option<bool>) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(move || {
        let a = Arc::new(LoomWord::new(0));
        let c = Arc::new(LoomWord::new(0));
        let ts: Vec<_> = (0..3)
            .map(|_| {
                let (a, c) = (a.clone(), c.clone());
                loom::thread::spawn(move || wait(&a, &c))
            })
            .collect();
        let results: Vec<Option<bool>> = ts.into_iter().map(|t| t.join().unwrap()).collect();
        let passed = results.iter().filter(|r| r.is_some()).count();
        let leaders = results.iter().filter(|r| **r == Some(true)).count();
        assert_eq!(
            passed,
            2 * leaders,
            "a party passed without a full round: {results:?}"
        );
    });
}

#[test]
fn the_model_catches_the_old_barrier_extra_party() {
    let failure = model_failure("the_model_catches_the_old_barrier_extra_party", || {
        three_threads_at_a_barrier_of_two(|count, generation| {
            fixture_old_barrier::wait(count, generation, 2)
        })
    })
    .expect("the model no longer sees the old barrier let a third party through");
    assert!(
        failure.contains("a party passed without a full round"),
        "{failure}"
    );
}

#[test]
fn barrier_lets_no_extra_party_through() {
    three_threads_at_a_barrier_of_two(|w, _| match raw::barrier_wait(w, 2, far()) {
        Ok(index) => Some(index == 1),
        Err(BarrierFail::TimedOut | BarrierFail::Broken) => None,
    });
}

#[test]
fn lock_excludes_with_spurious_wakeups_and_timeouts() {
    spinning_model(|| {
        let word = Arc::new(LoomWord::new_spurious(0));
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
        assert_eq!(word.load_for_test(), 0);
    });
}

#[test]
fn event_timed_wait_ends_under_spurious_wakeups_and_timeouts() {
    // The wait ends (set seen, or timed out) in every interleaving: no
    // livelock on spurious returns, no sleep past a set.
    spinning_model(|| {
        let flag = Arc::new(LoomWord::new_spurious(0));
        let f2 = flag.clone();
        let t = loom::thread::spawn(move || raw::event_wait(&*f2, far()));
        raw::event_set(&*flag);
        t.join().unwrap();
        assert!(raw::event_is_set(&*flag));
    });
}

// The process pool's rings (`process/channel.rs`): the doorbell and room
// handshakes of `troika::process::handshake`, the code the rings run.

/// The ops of a ring's writer and reader that the model swaps: the
/// library's handshake, or a fixture's broken one.
struct RingOps {
    publish: fn(&LoomWord, &LoomWord, u32) -> bool,
    sleep_begin: fn(&LoomWord, &LoomWord) -> u32,
    advance_head: fn(&LoomWord, &LoomWord, u32),
    ask_for_room: fn(&LoomWord, &LoomWord) -> (u32, u32),
}

const LIBRARY_RING: RingOps = RingOps {
    publish: handshake::publish,
    sleep_begin: handshake::sleep_begin,
    advance_head: handshake::advance_head,
    ask_for_room: handshake::ask_for_room,
};

/// One ring's shared words: its control block, and the doorbell (the byte
/// count of the reader's descriptor, which `poll` waits on).
struct RingWords {
    tail: LoomWord,
    head: LoomWord,
    sleeping: LoomWord,
    room_wanted: LoomWord,
    doorbell: LoomWord,
}

/// A writer sends `messages` one-unit messages through a ring of `capacity`
/// units to a reader; both sleep when they must (the writer for room, the
/// reader on its doorbell), with waits that return only when woken, so any
/// lost wake-up is a deadlock loom reports. Every message must arrive.
/// Bounded as the other models are (two preemptions). With three, loom
/// 0.7 reports a deadlock whose history the C11 model forbids: the
/// reader's `sleep_begin` and the writer's `publish` of the last message
/// both read stale values (the tail before the publish, the flag before
/// the request) although their `SeqCst` fences must be ordered one way or
/// the other, which makes one of them see the other's store. loom's
/// README lists its partial model of `SeqCst`; the execution was read from
/// a trace of the model (see `crates/troika/src/ipc/README.md`).
fn ring_delivers_every_message(ops: RingOps, capacity: u32, messages: u32) {
    let ops = std::sync::Arc::new(ops);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(move || {
        let words = Arc::new(RingWords {
            tail: LoomWord::new_patient(0),
            head: LoomWord::new_patient(0),
            sleeping: LoomWord::new_patient(0),
            room_wanted: LoomWord::new_patient(0),
            doorbell: LoomWord::new_patient(0),
        });
        let (w, o) = (words.clone(), ops.clone());
        let writer = loom::thread::spawn(move || {
            let mut tail = 0u32;
            for _ in 0..messages {
                // Wait for room, as `RingWriter::wait_for_room` does.
                while tail.wrapping_sub(w.head.load(SeqCst)) >= capacity {
                    let (before, now) = (o.ask_for_room)(&w.head, &w.room_wanted);
                    if tail.wrapping_sub(now) < capacity {
                        handshake::room_found(&w.room_wanted);
                        break;
                    }
                    handshake::sleep_for_room(&w.head, before, None);
                }
                tail += 1;
                if (o.publish)(&w.tail, &w.sleeping, tail) {
                    w.doorbell.fetch_add(1, SeqCst);
                    w.doorbell.wake(1);
                }
            }
        });
        let mut head = 0u32;
        while head < messages {
            if words.tail.load(SeqCst) != head {
                head += 1;
                (ops.advance_head)(&words.head, &words.room_wanted, head);
                continue;
            }
            // Empty: sleep on the doorbell, as `FrameReader` does.
            if (ops.sleep_begin)(&words.sleeping, &words.tail) != head {
                handshake::sleep_end(&words.sleeping);
                continue;
            }
            while words.doorbell.swap(0, SeqCst) == 0 {
                words.doorbell.wait(0, None);
            }
            handshake::sleep_end(&words.sleeping);
        }
        writer.join().unwrap();
    });
}

#[test]
fn ring_doorbell_and_room_lose_no_wakeup() {
    ring_delivers_every_message(LIBRARY_RING, 1, 3);
}

#[test]
fn ring_with_room_to_spare_loses_no_wakeup() {
    ring_delivers_every_message(LIBRARY_RING, 2, 3);
}

/// Handshakes with one step out of place, each a lost wake-up.
mod fixture_broken_ring {
    use super::*;

    /// The reader looks at the tail before it asks for the doorbell: a
    /// message published in between rings nobody.
    pub(super) fn sleep_begin_looking_first(sleeping: &LoomWord, tail: &LoomWord) -> u32 {
        let seen = tail.load(SeqCst);
        sleeping.store(1, SeqCst);
        seen
    }

    /// The reader looks for a writer waiting for room before it frees the
    /// room: a writer asking in between sleeps for ever.
    pub(super) fn advance_head_looking_first(head: &LoomWord, room_wanted: &LoomWord, new: u32) {
        let wanted = room_wanted.load(SeqCst) != 0;
        head.store(new, SeqCst);
        if wanted {
            head.wake(1);
        }
    }
}

#[test]
fn the_model_catches_a_reader_that_looks_before_asking_for_the_doorbell() {
    let failure = model_failure(
        "the_model_catches_a_reader_that_looks_before_asking_for_the_doorbell",
        || {
            ring_delivers_every_message(
                RingOps {
                    sleep_begin: fixture_broken_ring::sleep_begin_looking_first,
                    ..LIBRARY_RING
                },
                1,
                2,
            )
        },
    )
    .expect("the model no longer sees a doorbell rung for nobody");
    assert!(failure.contains("deadlock"), "{failure}");
}

#[test]
fn the_model_catches_a_reader_that_looks_for_a_waiting_writer_too_early() {
    let failure = model_failure(
        "the_model_catches_a_reader_that_looks_for_a_waiting_writer_too_early",
        || {
            ring_delivers_every_message(
                RingOps {
                    advance_head: fixture_broken_ring::advance_head_looking_first,
                    ..LIBRARY_RING
                },
                1,
                2,
            )
        },
    )
    .expect("the model no longer sees a writer left waiting for room");
    assert!(failure.contains("deadlock"), "{failure}");
}
