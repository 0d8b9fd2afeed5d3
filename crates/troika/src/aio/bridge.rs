//! Awaiting pool tasks from async code: Python's `loop.run_in_executor`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::futures::{Executor, Handle, Task, TaskError};
use crate::thread::ThreadPool;

/// Submit `task` to any executor (a [`ThreadPool`], a process pool, an
/// [`AsyncExecutor`](super::AsyncExecutor)) and get a future of its outcome,
/// like Python's `loop.run_in_executor(pool, f)`.
///
/// The task is queued at once, not when the future is first polled. Awaiting
/// does not block the runtime: the pool's worker wakes this task when done.
/// Dropping the future before the outcome arrives cancels the task (a task
/// not yet started never runs; a process-pool task is killed); keep it
/// running with [`PoolFuture::detach`].
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(2)?;
/// let rt = tokio::runtime::Runtime::new()?;
/// let sum = rt.block_on(async {
///     // CPU work on the pool while the runtime keeps serving other tasks.
///     let a = troika::aio::run_in_executor(&pool, || (1..=1000u64).sum::<u64>());
///     let b = troika::aio::run_in_executor(&pool, || (1..=10u64).product::<u64>());
///     Ok::<_, troika::TaskError>(a.await? + b.await?)
/// })?;
/// assert_eq!(sum, 500_500 + 3_628_800);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_in_executor<E, T>(executor: &E, task: T) -> PoolFuture<T::Output>
where
    E: Executor<T>,
    T: Task,
{
    PoolFuture {
        handle: Some(executor.submit(task)),
    }
}

/// Run a blocking closure on a troika [`ThreadPool`] and await it: the
/// thread-pool case of [`run_in_executor`], without naming the task type.
///
/// # Examples
///
/// ```
/// let pool = troika::ThreadPool::new(1)?;
/// let rt = tokio::runtime::Runtime::new()?;
/// let text = rt.block_on(troika::aio::spawn_blocking_on(&pool, || "read from disk".to_owned()))?;
/// assert_eq!(text, "read from disk");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn_blocking_on<F, R>(pool: &ThreadPool, f: F) -> PoolFuture<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    PoolFuture {
        handle: Some(pool.submit(f)),
    }
}

/// A pool task awaited from async code; cancels the task if dropped early.
///
/// Returned by [`run_in_executor`] and [`spawn_blocking_on`].
#[must_use = "dropping a PoolFuture cancels its task"]
pub struct PoolFuture<T> {
    handle: Option<Handle<T>>,
}

impl<T> PoolFuture<T> {
    /// Give up the cancel-on-drop guarantee and take the plain handle; the
    /// task runs on whether or not anyone waits for it.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(1)?;
    /// let future = troika::aio::spawn_blocking_on(&pool, || 7);
    /// let handle = future.detach(); // dropping the future no longer cancels
    /// assert_eq!(handle.result()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detach(mut self) -> Handle<T> {
        // `handle` is only taken here (consuming self) or when ready.
        match self.handle.take() {
            Some(handle) => handle,
            None => Handle::ready(Err(TaskError::new(crate::ErrorKind::Failed(
                "the outcome was already taken".into(),
            )))),
        }
    }

    /// The underlying handle, to check or cancel the task.
    pub fn handle(&self) -> Option<&Handle<T>> {
        self.handle.as_ref()
    }
}

impl<T> Future for PoolFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(handle) = this.handle.as_mut() else {
            return Poll::Ready(Err(TaskError::new(crate::ErrorKind::Failed(
                "PoolFuture polled after completion".into(),
            ))));
        };
        match Pin::new(handle).poll(cx) {
            Poll::Ready(outcome) => {
                this.handle = None;
                Poll::Ready(outcome)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for PoolFuture<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.cancel();
        }
    }
}

impl<T> std::fmt::Debug for PoolFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolFuture")
            .field("handle", &self.handle)
            .finish()
    }
}
