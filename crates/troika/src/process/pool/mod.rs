//! [`ProcessPool`]: worker processes behind the futures API.
//!
//! The pool is split along its seams: this file holds the public API and the
//! state every part shares; [`dispatch`] queues tasks and hands them to idle
//! workers in batches (and, for short calls, the next batch before a worker
//! runs dry); [`slot`] is the life of one worker slot (its I/O
//! thread: start a worker, read its replies, settle its tasks when it
//! exits); [`watchdog`] enforces the per-task timeout.

mod dispatch;
pub(crate) mod help;
mod lock;
mod slot;
mod watchdog;

use crate::ipc::capture;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use rustix::process::Signal;

use super::framebuf::Frame;
use super::registry::RemoteFn;
use super::spawn::{self, SpawnConfig};
use super::task::{self, Call, Chunk, ChunkOutcome, Job};
use super::wire;
use crate::futures::{
    BuildError, ConfigError, ErrorKind, Handle, PoolStats, SubmitError, SubmitErrorReason,
    TaskError, check_start, checks, pair,
};

use slot::{KillReason, Slot};

/// The call id of the initializer; tasks count from 1.
const INIT_ID: u64 = 0;

/// Configures and builds a [`ProcessPool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::ProcessPool;
///
/// troika::remote! {
///     fn square(x: u64) -> u64 { x * x }
/// }
///
/// fn main() {
///     troika::init();
///     let pool = ProcessPool::builder()
///         .workers(2)
///         .task_timeout(Duration::from_secs(30))
///         .max_tasks_per_worker(10_000)
///         .build()
///         .unwrap();
///     assert_eq!(pool.submit(square, 12).result().unwrap(), 144);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ProcessPoolBuilder {
    workers: Option<usize>,
    name: String,
    timeout: Option<Duration>,
    queue_capacity: Option<usize>,
    max_tasks: Option<usize>,
    max_rss: Option<u64>,
    memory_cap: Option<u64>,
    initializer: Option<Result<Arc<Frame>, TaskError>>,
    max_frame: Option<u64>,
    drop_timeout: Option<Duration>,
}

/// How long dropping a [`ProcessPool`] waits for its tasks by default.
const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            workers: None,
            name: "troika-process".to_owned(),
            timeout: None,
            queue_capacity: None,
            max_tasks: None,
            max_rss: None,
            memory_cap: None,
            initializer: None,
            max_frame: None,
            drop_timeout: None,
        }
    }
}

impl ProcessPoolBuilder {
    /// The number of worker processes (default: the available parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The pool's name (default `troika-process`), the prefix of its
    /// thread names: its I/O threads are `name-io-N`, the task-timeout
    /// watchdog `name-watchdog`.
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Kill a task's worker once the task has run this long: the task fails
    /// with a timed-out error and a fresh worker takes the old one's place.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bound the queue of tasks not yet sent to a worker: `submit` then blocks
    /// while it is full and `try_submit` fails with [`SubmitErrorReason::Full`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Replace a worker after it has run this many tasks.
    pub fn max_tasks_per_worker(mut self, tasks: usize) -> Self {
        self.max_tasks = Some(tasks);
        self
    }

    /// Replace a worker whose resident memory exceeds `bytes`, checked
    /// between tasks (from `/proc/PID/statm`).
    pub fn max_worker_rss(mut self, bytes: u64) -> Self {
        self.max_rss = Some(bytes);
        self
    }

    /// Limit each worker's address space to `bytes` (`RLIMIT_AS`), as
    /// [`ProcessBuilder::memory_cap`](crate::ProcessBuilder::memory_cap)
    /// does for one process: an allocation beyond it fails in the worker,
    /// which then aborts; its task fails with a worker-died error and the
    /// worker is replaced.
    pub fn memory_cap(mut self, bytes: u64) -> Self {
        self.memory_cap = Some(bytes);
        self
    }

    /// Run `f(arg)` in every worker before its first task, also in workers
    /// that replace dead or recycled ones (Python's `initializer`). Its value
    /// is dropped. A task timeout does not apply to it; a worker gets no
    /// task until its initializer has returned.
    ///
    /// A failing initializer breaks the pool, as in Python's
    /// `BrokenProcessPool`: if it panics (or its argument cannot be
    /// decoded), or if it kills its worker three times in a row with no
    /// worker ever getting through (an abort, `exit`), every queued task and
    /// every task submitted later fails with
    /// [`ErrorKind::InitializerFailed`] naming what happened, and no
    /// worker is started again. Workers that died in their initializer are
    /// replaced after a pause that doubles each time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::OnceLock;
    /// use troika::ProcessPool;
    ///
    /// static GREETING: OnceLock<String> = OnceLock::new();
    ///
    /// troika::remote! {
    ///     fn set_greeting(text: String) -> bool { GREETING.set(text).is_ok() }
    ///     fn greet(name: String) -> String {
    ///         format!("{}, {name}", GREETING.get().map_or("?", String::as_str))
    ///     }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = ProcessPool::builder()
    ///         .workers(1)
    ///         .initializer(set_greeting, "hello".to_string())
    ///         .build()
    ///         .unwrap();
    ///     assert_eq!(pool.submit(greet, "worker".into()).result().unwrap(), "hello, worker");
    /// }
    /// ```
    pub fn initializer<F: RemoteFn>(mut self, f: F, arg: F::Arg) -> Self {
        let _ = f;
        self.initializer = Some(task::encode_call::<F>(INIT_ID, &arg).map(Arc::new));
        self
    }

    /// The longest message, in bytes, that may pass between the pool and a
    /// worker (default 1 GiB, at most 8 GiB): a task's encoded argument or
    /// chunk of arguments, or a worker's encoded reply.
    ///
    /// The limit is checked before anything is allocated, so a corrupt or
    /// hostile worker announcing a huge reply cannot exhaust the parent's
    /// memory. A task whose argument is longer fails at once; a worker that
    /// announces a longer reply is killed and replaced. Either way the task
    /// fails with [`ErrorKind::FrameTooLarge`], naming the size and the limit,
    /// and the pool goes on.
    pub fn max_frame_bytes(mut self, bytes: u64) -> Self {
        self.max_frame = Some(bytes);
        self
    }

    /// How long dropping the pool waits for the queued and running tasks
    /// (default 10 s) before it returns and leaves them to finish in the
    /// background (see [`ProcessPool::shutdown_timeout`]).
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = Some(timeout);
        self
    }

    /// Start the workers. Returns once every worker process has been started;
    /// tasks submitted before a worker is ready wait in the queue.
    ///
    /// Fails with a configuration error for a setting out of range, and
    /// with an I/O error (its [`source`](std::error::Error::source)) if a
    /// worker process or one of the pool's threads cannot be started: then
    /// the workers and threads already started are killed, reaped and
    /// joined first, and nothing of the pool is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ProcessPool;
    ///
    /// fn main() {
    ///     troika::init();
    ///     let err = ProcessPool::builder().max_tasks_per_worker(0).build().unwrap_err();
    ///     assert!(err.is_config());
    ///     assert!(err.to_string().contains("max tasks per worker"));
    /// }
    /// ```
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        let workers = checks::workers(self.workers)?;
        let timeout = checks::timeout(self.timeout)?;
        let capacity = checks::queue_capacity(self.queue_capacity)?;
        let initializer = match self.initializer {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => return Err(ConfigError(format!("invalid initializer: {e}")).into()),
            None => None,
        };
        let max_frame = match self.max_frame {
            None => wire::DEFAULT_MAX_BODY,
            Some(bytes) if (1024..=wire::HARD_MAX_BODY).contains(&bytes) => bytes,
            Some(bytes) => {
                return Err(ConfigError(format!(
                    "the frame limit must be between 1024 bytes and {} bytes (8 GiB), not {bytes}",
                    wire::HARD_MAX_BODY
                ))
                .into());
            }
        };
        if let Some(frame) = &initializer {
            let size = (frame.len() - wire::HEADER) as u64;
            if size > max_frame {
                let err = TaskError::new(ErrorKind::FrameTooLarge {
                    size,
                    limit: max_frame,
                });
                return Err(ConfigError(format!("invalid initializer: {err}")).into());
            }
        }
        if self.max_tasks == Some(0) {
            return Err(ConfigError("max tasks per worker must be at least 1".into()).into());
        }
        let shared = Arc::new(Shared {
            name: self.name,
            workers,
            timeout,
            capacity,
            max_tasks: self.max_tasks,
            max_rss: self.max_rss,
            // Workers started later (replacements) get the environment,
            // working directory and signal dispositions of this moment.
            spawn: SpawnConfig::capture(self.memory_cap),
            initializer,
            max_frame,
            state: CachePadded::new(Mutex::new(State {
                queue: VecDeque::new(),
                slots: (0..workers).map(|_| Slot::default()).collect(),
                closed: false,
                terminating: false,
                threads: Vec::new(),
                // Assume slow tasks until some were measured: no batching yet.
                avg_run_us: 1000.0,
                watchdog_idle: false,
                startup_failures: 0,
                broken: None,
                exited: 0,
            })),
            incoming: CachePadded::new(lock::Incoming::default()),
            space: Condvar::new(),
            watch: Condvar::new(),
            next_id: CachePadded::new(AtomicU64::new(1)),
            done: CachePadded::new(AtomicUsize::new(0)),
            failed: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            owner: help::next_owner(),
            helpers: CachePadded::new(AtomicUsize::new(0)),
            readers: (0..workers).map(|_| Mutex::new(None)).collect(),
        });
        help::register(&shared);
        // From here on a failure leaves `teardown` to stop and reap what
        // was started (rayon-core's `Terminator`).
        let mut teardown = Teardown {
            shared: &shared,
            threads: Vec::with_capacity(workers + 1),
            slot_threads: 0,
            armed: true,
        };
        // Start every worker before any I/O thread, so the spawner works
        // through them back to back. (A worker not yet installed in its
        // slot is killed and reaped when it is dropped.)
        let mut started = Vec::with_capacity(workers);
        for _ in 0..workers {
            let spawned = check_start()
                .and_then(|()| spawn::spawn_worker(shared.spawn.clone()))
                .map_err(|e| BuildError::start("a worker process", e))?;
            started.push(spawned);
        }
        for (index, spawned) in started.into_iter().enumerate() {
            let installed = shared.install(index, spawned);
            let worker_shared = Arc::clone(&shared);
            let thread = check_start()
                .and_then(|()| {
                    std::thread::Builder::new()
                        .name(format!("{}-io-{index}", shared.name))
                        .spawn(move || worker_shared.slot_thread(index, Some(installed)))
                })
                .map_err(|e| BuildError::start("an I/O thread", e))?;
            teardown.threads.push(thread);
            teardown.slot_threads += 1;
        }
        if shared.timeout.is_some() {
            // A timeout that cannot be enforced is an error, not silently off.
            let watch_shared = Arc::clone(&shared);
            let thread = check_start()
                .and_then(|()| {
                    std::thread::Builder::new()
                        .name(format!("{}-watchdog", shared.name))
                        .spawn(move || watch_shared.watchdog())
                })
                .map_err(|e| BuildError::start("the task-timeout watchdog thread", e))?;
            teardown.threads.push(thread);
        }
        teardown.armed = false;
        let threads = std::mem::take(&mut teardown.threads);
        drop(teardown);
        shared.lock().threads = threads;
        // A spare worker for quick replacements, kept while the pool lives.
        let spare = spawn::SpareLease::new(&shared.spawn);
        Ok(ProcessPool {
            shared,
            _spare: spare,
            drop_timeout: self.drop_timeout.unwrap_or(DEFAULT_DROP_TIMEOUT),
            detached: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// Stops what a build that failed half-way had started: kills the workers,
/// ends the slot threads and the watchdog, and reaps every process.
struct Teardown<'a> {
    shared: &'a Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Slots `0..slot_threads` have their I/O thread.
    slot_threads: usize,
    armed: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let orphans: Vec<_> = {
            let mut state = self.shared.lock();
            self.shared.close(&mut state);
            state.terminating = true;
            // The watchdog ends once every slot thread has: slots that never
            // got one count as ended.
            state.exited += self.shared.workers - self.slot_threads;
            for slot in &mut state.slots {
                if let Some(worker) = &mut slot.worker {
                    worker.writer = None;
                    worker.child.signal(Signal::KILL);
                }
            }
            // A worker whose slot has no thread is reaped here, on drop.
            state.slots[self.slot_threads..]
                .iter_mut()
                .filter_map(|slot| slot.worker.take())
                .collect()
        };
        drop(orphans);
        self.shared.space.notify_all();
        self.shared.watch.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A pool of worker processes running functions defined with
/// [`remote!`](crate::remote).
///
/// It offers the thread pool's futures API — [`submit`](ProcessPool::submit)
/// returns a [`Handle`], [`map`](ProcessPool::map) runs a function over an
/// iterator in order, lazily, with a bounded window — and the
/// `multiprocessing.Pool` calls ([`apply`](ProcessPool::apply),
/// [`imap`](ProcessPool::imap), …, with `chunksize`). What a process buys over
/// a thread:
///
/// - **crash isolation**: a task whose worker dies (abort, segfault,
///   `exit(n)`, a signal, out of memory) fails alone with
///   [`ErrorKind::WorkerDied`] naming the exit code or signal; the worker is
///   replaced and every other task completes. A death never breaks the
///   pool (only a failing [initializer](ProcessPoolBuilder::initializer)
///   does).
/// - a **hard timeout** and a real **cancel**: the worker running the task is
///   killed and replaced.
/// - **recycling** after N tasks or above an RSS limit, and a memory cap.
///
/// A panic in a task fails that task with its message; the worker survives.
/// So does a panic in the `Serialize` or `Deserialize` of its argument or
/// result, on either side: user code never takes down a worker or one of the
/// pool's threads. A worker that breaks the protocol (for example announces
/// a reply longer than [`max_frame_bytes`](ProcessPoolBuilder::max_frame_bytes))
/// is killed and replaced, and its task fails with an error saying why.
/// Workers die with the parent (even on `SIGKILL`) and are always reaped.
///
/// Dropping the pool shuts it down: queued tasks still run, and the drop waits
/// for them and for the workers to exit, for at most the pool's
/// [drop timeout](ProcessPoolBuilder::drop_timeout) (10 s by default); then
/// it returns and the tasks left finish in the background (see
/// [`shutdown_timeout`](ProcessPool::shutdown_timeout)). Dropped while a
/// panic unwinds, it waits for nothing. [`terminate`](ProcessPool::terminate)
/// first to kill what runs instead.
///
/// # Examples
///
/// ```
/// use troika::ProcessPool;
///
/// troika::remote! {
///     /// Trial division.
///     fn is_prime(n: u64) -> bool {
///         n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
///     }
/// }
///
/// fn main() {
///     troika::init(); // first line of main: a worker never returns from it
///     let pool = ProcessPool::new(2).unwrap();
///     let primes: Vec<bool> = pool.map(is_prime, [2, 3, 4, 97]).map(Result::unwrap).collect();
///     assert_eq!(primes, [true, true, false, true]);
///     assert!(pool.submit(is_prime, 7919).result().unwrap());
/// }
/// ```
pub struct ProcessPool {
    shared: Arc<Shared>,
    /// Keeps a started worker in reserve; released (and that worker
    /// reaped) after the drop has shut the pool down.
    _spare: spawn::SpareLease,
    drop_timeout: Duration,
    /// Set once `shutdown_timeout` gave up and detached the threads.
    detached: std::sync::atomic::AtomicBool,
}

struct State {
    queue: VecDeque<Job>,
    slots: Vec<Slot>,
    closed: bool,
    terminating: bool,
    threads: Vec<JoinHandle<()>>,
    /// Moving average of the recent tasks' run time in the workers.
    avg_run_us: f64,
    startup_failures: usize,
    /// Set when the initializer failed: every task fails with this message.
    broken: Option<String>,
    /// Slot threads that have ended (the watchdog ends after the last).
    exited: usize,
    /// The watchdog waits with no deadline: no task is running, so a task
    /// that starts must wake it. (A task that starts while another runs has
    /// a later deadline than the one the watchdog already waits for.)
    watchdog_idle: bool,
}

struct Shared {
    name: String,
    workers: usize,
    timeout: Option<Duration>,
    capacity: Option<usize>,
    max_tasks: Option<usize>,
    max_rss: Option<u64>,
    spawn: SpawnConfig,
    /// The initializer's call frame, sent to every new worker first.
    initializer: Option<Arc<Frame>>,
    /// The longest frame body either side may send (`max_frame_bytes`).
    max_frame: u64,
    /// Each value written on the hot path sits alone on its cache line
    /// (`CachePadded`): the submitters' `next_id` (taken a block of ids at
    /// a time, see `Shared::next_id`), the settling threads' `done`, the
    /// waiters' `helpers` and the lock's word, so that none of them evicts
    /// the others or the read-only settings above.
    /// Taken through [`Shared::lock`] only (see `lock.rs`).
    state: CachePadded<Mutex<State>>,
    /// Calls submitted while no worker was idle, on their way to the
    /// queue without the state's lock (see `lock.rs`).
    incoming: CachePadded<lock::Incoming>,
    /// Signalled when the queue shrinks or the pool changes state.
    space: Condvar,
    /// Wakes the watchdog.
    watch: Condvar,
    next_id: CachePadded<AtomicU64>,
    done: CachePadded<AtomicUsize>,
    failed: AtomicUsize,
    restarts: AtomicUsize,
    /// This pool's id in its handles (see `help.rs`).
    owner: usize,
    /// Threads that wait on the pool's tasks and read replies meanwhile:
    /// the I/O threads do not spin while there are any.
    helpers: CachePadded<AtomicUsize>,
    /// Each slot's reply reader, while its I/O thread serves a worker.
    readers: Box<[Mutex<Option<Arc<help::SlotReader>>>]>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        help::unregister(self.owner);
    }
}

impl ProcessPool {
    /// A pool of `workers` processes with default settings.
    ///
    /// Fails if `workers` is zero or a worker cannot be started.
    pub fn new(workers: usize) -> Result<ProcessPool, BuildError> {
        ProcessPool::builder().workers(workers).build()
    }

    /// A builder for a configured pool.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// The pids of the current worker processes (a worker being replaced is
    /// missing for a moment).
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn my_pid() -> u32 { std::process::id() }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     let pid = pool.submit(my_pid, ()).result().unwrap();
    ///     assert!(pool.worker_pids().contains(&pid));
    ///     assert_ne!(pid, std::process::id());
    /// }
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        let state = self.shared.lock();
        state
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref().map(|w| w.child.pid()))
            .collect()
    }

    /// Queue depth, busy workers and counters, readable at any time (see
    /// [`PoolStats`]).
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.lock();
        PoolStats {
            workers: self.shared.workers,
            queued: state.queue.len(),
            busy: state
                .slots
                .iter()
                .filter(|s| !s.in_flight.is_empty())
                .count(),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            succeeded: self.shared.done.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Run `f(arg)` in a worker process; returns its handle at once.
    ///
    /// An argument that cannot be encoded fails the handle with a
    /// serialization error (a panic in its `Serialize` with a panic error; an
    /// argument longer than the frame limit with
    /// [`ErrorKind::FrameTooLarge`]). After shutdown the handle is already
    /// failed with a shut-down error. With a bounded queue this blocks while it
    /// is full.
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn checked_div(a: u32, b: u32) -> u32 { a / b }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(1).unwrap();
    ///     assert_eq!(pool.submit(checked_div, (84, 2)).result().unwrap(), 42);
    ///     // A panic fails its task only; the worker serves on.
    ///     assert!(pool.submit(checked_div, (1, 0)).result().unwrap_err().is_panic());
    ///     assert_eq!(pool.submit(checked_div, (9, 3)).result().unwrap(), 3);
    /// }
    /// ```
    pub fn submit<F: RemoteFn>(&self, f: F, arg: F::Arg) -> Handle<F::Output> {
        let _ = f;
        let id = self.shared.next_id();
        let (frame, transfer) = capture(|| task::encode_call::<F>(id, &arg));
        let frame = match frame.and_then(|f| self.shared.fits(f)) {
            Ok(frame) => frame,
            Err(err) => {
                self.shared.note_outcome(false);
                return Handle::ready(Err(err));
            }
        };
        let (job, handle) = Job::call(id, frame, self.shared.owner);
        let handle = match self.shared.enqueue(job, true, transfer) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.sink().fail(TaskError::shut_down());
                handle
            }
        };
        // Encoded: a large byte vector's buffer serves a result (`spare.rs`).
        super::spare::recycle(arg);
        handle
    }

    /// Queue `f(arg)`, or hand the call back if the pool is shut down or its
    /// bounded queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::SubmitErrorReason;
    ///
    /// troika::remote! {
    ///     fn triple(x: u64) -> u64 { 3 * x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(1).unwrap();
    ///     assert_eq!(pool.try_submit(triple, 2).unwrap().result().unwrap(), 6);
    ///     pool.close();
    ///     let refused = pool.try_submit(triple, 3).unwrap_err();
    ///     assert_eq!(refused.reason, SubmitErrorReason::ShutDown);
    /// }
    /// ```
    pub fn try_submit<F: RemoteFn>(
        &self,
        f: F,
        arg: F::Arg,
    ) -> Result<Handle<F::Output>, SubmitError<Call<F>>> {
        let refused = {
            let state = self.shared.lock();
            if state.closed {
                Some(SubmitErrorReason::ShutDown)
            } else if self
                .shared
                .capacity
                .is_some_and(|cap| state.queue.len() >= cap)
            {
                Some(SubmitErrorReason::Full)
            } else {
                None
            }
        };
        if let Some(reason) = refused {
            return Err(SubmitError {
                task: Call::new(f, arg),
                reason,
            });
        }
        let id = self.shared.next_id();
        let (frame, transfer) = capture(|| task::encode_call::<F>(id, &arg));
        let frame = match frame.and_then(|f| self.shared.fits(f)) {
            Ok(frame) => frame,
            Err(err) => {
                self.shared.note_outcome(false);
                return Ok(Handle::ready(Err(err)));
            }
        };
        let (job, handle) = Job::call(id, frame, self.shared.owner);
        let submitted = match self.shared.enqueue(job, false, transfer) {
            Ok(()) => Ok(handle),
            Err((job, reason)) => {
                // Lost a race with shutdown or another producer; the argument
                // is encoded now, so the reason goes through the handle.
                job.sink().fail(match reason {
                    SubmitErrorReason::Full => TaskError::new(ErrorKind::Failed(
                        "the queue filled up while submitting".into(),
                    )),
                    _ => TaskError::shut_down(),
                });
                Ok(handle)
            }
        };
        // Encoded: a large byte vector's buffer serves a result (`spare.rs`).
        super::spare::recycle(arg);
        submitted
    }

    /// Run `f` over a chunk of arguments in one message: one handle for the
    /// whole chunk, with one outcome per item.
    pub(crate) fn submit_chunk<F: RemoteFn>(
        &self,
        args: &[F::Arg],
    ) -> Handle<ChunkOutcome<F::Output>> {
        let id = self.shared.next_id();
        let (frame, transfer) = capture(|| task::encode_chunk::<F>(id, args));
        let frame = match frame.and_then(|f| self.shared.fits(f)) {
            Ok(frame) => frame,
            Err(err) => return Handle::ready(Err(err)),
        };
        let (promise, handle) = pair(self.shared.owner);
        let job = Job::new(id, frame, Chunk { promise });
        match self.shared.enqueue(job, true, transfer) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.sink().fail(TaskError::shut_down());
                handle
            }
        }
    }

    /// Shut the pool down.
    ///
    /// No new task is accepted. With `cancel_pending`, queued tasks that have
    /// not started are cancelled; otherwise they still run. With `wait`, this
    /// returns once every worker has exited and been reaped. Calling it again
    /// is a no-op (apart from waiting).
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn echo(x: u32) -> u32 { x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(1).unwrap();
    ///     let handles: Vec<_> = (0..3).map(|i| pool.submit(echo, i)).collect();
    ///     pool.shutdown(true, false); // the queued tasks run; then the workers exit
    ///     let values: Vec<u32> = handles.into_iter().map(|h| h.result().unwrap()).collect();
    ///     assert_eq!(values, [0, 1, 2]);
    ///     assert!(pool.submit(echo, 4).result().unwrap_err().is_shut_down());
    /// }
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let (cancelled, threads) = {
            let mut state = self.shared.lock();
            self.shared.close(&mut state);
            let cancelled: Vec<Job> = if cancel_pending {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            if state.queue.is_empty() {
                for slot in &mut state.slots {
                    if let (true, Some(worker)) = (slot.in_flight.is_empty(), &mut slot.worker) {
                        worker.writer = None;
                    }
                }
            }
            let threads = if wait {
                std::mem::take(&mut state.threads)
            } else {
                Vec::new()
            };
            (cancelled, threads)
        };
        self.shared.space.notify_all();
        self.shared.watch.notify_all();
        for job in cancelled {
            job.sink().fail(TaskError::cancelled());
        }
        self.join_threads(threads);
    }

    /// Stop at once: cancel queued tasks, kill the workers (their running
    /// tasks fail with a shut-down error) and wait until they are reaped.
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn forever() -> bool { loop { std::thread::park(); } }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(1).unwrap();
    ///     let stuck = pool.submit(forever, ());
    ///     while !stuck.is_running() {
    ///         std::thread::yield_now();
    ///     }
    ///     pool.terminate(); // kills the worker and reaps it
    ///     assert!(stuck.result().unwrap_err().is_shut_down());
    /// }
    /// ```
    pub fn terminate(&self) {
        let (cancelled, threads) = {
            let mut state = self.shared.lock();
            self.shared.close(&mut state);
            state.terminating = true;
            let cancelled: Vec<Job> = state.queue.drain(..).collect();
            for slot in &mut state.slots {
                let front = slot.in_flight.front().map(|j| j.id);
                if let Some(worker) = &mut slot.worker {
                    if let Some(id) = front {
                        slot.kill_reason = Some((id, KillReason::Terminated));
                    }
                    worker.writer = None;
                    worker.child.signal(Signal::KILL);
                }
            }
            (cancelled, std::mem::take(&mut state.threads))
        };
        self.shared.space.notify_all();
        self.shared.watch.notify_all();
        for job in cancelled {
            job.sink().fail(TaskError::cancelled());
        }
        self.join_threads(threads);
    }

    fn join_threads(&self, threads: Vec<JoinHandle<()>>) {
        let me = std::thread::current().id();
        for thread in threads {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
        // The watchdog waits for the slot threads to be gone.
        self.shared.watch.notify_all();
    }

    /// Stop taking tasks and wait at most `timeout` for the queued and
    /// running ones to finish and the workers to exit. Returns whether they
    /// all did.
    ///
    /// What is left at the deadline goes on in the background: the workers
    /// finish the queue (the tasks' handles get their outcomes), then exit
    /// and are reaped; nothing waits for them, and they die with the parent
    /// at the latest. Call [`terminate`](ProcessPool::terminate) to kill
    /// them instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ProcessPool;
    ///
    /// troika::remote! {
    ///     fn double(x: u64) -> u64 { 2 * x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = ProcessPool::new(2).unwrap();
    ///     let handle = pool.submit(double, 21);
    ///     assert!(pool.shutdown_timeout(Duration::from_secs(60)));
    ///     assert_eq!(handle.result().unwrap(), 42);
    /// }
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        if self.detached.load(Ordering::Acquire) {
            // Given up before: the threads are on their own.
            return self.shared.lock().exited >= self.shared.workers;
        }
        self.shutdown(false, false);
        let deadline = Instant::now().checked_add(timeout);
        let finished = {
            let mut state = self.shared.lock();
            while state.exited < self.shared.workers {
                let timed_out = match deadline {
                    Some(deadline) => state.wait_until(&self.shared.space, deadline),
                    None => {
                        state.wait(&self.shared.space);
                        false
                    }
                };
                if timed_out {
                    break;
                }
            }
            state.exited >= self.shared.workers
        };
        if finished {
            self.join();
        } else {
            // Detached: the threads end once their workers are done.
            self.detached.store(true, Ordering::Release);
            drop(std::mem::take(&mut self.shared.lock().threads));
        }
        finished
    }

    /// `multiprocessing.Pool.close`: accept no more tasks; queued ones still run.
    pub fn close(&self) {
        self.shutdown(false, false);
    }

    /// `multiprocessing.Pool.join`: wait until every worker has exited (after
    /// [`close`](ProcessPool::close) or [`terminate`](ProcessPool::terminate)).
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn square(x: u64) -> u64 { x * x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     let handle = pool.apply_async(square, 9);
    ///     pool.close();
    ///     pool.join();
    ///     assert_eq!(handle.result().unwrap(), 81);
    /// }
    /// ```
    pub fn join(&self) {
        self.shutdown(true, false);
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        // While a panic unwinds, waiting (perhaps for a task that waits on
        // the very code that panicked) would hold the panic up.
        let timeout = if std::thread::panicking() {
            Duration::ZERO
        } else {
            self.drop_timeout
        };
        self.shutdown_timeout(timeout);
        // The free arenas the pool's large messages left in this process
        // go with it (see `arena.rs`).
        super::arena::release_free();
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::futures::{fail_nth_start, threads_left};

    /// The pids of this process's children that run this binary (workers).
    fn worker_children() -> Vec<u32> {
        let me = std::env::current_exe().ok();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok() == me)
            .collect()
    }

    /// A build that cannot start a worker or one of its threads fails with
    /// the I/O error, after it killed, reaped and joined what it started.
    #[test]
    fn a_build_failing_half_way_leaves_no_process_and_no_thread() {
        assert_eq!(worker_children(), Vec::<u32>::new());
        // The starts: workers 0 and 1, I/O threads 0 and 1, the watchdog.
        let starts = [
            (1, "worker process"),
            (2, "worker process"),
            (3, "I/O thread"),
            (4, "I/O thread"),
            (5, "watchdog"),
        ];
        for (nth, what) in starts {
            let name = format!("ppool-fail{nth}");
            fail_nth_start(nth);
            let built = ProcessPool::builder()
                .name(&name)
                .workers(2)
                .task_timeout(Duration::from_secs(600))
                .build();
            fail_nth_start(0);
            let err = built.expect_err("a start failed");
            assert!(err.io_error().is_some(), "{err}");
            assert!(err.to_string().contains(what), "{err}");
            assert_eq!(threads_left(&name), Vec::<String>::new(), "start {nth}");
            assert_eq!(worker_children(), Vec::<u32>::new(), "start {nth}");
        }
    }
}
