//! The synchronisation primitives of troika's hand-written sync code — the
//! futures' handle and every type in `troika::sync` — swapped for loom's
//! models under `--cfg troika_loom` (as tokio's `src/loom` facade does).
//!
//! Normally these are `parking_lot`'s `Mutex`/`Condvar`, std's atomics and
//! `std::thread::current().id()`. Under `--cfg troika_loom` they are thin wrappers
//! over loom's models with the same API (and `UnsafeCell` is loom's, which
//! checks its accesses), so the model checks can explore the
//! state machines built on top (the handle's phases, the lock's holder, the
//! condition's release-and-wait, the semaphore's count, the queue's task
//! count, the barrier's rounds) in every interleaving. The condition
//! variable keeps its own queue of waiters, as `parking_lot`'s does: a notify
//! reaches only waiters already queued (and `notify_one` says whether there
//! was one), and since loom does not model time, a timed wait may time out at
//! any point while queued. `Arc` stays std's: its reference count is not what
//! the models check.
//!
//! Run the models with:
//!
//! ```text
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --lib loom_
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --test loom_sync
//! ```

#[cfg(not(troika_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, fence};

#[cfg(troika_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, fence};

#[cfg(not(troika_loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};

#[cfg(troika_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` with loom's API (`with`, `with_mut`), so that under
/// the model loom checks that no write to the cell overlaps another access.
#[cfg(not(troika_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(troika_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Call `f` with a pointer for reading the content.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Call `f` with a pointer for writing the content.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(troika_loom)]
pub(crate) use loom::thread::yield_now;
/// Give the CPU away: the thread's, or under the model loom's (a spin
/// that waits on another thread must yield there, or the model never lets
/// that thread run).
#[cfg(not(troika_loom))]
pub(crate) use std::thread::yield_now;

/// The calling thread's identity, for [`RLock`](crate::sync::RLock)'s owner.
#[cfg(not(troika_loom))]
pub(crate) type ThreadId = std::thread::ThreadId;

/// The calling thread's identity.
#[cfg(not(troika_loom))]
pub(crate) fn current_thread_id() -> ThreadId {
    std::thread::current().id()
}

#[cfg(troika_loom)]
pub(crate) use self::loom_model::{
    Condvar, Mutex, MutexGuard, ThreadId, WaitQueue, current_thread_id,
};

#[cfg(troika_loom)]
mod loom_model {
    use std::fmt;
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::time::Instant;

    pub(crate) type ThreadId = loom::thread::ThreadId;

    pub(crate) fn current_thread_id() -> ThreadId {
        loom::thread::current().id()
    }

    /// `parking_lot::Mutex`'s API over loom's mutex.
    #[derive(Default)]
    pub(crate) struct Mutex<T: ?Sized>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }
    }

    impl<T: ?Sized> Mutex<T> {
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                guard: Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)),
                mutex: &self.0,
            }
        }
    }

    impl<T: ?Sized> fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Mutex { .. }")
        }
    }

    /// The guard, and its mutex (a condition variable wait unlocks and
    /// relocks it); the guard is empty only for the duration of a wait.
    pub(crate) struct MutexGuard<'a, T: ?Sized> {
        guard: Option<loom::sync::MutexGuard<'a, T>>,
        mutex: &'a loom::sync::Mutex<T>,
    }

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            match &self.guard {
                Some(guard) => guard,
                None => unreachable!("a mutex guard is only empty inside Condvar::wait"),
            }
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            match &mut self.guard {
                Some(guard) => guard,
                None => unreachable!("a mutex guard is only empty inside Condvar::wait"),
            }
        }
    }

    /// `parking_lot::WaitTimeoutResult`'s API.
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        /// Whether the wait timed out (rather than being notified).
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// `parking_lot::Condvar`'s API and guarantees, emulated over loom's
    /// mutex and condition variable with an explicit queue of waiters, so
    /// that a model cannot rely on more than `parking_lot` gives:
    ///
    /// - a waiter joins the queue before it releases the mutex, so a notify
    ///   sent after it released the mutex finds it;
    /// - `notify_one` wakes the oldest queued waiter and says whether there
    ///   was one; `notify_all` wakes those queued and says how many; a
    ///   notify with nobody queued is lost;
    /// - a timed wait may time out at any point while queued (loom explores
    ///   the notify arriving before and after), and a waiter that timed out
    ///   consumed no notify.
    pub(crate) struct Condvar {
        q: loom::sync::Mutex<WaitQueue>,
        cv: loom::sync::Condvar,
    }

    /// A kernel-like wait queue of tickets, shared by this condition
    /// variable and the futex model (`ipc::futex::model::LoomWord`): a
    /// waiter [`join`](Self::join)s, a wake picks only tickets already
    /// queued (oldest first) and is lost with none, and a waiter that gives
    /// up [`leave`](Self::leave)s having consumed no wake.
    #[derive(Debug, Default)]
    pub(crate) struct WaitQueue {
        next: u64,
        queued: Vec<u64>,
        woken: Vec<u64>,
    }

    impl WaitQueue {
        /// Queue a new waiter; returns its ticket.
        pub(crate) fn join(&mut self) -> u64 {
            let ticket = self.next;
            self.next += 1;
            self.queued.push(ticket);
            ticket
        }

        /// Whether `ticket` was woken (and forgets it).
        pub(crate) fn take_woken(&mut self, ticket: u64) -> bool {
            match self.woken.iter().position(|&t| t == ticket) {
                Some(i) => {
                    self.woken.swap_remove(i);
                    true
                }
                None => false,
            }
        }

        /// `ticket` stops waiting without a wake (a timeout, a signal).
        pub(crate) fn leave(&mut self, ticket: u64) {
            self.queued.retain(|&t| t != ticket);
        }

        /// Wakes at most `n` queued waiters, oldest first; returns how many.
        pub(crate) fn wake(&mut self, n: usize) -> usize {
            let k = n.min(self.queued.len());
            let picked: Vec<u64> = self.queued.drain(..k).collect();
            self.woken.extend(picked);
            k
        }

        /// How many waiters are queued now.
        pub(crate) fn len(&self) -> usize {
            self.queued.len()
        }
    }

    impl Default for Condvar {
        fn default() -> Condvar {
            Condvar::new()
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar {
                q: loom::sync::Mutex::new(WaitQueue::default()),
                cv: loom::sync::Condvar::new(),
            }
        }

        fn waiters(&self) -> loom::sync::MutexGuard<'_, WaitQueue> {
            self.q.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Queues, unlocks `guard`, waits (a timed wait may give up at any
        /// point), relocks. Returns whether it timed out.
        fn wait_inner<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>, timed: bool) -> bool {
            let Some(held) = guard.guard.take() else {
                return false;
            };
            let mut q = self.waiters();
            let ticket = q.join();
            drop(held);
            let timed_out = if timed {
                drop(q);
                loom::thread::yield_now();
                let mut q = self.waiters();
                if q.take_woken(ticket) {
                    false
                } else {
                    q.leave(ticket);
                    true
                }
            } else {
                while !q.take_woken(ticket) {
                    q = self.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                // Never hold the queue while taking the mutex: a notifier
                // may hold the mutex and want the queue.
                drop(q);
                false
            };
            guard.guard = Some(guard.mutex.lock().unwrap_or_else(PoisonError::into_inner));
            timed_out
        }

        pub(crate) fn wait<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>) {
            self.wait_inner(guard, false);
        }

        /// Time does not pass in a model: the wait may time out at any point
        /// while queued, whatever the deadline.
        pub(crate) fn wait_until<T: ?Sized>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            WaitTimeoutResult(self.wait_inner(guard, true))
        }

        /// Wakes the oldest queued waiter; false if nobody was queued.
        pub(crate) fn notify_one(&self) -> bool {
            let woke = self.waiters().wake(1) == 1;
            if woke {
                self.cv.notify_all();
            }
            woke
        }

        /// Wakes every queued waiter; returns how many.
        pub(crate) fn notify_all(&self) -> usize {
            let n = self.waiters().wake(usize::MAX);
            if n > 0 {
                self.cv.notify_all();
            }
            n
        }
    }

    impl fmt::Debug for Condvar {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Condvar { .. }")
        }
    }
}
