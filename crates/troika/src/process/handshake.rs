#![cfg_attr(not(troika_loom), allow(unreachable_pub))]
//! The rings' handshake between a writer and a reader that may sleep: the
//! few atomic steps of `channel.rs` on which "no wake-up is lost" rests,
//! written against [`Word`] so that `tests/loom_rings.rs` model-checks the
//! code the library runs (over loom's atomics and the emulated futex of
//! [`crate::ipc::futex::model`]), as `tests/loom_ipc.rs` does for `ipc`.
//!
//! Two handshakes, each a pair of a flag and a fence on both sides:
//!
//! - **the doorbell**: a reader that found its ring empty sets `sleeping`,
//!   fences, and looks at the tail once more ([`sleep_begin`]) before it
//!   sleeps on its descriptor; a writer stores its tail, fences, and swaps
//!   `sleeping` to 0 ([`publish`]): either the reader sees the tail, or the
//!   writer sees the flag and rings (once: the swap);
//! - **room**: a writer whose ring is full sets `room_wanted`, fences, and
//!   looks at the head once more ([`ask_for_room`]) before it sleeps on the
//!   head's futex; a reader stores its head, fences, and wakes the head's
//!   futex if the flag is set ([`advance_head`]). The futex wait compares
//!   the head with the value seen *before* the flag was set, so a head
//!   advanced in between ends the wait at once.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

use crate::ipc::futex::Word;

#[cfg(not(troika_loom))]
use std::sync::atomic::fence;

#[cfg(troika_loom)]
use loom::sync::atomic::fence;

/// The writer's half of the doorbell: publish `new_tail`, and say whether
/// the reader sleeps (then the caller rings it, once: the flag is cleared).
pub fn publish<W: Word>(tail: &W, sleeping: &W, new_tail: u32) -> bool {
    tail.store(new_tail, Release);
    // Pairs with the reader's fence in `sleep_begin`: either it sees our
    // tail, or we see its flag.
    fence(SeqCst);
    sleeping.load(Relaxed) != 0 && sleeping.swap(0, SeqCst) != 0
}

/// The reader's half of the doorbell, before it sleeps: ask to be rung, and
/// return the writer's tail seen afterwards. If that is not `head` (bytes
/// arrived meanwhile, or the tail is garbage) the caller must not sleep,
/// and withdraws the request with [`sleep_end`].
pub fn sleep_begin<W: Word>(sleeping: &W, tail: &W) -> u32 {
    sleeping.store(1, Relaxed);
    // Pairs with the writer's fence in `publish`.
    fence(SeqCst);
    tail.load(Acquire)
}

/// Awake again (or not sleeping after all): withdraw the request.
pub fn sleep_end<W: Word>(sleeping: &W) {
    sleeping.store(0, Relaxed);
}

/// The reader's half of the room handshake: publish `new_head` (bytes
/// before it are free), and wake a writer waiting for room.
pub fn advance_head<W: Word>(head: &W, room_wanted: &W, new_head: u32) {
    head.store(new_head, Release);
    // Pairs with the writer's fence in `ask_for_room`.
    fence(SeqCst);
    if room_wanted.load(Relaxed) != 0 {
        head.wake(1);
    }
}

/// The writer's half of the room handshake, when its ring is full: ask to
/// be woken. Returns the reader's head seen before asking (the value to
/// sleep on, see [`sleep_for_room`]) and the head seen after: if that one
/// leaves room, the caller goes on (and withdraws with [`room_found`]).
pub fn ask_for_room<W: Word>(head: &W, room_wanted: &W) -> (u32, u32) {
    let before = head.load(Acquire);
    room_wanted.store(1, Relaxed);
    // Pairs with the reader's fence in `advance_head`.
    fence(SeqCst);
    (before, head.load(Acquire))
}

/// The writer found room: withdraw the request to be woken.
pub fn room_found<W: Word>(room_wanted: &W) {
    room_wanted.store(0, Relaxed);
}

/// Sleep while the reader's head is still `before` (see [`ask_for_room`]),
/// at most `timeout`; every outcome sends the caller back to look.
pub fn sleep_for_room<W: Word>(head: &W, before: u32, timeout: Option<Duration>) {
    let _ = head.wait(before, timeout);
}
