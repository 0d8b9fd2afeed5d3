//! The pool's state lock, and submitting without it.
//!
//! A burst's submitting thread used to take the state's lock for every
//! call, and the I/O threads take it for every batch of replies they
//! claim: on a 2-core machine an I/O thread was often preempted holding
//! it, and the submitter yielded in the lock's slow path (every one of its
//! context switches in a burst, `BENCHMARKS.md`, 2026-12-03). So a call
//! that finds no idle worker is only pushed onto `incoming`, a list under
//! a lock of its own held for a push or a drain, and whoever takes the
//! state's lock next moves it into `State::queue` first
//! ([`Shared::lock`]). Nothing else changes: every decision about the
//! queue is still made under the state's lock, on a queue that holds every
//! call pushed before the lock was taken.
//!
//! What must not happen is a call left in `incoming` while a worker sits
//! idle. Two steps, one on each side, rule it out (Dekker's pattern):
//!
//! - whoever lets go of the state's lock first publishes whether a worker
//!   could take a batch ([`Handshake::releasing`]), then (after a full fence)
//!   looks at `incoming`, and, if a worker is idle, moves the calls it
//!   finds there into the queue and hands them out ([`StateGuard`]'s drop,
//!   and before a condition variable's wait);
//! - a submitter pushes its call, then (after a full fence) reads that
//!   flag ([`Handshake::pushed`]), and if a worker is idle takes the
//!   state's lock and dispatches as before (a submitter that finds the
//!   flag set to begin with does that straight away, so a round trip to an
//!   idle pool is as before).
//!
//! Of the two fences one comes first: either the lock's holder sees the
//! call, or the submitter sees the flag the holder published (or a later
//! one, published by a later holder who then looks at `incoming` itself).
//! The worker can only become idle under the state's lock, so a flag
//! that said "no worker is idle" stays true until the next holder lets go,
//! and that holder looks again. The two halves are [`Handshake`]'s, and
//! `loom_tests` below checks them in a model of the submitter and an I/O
//! thread whose worker goes idle (it fails with either fence removed).
//!
//! A pool that is closed or broken takes no call through `incoming`: it is
//! shut (`open` false, under both locks) and emptied into the queue when
//! the pool closes or breaks, so a submitter that finds it shut takes the
//! state's lock and gets the answer it always got. A pool with a bounded
//! queue never uses it (the bound is checked under the state's lock).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::dispatch::Batch;
use super::slot::{Slot, Worker};
use super::{Shared, State};
use crate::loom::{AtomicBool, AtomicUsize, fence};
use crate::process::task::Job;

/// The handshake's two words and its two halves (see the module's note).
#[derive(Default)]
pub(super) struct Handshake {
    /// Some worker could take a batch, as of the last unlock of the state.
    /// On a line of its own: every holder of the state's lock reads it and
    /// the submitter reads it for every call, but it is written only when
    /// it changes, while the list's line (with `pending`) is written for
    /// every call. (Next to them, a burst ran at 2.13–2.84 M calls/s; on
    /// its own line at 2.23–3.04 M, six alternations, `BENCHMARKS.md`.)
    idle: CachePadded<AtomicBool>,
    /// How many calls `incoming` holds (never an over-estimate; an
    /// under-estimate only while a push is under way).
    pending: AtomicUsize,
}

impl Handshake {
    /// Whether a worker was idle at the last unlock (a hint: a submitter
    /// that finds one takes the lock at once).
    pub(super) fn idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Under `incoming`'s lock: it now holds `n` calls.
    pub(super) fn set_pending(&self, n: usize) {
        self.pending.store(n, Ordering::Relaxed);
    }

    /// The submitter's half, once its call is pushed: whether a worker is
    /// idle, so that the submitter must take the lock and dispatch.
    pub(super) fn pushed(&self) -> bool {
        fence(Ordering::SeqCst);
        self.idle.load(Ordering::Relaxed)
    }

    /// The holder's half, before it lets go of the state's lock: publish
    /// whether a worker could take a batch (`idle`); then, if one could,
    /// `pending()` is to be looked at.
    pub(super) fn releasing(&self, idle: bool) {
        // Stored only when it changes, so the submitter's reads of it stay
        // in its cache; the last store was fenced by its own holder.
        if self.idle.load(Ordering::Relaxed) != idle {
            self.idle.store(idle, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
    }
}

/// Calls submitted while no worker was idle, not yet in `State::queue`.
#[derive(Default)]
pub(super) struct Incoming {
    list: Mutex<IncomingList>,
    handshake: Handshake,
}

struct IncomingList {
    jobs: Vec<Job>,
    /// False once the pool is closed or broken.
    open: bool,
}

impl Default for IncomingList {
    fn default() -> Self {
        IncomingList {
            jobs: Vec::new(),
            open: true,
        }
    }
}

/// The state's lock, held. On drop it publishes whether a worker is idle
/// and hands out what came in meanwhile (see the module's note).
pub(super) struct StateGuard<'a> {
    shared: &'a Shared,
    guard: MutexGuard<'a, State>,
}

impl Deref for StateGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.guard
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Slot {
    /// Its worker could be handed a batch now (what `take_batch` requires
    /// of a slot: idle, and a worker that takes calls).
    fn can_take_batch(&self) -> bool {
        self.in_flight.is_empty() && self.worker.as_ref().is_some_and(Worker::takes_calls)
    }
}

impl Shared {
    /// Take the state's lock, with every call submitted before in the
    /// queue.
    pub(super) fn lock(&self) -> StateGuard<'_> {
        let mut guard = self.state.lock();
        self.take_incoming(&mut guard);
        StateGuard {
            shared: self,
            guard,
        }
    }

    /// Queue `job` without the state's lock, if the pool takes calls and
    /// no worker is idle; otherwise give it back (the caller then takes the
    /// lock). `Ok(true)`: a worker went idle meanwhile, and the caller must
    /// take and let go of the lock ([`Shared::dispatch_incoming`]) once it
    /// has done what it does once a call is queued.
    pub(super) fn push_incoming(&self, job: Job) -> Result<bool, Job> {
        let handshake = &self.incoming.handshake;
        if self.capacity.is_some() || handshake.idle() {
            return Err(job);
        }
        {
            let mut list = self.incoming.list.lock();
            if !list.open {
                return Err(job);
            }
            list.jobs.push(job);
            handshake.set_pending(list.jobs.len());
        }
        Ok(handshake.pushed())
    }

    /// Hand what `incoming` holds to idle workers: the lock's holder may
    /// have looked before the push. Taking the lock moves the calls into
    /// the queue; letting go of it hands them out.
    pub(super) fn dispatch_incoming(&self) {
        drop(self.lock());
    }

    /// Move what `incoming` holds to the back of the queue.
    fn take_incoming(&self, state: &mut State) {
        if self.incoming.handshake.pending() == 0 {
            return;
        }
        let mut list = self.incoming.list.lock();
        state.queue.extend(list.jobs.drain(..));
        self.incoming.handshake.set_pending(0);
    }

    /// Close the pool to new calls: `State::closed`, and no call comes
    /// through `incoming` any more (those in it join the queue).
    pub(super) fn close(&self, state: &mut State) {
        state.closed = true;
        self.shut_incoming(state);
    }

    /// The pool closed or broke: no call comes through `incoming` any
    /// more, and those in it join the queue.
    pub(super) fn shut_incoming(&self, state: &mut State) {
        let mut list = self.incoming.list.lock();
        list.open = false;
        state.queue.extend(list.jobs.drain(..));
        self.incoming.handshake.set_pending(0);
    }
}

impl<'a> StateGuard<'a> {
    /// The holder's half of the handshake, before it lets go: publish
    /// whether a worker could take a batch, fence, and if one could, hand
    /// it what is queued (including what came in meanwhile).
    fn before_unlock(&mut self) -> Option<Batch> {
        let shared = self.shared;
        let idle = self.guard.slots.iter().any(Slot::can_take_batch);
        shared.incoming.handshake.releasing(idle);
        if !idle || std::thread::panicking() {
            return None;
        }
        shared.take_incoming(&mut self.guard);
        shared.take_any_batch(&mut self.guard)
    }

    /// Let go of the lock until `cv` is signalled, as `Condvar::wait`, and
    /// as it, return at times without a signal (callers wait in a loop on
    /// their condition): at once, if handing out calls let go of the lock
    /// already, since what the caller waits for may have come meanwhile.
    pub(super) fn wait(&mut self, cv: &Condvar) {
        if self.dispatch_pending() {
            return;
        }
        cv.wait(&mut self.guard);
        self.shared.take_incoming(&mut self.guard);
    }

    /// Let go of the lock until `cv` is signalled or `deadline` passes, as
    /// `Condvar::wait_until` (and returning early as [`wait`](Self::wait)
    /// does); true if the deadline passed.
    pub(super) fn wait_until(&mut self, cv: &Condvar, deadline: Instant) -> bool {
        if self.dispatch_pending() {
            return Instant::now() >= deadline;
        }
        let result = cv.wait_until(&mut self.guard, deadline);
        self.shared.take_incoming(&mut self.guard);
        result.timed_out()
    }

    /// Hand out what idle workers can take, writing each batch with the
    /// lock let go, until none can; true if the lock was let go.
    fn dispatch_pending(&mut self) -> bool {
        let mut let_go = false;
        while let Some(batch) = self.before_unlock() {
            MutexGuard::unlocked(&mut self.guard, || batch.write());
            self.shared.take_incoming(&mut self.guard);
            let_go = true;
        }
        let_go
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let _ = self.dispatch_pending();
    }
}

#[cfg(all(test, troika_loom))]
mod loom_tests {
    //! The handshake in a model: a submitter pushing calls while the
    //! worker, busy with one call, answers it and goes idle under the
    //! state's lock. Whatever the interleaving, no call may be left queued
    //! (or in `incoming`) while the worker sits idle.

    use std::sync::Arc;

    use loom::sync::Mutex;

    use super::Handshake;

    struct Model {
        /// The queue and whether the worker is idle.
        state: Mutex<(Vec<u32>, bool, Vec<u32>)>,
        incoming: Mutex<Vec<u32>>,
        handshake: Handshake,
    }

    impl Model {
        fn take_incoming(&self, state: &mut (Vec<u32>, bool, Vec<u32>)) {
            if self.handshake.pending() == 0 {
                return;
            }
            state.0.append(&mut self.incoming.lock().unwrap());
            self.handshake.set_pending(0);
        }

        /// Lock, run `f`, and let go as `StateGuard` does.
        fn locked(&self, f: impl FnOnce(&mut (Vec<u32>, bool, Vec<u32>))) {
            let mut state = self.state.lock().unwrap();
            self.take_incoming(&mut state);
            f(&mut state);
            loop {
                let idle = state.1;
                self.handshake.releasing(idle);
                if !idle {
                    break;
                }
                self.take_incoming(&mut state);
                if state.0.is_empty() {
                    break;
                }
                // Dispatch: the worker runs what is queued.
                let queued = std::mem::take(&mut state.0);
                state.2.extend(queued);
                state.1 = false;
            }
        }

        fn submit(&self, call: u32) {
            if self.handshake.idle() {
                self.locked(|state| state.0.push(call));
                return;
            }
            {
                let mut incoming = self.incoming.lock().unwrap();
                incoming.push(call);
                self.handshake.set_pending(incoming.len());
            }
            if self.handshake.pushed() {
                self.locked(|_| {});
            }
        }
    }

    #[test]
    fn loom_no_call_waits_while_the_worker_is_idle() {
        loom::model(|| {
            let model = Arc::new(Model {
                state: Mutex::new((Vec::new(), false, Vec::new())),
                incoming: Mutex::new(Vec::new()),
                handshake: Handshake::default(),
            });
            let io = {
                let model = Arc::clone(&model);
                loom::thread::spawn(move || {
                    // The worker's reply: with nothing queued it goes idle.
                    model.locked(|state| {
                        if state.0.is_empty() {
                            state.1 = true;
                        } else {
                            let queued = std::mem::take(&mut state.0);
                            state.2.extend(queued);
                        }
                    });
                })
            };
            model.submit(1);
            model.submit(2);
            io.join().unwrap();
            let state = model.state.lock().unwrap();
            let incoming = model.incoming.lock().unwrap();
            if state.1 {
                assert!(
                    state.0.is_empty() && incoming.is_empty(),
                    "calls {:?} and {:?} wait while the worker is idle",
                    state.0,
                    *incoming
                );
            }
        });
    }
}
