//! [`ProcessPool`]: worker processes behind the futures API.

use crate::ipc::{Transfer, capture};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::process::Signal;

use super::registry::RemoteFn;
use super::spawn::{self, ChildProc, SpawnConfig};
use super::task::{self, Call, Chunk, ChunkOutcome, Job, One};
use super::wire::{self, FrameReader};
use crate::futures::{
    ConfigError, ErrorKind, Exit, Handle, SubmitError, SubmitErrorReason, TaskError, checks, pair,
};

/// How long the parent's reader keeps polling a worker's pipe before it blocks.
const READER_SPIN: Duration = Duration::from_micros(25);
/// Several small calls are sent to an idle worker in one write, up to this
/// many bytes (well under the pipe buffer, so the write never blocks).
const BATCH_BYTES: usize = 32 << 10;
/// At most this many calls in one batch.
const BATCH_MAX: usize = 64;
/// A batch aims at this much work (by the measured run time of recent tasks),
/// so that long tasks go one at a time and spread over the workers.
const BATCH_WORK_US: f64 = 50.0;

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
    initializer: Option<Result<Arc<Vec<u8>>, TaskError>>,
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

    /// The prefix of the pool's thread names (its I/O threads are `prefix-io-N`).
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

    /// Limit each worker's address space to `bytes` (`RLIMIT_AS`): an
    /// allocation beyond it fails in the worker, which then aborts; its task
    /// fails with a worker-died error and the worker is replaced.
    pub fn worker_memory_cap(mut self, bytes: u64) -> Self {
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
    pub fn build(self) -> Result<ProcessPool, ConfigError> {
        let workers = checks::workers(self.workers)?;
        let timeout = checks::timeout(self.timeout)?;
        let capacity = checks::queue_capacity(self.queue_capacity)?;
        let initializer = match self.initializer {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => return Err(ConfigError(format!("invalid initializer: {e}"))),
            None => None,
        };
        let max_frame = match self.max_frame {
            None => wire::DEFAULT_MAX_BODY,
            Some(bytes) if (1024..=wire::HARD_MAX_BODY).contains(&bytes) => bytes,
            Some(bytes) => {
                return Err(ConfigError(format!(
                    "the frame limit must be between 1024 bytes and {} bytes (8 GiB), not {bytes}",
                    wire::HARD_MAX_BODY
                )));
            }
        };
        if let Some(frame) = &initializer {
            let size = (frame.len() - wire::HEADER) as u64;
            if size > max_frame {
                let err = TaskError::new(ErrorKind::FrameTooLarge {
                    size,
                    limit: max_frame,
                });
                return Err(ConfigError(format!("invalid initializer: {err}")));
            }
        }
        if self.max_tasks == Some(0) {
            return Err(ConfigError(
                "max tasks per worker must be at least 1".into(),
            ));
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
            state: Mutex::new(State {
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
            }),
            space: Condvar::new(),
            watch: Condvar::new(),
            next_id: AtomicU64::new(1),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
        });
        // Start every worker before any I/O thread, so the spawner works
        // through them back to back.
        let mut started = Vec::with_capacity(workers);
        for _ in 0..workers {
            match spawn::spawn_worker(shared.spawn.clone()) {
                Ok(s) => started.push(s),
                Err(e) => {
                    return Err(ConfigError(format!(
                        "could not start a worker process: {e}"
                    )));
                }
            }
        }
        let mut threads = Vec::with_capacity(workers + 1);
        for (index, spawned) in started.into_iter().enumerate() {
            let installed = shared.install(index, spawned);
            let worker_shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("{}-io-{index}", shared.name))
                .spawn(move || worker_shared.slot_thread(index, Some(installed)))
                .map_err(|e| ConfigError(format!("could not start an I/O thread: {e}")))?;
            threads.push(thread);
        }
        if shared.timeout.is_some() {
            let watch_shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("{}-watchdog", shared.name))
                .spawn(move || watch_shared.watchdog())
                .map_err(|e| ConfigError(format!("could not start the watchdog: {e}")))?;
            threads.push(thread);
        }
        shared.state.lock().threads = threads;
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
///   replaced and every other task completes. The pool never breaks.
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
///     /// The seed's trial division.
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

/// A snapshot of a process pool's state, for monitoring and load shedding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessPoolStats {
    /// The pool's configured size.
    pub workers: usize,
    /// Tasks waiting to be sent to a worker.
    pub queued: usize,
    /// Workers with a task.
    pub busy: usize,
    /// Workers started to replace ones that died, timed out or were recycled.
    pub restarts: usize,
    /// Tasks that produced a value.
    pub done: usize,
    /// Tasks that failed (panicked, worker died, timed out, serialization…).
    pub failed: usize,
}

/// Why the pool killed a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillReason {
    TimedOut(Duration),
    Cancelled,
    Terminated,
    /// The worker broke the protocol while running the task.
    Protocol(Fault),
}

/// How a worker broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// It announced a reply whose body is this long, over the pool's limit.
    TooLarge(u64),
    /// It sent a reply for a call that is not the one running, or a frame of
    /// an unknown kind.
    Unexpected,
}

#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// Tasks sent to the worker and not answered yet; the front one runs.
    in_flight: VecDeque<Job>,
    /// When the front task started (its predecessor's reply arrived).
    running_since: Option<Instant>,
    tasks_done: usize,
    kill_reason: Option<(u64, KillReason)>,
    /// Bumped for every new worker in the slot.
    generation: u64,
    /// The worker is running the initializer (it is not ready before).
    initializing: bool,
}

struct Worker {
    child: Arc<ChildProc>,
    /// `None` once the pool closed the pipe (the worker then exits).
    writer: Option<Arc<Mutex<OwnedFd>>>,
    /// The writer's socket (weakly, with its descriptor number), to shut it
    /// down when the worker is dead: a write blocked on it (the worker's end
    /// held open by a process a task forked) then fails instead of waiting
    /// for ever.
    socket: (std::sync::Weak<Mutex<OwnedFd>>, std::os::fd::RawFd),
    ready: bool,
    retiring: bool,
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
    initializer: Option<Arc<Vec<u8>>>,
    /// The longest frame body either side may send (`max_frame_bytes`).
    max_frame: u64,
    state: Mutex<State>,
    /// Signalled when the queue shrinks or the pool changes state.
    space: Condvar,
    /// Wakes the watchdog.
    watch: Condvar,
    next_id: AtomicU64,
    done: AtomicUsize,
    failed: AtomicUsize,
    restarts: AtomicUsize,
}

/// A worker placed in its slot, handed to the slot's I/O thread.
struct Installed {
    child: Arc<ChildProc>,
    from_child: OwnedFd,
    generation: u64,
}

/// Calls to write to one worker, taken from the queue under the lock and
/// written after it is released.
struct Batch {
    writer: Arc<Mutex<OwnedFd>>,
    frames: Vec<Arc<Vec<u8>>>,
}

impl Batch {
    fn write(self) {
        let writer = self.writer.lock();
        // A failed write means the worker is dead or dying: its I/O thread
        // sees end of file and deals with the tasks it had.
        let _ = if let [frame] = self.frames.as_slice() {
            wire::send_all(&*writer, frame)
        } else {
            let total = self.frames.iter().map(|f| f.len()).sum();
            let mut buf = Vec::with_capacity(total);
            for frame in &self.frames {
                buf.extend_from_slice(frame);
            }
            wire::send_all(&*writer, &buf)
        };
    }
}

impl Shared {
    fn batch_target(&self, state: &State) -> usize {
        // Under a task timeout, batching is exact enough: a task's clock
        // starts when its predecessor's reply arrives, which is when the
        // worker starts it, give or take the parent's read.
        let target = BATCH_WORK_US / (state.avg_run_us + 1.0);
        (target as usize).clamp(1, BATCH_MAX)
    }

    /// Take calls for the idle worker in `index`, if it is idle and ready.
    fn take_batch(self: &Arc<Self>, state: &mut State, index: usize) -> Option<Batch> {
        let target = self.batch_target(state);
        let State { queue, slots, .. } = state;
        let slot = &mut slots[index];
        let worker = slot.worker.as_ref()?;
        if !worker.ready || worker.retiring || !slot.in_flight.is_empty() {
            return None;
        }
        let writer = Arc::clone(worker.writer.as_ref()?);
        let mut frames = Vec::new();
        let mut bytes = 0;
        while let Some(job) = queue.front() {
            // A call sent again after its worker died goes first in a batch:
            // it may carry a cancel hook aimed at its old worker (below).
            if !frames.is_empty()
                && (frames.len() >= target || bytes + job.frame.len() > BATCH_BYTES || job.started)
            {
                break;
            }
            let Some(mut job) = queue.pop_front() else {
                break;
            };
            if !job.started {
                if !job.sink.start() {
                    continue; // cancelled while queued
                }
                job.started = true;
            } else if job.sink.is_done() {
                continue; // sent again after a death, and cancelled meanwhile
            }
            // Only the first call of a batch can be cancelled now (by killing
            // the worker); the ones behind it get their hook when they reach
            // the front (see `serve`). Until then `cancel()` returns false for
            // them: they are claimed and will run, like the calls Python's
            // pool has moved to its call queue.
            if frames.is_empty() {
                self.arm_cancel(&job, index, slot.generation);
            }
            bytes += job.frame.len();
            frames.push(Arc::clone(&job.frame));
            slot.in_flight.push_back(job);
        }
        if frames.is_empty() {
            return None;
        }
        slot.running_since = Some(Instant::now());
        if self.capacity.is_some() {
            self.space.notify_all();
        }
        self.wake_idle_watchdog(state);
        Some(Batch { writer, frames })
    }

    /// Point the task's `cancel()` at the worker in slot `index`, of
    /// `generation`, that runs it now.
    fn arm_cancel(self: &Arc<Self>, job: &Job, index: usize, generation: u64) {
        let weak = Arc::downgrade(self);
        let id = job.id;
        job.sink.set_kill(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.kill_running(index, generation, id, KillReason::Cancelled);
            }
        }));
    }

    /// Tell a watchdog that waits with no deadline that a task started.
    fn wake_idle_watchdog(&self, state: &mut State) {
        if self.timeout.is_some() && state.watchdog_idle {
            state.watchdog_idle = false;
            self.watch.notify_one();
        }
    }

    /// A batch for any idle worker.
    fn take_any_batch(self: &Arc<Self>, state: &mut State) -> Option<Batch> {
        if state.queue.is_empty() {
            return None;
        }
        (0..state.slots.len()).find_map(|i| self.take_batch(state, i))
    }

    /// Kill the worker in slot `index` if it is still running task `id`.
    fn kill_running(&self, index: usize, generation: u64, id: u64, reason: KillReason) {
        let mut state = self.state.lock();
        let Some(slot) = state.slots.get_mut(index) else {
            return;
        };
        if slot.generation != generation || slot.in_flight.front().map(|j| j.id) != Some(id) {
            // Finished, or requeued after its worker died: its outcome is
            // decided, so its reply (if any) is dropped and a queued copy is
            // skipped.
            return;
        }
        if slot.kill_reason.is_none() {
            slot.kill_reason = Some((id, reason));
        }
        if let Some(worker) = &slot.worker {
            worker.child.signal(Signal::KILL);
        }
    }

    /// Queue a job and hand it to an idle worker if there is one.
    ///
    /// `transfer` holds the ipc handles (pipe ends, queues) serialized into
    /// the job's argument: they count as sent only once the job is queued;
    /// on every other outcome the transfer is dropped and they stay ours.
    fn enqueue(
        self: &Arc<Self>,
        job: Job,
        block: bool,
        transfer: Transfer,
    ) -> Result<(), (Job, SubmitErrorReason)> {
        let mut state = self.state.lock();
        if let Some(message) = &state.broken {
            // A broken pool runs nothing: the task fails with the reason.
            let err = TaskError::new(ErrorKind::InitializerFailed(message.clone()));
            drop(state);
            job.sink.fail(err);
            self.note_outcome(false);
            return Ok(());
        }
        loop {
            if state.closed {
                return Err((job, SubmitErrorReason::ShutDown));
            }
            match self.capacity {
                Some(cap) if state.queue.len() >= cap => {
                    if !block {
                        return Err((job, SubmitErrorReason::Full));
                    }
                    self.space.wait(&mut state);
                }
                _ => break,
            }
        }
        state.queue.push_back(job);
        let batch = self.take_any_batch(&mut state);
        drop(state);
        transfer.commit();
        if let Some(batch) = batch {
            batch.write();
        }
        Ok(())
    }

    /// The frame, if its body is within the pool's frame limit.
    fn fits(&self, frame: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        let size = (frame.len() - wire::HEADER) as u64;
        if size > self.max_frame {
            return Err(TaskError::new(ErrorKind::FrameTooLarge {
                size,
                limit: self.max_frame,
            }));
        }
        Ok(frame)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn note_outcome(&self, ok: bool) {
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The life of one worker slot: start a worker, serve it, and when it
    /// exits settle its tasks and start the next, until the pool shuts down.
    fn slot_thread(self: Arc<Self>, index: usize, mut first: Option<Installed>) {
        loop {
            let installed = match first.take() {
                Some(installed) => installed,
                None => match spawn::spawn_worker(self.spawn.clone()) {
                    Ok(spawned) => self.install(index, spawned),
                    Err(e) => {
                        if self.spawn_failed(&format!("could not start a worker: {e}"), false) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let Installed {
                child,
                from_child,
                generation,
            } = installed;
            let got_ready = match FrameReader::new(from_child, READER_SPIN) {
                Ok(mut reader) => {
                    // A process the task forked may hold the pipe open after
                    // the worker died: the reader also wakes on its exit.
                    if let Ok(pidfd) = child.pidfd().try_clone_to_owned() {
                        reader.watch_exit(pidfd);
                    }
                    self.serve(index, &mut reader)
                }
                Err(_) => false,
            };
            // The pipe is closed or the worker exited (or is about to). Give
            // it a moment to finish exiting so its status is the real one.
            let exit = child
                .wait_exit(Some(Duration::from_secs(2)))
                .unwrap_or_else(|| child.kill_and_reap());
            let writer = self.state.lock().slots[index]
                .worker
                .as_ref()
                .map(|w| (w.socket.0.upgrade(), w.socket.1));
            if let Some((Some(_writer), raw)) = writer {
                // SAFETY: `raw` is the descriptor owned by the writer, which
                // `_writer` keeps alive (so open, and not reused) meanwhile.
                let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
                // Wake a write still blocked on the dead worker's socket.
                let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
            }
            if self.settle(index, generation, exit, got_ready) {
                return;
            }
        }
    }

    /// Put a freshly started worker into slot `index`.
    fn install(&self, index: usize, spawned: spawn::Spawned) -> Installed {
        let child = Arc::new(spawned.child);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&spawned.to_child);
        let writer = Arc::new(Mutex::new(spawned.to_child));
        let socket = (Arc::downgrade(&writer), raw);
        let mut state = self.state.lock();
        let slot = &mut state.slots[index];
        slot.generation += 1;
        slot.worker = Some(Worker {
            child: Arc::clone(&child),
            writer: Some(writer),
            socket,
            ready: false,
            retiring: false,
        });
        slot.tasks_done = 0;
        slot.kill_reason = None;
        slot.initializing = false;
        Installed {
            child,
            from_child: spawned.from_child,
            generation: slot.generation,
        }
    }

    /// Back off after a failed start (a worker that could not be started,
    /// or died before it was ready, `in_initializer` if it died running the
    /// initializer); true if the thread should end.
    fn spawn_failed(&self, message: &str, in_initializer: bool) -> bool {
        let (failures, stop) = {
            let mut state = self.state.lock();
            state.startup_failures += 1;
            let stop = state.terminating
                || (state.closed && state.queue.is_empty())
                || state.broken.is_some();
            if stop {
                state.exited += 1;
                self.watch.notify_all();
                self.space.notify_all();
            }
            (state.startup_failures, stop)
        };
        if stop {
            return true;
        }
        if failures >= 3 {
            let ready = {
                let state = self.state.lock();
                state
                    .slots
                    .iter()
                    .any(|s| s.worker.as_ref().is_some_and(|w| w.ready))
            };
            if !ready && in_initializer {
                // The initializer kills every worker: the pool is broken.
                self.break_pool(format!(
                    "it killed {failures} workers in a row (last: {message})"
                ));
                return self.spawn_failed_stop();
            }
            if !ready {
                // Workers cannot start at all: fail what waits instead of
                // hanging.
                let jobs: Vec<Job> = self.state.lock().queue.drain(..).collect();
                for job in jobs {
                    job.sink
                        .fail(TaskError::new(ErrorKind::Failed(message.to_owned())));
                    self.note_outcome(false);
                }
                self.space.notify_all();
            }
        }
        // Exponential back-off (20 ms, 40 ms, ... 1.28 s), so that workers
        // that cannot start do not make the pool spin.
        let pause = Duration::from_millis(10 << failures.min(7));
        let until = Instant::now() + pause;
        let mut state = self.state.lock();
        loop {
            let stopping = state.terminating
                || state.broken.is_some()
                || (state.closed && state.queue.is_empty());
            if stopping || self.space.wait_until(&mut state, until).timed_out() {
                break;
            }
        }
        if state.broken.is_some() {
            // Broken meanwhile (by another slot): start nothing.
            drop(state);
            return self.spawn_failed_stop();
        }
        false
    }

    /// The slot thread of a broken pool ends.
    fn spawn_failed_stop(&self) -> bool {
        let mut state = self.state.lock();
        state.exited += 1;
        self.watch.notify_all();
        self.space.notify_all();
        true
    }

    /// The initializer failed: fail every queued task, and every later one,
    /// with `message`, and close the workers (a busy one finishes its task
    /// first). No worker is started again.
    fn break_pool(&self, message: String) {
        let jobs: Vec<Job> = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(message);
            }
            for slot in &mut state.slots {
                if let Some(worker) = &mut slot.worker {
                    worker.writer = None;
                }
            }
            state.queue.drain(..).collect()
        };
        self.space.notify_all();
        self.watch.notify_all();
        for job in jobs {
            job.sink.fail(self.broken_error());
            self.note_outcome(false);
        }
    }

    /// The error of every task of a broken pool.
    fn broken_error(&self) -> TaskError {
        let message = self.state.lock().broken.clone().unwrap_or_default();
        TaskError::new(ErrorKind::InitializerFailed(message))
    }

    /// The worker in `index` is ready for tasks (and its initializer, if
    /// any, has returned): hand it work.
    fn mark_ready(self: &Arc<Self>, index: usize) {
        let batch = {
            let mut state = self.state.lock();
            state.startup_failures = 0;
            let broken = state.broken.is_some();
            let slot = &mut state.slots[index];
            slot.initializing = false;
            if let Some(worker) = &mut slot.worker {
                worker.ready = true;
                if broken {
                    worker.writer = None;
                }
            }
            if broken {
                None
            } else {
                self.after_idle(&mut state, index)
            }
        };
        if let Some(batch) = batch {
            batch.write();
        }
    }

    /// Read the worker's messages until its pipe closes. Returns whether it
    /// ever reported ready.
    fn serve(self: &Arc<Self>, index: usize, reader: &mut FrameReader) -> bool {
        reader.set_max_body(self.max_frame);
        let mut ready = false;
        loop {
            let (header, body) = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return ready,
                Err(_) => {
                    // A reply announced over the limit was refused unread:
                    // the worker is broken or hostile. (Any other error is
                    // a stream cut short: the worker died.)
                    if let Some(refused) = reader.refused() {
                        self.protocol_error(index, Fault::TooLarge(refused.len));
                    }
                    return ready;
                }
            };
            match header.kind {
                wire::READY => {
                    if let Some(init) = &self.initializer {
                        // The worker gets no task before its initializer
                        // has answered (see the INIT_ID reply below).
                        let writer = {
                            let mut state = self.state.lock();
                            let slot = &mut state.slots[index];
                            slot.initializing = true;
                            slot.worker.as_ref().and_then(|w| w.writer.clone())
                        };
                        if let Some(writer) = writer {
                            Batch {
                                writer,
                                frames: vec![Arc::clone(init)],
                            }
                            .write();
                        }
                        continue;
                    }
                    ready = true;
                    self.mark_ready(index);
                }
                wire::REPLY if header.id == INIT_ID => {
                    if header.status != wire::OK {
                        let pid = self.state.lock().slots[index]
                            .worker
                            .as_ref()
                            .map_or(0, |w| w.child.pid());
                        self.break_pool(format!(
                            "in worker {pid}: {}",
                            String::from_utf8_lossy(body)
                        ));
                        return ready;
                    }
                    ready = true;
                    self.mark_ready(index);
                }
                wire::REPLY => {
                    let (job, batch) = {
                        let mut state = self.state.lock();
                        let slot = &mut state.slots[index];
                        if slot.in_flight.front().map(|j| j.id) != Some(header.id) {
                            drop(state);
                            self.protocol_error(index, Fault::Unexpected);
                            return ready;
                        }
                        let job = slot.in_flight.pop_front();
                        // The worker starts the next call now: it can be
                        // cancelled from here on.
                        if let Some(next) = slot.in_flight.front() {
                            self.arm_cancel(next, index, slot.generation);
                        }
                        slot.tasks_done += 1;
                        slot.running_since = Some(Instant::now());
                        let idle = slot.in_flight.is_empty();
                        state.avg_run_us = 0.9 * state.avg_run_us + 0.1 * f64::from(header.aux);
                        // The next call in flight starts now: its deadline
                        // is later than the one the watchdog waits for.
                        let batch = if idle {
                            self.after_idle(&mut state, index)
                        } else {
                            None
                        };
                        (job, batch)
                    };
                    if let Some(batch) = batch {
                        batch.write();
                    }
                    if let Some(job) = job {
                        // User code runs here (`Deserialize`, done-callbacks,
                        // `Drop`): `finish` catches its panics, and a panic that
                        // still escapes (the `Drop` of a value whose handle is
                        // gone, when the job goes) must not end this thread.
                        use std::panic::{AssertUnwindSafe, catch_unwind};
                        let finish = || job.sink.finish(header.status, body);
                        let ok = catch_unwind(AssertUnwindSafe(finish)).unwrap_or(false);
                        let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
                        self.note_outcome(ok);
                    }
                    reader.shrink();
                }
                _ => {
                    self.protocol_error(index, Fault::Unexpected);
                    return ready;
                }
            }
        }
    }

    /// A worker has nothing in flight: recycle it, close it at shutdown, or
    /// give it more work.
    fn after_idle(self: &Arc<Self>, state: &mut State, index: usize) -> Option<Batch> {
        let slot = &mut state.slots[index];
        slot.running_since = None;
        let Some(worker) = &mut slot.worker else {
            return None;
        };
        let worn_out = self.max_tasks.is_some_and(|max| slot.tasks_done >= max)
            || self
                .max_rss
                .is_some_and(|max| rss_bytes(worker.child.pid()).is_some_and(|rss| rss > max));
        if worn_out {
            // Closing the pipe makes the worker exit; its I/O thread then
            // starts a fresh one.
            worker.retiring = true;
            worker.writer = None;
            return None;
        }
        if state.closed && state.queue.is_empty() {
            worker.writer = None;
            return None;
        }
        self.take_batch(state, index)
    }

    /// The worker sent something that makes no sense: kill it. The call it
    /// was running fails with an error that says what happened.
    fn protocol_error(&self, index: usize, fault: Fault) {
        let mut state = self.state.lock();
        let slot = &mut state.slots[index];
        if let (Some(job), None) = (slot.in_flight.front(), slot.kill_reason) {
            slot.kill_reason = Some((job.id, KillReason::Protocol(fault)));
        }
        if let Some(worker) = &slot.worker {
            worker.child.signal(Signal::KILL);
        }
    }

    /// The worker in slot `index` has exited with `exit`: settle its tasks and
    /// decide whether to start another. Returns true if the slot is done.
    fn settle(
        self: &Arc<Self>,
        index: usize,
        generation: u64,
        exit: Exit,
        got_ready: bool,
    ) -> bool {
        let mut failed = Vec::new();
        let (stop, batches, in_initializer) = {
            let mut state = self.state.lock();
            let slot = &mut state.slots[index];
            debug_assert_eq!(slot.generation, generation);
            slot.worker = None;
            let in_initializer = std::mem::take(&mut slot.initializing);
            slot.running_since = None;
            let kill_reason = slot.kill_reason.take();
            let mut in_flight = std::mem::take(&mut slot.in_flight);
            // The front task was running: it fails, unless the pool killed the
            // worker for another task that answered just before it died. The
            // tasks behind it never started: they go back to the queue's head.
            let mut requeue = Vec::new();
            if let Some(job) = in_flight.pop_front() {
                let err = match kill_reason {
                    Some((_, KillReason::Terminated)) => Some(TaskError::shut_down()),
                    Some((id, KillReason::TimedOut(limit))) if id == job.id => {
                        Some(TaskError::new(ErrorKind::TimedOut(limit)))
                    }
                    Some((id, KillReason::Cancelled)) if id == job.id => {
                        Some(TaskError::cancelled())
                    }
                    Some((id, KillReason::Protocol(fault))) if id == job.id => {
                        Some(TaskError::new(match fault {
                            Fault::TooLarge(size) => ErrorKind::FrameTooLarge {
                                size,
                                limit: self.max_frame,
                            },
                            Fault::Unexpected => ErrorKind::Failed(format!(
                                "the worker broke the protocol and was replaced ({exit})"
                            )),
                        }))
                    }
                    Some(_) => None,
                    None => Some(TaskError::new(ErrorKind::WorkerDied(exit))),
                };
                match err {
                    Some(err) => failed.push((job, err)),
                    None => requeue.push(job),
                }
            }
            requeue.extend(in_flight);
            if state.terminating {
                failed.extend(requeue.into_iter().map(|j| (j, TaskError::shut_down())));
            } else if let Some(message) = &state.broken {
                let err = TaskError::new(ErrorKind::InitializerFailed(message.clone()));
                failed.extend(requeue.into_iter().map(|j| (j, err.clone())));
            } else {
                for job in requeue.into_iter().rev() {
                    state.queue.push_front(job);
                }
            }
            let stop = state.terminating
                || (state.closed && state.queue.is_empty())
                || state.broken.is_some();
            if !stop {
                self.restarts.fetch_add(1, Ordering::Relaxed);
            } else {
                state.exited += 1;
                self.watch.notify_all();
            }
            // Requeued tasks may go to another idle worker at once.
            let mut batches = Vec::new();
            while let Some(batch) = self.take_any_batch(&mut state) {
                batches.push(batch);
            }
            (stop, batches, in_initializer)
        };
        self.space.notify_all();
        for batch in batches {
            batch.write();
        }
        for (job, err) in failed {
            job.sink.fail(err);
            self.note_outcome(false);
        }
        let message = if in_initializer {
            format!("the initializer ended its worker with {exit}")
        } else {
            format!("worker processes exit before they are ready (last: {exit})")
        };
        if !stop && !got_ready && self.spawn_failed(&message, in_initializer) {
            return true;
        }
        stop
    }

    /// The per-task timeout: kill a worker whose task passed its deadline.
    fn watchdog(self: Arc<Self>) {
        let Some(timeout) = self.timeout else {
            return;
        };
        let mut state = self.state.lock();
        loop {
            if state.exited >= self.workers {
                return;
            }
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            for slot in &mut state.slots {
                let (Some(since), Some(job), Some(worker)) =
                    (slot.running_since, slot.in_flight.front(), &slot.worker)
                else {
                    continue;
                };
                if slot.kill_reason.is_some() {
                    continue;
                }
                let deadline = since + timeout;
                if deadline <= now {
                    slot.kill_reason = Some((job.id, KillReason::TimedOut(timeout)));
                    worker.child.signal(Signal::KILL);
                } else if earliest.is_none_or(|e| deadline < e) {
                    earliest = Some(deadline);
                }
            }
            match earliest {
                Some(deadline) => {
                    self.watch.wait_until(&mut state, deadline);
                }
                None => {
                    state.watchdog_idle = true;
                    self.watch.wait(&mut state);
                    state.watchdog_idle = false;
                }
            }
        }
    }
}

/// A process's resident set size, from `/proc/PID/statm`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = rustix::param::page_size() as u64;
    Some(pages * page)
}

impl ProcessPool {
    /// A pool of `workers` processes with default settings.
    ///
    /// Fails if `workers` is zero or a worker cannot be started.
    pub fn new(workers: usize) -> Result<ProcessPool, ConfigError> {
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
    pub fn worker_pids(&self) -> Vec<u32> {
        let state = self.shared.state.lock();
        state
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref().map(|w| w.child.pid()))
            .collect()
    }

    /// Queue depth, busy workers and counters, readable at any time.
    pub fn stats(&self) -> ProcessPoolStats {
        let state = self.shared.state.lock();
        ProcessPoolStats {
            workers: self.shared.workers,
            queued: state.queue.len(),
            busy: state
                .slots
                .iter()
                .filter(|s| !s.in_flight.is_empty())
                .count(),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            done: self.shared.done.load(Ordering::Relaxed),
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
        let (promise, handle) = pair(0);
        let job = Job {
            id,
            frame: Arc::new(frame),
            sink: Box::new(One { promise }),
            started: false,
        };
        match self.shared.enqueue(job, true, transfer) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.sink.fail(TaskError::shut_down());
                handle
            }
        }
    }

    /// Queue `f(arg)`, or hand the call back if the pool is shut down or its
    /// bounded queue is full.
    pub fn try_submit<F: RemoteFn>(
        &self,
        f: F,
        arg: F::Arg,
    ) -> Result<Handle<F::Output>, SubmitError<Call<F>>> {
        let refused = {
            let state = self.shared.state.lock();
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
        let (promise, handle) = pair(0);
        let job = Job {
            id,
            frame: Arc::new(frame),
            sink: Box::new(One { promise }),
            started: false,
        };
        match self.shared.enqueue(job, false, transfer) {
            Ok(()) => Ok(handle),
            Err((job, reason)) => {
                // Lost a race with shutdown or another producer; the argument
                // is encoded now, so the reason goes through the handle.
                job.sink.fail(match reason {
                    SubmitErrorReason::Full => TaskError::new(ErrorKind::Failed(
                        "the queue filled up while submitting".into(),
                    )),
                    _ => TaskError::shut_down(),
                });
                Ok(handle)
            }
        }
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
        let (promise, handle) = pair(0);
        let job = Job {
            id,
            frame: Arc::new(frame),
            sink: Box::new(Chunk { promise }),
            started: false,
        };
        match self.shared.enqueue(job, true, transfer) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.sink.fail(TaskError::shut_down());
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
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let (cancelled, threads) = {
            let mut state = self.shared.state.lock();
            state.closed = true;
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
            job.sink.fail(TaskError::cancelled());
        }
        self.join_threads(threads);
    }

    /// Stop at once: cancel queued tasks, kill the workers (their running
    /// tasks fail with a shut-down error) and wait until they are reaped.
    pub fn terminate(&self) {
        let (cancelled, threads) = {
            let mut state = self.shared.state.lock();
            state.closed = true;
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
            job.sink.fail(TaskError::cancelled());
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
            return self.shared.state.lock().exited >= self.shared.workers;
        }
        self.shutdown(false, false);
        let deadline = Instant::now().checked_add(timeout);
        let finished = {
            let mut state = self.shared.state.lock();
            while state.exited < self.shared.workers {
                let timed_out = match deadline {
                    Some(deadline) => self
                        .shared
                        .space
                        .wait_until(&mut state, deadline)
                        .timed_out(),
                    None => {
                        self.shared.space.wait(&mut state);
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
            drop(std::mem::take(&mut self.shared.state.lock().threads));
        }
        finished
    }

    /// `multiprocessing.Pool.close`: accept no more tasks; queued ones still run.
    pub fn close(&self) {
        self.shutdown(false, false);
    }

    /// `multiprocessing.Pool.join`: wait until every worker has exited (after
    /// [`close`](ProcessPool::close) or [`terminate`](ProcessPool::terminate)).
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
