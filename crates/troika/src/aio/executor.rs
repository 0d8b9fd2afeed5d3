//! [`AsyncExecutor`]: futures on a tokio runtime behind the common executor API.

use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use crossbeam_utils::CachePadded;
use futures::FutureExt;
use parking_lot::{Condvar, Mutex};
use tokio::runtime::{Handle as RuntimeHandle, Runtime};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::spawn::join_error;
use crate::futures::{
    BuildError, ConfigError, ErrorKind, Executor, Handle, PoolStats, Promise, SubmitError,
    SubmitErrorReason, Task, TaskError, checks, future_pair,
};

/// How many tasks [`Executor::parallelism`] reports for an executor without a
/// concurrency limit: async tasks mostly wait, so `map` keeps many in flight.
const UNLIMITED_PARALLELISM: usize = 256;

/// How long dropping an executor waits for its tasks by default (see
/// [`AsyncExecutorBuilder::drop_timeout`]).
const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a runtime being shut down gets to stop its threads once its
/// futures are dropped (a blocking task that never returns keeps its thread).
const RUNTIME_STOP: Duration = Duration::from_secs(1);

/// The name of an executor's runtime threads unless one is given (tokio's
/// default).
const DEFAULT_THREAD_NAME: &str = "tokio-rt-worker";

/// A boxed future: the task type through which [`AsyncExecutor`] implements
/// the [`Executor`] trait (the trait's tasks are values, and a future is one).
///
/// # Examples
///
/// ```
/// use troika::Executor;
/// use troika::aio::{AsyncExecutor, AsyncTask};
///
/// let executor = AsyncExecutor::new()?;
/// let tasks = (1..=3u32).map(|n| AsyncTask::new(async move { n * 2 }));
/// let doubled: Vec<u32> = executor.map_tasks(tasks, 8).collect::<Result<_, _>>()?;
/// assert_eq!(doubled, [2, 4, 6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncTask<R>(Pin<Box<dyn Future<Output = R> + Send>>);

impl<R> AsyncTask<R> {
    /// Box `future` as a task.
    pub fn new<F>(future: F) -> AsyncTask<R>
    where
        F: Future<Output = R> + Send + 'static,
    {
        AsyncTask(Box::pin(future))
    }

    /// The boxed future.
    pub fn into_future(self) -> Pin<Box<dyn Future<Output = R> + Send>> {
        self.0
    }
}

/// An `AsyncTask` is its future, so the inherent `submit` and `try_submit`
/// take it as well as the [`Executor`] methods do.
impl<R> Future for AsyncTask<R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<R> {
        self.0.as_mut().poll(cx)
    }
}

impl<R: Send + 'static> Task for AsyncTask<R> {
    type Output = R;
}

impl<R> std::fmt::Debug for AsyncTask<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTask").finish_non_exhaustive()
    }
}

/// Configures and builds an [`AsyncExecutor`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::aio::AsyncExecutor;
///
/// let executor = AsyncExecutor::builder()
///     .workers(2)
///     .concurrency_limit(10)
///     .task_timeout(Duration::from_secs(30))
///     .name("crawler")
///     .build()?;
/// assert_eq!(executor.concurrency_limit(), Some(10));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AsyncExecutorBuilder {
    workers: Option<usize>,
    limit: Option<usize>,
    timeout: Option<Duration>,
    name: Option<String>,
    stack_size: Option<usize>,
    runtime: Option<RuntimeHandle>,
    drop_timeout: Option<Duration>,
}

impl AsyncExecutorBuilder {
    /// Runtime worker threads (default: the available parallelism). Ignored
    /// with [`on_runtime`](Self::on_runtime).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Run at most `n` tasks at once; the others wait, unstarted, for a slot
    /// (what an `asyncio.Semaphore(n)` around each task does in Python).
    /// Default: no limit.
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Fail a task with a timed-out error once it has run this long (counted
    /// from when it got its slot). The task's future is dropped at that point.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The executor's name, the name of its runtime's threads (default
    /// tokio's, `tokio-rt-worker`). Ignored with
    /// [`on_runtime`](Self::on_runtime).
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = Some(prefix.into());
        self
    }

    /// The stack size of each runtime thread, in bytes. Ignored with
    /// [`on_runtime`](Self::on_runtime).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// How long dropping the executor waits for unfinished tasks before it
    /// gives up on them (default 10 s); see
    /// [`AsyncExecutor::shutdown_timeout`] for what giving up means.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = Some(timeout);
        self
    }

    /// Spawn on an existing runtime instead of starting one. Per-task timeouts
    /// then need that runtime's timer (`enable_time`/`enable_all`).
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let executor = troika::aio::AsyncExecutor::builder()
    ///     .on_runtime(runtime.handle().clone())
    ///     .build()?;
    /// assert_eq!(executor.submit(async { 1 }).result()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_runtime(mut self, runtime: RuntimeHandle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Start the executor (and its runtime, unless one was given).
    ///
    /// Fails with a configuration error for a zero worker count, limit or
    /// timeout, and with an I/O error (its
    /// [`source`](std::error::Error::source)) if the runtime cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::aio::AsyncExecutor;
    ///
    /// assert!(AsyncExecutor::builder().concurrency_limit(0).build().unwrap_err().is_config());
    /// let executor = AsyncExecutor::builder().workers(1).name("doc").build()?;
    /// assert_eq!(executor.submit(async { 6 * 7 }).result()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<AsyncExecutor, BuildError> {
        if self.limit == Some(0) {
            return Err(ConfigError("the concurrency limit must be at least 1".into()).into());
        }
        let workers = checks::workers(self.workers)?;
        let timeout = checks::timeout(self.timeout)?;
        let (runtime, handle, workers) = match self.runtime {
            Some(handle) => {
                let workers = handle.metrics().num_workers();
                (None, handle, workers)
            }
            None => {
                let threads = Arc::new(Threads::default());
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(workers).enable_all();
                let name = self.name.unwrap_or_else(|| DEFAULT_THREAD_NAME.into());
                let spawning = Arc::clone(&threads);
                // Called by the thread that spawns each runtime thread, once
                // per thread, before it starts.
                builder.thread_name_fn(move || {
                    spawning.spawned.fetch_add(1, Ordering::Relaxed);
                    name.clone()
                });
                let stopping = Arc::clone(&threads);
                // Called by each runtime thread after its last task code.
                builder.on_thread_stop(move || {
                    stopping.stopped.fetch_add(1, Ordering::Release);
                });
                if let Some(bytes) = self.stack_size {
                    builder.thread_stack_size(bytes);
                }
                let runtime = crate::futures::check_start()
                    .and_then(|()| builder.build())
                    .map_err(|e| BuildError::start("the async runtime", e))?;
                let handle = runtime.handle().clone();
                (Some((runtime, threads)), handle, workers)
            }
        };
        Ok(AsyncExecutor {
            shared: Arc::new(Shared {
                handle,
                limit: self.limit.map(|n| Arc::new(Semaphore::new(n))),
                limit_size: self.limit,
                timeout,
                closed: AtomicBool::new(false),
                terminating: AtomicBool::new(false),
                waiters: AtomicUsize::new(0),
                idle_lock: Mutex::new(()),
                idle: Condvar::new(),
                workers,
                submitted: CachePadded::new(AtomicUsize::new(0)),
                ended: Default::default(),
            }),
            borrowed: runtime.is_some(),
            runtime: Mutex::new(runtime),
            drop_timeout: self.drop_timeout.unwrap_or(DEFAULT_DROP_TIMEOUT),
            given_up: AtomicBool::new(false),
        })
    }
}

struct Shared {
    handle: RuntimeHandle,
    limit: Option<Arc<Semaphore>>,
    limit_size: Option<usize>,
    timeout: Option<Duration>,
    closed: AtomicBool,
    /// Set by `terminate`: tasks dropped before they started are cancelled.
    terminating: AtomicBool,
    /// Threads waiting in `wait_idle`: only then does an ending task take
    /// `idle_lock` to wake them.
    waiters: AtomicUsize,
    idle_lock: Mutex<()>,
    idle: Condvar,
    workers: usize,
    /// Tasks submitted, written by the submitting threads only: on a cache
    /// line of its own, so that submitting does not contend with the
    /// runtime's threads, which write `ended`.
    submitted: CachePadded<AtomicUsize>,
    /// What the runtime's threads count, each thread in its own shard (see
    /// [`shard`]), so that two workers do not take turns at one cache line;
    /// a count is the sum over the shards.
    ended: [CachePadded<Ends>; SHARDS],
}

/// How many shards of [`Ends`] an executor has.
const SHARDS: usize = 4;

/// The shard of [`Ends`] the calling thread counts in: threads take
/// shards in turn as they first count, so the runtime's first workers each
/// get one of their own.
fn shard() -> u8 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: u8 = (NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS) as u8;
    }
    SHARD.with(|shard| *shard)
}

/// What the runtime's threads count as tasks start and end. Every task
/// ends counted once, in exactly one of `succeeded`, `failed` (the tasks
/// that started) and `left` (those that did not), when its future is gone
/// and just before its handle is settled. So tasks in flight are
/// `submitted - (succeeded + failed + left)` and running ones `started -
/// succeeded - failed`; no counter is ever decremented, and a task that
/// runs costs two increments here.
#[derive(Default)]
struct Ends {
    /// Tasks that got their slot and started.
    started: AtomicUsize,
    succeeded: AtomicUsize,
    failed: AtomicUsize,
    /// Tasks that ended without starting (cancelled while queued, or shut
    /// out by a shutdown).
    left: AtomicUsize,
}

/// Futures on a tokio runtime, behind the same API as the pools: `submit`
/// returns a troika [`Handle`], with `map`, `map_unordered`, `shutdown`, and
/// the free functions [`as_completed`](crate::as_completed) and
/// [`wait`](crate::wait) working on its handles.
///
/// Each submitted future runs as a tokio task. Its handle reports a panic as
/// [`ErrorKind::Panicked`] (message kept), a per-task timeout as
/// [`ErrorKind::TimedOut`], and [`Handle::cancel`] stops the future whether
/// it has started or not — unlike a thread, a future can be dropped at any
/// `.await`. Handles can be waited on from sync code (`result()`) or awaited
/// from async code.
///
/// Dropping the executor shuts it down and waits for its tasks, as the pools
/// do, but for at most its [drop timeout](AsyncExecutorBuilder::drop_timeout)
/// (10 s by default): then the futures still pending are dropped and their
/// handles fail with [`ErrorKind::ShutDown`], as after
/// [`shutdown_timeout`](AsyncExecutor::shutdown_timeout). So a drop returns
/// within the drop timeout plus one second (the time the runtime gets to
/// stop its threads). An executor built
/// [`on_runtime`](AsyncExecutorBuilder::on_runtime) has no runtime of its own
/// to stop: past the drop timeout its pending futures go on running on that
/// runtime and their handles settle when they finish. Dropped while a panic
/// unwinds, it waits for nothing,
/// so the panic goes on at once; dropped from inside async code it does not
/// block.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::aio::AsyncExecutor;
///
/// let executor = AsyncExecutor::builder().concurrency_limit(100).build()?;
/// let naps: Vec<_> = (0..200u64)
///     .map(|i| executor.submit(async move {
///         tokio::time::sleep(Duration::from_millis(5)).await;
///         i
///     }))
///     .collect();
/// let total: u64 = naps.into_iter().map(|h| h.result().unwrap()).sum();
/// assert_eq!(total, 199 * 200 / 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncExecutor {
    shared: Arc<Shared>,
    /// The executor's own runtime, until it is stopped, and the count of its
    /// threads (none with a runtime given through `on_runtime`).
    runtime: Mutex<Option<(Runtime, Arc<Threads>)>>,
    /// Whether the tasks borrow `shared` (the executor runs its own
    /// runtime) instead of each holding a count of it (see [`SharedRef`]).
    borrowed: bool,
    drop_timeout: Duration,
    /// Set once `shutdown_timeout` gave up: the drop does not wait again.
    given_up: AtomicBool,
}

/// The threads an executor's own runtime has spawned and those that have
/// stopped: when the two are equal after the runtime's shutdown, no thread
/// runs (or drops) a task any more.
#[derive(Default)]
struct Threads {
    spawned: AtomicUsize,
    stopped: AtomicUsize,
}

impl Threads {
    /// Whether every thread the runtime spawned has stopped (meaningful once
    /// the runtime is shut down and spawns no more).
    fn all_stopped(&self) -> bool {
        // Acquire: what the stopped threads did happens before what the
        // caller does next (such as freeing the state they used).
        self.stopped.load(Ordering::Acquire) == self.spawned.load(Ordering::Relaxed)
    }
}

/// A task's way to its executor's [`Shared`].
///
/// An executor that runs its own runtime keeps its shared state alive until
/// every runtime thread has stopped (see [`AsyncExecutor::stop_runtime`]),
/// and tasks only run and are only dropped on those threads, or on the
/// submitting thread inside `submit` when the runtime is already shut down:
/// so its tasks hold a plain pointer, and a task costs no reference-count
/// increment on the submitting thread and decrement on a runtime thread (a
/// cache line that moved between them for every task: issue 16 item 4). On
/// a runtime given through `on_runtime`, tasks may outlive the executor, and
/// each holds a count.
enum SharedRef {
    Borrowed(NonNull<Shared>),
    Counted(Arc<Shared>),
}

// SAFETY: `Shared` is `Send` and `Sync` (atomics, locks, a runtime handle);
// a `Borrowed` pointer is only dereferenced by the task that holds it, which
// the executor's shared state outlives (see `SharedRef`), so moving it to
// another thread or sharing it is as safe as for an `Arc<Shared>`.
unsafe impl Send for SharedRef {}
// SAFETY: as for `Send` above.
unsafe impl Sync for SharedRef {}

impl std::ops::Deref for SharedRef {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        match self {
            // SAFETY: the executor's shared state outlives its tasks (see
            // `SharedRef`), and it is only read through shared references.
            SharedRef::Borrowed(shared) => unsafe { shared.as_ref() },
            SharedRef::Counted(shared) => shared,
        }
    }
}

/// The task's tokio `JoinHandle`, kept in the task's state until its handle
/// and promise are gone, so that tokio's task cell is normally freed by the
/// thread that dropped the handle — the submitting thread, which allocated
/// it — instead of by a runtime thread: a memory allocator frees a block
/// another thread allocated through a slower, shared path (measured with
/// mimalloc: about a tenth of a burst's CPU).
struct JoinSlot(std::cell::UnsafeCell<Option<tokio::task::JoinHandle<()>>>);

// SAFETY: the slot is written once, by the submitting thread, before the
// task's `Handle` is made (so before any other thread can reach the state
// through it; the runtime's copy, the `Promise`, never touches the tail), and
// read only by its drop, on the thread that drops the state's last
// reference, which `Arc`'s release and acquire order after that write.
unsafe impl Sync for JoinSlot {}

/// Completes the promise when the task's future is dropped without finishing
/// (the runtime shut down), and keeps the in-flight count.
struct Guard<T> {
    promise: Promise<T>,
    shared: SharedRef,
    /// The task started (and counts in `started`).
    started: bool,
    /// Its outcome was counted in `succeeded` or `failed`.
    counted: bool,
    /// The shard it counts in: the one of the thread that started it (looked
    /// up once; a task that moves to another thread goes on counting there).
    shard: u8,
}

impl<T> Guard<T> {
    /// The task's shard of the counters.
    fn ends(&self) -> &Ends {
        &self.shared.ended[usize::from(self.shard)]
    }

    fn start(&mut self) -> bool {
        self.started = self.promise.start();
        if self.started {
            self.shard = shard();
            self.ends().started.fetch_add(1, Ordering::Relaxed);
        }
        self.started
    }

    /// Count the task's end, then publish its outcome (so that a waiter
    /// that wakes up finds it counted). The outcome is counted as it is
    /// decided: claimed first, so that a `cancel()` arriving at the same
    /// instant either wins (the task failed) or finds it decided. Called
    /// once the future is gone.
    fn complete(&mut self, outcome: Result<T, TaskError>) {
        self.counted = true;
        #[cfg(test)]
        crate::test_hooks::before_complete();
        let ended = self.ends();
        match self.promise.claim() {
            Some(claim) => {
                let counter = if outcome.is_ok() {
                    &ended.succeeded
                } else {
                    &ended.failed
                };
                counter.fetch_add(1, Ordering::SeqCst);
                claim.publish(outcome);
            }
            // Decided already (by a cancel): the task failed.
            None => {
                ended.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.shared.ended();
    }
}

impl<T> Drop for Guard<T> {
    /// The end of a task that did not [`complete`](Guard::complete): its
    /// future is dropped (the runtime stopped, or a cancel ended it before
    /// it started).
    fn drop(&mut self) {
        if self.counted {
            return;
        }
        // A no-op when the outcome is already decided (by a cancel).
        let err = if self.started {
            // Dropped while running: cancelled, or the runtime stopped.
            self.ends().failed.fetch_add(1, Ordering::SeqCst);
            TaskError::shut_down()
        } else {
            self.ends().left.fetch_add(1, Ordering::SeqCst);
            if self.shared.terminating.load(Ordering::Acquire) {
                // Dropped before it started: cancelled by `terminate`...
                TaskError::cancelled()
            } else {
                // ... or shut out by a shutdown that stopped waiting.
                TaskError::shut_down()
            }
        };
        self.promise.complete(Err(err));
        self.shared.ended();
    }
}

impl Shared {
    /// Wake `wait_idle` after a task's end was counted (with `SeqCst`):
    /// either its check of the counts sees this task ended, or this load
    /// sees the waiter, which holds `idle_lock` from its check until it
    /// sleeps, so the notification cannot fall in between.
    fn ended(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _idle = self.idle_lock.lock();
            self.idle.notify_all();
        }
    }

    /// One counter summed over the shards.
    fn total(&self, counter: impl Fn(&Ends) -> &AtomicUsize, order: Ordering) -> usize {
        self.ended
            .iter()
            .map(|ends| counter(ends).load(order))
            .fold(0, usize::wrapping_add)
    }

    /// Tasks submitted and not finished.
    fn in_flight(&self) -> usize {
        // The ends first: they never pass `submitted`, so a zero here means
        // no task was in flight when `submitted` was read.
        let finished = self
            .total(|ends| &ends.succeeded, Ordering::SeqCst)
            .wrapping_add(self.total(|ends| &ends.failed, Ordering::SeqCst))
            .wrapping_add(self.total(|ends| &ends.left, Ordering::SeqCst));
        self.submitted
            .load(Ordering::SeqCst)
            .saturating_sub(finished)
    }

    /// Block until no task is in flight or `deadline` passes; true if none is.
    fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let mut idle = self.idle_lock.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let idle_now = loop {
            if self.in_flight() == 0 {
                break true;
            }
            match deadline {
                Some(deadline) => {
                    if self.idle.wait_until(&mut idle, deadline).timed_out() {
                        break self.in_flight() == 0;
                    }
                }
                None => self.idle.wait(&mut idle),
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        idle_now
    }
}

/// A task's wait for its concurrency slot (boxed: only executors with a
/// limit pay for it).
type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// One task as tokio runs it: it waits for a concurrency slot (if the
/// executor has a limit), then polls the submitted future under the
/// optional time limit, catching a panic, and settles the handle through
/// its guard. One struct instead of nested combinators keeps the task small
/// (it is moved into tokio's task cell) and costs no allocation beyond
/// tokio's own unless a limit or a timeout asks for one.
struct TaskFuture<F, T> {
    /// The submitted future; `None` once it finished (it is dropped before
    /// the handle is settled, as a finished future's resources should be).
    /// Structurally pinned: never moved out while the task is pinned.
    future: Option<F>,
    /// What a limit or a timeout needs (boxed: only executors with one of
    /// them pay for it, the others' tasks stay small).
    extra: Option<Box<Extra>>,
    guard: Guard<T>,
}

/// The part of a task that only a concurrency limit or a task timeout needs.
#[derive(Default)]
struct Extra {
    /// Waiting for a concurrency slot.
    acquire: Option<Acquire>,
    /// The slot, held while the task runs.
    permit: Option<OwnedSemaphorePermit>,
    /// The deadline, set when the task starts.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F, T> TaskFuture<F, T> {
    /// End the task with `outcome`: drop the future, settle the handle,
    /// release the slot. A panic while dropping the future makes the
    /// outcome that panic.
    fn finish(self: Pin<&mut Self>, mut outcome: Result<T, TaskError>) {
        // SAFETY: `future` is dropped in place, never moved; no other field
        // is structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(panicked) = this.drop_future() {
            outcome = Err(panicked);
        }
        if let Some(extra) = &mut this.extra {
            extra.sleep = None;
        }
        this.guard.complete(outcome);
        // The slot is given up once the outcome is out.
        this.extra = None;
    }

    /// Drop the submitted future where it lies, catching a panic of its
    /// drop, which is returned as the task's error. Must be called on a
    /// pinned `TaskFuture` (from `finish`, or from `drop`).
    fn drop_future(&mut self) -> Option<TaskError> {
        let slot: *mut Option<F> = &mut self.future;
        // SAFETY: `slot` points to the live `future` field; the future is
        // dropped in place (pinning allows that) and its slot is then
        // overwritten with `None` without dropping the old value again,
        // whether the drop returned or panicked (a panicking drop still
        // drops the rest of the value).
        let caught = unsafe {
            let Some(future) = &mut *slot else {
                return None;
            };
            let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
                std::ptr::drop_in_place(future as *mut F);
            }));
            std::ptr::write(slot, None);
            caught
        };
        caught.err().map(|payload| {
            TaskError::new(ErrorKind::Panicked(crate::futures::panic_message(
                &*payload,
            )))
        })
    }
}

impl<F, T> Drop for TaskFuture<F, T> {
    /// A task dropped before it finished (the runtime stopped): a panic of
    /// the future's drop settles a started task as panicked, not shut down.
    fn drop(&mut self) {
        // `self` is pinned (tokio drops the task in its cell), as
        // `drop_future` needs.
        if let Some(panicked) = self.drop_future()
            && self.guard.started
            && !self.guard.counted
        {
            self.guard.complete(Err(panicked));
        }
    }
}

impl<F, T> Future for TaskFuture<F, T>
where
    F: Future<Output = Result<T, TaskError>>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: only `future` is structurally pinned, and it is only
        // reached through `Pin::new_unchecked` below; the other fields are
        // moved freely, as their types allow.
        let this = unsafe { self.as_mut().get_unchecked_mut() };
        if let Some(extra) = &mut this.extra
            && let Some(acquire) = &mut extra.acquire
        {
            if this.guard.promise.is_done() {
                // Cancelled while waiting for a slot: leave the queue now
                // (dropping the wait), not when the slot comes.
                extra.acquire = None;
                return Poll::Ready(());
            }
            match acquire.as_mut().poll(cx) {
                Poll::Pending => {
                    // A `cancel()` from now on wakes this task, which then
                    // leaves (above); if one came first, leave now.
                    if this.guard.promise.park_until_decided(cx.waker()) {
                        return Poll::Pending;
                    }
                    extra.acquire = None;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(permit)) => {
                    extra.permit = Some(permit);
                    extra.acquire = None;
                }
                Poll::Ready(Err(_)) => {
                    // The semaphore is closed: shut down with pending cancelled.
                    this.guard.promise.complete(Err(TaskError::cancelled()));
                    return Poll::Ready(());
                }
            }
        }
        if !this.guard.started {
            if !this.guard.start() {
                return Poll::Ready(()); // cancelled while waiting for a slot
            }
            if let Some(limit) = this.guard.shared.timeout {
                let extra = this.extra.get_or_insert_with(Box::default);
                extra.sleep = Some(Box::pin(tokio::time::sleep(limit)));
            }
        }
        if this.guard.promise.is_done() {
            // Cancelled while running: `cancel()` decided the outcome and
            // woke this task to drop its future.
            self.finish(Err(TaskError::cancelled()));
            return Poll::Ready(());
        }
        // SAFETY: `future` is structurally pinned (see the struct).
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let Some(future) = future.as_pin_mut() else {
            return Poll::Ready(());
        };
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(outcome)) => outcome,
            Ok(Poll::Pending) => {
                let expired = this
                    .extra
                    .as_mut()
                    .and_then(|extra| extra.sleep.as_mut())
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                match this.guard.shared.timeout {
                    Some(limit) if expired => Err(TaskError::new(ErrorKind::TimedOut(limit))),
                    // Woken by a `cancel()` too; if one came first, end now.
                    _ if this.guard.promise.park_until_decided(cx.waker()) => {
                        return Poll::Pending;
                    }
                    _ => Err(TaskError::cancelled()),
                }
            }
            Err(payload) => Err(TaskError::new(ErrorKind::Panicked(
                crate::futures::panic_message(&*payload),
            ))),
        };
        self.finish(outcome);
        Poll::Ready(())
    }
}

impl AsyncExecutor {
    /// An executor with its own multi-threaded runtime, one worker per core,
    /// and no concurrency limit.
    pub fn new() -> Result<AsyncExecutor, BuildError> {
        AsyncExecutor::builder().build()
    }

    /// Configure an executor.
    pub fn builder() -> AsyncExecutorBuilder {
        AsyncExecutorBuilder::default()
    }

    /// The runtime's worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// The most tasks run at once, if limited.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.shared.limit_size
    }

    /// Tasks submitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Tasks submitted since the executor started.
    pub fn submitted(&self) -> usize {
        self.shared.submitted.load(Ordering::Relaxed)
    }

    /// Queued (waiting for a concurrency slot) and running tasks, and
    /// counters, readable at any time (see [`PoolStats`]; `restarts` is
    /// always zero here).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::aio::AsyncExecutor;
    ///
    /// let executor = AsyncExecutor::new()?;
    /// executor.submit(async { 1 }).result()?;
    /// let stats = executor.stats();
    /// assert_eq!((stats.succeeded, stats.failed, stats.busy), (1, 0, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        let in_flight = self.in_flight();
        let shared = &self.shared;
        // Read the outcomes first: they never pass `started`.
        let succeeded = shared.total(|ends| &ends.succeeded, Ordering::Acquire);
        let failed = shared.total(|ends| &ends.failed, Ordering::Acquire);
        let running = shared
            .total(|ends| &ends.started, Ordering::Acquire)
            .saturating_sub(succeeded + failed);
        PoolStats {
            workers: self.shared.workers,
            queued: in_flight.saturating_sub(running),
            busy: running,
            succeeded,
            failed,
            restarts: 0,
        }
    }

    /// The runtime the tasks run on, for spawning or entering it directly.
    pub fn runtime_handle(&self) -> &RuntimeHandle {
        &self.shared.handle
    }

    /// Run `future` as a task and return its handle.
    ///
    /// After [`shutdown`](Self::shutdown) the handle is already failed with
    /// [`ErrorKind::ShutDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// let executor = troika::aio::AsyncExecutor::new()?;
    /// let handle = executor.submit(async { tokio::task::yield_now().await; "ready" });
    /// assert_eq!(handle.result()?, "ready"); // or `handle.await` from async code
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit<F>(&self, future: F) -> Handle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Handle::ready(Err(TaskError::shut_down()));
        }
        self.spawn(future.map(Ok))
    }

    /// Run `future` as a task, or hand it back if the executor is shut
    /// down (the async executor has no bounded queue, so it is never full).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::SubmitErrorReason;
    /// use troika::aio::AsyncExecutor;
    ///
    /// let executor = AsyncExecutor::new()?;
    /// assert_eq!(executor.try_submit(async { 1 }).unwrap().result()?, 1);
    /// executor.shutdown(false, false);
    /// let refused = executor.try_submit(async { 2 }).unwrap_err();
    /// assert_eq!(refused.reason, SubmitErrorReason::ShutDown);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_submit<F>(&self, future: F) -> Result<Handle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SubmitError {
                task: future,
                reason: SubmitErrorReason::ShutDown,
            });
        }
        Ok(self.spawn(future.map(Ok)))
    }

    /// Spawn a future whose own outcome may already be a task error.
    fn spawn<F, T>(&self, future: F) -> Handle<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        let (promise, inner) = future_pair(JoinSlot(std::cell::UnsafeCell::new(None)));
        self.shared.submitted.fetch_add(1, Ordering::SeqCst);
        let extra = self.shared.limit.as_ref().map(|limit| {
            Box::new(Extra {
                acquire: Some(Box::pin(Arc::clone(limit).acquire_owned())),
                ..Extra::default()
            })
        });
        let task = TaskFuture {
            future: Some(future),
            extra,
            guard: Guard {
                promise,
                shared: self.task_ref(),
                started: false,
                counted: false,
                shard: 0,
            },
        };
        // A `cancel()` wakes the task, which drops its future; stopping the
        // runtime drops the whole task, and with it the guard, which
        // settles the handle.
        let join = self.shared.handle.spawn(task);
        // SAFETY: the slot's only write, before the handle exists (see
        // `JoinSlot`).
        unsafe { *inner.tail.0.get() = Some(join) };
        Handle::from_inner(inner)
    }

    /// How a new task reaches the executor's shared state.
    fn task_ref(&self) -> SharedRef {
        if self.borrowed {
            SharedRef::Borrowed(NonNull::from(&*self.shared))
        } else {
            SharedRef::Counted(Arc::clone(&self.shared))
        }
    }

    /// Run a blocking closure on the runtime's blocking threads (tokio's
    /// `spawn_blocking`), as a task of this executor.
    ///
    /// # Examples
    ///
    /// ```
    /// let executor = troika::aio::AsyncExecutor::new()?;
    /// let handle = executor.spawn_blocking(|| std::fs::metadata(".").is_ok());
    /// assert!(handle.result()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_blocking<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Handle::ready(Err(TaskError::shut_down()));
        }
        self.spawn(async move { tokio::task::spawn_blocking(f).await.map_err(join_error) })
    }

    /// Drive `future` to completion on this executor's runtime from sync
    /// code, and return its output.
    ///
    /// Fails (instead of panicking) when called from inside async code,
    /// where blocking would stall a runtime thread: `.await` there instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let executor = troika::aio::AsyncExecutor::new()?;
    /// let answer = executor.block_on(async {
    ///     let h = executor.submit(async { 21 });
    ///     h.await.map(|x| x * 2)
    /// })??;
    /// assert_eq!(answer, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, TaskError> {
        if RuntimeHandle::try_current().is_ok() {
            return Err(TaskError::new(ErrorKind::Failed(
                "block_on called from async code; .await the future instead".into(),
            )));
        }
        Ok(self.shared.handle.block_on(future))
    }

    /// Run `f` over `items` as tasks and yield the outcomes in input order,
    /// from sync code. Lazy, with a bounded window in flight (see
    /// [`Executor::map_tasks`]).
    pub fn map<A, F, Fut, I>(
        &self,
        f: F,
        items: I,
    ) -> impl Iterator<Item = Result<Fut::Output, TaskError>> + '_
    where
        F: Fn(A) -> Fut + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let window = self.window();
        self.map_tasks(items.into_iter().map(move |a| AsyncTask::new(f(a))), window)
    }

    /// Like [`map`](Self::map), yielding `(input position, outcome)` in
    /// completion order.
    ///
    /// # Examples
    ///
    /// ```
    /// let executor = troika::aio::AsyncExecutor::new()?;
    /// let mut outcomes: Vec<(usize, u32)> = executor
    ///     .map_unordered(|n: u32| async move { n * 10 }, [1, 2, 3])
    ///     .map(|(i, r)| (i, r.unwrap()))
    ///     .collect();
    /// outcomes.sort();
    /// assert_eq!(outcomes, [(0, 10), (1, 20), (2, 30)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_unordered<A, F, Fut, I>(
        &self,
        f: F,
        items: I,
    ) -> impl Iterator<Item = (usize, Result<Fut::Output, TaskError>)> + '_
    where
        F: Fn(A) -> Fut + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let window = self.window();
        self.map_tasks_unordered(items.into_iter().map(move |a| AsyncTask::new(f(a))), window)
    }

    /// The in-flight window of `map`.
    fn window(&self) -> usize {
        crate::default_window(self.concurrency_limit().unwrap_or(UNLIMITED_PARALLELISM))
    }

    /// Stop taking tasks. With `cancel_pending`, tasks still waiting for a
    /// concurrency slot end as cancelled. With `wait`, block until every
    /// task has finished (from async code the wait is skipped, since blocking
    /// there could stall the very tasks being waited for).
    ///
    /// # Examples
    ///
    /// ```
    /// let executor = troika::aio::AsyncExecutor::new()?;
    /// let handle = executor.submit(async { 5 });
    /// executor.shutdown(true, false); // waits for the task
    /// assert_eq!(handle.result()?, 5);
    /// assert!(executor.submit(async { 6 }).result().unwrap_err().is_shut_down());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.shared.closed.store(true, Ordering::Release);
        if cancel_pending && let Some(limit) = &self.shared.limit {
            limit.close();
        }
        if wait && RuntimeHandle::try_current().is_err() {
            self.shared.wait_idle(None);
        }
    }

    /// Stop taking tasks, wait at most `timeout` for the submitted ones to
    /// finish, then stop the runtime (like tokio's
    /// `Runtime::shutdown_timeout`). Returns whether every task finished in
    /// time.
    ///
    /// Tasks still unfinished at the deadline are given up: their futures
    /// are dropped (at their current `.await`) and their handles fail with
    /// [`ErrorKind::ShutDown`]. A `spawn_blocking` closure cannot be
    /// stopped; it runs on, detached, to its end. The runtime then gets one
    /// more second to stop its threads. With a runtime given through
    /// [`on_runtime`](AsyncExecutorBuilder::on_runtime), that runtime is not
    /// stopped and unfinished tasks run on there. From inside async code
    /// nothing is waited for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::aio::AsyncExecutor;
    ///
    /// let executor = AsyncExecutor::new()?;
    /// let stuck = executor.submit(std::future::pending::<()>());
    /// assert!(!executor.shutdown_timeout(Duration::from_millis(10)));
    /// assert!(stuck.result().unwrap_err().is_shut_down());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        self.close_within(timeout)
    }

    /// Stop at once: accept no more tasks, cancel the ones waiting for a
    /// concurrency slot, and drop the running futures (their handles fail
    /// with [`ErrorKind::ShutDown`]) by stopping the runtime; the same as
    /// [`shutdown_timeout`](Self::shutdown_timeout) with a zero timeout, once
    /// the queued tasks are cancelled. A `spawn_blocking` closure runs on,
    /// detached; an executor built [`on_runtime`](AsyncExecutorBuilder::on_runtime)
    /// leaves its running futures to that runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::aio::AsyncExecutor;
    ///
    /// let executor = AsyncExecutor::builder().concurrency_limit(1).build()?;
    /// let (started, wait_start) = std::sync::mpsc::channel();
    /// let running = executor.submit(async move {
    ///     started.send(()).unwrap();
    ///     std::future::pending::<()>().await
    /// });
    /// let queued = executor.submit(async {});
    /// wait_start.recv()?;
    /// executor.terminate();
    /// assert!(running.result().unwrap_err().is_shut_down());
    /// assert!(queued.result().unwrap_err().is_cancelled());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) {
        self.shared.terminating.store(true, Ordering::Release);
        self.shutdown(false, true);
        self.close_within(Duration::ZERO);
    }

    /// Shut down, waiting at most `timeout` for the tasks; then stop the
    /// runtime, dropping the futures left. True if every task finished.
    fn close_within(&self, timeout: Duration) -> bool {
        self.shared.closed.store(true, Ordering::Release);
        let in_async = RuntimeHandle::try_current().is_ok();
        let mut finished = self.in_flight() == 0;
        if !in_async {
            finished = self.shared.wait_idle(Instant::now().checked_add(timeout));
        }
        let runtime = self.runtime.lock().take();
        if let Some((runtime, threads)) = runtime {
            self.stop_runtime(runtime, threads, in_async);
        }
        // Given up once: the drop that follows does not wait again.
        self.given_up.store(true, Ordering::Release);
        finished
    }
}

impl AsyncExecutor {
    /// Stop the executor's own runtime: its futures are dropped, and its
    /// threads get [`RUNTIME_STOP`] to end. Its tasks borrow the shared
    /// state ([`SharedRef`]): if a thread has not stopped by then (stuck in
    /// a task), the state is never freed, since that thread may still run
    /// or drop a task. Inside async code, where waiting would stall a
    /// runtime thread, a thread of its own does the stopping.
    fn stop_runtime(&self, runtime: Runtime, threads: Arc<Threads>, in_async: bool) {
        let stop = Stop {
            runtime: Some(runtime),
            threads,
            shared: Some(Arc::clone(&self.shared)),
        };
        if !in_async {
            stop.run();
            return;
        }
        // If the thread cannot start, `Stop`'s drop stops the runtime in
        // the background (dropping a runtime inside async code would panic).
        let _ = std::thread::Builder::new()
            .name("troika-aio-stop".into())
            .spawn(move || stop.run());
    }
}

/// Stops an executor's runtime, and keeps the executor's shared state alive
/// for good if a runtime thread may still use it (see
/// [`AsyncExecutor::stop_runtime`]).
struct Stop {
    runtime: Option<Runtime>,
    threads: Arc<Threads>,
    shared: Option<Arc<Shared>>,
}

impl Stop {
    /// Stop the runtime, waiting at most [`RUNTIME_STOP`] for its threads.
    fn run(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(RUNTIME_STOP);
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        // Not run (the thread that was to run it did not start): stop the
        // runtime without waiting.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        if !self.threads.all_stopped()
            && let Some(shared) = self.shared.take()
        {
            // A runtime thread may still run or drop a task, which borrows
            // the state: it must never be freed.
            std::mem::forget(shared);
        }
    }
}

impl<R: Send + 'static> Executor<AsyncTask<R>> for AsyncExecutor {
    fn submit(&self, task: AsyncTask<R>) -> Handle<R> {
        AsyncExecutor::submit(self, task.0)
    }

    fn try_submit(&self, task: AsyncTask<R>) -> Result<Handle<R>, SubmitError<AsyncTask<R>>> {
        AsyncExecutor::try_submit(self, task.0).map_err(|e| SubmitError {
            task: AsyncTask(e.task),
            reason: e.reason,
        })
    }

    fn parallelism(&self) -> usize {
        self.concurrency_limit().unwrap_or(UNLIMITED_PARALLELISM)
    }
}

impl Drop for AsyncExecutor {
    fn drop(&mut self) {
        // While a panic unwinds, waiting for tasks (perhaps the very ones
        // the panic left waiting) would hold the panic up: give up at once.
        let timeout = if std::thread::panicking() || self.given_up.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            self.drop_timeout
        };
        self.close_within(timeout);
    }
}

impl std::fmt::Debug for AsyncExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncExecutor")
            .field("workers", &self.shared.workers)
            .field("concurrency_limit", &self.concurrency_limit())
            .field("in_flight", &self.in_flight())
            .field("shut_down", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests;
