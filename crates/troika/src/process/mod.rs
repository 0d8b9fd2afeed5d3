//! Processes: run functions in child processes, and the [`ProcessPool`]
//! executor.
//!
//! # Hello, child process
//!
//! A closure cannot cross into another process, so the functions that run in
//! one are defined with [`remote!`](crate::remote), which names and registers
//! them. The first line of `main` is [`init()`]: a worker is this same binary
//! started again, and `init` is where it goes to work instead of running your
//! program.
//!
//! ```
//! troika::remote! {
//!     /// Trial division by odd numbers.
//!     pub fn is_prime(n: u64) -> bool {
//!         if n < 2 { return false; }
//!         if n % 2 == 0 { return n == 2; }
//!         let mut d = 3;
//!         while d * d <= n {
//!             if n % d == 0 { return false; }
//!             d += 2;
//!         }
//!         true
//!     }
//! }
//!
//! fn main() {
//!     troika::init();
//!
//!     // One call in one child, like multiprocessing.Process.
//!     let p = troika::Process::spawn(is_prime, 97).unwrap();
//!     println!("child {} is running", p.pid());
//!     assert!(p.join().unwrap());
//!
//!     // A pool of reusable workers, with the thread pool's API.
//!     let pool = troika::ProcessPool::new(2).unwrap();
//!     let handle = pool.submit(is_prime, 112_272_535_095_293);
//!     let small: Vec<bool> = pool.map(is_prime, 1..=10).map(Result::unwrap).collect();
//!     assert_eq!(small.iter().filter(|&&p| p).count(), 4);
//!     assert!(handle.result().unwrap());
//! }
//! ```
//!
//! # When a worker dies
//!
//! A task whose worker crashes — a segfault, an abort, `exit(3)`, a kill
//! signal, running out of memory — fails with
//! [`ErrorKind::WorkerDied`](crate::ErrorKind::WorkerDied) naming the signal or
//! exit code. The pool starts a new worker and carries on; no other task is
//! lost. A panic is caught in the worker and comes back as
//! [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) with its message, and the
//! worker keeps serving. A death is seen even when the task forked a process
//! that keeps the worker's pipes open: the pool watches the worker itself.
//!
//! An [initializer](ProcessPoolBuilder::initializer) that fails is different:
//! the pool is then broken, and every task fails with
//! [`ErrorKind::InitializerFailed`](crate::ErrorKind::InitializerFailed).
//!
//! # The worker's environment
//!
//! A worker starts with the environment variables, the working directory and
//! the ignored signals the program had when the pool was built (or the
//! [`Process`] spawned) — also a worker started later to replace another —
//! with the other signals at their default action and none blocked, as a
//! freshly started program has them.
//!
//! # Timeouts and cancellation
//!
//! With [`ProcessPoolBuilder::task_timeout`] a task that runs too long has its
//! worker killed and fails with a timed-out error. [`Handle::cancel`](crate::Handle::cancel)
//! of a running task kills its worker too; of a queued one removes it.
//!
//! # External commands
//!
//! [`GroupChild`] runs an external command in a process group of its own,
//! captures its output (in memory, or into writers as it arrives), kills the
//! whole group at a deadline whether or not its leader still lives, stops
//! reading once the leader has exited and the group is empty (a process that
//! left the group cannot hold it), and always reaps it: the supervision that
//! `troika run` is built on.
//!
//! # How it works
//!
//! Workers talk to the parent with a small framed protocol through two
//! shared-memory rings, with a socket pair and a pipe beside them to wake a
//! sleeping reader, carry large bodies' descriptors and report deaths;
//! `README.md` beside this module describes it, and how deaths are detected.

// The docs show `fn main` on purpose: `troika::init()` belongs at its top.
#![allow(clippy::needless_doctest_main)]

mod arena;
mod channel;
mod child;
mod chunk;
mod codec;
mod command;
mod encoded;
mod framebuf;
#[cfg(troika_loom)]
#[doc(hidden)]
pub mod handshake;
#[cfg(not(troika_loom))]
mod handshake;
mod map;
mod pool;
mod registry;
mod spare;
mod spawn;
mod task;
mod wire;
mod worker;

pub use child::{Process, ProcessBuilder, SpawnError};
pub use command::{CommandOutput, CommandStatus, GroupChild, GroupKiller};
pub use encoded::{call_encoded, decode_value, encode_value, is_registered};
pub use map::{ProcessMap, ProcessMapUnordered};
pub(crate) use pool::help::{PROCESS_OWNER, help_while, kill_running};
pub use pool::{ProcessPool, ProcessPoolBuilder};
pub use registry::RemoteFn;
pub use task::Call;
pub use worker::init;

/// What [`remote!`](crate::remote) expands to; not public API.
#[doc(hidden)]
pub mod __registry {
    pub use super::registry::{REMOTE_FNS, Registration};
}

#[doc(hidden)]
pub use linkme as __linkme;

/// Hooks for troika's own tests; not public API.
#[doc(hidden)]
pub mod __test {
    pub use super::worker::forge_reply_for_test;
}
