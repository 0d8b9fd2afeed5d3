//! The futures API that every executor shares.
//!
//! An executor takes a task and returns a [`Handle`]. Whatever ran the task —
//! a thread, a child process or the async runtime — the handle is the same:
//! wait for it with [`Handle::result`], poll it with [`Handle::is_done`],
//! cancel it, attach a done-callback, or `.await` it from async code. A task
//! that failed reports a [`TaskError`] saying why.
//!
//! On top of `submit`, the [`Executor`] trait provides ordered and unordered
//! `map` with a bounded in-flight window, and the free functions
//! [`as_completed`] and [`wait`] work on any handles.

mod cancel;
mod error;
mod executor;
mod handle;
mod promise;
mod start;
mod stats;

pub use cancel::CancelToken;
pub use error::{
    BuildError, ConfigError, ErrorKind, Exit, SubmitError, SubmitErrorReason, TaskError,
    signal_name,
};
pub(crate) use error::{checks, panic_message};
pub use executor::{
    AsCompleted, Executor, Map, MapUnordered, Task, WaitMode, WaitOutcome, as_completed,
    default_window, wait,
};
pub use handle::{Handle, Promise};
pub(crate) use handle::{Inner, future_pair, pair};
pub(crate) use start::check_start;
#[cfg(test)]
pub(crate) use start::{fail_nth_start, threads_left};
pub use stats::PoolStats;
