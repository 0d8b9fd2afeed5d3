//! The synchronisation primitives of troika's hand-written sync code — the
//! futures' handle and every type in `troika::sync` — swapped for loom's
//! models under `--cfg troika_loom` (as tokio's `src/loom` facade does).
//!
//! Normally these are `parking_lot`'s `Mutex`/`Condvar`, std's atomics and
//! `std::thread::current().id()`. Under `--cfg troika_loom` they are thin wrappers
//! over loom's models with the same API, so the model checks can explore the
//! state machines built on top (the handle's phases, the lock's holder, the
//! condition's release-and-wait, the semaphore's count, the queue's task
//! count, the barrier's rounds) in every interleaving. Loom does not model
//! time: under loom a timed wait never times out, so the models use the
//! untimed operations. `Arc` stays std's: its reference count is not what the
//! models check.
//!
//! Run the models with:
//!
//! ```text
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --lib loom_
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --release --test loom_sync
//! ```

#[cfg(not(troika_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8};

#[cfg(troika_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8};

#[cfg(not(troika_loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};

/// The calling thread's identity, for [`RLock`](crate::sync::RLock)'s owner.
#[cfg(not(troika_loom))]
pub(crate) type ThreadId = std::thread::ThreadId;

/// The calling thread's identity.
#[cfg(not(troika_loom))]
pub(crate) fn current_thread_id() -> ThreadId {
    std::thread::current().id()
}

#[cfg(troika_loom)]
pub(crate) use self::loom_model::{Condvar, Mutex, MutexGuard, ThreadId, current_thread_id};

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
            MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
        }
    }

    impl<T: ?Sized> fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Mutex { .. }")
        }
    }

    /// The guard; empty only for the duration of a `Condvar` wait.
    pub(crate) struct MutexGuard<'a, T: ?Sized>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            match &self.0 {
                Some(guard) => guard,
                None => unreachable!("a mutex guard is only empty inside Condvar::wait"),
            }
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            match &mut self.0 {
                Some(guard) => guard,
                None => unreachable!("a mutex guard is only empty inside Condvar::wait"),
            }
        }
    }

    /// `parking_lot::WaitTimeoutResult`'s API.
    pub(crate) struct WaitTimeoutResult;

    impl WaitTimeoutResult {
        /// Loom does not model time: a timed wait never times out.
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    /// `parking_lot::Condvar`'s API over loom's condition variable.
    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            if let Some(inner) = guard.0.take() {
                guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
            }
        }

        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }

        /// Loom does not say whether a thread was woken; report that one was.
        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }

        /// Loom does not say how many threads were woken; report none.
        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    impl fmt::Debug for Condvar {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Condvar { .. }")
        }
    }
}
