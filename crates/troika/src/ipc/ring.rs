//! A byte ring in shared memory carrying length-prefixed frames, guarded by a
//! process-shared lock, with two futex "condition" words. The engine under
//! [`Queue`](super::Queue) (many producers and consumers) and
//! [`Pipe`](super::Pipe) (one ring per direction).
//!
//! # Commit by one store
//!
//! The producer side is one 64-bit word, `put_state` = (tail byte position,
//! number of puts), and the consumer side another, `get_state` = (head byte
//! position, number of gets). So a process killed at any instant inside an
//! operation leaves the ring consistent: a put copies its frame behind the
//! tail and then publishes it with one store of `put_state`; a get copies its
//! frame out and then retires it with one store of `get_state`; the frame is
//! either wholly in the queue or not at all, and the next process to take the
//! lock (told that the holder died) goes on as if nothing happened.
//!
//! # Positions and counters
//!
//! Byte positions run modulo **twice** the capacity: a position `p` in
//! `0..2*cap` names the byte at `p mod cap` (one subtraction, no division),
//! and `tail - head mod 2*cap` is the number of bytes in use, from 0 to `cap`
//! with no ambiguity between empty and full. This holds for every capacity,
//! not only powers of two: free-running 32-bit positions mapped with
//! `% cap` would jump at the 2^32 wrap whenever `cap` does not divide 2^32,
//! and hand out wrong bytes after 4 GiB of traffic. `2*cap` fits in the
//! 32-bit half of the word because `cap <= 2^31`.
//!
//! The frame counts are free-running 32-bit counters, used only through
//! their wrapping difference `puts - gets`, which is the true number of
//! frames (fewer than `cap / 4`, far below 2^32) at any wrap.
//!
//! # A hostile or corrupted peer
//!
//! Everything in the ring is shared with other processes, which may run
//! other code or scribble over it. Every operation validates what it reads
//! under the lock (positions inside `0..2*cap`, bytes in use at most `cap`,
//! a frame no longer than what is buffered) before it copies or allocates
//! anything, and reports [`IpcError::Corrupted`] otherwise, so a peer
//! announcing a huge frame cannot make the reader allocate it or read
//! outside the mapping.
//!
//! # Waiting
//!
//! A side that cannot proceed reads the sequence word it waits on
//! (`not_empty` or `not_full`) under the lock, **before** it checks the
//! conditions that would end the wait (closed flags, a departed peer), counts
//! itself in the matching waiter counter, unlocks and sleeps on the word with
//! `futex(WAIT, seen)`. The other side (or a closer) changes its state first
//! and bumps the sequence word after, then wakes a sleeper if the counter is
//! non-zero. A bump between the read and the sleep makes the sleep return at
//! once (the kernel compares the word), so no wake-up is lost. (The sequence
//! words wrap at 2^32: a sleeper that misses exactly 2^32 bumps between its
//! read and its sleep would sleep one slice too long, where it has one.)
//! Before sleeping, a consumer spins briefly on `put_state`: a futex wake-up
//! across cores costs tens of microseconds on this machine, a spin that sees
//! the frame arrive costs less than one.
//!
//! # Deadlines
//!
//! An operation with a deadline counts the wait for the ring's own lock
//! against it: a process stopped (SIGSTOP) while it holds the lock makes a
//! `try_*` call fail at once and a `*_timeout` call at its deadline, never
//! hang. Only the calls without a deadline wait for the lock without bound
//! (a dead holder is still detected and the lock taken over).

use super::error::{IpcError, Result};
use super::futex::{OsEnv, Wake, Word, remaining, spin_hint};
use super::locks::unlock_word;
use super::raw;
use super::shm::{Segment, ShmState};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
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
/// Bit of `RingState::flags`: the ring is closed; puts fail, gets drain it.
const CLOSED: u32 = 1;

#[repr(C)]
pub(crate) struct RingState {
    lock: AtomicU32,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    get_waiters: AtomicU32,
    put_waiters: AtomicU32,
    capacity: AtomicU32,
    max_items: AtomicU32,
    flags: AtomicU32,
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

/// The ring's counters as read (and checked) under the lock.
#[derive(Clone, Copy, Debug)]
struct Counters {
    tail: u32,
    puts: u32,
    head: u32,
    gets: u32,
    /// Bytes in use, `0..=cap`.
    used: u32,
    /// Frames in the ring.
    frames: u32,
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
        // Gets first: `gets` never passes `puts`, and `puts` only grows, so
        // a later `puts` is never behind an earlier `gets` (the other order
        // could see a get that retired a frame put after the first read, and
        // the wrapping difference would be close to 2^32).
        let (_, gets) = unpack(self.st.get_state.load(Acquire));
        let (_, puts) = unpack(self.st.put_state.load(Acquire));
        (puts.wrapping_sub(gets) as usize).min(self.capacity() / 4)
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.st.flags.load(SeqCst) & CLOSED != 0
    }

    /// Closes the ring: puts fail with [`IpcError::Closed`] from now on,
    /// gets drain what is buffered and then fail the same way; every sleeper
    /// is woken.
    pub(crate) fn close(&self) {
        // The flag before the bump (and the sleepers read the sequence word
        // before the flag): a sleeper either sees the flag or the bump.
        self.st.flags.fetch_or(CLOSED, SeqCst);
        self.wake_all();
    }

    /// Takes the ring's lock, waiting until `deadline` at most (then
    /// `Timeout`). `Some(now)` only tries.
    fn lock(&self, deadline: Option<Instant>) -> Result<Held<'a>> {
        let w = &self.st.lock;
        // `raw::lock` takes the deadline as it is: the uncontended path is
        // one compare-and-exchange, with no clock read.
        loop {
            match raw::lock(w, &OsEnv, deadline) {
                Some(_) => return Ok(Held(w)),
                None if deadline.is_some() => return Err(IpcError::Timeout),
                None => {}
            }
        }
    }

    /// Test hook: takes the lock and never releases it in this process (a
    /// process stopped in the middle of an operation, for tests of the
    /// deadlines).
    pub(crate) fn hold_lock_for_test(&self) -> Result<()> {
        std::mem::forget(self.lock(None)?);
        Ok(())
    }

    /// Twice the capacity: the modulus of byte positions.
    fn span(&self) -> u64 {
        2 * u64::from(self.cap)
    }

    /// Position `pos` moved on by `n <= cap` bytes, modulo `2 * cap`.
    fn advance(&self, pos: u32, n: u32) -> u32 {
        let p = u64::from(pos) + u64::from(n);
        let p = if p >= self.span() { p - self.span() } else { p };
        p as u32
    }

    /// The data offset of position `pos < 2 * cap`.
    fn index(&self, pos: u32) -> usize {
        (if pos >= self.cap { pos - self.cap } else { pos }) as usize
    }

    /// Reads the counters and checks that they describe a possible ring.
    #[inline]
    fn counters(&self) -> Result<Counters> {
        let (tail, puts) = unpack(self.st.put_state.load(Acquire));
        let (head, gets) = unpack(self.st.get_state.load(Acquire));
        let span = self.span();
        if u64::from(tail) >= span || u64::from(head) >= span {
            return Err(self.bad_counters(tail, head, puts, gets));
        }
        // Both below `span`, so `tail - head mod span` is the wrapping
        // difference, plus `span` when it went negative; `span as u32` is 0
        // for the largest ring (span 2^32), where the wrap of u32 is the
        // wrap of positions.
        let mut used = tail.wrapping_sub(head);
        if tail < head {
            used = used.wrapping_add(span as u32);
        }
        let frames = puts.wrapping_sub(gets);
        // Every frame takes at least its 4-byte header.
        if used > self.cap || frames > used / 4 || (frames == 0) != (used == 0) {
            return Err(self.bad_counters(tail, head, puts, gets));
        }
        Ok(Counters {
            tail,
            puts,
            head,
            gets,
            used,
            frames,
        })
    }

    #[cold]
    fn bad_counters(&self, tail: u32, head: u32, puts: u32, gets: u32) -> IpcError {
        corrupt(format!(
            "positions {head}..{tail} and counts {gets}..{puts} do not describe \
             a ring of {} bytes",
            self.cap
        ))
    }

    /// Copies `src` (at most `cap` bytes) into the ring at byte position
    /// `pos` (wrapping).
    ///
    /// Caller holds the lock and has checked that the bytes are free.
    fn copy_in(&self, pos: u32, src: &[u8]) {
        let cap = self.cap as usize;
        debug_assert!(src.len() <= cap);
        let at = self.index(pos);
        let first = src.len().min(cap - at);
        // SAFETY: `at < cap` and `at + first <= cap`, and `src.len() - first
        // <= cap` since every caller passes at most `cap` bytes: all inside
        // the data area (validated in `at`); under the ring lock no other
        // process touches the free region we write; the source is a private
        // slice, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(at), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.data.as_ptr(),
                src.len() - first,
            );
        }
    }

    /// Copies `dst.len()` (at most `cap`) bytes out of the ring from
    /// position `pos` (wrapping).
    fn copy_out(&self, pos: u32, dst: &mut [u8]) {
        let cap = self.cap as usize;
        debug_assert!(dst.len() <= cap);
        let at = self.index(pos);
        let first = dst.len().min(cap - at);
        // SAFETY: as in `copy_in`; the caller checked that `dst.len() <=
        // used <= cap` bytes from `pos` are committed frame bytes, which no
        // one writes while the lock is held.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    /// Appends one frame. Fails at once with [`IpcError::Closed`] on a
    /// closed ring. Waits for room (and for the lock) until `deadline` (then
    /// `Timeout`; `Some(now)` waits for nothing), sleeping at most `slice`
    /// at a time; `check` runs before each attempt — with `true` after a
    /// sleep that ran out its slice — and its error ends the put (a pipe
    /// uses it to notice a departed peer at once, and a dead one after a
    /// slice).
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
        if self.is_closed() {
            return Err(IpcError::Closed);
        }
        let need32 = need as u32;
        let len32 = msg.len() as u32;
        let st = self.st;
        let mut held = self.lock(deadline)?;
        let mut timed_out = false;
        loop {
            let seen = st.not_full.load(SeqCst);
            if self.is_closed() {
                return Err(IpcError::Closed);
            }
            check(timed_out)?;
            let c = self.counters()?;
            if c.frames < self.max_items() && self.cap - c.used >= need32 {
                self.copy_in(c.tail, &len32.to_le_bytes());
                self.copy_in(self.advance(c.tail, 4), msg);
                st.put_state.store(
                    pack(self.advance(c.tail, need32), c.puts.wrapping_add(1)),
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
                return Err(IpcError::Timeout);
            }
            st.put_waiters.fetch_add(1, SeqCst);
            drop(held);
            timed_out = st.not_full.wait(seen, min_opt(left, slice)) == Wake::TimedOut;
            let relocked = self.lock(deadline);
            st.put_waiters.fetch_sub(1, SeqCst);
            held = relocked?;
        }
    }

    /// Removes one frame. Waits (for a frame and for the lock) until
    /// `deadline` (then `Timeout`; `Some(now)` waits for nothing). On an
    /// empty ring that is closed it fails with [`IpcError::Closed`];
    /// otherwise `check` runs each time the ring is found empty (with `true`
    /// after a sleep that ran out its slice), and its error ends the get.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
        slice: Option<Duration>,
        check: &dyn Fn(bool) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let st = self.st;
        let mut held = self.lock(deadline)?;
        let mut spun = false;
        let mut timed_out = false;
        loop {
            let seen = st.not_empty.load(SeqCst);
            let c = self.counters()?;
            if c.frames != 0 {
                let mut len = [0u8; 4];
                self.copy_out(c.head, &mut len);
                let len = u32::from_le_bytes(len);
                // `counters` checked `4 <= used <= cap`, so this bounds the
                // allocation by the ring's capacity whatever a peer wrote.
                if u64::from(len) + 4 > u64::from(c.used) {
                    return Err(corrupt(format!(
                        "a frame announces {len} bytes, but only {} are buffered \
                         in a ring of {} bytes",
                        c.used - 4,
                        self.cap
                    )));
                }
                let mut out = vec![0u8; len as usize];
                self.copy_out(self.advance(c.head, 4), &mut out);
                st.get_state.store(
                    pack(self.advance(c.head, 4 + len), c.gets.wrapping_add(1)),
                    Release,
                );
                st.not_full.fetch_add(1, SeqCst);
                let wake_put = st.put_waiters.load(SeqCst) > 0;
                let more = c.frames > 1 && st.get_waiters.load(SeqCst) > 0;
                drop(held);
                if wake_put {
                    st.not_full.wake(u32::MAX);
                }
                if more {
                    st.not_empty.wake(1);
                }
                return Ok(out);
            }
            if self.is_closed() {
                return Err(IpcError::Closed);
            }
            check(timed_out)?;
            let left = remaining(deadline);
            if left.is_some_and(|d| d.is_zero()) {
                return Err(IpcError::Timeout);
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
                held = self.lock(deadline)?;
                continue;
            }
            st.get_waiters.fetch_add(1, SeqCst);
            drop(held);
            let woke = st.not_empty.wait(seen, min_opt(left, slice));
            let relocked = self.lock(deadline);
            st.get_waiters.fetch_sub(1, SeqCst);
            held = relocked?;
            timed_out = woke == Wake::TimedOut;
            if !timed_out {
                spun = false;
            }
        }
    }

    /// Bumps both sequence words and wakes everyone (a pipe end closed, the
    /// ring closed).
    pub(crate) fn wake_all(&self) {
        self.st.not_empty.fetch_add(1, SeqCst);
        self.st.not_full.fetch_add(1, SeqCst);
        self.st.not_empty.wake(u32::MAX);
        self.st.not_full.wake(u32::MAX);
    }
}

fn corrupt(why: String) -> IpcError {
    IpcError::Corrupted(why)
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
impl Ring<'_> {
    /// Test hook: an empty ring whose counters read as if `bytes` bytes and
    /// `frames` frames had already passed through it.
    fn start_at(&self, bytes: u64, frames: u32) {
        let pos = (bytes % self.span()) as u32;
        self.st.put_state.store(pack(pos, frames), SeqCst);
        self.st.get_state.store(pack(pos, frames), SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::shm::Kind;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ok(_: bool) -> Result<()> {
        Ok(())
    }

    fn segment(cap: u32) -> Segment {
        let seg = Segment::create(Kind::Queue, 0, STATE_LEN + cap as usize).unwrap();
        init(&seg, 0, cap, u32::MAX).unwrap();
        seg
    }

    fn message(seq: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seq.wrapping_mul(31) as usize ^ i.wrapping_mul(7) ^ (i >> 8)) as u8)
            .collect()
    }

    /// Where the counters start: just before the 32-bit wrap, just before a
    /// multiple of twice the capacity, or anywhere.
    fn start(mode: u8, cap: u32, back: u64, any: u64) -> u64 {
        match mode {
            0 => (1u64 << 32).wrapping_mul(1 + any % 7).wrapping_sub(back),
            1 => (2 * u64::from(cap))
                .wrapping_mul(1 + any % 1000)
                .wrapping_sub(back),
            _ => any,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any capacity, any message sizes, counters near any wrap: every
        /// frame comes out whole, in order, byte for byte, and a put fails
        /// (the ring is full) exactly when the model says there is no room.
        #[test]
        fn frames_survive_every_counter_wrap(
            cap in prop_oneof![64u32..600, 600u32..5000, Just(64u32), Just(4096u32), Just(4099u32)],
            mode in 0u8..3,
            back in 0u64..6000,
            any in any::<u64>(),
            frames in prop_oneof![any::<u32>(), (0u32..300).prop_map(|b| u32::MAX - b)],
            ops in proptest::collection::vec((any::<bool>(), 0usize..700), 1..400),
        ) {
            let seg = segment(cap);
            let ring = Ring::at(&seg, 0).unwrap();
            ring.start_at(start(mode, cap, back, any), frames);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut used = 0usize;
            let mut seq = 0u64;
            for (put, len) in ops {
                let now = Some(Instant::now());
                if put {
                    let msg = message(seq, len);
                    seq += 1;
                    let r = ring.put(&msg, now, None, &ok);
                    if len + 4 > cap as usize {
                        prop_assert!(matches!(r, Err(IpcError::TooLarge { .. })), "{r:?}");
                    } else if used + len + 4 > cap as usize {
                        prop_assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}");
                    } else {
                        prop_assert!(r.is_ok(), "{r:?}");
                        used += len + 4;
                        model.push_back(msg);
                    }
                } else {
                    let r = ring.get(now, None, &ok);
                    match model.pop_front() {
                        Some(want) => {
                            used -= want.len() + 4;
                            prop_assert_eq!(r.unwrap(), want);
                        }
                        None => prop_assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}"),
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
            }
            while let Some(want) = model.pop_front() {
                prop_assert_eq!(ring.get(Some(Instant::now()), None, &ok).unwrap(), want);
            }
        }
    }
}

#[cfg(test)]
mod largest {
    //! The largest capacities the docs allow: positions then use the whole
    //! 32-bit half of the state words. The memfd is sparse, so only the
    //! pages touched cost memory.
    use super::*;
    use crate::ipc::shm::Kind;

    fn ok(_: bool) -> Result<()> {
        Ok(())
    }

    #[test]
    fn frames_cross_the_wrap_of_the_largest_rings() {
        for cap in [MAX_CAPACITY as u32, MAX_CAPACITY as u32 - 1] {
            let seg = Segment::create(Kind::Queue, 0, STATE_LEN + cap as usize).unwrap();
            init(&seg, 0, cap, u32::MAX).unwrap();
            let ring = Ring::at(&seg, 0).unwrap();
            // 100 bytes before the end of the position space: the frames
            // below wrap both the data area and the position counter.
            ring.start_at(2 * u64::from(cap) - 100, u32::MAX - 2);
            let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
            for m in &msgs {
                ring.put(m, None, None, &ok).unwrap();
            }
            assert_eq!(ring.len(), msgs.len());
            for m in &msgs {
                assert_eq!(&ring.get(None, None, &ok).unwrap(), m);
            }
            assert_eq!(ring.len(), 0);
        }
    }
}

#[cfg(test)]
mod hostile {
    //! A peer that writes garbage into the ring: the reader reports
    //! `Corrupted` without allocating what the garbage announces.
    use super::*;
    use crate::ipc::shm::Kind;

    fn ok(_: bool) -> Result<()> {
        Ok(())
    }

    fn ring_with_one_frame(seg: &Segment) -> Ring<'_> {
        init(seg, 0, 1000, u32::MAX).unwrap();
        let ring = Ring::at(seg, 0).unwrap();
        ring.put(b"hello", None, None, &ok).unwrap();
        ring
    }

    fn new_segment() -> Segment {
        Segment::create(Kind::Queue, 0, STATE_LEN + 1000).unwrap()
    }

    #[test]
    fn a_frame_header_announcing_more_than_the_ring_holds_is_refused() {
        let seg = new_segment();
        let ring = ring_with_one_frame(&seg);
        // The largest length a header can announce (4 GiB), and one just
        // past what is buffered.
        for len in [u32::MAX, 1 << 31, 1000, 6] {
            ring.copy_in(0, &len.to_le_bytes());
            let err = ring.get(Some(Instant::now()), None, &ok).unwrap_err();
            assert!(matches!(err, IpcError::Corrupted(_)), "{err}");
            assert!(err.to_string().contains(&format!("announces {len} bytes")));
        }
        // Put right, the frame reads back: nothing was consumed meanwhile.
        ring.copy_in(0, &5u32.to_le_bytes());
        assert_eq!(ring.get(None, None, &ok).unwrap(), b"hello");
    }

    #[test]
    fn counters_outside_the_ring_are_refused() {
        let seg = new_segment();
        let ring = ring_with_one_frame(&seg);
        let good = ring.st.put_state.load(SeqCst);
        // A tail beyond twice the capacity; more bytes in use than the ring
        // has; more frames than bytes can hold.
        for bad in [pack(u32::MAX, 1), pack(1500, 1), pack(9, 1000)] {
            ring.st.put_state.store(bad, SeqCst);
            let err = ring.get(Some(Instant::now()), None, &ok).unwrap_err();
            assert!(matches!(err, IpcError::Corrupted(_)), "{err}");
            let err = ring.put(b"x", Some(Instant::now()), None, &ok).unwrap_err();
            assert!(matches!(err, IpcError::Corrupted(_)), "{err}");
            assert!(ring.len() <= ring.capacity() / 4);
        }
        ring.st.put_state.store(good, SeqCst);
        assert_eq!(ring.get(None, None, &ok).unwrap(), b"hello");
    }
}
