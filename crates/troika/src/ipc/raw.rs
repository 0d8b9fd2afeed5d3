#![cfg_attr(not(troika_loom), allow(unreachable_pub))]
//! The futex algorithms behind the process-shared locks, written once against
//! the [`Word`]/[`Env`] facade so that loom checks the code the library runs.
//!
//! # Lock word
//!
//! A lock is one word: `0` when free, otherwise the holder's pid, with bit 31
//! ([`WAITERS`]) set when some process may be asleep on it. Locking is a
//! compare-and-exchange from `0`; unlocking swaps `0` back and wakes one
//! sleeper if the bit was set (Drepper's "futexes are tricky" mutex with the
//! pid in place of the constant 1). A waiter sleeps in slices of [`SLICE`];
//! after each slice that ran out it asks [`Env::alive`] about the pid in the
//! word, and if that process is gone it replaces the dead pid with its own in
//! one compare-and-exchange, so exactly one waiter takes the lock over and
//! learns that the holder died.
//!
//! # Memory ordering
//!
//! Lock acquisition is `Acquire` and release `Release`, so what the holder
//! wrote before unlocking is visible to the next holder, in this process or
//! another (the words are in a shared mapping; the hardware orders it the
//! same way). Counters that pair with a separate waiter count use `SeqCst`
//! on both sides (a store-load handshake: either the releaser sees the
//! waiter, or the waiter sees the new count).

use super::futex::{Env, Wake, Word, remaining, spin_hint};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

/// Bit 31 of a lock word: someone may be sleeping on it.
pub const WAITERS: u32 = 1 << 31;
/// How long a lock waiter sleeps before it checks whether the holder lives.
pub const SLICE: Duration = Duration::from_millis(20);

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free or released normally.
    Clean,
    /// The previous holder died holding it; the caller took it over.
    HolderDied,
}

/// Takes the lock in `w`, waiting until `deadline` (`None`: for ever).
/// Returns `None` on timeout.
pub fn lock<W: Word + ?Sized, E: Env>(
    w: &W,
    env: &E,
    deadline: Option<Instant>,
) -> Option<Acquired> {
    let me = env.pid();
    if w.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
        return Some(Acquired::Clean);
    }
    for _ in 0..env.spins() {
        spin_hint();
        if w.load(Relaxed) == 0 && w.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
            return Some(Acquired::Clean);
        }
    }
    loop {
        let cur = w.load(Relaxed);
        if cur == 0 {
            // We have been a waiter: others may be asleep too, so keep the
            // flag set and let our unlock wake the next one.
            if w.compare_exchange(0, me | WAITERS, Acquire, Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
            continue;
        }
        if cur & WAITERS == 0
            && w.compare_exchange(cur, cur | WAITERS, Relaxed, Relaxed)
                .is_err()
        {
            continue;
        }
        let cur = cur | WAITERS;
        let slice = match remaining(deadline) {
            Some(left) if left.is_zero() => return None,
            Some(left) => left.min(SLICE),
            None => SLICE,
        };
        if w.wait(cur, Some(slice)) == Wake::TimedOut {
            let holder = cur & !WAITERS;
            if holder != me
                && !env.alive(holder)
                && w.compare_exchange(cur, me | WAITERS, Acquire, Relaxed)
                    .is_ok()
            {
                return Some(Acquired::HolderDied);
            }
        }
    }
}

/// Takes the lock only if it is free at once, or its holder is dead.
pub fn try_lock<W: Word + ?Sized, E: Env>(w: &W, env: &E) -> Option<Acquired> {
    let me = env.pid();
    match w.compare_exchange(0, me, Acquire, Relaxed) {
        Ok(_) => Some(Acquired::Clean),
        Err(cur) => {
            let holder = cur & !WAITERS;
            if holder != me
                && !env.alive(holder)
                && w.compare_exchange(cur, me | (cur & WAITERS), Acquire, Relaxed)
                    .is_ok()
            {
                Some(Acquired::HolderDied)
            } else {
                None
            }
        }
    }
}

/// Releases the lock if the caller's process holds it. Returns false if the
/// word did not name the caller (then nothing is changed).
pub fn unlock<W: Word + ?Sized, E: Env>(w: &W, env: &E) -> bool {
    let me = env.pid();
    let mut cur = w.load(Relaxed);
    loop {
        if cur & !WAITERS != me {
            return false;
        }
        match w.compare_exchange(cur, 0, Release, Relaxed) {
            Ok(_) => {
                if cur & WAITERS != 0 {
                    w.wake(1);
                }
                return true;
            }
            Err(now) => cur = now,
        }
    }
}

/// Bit 31 of a semaphore word: someone may be asleep on it. The count is
/// the low 31 bits. Count and flag share one word so that the kernel's
/// compare in `futex(WAIT)` covers both: no separate waiter counter, no
/// store-load race between them.
pub const SEM_WAITERS: u32 = 1 << 31;
/// Largest count a semaphore holds.
pub const SEM_MAX: u32 = SEM_WAITERS - 1;

/// Takes one unit of the semaphore in `w`, waiting until `deadline`.
/// Returns false on timeout.
///
/// A waiter that has slept takes its unit with the flag set again (like the
/// "locked, maybe waiters" state of a futex mutex), because it cannot know
/// whether others still sleep; the next release then wakes one of them.
pub fn sem_acquire<W: Word + ?Sized>(w: &W, deadline: Option<Instant>) -> bool {
    let mut slept = false;
    loop {
        let v = w.load(Relaxed);
        let count = v & SEM_MAX;
        if count > 0 {
            let flag = if slept { SEM_WAITERS } else { v & SEM_WAITERS };
            if w.compare_exchange(v, (count - 1) | flag, Acquire, Relaxed)
                .is_ok()
            {
                return true;
            }
            continue;
        }
        if v & SEM_WAITERS == 0
            && w.compare_exchange(v, v | SEM_WAITERS, Relaxed, Relaxed)
                .is_err()
        {
            continue;
        }
        let left = remaining(deadline);
        if left.is_some_and(|d| d.is_zero()) {
            return false;
        }
        w.wait(SEM_WAITERS, left);
        slept = true;
    }
}

/// Takes one unit if one is free now.
pub fn sem_try_acquire<W: Word + ?Sized>(w: &W) -> bool {
    let mut v = w.load(Relaxed);
    while v & SEM_MAX > 0 {
        match w.compare_exchange(v, v - 1, Acquire, Relaxed) {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
    false
}

/// Returns one unit, refusing (returning false) when the count is already
/// at `max` (at most [`SEM_MAX`]). Clears the waiter flag and wakes one
/// sleeper if it was set.
pub fn sem_release<W: Word + ?Sized>(w: &W, max: u32) -> bool {
    let max = max.min(SEM_MAX);
    let mut v = w.load(Relaxed);
    loop {
        let count = v & SEM_MAX;
        if count >= max {
            return false;
        }
        match w.compare_exchange(v, count + 1, Release, Relaxed) {
            Ok(_) => {
                if v & SEM_WAITERS != 0 {
                    w.wake(1);
                }
                return true;
            }
            Err(now) => v = now,
        }
    }
}

/// The count of a semaphore word.
pub fn sem_value<W: Word + ?Sized>(w: &W) -> u32 {
    w.load(Relaxed) & SEM_MAX
}

/// Sets the event flag and wakes every waiter.
pub fn event_set<W: Word + ?Sized>(flag: &W) {
    if flag.swap(1, Release) == 0 {
        flag.wake(u32::MAX);
    }
}

/// Waits until the flag is set or `deadline` passes; returns the flag.
pub fn event_wait<W: Word + ?Sized>(flag: &W, deadline: Option<Instant>) -> bool {
    loop {
        if flag.load(Acquire) != 0 {
            return true;
        }
        let left = remaining(deadline);
        if left.is_some_and(|d| d.is_zero()) {
            return false;
        }
        flag.wait(0, left);
    }
}

/// Bit 31 of a barrier's generation word: the barrier is broken.
pub const BROKEN: u32 = 1 << 31;

/// Why a barrier wait failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierFail {
    /// This waiter's deadline passed; it broke the barrier.
    TimedOut,
    /// The barrier was (or became) broken.
    Broken,
}

/// Waits at a barrier of `parties` with arrival counter `count` and
/// generation word `generation`. Returns `Ok(true)` for the one party that
/// arrived last (the leader).
pub fn barrier_wait<W: Word + ?Sized>(
    count: &W,
    generation: &W,
    parties: u32,
    deadline: Option<Instant>,
) -> Result<bool, BarrierFail> {
    let g = generation.load(Acquire);
    if g & BROKEN != 0 {
        return Err(BarrierFail::Broken);
    }
    let arrived = count.fetch_add(1, AcqRel) + 1;
    if arrived >= parties {
        count.store(0, Relaxed);
        let next = g.wrapping_add(1) & !BROKEN;
        return match generation.compare_exchange(g, next, Release, Acquire) {
            Ok(_) => {
                generation.wake(u32::MAX);
                Ok(true)
            }
            Err(_) => Err(BarrierFail::Broken),
        };
    }
    loop {
        let now = generation.load(Acquire);
        if now != g {
            return if now == g | BROKEN {
                Err(BarrierFail::Broken)
            } else {
                Ok(false)
            };
        }
        let left = remaining(deadline);
        if left.is_some_and(|d| d.is_zero()) {
            return match generation.compare_exchange(g, g | BROKEN, AcqRel, Acquire) {
                Ok(_) => {
                    generation.wake(u32::MAX);
                    Err(BarrierFail::TimedOut)
                }
                Err(_) => continue,
            };
        }
        generation.wait(g, left);
    }
}

/// Breaks the barrier: every current and future waiter fails until reset.
pub fn barrier_abort<W: Word + ?Sized>(generation: &W) {
    generation.fetch_or(BROKEN, AcqRel);
    generation.wake(u32::MAX);
}

/// Mends a broken barrier (call when no party is waiting).
pub fn barrier_reset<W: Word + ?Sized>(count: &W, generation: &W) {
    count.store(0, Relaxed);
    let g = generation.load(Acquire);
    generation.store(g.wrapping_add(1) & !BROKEN, Release);
    generation.wake(u32::MAX);
}
