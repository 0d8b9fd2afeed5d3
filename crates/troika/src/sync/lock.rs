//! [`Lock`] and [`RLock`]: Python's `threading.Lock` and `threading.RLock`.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex, MutexGuard, ThreadId, current_thread_id};

use super::ReleaseError;

/// Who holds a [`Lock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Nobody.
    Free,
    /// A [`LockGuard`]; only the guard's drop frees it.
    Guard,
    /// A guard-less [`Lock::acquire`] (Python style); any thread may
    /// [`Lock::release`] it.
    Manual,
}

/// A mutual-exclusion lock, optionally owning the data it protects
/// (Python's `threading.Lock`).
///
/// Two ways to use it:
///
/// - **The Rust way**: [`lock`](Lock::lock) returns a [`LockGuard`] that
///   dereferences to the protected data and releases the lock when dropped —
///   Python's `with lock:`, except that the data can only be reached while the
///   lock is held. [`try_lock`](Lock::try_lock) and
///   [`lock_timeout`](Lock::lock_timeout) give up instead of blocking.
/// - **Python's way**: [`acquire`](Lock::acquire) / [`release`](Lock::release)
///   with no guard (useful as a plain signal; as in Python, *any* thread may
///   release a lock taken this way). Misuse is an error, not a panic:
///   releasing a lock that is not held, or one held by a guard, returns a
///   [`ReleaseError`].
///
/// Built on a `parking_lot` mutex and condition variable; a blocked thread
/// sleeps. There is no fairness guarantee, as in Python.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeSet;
/// use std::sync::Arc;
/// use troika::sync::{Lock, Thread};
///
/// let remaining = Arc::new(Lock::with_data(BTreeSet::new()));
/// let threads: Vec<_> = (0..3)
///     .map(|i| {
///         let remaining = Arc::clone(&remaining);
///         Thread::spawn(format!("t{i}"), move || {
///             remaining.lock().insert(i);
///         })
///         .unwrap()
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap();
/// }
/// assert_eq!(remaining.lock().len(), 3);
///
/// // Python style: acquire, release; a second release is an error.
/// let lock = Lock::new();
/// lock.acquire();
/// assert!(lock.locked());
/// lock.release().unwrap();
/// assert!(lock.release().is_err());
/// ```
pub struct Lock<T: ?Sized = ()> {
    state: Mutex<Held>,
    freed: Condvar,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a `LockGuard`, and at most one
// usable guard exists at a time: a guard is created only on the
// `Free -> Guard` transition, made under `state`, and only its drop leaves
// `Guard` — except `Condition` waits, which set `Free` while the waiting
// guard is mutably borrowed by the wait (so it cannot reach the data) and
// take `Free -> Guard` again before returning. So sharing a `Lock<T>`
// between threads hands `&mut T` to one thread at a time, which is sound
// exactly when `T: Send` (as for `std::sync::Mutex`).
unsafe impl<T: ?Sized + Send> Sync for Lock<T> {}

// SAFETY: moving the lock moves the `T` it owns; the rest is `Send`.
unsafe impl<T: ?Sized + Send> Send for Lock<T> {}

impl Lock<()> {
    /// A new, unlocked lock that protects no data (Python's `Lock()`).
    pub fn new() -> Lock<()> {
        Lock::with_data(())
    }
}

impl<T> Lock<T> {
    /// A new, unlocked lock owning `data`, reachable only through
    /// [`lock`](Lock::lock)'s guard.
    pub fn with_data(data: T) -> Lock<T> {
        Lock {
            state: Mutex::new(Held::Free),
            freed: Condvar::new(),
            data: UnsafeCell::new(data),
        }
    }

    /// Consumes the lock and returns its data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: Default> Default for Lock<T> {
    fn default() -> Lock<T> {
        Lock::with_data(T::default())
    }
}

impl<T: ?Sized> Lock<T> {
    /// Takes the lock from `Free` to `held`, waiting until `deadline` (or for
    /// ever). Returns whether it was taken.
    fn take(&self, held: Held, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock();
        while *state != Held::Free {
            match deadline {
                None => self.freed.wait(&mut state),
                Some(deadline) => {
                    if self.freed.wait_until(&mut state, deadline).timed_out()
                        && *state != Held::Free
                    {
                        return false;
                    }
                }
            }
        }
        *state = held;
        true
    }

    fn try_take(&self, held: Held) -> bool {
        let mut state = self.state.lock();
        if *state == Held::Free {
            *state = held;
            true
        } else {
            false
        }
    }

    fn free(&self) {
        *self.state.lock() = Held::Free;
        self.freed.notify_one();
    }

    /// Blocks until the lock is free, takes it and returns a guard that
    /// releases it on drop (Python's `with lock:`).
    pub fn lock(&self) -> LockGuard<'_, T> {
        self.take(Held::Guard, None);
        LockGuard {
            lock: self,
            _data: PhantomData,
        }
    }

    /// Takes the lock if it is free; `None` if it is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::Lock;
    ///
    /// let lock = Lock::with_data(0);
    /// let mut held = lock.try_lock().unwrap();
    /// *held += 1;
    /// assert!(lock.try_lock().is_none()); // held: no waiting, no deadlock
    /// drop(held);
    /// assert_eq!(*lock.try_lock().unwrap(), 1);
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        // Build the guard only on success: a guard dropped on the failure
        // path would free a lock someone else holds.
        if self.try_take(Held::Guard) {
            Some(LockGuard {
                lock: self,
                _data: PhantomData,
            })
        } else {
            None
        }
    }

    /// Takes the lock, waiting at most `timeout`; `None` on timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use troika::sync::{Lock, Thread};
    ///
    /// let lock = Arc::new(Lock::with_data(vec![1]));
    /// let held = lock.lock();
    /// let waiter = {
    ///     let lock = Arc::clone(&lock);
    ///     Thread::spawn("waiter", move || lock.lock_timeout(Duration::from_millis(5)).is_some())
    ///         .unwrap()
    /// };
    /// assert!(!waiter.join().unwrap()); // gave up while `held` lived
    /// drop(held);
    /// assert_eq!(lock.lock_timeout(Duration::from_secs(1)).unwrap().len(), 1);
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockGuard<'_, T>> {
        if self.take(Held::Guard, Instant::now().checked_add(timeout)) {
            Some(LockGuard {
                lock: self,
                _data: PhantomData,
            })
        } else {
            None
        }
    }

    /// Python's `acquire()`: blocks until the lock is free and takes it, with
    /// no guard. Release it with [`release`](Lock::release), from any thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Lock, Thread};
    ///
    /// // Taken by one thread, released by another: a one-shot signal.
    /// let gate = Arc::new(Lock::new());
    /// gate.acquire();
    /// let opener = {
    ///     let gate = Arc::clone(&gate);
    ///     Thread::spawn("opener", move || gate.release()).unwrap()
    /// };
    /// gate.acquire(); // waits for the opener's release
    /// assert_eq!(opener.join().unwrap(), Ok(()));
    /// gate.release().unwrap();
    /// ```
    pub fn acquire(&self) {
        self.take(Held::Manual, None);
    }

    /// Takes the lock, with no guard, if it is free (Python's
    /// `acquire(blocking=False)`); returns whether it did.
    #[must_use = "false means the lock was not taken"]
    pub fn try_acquire(&self) -> bool {
        self.try_take(Held::Manual)
    }

    /// Takes the lock, with no guard, waiting at most `timeout` (Python's
    /// `acquire(timeout=…)`); returns whether it did.
    #[must_use = "false means the lock was not taken"]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.take(Held::Manual, Instant::now().checked_add(timeout))
    }

    /// Python's `release()`: releases a lock taken with
    /// [`acquire`](Lock::acquire) and wakes one waiter. Any thread may
    /// release it.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotLocked`] if the lock is free (Python's
    /// `RuntimeError: release unlocked lock`); [`ReleaseError::HeldByGuard`]
    /// if it is held by a [`LockGuard`], which alone may release it.
    pub fn release(&self) -> Result<(), ReleaseError> {
        let mut state = self.state.lock();
        match *state {
            Held::Free => Err(ReleaseError::NotLocked),
            Held::Guard => Err(ReleaseError::HeldByGuard),
            Held::Manual => {
                *state = Held::Free;
                drop(state);
                self.freed.notify_one();
                Ok(())
            }
        }
    }

    /// Whether the lock is held, by a guard or by [`acquire`](Lock::acquire).
    pub fn locked(&self) -> bool {
        *self.state.lock() != Held::Free
    }

    /// The data, through a unique borrow: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The internal state mutex, for [`Condition`](super::Condition).
    pub(crate) fn state(&self) -> &Mutex<Held> {
        &self.state
    }

    /// Waits (on the state mutex already held) until the lock is free.
    pub(crate) fn wait_free(&self, state: &mut MutexGuard<'_, Held>) {
        while **state != Held::Free {
            self.freed.wait(state);
        }
    }

    /// Wakes one thread waiting for the lock to be free.
    pub(crate) fn notify_freed(&self) {
        self.freed.notify_one();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Lock");
        match self.try_lock() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Holds a [`Lock`] and gives access to its data; releases the lock when
/// dropped.
///
/// A guard may be sent to another thread (and dropped there) when `T: Send`,
/// and shared between threads only when `T: Sync`:
///
/// ```compile_fail
/// use std::cell::Cell;
/// use troika::sync::Lock;
///
/// fn shareable<T: Sync>(_: &T) {}
/// let lock = Lock::with_data(Cell::new(0));
/// let guard = lock.lock();
/// shareable(&guard); // error: a `Cell` must not be reached from two threads
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a, T: ?Sized = ()> {
    lock: &'a Lock<T>,
    /// The guard hands out `&mut T`, so it may be shared between threads only
    /// if `T: Sync` and sent only if `T: Send`, as `&mut T` itself. (Without
    /// this, `&Lock<T>` alone would make the guard `Sync` for any `T: Send`,
    /// letting two threads reach a `Cell` through one shared guard.)
    _data: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> LockGuard<'a, T> {
    /// The lock this guard holds.
    pub(crate) fn lock_ref(&self) -> &'a Lock<T> {
        self.lock
    }
}

impl<T: ?Sized> Deref for LockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard exists only while the lock's state is `Guard`
        // for it (see the `Sync` impl of `Lock`), so no other reference to the
        // data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique too.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.free();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for LockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockGuard").field(&&**self).finish()
    }
}

/// Owner and depth of an [`RLock`].
#[derive(Debug, Default)]
struct Owner {
    thread: Option<ThreadId>,
    depth: usize,
}

/// A reentrant lock: the thread that holds it may take it again, and must
/// release it as many times (Python's `threading.RLock`).
///
/// Unlike [`Lock`], an `RLock` knows its owner: releasing it from another
/// thread, or more times than it was taken, is a [`ReleaseError`]. The guard
/// from [`lock`](RLock::lock) cannot be sent to another thread. `RLock`
/// protects no data (a reentrant lock can only hand out shared references;
/// for that, use `parking_lot::ReentrantMutex`).
///
/// # Examples
///
/// ```
/// use troika::sync::RLock;
///
/// let rlock = RLock::new();
/// rlock.acquire();
/// rlock.acquire(); // same thread: no deadlock
/// assert_eq!(rlock.depth(), 2);
/// rlock.release().unwrap();
/// rlock.release().unwrap();
/// assert!(rlock.release().is_err()); // one release too many
///
/// let outer = rlock.lock();
/// let inner = rlock.lock();
/// drop(inner);
/// drop(outer);
/// assert!(!rlock.locked());
/// ```
#[derive(Debug, Default)]
pub struct RLock {
    owner: Mutex<Owner>,
    freed: Condvar,
}

impl RLock {
    /// A new, unlocked reentrant lock.
    pub fn new() -> RLock {
        RLock::default()
    }

    fn take(&self, deadline: Option<Instant>) -> bool {
        let me = current_thread_id();
        let mut owner = self.owner.lock();
        loop {
            match owner.thread {
                None => {
                    owner.thread = Some(me);
                    owner.depth = 1;
                    return true;
                }
                Some(t) if t == me => {
                    owner.depth = owner.depth.saturating_add(1);
                    return true;
                }
                Some(_) => match deadline {
                    None => self.freed.wait(&mut owner),
                    Some(deadline) => {
                        if self.freed.wait_until(&mut owner, deadline).timed_out()
                            && owner.thread.is_some()
                        {
                            return false;
                        }
                    }
                },
            }
        }
    }

    /// Takes the lock (again, if this thread holds it), blocking while another
    /// thread holds it. Release it as many times with
    /// [`release`](RLock::release), from this thread.
    pub fn acquire(&self) {
        self.take(None);
    }

    /// Takes the lock if it is free or already this thread's; returns whether
    /// it did.
    #[must_use = "false means the lock was not taken"]
    pub fn try_acquire(&self) -> bool {
        let me = current_thread_id();
        let mut owner = self.owner.lock();
        match owner.thread {
            None => {
                owner.thread = Some(me);
                owner.depth = 1;
                true
            }
            Some(t) if t == me => {
                owner.depth = owner.depth.saturating_add(1);
                true
            }
            Some(_) => false,
        }
    }

    /// Takes the lock, waiting at most `timeout`; returns whether it did.
    #[must_use = "false means the lock was not taken"]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.take(Instant::now().checked_add(timeout))
    }

    /// Releases one level of ownership; the lock is free again when the
    /// owner has released it as many times as it took it.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotLocked`] if nobody holds the lock;
    /// [`ReleaseError::NotOwner`] if another thread holds it (Python's
    /// `RuntimeError: cannot release un-acquired lock`).
    pub fn release(&self) -> Result<(), ReleaseError> {
        let me = current_thread_id();
        let mut owner = self.owner.lock();
        match owner.thread {
            None => Err(ReleaseError::NotLocked),
            Some(t) if t != me => Err(ReleaseError::NotOwner),
            Some(_) => {
                owner.depth -= 1;
                if owner.depth == 0 {
                    owner.thread = None;
                    drop(owner);
                    self.freed.notify_one();
                }
                Ok(())
            }
        }
    }

    /// Takes the lock and returns a guard that releases one level on drop
    /// (Python's `with rlock:`).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::RLock;
    ///
    /// fn inner(rlock: &RLock) {
    ///     let _again = rlock.lock(); // the caller holds it already: fine
    ///     assert_eq!(rlock.depth(), 2);
    /// }
    /// let rlock = RLock::new();
    /// let _held = rlock.lock();
    /// inner(&rlock);
    /// assert_eq!(rlock.depth(), 1);
    /// ```
    pub fn lock(&self) -> RLockGuard<'_> {
        self.acquire();
        self.guard()
    }

    /// A guard for a level this thread has just taken. Only call it after a
    /// successful acquire: the guard releases a level when dropped.
    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Like [`lock`](RLock::lock) but gives up at once if another thread holds
    /// the lock.
    pub fn try_lock(&self) -> Option<RLockGuard<'_>> {
        if self.try_acquire() {
            Some(self.guard())
        } else {
            None
        }
    }

    /// Like [`lock`](RLock::lock) but gives up after `timeout`; `None` if
    /// another thread held it all along.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use troika::sync::{RLock, Thread};
    ///
    /// let rlock = Arc::new(RLock::new());
    /// let held = rlock.lock();
    /// let other = {
    ///     let rlock = Arc::clone(&rlock);
    ///     Thread::spawn("other", move || rlock.lock_timeout(Duration::from_millis(5)).is_some())
    ///         .unwrap()
    /// };
    /// assert!(!other.join().unwrap()); // another thread's: it timed out
    /// assert!(rlock.lock_timeout(Duration::from_millis(5)).is_some()); // ours: at once
    /// drop(held);
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<RLockGuard<'_>> {
        if self.acquire_timeout(timeout) {
            Some(self.guard())
        } else {
            None
        }
    }

    /// Whether any thread holds the lock.
    pub fn locked(&self) -> bool {
        self.owner.lock().thread.is_some()
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned(&self) -> bool {
        self.owner.lock().thread == Some(current_thread_id())
    }

    /// How many times the owner has taken the lock without releasing it
    /// (0 when free).
    pub fn depth(&self) -> usize {
        self.owner.lock().depth
    }
}

/// Holds one level of an [`RLock`]; releases it on drop. Not `Send`: it must
/// be dropped on the thread that owns the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail: the guard was created by this thread's acquire and
        // cannot leave it, so this thread owns at least this level.
        let _ = self.lock.release();
    }
}
