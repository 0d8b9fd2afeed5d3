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
            // Out of time: a dead holder is still taken over (as `try_lock`
            // does), so a "try" never answers "busy" for a lock that nobody
            // alive holds.
            Some(left) if left.is_zero() => return take_over(w, env, cur, me),
            Some(left) => left.min(SLICE),
            None => SLICE,
        };
        if w.wait(cur, Some(slice)) == Wake::TimedOut
            && let Some(taken) = take_over(w, env, cur, me)
        {
            return Some(taken);
        }
    }
}

/// Replaces the holder named in `cur` (flag set) by the caller if that
/// holder is dead; `None` if it lives or the word changed meanwhile.
fn take_over<W: Word + ?Sized, E: Env>(w: &W, env: &E, cur: u32, me: u32) -> Option<Acquired> {
    let holder = cur & !WAITERS;
    (holder != me
        && !env.alive(holder)
        && w.compare_exchange(cur, me | WAITERS, Acquire, Relaxed)
            .is_ok())
    .then_some(Acquired::HolderDied)
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
/// A waiter sets the flag and sleeps while the word is exactly "count 0,
/// flag set". A release that finds the flag clears it and wakes **every**
/// sleeper (see [`sem_release`]); each re-checks, and those that find no unit
/// set the flag again and go back to sleep. Taking a unit leaves the flag as
/// it is.
pub fn sem_acquire<W: Word + ?Sized>(w: &W, deadline: Option<Instant>) -> bool {
    let mut expired = false;
    loop {
        let v = w.load(Relaxed);
        if v & SEM_MAX > 0 {
            // count - 1, flag unchanged.
            if w.compare_exchange(v, v - 1, Acquire, Relaxed).is_ok() {
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
        if expired || left.is_some_and(|d| d.is_zero()) {
            return false;
        }
        // A timed-out wait means the deadline passed: one more look for a
        // unit, then give up.
        expired = w.wait(SEM_WAITERS, left) == Wake::TimedOut;
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
/// at `max` (at most [`SEM_MAX`]). If the waiter flag was set it clears it
/// and wakes every sleeper.
///
/// Why every sleeper and not one: the flag is one bit, not a count. Were a
/// release to clear it and wake one, a second release right after would see
/// no flag and wake nobody, while a second sleeper sleeps on with a unit
/// free (the lost wake-up of issue 12, which `tests/loom_ipc.rs` keeps as a
/// fixture). Were it to keep the flag and wake one, the flag could never be
/// cleared and every later release would pay a system call. Waking all only
/// costs when there are sleepers, and the sleepers re-arm the flag.
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
                    w.wake(u32::MAX);
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

/// Bit 0 of an event word: the flag. The bits above count the sets
/// (wrapping), so a waiter that slept through a `set` and a `clear` still
/// learns that the event was set while it waited.
pub const EVENT_SET: u32 = 1;

/// Sets the event flag and wakes every waiter.
pub fn event_set<W: Word + ?Sized>(flag: &W) {
    let mut v = flag.load(Relaxed);
    loop {
        // Already set: still a release operation, so what the caller wrote
        // before `set` is visible to whoever sees the flag.
        let new = if v & EVENT_SET != 0 {
            v
        } else {
            v.wrapping_add(2) | EVENT_SET
        };
        match flag.compare_exchange(v, new, Release, Relaxed) {
            Ok(_) => {
                if new != v {
                    flag.wake(u32::MAX);
                }
                return;
            }
            Err(now) => v = now,
        }
    }
}

/// Clears the event flag (the count of sets stays).
pub fn event_clear<W: Word + ?Sized>(flag: &W) {
    flag.fetch_and(!EVENT_SET, Release);
}

/// Whether the event flag is set.
pub fn event_is_set<W: Word + ?Sized>(flag: &W) -> bool {
    flag.load(Acquire) & EVENT_SET != 0
}

/// Waits until the flag is set or `deadline` passes. Returns true if the
/// flag was set at some point during the wait — even if it was cleared again
/// before this waiter ran (Python's `Event.wait` returns `True` then too).
pub fn event_wait<W: Word + ?Sized>(flag: &W, deadline: Option<Instant>) -> bool {
    let start = flag.load(Acquire);
    if start & EVENT_SET != 0 {
        return true;
    }
    let mut expired = false;
    loop {
        let left = remaining(deadline);
        if expired || left.is_some_and(|d| d.is_zero()) {
            return false;
        }
        expired = flag.wait(start, left) == Wake::TimedOut;
        let now = flag.load(Acquire);
        if now != start {
            // Set now, or set (and cleared) since we started.
            if now & EVENT_SET != 0 || now & !EVENT_SET != start & !EVENT_SET {
                return true;
            }
        }
    }
}

/// Bit 31 of a barrier word: the barrier is broken.
pub const BROKEN: u32 = 1 << 31;
/// The low 16 bits of a barrier word: parties arrived in this round.
pub const ARRIVED: u32 = 0xFFFF;
/// Most parties a barrier can have.
pub const MAX_PARTIES: u32 = ARRIVED;
/// Bits 16..31 of a barrier word: the round (wrapping).
const ROUND: u32 = !ARRIVED & !BROKEN;
const ROUND_ONE: u32 = ARRIVED + 1;

/// Why a barrier wait failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierFail {
    /// This waiter's deadline passed; it broke the barrier.
    TimedOut,
    /// The barrier was (or became) broken.
    Broken,
}

/// Waits at a barrier of `parties` (1 to [`MAX_PARTIES`]) whose state is the
/// one word `w`: the round, the number of parties arrived in it, and the
/// broken bit. Returns this party's arrival index in `0..parties`: the one
/// that arrived last (the leader) gets `parties - 1`.
///
/// Arriving is one compare-and-exchange on the whole word, so a party
/// counts itself in exactly the round it then waits for. (With the count
/// and the round in two words, a party could read the round, then count
/// itself into the next round that the leader had just started, and leave
/// with the old round's parties: one party too many through the barrier.)
pub fn barrier_wait<W: Word + ?Sized>(
    w: &W,
    parties: u32,
    deadline: Option<Instant>,
) -> Result<u32, BarrierFail> {
    let parties = parties.clamp(1, MAX_PARTIES);
    let mut v = w.load(Acquire);
    let (round, index) = loop {
        if v & BROKEN != 0 {
            return Err(BarrierFail::Broken);
        }
        if (v & ARRIVED) + 1 >= parties {
            // Last to arrive: next round, nobody arrived in it yet.
            let next = (v & ROUND).wrapping_add(ROUND_ONE) & ROUND;
            match w.compare_exchange(v, next, AcqRel, Acquire) {
                Ok(_) => {
                    w.wake(u32::MAX);
                    return Ok(v & ARRIVED);
                }
                Err(now) => v = now,
            }
        } else {
            match w.compare_exchange(v, v + 1, AcqRel, Acquire) {
                Ok(_) => break (v & ROUND, v & ARRIVED),
                Err(now) => v = now,
            }
        }
    };
    let mut expired = false;
    loop {
        let now = w.load(Acquire);
        if now & ROUND != round {
            return Ok(index);
        }
        if now & BROKEN != 0 {
            return Err(BarrierFail::Broken);
        }
        let left = remaining(deadline);
        if expired || left.is_some_and(|d| d.is_zero()) {
            if w.compare_exchange(now, now | BROKEN, AcqRel, Acquire)
                .is_ok()
            {
                w.wake(u32::MAX);
                return Err(BarrierFail::TimedOut);
            }
            continue;
        }
        expired = w.wait(now, left) == Wake::TimedOut;
    }
}

/// The number of parties waiting in the current round of barrier word `w`.
pub fn barrier_waiting<W: Word + ?Sized>(w: &W) -> u32 {
    w.load(Relaxed) & ARRIVED
}

/// Whether the barrier word `w` is broken.
pub fn barrier_is_broken<W: Word + ?Sized>(w: &W) -> bool {
    w.load(Acquire) & BROKEN != 0
}

/// Breaks the barrier: every current and future waiter fails until reset.
pub fn barrier_abort<W: Word + ?Sized>(w: &W) {
    w.fetch_or(BROKEN, AcqRel);
    w.wake(u32::MAX);
}

/// Mends a broken barrier (call when no party is waiting): a new round with
/// nobody arrived.
pub fn barrier_reset<W: Word + ?Sized>(w: &W) {
    let mut v = w.load(Relaxed);
    loop {
        let next = (v & ROUND).wrapping_add(ROUND_ONE) & ROUND;
        match w.compare_exchange(v, next, AcqRel, Relaxed) {
            Ok(_) => break,
            Err(now) => v = now,
        }
    }
    w.wake(u32::MAX);
}
