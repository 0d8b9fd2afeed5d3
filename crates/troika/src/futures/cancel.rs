//! Cooperative cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::handle::TaskState;

/// A flag a long-running task polls to stop early.
///
/// A thread cannot be killed safely, so a thread-pool task that should be
/// stoppable checks its token now and then. The token of a submitted task
/// ([`Handle::cancel_token`](super::Handle::cancel_token), or the one
/// [`ThreadPool::submit_with_token`](crate::ThreadPool::submit_with_token)
/// passes in) is set by [`Handle::cancel`](super::Handle::cancel), by the
/// pool's [task timeout](crate::ThreadPoolBuilder::task_timeout), and, for a
/// `submit_with_token` task, by [`ThreadPool::terminate`](crate::ThreadPool::terminate).
/// A free-standing token from [`CancelToken::new`] is set by
/// [`CancelToken::cancel`].
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(1).unwrap();
/// let handle = pool.submit_with_token(|token| {
///     let mut rounds = 0u64;
///     while !token.is_cancelled() {
///         rounds += 1;
///         std::thread::yield_now();
///     }
///     rounds
/// });
/// while !handle.is_running() {
///     std::thread::yield_now();
/// }
/// assert!(!handle.cancel()); // a running thread is not killed...
/// assert!(handle.result().is_ok()); // ...but it saw the token and returned.
/// ```
#[derive(Clone)]
pub struct CancelToken {
    state: Arc<dyn TaskState>,
}

impl TaskState for AtomicBool {
    fn stop_requested(&self) -> bool {
        self.load(Ordering::Relaxed)
    }

    fn request_stop(&self) {
        self.store(true, Ordering::Relaxed);
    }
}

impl CancelToken {
    /// A free-standing token, not tied to a task; cancel it with [`CancelToken::cancel`].
    pub fn new() -> CancelToken {
        CancelToken {
            state: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn from_state(state: Arc<dyn TaskState>) -> CancelToken {
        CancelToken { state }
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.state.stop_requested()
    }

    /// Request cancellation. For a task's token this asks the task to stop
    /// without deciding its outcome; [`Handle::cancel`](super::Handle::cancel)
    /// also removes a task that has not started.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = troika::CancelToken::new();
    /// let seen_by_worker = token.clone();
    /// let worker = std::thread::spawn(move || {
    ///     while !seen_by_worker.is_cancelled() {
    ///         std::thread::yield_now();
    ///     }
    /// });
    /// token.cancel();
    /// worker.join().unwrap();
    /// ```
    pub fn cancel(&self) {
        self.state.request_stop();
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
