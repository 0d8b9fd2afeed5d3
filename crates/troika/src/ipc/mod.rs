//! Cross-process communication and synchronisation: the `multiprocessing`
//! toolkit — [`Queue`], [`Pipe`], [`Value`], [`Array`], [`Manager`], and
//! process-shared [`Lock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`]
//! and [`Barrier`].
//!
//! # Hello, processes
//!
//! Every object here lives outside any one process: create it, then hand a
//! copy to another process by **serializing** it (serde) — as the argument of
//! a child process or a pool task, exactly where Python writes
//! `Process(target=f, args=(q,))`. What travels is small (where to find the
//! object, and a token that proves it is the right one); the receiving process
//! reopens the same object, and both sides then talk through it.
//!
//! ```
//! use troika::ipc::{Queue, Value};
//!
//! let q: Queue<String> = Queue::new(16).unwrap();
//! let hits = Value::new(0u64).unwrap();
//!
//! // What a child process would receive (here we reopen it ourselves).
//! let wire = serde_json::to_string(&(&q, &hits)).unwrap();
//! let (q2, hits2): (Queue<String>, Value<u64>) = serde_json::from_str(&wire).unwrap();
//!
//! q2.put(&"write data to mysql".to_string()).unwrap();
//! *hits2.lock() += 1;
//! assert_eq!(q.get().unwrap().replace("write", "read"), "read data to mysql");
//! assert_eq!(hits.get(), 1);
//! ```
//!
//! Clone an object to share it between threads of one process; clones and
//! reopened copies all name the same shared object.
//!
//! # One shape per operation
//!
//! Every call here has the shape of the call of the same name in
//! [`sync`](crate::sync) — the table and the reasons are in [the `sync`
//! docs](crate::sync#one-shape-per-operation). In short: taking a lock or a
//! unit returns a guard, `Option<guard>` or `bool`; `release` returns
//! `Result<(), `[`ReleaseError`]`>`; a barrier's `wait` returns the arrival
//! index or a [`BarrierError`] (both types shared with `sync`); and each
//! form of put and get has its own error type, named as in `sync`:
//!
//! | Call | Returns | Besides `Closed`, `Disconnected` and `Failed(IpcError)` |
//! |---|---|---|
//! | `Queue::put`, `Pipe::send` | `Result<(), `[`PutError`]`>` | — |
//! | `Queue::try_put`, `Pipe::try_send` | `Result<(), `[`TryPutError`]`>` | `Full` |
//! | `Queue::put_timeout`, `Pipe::send_timeout` | `Result<(), `[`PutTimeoutError`]`>` | `Timeout` |
//! | `Queue::get`, `Pipe::recv` | `Result<T, `[`GetError`]`>` | — |
//! | `Queue::try_get`, `Pipe::try_recv` | `Result<T, `[`TryGetError`]`>` | `Empty` |
//! | `Queue::get_timeout`, `Pipe::recv_timeout` | `Result<T, `[`GetTimeoutError`]`>` | `Timeout` |
//!
//! `Closed` is a [closed](Queue::close) queue; `Disconnected` is a pipe
//! whose peer dropped its end, or a queue that no process could put into
//! any more; `Failed` carries what only processes have (a peer that died,
//! a value that does not serialize or does not fit, a corrupted buffer, a
//! stale handle). Every one of these converts into [`IpcError`] with `?`:
//!
//! ```
//! use troika::ipc::{IpcError, Pipe};
//!
//! fn ping(conn: &Pipe<u32, u32>) -> Result<u32, IpcError> {
//!     conn.send(&1)?; // a PutError
//!     Ok(conn.recv()? + 1) // a GetError
//! }
//! let (a, b) = Pipe::<u32, u32>::pair().unwrap();
//! b.send(&41).unwrap();
//! assert_eq!(ping(&a).unwrap(), 42);
//! assert_eq!(b.recv().unwrap(), 1);
//! ```
//!
//! | Python (`multiprocessing`) | troika |
//! |---|---|
//! | `Queue(maxsize)`: `put`, `put_nowait`, `get`, `get(timeout=t)`, `close` | [`Queue::new`]: [`Queue::put`], [`Queue::try_put`], [`Queue::get`], [`Queue::get_timeout`], [`Queue::close`] |
//! | `a, b = Pipe()`: `send`, `recv`, `poll` | [`Pipe::pair`]: [`Pipe::send`], [`Pipe::recv`], [`Pipe::try_recv`] |
//! | `Value('i', 0)`, `Array('i', n)`, `with v.get_lock():` | [`Value::new`], [`Array::new`], [`Value::lock`] |
//! | `Lock()`, `Semaphore(n)`, `BoundedSemaphore(n)`, `Event()`, `Barrier(n)` | [`Lock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Barrier`] |
//! | `Manager()`: `dict()`, `list()` | [`Manager::start`]: [`Manager::map`], [`Manager::list`] |
//!
//! # Where the memory lives
//!
//! Every shared object is a segment of an anonymous `memfd_create(2)` file
//! mapped `MAP_SHARED`. Such a file has no name in any file system — nothing
//! is ever created in `/dev/shm` — and the kernel frees it when the last
//! process that maps it or holds its descriptor goes away, **however** that
//! process ends (exit, panic, SIGKILL). So no segment can be left behind,
//! which `shm_open` cannot promise (a process killed before `shm_unlink`
//! leaks its segment until reboot).
//!
//! A serialized handle names the segment as `/proc/<pid>/fd/<fd>` of the
//! process that serialized it, plus a random 64-bit token and the size, which
//! the receiver checks after opening (a stale or recycled descriptor number
//! is refused with [`IpcError::InvalidHandle`]), together with the kind of
//! object and a tag of its element type. Opening `/proc/<pid>/fd/<fd>` needs
//! the same rights as reading that process's memory (same user, ptrace
//! "read" access), so other users cannot reach the segments.
//!
//! The one condition: **the process that serialized a handle must still be
//! running when the receiver opens it**. To make this hold in the common case
//! — a parent that passes `q.clone()` to a child and drops its own copy at
//! once — a process keeps every segment it serialized mapped until as many
//! processes have opened it as it was sent to (a count in the segment's
//! header). A receiver that dies before opening leaves that segment mapped
//! until the sender exits; nothing outlives the processes.
//!
//! # Locks on futexes, and a holder that dies
//!
//! The locks, semaphores, events and barriers — and the locks inside queues,
//! pipes, values and arrays — are 32-bit words in shared memory driven by
//! `futex(2)` (shared, not private, futexes, so waiters in different
//! processes meet on the same word). The algorithms are written once against
//! a small facade and model-checked with loom (`tests/loom_ipc.rs`) against
//! an emulated futex that gives no more than the kernel does (a wake reaches
//! only waiters already queued; waits may return spuriously or time out at
//! any point). The design note `crates/troika/src/ipc/README.md` in the
//! repository describes the algorithms, what the models cover, and what they
//! cannot (real multi-process memory, pid reuse, signals, the kernel's
//! timing).
//!
//! A [`Lock`] word holds its holder's pid. A waiter sleeps in slices of 20 ms;
//! when a slice runs out it checks whether the holder's process still runs
//! (`pidfd_open` and poll, so an unreaped zombie counts as dead), and if it
//! does not, exactly one waiter takes the lock over and its guard's
//! [`holder_died`](LockGuard::holder_died) says so: the protected data may be
//! half-updated. Limits, documented rather than hidden: threads of one
//! process count as one holder; a pid recycled by the kernel within those
//! 20 ms would look alive (Linux hands out pids cyclically, so this needs the
//! whole pid space to wrap around in the meantime).
//!
//! Semaphores, events and barriers have no owner, so a dead process is not
//! detected there: use the `*_timeout` calls where that matters.
//!
//! # Queues and pipes
//!
//! A [`Queue`] is a ring buffer of postcard frames in shared memory, with a
//! lock and two futex condition words; a [`Pipe`] is two such rings, one per
//! direction, plus the pid and "closed" flag of each end. Each operation
//! commits with a single store, so a process killed in the middle of a put
//! or get leaves the ring consistent. A value that fails to serialize, or
//! that is larger than the buffer, is an error to the caller of `put`/`send`,
//! never a silent drop. The peer of a pipe dropping its end is end-of-file
//! ([`GetError::Disconnected`]) after the buffered messages; the peer's
//! process dying is [`IpcError::PeerDied`] (inside `Failed`), noticed within
//! 20 ms by a waiting `recv` or `send`. A queue can be
//! [closed](Queue::close) (getters drain it, then get [`GetError::Closed`]),
//! and a `get` waiting on a queue that no
//! living process could put into any more fails the same 20 ms later (the
//! rule and its limits are in [`Queue`]'s docs). Every call with a timeout
//! or a `try_` in its name keeps to it, also while waiting for the ring's
//! internal lock (a peer stopped in the middle of a put cannot hang it).
//! Byte positions run modulo twice the capacity, so every capacity stays
//! exact for unlimited traffic; and what a reader finds in the ring is
//! checked before use, so a peer that writes garbage into it (a frame longer
//! than the buffer) gets [`IpcError::Corrupted`], not an abort or a read out
//! of bounds. (A Unix-socket design was the alternative; a socket
//! cannot be reopened through `/proc`, so handing one to an arbitrary process
//! needs an `SCM_RIGHTS` rendezvous, and the ring also spins briefly before
//! sleeping, which a socket read cannot.)
//!
//! Measured on the project's 2-core machine (release build, `cargo test
//! --release -p troika --test ipc_roundtrip -- --ignored --nocapture`): a
//! `Pipe<u64>` round trip parent → child → parent p50 ≈ 2.5 µs, a `Queue`
//! pair ≈ 2.3 µs, against ≈ 19 µs for two plain OS pipes in the same run —
//! when the two processes have a core each (the runs, their dates and their
//! spread are in the repository's `BENCHMARKS.md`). On a loaded machine the
//! spin misses and a futex wake-up costs tens of microseconds, as for OS
//! pipes.
//!
//! # The manager
//!
//! A [`Manager`] serves shared maps and lists from a thread of the process
//! that starts it, over a Unix socket in a fresh 0700 directory. It serves a
//! client only if the kernel says (`SO_PEERCRED`) it runs as the same user
//! and it presents the manager's 256-bit token, which travels inside each
//! serialized [`SharedMap`] / [`SharedList`]. Nothing listens beyond the
//! machine. A dead manager is [`IpcError::ManagerGone`] to its clients.
//!
//! # Checking the unsafe code
//!
//! The `unsafe` blocks (mmap, references into the mapping, copies in and out
//! of the rings) carry `// SAFETY:` comments. The IPC tests run under
//! valgrind's memcheck with `crates/troika/tests/valgrind.sh`:
//!
//! ```text
//! cargo test -p troika --no-run --test ipc_locks   # and the other ipc_* tests
//! valgrind --error-exitcode=1 --trace-children=yes target/debug/deps/ipc_locks-<hash> --test-threads=1
//! ```

mod error;
#[cfg(troika_loom)]
#[doc(hidden)]
pub mod futex;
#[cfg(not(troika_loom))]
pub(crate) mod futex;
mod locks;
#[cfg(troika_loom)]
#[doc(hidden)]
pub mod raw;
#[cfg(not(troika_loom))]
pub(crate) mod raw;
mod shm;

pub use error::{
    BarrierError, GetError, GetTimeoutError, IpcError, PutError, PutTimeoutError, ReleaseError,
    Result, TryGetError, TryPutError,
};
pub use locks::{Barrier, BoundedSemaphore, Event, Lock, LockGuard, Semaphore, SemaphoreGuard};
mod pipe;
mod queue;
mod ring;
mod shared;
pub use pipe::{DEFAULT_PIPE_BYTES, Pipe};
pub use queue::{DEFAULT_QUEUE_BYTES, Queue, QueueIter};
pub use shared::{Array, Pod, SharedGuard, Value};
pub(crate) use shm::{Transfer, capture};
mod manager;
pub use manager::{Manager, ManagerAddress, SharedList, SharedMap};
