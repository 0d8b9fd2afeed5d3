//! troika runs work concurrently in the three ways every Python concurrency
//! tutorial teaches — **threads, processes and coroutines** — behind one
//! futures API.
//!
//! TODO: tutorial.

#![warn(missing_docs)]

pub mod aio;
pub mod futures;
pub mod ipc;
pub mod process;
pub mod sync;
pub mod thread;

pub use futures::{
    AsCompleted, CancelToken, ConfigError, ErrorKind, Executor, Exit, Handle, SubmitError,
    SubmitErrorReason, TaskError, WaitMode, WaitOutcome, as_completed, default_window, wait,
};
pub use ipc::{
    Array, Barrier, BoundedSemaphore, Event, IpcError, Lock, Manager, Pipe, Pod, Queue, Semaphore,
    SharedList, SharedMap, Value,
};
pub use thread::{Scope, ThreadPool, ThreadPoolBuilder};
