//! The synchronisation primitives of hand-written sync code, swapped for
//! loom's under `--cfg loom` so the model checker can explore every
//! interleaving (as tokio's `src/loom` facade does).
//!
//! `Arc` stays std's: its reference count is not what the models check.
//!
//! Run the models with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p troika --lib --release loom_
//! ```

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8};
#[cfg(loom)]
pub(crate) use model::{Condvar, Mutex, MutexGuard};

/// parking_lot's API over loom's std-shaped primitives.
#[cfg(loom)]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().unwrap()
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().unwrap()
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    pub(crate) struct WaitResult(bool);

    impl WaitResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().unwrap();
            guard.0 = Some(self.0.wait(inner).unwrap());
        }

        /// Loom has no clock: a deadline wait is modelled as an untimed one.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitResult {
            self.wait(guard);
            WaitResult(false)
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
