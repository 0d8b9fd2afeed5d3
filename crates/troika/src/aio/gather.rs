//! `gather`, `try_gather` and `as_completed`: many futures at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};

use super::spawn::{Indexed, Spawned};
use crate::futures::TaskError;

/// How [`gather_with`] runs its futures.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::aio::GatherOptions;
///
/// let options = GatherOptions::new()
///     .cancel_on_error(true)
///     .timeout(Duration::from_secs(5));
/// assert!(options.cancels_on_error());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatherOptions {
    cancel_on_error: bool,
    timeout: Option<Duration>,
}

impl GatherOptions {
    /// Run everything to the end, with no time limit (Python's default `gather`).
    pub fn new() -> GatherOptions {
        GatherOptions::default()
    }

    /// When one future fails (panics or times out), abort the others; their
    /// outcomes become [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
    /// Futures that had already finished keep their values.
    pub fn cancel_on_error(mut self, cancel: bool) -> GatherOptions {
        self.cancel_on_error = cancel;
        self
    }

    /// Give each future at most `limit`, counted from the call; past it its
    /// outcome is [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut).
    pub fn timeout(mut self, limit: Duration) -> GatherOptions {
        self.timeout = Some(limit);
        self
    }

    /// Whether a failure aborts the siblings.
    pub fn cancels_on_error(&self) -> bool {
        self.cancel_on_error
    }
}

/// Run every future at once as its own task and return all outcomes in input
/// order, like Python's `asyncio.gather(..., return_exceptions=True)`.
///
/// Each future is spawned on the current tokio runtime, so they run in
/// parallel on a multi-threaded runtime. A panic fails only its own entry
/// ([`TaskError::is_panic`], message kept). Dropping the returned future
/// aborts every task still running.
///
/// Called outside a tokio runtime, every entry is an error saying so.
///
/// # Examples
///
/// Two dishes cooked at once, as `asyncio.gather` would:
///
/// ```
/// use std::time::Duration;
///
/// async fn cook(dish: &'static str, ms: u64) -> &'static str {
///     tokio::time::sleep(Duration::from_millis(ms)).await;
///     dish
/// }
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let dishes = rt.block_on(troika::aio::gather([cook("地三鲜", 20), cook("回锅肉", 10)]));
/// assert_eq!(dishes, [Ok("地三鲜"), Ok("回锅肉")]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn gather<I, F>(futures: I) -> Vec<Result<F::Output, TaskError>>
where
    I: IntoIterator<Item = F>,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    gather_with(futures, GatherOptions::new()).await
}

/// [`gather`] with options: abort the siblings on the first failure, and a
/// time limit for each future.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::aio::{GatherOptions, gather_with};
///
/// async fn cook(minutes: u32) -> u32 {
///     if minutes == 0 {
///         panic!("burnt");
///     }
///     std::future::pending().await // a dish that is never done
/// }
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let outcomes = rt.block_on(gather_with([cook(0), cook(5)], GatherOptions::new().cancel_on_error(true)));
/// assert_eq!(outcomes[0].as_ref().unwrap_err().panic_message(), Some("burnt"));
/// assert!(outcomes[1].as_ref().unwrap_err().is_cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn gather_with<I, F>(
    futures: I,
    options: GatherOptions,
) -> Vec<Result<F::Output, TaskError>>
where
    I: IntoIterator<Item = F>,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut running = FuturesUnordered::new();
    let mut aborts = Vec::new();
    for (index, future) in futures.into_iter().enumerate() {
        let task = Spawned::new(future, options.timeout);
        aborts.extend(task.abort_handle());
        running.push(Indexed { index, task });
    }
    let mut outcomes: Vec<Option<Result<F::Output, TaskError>>> = std::iter::repeat_with(|| None)
        .take(running.len())
        .collect();
    let mut aborted = false;
    while let Some((index, outcome)) = running.next().await {
        if options.cancel_on_error && !aborted && outcome.is_err() {
            aborted = true;
            for abort in &aborts {
                abort.abort();
            }
        }
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err(TaskError::new(crate::ErrorKind::Cancelled))))
        .collect()
}

/// Run futures that return `Result<T, E>` at once; on the first error abort
/// the rest and return that error, else every value in input order.
///
/// This is `asyncio.gather` without `return_exceptions`, plus what Python's
/// `TaskGroup` adds: the siblings of a failed task are cancelled instead of
/// left running. A panic or a spawn failure becomes an `E` through
/// `From<TaskError>`.
///
/// # Examples
///
/// ```
/// use troika::TaskError;
///
/// #[derive(Debug, PartialEq)]
/// enum FetchError { NotFound(u32), Task(String) }
/// impl From<TaskError> for FetchError {
///     fn from(e: TaskError) -> Self { FetchError::Task(e.to_string()) }
/// }
///
/// async fn fetch(page: u32) -> Result<u32, FetchError> {
///     if page == 3 { Err(FetchError::NotFound(3)) } else { Ok(page * 10) }
/// }
///
/// let rt = tokio::runtime::Runtime::new()?;
/// assert_eq!(rt.block_on(troika::aio::try_gather((1..3).map(fetch))), Ok(vec![10, 20]));
/// assert_eq!(rt.block_on(troika::aio::try_gather((1..5).map(fetch))), Err(FetchError::NotFound(3)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn try_gather<I, F, T, E>(futures: I) -> Result<Vec<T>, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<TaskError> + Send + 'static,
{
    let mut running = FuturesUnordered::new();
    for (index, future) in futures.into_iter().enumerate() {
        running.push(Indexed {
            index,
            task: Spawned::new(future, None),
        });
    }
    let mut values: Vec<Option<T>> = std::iter::repeat_with(|| None)
        .take(running.len())
        .collect();
    while let Some((index, outcome)) = running.next().await {
        // Returning early drops `running`, which aborts every sibling.
        let value = outcome.map_err(E::from)??;
        if let Some(slot) = values.get_mut(index) {
            *slot = Some(value);
        }
    }
    // Every index was filled exactly once by the loop above.
    Ok(values.into_iter().flatten().collect())
}

/// Run every future at once and yield `(input position, outcome)` as each
/// finishes, like `asyncio.as_completed` (which loses the position).
///
/// The futures are spawned on the current runtime when the stream is first
/// polled (so the stream may be built outside the runtime); dropping the
/// stream aborts those not yet yielded. A troika [`Handle`](crate::Handle)
/// is a future, so this works on pool tasks too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let order: Vec<usize> = rt.block_on(async {
///     let naps = [30u64, 1, 15].map(|ms| tokio::time::sleep(Duration::from_millis(ms)));
///     troika::aio::as_completed(naps).map(|(position, _)| position).collect().await
/// });
/// assert_eq!(order.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn as_completed<I, F>(futures: I) -> AsCompletedStream<F::Output>
where
    I: IntoIterator<Item = F>,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let unstarted: Vec<Starter<F::Output>> = futures
        .into_iter()
        .map(|future| Box::new(move || Spawned::new(future, None)) as Starter<F::Output>)
        .collect();
    AsCompletedStream {
        remaining: unstarted.len(),
        unstarted,
        running: FuturesUnordered::new(),
    }
}

type Starter<T> = Box<dyn FnOnce() -> Spawned<T> + Send>;

/// The stream returned by [`as_completed`]: `(input position, outcome)` in
/// completion order.
#[must_use = "streams do nothing unless polled"]
pub struct AsCompletedStream<T> {
    unstarted: Vec<Starter<T>>,
    running: FuturesUnordered<Indexed<T>>,
    remaining: usize,
}

impl<T> AsCompletedStream<T> {
    /// How many outcomes have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl<T> Stream for AsCompletedStream<T> {
    type Item = (usize, Result<T, TaskError>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        for (index, start) in std::mem::take(&mut this.unstarted).into_iter().enumerate() {
            this.running.push(Indexed {
                index,
                task: start(),
            });
        }
        let next = this.running.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = &next {
            this.remaining -= 1;
        }
        next
    }
}

impl<T> std::fmt::Debug for AsCompletedStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedStream")
            .field("remaining", &self.remaining)
            .finish()
    }
}
