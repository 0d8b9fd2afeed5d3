//! The typed errors of `troika::sync`: one type per operation (see the
//! module docs' "One shape per operation").

use std::fmt;

/// A release that was refused; the lock or semaphore is left unchanged.
///
/// Python raises `RuntimeError` or `ValueError` for these; troika returns
/// this error and never panics. The process-shared semaphores of
/// [`ipc`](crate::ipc) return the same type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The lock is not held (Python's "release unlocked lock").
    #[error("release of a lock that is not held")]
    NotLocked,
    /// The [`Lock`](super::Lock) is held by a
    /// [`LockGuard`](super::LockGuard), which alone may release it.
    #[error("the lock is held by a guard; drop the guard to release it")]
    HeldByGuard,
    /// The [`RLock`](super::RLock) is held by another thread (Python's
    /// "cannot release un-acquired lock").
    #[error("the reentrant lock is held by another thread")]
    NotOwner,
    /// A [`BoundedSemaphore`](super::BoundedSemaphore) would pass its
    /// starting value (Python's "Semaphore released too many times").
    #[error("semaphore released too many times (its bound is {bound})")]
    AboveBound {
        /// The semaphore's starting value.
        bound: usize,
    },
    /// A [`Semaphore`](super::Semaphore)'s counter would pass `usize::MAX`.
    #[error("semaphore counter overflow")]
    Overflow,
}

/// [`Queue::put`](super::Queue::put) found the queue closed; the item is
/// handed back (Python 3.13's `queue.ShutDown`).
///
/// A blocking put can fail only this way. The same operation in
/// [`ipc`](crate::ipc) returns [`ipc::PutError`](crate::ipc::PutError).
///
/// # Examples
///
/// ```
/// use troika::sync::{PutError, Queue};
///
/// let q = Queue::new(0);
/// q.close();
/// assert_eq!(q.put("late"), Err(PutError("late")));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue is closed")]
pub struct PutError<T>(pub T);

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Why [`Queue::try_put`](super::Queue::try_put) did not put; the item is
/// handed back.
///
/// # Examples
///
/// ```
/// use troika::sync::{Queue, TryPutError};
///
/// let q = Queue::new(1);
/// q.try_put("first").unwrap();
/// let err = q.try_put("second").unwrap_err();
/// assert!(err.is_full());
/// assert_eq!(err.into_inner(), "second");
/// q.close();
/// assert_eq!(q.try_put("third"), Err(TryPutError::Closed("third")));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryPutError<T> {
    /// The queue was full (Python's `queue.Full`).
    #[error("the queue is full")]
    Full(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
}

impl<T> TryPutError<T> {
    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TryPutError::Full(_))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryPutError::Closed(_))
    }

    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(item) | TryPutError::Closed(item) => item,
        }
    }
}

/// Why [`Queue::put_timeout`](super::Queue::put_timeout) did not put; the
/// item is handed back.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::sync::{PutTimeoutError, Queue};
///
/// let q = Queue::new(1);
/// q.put(1).unwrap();
/// let err = q.put_timeout(2, Duration::from_millis(1)).unwrap_err();
/// assert_eq!(err, PutTimeoutError::Timeout(2));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PutTimeoutError<T> {
    /// The queue stayed full until the timeout (Python raises `queue.Full`
    /// here).
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was, or became, closed.
    #[error("the queue is closed")]
    Closed(T),
}

impl<T> PutTimeoutError<T> {
    /// Whether the put timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PutTimeoutError::Timeout(_))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, PutTimeoutError::Closed(_))
    }

    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutTimeoutError::Timeout(item) | PutTimeoutError::Closed(item) => item,
        }
    }
}

macro_rules! debug_without_item {
    ($ty:ident, $($variant:ident),+) => {
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($ty::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)+
                }
            }
        }
    };
}
debug_without_item!(TryPutError, Full, Closed);
debug_without_item!(PutTimeoutError, Timeout, Closed);

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PutError(..)")
    }
}

/// [`Queue::get`](super::Queue::get) found the queue closed and drained.
///
/// A blocking get can fail only this way. The same operation in
/// [`ipc`](crate::ipc) returns [`ipc::GetError`](crate::ipc::GetError).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the queue is closed and empty")]
pub struct GetError;

/// Why [`Queue::try_get`](super::Queue::try_get) returned no item.
///
/// # Examples
///
/// ```
/// use troika::sync::{Queue, TryGetError};
///
/// let q: Queue<u8> = Queue::new(0);
/// assert_eq!(q.try_get(), Err(TryGetError::Empty));
/// q.close();
/// assert_eq!(q.try_get(), Err(TryGetError::Closed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryGetError {
    /// The queue was empty (Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// The queue is closed and drained.
    #[error("the queue is closed and empty")]
    Closed,
}

impl TryGetError {
    /// Whether the queue was empty (and still open).
    pub fn is_empty(&self) -> bool {
        *self == TryGetError::Empty
    }

    /// Whether the queue is closed and drained.
    pub fn is_closed(&self) -> bool {
        *self == TryGetError::Closed
    }
}

/// Why [`Queue::get_timeout`](super::Queue::get_timeout) returned no item.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::sync::{GetTimeoutError, Queue};
///
/// let q: Queue<u8> = Queue::new(0);
/// assert_eq!(q.get_timeout(Duration::from_millis(1)), Err(GetTimeoutError::Timeout));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GetTimeoutError {
    /// The queue stayed empty until the timeout (Python raises `queue.Empty`
    /// here).
    #[error("timed out waiting for an item")]
    Timeout,
    /// The queue is closed and drained.
    #[error("the queue is closed and empty")]
    Closed,
}

impl GetTimeoutError {
    /// Whether the get timed out.
    pub fn is_timeout(&self) -> bool {
        *self == GetTimeoutError::Timeout
    }

    /// Whether the queue is closed and drained.
    pub fn is_closed(&self) -> bool {
        *self == GetTimeoutError::Closed
    }
}

/// [`Queue::task_done`](super::Queue::task_done) was called more times than
/// items were put (Python's `ValueError: task_done() called too many times`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than items were put")]
pub struct TaskDoneError;

/// Why [`Barrier::wait`](super::Barrier::wait) did not pass the barrier (and
/// why [`ipc::Barrier::wait`](crate::ipc::Barrier::wait) did not: the same
/// type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// The barrier is broken: aborted, reset while this thread waited,
    /// another waiter timed out, or the action panicked (Python's
    /// `BrokenBarrierError`). Call [`Barrier::reset`](super::Barrier::reset)
    /// to use it again.
    #[error("the barrier is broken")]
    Broken,
    /// This thread's wait timed out; it broke the barrier for the others.
    #[error("timed out waiting at the barrier (the barrier is now broken)")]
    Timeout,
}

impl BarrierError {
    /// Whether this party's own wait timed out.
    pub fn is_timeout(&self) -> bool {
        *self == BarrierError::Timeout
    }

    /// Whether the barrier was broken by someone else (or before the wait).
    pub fn is_broken(&self) -> bool {
        *self == BarrierError::Broken
    }
}
