//! [`Condition`]: wait for a change made under a lock (Python's
//! `threading.Condition`).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loom::Condvar;

use super::lock::{Held, Lock, LockGuard};

/// A condition variable bound to a [`Lock`] (Python's `threading.Condition`).
///
/// [`lock`](Condition::lock) takes the bound lock and returns a
/// [`ConditionGuard`]; while holding it, a thread can
/// [`wait`](ConditionGuard::wait), which releases the lock, sleeps until
/// another thread calls [`notify`](Condition::notify) or
/// [`notify_all`](Condition::notify_all), and takes the lock again before
/// returning. Because the guard is the proof that the lock is held, Python's
/// "cannot wait on un-acquired lock" cannot happen.
///
/// A plain `wait` may return without a matching notify (another thread may
/// have changed the state again first), so wait in a loop or use
/// [`wait_for`](ConditionGuard::wait_for), which re-checks a predicate.
///
/// The lock is a [`Lock`], which is not reentrant (Python's `Condition()`
/// defaults to an `RLock`): do not take it again inside the guard.
///
/// Several conditions can share one lock ([`Condition::with_lock`]), as a
/// bounded queue's "not empty" and "not full" do. Notifying does not require
/// holding the lock, but the change being announced should be made under it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use troika::sync::{Condition, Thread};
///
/// let items = Arc::new(Condition::with_data(Vec::<u32>::new()));
/// let consumer = {
///     let items = Arc::clone(&items);
///     Thread::spawn("consumer", move || {
///         let mut guard = items.lock();
///         // Sleeps (lock released) until the vector is non-empty.
///         guard.wait_for(|v| !v.is_empty());
///         guard.pop()
///     })
///     .unwrap()
/// };
/// items.lock().push(7);
/// items.notify();
/// assert_eq!(consumer.join().unwrap(), Some(7));
/// ```
pub struct Condition<T: ?Sized = ()> {
    lock: Arc<Lock<T>>,
    cv: Condvar,
}

impl Condition<()> {
    /// A condition with a new lock of its own that protects no data
    /// (Python's `Condition()`).
    pub fn new() -> Condition<()> {
        Condition::with_data(())
    }
}

impl<T> Condition<T> {
    /// A condition with a new lock of its own that owns `data`; the guard
    /// from [`lock`](Condition::lock) reaches it.
    pub fn with_data(data: T) -> Condition<T> {
        Condition::with_lock(Arc::new(Lock::with_data(data)))
    }
}

impl<T: Default> Default for Condition<T> {
    fn default() -> Condition<T> {
        Condition::with_data(T::default())
    }
}

impl<T: ?Sized> Condition<T> {
    /// A condition bound to an existing, possibly shared, lock (Python's
    /// `Condition(lock)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Condition, Lock};
    ///
    /// // One lock, two conditions: "not empty" and "not full" of a buffer.
    /// let buffer = Arc::new(Lock::with_data(Vec::<u8>::new()));
    /// let not_empty = Condition::with_lock(Arc::clone(&buffer));
    /// let not_full = Condition::with_lock(Arc::clone(&buffer));
    /// not_full.lock().push(1); // either condition takes the same lock
    /// not_empty.notify();
    /// assert_eq!(*not_empty.lock(), [1]);
    /// assert!(Arc::ptr_eq(not_empty.bound_lock(), not_full.bound_lock()));
    /// ```
    pub fn with_lock(lock: Arc<Lock<T>>) -> Condition<T> {
        Condition {
            lock,
            cv: Condvar::new(),
        }
    }

    /// The lock this condition is bound to.
    pub fn bound_lock(&self) -> &Arc<Lock<T>> {
        &self.lock
    }

    /// Takes the bound lock, blocking until it is free.
    pub fn lock(&self) -> ConditionGuard<'_, T> {
        ConditionGuard {
            guard: self.lock.lock(),
            cond: self,
        }
    }

    /// Takes the bound lock if it is free.
    pub fn try_lock(&self) -> Option<ConditionGuard<'_, T>> {
        self.lock
            .try_lock()
            .map(|guard| ConditionGuard { guard, cond: self })
    }

    /// Takes the bound lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<ConditionGuard<'_, T>> {
        self.lock
            .lock_timeout(timeout)
            .map(|guard| ConditionGuard { guard, cond: self })
    }

    /// Wakes one waiting thread, if any (Python's `notify()`).
    pub fn notify(&self) {
        self.cv.notify_one();
    }

    /// Wakes up to `n` waiting threads (Python's `notify(n)`); returns how
    /// many were woken.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::Condition;
    ///
    /// let cond = Condition::new();
    /// assert_eq!(cond.notify_n(2), 0); // nobody waits: a notify is not stored
    /// ```
    pub fn notify_n(&self, n: usize) -> usize {
        let mut woken = 0;
        while woken < n && self.cv.notify_one() {
            woken += 1;
        }
        woken
    }

    /// Wakes every waiting thread (Python's `notify_all()`); returns how many
    /// were woken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Condition, Thread};
    ///
    /// let go = Arc::new(Condition::with_data(false));
    /// let runners: Vec<_> = (0..3)
    ///     .map(|i| {
    ///         let go = Arc::clone(&go);
    ///         Thread::spawn(format!("runner-{i}"), move || go.lock().wait_for(|started| *started))
    ///             .unwrap()
    ///     })
    ///     .collect();
    /// *go.lock() = true;
    /// go.notify_all(); // each runner re-checks `started` and leaves
    /// for r in runners {
    ///     r.join().unwrap();
    /// }
    /// ```
    pub fn notify_all(&self) -> usize {
        self.cv.notify_all()
    }
}

impl<T: ?Sized> fmt::Debug for Condition<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("locked", &self.lock.locked())
            .finish_non_exhaustive()
    }
}

/// The bound lock of a [`Condition`], held; dereferences to the lock's data
/// and releases the lock when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a, T: ?Sized = ()> {
    guard: LockGuard<'a, T>,
    cond: &'a Condition<T>,
}

impl<T: ?Sized> ConditionGuard<'_, T> {
    /// Releases the lock, sleeps until notified or `deadline`, and takes the
    /// lock again. Returns `false` if the deadline passed first.
    fn wait_until(&mut self, deadline: Option<Instant>) -> bool {
        let lock = self.guard.lock_ref();
        let mut state = lock.state().lock();
        // Our guard holds the lock, so the state is `Guard`. Free it for the
        // duration of the wait; the guard is borrowed by this call, so its
        // data cannot be reached meanwhile. Setting `Free` and starting to
        // wait happen under `state`, so a notify sent by whoever takes the
        // lock next cannot be missed.
        *state = Held::Free;
        lock.notify_freed();
        let notified = match deadline {
            None => {
                self.cond.cv.wait(&mut state);
                true
            }
            Some(deadline) => !self.cond.cv.wait_until(&mut state, deadline).timed_out(),
        };
        lock.wait_free(&mut state);
        *state = Held::Guard;
        notified
    }

    /// Releases the lock, sleeps until notified, and takes the lock again.
    /// May return without a matching notify; re-check the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Condition, Thread};
    ///
    /// let done = Arc::new(Condition::with_data(false));
    /// let worker = {
    ///     let done = Arc::clone(&done);
    ///     Thread::spawn("worker", move || {
    ///         *done.lock() = true;
    ///         done.notify();
    ///     })
    ///     .unwrap()
    /// };
    /// let mut guard = done.lock();
    /// while !*guard {
    ///     guard.wait(); // the lock is free while this thread sleeps
    /// }
    /// drop(guard);
    /// worker.join().unwrap();
    /// ```
    pub fn wait(&mut self) {
        self.wait_until(None);
    }

    /// Like [`wait`](ConditionGuard::wait) but gives up after `timeout`.
    /// Returns `false` if it timed out (Python's `wait(timeout)` result). The
    /// lock is held again either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::Condition;
    ///
    /// let cond = Condition::new();
    /// let mut guard = cond.lock();
    /// assert!(!guard.wait_timeout(Duration::from_millis(5))); // nobody notified
    /// ```
    #[must_use = "false means the wait timed out"]
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Waits until `ready` returns `true` for the protected data (Python's
    /// `wait_for(predicate)`). Checks first, so it returns at once if the
    /// condition already holds.
    pub fn wait_for(&mut self, mut ready: impl FnMut(&mut T) -> bool) {
        while !ready(&mut *self.guard) {
            self.wait_until(None);
        }
    }

    /// Like [`wait_for`](ConditionGuard::wait_for) but gives up after
    /// `timeout`; returns the predicate's last value (`false` on timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::Condition;
    ///
    /// let jobs = Condition::with_data(0u32);
    /// let mut guard = jobs.lock();
    /// assert!(!guard.wait_for_timeout(|n| *n > 0, Duration::from_millis(5)));
    /// *guard = 3;
    /// assert!(guard.wait_for_timeout(|n| *n > 0, Duration::from_millis(5))); // true at once
    /// ```
    #[must_use = "false means the condition still does not hold"]
    pub fn wait_for_timeout(
        &mut self,
        mut ready: impl FnMut(&mut T) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if ready(&mut *self.guard) {
                return true;
            }
            if !self.wait_until(deadline) {
                return ready(&mut *self.guard);
            }
        }
    }
}

impl<T: ?Sized> Deref for ConditionGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for ConditionGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ConditionGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConditionGuard")
            .field(&&*self.guard)
            .finish()
    }
}
