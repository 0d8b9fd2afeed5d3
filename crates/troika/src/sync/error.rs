//! The typed errors of `troika::sync`.

use std::fmt;

/// A release that was refused; the lock or semaphore is left unchanged.
///
/// Python raises `RuntimeError` or `ValueError` for these; troika returns
/// this error and never panics.
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

/// Why a [`Queue`](super::Queue) operation gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue was full and the put did not block (Python's `queue.Full`).
    #[error("queue is full")]
    Full,
    /// The queue was empty and the get did not block (Python's `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// A blocking operation's timeout passed first (Python raises `Full` or
    /// `Empty` here; troika says which way it failed).
    #[error("timed out waiting on the queue")]
    Timeout,
}

/// A put that failed; the item is handed back.
///
/// # Examples
///
/// ```
/// use troika::sync::{Queue, QueueError};
///
/// let q = Queue::new(1);
/// q.put_nowait("first").unwrap();
/// let err = q.put_nowait("second").unwrap_err();
/// assert_eq!(err.error(), QueueError::Full);
/// assert_eq!(err.into_inner(), "second");
/// ```
#[derive(PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct PutError<T> {
    error: QueueError,
    item: T,
}

impl<T> PutError<T> {
    pub(crate) fn new(error: QueueError, item: T) -> PutError<T> {
        PutError { error, item }
    }

    /// Why the put failed: [`QueueError::Full`] or [`QueueError::Timeout`].
    pub fn error(&self) -> QueueError {
        self.error
    }

    /// Whether the queue was full (non-blocking put).
    pub fn is_full(&self) -> bool {
        self.error == QueueError::Full
    }

    /// Whether the put timed out.
    pub fn is_timeout(&self) -> bool {
        self.error == QueueError::Timeout
    }

    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.item
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// [`Queue::task_done`](super::Queue::task_done) was called more times than
/// items were put (Python's `ValueError: task_done() called too many times`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than items were put")]
pub struct TaskDoneError;

/// Why [`Barrier::wait`](super::Barrier::wait) did not pass the barrier.
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
