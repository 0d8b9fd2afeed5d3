//! Coroutines: the async layer, on tokio.
//!
//! Python's `asyncio` runs coroutines on one thread's event loop; here they
//! are Rust futures on a tokio runtime, which may spread them over every
//! core. This module gives the usual `asyncio` patterns names that match:
//!
//! | asyncio | troika |
//! |---|---|
//! | `asyncio.run(main())` | a tokio runtime's `block_on`, or [`AsyncExecutor::block_on`] |
//! | `asyncio.gather(*coros, return_exceptions=True)` | [`gather`], [`gather_with`] |
//! | `asyncio.gather(*coros)` / `TaskGroup` | [`try_gather`] (the first error cancels the rest) |
//! | `async with Semaphore(10)` around each fetch | [`map_bounded`], [`map_bounded_unordered`] |
//! | `asyncio.as_completed` | [`as_completed`] |
//! | `asyncio.wait_for(coro, t)` | [`timeout`] |
//! | `loop.run_in_executor(pool, f)` | [`run_in_executor`], [`spawn_blocking_on`], or `handle.await` |
//! | `concurrent.futures` API on coroutines | [`AsyncExecutor`] |
//!
//! Every failure is a [`TaskError`](crate::TaskError): a panic is
//! [`Panicked`](crate::ErrorKind::Panicked) with its message, a time limit
//! [`TimedOut`](crate::ErrorKind::TimedOut), an abort
//! [`Cancelled`](crate::ErrorKind::Cancelled).
//!
//! # Hello, coroutine
//!
//! An `async fn` does nothing until it is awaited on a runtime:
//!
//! ```
//! async fn print_hello() -> &'static str {
//!     "hello world"
//! }
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! assert_eq!(rt.block_on(print_hello()), "hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two dishes at once: gather
//!
//! [`gather`] runs futures at once and returns every outcome in input order.
//! Two dishes that each take 3 s are both done after 3 s, not 6:
//!
//! ```
//! use std::time::Duration;
//!
//! async fn cook(dish: &'static str) -> &'static str {
//!     tokio::time::sleep(Duration::from_millis(30)).await;
//!     dish
//! }
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! let served = rt.block_on(troika::aio::gather([cook("地三鲜"), cook("回锅肉")]));
//! assert_eq!(served, [Ok("地三鲜"), Ok("回锅肉")]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Fifty pages, ten at a time: map_bounded
//!
//! A Python crawler typically wraps each request in
//! `async with asyncio.Semaphore(10)`.
//! [`map_bounded`] is the same bound without the semaphore: it pulls the next
//! item only when one of the ten finishes, so it also works on an endless
//! input in bounded memory.
//!
//! ```
//! use futures::StreamExt;
//!
//! async fn fetch(page: u32) -> usize {
//!     tokio::task::yield_now().await;
//!     page as usize * 100
//! }
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! let sizes: Vec<usize> = rt.block_on(
//!     troika::aio::map_bounded(1..=50, 10, fetch).map(|size| size.unwrap()).collect(),
//! );
//! assert_eq!(sizes.len(), 50);
//! assert_eq!(sizes[0], 100);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # CPU work from async code: run_in_executor
//!
//! A future must not block its runtime thread. CPU-bound or blocking work goes
//! to a pool, and the async code awaits its handle:
//!
//! ```
//! let pool = troika::ThreadPool::new(2)?;
//! let rt = tokio::runtime::Runtime::new()?;
//! let handle = pool.submit(|| (1..=20u64).product::<u64>());
//! let factorial = rt.block_on(async { handle.await })?;
//! assert_eq!(factorial, 2_432_902_008_176_640_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The common executor API: AsyncExecutor
//!
//! [`AsyncExecutor`] owns a runtime (or borrows one) and offers what the pools
//! offer — `submit` returning a [`Handle`](crate::Handle), `map`,
//! `map_unordered`, `shutdown`, `terminate`, `stats`, and the
//! [`Executor`](crate::Executor) trait
//! through [`AsyncTask`] — so code written for pools runs futures too.
//!
//! ```
//! use std::time::Duration;
//! use troika::aio::AsyncExecutor;
//!
//! let executor = AsyncExecutor::builder().concurrency_limit(10).build()?;
//! let pages: Vec<u32> = executor
//!     .map(|n| async move { tokio::time::sleep(Duration::from_millis(1)).await; n }, 0..50)
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(pages.len(), 50);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bridge;
mod executor;
mod gather;
mod map;
mod spawn;

pub use bridge::{PoolFuture, run_in_executor, spawn_blocking_on};
pub use executor::{AsyncExecutor, AsyncExecutorBuilder, AsyncTask};
pub use gather::{AsCompletedStream, GatherOptions, as_completed, gather, gather_with, try_gather};
pub use map::{
    map_bounded, map_bounded_unordered, stream_map_bounded, stream_map_bounded_unordered,
};
pub use spawn::timeout;
