//! A byte ring in shared memory carrying length-prefixed frames, guarded by a
//! process-shared lock, with two futex "condition" words. The engine under
//! [`Queue`](super::Queue) (many producers and consumers) and
//! [`Pipe`](super::Pipe) (one ring per direction).
//!
//! # Commit by one store
//!
//! The producer side is one 64-bit word, `put_state` = (tail byte position,
//! number of puts), and the consumer side another, `get_state` = (head byte
//! position, number of gets); positions wrap at 2^32 and the capacity is at
//! most 2^31, so `tail - head` is the number of bytes in use and `puts - gets`
//! the number of frames. A put copies its frame behind the tail and then
//! publishes it with one store of `put_state`; a get copies its frame out and
//! then retires it with one store of `get_state`. So a process killed at any
//! instant inside an operation leaves the ring consistent: the frame is either
//! wholly in the queue or not at all, and the next process to take the lock
//! (told that the holder died) goes on as if nothing happened.
//!
//! # Waiting
//!
//! A side that cannot proceed reads the sequence word it waits on
//! (`not_empty` or `not_full`) under the lock, counts itself in the matching
//! waiter counter, unlocks and sleeps on the word with `futex(WAIT, seen)`.
//! The other side bumps the sequence word under the lock and wakes a sleeper
//! if the counter is non-zero. A bump between the unlock and the sleep makes
//! the sleep return at once (the kernel compares the word), so no wake-up is
//! lost. Before sleeping, a consumer spins briefly on `put_state`: a futex
//! wake-up across cores costs tens of microseconds on this machine, a spin
//! that sees the frame arrive costs less than one.

use super::error::{IpcError, Result};
use super::futex::{Wake, Word, remaining, spin_hint};
use super::locks::{lock_word, unlock_word};
use super::shm::{Segment, ShmState};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Bytes taken by [`RingState`] (padded), before the ring's data.
pub(crate) const STATE_LEN: usize = 64;
/// Largest data area of one ring.
pub(crate) const MAX_CAPACITY: usize = 1 << 31;
/// How long a consumer spins before it sleeps: long enough to catch a reply
/// from a process running on another core, short enough that an idle
/// consumer costs nothing.
const SPIN_FOR: Duration = Duration::from_micros(20);

#[repr(C)]
pub(crate) struct RingState {
    lock: AtomicU32,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    get_waiters: AtomicU32,
    put_waiters: AtomicU32,
    capacity: AtomicU32,
    max_items: AtomicU32,
    _pad: AtomicU32,
    put_state: AtomicU64,
    get_state: AtomicU64,
}
// SAFETY: repr(C), atomics only, valid for any bit pattern.
unsafe impl ShmState for RingState {}
const _: () = assert!(std::mem::size_of::<RingState>() <= STATE_LEN);

fn pack(pos: u32, count: u32) -> u64 {
    u64::from(pos) | (u64::from(count) << 32)
}
fn unpack(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

/// A view of one ring inside a segment.
pub(crate) struct Ring<'a> {
    st: &'a RingState,
    data: NonNull<u8>,
    cap: u32,
}

struct Held<'a>(&'a AtomicU32);
impl Drop for Held<'_> {
    fn drop(&mut self) {
        unlock_word(self.0);
    }
}

/// Sets up a new ring at `offset` in a fresh (zeroed) segment.
pub(crate) fn init(seg: &Segment, offset: usize, capacity: u32, max_items: u32) -> Result<()> {
    let st = seg
        .state::<RingState>(offset)
        .ok_or_else(|| IpcError::InvalidHandle("ring state outside the segment".into()))?;
    st.capacity.store(capacity, Relaxed);
    st.max_items.store(max_items.max(1), Release);
    Ok(())
}

impl<'a> Ring<'a> {
    /// The ring at `offset` in `seg`, validated against the segment's size.
    pub(crate) fn at(seg: &'a Segment, offset: usize) -> Result<Ring<'a>> {
        let bad = || IpcError::InvalidHandle("ring does not fit its segment".into());
        let st = seg.state::<RingState>(offset).ok_or_else(bad)?;
        let cap = st.capacity.load(Acquire);
        if cap == 0 || cap as usize > MAX_CAPACITY {
            return Err(bad());
        }
        let data = seg
            .bytes(offset + STATE_LEN, cap as usize)
            .ok_or_else(bad)?;
        Ok(Ring { st, data, cap })
    }

    /// Data bytes of the ring.
    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Most frames the ring holds at once.
    pub(crate) fn max_items(&self) -> u32 {
        self.st.max_items.load(Relaxed).max(1)
    }

    /// Frames in the ring (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let (_, puts) = unpack(self.st.put_state.load(Acquire));
        let (_, gets) = unpack(self.st.get_state.load(Acquire));
        puts.wrapping_sub(gets) as usize
    }

    fn lock(&self) -> Held<'a> {
        let w = &self.st.lock;
        while lock_word(w, None).is_none() {}
        Held(w)
    }

    fn used(&self) -> (u32, u32, u32, u32) {
        let (tail, puts) = unpack(self.st.put_state.load(Acquire));
        let (head, gets) = unpack(self.st.get_state.load(Acquire));
        (tail, puts, head, gets)
    }

    /// Copies `src` into the ring at byte position `pos` (wrapping).
    ///
    /// Caller holds the lock and has checked that the bytes are free.
    fn copy_in(&self, pos: u32, src: &[u8]) {
        let cap = self.cap as usize;
        let at = (pos % self.cap) as usize;
        let first = src.len().min(cap - at);
        // SAFETY: `at + first <= cap` and `src.len() - first <= cap`, all
        // inside the data area (validated in `at`); under the ring lock no
        // other process touches the free region we write; the source is a
        // private slice, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(at), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.data.as_ptr(),
                src.len() - first,
            );
        }
    }

    /// Copies `dst.len()` bytes out of the ring from position `pos` (wrapping).
    fn copy_out(&self, pos: u32, dst: &mut [u8]) {
        let cap = self.cap as usize;
        let at = (pos % self.cap) as usize;
        let first = dst.len().min(cap - at);
        // SAFETY: as in `copy_in`; the caller checked that `dst.len()` bytes
        // from `pos` are committed frame bytes, which no one writes while the
        // lock is held.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    /// Appends one frame. Waits for room until `deadline` (then
    /// `TimedOut`), sleeping at most `slice` at a time; `check` runs each
    /// time the put would wait — with `true` after a sleep that ran out its
    /// slice — and its error ends the put (a pipe uses it to notice a
    /// departed peer at once, and a dead one after a slice).
    pub(crate) fn put(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        slice: Option<Duration>,
        check: &dyn Fn(bool) -> Result<()>,
    ) -> Result<()> {
        let need = msg.len().saturating_add(4);
        if need > self.capacity() {
            return Err(IpcError::TooLarge {
                len: need,
                capacity: self.capacity(),
            });
        }
        let need32 = need as u32;
        let len32 = msg.len() as u32;
        let st = self.st;
        let mut held = self.lock();
        let mut timed_out = false;
        loop {
            check(timed_out)?;
            let (tail, puts, head, gets) = self.used();
            let used = tail.wrapping_sub(head);
            if puts.wrapping_sub(gets) < self.max_items()
                && used <= self.cap
                && self.cap - used >= need32
            {
                self.copy_in(tail, &len32.to_le_bytes());
                self.copy_in(tail.wrapping_add(4), msg);
                st.put_state.store(
                    pack(tail.wrapping_add(need32), puts.wrapping_add(1)),
                    Release,
                );
                st.not_empty.fetch_add(1, SeqCst);
                let wake = st.get_waiters.load(SeqCst) > 0;
                drop(held);
                if wake {
                    st.not_empty.wake(1);
                }
                return Ok(());
            }
            let left = remaining(deadline);
            if left.is_some_and(|d| d.is_zero()) {
                return Err(IpcError::TimedOut);
            }
            let seen = st.not_full.load(Acquire);
            st.put_waiters.fetch_add(1, SeqCst);
            drop(held);
            timed_out = st.not_full.wait(seen, min_opt(left, slice)) == Wake::TimedOut;
            held = self.lock();
            st.put_waiters.fetch_sub(1, SeqCst);
        }
    }

    /// Removes one frame. Waits until `deadline` (then `TimedOut`); `check`
    /// runs each time the ring is found empty (with `true` after a sleep that
    /// ran out its slice), and its error ends the get.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        slice: Option<Duration>,
        check: &dyn Fn(bool) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let st = self.st;
        let mut held = self.lock();
        let mut spun = false;
        let mut timed_out = false;
        loop {
            let (tail, puts, head, gets) = self.used();
            if puts != gets {
                let used = tail.wrapping_sub(head);
                let mut len = [0u8; 4];
                if used < 4 {
                    return Err(corrupt());
                }
                self.copy_out(head, &mut len);
                let len = u32::from_le_bytes(len);
                if len > used - 4 {
                    return Err(corrupt());
                }
                let mut out = vec![0u8; len as usize];
                self.copy_out(head.wrapping_add(4), &mut out);
                st.get_state.store(
                    pack(head.wrapping_add(4 + len), gets.wrapping_add(1)),
                    Release,
                );
                st.not_full.fetch_add(1, SeqCst);
                let wake_put = st.put_waiters.load(SeqCst) > 0;
                let more = puts.wrapping_sub(gets) > 1 && st.get_waiters.load(SeqCst) > 0;
                drop(held);
                if wake_put {
                    st.not_full.wake(u32::MAX);
                }
                if more {
                    st.not_empty.wake(1);
                }
                return Ok(out);
            }
            check(timed_out)?;
            let left = remaining(deadline);
            if left.is_some_and(|d| d.is_zero()) {
                return Err(IpcError::TimedOut);
            }
            if !spun {
                spun = true;
                let seen = st.put_state.load(Acquire);
                drop(held);
                // Yield now and then: on a busy machine the producer may be
                // waiting for this very core.
                let start = Instant::now();
                let mut i = 0u32;
                while st.put_state.load(Relaxed) == seen {
                    i = i.wrapping_add(1);
                    if i.is_multiple_of(32) {
                        if start.elapsed() > SPIN_FOR {
                            break;
                        }
                        std::thread::yield_now();
                    } else {
                        spin_hint();
                    }
                }
                held = self.lock();
                continue;
            }
            let seen = st.not_empty.load(Acquire);
            st.get_waiters.fetch_add(1, SeqCst);
            drop(held);
            let woke = st.not_empty.wait(seen, min_opt(left, slice));
            held = self.lock();
            st.get_waiters.fetch_sub(1, SeqCst);
            timed_out = woke == Wake::TimedOut;
            if !timed_out {
                spun = false;
            }
        }
    }

    /// Bumps both sequence words and wakes everyone (a pipe end closed).
    pub(crate) fn wake_all(&self) {
        self.st.not_empty.fetch_add(1, AcqRel);
        self.st.not_full.fetch_add(1, AcqRel);
        self.st.not_empty.wake(u32::MAX);
        self.st.not_full.wake(u32::MAX);
    }
}

fn corrupt() -> IpcError {
    IpcError::InvalidHandle("the ring buffer is corrupted".into())
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
