//! Cross-process communication and synchronisation.

mod error;
#[cfg(loom)]
#[doc(hidden)]
pub mod futex;
#[cfg(not(loom))]
pub(crate) mod futex;
mod locks;
#[cfg(loom)]
#[doc(hidden)]
pub mod raw;
#[cfg(not(loom))]
pub(crate) mod raw;
mod shm;

pub use error::{IpcError, Result};
pub use locks::{Barrier, BoundedSemaphore, Event, Lock, LockGuard, Semaphore};
mod pipe;
mod queue;
mod ring;
mod shared;
pub use pipe::{DEFAULT_PIPE_BYTES, Pipe};
pub use queue::{DEFAULT_QUEUE_BYTES, Queue};
pub use shared::{Array, Pod, SharedGuard, Value};
mod manager;
pub use manager::{Manager, ManagerAddress, SharedList, SharedMap};
