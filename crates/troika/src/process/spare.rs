//! Spare byte buffers for large decoded bodies (see `README.md`, "Large
//! bodies").
//!
//! A large `Vec<u8>` decoded from an arena is copied into a new allocation.
//! A new allocation of many megabytes is fresh memory: the program's
//! allocator maps it afresh (glibc for anything over 32 MiB) or has given
//! its pages back meanwhile (mimalloc after a few milliseconds), so the
//! kernel faults every page in and zeroes it before the copy writes it
//! again — on the machines measured, zeroing cost as much as the copy
//! itself. Yet a process that receives large byte vectors usually has just
//! dropped one: the worker the result of its last call (an echo's argument
//! is its result), the parent the argument it has just encoded.
//!
//! So troika keeps those: a `Vec<u8>` of at least [`MIN`] bytes that troika
//! itself would drop (a call's argument once encoded in the parent, a
//! call's result once encoded in the worker) is [`recycle`]d here instead,
//! and the next large byte vector decoded in this process is copied into
//! one whose capacity fits ([`take`]), whose pages are in memory already.
//! A buffer handed out is an ordinary `Vec` of the global allocator; its
//! spare capacity is at most an eighth of its length.
//!
//! **Bounds.** At most [`KEEP`] buffers, [`KEEP_BYTES`] in all (the least
//! recently recycled go first), each dropped after [`arena::IDLE`] unused,
//! and all of them with the free arenas (`arena::trim_free`,
//! `arena::release_free`): the readers' idle wake-up and a `ProcessPool`'s
//! drop. A process whose address space is limited (`RLIMIT_AS`: a
//! worker of a pool with a `memory_cap`) keeps none: a kept buffer could
//! make a task's own allocation fail. A worker's resident size, as
//! `max_worker_rss` reads it between tasks, includes what it keeps.

use std::any::{Any, TypeId};
use std::sync::Mutex;
use std::time::Instant;

use super::arena;

/// Smaller buffers are not kept: their pages are cheap to fault in, and
/// the allocator reuses them anyway.
pub(crate) const MIN: usize = 4 << 20;
/// At most this many buffers are kept.
pub(crate) const KEEP: usize = 4;
/// At most this many bytes (capacity) are kept in all.
pub(crate) const KEEP_BYTES: usize = 256 << 20;

/// The buffers kept, with when each was recycled.
static SPARE: Mutex<Vec<(Vec<u8>, Instant)>> = Mutex::new(Vec::new());

fn spare() -> std::sync::MutexGuard<'static, Vec<(Vec<u8>, Instant)>> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drop `value`, keeping its buffer if it is a large `Vec<u8>`.
#[inline]
pub(crate) fn recycle<T: 'static>(value: T) {
    if TypeId::of::<T>() != TypeId::of::<Vec<u8>>() {
        return;
    }
    let mut slot = Some(value);
    if let Some(bytes) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<Vec<u8>>>()
        .and_then(Option::take)
    {
        keep(bytes);
    }
}

/// Whether this process may keep buffers: not under a limit of its address
/// space (a pool's `memory_cap` in a worker), where a kept buffer could make
/// a task's own allocation fail that fitted without it.
fn may_keep() -> bool {
    static UNLIMITED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNLIMITED.get_or_init(|| {
        rustix::process::getrlimit(rustix::process::Resource::As)
            .current
            .is_none()
    })
}

/// Keep `bytes`' buffer (its contents are dropped).
pub(crate) fn keep(mut bytes: Vec<u8>) {
    if bytes.capacity() < MIN || bytes.capacity() > KEEP_BYTES || !may_keep() {
        return;
    }
    bytes.clear();
    let mut dropped = Vec::new();
    let mut list = spare();
    list.push((bytes, Instant::now()));
    while list.len() > KEEP || list.iter().map(|(b, _)| b.capacity()).sum::<usize>() > KEEP_BYTES {
        let oldest = (0..list.len()).min_by_key(|&i| list[i].1).unwrap_or(0);
        dropped.push(list.swap_remove(oldest));
    }
    drop(list);
    // Freed outside the lock.
    drop(dropped);
}

/// An empty buffer kept for at least `len` bytes and at most an eighth
/// more, if there is one (the smallest that fits).
pub(crate) fn take(len: usize) -> Option<Vec<u8>> {
    if len < MIN {
        return None;
    }
    let mut list = spare();
    let fits = |cap: usize| cap >= len && cap - len <= len / 8;
    let best = (0..list.len())
        .filter(|&i| fits(list[i].0.capacity()))
        .min_by_key(|&i| list[i].0.capacity())?;
    Some(list.swap_remove(best).0)
}

/// Drop the buffers unused for [`arena::IDLE`] (all of them with `all`).
/// Whether any are left.
pub(crate) fn trim(all: bool) -> bool {
    let dropped = {
        let mut list = spare();
        let now = Instant::now();
        let (old, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|(_, at)| all || now.duration_since(*at) >= arena::IDLE);
        *list = kept;
        old
    };
    drop(dropped);
    !spare().is_empty()
}

/// How many buffers are kept (tests).
#[cfg(test)]
pub(crate) fn count() -> usize {
    spare().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large byte vector is kept and handed out again for a body it fits
    /// (same allocation), never for one it would fit with much room to
    /// spare; other types and small vectors are simply dropped; the bounds
    /// hold.
    #[test]
    fn large_byte_vectors_are_kept_within_bounds_and_handed_out_again() {
        let _serial = arena::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        trim(true);
        let big = vec![7u8; MIN + MIN / 16];
        let at = big.as_ptr();
        recycle(big);
        recycle(vec![1u8; MIN - 1]);
        recycle(vec![1u32; MIN]);
        recycle(String::from("not bytes"));
        assert_eq!(count(), 1);
        assert!(take(MIN / 2).is_none(), "below the minimum: not from here");
        assert!(take(MIN + MIN / 8).is_none(), "too small");
        recycle(vec![2u8; 4 * MIN]);
        assert!(take(2 * MIN).is_none(), "too much room to spare");
        let got = take(MIN).expect("fits within an eighth");
        assert_eq!((got.as_ptr(), got.len()), (at, 0));
        assert_eq!(count(), 1);
        for _ in 0..KEEP + 3 {
            recycle(vec![0u8; MIN]);
        }
        assert_eq!(count(), KEEP);
        for _ in 0..3 {
            recycle(vec![0u8; KEEP_BYTES / 2]);
        }
        assert!(count() <= KEEP);
        assert!(spare().iter().map(|(b, _)| b.capacity()).sum::<usize>() <= KEEP_BYTES);
        assert!(!trim(true));
        assert_eq!(count(), 0);
    }
}
