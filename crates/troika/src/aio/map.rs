//! Bounded concurrent map: a crawler's `asyncio.Semaphore(10)` as one call.

use std::future::Future;

use futures::stream::{self, Stream, StreamExt};

use super::spawn::{Indexed, Spawned};
use crate::futures::TaskError;

/// Run `f` over every item with at most `limit` futures in flight, yielding
/// outcomes in input order.
///
/// This is a Python crawler's `async with asyncio.Semaphore(10)` around
/// each fetch, then `asyncio.gather`, without the semaphore: items are
/// pulled from the iterator only as slots free up, so an endless iterator works in bounded
/// memory. Each future runs as its own task (in parallel on a multi-threaded
/// runtime); a panic fails only its own item. Dropping the stream aborts the
/// futures in flight. `limit` 0 is taken as 1.
///
/// Input order means a slow item holds back the ones after it (they finish
/// and wait, still counted in `limit`); use [`map_bounded_unordered`] when
/// order does not matter.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let squares: Vec<u64> = rt.block_on(async {
///     troika::aio::map_bounded(1..=5u64, 2, |n| async move { n * n })
///         .map(|outcome| outcome.unwrap())
///         .collect()
///         .await
/// });
/// assert_eq!(squares, [1, 4, 9, 16, 25]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn map_bounded<I, F, Fut>(
    items: I,
    limit: usize,
    f: F,
) -> impl Stream<Item = Result<Fut::Output, TaskError>> + Send
where
    I: IntoIterator,
    I::IntoIter: Send,
    F: FnMut(I::Item) -> Fut + Send,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    stream_map_bounded(stream::iter(items), limit, f)
}

/// [`map_bounded`] over a [`Stream`] of items instead of an iterator.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let lengths: Vec<usize> = rt.block_on(async {
///     let words = futures::stream::iter(["coroutine", "thread", "process"]);
///     troika::aio::stream_map_bounded(words, 10, |w| async move { w.len() })
///         .map(Result::unwrap)
///         .collect()
///         .await
/// });
/// assert_eq!(lengths, [9, 6, 7]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream_map_bounded<S, F, Fut>(
    items: S,
    limit: usize,
    mut f: F,
) -> impl Stream<Item = Result<Fut::Output, TaskError>> + Send
where
    S: Stream + Send,
    F: FnMut(S::Item) -> Fut + Send,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    items
        .map(move |item| Spawned::new(f(item), None))
        .buffered(limit.max(1))
}

/// Run `f` over every item with at most `limit` futures in flight, yielding
/// `(input position, outcome)` as each finishes.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let mut seen: Vec<(usize, u32)> = rt.block_on(async {
///     troika::aio::map_bounded_unordered([3u32, 1, 2], 10, |n| async move { n * 10 })
///         .map(|(position, outcome)| (position, outcome.unwrap()))
///         .collect()
///         .await
/// });
/// seen.sort();
/// assert_eq!(seen, [(0, 30), (1, 10), (2, 20)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn map_bounded_unordered<I, F, Fut>(
    items: I,
    limit: usize,
    f: F,
) -> impl Stream<Item = (usize, Result<Fut::Output, TaskError>)> + Send
where
    I: IntoIterator,
    I::IntoIter: Send,
    F: FnMut(I::Item) -> Fut + Send,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    stream_map_bounded_unordered(stream::iter(items), limit, f)
}

/// [`map_bounded_unordered`] over a [`Stream`] of items.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let mut doubled: Vec<(usize, u32)> = rt.block_on(async {
///     let items = futures::stream::iter([3u32, 1, 2]);
///     troika::aio::stream_map_bounded_unordered(items, 2, |n| async move { n * 2 })
///         .map(|(i, r)| (i, r.unwrap()))
///         .collect()
///         .await
/// });
/// doubled.sort();
/// assert_eq!(doubled, [(0, 6), (1, 2), (2, 4)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream_map_bounded_unordered<S, F, Fut>(
    items: S,
    limit: usize,
    mut f: F,
) -> impl Stream<Item = (usize, Result<Fut::Output, TaskError>)> + Send
where
    S: Stream + Send,
    F: FnMut(S::Item) -> Fut + Send,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    items
        .enumerate()
        .map(move |(index, item)| Indexed {
            index,
            task: Spawned::new(f(item), None),
        })
        .buffer_unordered(limit.max(1))
}
