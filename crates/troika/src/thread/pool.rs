//! [`ThreadPool`]: a fixed set of worker threads behind the futures API.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, RwLock};

use super::handoff::Handoff;
use super::job::Job;
use super::watchdog::Watchdog;
use crate::futures::{
    BuildError, CancelToken, Executor, Handle, PoolStats, Promise, SubmitError, SubmitErrorReason,
    TaskError, check_start, checks,
};

/// How long an idle worker spins on the queue before it parks. Bounded, so an
/// idle pool uses no CPU; long enough that a task submitted right after the
/// last one finishes is picked up without a kernel wake-up.
const IDLE_SPIN: Duration = Duration::from_micros(50);

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

type Initializer = Arc<dyn Fn(usize) + Send + Sync>;

/// Configures and builds a [`ThreadPool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::builder()
///     .workers(4)
///     .name("resize")
///     .initializer(|index| eprintln!("worker {index} ready"))
///     .task_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(pool.workers(), 4);
/// ```
#[derive(Clone)]
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    name: String,
    initializer: Option<Initializer>,
    timeout: Option<Duration>,
    queue_capacity: Option<usize>,
    stack_size: Option<usize>,
    drop_timeout: Option<Duration>,
}

/// How long dropping a [`ThreadPool`] waits for its workers by default (see
/// [`ThreadPoolBuilder::drop_timeout`]).
const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            workers: None,
            name: "troika-worker".to_owned(),
            initializer: None,
            timeout: None,
            queue_capacity: None,
            stack_size: None,
            drop_timeout: None,
        }
    }
}

impl ThreadPoolBuilder {
    /// The number of worker threads (default: the available parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The pool's name (default `troika-worker`), the prefix of its thread
    /// names: workers are `name-N`, the task-timeout watchdog
    /// `name-watchdog`.
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Run `init(worker_index)` on each worker thread before its first task,
    /// also on threads that replace timed-out workers.
    ///
    /// A panic in it breaks the pool, as in Python's `BrokenThreadPool`:
    /// from then on every task, queued or submitted later, fails with
    /// [`ErrorKind::InitializerFailed`](crate::ErrorKind::InitializerFailed)
    /// carrying the panic's message instead of running.
    pub fn initializer(mut self, init: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Fail a task with a timed-out error once it has run this long.
    ///
    /// The clock starts when a worker starts the task, not when it is queued.
    /// A running thread cannot be killed safely, so the timed-out task keeps
    /// running to its end: its handle reports the error at once, its worker is
    /// retired and a fresh thread takes its place, so the pool keeps its size.
    /// The retired thread exits when the task returns. A task submitted with
    /// [`submit_with_token`](ThreadPool::submit_with_token) sees its
    /// [`CancelToken`](crate::CancelToken) set at the timeout and can return
    /// early; the process pool kills a timed-out task outright.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ThreadPool;
    ///
    /// let pool = ThreadPool::builder()
    ///     .workers(1)
    ///     .task_timeout(Duration::from_millis(20))
    ///     .build()
    ///     .unwrap();
    /// let (seen, saw_token) = std::sync::mpsc::channel();
    /// let handle = pool.submit_with_token(move |token| {
    ///     while !token.is_cancelled() {
    ///         std::thread::yield_now();
    ///     }
    ///     seen.send(()).unwrap();
    /// });
    /// assert!(handle.result().unwrap_err().is_timeout());
    /// saw_token.recv().unwrap(); // the task returned early
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bound the queue of waiting tasks: `submit` then blocks while it is full
    /// and `try_submit` fails with [`SubmitErrorReason::Full`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// How long dropping the pool waits for its workers to finish the
    /// running and queued tasks (default 10 s)
    /// before it returns and leaves them to finish detached (see
    /// [`ThreadPool::shutdown_timeout`]).
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = Some(timeout);
        self
    }

    /// The stack size of each worker thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Start the pool's threads.
    ///
    /// Fails with a configuration error for zero workers, a zero timeout or
    /// a zero queue capacity, and with an I/O error (its
    /// [`source`](std::error::Error::source)) if a thread cannot be started:
    /// then the threads already started are stopped and joined first, and
    /// no thread of the pool is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ThreadPool;
    ///
    /// assert!(ThreadPool::builder().workers(0).build().unwrap_err().is_config());
    /// let pool = ThreadPool::builder().workers(1).stack_size(1 << 20).build()?;
    /// assert_eq!(pool.submit(|| 1 + 1).result()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let workers = checks::workers(self.workers)?;
        let timeout = checks::timeout(self.timeout)?;
        let (sender, receiver) = match checks::queue_capacity(self.queue_capacity)? {
            Some(cap) => crossbeam_channel::bounded(cap),
            None => crossbeam_channel::unbounded(),
        };
        let shared = Arc::new(Shared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            sender: CachePadded::new(RwLock::new(Some(sender))),
            receiver,
            handoff: CachePadded::new(Handoff::new()),
            workers,
            name: self.name,
            initializer: self.initializer,
            timeout,
            stack_size: self.stack_size,
            threads: Mutex::new(Vec::new()),
            spawned: AtomicUsize::new(0),
            busy: CachePadded::new(AtomicUsize::new(0)),
            succeeded: CachePadded::new(AtomicUsize::new(0)),
            failed: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            running_tokens: Mutex::new(RunningTokens::default()),
            watchdog: Mutex::new(None),
            exits: Mutex::new(()),
            broken: OnceLock::new(),
            exited: Condvar::new(),
            drop_timeout: self.drop_timeout.unwrap_or(DEFAULT_DROP_TIMEOUT),
        });
        // From here on a failure drops `pool`, which shuts down and joins
        // the threads started so far (rayon-core's `Terminator`).
        let pool = ThreadPool { shared };
        if pool.shared.timeout.is_some() {
            // A timeout that cannot be enforced is an error, not silently off.
            let watchdog = check_start()
                .and_then(|()| Watchdog::start(Arc::downgrade(&pool.shared), &pool.shared.name))
                .map_err(|e| BuildError::start("the task-timeout watchdog thread", e))?;
            *pool.shared.watchdog.lock() = Some(watchdog);
        }
        for _ in 0..workers {
            check_start()
                .and_then(|()| pool.shared.spawn_worker())
                .map_err(|e| BuildError::start("a worker thread", e))?;
        }
        Ok(pool)
    }
}

/// A pool of worker threads running closures.
///
/// `submit` queues a closure and returns a [`Handle`]; `map` runs a function
/// over an iterator in input order with a bounded number of tasks in flight.
/// The `multiprocessing.Pool` calls (`apply`, `apply_async`, `imap`, …) are
/// here too. A panicking task fails only its own handle; the worker lives on.
///
/// Dropping the pool shuts it down: queued tasks still run, and the drop
/// waits for the workers to finish them, for at most the pool's
/// [drop timeout](ThreadPoolBuilder::drop_timeout) (10 s by default). A
/// thread cannot be stopped from outside: workers still busy then (a task
/// that never returns) are detached and exit once the queue is done, and
/// the drop returns. Dropped while a panic unwinds, the pool waits for
/// nothing, so the panic goes on at once.
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let squares: Vec<u64> = pool.map(|x: u64| x * x, 1..=4).map(Result::unwrap).collect();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) id: usize,
    /// Written (its lock word) by every submit: alone on its cache line
    /// (`CachePadded`), so that a submit does not take from a worker the
    /// line of the fields it reads or writes per task.
    sender: CachePadded<RwLock<Option<Sender<Job>>>>,
    receiver: Receiver<Job>,
    /// Where a submitter hands a job straight to a worker spinning idle,
    /// when nothing is queued (see [`Handoff`]): one cache line crossed
    /// instead of three. On a line of its own.
    handoff: CachePadded<Handoff<Job>>,
    workers: usize,
    name: String,
    initializer: Option<Initializer>,
    pub(crate) timeout: Option<Duration>,
    stack_size: Option<usize>,
    threads: Mutex<Vec<(Arc<WorkerSlot>, JoinHandle<()>)>>,
    spawned: AtomicUsize,
    /// Written by the workers per task (`busy` twice, `succeeded` once): each
    /// on a line of its own, away from the submitters' `sender` and from the
    /// fields both sides only read.
    busy: CachePadded<AtomicUsize>,
    succeeded: CachePadded<AtomicUsize>,
    failed: AtomicUsize,
    restarts: AtomicUsize,
    /// The cancel tokens of the running `submit_with_token` tasks, which
    /// [`ThreadPool::terminate`] sets.
    running_tokens: Mutex<RunningTokens>,
    pub(crate) watchdog: Mutex<Option<Watchdog>>,
    /// Held to wait on `exited`.
    exits: Mutex<()>,
    /// Set when an initializer panicked: no task runs any more.
    broken: OnceLock<String>,
    /// Signalled whenever a worker thread ends.
    exited: Condvar,
    drop_timeout: Duration,
}

/// One worker thread's identity, shared with the watchdog.
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    /// Set when the worker's task timed out: it exits once the task returns.
    pub(crate) retired: AtomicBool,
    /// Set when the worker thread is done (it may still be returning).
    done: AtomicBool,
}

/// Marks a worker thread done when it ends, however it ends.
struct ExitSignal<'a> {
    shared: &'a Shared,
    slot: &'a WorkerSlot,
}

impl Drop for ExitSignal<'_> {
    fn drop(&mut self) {
        let _exits = self.shared.exits.lock();
        self.slot.done.store(true, Ordering::Release);
        self.shared.exited.notify_all();
    }
}

/// The cancel tokens of the running tasks that have one.
#[derive(Default)]
struct RunningTokens {
    /// Set by `terminate`: a token registered later is cancelled at once.
    terminated: bool,
    next: u64,
    tokens: std::collections::HashMap<u64, CancelToken>,
}

/// Unregisters a running task's cancel token when the task returns.
struct TokenGuard {
    shared: Arc<Shared>,
    key: u64,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        self.shared.running_tokens.lock().tokens.remove(&self.key);
    }
}

/// What a worker thread knows of its pool: the pool and its own slot.
type WorkerContext = (Arc<Shared>, Arc<WorkerSlot>);

thread_local! {
    /// The pool this thread works for, if any.
    static CURRENT: std::cell::RefCell<Option<WorkerContext>> =
        const { std::cell::RefCell::new(None) };
}

/// While `done()` is false and this thread is a worker of pool `owner`, run
/// that pool's queued tasks here. Returns whether `done()` became true; false
/// means the caller must block (the queue is empty, so whatever it waits for
/// is running on another thread and blocking cannot deadlock the pool).
pub(crate) fn help_while(owner: usize, done: impl Fn() -> bool) -> bool {
    let shared = CURRENT.with(|current| match &*current.borrow() {
        Some((shared, _)) if shared.id == owner => Some(Arc::clone(shared)),
        _ => None,
    });
    let Some(shared) = shared else {
        return done();
    };
    loop {
        if done() {
            return true;
        }
        match shared.receiver.try_recv() {
            Ok(job) => job.run(&shared),
            Err(_) => return done(),
        }
    }
}

/// The pool this thread is a worker of, if any.
fn current_pool() -> Option<Arc<Shared>> {
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .map(|(shared, _)| Arc::clone(shared))
    })
}

fn current_slot() -> Option<Arc<WorkerSlot>> {
    CURRENT.with(|current| current.borrow().as_ref().map(|(_, slot)| Arc::clone(slot)))
}

impl Shared {
    /// Start one worker thread.
    pub(crate) fn spawn_worker(self: &Arc<Self>) -> std::io::Result<()> {
        let index = self.spawned.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(WorkerSlot::default());
        let mut builder = std::thread::Builder::new().name(format!("{}-{index}", self.name));
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let shared = Arc::clone(self);
        let worker_slot = Arc::clone(&slot);
        let thread = builder.spawn(move || shared.work(index, worker_slot))?;
        let mut threads = self.threads.lock();
        threads.retain(|(_, t)| !t.is_finished());
        threads.push((slot, thread));
        Ok(())
    }

    fn work(self: Arc<Self>, index: usize, slot: Arc<WorkerSlot>) {
        let _exit = ExitSignal {
            shared: &self,
            slot: &slot,
        };
        CURRENT.with(|current| {
            *current.borrow_mut() = Some((Arc::clone(&self), Arc::clone(&slot)));
        });
        if let Some(init) = &self.initializer
            && let Err(payload) = catch_unwind(AssertUnwindSafe(|| init(index)))
        {
            let msg = crate::futures::panic_message(&*payload);
            let _ = self
                .broken
                .set(format!("it panicked in worker {index}: {msg}"));
        }
        while let Some(job) = self.next_job() {
            job.run(&self);
            if slot.retired.load(Ordering::Acquire) {
                break;
            }
        }
        CURRENT.with(|current| current.borrow_mut().take());
    }

    /// The next job, spinning briefly before parking. `None` once the pool is
    /// shut down and the queue is drained.
    ///
    /// A worker that finds the queue empty also waits in the hand-off
    /// mailbox, if no other worker does; it leaves the mailbox as soon as a
    /// job is queued (so that it takes the queue's first), and before it
    /// parks.
    fn next_job(&self) -> Option<Job> {
        let start = Instant::now();
        let mut spins = 0u32;
        let mut waiting = false;
        loop {
            if waiting {
                if let Some(job) = self.handoff.poll() {
                    return Some(job);
                }
                if !self.receiver.is_empty() {
                    if let Some(job) = self.handoff.withdraw() {
                        return Some(job);
                    }
                    waiting = false;
                }
            }
            if !waiting {
                match self.receiver.try_recv() {
                    Ok(job) => return Some(job),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {
                        #[cfg(test)]
                        crate::test_hooks::handoff_wait_step();
                        waiting = self.handoff.wait();
                        #[cfg(test)]
                        if waiting {
                            crate::test_hooks::handoff_wait_step();
                        }
                    }
                }
            }
            spins += 1;
            if spins.is_multiple_of(32) {
                if start.elapsed() >= IDLE_SPIN {
                    // (A shut-down pool is noticed here by a waiting
                    // worker: `recv` returns at once.)
                    if waiting && let Some(job) = self.handoff.withdraw() {
                        return Some(job);
                    }
                    return self.receiver.recv().ok();
                }
                // Give the core to a thread that shares it: on a busy
                // machine that may be the very one submitting the next task.
                // (Not yielding for the first 2 µs of idleness left the
                // round trip unchanged with the waiter on another CPU, and
                // made it 1.8 µs slower on the same one: 2.19 → 3.94 µs,
                // `taskset -c 0` on the 2-core guest, 2026-12-03.)
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }

    /// Put a job on the queue, or hand it back if the pool is shut down (or,
    /// with `block == false`, if the bounded queue is full).
    pub(crate) fn enqueue(&self, job: Job, block: bool) -> Result<(), (Job, SubmitErrorReason)> {
        let sender = self.sender.read();
        let Some(sender) = sender.as_ref() else {
            return Err((job, SubmitErrorReason::ShutDown));
        };
        // A worker waits in the mailbox and nothing is queued before this
        // job (which keeps this thread's submissions in order): hand it over.
        // The mailbox is looked at first: in a burst nobody waits, and the
        // queue's head, which `is_empty` reads, is the workers' line.
        let job = if self.handoff.has_waiter() && sender.is_empty() {
            // Started by this thread, on the task's line it still holds: the
            // waiting worker runs it next, and need not write that line to
            // start it (the line the task's waiter spins on).
            match self.handoff.offer(job, Job::start_now) {
                Ok(()) => return Ok(()),
                Err(job) => job,
            }
        } else {
            job
        };
        if block {
            // The pool keeps a receiver, so the channel cannot disconnect.
            sender
                .send(job)
                .map_err(|e| (e.into_inner(), SubmitErrorReason::ShutDown))
        } else {
            sender.try_send(job).map_err(|e| match e {
                TrySendError::Full(job) => (job, SubmitErrorReason::Full),
                TrySendError::Disconnected(job) => (job, SubmitErrorReason::ShutDown),
            })
        }
    }

    /// Run a claimed scoped task. Scoped tasks are exempt from the task
    /// timeout: the scope waits for them to return in any case, and the
    /// watchdog must not hold on to data that only lives for the scope.
    pub(crate) fn run_scoped<F, R>(&self, promise: &Promise<R>, f: F)
    where
        F: FnOnce() -> R,
        R: Send,
    {
        if promise.start() {
            let outcome = match self.broken_error() {
                Some(err) => Err(err),
                None => self.execute(f),
            };
            self.note_outcome(outcome.is_ok() && !promise.is_done());
            promise.complete(outcome);
        }
    }

    /// The error every task of a pool whose initializer panicked fails with.
    fn broken_error(&self) -> Option<TaskError> {
        let message = self.broken.get()?;
        Some(TaskError::new(crate::ErrorKind::InitializerFailed(
            message.clone(),
        )))
    }

    /// Run a claimed task on this worker, under the timeout if there is one.
    /// `started`: the submitter already started it (see [`Job::Started`]).
    pub(super) fn run<F, R>(&self, promise: &Promise<R>, f: F, started: bool)
    where
        F: FnOnce() -> R,
        R: Send + 'static,
    {
        if !started && !promise.start() {
            return;
        }
        if let Some(err) = self.broken_error() {
            self.note_outcome(false);
            promise.complete(Err(err));
            return;
        }
        let guard = self.timeout.and_then(|timeout| {
            let expired = promise.clone();
            let watchdog = self.watchdog.lock();
            Some(watchdog.as_ref()?.watch(timeout, current_slot(), move || {
                // Also ask the task to stop, through its token if it has one.
                expired.request_stop();
                expired.complete(Err(TaskError::new(crate::ErrorKind::TimedOut(timeout))))
            }))
        });
        let outcome = self.execute(f);
        #[cfg(test)]
        crate::test_hooks::before_complete();
        let Some(guard) = guard else {
            // No watchdog: nobody else can decide a running task of this
            // pool (its `cancel()` does not stop a running thread), so the
            // claim and the publish are one step. Counted first, as below.
            self.note_outcome(outcome.is_ok());
            // SAFETY: `start` returned true above, a thread pool's task is
            // never killable, and without a timeout no watchdog holds a
            // promise of it: this worker is its only decider.
            return unsafe { promise.settle_running(outcome) };
        };
        drop(guard);
        // Claimed, then counted, then published: a waiter that wakes up finds
        // it counted, and a task the watchdog decided at the same instant is
        // counted as the failure its handle reports, never as a success.
        match promise.claim() {
            Some(claim) => {
                self.note_outcome(outcome.is_ok());
                claim.publish(outcome);
            }
            None => self.note_outcome(false),
        }
    }

    fn note_outcome(&self, ok: bool) {
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Register a running task's cancel token, for `terminate` to set.
    fn register_token(self: &Arc<Self>, token: &CancelToken) -> TokenGuard {
        let mut running = self.running_tokens.lock();
        if running.terminated {
            token.cancel();
        }
        let key = running.next;
        running.next += 1;
        running.tokens.insert(key, token.clone());
        drop(running);
        TokenGuard {
            shared: Arc::clone(self),
            key,
        }
    }

    /// Set the cancel token of every running task, and of every task that
    /// registers later.
    pub(super) fn cancel_running(&self) {
        let mut running = self.running_tokens.lock();
        running.terminated = true;
        for token in running.tokens.values() {
            token.cancel();
        }
    }

    /// Call `f`, catching a panic, and keep the counters.
    fn execute<F: FnOnce() -> R, R>(&self, f: F) -> Result<R, TaskError> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|p| TaskError::panicked(&*p));
        self.busy.fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    pub(crate) fn note_replaced(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

impl ThreadPool {
    /// A pool of `workers` threads with default settings.
    ///
    /// Fails if `workers` is zero or a thread cannot be started.
    pub fn new(workers: usize) -> Result<ThreadPool, BuildError> {
        ThreadPool::builder().workers(workers).build()
    }

    /// A builder for a configured pool.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Queue depth, busy workers and counters, readable at any time (see
    /// [`PoolStats`]).
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self.shared.workers,
            queued: self.shared.receiver.len(),
            busy: self.shared.busy.load(Ordering::Relaxed),
            succeeded: self.shared.succeeded.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
        }
    }

    /// Queue `f` and return its handle.
    ///
    /// After shutdown the handle is already failed with a shut-down error.
    /// With a bounded queue this blocks while the queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let handle = pool.submit(|| "done".to_uppercase());
    /// assert_eq!(handle.result().unwrap(), "DONE");
    /// pool.shutdown(true, false);
    /// assert!(pool.submit(|| 1).result().unwrap_err().is_shut_down());
    /// ```
    pub fn submit<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (job, handle) = self.shared.job(f);
        match self.shared.enqueue(job, true) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.cancel_now();
                Handle::ready(Err(TaskError::shut_down()))
            }
        }
    }

    /// Queue `f`, or hand it back if the pool is shut down or its bounded queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::{SubmitErrorReason, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).queue_capacity(1).build().unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let (started, wait_start) = std::sync::mpsc::channel();
    /// let busy = pool.submit(move || {
    ///     started.send(()).unwrap();
    ///     wait.recv().unwrap();
    /// });
    /// wait_start.recv().unwrap(); // the worker is busy; the queue is empty
    /// let queued = pool.try_submit(|| 1).unwrap();
    /// let refused = pool.try_submit(|| 2).unwrap_err();
    /// assert_eq!(refused.reason, SubmitErrorReason::Full);
    /// assert_eq!((refused.task)(), 2); // the closure comes back
    /// release.send(()).unwrap();
    /// busy.result().unwrap();
    /// assert_eq!(queued.result().unwrap(), 1);
    /// ```
    pub fn try_submit<F, R>(&self, f: F) -> Result<Handle<R>, SubmitError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        // Check first so the closure can be handed back unboxed.
        let sender = self.shared.sender.read();
        let reason = match sender.as_ref() {
            None => Some(SubmitErrorReason::ShutDown),
            Some(s) if s.is_full() => Some(SubmitErrorReason::Full),
            Some(_) => None,
        };
        drop(sender);
        if let Some(reason) = reason {
            return Err(SubmitError { task: f, reason });
        }
        let (job, handle) = self.shared.job(f);
        match self.shared.enqueue(job, false) {
            Ok(()) => Ok(handle),
            Err((job, reason)) => {
                // Lost a race with shutdown or another producer; the closure is
                // boxed now, so the caller gets the reason through the handle.
                job.cancel_now();
                let error = match reason {
                    SubmitErrorReason::Full => TaskError::new(crate::ErrorKind::Failed(
                        "the queue filled up while submitting".into(),
                    )),
                    _ => TaskError::shut_down(),
                };
                Ok(Handle::ready(Err(error)))
            }
        }
    }

    /// Queue `f`, which receives a [`CancelToken`] that is set when the
    /// handle is [cancelled](Handle::cancel) or the pool
    /// [terminated](ThreadPool::terminate) while the task runs: the way to
    /// stop a running thread-pool task early.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ThreadPool;
    ///
    /// let pool = ThreadPool::new(1).unwrap();
    /// let (started, wait_start) = std::sync::mpsc::channel();
    /// let handle = pool.submit_with_token(move |token| {
    ///     started.send(()).unwrap();
    ///     let mut rounds = 0u64;
    ///     while !token.is_cancelled() {
    ///         rounds += 1;
    ///         std::thread::yield_now();
    ///     }
    ///     rounds
    /// });
    /// wait_start.recv().unwrap();
    /// pool.terminate(); // sets the running task's token
    /// assert!(handle.result().is_ok()); // the task saw it and returned
    /// ```
    pub fn submit_with_token<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce(&CancelToken) -> R + Send + 'static,
        R: Send + 'static,
    {
        // The token is the handle's: it exists once the job does, and is in
        // place before the job is queued, so the task always gets it.
        let slot: Arc<OnceLock<CancelToken>> = Arc::default();
        let task_slot = Arc::clone(&slot);
        let (job, handle) = self.shared.job(move || {
            let token = task_slot.get().cloned().unwrap_or_default();
            let _registered = current_pool().map(|shared| shared.register_token(&token));
            f(&token)
        });
        let _ = slot.set(handle.cancel_token());
        match self.shared.enqueue(job, true) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.cancel_now();
                Handle::ready(Err(TaskError::shut_down()))
            }
        }
    }

    /// Shut the pool down.
    ///
    /// No new task is accepted. With `cancel_pending`, queued tasks that have
    /// not started are cancelled; otherwise they still run. With `wait`, this
    /// returns once every worker has exited (a worker calling this for its own
    /// pool does not wait for itself). Calling it again is a no-op.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(1).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let (started, wait_start) = std::sync::mpsc::channel();
    /// let running = pool.submit(move || {
    ///     started.send(()).unwrap();
    ///     wait.recv().unwrap();
    /// });
    /// wait_start.recv().unwrap();
    /// let pending = pool.submit(|| 2);
    /// pool.shutdown(false, true); // cancel what has not started; do not wait
    /// release.send(()).unwrap();
    /// pool.shutdown(true, false); // wait for the running task
    /// assert!(running.is_done());
    /// assert!(running.result().is_ok());
    /// assert!(pending.result().unwrap_err().is_cancelled());
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        drop(self.shared.sender.write().take());
        if cancel_pending {
            while let Ok(job) = self.shared.receiver.try_recv() {
                job.cancel_now();
            }
        }
        if wait {
            self.join_workers(None);
        }
    }

    /// Stop taking tasks and wait at most `timeout` for the workers to
    /// finish the running and queued ones. Returns whether they all did.
    ///
    /// A thread cannot be stopped from outside: the workers still busy at
    /// the deadline are detached. They finish the queue (whose tasks keep
    /// their handles) and exit; nothing waits for them, and they end with
    /// the process at the latest. (A worker calling this for its own pool
    /// does not wait for itself, and timed-out workers are never waited for.)
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let stuck = pool.submit(move || rx.recv().is_ok());
    /// assert!(!pool.shutdown_timeout(Duration::from_millis(10)));
    /// drop(tx); // the detached worker finishes its task
    /// assert_eq!(stuck.result().unwrap(), false);
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        drop(self.shared.sender.write().take());
        self.join_workers(Some(
            Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(Instant::now),
        ))
    }

    /// Join the workers, until `deadline` if there is one (then detach
    /// those still running). True if none was left running.
    fn join_workers(&self, deadline: Option<Instant>) -> bool {
        let me = std::thread::current().id();
        let mut all = true;
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock());
            if threads.is_empty() {
                break;
            }
            for (slot, thread) in threads {
                // A retired worker is stuck in a timed-out task: leave it be.
                if thread.thread().id() == me || slot.retired.load(Ordering::Acquire) {
                    continue;
                }
                if let Some(deadline) = deadline {
                    let mut exits = self.shared.exits.lock();
                    while !slot.done.load(Ordering::Acquire) {
                        if self
                            .shared
                            .exited
                            .wait_until(&mut exits, deadline)
                            .timed_out()
                        {
                            break;
                        }
                    }
                    if !slot.done.load(Ordering::Acquire) {
                        // Detached: it exits when its task returns.
                        all = false;
                        continue;
                    }
                }
                let _ = thread.join();
            }
            if !all {
                break;
            }
        }
        // Workers left running past the deadline keep their task timeouts:
        // the watchdog then stays until the pool's last user is gone.
        if all && let Some(watchdog) = self.shared.watchdog.lock().take() {
            watchdog.stop();
        }
        all
    }

    /// Run `f` over `items` in input order, lazily, with a bounded window of
    /// tasks in flight (see [`Executor::map_tasks`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// // Lazy: an endless input works, only a window of tasks is in flight.
    /// let firsts: Vec<u64> = pool.map(|n: u64| n * n, 1..).take(3).map(Result::unwrap).collect();
    /// assert_eq!(firsts, [1, 4, 9]);
    /// ```
    pub fn map<A, R, F, I>(&self, f: F, items: I) -> impl Iterator<Item = Result<R, TaskError>> + '_
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let window = crate::default_window(self.workers());
        self.map_tasks(item_tasks(f, items.into_iter()), window)
    }

    /// Run `f` over `items`, yielding `(input position, outcome)` in completion order.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let mut outcomes: Vec<(usize, u32)> = pool
    ///     .map_unordered(|x: u32| x + 1, [10, 20, 30])
    ///     .map(|(i, r)| (i, r.unwrap()))
    ///     .collect();
    /// outcomes.sort();
    /// assert_eq!(outcomes, [(0, 11), (1, 21), (2, 31)]);
    /// ```
    pub fn map_unordered<A, R, F, I>(
        &self,
        f: F,
        items: I,
    ) -> impl Iterator<Item = (usize, Result<R, TaskError>)> + '_
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let window = crate::default_window(self.workers());
        self.map_tasks_unordered(item_tasks(f, items.into_iter()), window)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// One task per item, all sharing `f`.
fn item_tasks<A, R, F>(
    f: F,
    items: impl Iterator<Item = A>,
) -> impl Iterator<Item = impl FnOnce() -> R + Send + 'static>
where
    F: Fn(A) -> R + Send + Sync + 'static,
    A: Send + 'static,
    R: Send + 'static,
{
    let f = Arc::new(f);
    items.map(move |item| {
        let f = Arc::clone(&f);
        move || f(item)
    })
}

impl<F, R> Executor<F> for ThreadPool
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    fn submit(&self, task: F) -> Handle<R> {
        ThreadPool::submit(self, task)
    }

    fn try_submit(&self, task: F) -> Result<Handle<R>, SubmitError<F>> {
        ThreadPool::try_submit(self, task)
    }

    fn parallelism(&self) -> usize {
        self.workers()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // While a panic unwinds, waiting (perhaps for a task that waits on
        // the very code that panicked) would hold the panic up.
        let timeout = if std::thread::panicking() {
            Duration::ZERO
        } else {
            self.shared.drop_timeout
        };
        self.shutdown_timeout(timeout);
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::futures::{fail_nth_start, threads_left};

    /// A task the watchdog times out in the instant between the end of its
    /// code and the decision of its outcome is counted as the failure its
    /// handle reports, never as a success.
    #[test]
    fn a_timeout_just_before_completion_is_not_counted_as_a_success() {
        let pool = ThreadPool::builder()
            .workers(1)
            .task_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let (decided_tx, decided_rx) = std::sync::mpsc::channel::<()>();
        let decided_rx = std::sync::Mutex::new(Some(decided_rx));
        let handle = pool.submit(move || {
            let decided = decided_rx.lock().unwrap().take().unwrap();
            // Runs on this worker once this code has returned, before the
            // outcome is decided: hold it there until the watchdog has.
            crate::test_hooks::set_before_complete(Some(Box::new(move || {
                let _ = decided.recv();
                crate::test_hooks::set_before_complete(None);
            })));
            7
        });
        assert!(
            handle.wait_timeout(Duration::from_secs(60)),
            "the watchdog decides"
        );
        decided_tx.send(()).unwrap();
        assert!(handle.result().unwrap_err().is_timeout());
        // The handle was decided by the watchdog; the worker counts the task
        // once it is past the hook.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let stats = loop {
            let stats = pool.stats();
            if stats.succeeded + stats.failed > 0 || std::time::Instant::now() > deadline {
                break stats;
            }
            std::thread::yield_now();
        };
        assert_eq!((stats.succeeded, stats.failed), (0, 1));
    }

    /// A job queued while the only worker is between finding the queue
    /// empty and entering the mailbox, then a job from the same thread
    /// while the worker waits there: the second is queued behind the
    /// first, not handed over ahead of it. (With the hand-off's
    /// empty-queue check removed, the second ran first: checked.)
    #[test]
    fn a_job_is_not_handed_over_ahead_of_one_queued_before_it() {
        let pool = ThreadPool::new(1).unwrap();
        let (step_tx, step) = std::sync::mpsc::channel::<()>();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(Some(go_rx));
        // Set on the worker, which then stops twice the next time it finds
        // the queue empty: before it enters the mailbox, and in it.
        pool.submit(move || {
            let go_rx = go_rx.lock().unwrap().take().unwrap();
            let mut steps = 0;
            crate::test_hooks::set_handoff_wait_step(Some(Box::new(move || {
                steps += 1;
                if steps == 2 {
                    crate::test_hooks::set_handoff_wait_step(None);
                }
                step_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })));
        })
        .result()
        .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let record = |i: u32| {
            let order = Arc::clone(&order);
            move || order.lock().push(i)
        };
        step.recv().unwrap();
        let first = pool.submit(record(1));
        assert_eq!(pool.shared.receiver.len(), 1, "queued: nobody waits");
        go.send(()).unwrap();
        step.recv().unwrap();
        assert!(pool.shared.handoff.has_waiter());
        let second = pool.submit(record(2));
        go.send(()).unwrap();
        first.result().unwrap();
        second.result().unwrap();
        assert_eq!(*order.lock(), [1, 2]);
    }

    /// A build that cannot start one of its threads fails with the I/O
    /// error, and stops and joins the threads it had started.
    #[test]
    fn a_build_failing_half_way_leaves_no_thread() {
        // The starts: the watchdog, then workers 0, 1 and 2.
        for (nth, what) in [(1, "watchdog"), (2, "worker"), (3, "worker"), (4, "worker")] {
            let name = format!("tpool-fail{nth}");
            fail_nth_start(nth);
            let built = ThreadPool::builder()
                .name(&name)
                .workers(3)
                .initializer(|_| {})
                .task_timeout(Duration::from_secs(600))
                .build();
            fail_nth_start(0);
            let err = built.expect_err("a start failed");
            assert!(!err.is_config(), "{err}");
            assert!(err.io_error().is_some(), "{err}");
            assert!(std::error::Error::source(&err).is_some());
            assert!(err.to_string().contains(what), "{err}");
            assert_eq!(threads_left(&name), Vec::<String>::new(), "start {nth}");
        }
        // The hook is off again: the same build works.
        let pool = ThreadPool::builder()
            .name("tpool-ok")
            .workers(3)
            .task_timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        assert_eq!(pool.submit(|| 7).result().unwrap(), 7);
    }
}
