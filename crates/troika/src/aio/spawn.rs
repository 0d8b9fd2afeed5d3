//! Spawning on the current runtime with typed errors, and aborting what is
//! dropped: the pieces every other part of `aio` is built from.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use tokio::task::JoinHandle;

use crate::futures::{ErrorKind, TaskError, panic_message};

/// The error for an `aio` call made outside a tokio runtime.
pub(crate) fn no_runtime() -> TaskError {
    TaskError::new(ErrorKind::Failed(
        "no tokio runtime: call this from async code running on tokio".into(),
    ))
}

/// Map a tokio join error to troika's: a panic keeps its message, an abort
/// is a cancellation.
pub(crate) fn join_error(err: tokio::task::JoinError) -> TaskError {
    if err.is_panic() {
        TaskError::new(ErrorKind::Panicked(panic_message(&*err.into_panic())))
    } else {
        TaskError::new(ErrorKind::Cancelled)
    }
}

/// Await `future` for at most `limit`; past it the future is dropped and the
/// outcome is [`ErrorKind::TimedOut`].
///
/// Must run on a tokio runtime with its timer enabled (any runtime built
/// with `enable_all` or `enable_time`, and every [`AsyncExecutor`](super::AsyncExecutor)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let outcome = rt.block_on(troika::aio::timeout(
///     Duration::from_millis(10),
///     std::future::pending::<()>(),
/// ));
/// assert!(outcome.unwrap_err().is_timeout());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, TaskError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| TaskError::new(ErrorKind::TimedOut(limit)))
}

/// Run `future` with an optional time limit, catching a panic as a value.
///
/// Built from combinators rather than as an `async fn`: an `async fn` that
/// takes a future by value and awaits it in one of two branches keeps room
/// for the future in its arguments and in each branch, which made a
/// thousand spawned fetches of `troika crawl` take 3.75 MB instead of about
/// one.
pub(crate) fn guarded<F: Future>(
    future: F,
    limit: Option<Duration>,
) -> impl Future<Output = Result<F::Output, TaskError>> {
    let bounded =
        match limit {
            Some(limit) => Either::Left(tokio::time::timeout(limit, future).map(move |outcome| {
                outcome.map_err(|_| TaskError::new(ErrorKind::TimedOut(limit)))
            })),
            None => Either::Right(future.map(Ok)),
        };
    AssertUnwindSafe(bounded)
        .catch_unwind()
        .map(|caught| match caught {
            Ok(outcome) => outcome,
            Err(payload) => Err(TaskError::new(ErrorKind::Panicked(panic_message(
                &*payload,
            )))),
        })
}

/// A task spawned on the current runtime whose outcome is a
/// `Result<T, TaskError>`; dropping it aborts the task.
pub(crate) enum Spawned<T> {
    Running(JoinHandle<Result<T, TaskError>>),
    Failed(Option<TaskError>),
}

impl<T: Send + 'static> Spawned<T> {
    /// Spawn `future` (with an optional time limit) on the current runtime.
    pub(crate) fn new<F>(future: F, limit: Option<Duration>) -> Spawned<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Spawned::Running(runtime.spawn(guarded(future, limit))),
            Err(_) => Spawned::Failed(Some(no_runtime())),
        }
    }

    /// A handle that aborts the task, if it was spawned.
    pub(crate) fn abort_handle(&self) -> Option<tokio::task::AbortHandle> {
        match self {
            Spawned::Running(join) => Some(join.abort_handle()),
            Spawned::Failed(_) => None,
        }
    }
}

impl<T> Future for Spawned<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Spawned::Running(join) => Pin::new(join)
                .poll(cx)
                .map(|joined| joined.map_err(join_error).and_then(|outcome| outcome)),
            Spawned::Failed(err) => Poll::Ready(Err(err.take().unwrap_or_else(no_runtime))),
        }
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        if let Spawned::Running(join) = self {
            join.abort();
        }
    }
}

impl<T> std::fmt::Debug for Spawned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spawned::Running(join) => f
                .debug_struct("Spawned")
                .field("finished", &join.is_finished())
                .finish(),
            Spawned::Failed(_) => f.debug_struct("Spawned").field("failed", &true).finish(),
        }
    }
}

/// A spawned task tagged with its input position.
pub(crate) struct Indexed<T> {
    pub(crate) index: usize,
    pub(crate) task: Spawned<T>,
}

impl<T> Future for Indexed<T> {
    type Output = (usize, Result<T, TaskError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let index = this.index;
        Pin::new(&mut this.task)
            .poll(cx)
            .map(|outcome| (index, outcome))
    }
}
