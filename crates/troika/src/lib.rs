//! troika runs work concurrently in the three ways every Python concurrency
//! tutorial teaches — **threads, processes and coroutines** — behind one
//! futures API, with the queues, locks and semaphores that go with them.
//!
//! troika targets Linux.
//!
//! # Hello, pool
//!
//! A pool takes tasks and hands back a [`Handle`] for each:
//!
//! ```
//! use troika::ThreadPool;
//!
//! let pool = ThreadPool::new(2)?;
//! let answer = pool.submit(|| 6 * 7);
//! assert_eq!(answer.result()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Many tasks: map, as_completed, wait
//!
//! [`ThreadPool::map`] runs a function over an iterator and yields the results
//! in input order. It is lazy and keeps only a bounded window of tasks in
//! flight, so it works on endless iterators. [`as_completed`] yields handles as
//! their tasks finish; [`wait`] returns when all, the first, or the first
//! failed task is done.
//!
//! ```
//! use troika::{ThreadPool, WaitMode, as_completed, wait};
//!
//! let pool = ThreadPool::new(2)?;
//! let doubled: Vec<u32> = pool.map(|x: u32| x * 2, 0..5).collect::<Result<_, _>>()?;
//! assert_eq!(doubled, [0, 2, 4, 6, 8]);
//!
//! let handles: Vec<_> = (0..3).map(|i| pool.submit(move || i)).collect();
//! assert!(wait(&handles, WaitMode::All, None).pending.is_empty());
//! let mut seen: Vec<_> = as_completed(handles).map(|(_, h)| h.result().unwrap()).collect();
//! seen.sort();
//! assert_eq!(seen, [0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Failures are values
//!
//! A task that panics, times out, is cancelled or meets a shut-down pool
//! fails with a [`TaskError`] that says which; the worker survives a panic.
//!
//! ```
//! use std::time::Duration;
//! use troika::ThreadPool;
//!
//! let pool = ThreadPool::builder().workers(1).task_timeout(Duration::from_secs(2)).build()?;
//! let err = pool.submit(|| -> () { panic!("no") }).result().unwrap_err();
//! assert!(err.is_panic());
//! let err = pool.submit(|| std::thread::sleep(Duration::from_secs(30))).result().unwrap_err();
//! assert!(err.is_timeout());
//! assert_eq!(pool.submit(|| "still serving").result()?, "still serving");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Borrowing: scoped tasks
//!
//! [`ThreadPool::scope`] lets tasks borrow from the caller's stack; every task
//! has finished when the scope returns.
//!
//! ```
//! let pool = troika::ThreadPool::new(2)?;
//! let words = ["threads", "processes", "coroutines"];
//! let lengths: Vec<usize> = pool.scope(|s| {
//!     let handles: Vec<_> = words.iter().map(|w| s.submit(move || w.len())).collect();
//!     handles.into_iter().map(|h| h.result().unwrap()).collect()
//! });
//! assert_eq!(lengths, [7, 9, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Async code
//!
//! A [`Handle`] is a `Future`: `handle.await` from async code waits without
//! blocking the runtime's thread. [`aio`] adds `gather`, a bounded concurrent
//! map (what Python writes as `gather` under an `asyncio.Semaphore(10)`),
//! completion-order iteration, timeouts, `run_in_executor`, and the
//! [`AsyncExecutor`], which offers the same futures API on tokio.
//!
//! # The parts
//!
//! - [`futures`] — the shared API: [`Handle`], [`TaskError`], [`Executor`].
//! - [`thread`] — the thread pool, [`ThreadPool`].
//! - [`sync`] — Python's `threading` and `queue` in Rust.
//! - [`process`], [`ipc`], [`aio`] — processes, cross-process IPC and coroutines.

#![warn(missing_docs)]

pub mod aio;
pub mod futures;
pub mod ipc;
mod loom;
pub mod process;
pub mod sync;
#[cfg(test)]
mod test_hooks;
pub mod thread;

pub use aio::{AsyncExecutor, AsyncExecutorBuilder, AsyncTask};
pub use futures::{
    AsCompleted, BuildError, CancelToken, ConfigError, ErrorKind, Executor, Exit, Handle,
    PoolStats, Promise, SubmitError, SubmitErrorReason, TaskError, WaitMode, WaitOutcome,
    as_completed, default_window, wait,
};
pub use process::{
    Call, Process, ProcessBuilder, ProcessMap, ProcessMapUnordered, ProcessPool,
    ProcessPoolBuilder, RemoteFn, SpawnError, init,
};
pub use sync::{Runnable, Thread, ThreadBuilder, Timer};
pub use thread::{Scope, ThreadPool, ThreadPoolBuilder};
