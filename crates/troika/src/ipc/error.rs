//! The one error type of the `ipc` module.

use std::io;

/// Why an IPC operation failed.
///
/// Every fallible call in [`crate::ipc`] returns this type. Match on it, or
/// use the `is_*` helpers for the common questions ("did it time out?",
/// "is the other side gone?").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The operation did not complete before its timeout.
    #[error("the operation timed out")]
    TimedOut,
    /// A non-blocking put found the queue full.
    #[error("the queue is full")]
    Full,
    /// A non-blocking get found the queue (or pipe) empty.
    #[error("nothing to receive")]
    Empty,
    /// The other end of a pipe was closed (dropped) by its process, and no
    /// message is left to read: this is end-of-file. A
    /// [`Queue`](crate::ipc::Queue) says the same when every other process
    /// that held it let go of it and no other handle is left here.
    #[error("the peer closed its end of the pipe")]
    Disconnected,
    /// The process holding the other end of a pipe died; or, for a
    /// [`Queue`](crate::ipc::Queue), every process that could still put into
    /// it is gone and one of them died (see "A producer that died" there).
    #[error("the peer process {pid} died")]
    PeerDied {
        /// The pid of the process that died.
        pid: u32,
    },
    /// The [`Queue`](crate::ipc::Queue) was closed: a put fails at once, a
    /// get once the items put before the close are drained.
    #[error("the queue is closed")]
    Closed,
    /// The shared buffer holds something no troika process writes: a frame
    /// longer than the buffer, counters outside it. A peer running other
    /// code, or one that scribbled over the shared memory, did it; the data
    /// in it cannot be trusted, and nothing was allocated or read for it.
    #[error("the shared buffer is corrupted: {0}")]
    Corrupted(String),
    /// A value could not be serialized or deserialized.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// A message does not fit in the buffer of the queue or pipe.
    #[error("a message of {len} bytes does not fit in a buffer of {capacity} bytes")]
    TooLarge {
        /// The encoded length of the message, with its 4-byte frame header.
        len: usize,
        /// The buffer's capacity in bytes.
        capacity: usize,
    },
    /// A [`BoundedSemaphore`](crate::ipc::BoundedSemaphore) was released more
    /// times than it was acquired.
    #[error("the bounded semaphore was released past its initial value {max}")]
    SemaphoreOverflow {
        /// The semaphore's initial (and maximum) value.
        max: u32,
    },
    /// A [`Barrier`](crate::ipc::Barrier) was broken: a party timed out or
    /// called [`abort`](crate::ipc::Barrier::abort).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// An index was outside an [`Array`](crate::ipc::Array) or a shared list.
    #[error("index {index} is out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The length at the time.
        len: usize,
    },
    /// A serialized handle could not be reopened: the process that created the
    /// object has exited, the handle is stale, or it names another type.
    #[error("cannot open the shared object: {0}")]
    InvalidHandle(String),
    /// The [`Manager`](crate::ipc::Manager) could not be reached or stopped
    /// answering (for example, its process died).
    #[error("the manager is unreachable: {0}")]
    ManagerGone(String),
    /// The manager refused the connection: wrong token or another user.
    #[error("the manager refused the connection: {0}")]
    AuthFailed(String),
    /// The manager has no object of this name and kind.
    #[error("the manager has no {kind} named {name:?}")]
    NoSuchObject {
        /// `"map"` or `"list"`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// An argument was out of its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What troika was doing.
        context: &'static str,
        /// The error from the OS.
        #[source]
        source: io::Error,
    },
}

impl IpcError {
    /// True if the operation timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, IpcError::TimedOut)
    }

    /// True if the other side is gone: a pipe peer closed its end or died,
    /// every producer of a queue is gone, or the manager is unreachable.
    /// (A closed queue is [`is_closed`](Self::is_closed).)
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self,
            IpcError::Disconnected | IpcError::PeerDied { .. } | IpcError::ManagerGone(_)
        )
    }

    /// True if the queue was closed ([`IpcError::Closed`]).
    pub fn is_closed(&self) -> bool {
        matches!(self, IpcError::Closed)
    }

    /// True if a value failed to serialize or deserialize.
    pub fn is_serialization(&self) -> bool {
        matches!(self, IpcError::Serialization(_))
    }

    pub(crate) fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        IpcError::Io {
            context,
            source: source.into(),
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = IpcError> = std::result::Result<T, E>;
