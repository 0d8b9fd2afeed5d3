//! A one-job mailbox between a submitter and a worker that spins idle:
//! the thread pool's short way for a task submitted while a worker waits.
//!
//! Through the pool's queue (a crossbeam list channel) a job crosses three
//! cache lines between the cores before a worker can run it: the channel's
//! tail index, the slot it was written to (which the worker marks read,
//! so the next send takes that line back), and the task itself. Through
//! this mailbox it crosses one: the job is written beside the state word
//! the worker spins on. Measured on the 2-core KVM guest (a throw-away
//! model of submit, run and wait; `BENCHMARKS.md`, 2026-12-03 10:20): a
//! round trip's p50 635–673 ns through the channel, 368–384 ns through
//! the mailbox.
//!
//! At most one worker waits in the mailbox at a time; the others spin on
//! the queue as before. The mailbox keeps each submitter's order: a
//! submitter hands a job over only when the queue is empty (checked by the
//! pool, see `Shared::enqueue`), and the waiting worker gives up its place
//! as soon as it sees a queued job, so a job never overtakes one queued
//! before it by the same thread.
//!
//! States of the one word, and who moves them:
//!
//! - `IDLE` → `WAITING`: a worker that found the queue empty ([`wait`]);
//! - `WAITING` → `CLAIMED`: the one submitter that wins the compare-and-swap
//!   ([`offer`]); it then writes the job and moves `CLAIMED` → `FULL`;
//! - `FULL` → `IDLE`: the waiting worker, taking the job ([`poll`]);
//! - `WAITING` → `IDLE`: the waiting worker leaving ([`withdraw`]); if a
//!   submitter claimed the mailbox first, the worker waits for the job
//!   (a few stores away) and takes it instead.
//!
//! [`wait`]: Handoff::wait
//! [`offer`]: Handoff::offer
//! [`poll`]: Handoff::poll
//! [`withdraw`]: Handoff::withdraw

use std::sync::atomic::Ordering;

use crate::loom::{AtomicU8, UnsafeCell};

const IDLE: u8 = 0;
const WAITING: u8 = 1;
const CLAIMED: u8 = 2;
const FULL: u8 = 3;

/// The mailbox. The pool keeps it on a cache line of its own.
pub(crate) struct Handoff<J> {
    state: AtomicU8,
    /// Written by the submitter that moved `WAITING` → `CLAIMED`, before it
    /// publishes `FULL`; taken by the waiting worker once it sees `FULL`.
    job: UnsafeCell<Option<J>>,
}

// SAFETY: `job` is accessed by one thread at a time: the submitter that won
// `WAITING` → `CLAIMED` (no other submitter can win until the worker moves
// the state back to `WAITING`, after taking the job) writes it before its
// release store of `FULL`; the worker takes it after an acquire load of
// `FULL`, and gives it up with a release store of `IDLE`, which the next
// claimer's acquire compare-and-swap (through the worker's `IDLE` →
// `WAITING`) synchronizes with. A job moves between threads: `J: Send`.
unsafe impl<J: Send> Sync for Handoff<J> {}

impl<J> Handoff<J> {
    pub(crate) fn new() -> Handoff<J> {
        Handoff {
            state: AtomicU8::new(IDLE),
            job: UnsafeCell::new(None),
        }
    }

    /// Whether a worker waits (a hint: it may leave, or be taken, at once).
    pub(crate) fn has_waiter(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WAITING
    }

    /// A submitter's side: hand `job` to the waiting worker, or give it back
    /// when no worker waits (or another submitter got there first). Once the
    /// mailbox is won, the job passes through `prepare` on its way in (the
    /// pool marks its task running: the worker is certain to run it).
    pub(crate) fn offer(&self, job: J, prepare: impl FnOnce(J) -> J) -> Result<(), J> {
        // A load first: a submitter that finds nobody waiting (every submit
        // of a burst) reads the line and leaves it shared.
        if !self.has_waiter()
            || self
                .state
                .compare_exchange(WAITING, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return Err(job);
        }
        let job = prepare(job);
        // SAFETY: this thread claimed the mailbox, so it alone touches the
        // slot until it publishes `FULL` (see the `Sync` impl).
        self.job.with_mut(|slot| unsafe { *slot = Some(job) });
        self.state.store(FULL, Ordering::Release);
        Ok(())
    }

    /// A worker's side: become the waiting worker. False if another worker
    /// waits already.
    pub(crate) fn wait(&self) -> bool {
        self.state
            .compare_exchange(IDLE, WAITING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The waiting worker's side: the job handed over, if one was. Taking
    /// it ends the wait (the mailbox is `IDLE` again).
    pub(crate) fn poll(&self) -> Option<J> {
        if self.state.load(Ordering::Acquire) != FULL {
            return None;
        }
        // SAFETY: `FULL` was seen with acquire ordering, so the claimer is
        // done with the slot, and no other thread touches it until this
        // worker's release store of `IDLE` below.
        let job = self.job.with_mut(|slot| unsafe { (*slot).take() });
        self.state.store(IDLE, Ordering::Release);
        job
    }

    /// The waiting worker's side: stop waiting. Returns the job a submitter
    /// handed over before the worker left, which the worker must run.
    pub(crate) fn withdraw(&self) -> Option<J> {
        if self
            .state
            .compare_exchange(WAITING, IDLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return None;
        }
        // Claimed: the job is a few stores away, unless the submitter was
        // preempted in between, so spin, then give the core away.
        let mut spins = 0u32;
        loop {
            if let Some(job) = self.poll() {
                return Some(job);
            }
            spins += 1;
            // (Under the model, always: loom runs the other thread only
            // when this one yields.)
            if cfg!(troika_loom) || spins.is_multiple_of(64) {
                crate::loom::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Model checks of the mailbox: a job offered while its worker withdraws
/// is run exactly once, by the worker or (given back) through the queue.
#[cfg(all(test, troika_loom))]
mod loom_tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn loom_an_offer_racing_a_withdrawal_is_delivered_once() {
        loom::model(|| {
            let mailbox = Arc::new(Handoff::<u32>::new());
            assert!(mailbox.wait());
            let submitter = {
                let mailbox = Arc::clone(&mailbox);
                loom::thread::spawn(move || mailbox.offer(7, |job| job).err())
            };
            // The worker polls once, then leaves.
            let taken = mailbox.poll().or_else(|| mailbox.withdraw());
            let given_back = submitter.join().unwrap();
            match (taken, given_back) {
                (Some(7), None) | (None, Some(7)) => {}
                other => panic!("delivered {other:?}"),
            }
            // Either way the mailbox is free for the next wait.
            assert!(mailbox.wait());
        });
    }

    #[test]
    fn loom_two_submitters_one_waiting_worker() {
        loom::model(|| {
            let mailbox = Arc::new(Handoff::<u32>::new());
            assert!(mailbox.wait());
            let offers: Vec<_> = [1, 2]
                .into_iter()
                .map(|job| {
                    let mailbox = Arc::clone(&mailbox);
                    loom::thread::spawn(move || mailbox.offer(job, |job| job).err())
                })
                .collect();
            let taken = mailbox.withdraw();
            let mut given_back: Vec<u32> = offers
                .into_iter()
                .filter_map(|offer| offer.join().unwrap())
                .collect();
            given_back.extend(taken);
            given_back.sort_unstable();
            assert_eq!(given_back, [1, 2], "each job exactly once");
        });
    }
}
