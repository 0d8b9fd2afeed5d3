//! Threads, queues and locks in the shape of Python's `threading` and
//! `queue` modules.
//!
//! Everything a Python threading tutorial uses has a counterpart here with
//! the same name and the same meaning, done the Rust way: guards instead of
//! `with`, `Result`s instead of exceptions, and no GIL — threads really run
//! in parallel.
//!
//! # From Python to troika
//!
//! | Python | troika |
//! |---|---|
//! | `threading.Thread(target=f, args=(a,), name="n").start()` | [`Thread::spawn`]`("n", move \|\| f(a))` |
//! | subclass `Thread`, override `run` | implement [`Runnable`], then [`Thread::start`] |
//! | `t.join()` / `t.join(timeout)` | [`Thread::join`] (returns the value) / [`Thread::join_timeout`] (hands the thread back if still running) or [`Thread::wait_timeout`] |
//! | `t.is_alive()`, `t.name`, `t.ident` | [`Thread::is_alive`], [`Thread::name`], [`Thread::id`] |
//! | `threading.current_thread().name` | [`current_thread_name`] |
//! | `queue.Queue(maxsize)`, `LifoQueue`, `PriorityQueue` | [`Queue::new`], [`Queue::lifo`], [`Queue::priority`] |
//! | `q.put(x)`, `q.put(x, timeout=t)`, `q.put_nowait(x)` | [`Queue::put`], [`Queue::put_timeout`], [`Queue::try_put`] |
//! | `q.get()`, `q.get(timeout=t)`, `q.get_nowait()` | [`Queue::get`], [`Queue::get_timeout`], [`Queue::try_get`] |
//! | `queue.Full`, `queue.Empty` | [`TryPutError::Full`], [`TryGetError::Empty`]; a timeout is [`PutTimeoutError::Timeout`] / [`GetTimeoutError::Timeout`] |
//! | `q.shutdown()`, `queue.ShutDown` (Python 3.13) | [`Queue::close`]; the `Closed` variant of each error ([`PutError`], [`GetError`] for the blocking calls) |
//! | `q.task_done()`, `q.join()` | [`Queue::task_done`] ([`TaskDoneError`] if called too often), [`Queue::join`] / [`Queue::join_timeout`] |
//! | `q.qsize()`, `q.empty()`, `q.full()`, `q.maxsize` | [`Queue::len`], [`Queue::is_empty`], [`Queue::is_full`], [`Queue::maxsize`] |
//! | `threading.Lock()`, `with lock:` | [`Lock::new`], [`Lock::lock`] (a guard; [`Lock::with_data`] makes the lock own what it protects) |
//! | `lock.acquire()`, `lock.acquire(False)`, `lock.acquire(timeout=t)`, `lock.release()` | [`Lock::acquire`], [`Lock::try_acquire`], [`Lock::acquire_timeout`], [`Lock::release`] |
//! | `threading.RLock()` | [`RLock`] |
//! | `threading.Condition()`, `Condition(lock)`, `wait`, `wait_for`, `notify`, `notify_all` | [`Condition::new`] / [`Condition::with_data`], [`Condition::with_lock`], [`ConditionGuard::wait`], [`ConditionGuard::wait_for`], [`Condition::notify`], [`Condition::notify_all`] |
//! | `threading.Semaphore(n)`, `BoundedSemaphore(n)`, `with sem:` | [`Semaphore::new`], [`BoundedSemaphore::new`], [`Semaphore::access`] |
//! | `ValueError: Semaphore released too many times` | [`ReleaseError::AboveBound`] |
//! | `threading.Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event`]: [`Event::set`], [`Event::clear`], [`Event::is_set`], [`Event::wait_timeout`] |
//! | `threading.Barrier(n, action)`: `wait`, `wait(timeout)`, `abort`, `reset` | [`Barrier::new`] / [`Barrier::with_action`], [`Barrier::wait`] (the arrival index), [`Barrier::wait_timeout`], [`Barrier::abort`], [`Barrier::reset`] |
//! | `BrokenBarrierError` | [`BarrierError::Broken`] (and [`BarrierError::Timeout`] for the waiter that timed out) |
//! | `threading.Timer(secs, f).start()`, `cancel()` | [`Timer::start`], [`Timer::cancel`] |
//!
//! # One shape per operation
//!
//! The same call has the same shape here and in [`ipc`](crate::ipc), so code
//! moves between threads and processes by changing the import. The model
//! is crossbeam-channel's: each operation returns one error type that names
//! exactly the outcomes it can have, and the blocking / `try_` / `_timeout`
//! forms of an operation differ only in their "not now" outcome.
//!
//! | Operation | Returns | Not now (`try_`) | Time ran out (`_timeout`) |
//! |---|---|---|---|
//! | `lock()`, `try_lock()`, `lock_timeout(d)` | the guard; `Option<guard>` | `None` | `None` |
//! | `acquire()`, `try_acquire()`, `acquire_timeout(d)` (no guard) | `()`; `bool` | `false` | `false` |
//! | `access()`, `try_access()`, `access_timeout(d)` (a semaphore unit as a guard) | the guard; `Option<guard>` | `None` | `None` |
//! | `release()` | `Result<(), `[`ReleaseError`]`>` | | |
//! | `Event::wait()`, `wait_timeout(d)`; `Queue::join()`, `join_timeout(d)` | `()`; `bool` | | `false` |
//! | `Barrier::wait()`, `wait_timeout(d)` | `Result<usize, `[`BarrierError`]`>`: the arrival index | | [`BarrierError::Timeout`] |
//! | `put(x)` | `Result<(), `[`PutError`]`>` | | |
//! | `try_put(x)` | `Result<(), `[`TryPutError`]`>` | `Full` | |
//! | `put_timeout(x, d)` | `Result<(), `[`PutTimeoutError`]`>` | | `Timeout` |
//! | `get()` | `Result<T, `[`GetError`]`>` | | |
//! | `try_get()` | `Result<T, `[`TryGetError`]`>` | `Empty` | |
//! | `get_timeout(d)` | `Result<T, `[`GetTimeoutError`]`>` | | `Timeout` |
//! | `close()`, `is_closed()`, `iter()` | puts fail with `Closed`; gets drain, then fail with `Closed`; `iter` ends there | | |
//! | `len()`, `is_empty()`, `maxsize()` | a snapshot; `maxsize() == 0` means unbounded | | |
//!
//! The reasoning behind each choice:
//!
//! - A lock or a unit that is not free *now* carries no further news, so
//!   taking one returns `Option<guard>` or `bool` (as `parking_lot` and
//!   Python do), never a one-variant error.
//! - A release can be refused for a reason worth telling (not held, held by
//!   another thread, past the bound), so it returns `Result` — also where
//!   refusal is nearly impossible (a plain semaphore at its largest count),
//!   so that every `release` reads the same. [`ReleaseError`] and
//!   [`BarrierError`] are the very types `ipc` returns.
//! - A put or get has several outcomes, so each form has its own error
//!   type; a failed put in `sync` hands the item back (`into_inner`).
//! - The `ipc` versions of the put and get errors carry two more variants:
//!   `Disconnected` (a pipe's peer dropped its end, or every process that
//!   could put into a queue let go of it) and `Failed(IpcError)` (what only
//!   processes have: a peer that died, a value that does not serialize or
//!   fit, a corrupted buffer). A pipe's `send` is a put and its `recv` a get,
//!   with the same types.
//! - Counts of `ipc` objects are `u32` (they live in a 32-bit futex word);
//!   here they are `usize`.
//! - Some objects offer fewer forms, never other shapes: `ipc::Lock` (and
//!   the lock of `ipc::Value` / `ipc::Array`) is taken only through its
//!   guard, which is where a dead previous holder is reported
//!   (`holder_died`); `ipc` has no `RLock` or `Condition`.
//!
//! # Threads
//!
//! A [`Thread`] starts running as soon as it is made and returns its
//! closure's value from [`join`](Thread::join); a panic becomes a
//! [`TaskError`](crate::TaskError) instead of killing the program.
//!
//! ```
//! use std::time::Duration;
//! use troika::sync::Thread;
//!
//! let loops = [(0, 40), (1, 20)];
//! let threads: Vec<_> = loops
//!     .iter()
//!     .map(|&(n, ms)| {
//!         Thread::spawn(format!("loop{n}"), move || {
//!             std::thread::sleep(Duration::from_millis(ms));
//!             n
//!         })
//!         .unwrap()
//!     })
//!     .collect();
//! for (t, (n, _)) in threads.into_iter().zip(loops) {
//!     assert_eq!(t.join().unwrap(), n);
//! }
//! ```
//!
//! # Queues: producers and consumers
//!
//! A [`Queue`] is shared with an `Arc`. Consumers call
//! [`task_done`](Queue::task_done) after each item; the producer's
//! [`join`](Queue::join) then waits until all the work is finished, not just
//! taken. [`close`](Queue::close) then tells every consumer to stop: its
//! `get` fails once the queue is drained, so no sentinel item is needed.
//!
//! ```
//! use std::sync::Arc;
//! use troika::sync::{Queue, Thread};
//!
//! let q: Arc<Queue<String>> = Arc::new(Queue::new(4));
//! let consumers: Vec<_> = (0..2)
//!     .map(|i| {
//!         let q = Arc::clone(&q);
//!         Thread::spawn(format!("consumer-{i}"), move || {
//!             let mut seen = 0;
//!             while let Ok(_url) = q.get() {
//!                 seen += 1;
//!                 q.task_done().unwrap();
//!             }
//!             seen
//!         })
//!         .unwrap()
//!     })
//!     .collect();
//! for page in 0..20 {
//!     q.put(format!("https://example.com/{page}")).unwrap();
//! }
//! q.join(); // every page taken *and* processed
//! q.close();
//! let total: usize = consumers.into_iter().map(|t| t.join().unwrap()).sum();
//! assert_eq!(total, 20);
//! ```
//!
//! # Locks, conditions, semaphores
//!
//! In Rust the lock owns what it protects: `Lock<BTreeSet<String>>` rather
//! than a lock next to a set, so forgetting to take it is a compile error.
//! Python's [`acquire`](Lock::acquire) / [`release`](Lock::release) are
//! there too; misuse (releasing a free lock, an [`RLock`] owned by another
//! thread, a [`BoundedSemaphore`] past its start value) returns a
//! [`ReleaseError`] rather than panicking.
//!
//! ```
//! use troika::sync::{BoundedSemaphore, Lock, ReleaseError};
//!
//! let lock = Lock::with_data(Vec::new());
//! lock.lock().push("started");
//! assert_eq!(lock.lock().len(), 1);
//!
//! let candy = BoundedSemaphore::new(1);
//! assert_eq!(candy.release(), Err(ReleaseError::AboveBound { bound: 1 }));
//! ```
//!
//! # Timeouts
//!
//! Every blocking call has a `_timeout` form taking a [`Duration`](std::time::Duration).
//! Acquire-style calls return `bool` (or `Option<guard>`), as Python's do;
//! queue and barrier calls return a typed error (see [One shape per
//! operation](#one-shape-per-operation)).
//!
//! # How it is built
//!
//! Everything here is built on `parking_lot`'s `Mutex` and `Condvar` (and
//! `std::thread` for threads); there is no hand-written atomic or futex
//! protocol. What troika adds is the Python semantics on top: who holds a
//! [`Lock`], owner and depth for [`RLock`], the release-and-wait of a
//! [`Condition`] over its lock, the bound of [`BoundedSemaphore`], the
//! unfinished-task count of [`Queue`], the rounds and broken state of
//! [`Barrier`], and the completion signal behind [`Thread::join_timeout`]
//! (an [`Event`] raised when the thread's closure returns or unwinds). The
//! only `unsafe` code is [`Lock`]'s access to the data it owns, guarded by
//! the lock's state.
//!
//! Those state machines are model-checked with [loom]: under `--cfg troika_loom`
//! the mutex and condition variable are swapped for loom's models, and
//! `tests/loom_sync.rs` runs small scenarios (handing a lock over, a
//! condition's notify racing its wait, a bounded queue, a close waking a
//! blocked get or put, task counting, barrier rounds and abort) in every
//! interleaving. Run it with:
//!
//! ```text
//! RUSTFLAGS="--cfg troika_loom" cargo test -p troika --test loom_sync --release
//! ```
//!
//! Loom does not model time, so the timed variants are covered by the
//! ordinary tests (`tests/sync_*.rs`) instead.
//!
//! [loom]: https://docs.rs/loom

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod queue;
mod semaphore;
mod thread;
mod timer;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use error::{
    BarrierError, GetError, GetTimeoutError, PutError, PutTimeoutError, ReleaseError,
    TaskDoneError, TryGetError, TryPutError,
};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use queue::{Queue, QueueIter, QueueKind};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
pub use thread::{JoinTimeoutError, Runnable, Thread, ThreadBuilder, current_thread_name};
pub use timer::Timer;
