//! The errors of the `ipc` module: [`IpcError`], and the error type of each
//! queue and pipe operation, which converts into it.

use std::io;

pub use crate::sync::{BarrierError, ReleaseError};

/// Why an IPC operation failed: the error every error of [`crate::ipc`]
/// converts into.
///
/// Constructors, the [`Manager`](crate::ipc::Manager)'s calls, [`Array`]
/// indexing and the like return it directly. The queue and pipe operations
/// return an error type of their own that says which outcomes the
/// operation can have ([`TryGetError`], [`GetTimeoutError`], ... — see the
/// table in the [module docs](crate::ipc#one-shape-per-operation)); each
/// converts into `IpcError` with `?`, so a function that does several IPC
/// calls can return `Result<_, IpcError>`. Match on it, or use the `is_*`
/// helpers for the common questions ("did it time out?", "is the other
/// side gone?").
///
/// [`Array`]: crate::ipc::Array
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The operation did not complete before its timeout: the `Timeout` of
    /// [`PutTimeoutError`] or [`GetTimeoutError`], or a barrier's
    /// [`BarrierError::Timeout`], converted.
    #[error("the operation timed out")]
    Timeout,
    /// A non-blocking put found the queue full ([`TryPutError::Full`],
    /// converted).
    #[error("the queue is full")]
    Full,
    /// A non-blocking get found the queue (or pipe) empty
    /// ([`TryGetError::Empty`], converted).
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
    /// A release was refused (the [`ReleaseError`] of a semaphore).
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// A [`Barrier`](crate::ipc::Barrier) was broken: a party timed out or
    /// called [`abort`](crate::ipc::Barrier::abort) ([`BarrierError::Broken`],
    /// converted).
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
        matches!(self, IpcError::Timeout)
    }

    /// True if a non-blocking get found nothing.
    pub fn is_empty(&self) -> bool {
        matches!(self, IpcError::Empty)
    }

    /// True if a non-blocking put found no room.
    pub fn is_full(&self) -> bool {
        matches!(self, IpcError::Full)
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

impl From<BarrierError> for IpcError {
    fn from(e: BarrierError) -> IpcError {
        match e {
            BarrierError::Broken => IpcError::BrokenBarrier,
            BarrierError::Timeout => IpcError::Timeout,
        }
    }
}

/// Declares the error type of one queue or pipe operation: the outcomes
/// named in `$variant`, plus `Closed`, `Disconnected` and `Failed`.
macro_rules! op_error {
    (
        $(#[$meta:meta])*
        $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $msg:literal, $is:ident;
            )*
        }
        on_timeout: $on_timeout:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[error($msg)]
                $variant,
            )*
            /// The [`Queue`](crate::ipc::Queue) was
            /// [closed](crate::ipc::Queue::close) (for a get: closed and
            /// drained). A pipe is never `Closed`, only `Disconnected`.
            #[error("the queue is closed")]
            Closed,
            /// The other side is gone: the peer dropped its end of the
            /// [`Pipe`](crate::ipc::Pipe) (for a receive, after the buffered
            /// messages: this is end-of-file), or — for a get from a
            /// [`Queue`](crate::ipc::Queue) — every process that could put
            /// into it let go of it.
            #[error("the other side is gone")]
            Disconnected,
            /// A failure that only processes have: the peer process died
            /// ([`IpcError::PeerDied`]), the shared buffer is corrupted, the
            /// value did not serialize or is too large, the handle is stale.
            #[error(transparent)]
            Failed(IpcError),
        }

        impl $name {
            $(
                #[doc = concat!("True for [`", stringify!($name), "::", stringify!($variant), "`].")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$variant)
                }
            )*

            /// True if the queue was closed.
            pub fn is_closed(&self) -> bool {
                matches!(self, $name::Closed)
            }

            /// True if the other side is gone: [`Disconnected`](Self::Disconnected),
            /// or the peer process died.
            pub fn is_disconnected(&self) -> bool {
                match self {
                    $name::Disconnected => true,
                    $name::Failed(e) => e.is_disconnected(),
                    _ => false,
                }
            }

            /// Shapes an internal error into this operation's outcome.
            #[allow(unreachable_patterns)]
            pub(crate) fn from_ipc(e: IpcError) -> $name {
                match e {
                    IpcError::Timeout => $on_timeout,
                    $(IpcError::$variant => $name::$variant,)*
                    IpcError::Closed => $name::Closed,
                    IpcError::Disconnected => $name::Disconnected,
                    e => $name::Failed(e),
                }
            }
        }

        impl From<$name> for IpcError {
            fn from(e: $name) -> IpcError {
                match e {
                    $($name::$variant => IpcError::$variant,)*
                    $name::Closed => IpcError::Closed,
                    $name::Disconnected => IpcError::Disconnected,
                    $name::Failed(e) => e,
                }
            }
        }
    };
}

op_error! {
    /// Why a blocking [`Queue::put`](crate::ipc::Queue::put) or
    /// [`Pipe::send`](crate::ipc::Pipe::send) failed. It waits while the
    /// buffer is full, so it has no "full" and no "timeout" outcome.
    PutError {}
    on_timeout: PutError::Failed(IpcError::Timeout)
}

op_error! {
    /// Why [`Queue::try_put`](crate::ipc::Queue::try_put) or
    /// [`Pipe::try_send`](crate::ipc::Pipe::try_send) did not put.
    TryPutError {
        /// No room now, or another process is in the middle of an
        /// operation on the buffer (Python's `queue.Full`).
        Full = "the queue is full", is_full;
    }
    on_timeout: TryPutError::Full
}

op_error! {
    /// Why [`Queue::put_timeout`](crate::ipc::Queue::put_timeout) or
    /// [`Pipe::send_timeout`](crate::ipc::Pipe::send_timeout) did not put.
    PutTimeoutError {
        /// The buffer stayed full until the timeout.
        Timeout = "timed out waiting for room", is_timeout;
    }
    on_timeout: PutTimeoutError::Timeout
}

op_error! {
    /// Why a blocking [`Queue::get`](crate::ipc::Queue::get) or
    /// [`Pipe::recv`](crate::ipc::Pipe::recv) returned nothing. It waits
    /// while the buffer is empty, so it has no "empty" and no "timeout"
    /// outcome.
    GetError {}
    on_timeout: GetError::Failed(IpcError::Timeout)
}

op_error! {
    /// Why [`Queue::try_get`](crate::ipc::Queue::try_get) or
    /// [`Pipe::try_recv`](crate::ipc::Pipe::try_recv) returned nothing.
    TryGetError {
        /// Nothing buffered now, or another process is in the middle of an
        /// operation on the buffer (Python's `queue.Empty`).
        Empty = "nothing to receive", is_empty;
    }
    on_timeout: TryGetError::Empty
}

op_error! {
    /// Why [`Queue::get_timeout`](crate::ipc::Queue::get_timeout) or
    /// [`Pipe::recv_timeout`](crate::ipc::Pipe::recv_timeout) returned
    /// nothing.
    GetTimeoutError {
        /// Nothing arrived until the timeout.
        Timeout = "timed out waiting for an item", is_timeout;
    }
    on_timeout: GetTimeoutError::Timeout
}

/// Shorthand for results of this module.
pub type Result<T, E = IpcError> = std::result::Result<T, E>;
