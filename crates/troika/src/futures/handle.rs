//! [`Handle`], the consumer side of a task, and [`Promise`], the side an
//! executor completes.
//!
//! # How a task's life is tracked
//!
//! A task moves through three phases kept in one atomic byte, `state`:
//! `PENDING` (queued), `RUNNING` (a worker claimed it) and `DONE` (an
//! outcome was decided). The move to `DONE` is a compare-and-swap, so
//! exactly one party decides the outcome: the worker that finished the task,
//! a `cancel()` that won the race against the worker, or a watchdog that
//! timed the task out. Whoever loses the race drops its value.
//!
//! The winner writes the outcome into `outcome`, a slot written once, then
//! sets the `READY` bit; from then on the handle, and only the handle, reads
//! it. That is the whole completion path of a task nobody watches: two
//! atomic read-modify-writes, no lock.
//!
//! Whoever wants to be told of the completion — a done-callback, a thread
//! blocked in `result()`, an `.await`ing task, a kill hook — registers under
//! the `slow` mutex and sets the `WATCHED` bit. A winner that finds `WATCHED`
//! set takes the mutex: it first *lends* the outcome to the done-callbacks
//! (without holding the lock, so a callback may do anything), then sets
//! `READY` under the lock, and only then wakes blocked waiters and async
//! wakers. Setting `WATCHED` and setting `READY` are read-modify-writes of the
//! same byte, so one of them sees the other: either the registrant finds the
//! outcome ready, or the winner finds the registrant.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::loom::{AtomicBool, AtomicU8, Condvar, Mutex, MutexGuard, UnsafeCell};

use super::error::TaskError;

/// The phase bits of `Inner::state`.
const PHASE: u8 = 0b0011;
const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The outcome is in its slot (and the done-callbacks ran): the handle may
/// read it.
const READY: u8 = 0b0100;
/// Someone registered under `slow` (a callback, a blocked waiter, a waker, a
/// kill): the winner publishes through the mutex.
const WATCHED: u8 = 0b1000;
/// A `cancel()` of the running task decides it as cancelled, and wakes
/// `Slow::kill` if one is left (the process pool's hook, or the async
/// executor's future, which then drops itself).
const KILLABLE: u8 = 0b1_0000;

/// How long a waiter spins before it parks. A kernel wake-up costs tens of
/// microseconds on an idle core (see COSTS.md), so a short spin makes quick
/// tasks' round trips fast, while the bound keeps waiting cheap.
const SPIN: Duration = Duration::from_micros(40);

/// A spinning waiter looks at the task's state after 1, 2, 4, then at most
/// this many pauses (`spin_loop`): while it runs the task, the completing
/// thread writes the state's cache line three times (start, claim,
/// publish), and every look in between takes the line back to the waiter's
/// core and makes the next write wait for it. Measured on the 2-core KVM
/// guest (a pause there is 8.6 ns): a thread-pool round trip's p50 0.93–0.98
/// µs looking after every pause, 0.66–0.70 µs with this spacing
/// (`examples/thread_round_trip.rs`; `BENCHMARKS.md`, 2026-12-03).
const SPIN_GAP_MAX: u32 = 8;

type Callback<T> = Box<dyn FnOnce(Result<&T, &TaskError>) + Send>;

/// What a stopped executor or helper-aware waiter needs from a handle without
/// knowing its type.
pub(crate) trait TaskState: Send + Sync {
    fn stop_requested(&self) -> bool;
    fn request_stop(&self);
}

/// What an executor may keep in a task's allocation after the handle's own
/// state (the thread pool keeps the task's closure there, so that a task costs
/// one allocation). Every `Send + Sync` type qualifies.
pub(crate) trait Tail: Send + Sync {}

impl<X: Send + Sync + ?Sized> Tail for X {}

/// A task's shared state with its executor's tail erased: what handles and
/// promises point to.
type Erased<T> = Inner<T, dyn Tail>;

/// In declaration order (`repr(C)`), so that what a task's completion and
/// its handle's `result()` touch, `state` and `outcome` (and the `Arc`'s
/// counts before them), share the allocation's first cache line: a line
/// that moves between the submitting thread and the worker costs more than
/// the rest of the completion (issue 16 item 4; with the compiler's order
/// `state` sat in the second line, beside the mutex that a task nobody
/// watches never takes).
#[repr(C)]
pub(crate) struct Inner<T, J: ?Sized = ()> {
    /// The phase and the `READY` and `WATCHED` bits.
    state: AtomicU8,
    stop: AtomicBool,
    /// Written once, by the party that moved the phase to `DONE`, before
    /// `READY` is set; after that lent to callbacks (one lender at a time,
    /// under `slow.lent`) and taken by the handle, which alone holds it then.
    outcome: UnsafeCell<Option<Result<T, TaskError>>>,
    /// The executor that owns the task (0 for none): a waiter that is itself a
    /// worker of that executor runs queued tasks while it waits.
    owner: usize,
    slow: Mutex<Slow<T>>,
    cond: Condvar,
    /// The executor's part of the allocation (see [`Tail`]).
    pub(crate) tail: J,
}

// SAFETY: every field but `outcome` is `Sync` (with `T: Send`, the mutex's
// content is `Send`). `outcome` is written by one thread (the winner of the
// move to `DONE`) before `READY` is published with release ordering, and read
// only after `READY` is seen with acquire ordering: by callbacks, one lender at
// a time (`Slow::lent`), while the handle is shared, or by the handle's owner
// holding it exclusively. So `T` values move between threads (`T: Send`) but
// are never reached from two threads at once (`T: Sync` is not needed).
unsafe impl<T: Send, J: ?Sized + Sync> Sync for Inner<T, J> {}

/// What completion must attend to beyond storing the outcome. Kept small:
/// it is part of every task's allocation, and most tasks never use it.
struct Slow<T> {
    /// Boxed: a task without callbacks (most) pays one word for them.
    #[allow(
        clippy::box_collection,
        reason = "one word instead of three in every task's allocation"
    )]
    callbacks: Option<Box<Vec<Callback<T>>>>,
    /// True while the outcome is out on loan to the callbacks.
    lent: bool,
    waker: Option<Waker>,
    /// What a `cancel()` of a `KILLABLE` running task wakes: an executor's
    /// kill hook (see [`Hook`]; the process pool needs none, see
    /// [`Promise::mark_killable`]), or the waker a future left when it
    /// last returned `Pending` (none before that, so a task that never
    /// waits pays nothing), which makes it drop itself on its next poll.
    /// See [`Promise::park_until_decided`].
    kill: Option<Waker>,
}

/// An executor's kill hook (the process pool kills the worker), carried as
/// the waker that a `cancel()` wakes: waking it runs the hook once; dropping
/// it does not.
struct Hook(std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl std::task::Wake for Hook {
    fn wake(self: Arc<Self>) {
        let hook = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// A cancel token's view of one task.
struct StopFlag<T>(Arc<Erased<T>>);

impl<T> TaskState for StopFlag<T>
where
    T: Send,
{
    fn stop_requested(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }

    fn request_stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// A task submitted to an executor: wait for its value, cancel it, or `.await` it.
///
/// Every executor in troika returns this one type. A handle is `Send` and `Sync`:
/// it can be waited on from any thread. Dropping it does not cancel the task.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let handle = pool.submit(|| 6 * 7);
/// handle.add_done_callback(|outcome| assert_eq!(outcome.ok(), Some(&42)));
/// assert_eq!(handle.result().unwrap(), 42);
///
/// // Waiting with a deadline hands the handle back when the task is not done.
/// let slow = pool.submit(|| std::thread::sleep(Duration::from_millis(50)));
/// let slow = match slow.result_timeout(Duration::from_micros(1)) {
///     Ok(_) => unreachable!("the task sleeps"),
///     Err(still_running) => still_running,
/// };
/// slow.result().unwrap();
/// ```
pub struct Handle<T> {
    inner: Arc<Erased<T>>,
}

/// The executor's side of a task: claim it, then complete it once.
///
/// troika's own executors use it internally; it is public so that an executor
/// outside this crate (such as the Redis-backed cluster executor) can hand out
/// the same [`Handle`]s. Make a linked pair with [`Promise::new`]; see there
/// for an example.
pub struct Promise<T> {
    inner: Arc<Erased<T>>,
}

/// Make a linked pair: the executor keeps the [`Promise`], the caller gets the [`Handle`].
pub(crate) fn pair<T>(owner: usize) -> (Promise<T>, Handle<T>) {
    let inner: Arc<Erased<T>> = Arc::new(Inner::new(owner, ()));
    (
        Promise {
            inner: Arc::clone(&inner),
        },
        Handle { inner },
    )
}

/// A linked pair for a task run as a future (the async executor's), with
/// the executor's `tail` in the task's allocation: a `cancel()` of the
/// running task decides it as cancelled and wakes the future, which then
/// ends (see [`Promise::park_until_decided`]). The handle is made from the
/// returned state with [`Handle::from_inner`], once the executor has
/// filled in its tail.
pub(crate) fn future_pair<T, J: Tail + 'static>(tail: J) -> (Promise<T>, Arc<Inner<T, J>>) {
    let inner = Arc::new(Inner::with_state(0, tail, KILLABLE));
    let promise = Promise {
        inner: Arc::clone(&inner) as Arc<Erased<T>>,
    };
    (promise, inner)
}

impl<T, J> Inner<T, J> {
    /// The state of a pending task owned by executor `owner` (0 for none),
    /// with the executor's `tail` in the same allocation.
    pub(crate) fn new(owner: usize, tail: J) -> Inner<T, J> {
        Inner::with_state(owner, tail, PENDING)
    }

    fn with_state(owner: usize, tail: J, state: u8) -> Inner<T, J> {
        Inner {
            state: AtomicU8::new(state),
            stop: AtomicBool::new(false),
            owner,
            outcome: UnsafeCell::new(None),
            slow: Mutex::new(Slow {
                callbacks: None,
                lent: false,
                waker: None,
                kill: None,
            }),
            cond: Condvar::new(),
            tail,
        }
    }
}

impl<T, J: ?Sized> Inner<T, J> {
    fn phase(&self) -> u8 {
        self.state.load(Ordering::Acquire) & PHASE
    }

    fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) & READY != 0
    }

    /// Move the phase to `to` if `from` accepts the current one, keeping the
    /// flag bits. Returns whether this call moved it.
    ///
    /// The first compare-and-swap expects `guess` instead of a value loaded
    /// first: a load would fetch the cache line shared and the swap fetch it
    /// again to own it, while a wrong guess costs one retry on a line this
    /// thread then owns.
    fn advance(&self, to: u8, from: impl Fn(u8) -> bool, guess: u8) -> bool {
        let mut state = guess;
        loop {
            if !from(state & PHASE) {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                (state & !PHASE) | to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// [`Promise::start`], for an executor that keeps its task in the
    /// tail (and so holds the state, not a promise).
    pub(crate) fn start(&self) -> bool {
        self.advance(RUNNING, |phase| phase == PENDING, PENDING)
    }

    /// [`Promise::is_done`], as [`start`](Self::start).
    pub(crate) fn is_done(&self) -> bool {
        self.phase() >= DONE
    }

    /// [`Promise::mark_killable`], as [`start`](Self::start).
    pub(crate) fn mark_killable(&self) {
        self.state.fetch_or(KILLABLE, Ordering::AcqRel);
    }

    /// [`Promise::complete`], as [`start`](Self::start).
    pub(crate) fn complete(&self, outcome: Result<T, TaskError>) -> bool {
        self.decide(outcome)
    }

    /// Win the right to decide the outcome, if nobody has yet. The winner
    /// must then [`publish`](Self::publish) it.
    fn claim(&self) -> bool {
        self.advance(DONE, |phase| phase < DONE, RUNNING)
    }

    /// Decide the outcome if nobody has yet. Returns whether this call decided it.
    fn decide(&self, outcome: Result<T, TaskError>) -> bool {
        if !self.claim() {
            return false;
        }
        self.publish(outcome, false);
        true
    }

    /// Decide and publish the outcome of a running task that only this
    /// thread can decide: one read-modify-write of `state` where
    /// [`claim`](Self::claim) and [`publish`](Self::publish) take two.
    /// The state's line is the one the waiter spins on, so each write the
    /// worker makes to it while the waiter looks costs a transfer between
    /// the cores (issue 16: the thread pool's round trip).
    ///
    /// # Safety
    ///
    /// The caller started the task (`start` returned true) and nobody else
    /// can decide it while it runs: it is not killable (no kill hook, not
    /// marked killable, not a future) and no watchdog holds a promise of
    /// it. Then the outcome slot is this thread's alone until `READY` is set.
    unsafe fn settle_running(&self, outcome: Result<T, TaskError>) {
        // SAFETY: by the contract above, this thread is the slot's only
        // writer, and nobody reads it before `READY` is set below.
        self.outcome
            .with_mut(|slot| unsafe { *slot = Some(outcome) });
        // The first guess is the state of a started task nobody watches.
        let mut state = RUNNING;
        loop {
            debug_assert_eq!(state & PHASE, RUNNING, "a sole decider's task was decided");
            let watched = state & WATCHED != 0;
            // Watched: decided here, published by the watched completion.
            let ready = if watched { 0 } else { READY };
            // Release: a reader that sees `READY` sees the outcome.
            match self.state.compare_exchange_weak(
                state,
                (state & !PHASE) | DONE | ready,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if watched => return self.publish_watched(self.slow.lock(), false),
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    /// Store the outcome of a task this thread [`claim`](Self::claim)ed, and
    /// make it ready. With `wake_task`, a future parked by
    /// [`Promise::park_until_decided`] is woken to end itself (the decision
    /// came from outside the task).
    ///
    /// Called once per task, by the claimer only.
    fn publish(&self, outcome: Result<T, TaskError>, wake_task: bool) {
        // SAFETY: this thread claimed the task, so it is the slot's only
        // writer, and nobody reads the slot before `READY` is set below.
        self.outcome
            .with_mut(|slot| unsafe { *slot = Some(outcome) });
        let mut state = self.state.load(Ordering::Relaxed);
        while state & WATCHED == 0 {
            // Release: a reader that sees `READY` sees the outcome.
            match self.state.compare_exchange_weak(
                state,
                state | READY,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
        self.publish_watched(self.slow.lock(), wake_task);
    }

    /// The completion of a watched task: lend the outcome to every
    /// callback, including any added meanwhile, without holding the lock;
    /// then set `READY` under the lock and wake whoever waits.
    fn publish_watched<'a>(&'a self, mut slow: MutexGuard<'a, Slow<T>>, wake_task: bool) {
        slow.lent = true;
        let kill = slow.kill.take();
        while let Some(callbacks) = slow.callbacks.take() {
            drop(slow);
            self.outcome.with(|slot| {
                // SAFETY: `READY` is not set yet, so no other thread reads
                // the slot, and this thread wrote it (see `publish`).
                if let Some(outcome) = unsafe { &*slot } {
                    run_callbacks(*callbacks, outcome);
                }
            });
            slow = self.slow.lock();
        }
        slow.lent = false;
        self.state.fetch_or(READY, Ordering::Release);
        let waker = slow.waker.take();
        drop(slow);
        self.cond.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        if wake_task && let Some(kill) = kill {
            kill.wake();
        }
    }

    /// Register (under `slow`) what `cancel()` wakes to stop the running
    /// task, unless it is done.
    fn set_kill(&self, kill: Waker) {
        let mut slow = self.slow.lock();
        if self.state.fetch_or(WATCHED | KILLABLE, Ordering::AcqRel) & PHASE < DONE {
            slow.kill = Some(kill);
        }
    }

    /// Block until the outcome is published or `deadline` passes.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_ready() {
            return true;
        }
        let spin_end = Instant::now() + SPIN;
        let mut spin = !cfg!(troika_loom);
        if self.owner & crate::process::PROCESS_OWNER != 0 {
            // A process pool's task: read its worker's replies meanwhile
            // (that is this thread's spin).
            if crate::process::help_while(self.owner, &|| self.is_ready(), spin_end, deadline) {
                return true;
            }
            spin = false;
        } else if self.owner != 0 && crate::thread::help_while(self.owner, || self.is_ready()) {
            return true;
        }
        // Pauses (`spin_loop`) so far, and the count at which to look at the
        // clock next (every 64 pauses).
        let (mut spins, mut next_check) = (0u32, 64u32);
        let mut gap = 1u32;
        // Loom explores interleavings, not time: no spinning under the model.
        while spin && !self.is_ready() {
            for _ in 0..gap {
                std::hint::spin_loop();
            }
            spins += gap;
            gap = (gap * 2).min(SPIN_GAP_MAX);
            if spins >= next_check {
                next_check += 64;
                if Instant::now() >= spin_end {
                    break;
                }
                // Let a thread that shares this core run: on a busy machine
                // it may be the very one that completes this task (the
                // process pool's reader, or a worker process).
                std::thread::yield_now();
            }
        }
        let mut slow = self.slow.lock();
        // Watched from here on: the winner sets `READY` under the lock and
        // then notifies, so the check below and the wait cannot miss it.
        if self.state.fetch_or(WATCHED, Ordering::Acquire) & READY != 0 {
            return true;
        }
        loop {
            match deadline {
                None => self.cond.wait(&mut slow),
                Some(deadline) => {
                    if self.cond.wait_until(&mut slow, deadline).timed_out() {
                        return self.is_ready();
                    }
                }
            }
            if self.is_ready() {
                return true;
            }
        }
    }
}

fn run_callbacks<T>(callbacks: Vec<Callback<T>>, outcome: &Result<T, TaskError>) {
    for callback in callbacks {
        let arg = outcome.as_ref();
        // A panicking callback must not take down the worker or skip the
        // others: it is reported and ignored (a documented no-op).
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(arg)))
        {
            let msg = super::error::panic_message(&*payload);
            eprintln!("troika: a done-callback panicked (ignored): {msg}");
        }
    }
}

impl<T> Handle<T> {
    /// The handle of a task whose state (and executor tail) is `inner`.
    pub(crate) fn from_inner<J: Tail + 'static>(inner: Arc<Inner<T, J>>) -> Handle<T> {
        Handle { inner }
    }

    /// A handle whose outcome is already decided (used for refused submissions).
    pub(crate) fn ready(outcome: Result<T, TaskError>) -> Handle<T> {
        let (promise, handle) = pair(0);
        promise.complete(outcome);
        handle
    }

    /// Block until the task finishes and return its value or error.
    ///
    /// Called from a worker of the same thread pool, this runs other queued
    /// tasks of that pool while it waits, so waiting on your own pool's tasks
    /// cannot deadlock it.
    pub fn result(mut self) -> Result<T, TaskError> {
        self.inner.wait_until(None);
        self.take()
    }

    /// Wait at most `timeout` for the outcome.
    ///
    /// Returns `Ok(outcome)` when the task finished in time, or `Err(self)` —
    /// the handle back, still valid — when it did not.
    pub fn result_timeout(mut self, timeout: Duration) -> Result<Result<T, TaskError>, Handle<T>> {
        let deadline = Instant::now().checked_add(timeout);
        if self.inner.wait_until(deadline) {
            Ok(self.take())
        } else {
            Err(self)
        }
    }

    /// Block until the task finishes, without taking its value.
    pub fn wait(&self) {
        self.inner.wait_until(None);
    }

    /// Block at most `timeout` until the task finishes; true if it did.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = troika::ThreadPool::new(1).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let handle = pool.submit(move || wait.recv().is_ok());
    /// assert!(!handle.wait_timeout(Duration::from_millis(1)));
    /// release.send(()).unwrap();
    /// assert!(handle.wait_timeout(Duration::from_secs(60)));
    /// assert!(handle.is_done());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_until(Instant::now().checked_add(timeout))
    }

    /// Whether the task's outcome is decided (finished, failed or cancelled).
    pub fn is_done(&self) -> bool {
        self.inner.phase() >= DONE
    }

    /// Whether a worker has started the task (and it may still be running).
    ///
    /// The process pool also counts a call it has already written to a
    /// worker behind another one: it can no longer be taken back and runs
    /// next, so `cancel()` returns false for it (as Python's pool does for
    /// calls in its call queue). The thread pool likewise counts a task
    /// it handed straight to a worker spinning idle: it is running from
    /// the moment `submit` returns.
    pub fn is_running(&self) -> bool {
        self.inner.phase() == RUNNING
    }

    /// Try to cancel the task. Returns true if this call cancelled it.
    ///
    /// A task that has not started is removed and never runs. A running task
    /// is asked to stop through its [`CancelToken`](super::CancelToken); the
    /// thread pool cannot stop a running thread, so for it this returns false
    /// (also for a task submitted while a worker was idle, which that worker
    /// runs at once; see [`is_running`](Self::is_running)),
    /// while the process pool kills the worker and returns true (but returns
    /// false for a call already written to a worker behind another one, which
    /// will run). Cancelling a finished task is a no-op that returns false.
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
    /// let queued = pool.submit(|| "never runs");
    /// wait_start.recv().unwrap();
    /// assert!(queued.cancel()); // not started: removed
    /// assert!(!running.cancel()); // a running thread is not stopped
    /// release.send(()).unwrap();
    /// assert!(queued.result().unwrap_err().is_cancelled());
    /// assert!(running.result().is_ok());
    /// ```
    pub fn cancel(&self) -> bool {
        self.inner.stop.store(true, Ordering::Relaxed);
        if self.inner.advance(DONE, |phase| phase == PENDING, PENDING) {
            // A future parked while waiting to start is woken to leave.
            self.inner.publish(Err(TaskError::cancelled()), true);
            return true;
        }
        // Running: only a killable task (the executor registered a kill
        // hook, or runs the task as a future) can be stopped.
        let kill = {
            let mut slow = self.inner.slow.lock();
            let state = self.inner.state.load(Ordering::Acquire);
            if state & PHASE == RUNNING && state & KILLABLE != 0 {
                Some(slow.kill.take())
            } else {
                None
            }
        };
        match kill {
            Some(kill) if self.inner.claim() => {
                // Decided from outside the task: publishing also wakes what
                // the task left after `kill` was taken above (a future that
                // parked in between, or a hook set late), so the task always
                // learns that it is to end.
                self.inner.publish(Err(TaskError::cancelled()), true);
                if let Some(kill) = kill {
                    kill.wake();
                } else if self.inner.owner & crate::process::PROCESS_OWNER != 0 {
                    // A process pool marks the call its worker runs killable
                    // without a hook (no allocation per task): it finds the
                    // call by its state and kills that worker.
                    crate::process::kill_running(self.inner.owner, Arc::as_ptr(&self.inner).cast());
                }
                true
            }
            _ => false,
        }
    }

    /// Take the published outcome. Only the handle's owner, holding it
    /// exclusively, takes it, once `READY` is seen.
    fn take(&mut self) -> Result<T, TaskError> {
        if !self.inner.is_ready() {
            return Err(TaskError::new(super::ErrorKind::Failed(
                "outcome taken before it was ready".into(),
            )));
        }
        // SAFETY: `READY` was seen with acquire ordering, so the writer is
        // done with the slot; `&mut self` excludes every other reader (a
        // callback is lent the outcome only through a shared borrow of this
        // handle).
        let outcome = self
            .inner
            .outcome
            .with_mut(|slot| unsafe { (*slot).take() });
        // Taken already (a future polled again after it returned `Ready`).
        outcome.unwrap_or_else(|| {
            Err(TaskError::new(super::ErrorKind::Failed(
                "outcome already taken".into(),
            )))
        })
    }

    /// Run `callback` once the task is done, with a reference to its value or error.
    ///
    /// If the task is already done, the callback runs at once on this thread;
    /// otherwise it runs on the thread that completes the task (for a
    /// process pool: the pool's I/O thread, or a thread waiting on one of
    /// the pool's tasks, which reads replies while it waits). A callback
    /// must not block, least of all on another task of the same executor.
    /// A panicking callback is reported on stderr and otherwise ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(1).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let handle = pool.submit(|| 2 + 2);
    /// handle.add_done_callback(move |outcome| tx.send(*outcome.unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 4);
    /// assert_eq!(handle.result().unwrap(), 4); // the value is still there
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(Result<&T, &TaskError>) + Send + 'static,
    {
        let mut slow = self.inner.slow.lock();
        let state = self.inner.state.fetch_or(WATCHED, Ordering::Acquire);
        if state & READY == 0 || slow.lent {
            // The winner (or the thread already lending the outcome) runs it.
            slow.callbacks
                .get_or_insert_with(Box::default)
                .push(Box::new(callback));
            return;
        }
        // Ready and nobody lending: lend the outcome out of the lock, to this
        // callback and to any added meanwhile.
        slow.lent = true;
        drop(slow);
        let mut callbacks: Vec<Callback<T>> = vec![Box::new(callback)];
        loop {
            self.inner.outcome.with(|slot| {
                // SAFETY: `READY` was seen with acquire ordering; the slot is
                // only read here, by this thread alone (`lent`), and taking
                // it needs the handle exclusively, which `&self` excludes.
                if let Some(outcome) = unsafe { &*slot } {
                    run_callbacks(callbacks, outcome);
                }
            });
            let mut slow = self.inner.slow.lock();
            match slow.callbacks.take() {
                Some(more) => callbacks = *more,
                None => {
                    slow.lent = false;
                    return;
                }
            }
        }
    }

    /// A token that reports whether cancellation of this task was requested.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(1).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let _busy = pool.submit(move || wait.recv().unwrap());
    /// let handle = pool.submit(|| 1);
    /// let token = handle.cancel_token();
    /// assert!(!token.is_cancelled());
    /// handle.cancel();
    /// assert!(token.is_cancelled());
    /// release.send(()).unwrap();
    /// ```
    pub fn cancel_token(&self) -> super::CancelToken
    where
        T: Send + 'static,
    {
        super::CancelToken::from_state(Arc::new(StopFlag(Arc::clone(&self.inner))))
    }
}

impl<T> Future for Handle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.inner.is_ready() {
            let mut slow = this.inner.slow.lock();
            match &slow.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => slow.waker = Some(cx.waker().clone()),
            }
            if this.inner.state.fetch_or(WATCHED, Ordering::Acquire) & READY == 0 {
                return Poll::Pending;
            }
            slow.waker = None;
        }
        Poll::Ready(this.take())
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.inner.phase() {
            PENDING => "pending",
            RUNNING => "running",
            _ => "done",
        };
        f.debug_struct("Handle").field("phase", &phase).finish()
    }
}

impl<T> Promise<T> {
    /// The promise of a task whose state (and executor tail) is `inner`.
    pub(crate) fn from_inner<J: Tail + 'static>(inner: Arc<Inner<T, J>>) -> Promise<T> {
        Promise { inner }
    }

    /// Claim the task for running. False if it was cancelled (or otherwise
    /// decided) first: then the executor must skip it.
    pub fn start(&self) -> bool {
        self.inner.start()
    }

    /// Complete the task. Returns false if its outcome was already decided
    /// (cancelled or timed out), in which case `outcome` is dropped.
    pub fn complete(&self, outcome: Result<T, TaskError>) -> bool {
        self.inner.complete(outcome)
    }

    /// The first half of [`complete`](Self::complete): win the right to
    /// decide the outcome, without deciding it yet (an executor counts the
    /// outcome in between, so that whoever sees it published finds it
    /// counted, and counts only what it decided). `None` if the outcome was
    /// already decided.
    pub(crate) fn claim(&self) -> Option<Claim<'_, T>> {
        self.inner.claim().then_some(Claim { inner: &self.inner })
    }

    /// Complete a running task that only this thread can decide, in one
    /// step where [`claim`](Self::claim) and publish take two.
    ///
    /// # Safety
    ///
    /// As `Inner::settle_running`: this thread's [`start`](Self::start)
    /// returned true, the task is not killable, and nobody else holds a
    /// promise of it that may complete it.
    pub(crate) unsafe fn settle_running(&self, outcome: Result<T, TaskError>) {
        // SAFETY: the caller's contract is the callee's.
        unsafe { self.inner.settle_running(outcome) }
    }

    /// Set the task's stop flag, which its [`CancelToken`](super::CancelToken)
    /// reports, without deciding its outcome.
    pub(crate) fn request_stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the outcome was already decided (cancelled, timed out or done).
    pub fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    /// For a task made by [`future_pair`] whose future returned `Pending`:
    /// leave `waker` to be woken when the outcome is decided (by a
    /// `cancel()`). False if it is decided already: the future should end
    /// now instead of waiting.
    pub(crate) fn park_until_decided(&self, waker: &Waker) -> bool {
        let mut slow = self.inner.slow.lock();
        // Watched, so that a decision from now on wakes the waker left here.
        if self.inner.state.fetch_or(WATCHED, Ordering::AcqRel) & PHASE >= DONE {
            return false;
        }
        match &slow.kill {
            Some(left) if left.will_wake(waker) => {}
            _ => slow.kill = Some(waker.clone()),
        }
        true
    }

    /// Register what `cancel()` does to a running task (the process pool kills
    /// the worker). Dropped once the task is done. [`Handle::cancel`] of a
    /// started task returns true, and decides the outcome as cancelled, only
    /// when a hook is registered; it runs the hook once.
    pub fn set_kill(&self, kill: Box<dyn FnOnce() + Send>) {
        let hook = Hook(std::sync::Mutex::new(Some(kill)));
        self.inner.set_kill(Waker::from(Arc::new(hook)));
    }

    /// Let `cancel()` stop the running task through its executor, which
    /// finds it by [`id`](Self::id) (the process pool kills the worker that
    /// runs it): as [`set_kill`](Self::set_kill) without a hook, and without
    /// making the completion take the slow path.
    pub(crate) fn mark_killable(&self) {
        self.inner.mark_killable();
    }

    /// What identifies this task to [`mark_killable`](Self::mark_killable)'s
    /// executor: the address of its shared state.
    pub(crate) fn id(&self) -> *const () {
        Arc::as_ptr(&self.inner).cast()
    }
}

impl<T> std::fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

/// A won right to decide a task's outcome (see [`Promise::claim`]); settle
/// it with [`Claim::publish`], or the task's waiters wait for ever.
#[must_use = "a claimed task must be published, or its waiters wait for ever"]
pub(crate) struct Claim<'a, T> {
    inner: &'a Erased<T>,
}

impl<T> Claim<'_, T> {
    /// Decide the outcome (the second half of [`Promise::complete`]).
    pub(crate) fn publish(self, outcome: Result<T, TaskError>) {
        self.inner.publish(outcome, false);
    }
}

impl<T> Clone for Promise<T> {
    fn clone(&self) -> Self {
        Promise {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Model checks of the handle's state machine: every interleaving of a
/// worker completing, a canceller and a waiter decides the outcome once,
/// runs each callback once and wakes the waiter.
#[cfg(all(test, troika_loom))]
mod loom_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn loom_complete_races_cancel() {
        loom::model(|| {
            let (promise, handle) = pair::<u32>(0);
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&calls);
            handle.add_done_callback(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            });
            let worker = loom::thread::spawn(move || {
                if promise.start() {
                    promise.complete(Ok(7));
                }
            });
            let cancelled = handle.cancel();
            worker.join().unwrap();
            let outcome = handle.result();
            match outcome {
                Ok(v) => {
                    assert!(!cancelled);
                    assert_eq!(v, 7);
                }
                Err(e) => {
                    assert!(cancelled);
                    assert!(e.is_cancelled());
                }
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn loom_waiter_is_woken_and_late_callback_runs_once() {
        loom::model(|| {
            let (promise, handle) = pair::<u32>(0);
            let handle = Arc::new(handle);
            let waiter_handle = Arc::clone(&handle);
            let waiter = loom::thread::spawn(move || waiter_handle.wait());
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&calls);
            let adder_handle = Arc::clone(&handle);
            let adder = loom::thread::spawn(move || {
                adder_handle.add_done_callback(move |outcome| {
                    assert_eq!(outcome.ok(), Some(&3));
                    seen.fetch_add(1, Ordering::SeqCst);
                });
            });
            assert!(promise.start());
            assert!(promise.complete(Ok(3)));
            assert!(!promise.complete(Ok(4)), "an outcome is decided once");
            waiter.join().unwrap();
            adder.join().unwrap();
            assert!(handle.is_done());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        });
    }

    /// The one-step settle of a task only its worker can decide, racing a
    /// late callback and a blocked waiter: the callback runs once with the
    /// value, and the waiter returns.
    #[test]
    fn loom_sole_deciders_settle_races_a_callback_and_a_waiter() {
        loom::model(|| {
            let (promise, handle) = pair::<u32>(0);
            let handle = Arc::new(handle);
            assert!(promise.start());
            let worker = loom::thread::spawn(move || {
                // SAFETY: started above; nothing else can decide this task.
                unsafe { promise.settle_running(Ok(9)) };
            });
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&calls);
            handle.add_done_callback(move |outcome| {
                assert_eq!(outcome.ok(), Some(&9));
                seen.fetch_add(1, Ordering::SeqCst);
            });
            handle.wait();
            worker.join().unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            let handle = Arc::into_inner(handle).unwrap();
            assert_eq!(handle.result().unwrap(), 9);
        });
    }

    /// A waker that records that it was woken.
    struct Flag(crate::loom::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag_waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(crate::loom::AtomicBool::new(false)));
        (Arc::clone(&flag), Waker::from(flag))
    }

    /// An `.await` racing the completion: the poll either finds the
    /// outcome or leaves a waker that the completion wakes.
    #[test]
    fn loom_await_races_completion() {
        loom::model(|| {
            let (promise, mut handle) = pair::<u32>(0);
            let worker = loom::thread::spawn(move || {
                assert!(promise.start());
                assert!(promise.complete(Ok(7)));
            });
            let (woken, waker) = flag_waker();
            let mut cx = Context::from_waker(&waker);
            let first = Pin::new(&mut handle).poll(&mut cx);
            worker.join().unwrap();
            match first {
                Poll::Ready(outcome) => assert_eq!(outcome.unwrap(), 7),
                Poll::Pending => {
                    assert!(
                        woken.0.load(Ordering::SeqCst),
                        "the completion woke the waiter"
                    );
                    match Pin::new(&mut handle).poll(&mut cx) {
                        Poll::Ready(outcome) => assert_eq!(outcome.unwrap(), 7),
                        Poll::Pending => panic!("woken, yet not ready"),
                    }
                }
            }
        });
    }

    /// A future parks its waker while a `cancel()` decides it: either the
    /// park sees the decision, or the cancel wakes the waker (so the
    /// executor drops the future). `started`: the task is running (its
    /// future returned `Pending`), else waiting to start (the async
    /// executor's task waiting for a concurrency slot).
    fn cancel_wakes_a_parked_task(started: bool) {
        loom::model(move || {
            let (promise, inner) = future_pair::<u32, ()>(());
            let handle = Handle::from_inner(inner);
            if started {
                assert!(promise.start());
            }
            let (woken, waker) = flag_waker();
            let task = loom::thread::spawn(move || promise.park_until_decided(&waker));
            assert!(handle.cancel());
            let parked = task.join().unwrap();
            if parked {
                assert!(
                    woken.0.load(Ordering::SeqCst),
                    "the cancel woke the parked task"
                );
            }
            assert!(handle.result().unwrap_err().is_cancelled());
        });
    }

    #[test]
    fn loom_cancel_wakes_a_task_parked_before_it_started() {
        cancel_wakes_a_parked_task(false);
    }

    #[test]
    fn loom_cancel_wakes_a_running_task_that_parks() {
        cancel_wakes_a_parked_task(true);
    }

    /// A blocked waiter and a late callback against a completion that
    /// takes the fast path when nobody watches: the waiter returns, the
    /// callback runs once with the value, and the value is taken once.
    #[test]
    fn loom_blocking_waiter_and_callback_race_the_unwatched_fast_path() {
        loom::model(|| {
            let (promise, handle) = pair::<u32>(0);
            let handle = Arc::new(handle);
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&calls);
            let worker = loom::thread::spawn(move || {
                assert!(promise.start());
                assert!(promise.complete(Ok(5)));
            });
            let adder_handle = Arc::clone(&handle);
            let adder = loom::thread::spawn(move || {
                adder_handle.add_done_callback(move |outcome| {
                    assert_eq!(outcome.ok(), Some(&5));
                    seen.fetch_add(1, Ordering::SeqCst);
                });
            });
            handle.wait();
            worker.join().unwrap();
            adder.join().unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            let handle = Arc::into_inner(handle).unwrap();
            assert_eq!(handle.result().unwrap(), 5);
        });
    }
}

/// (Not under loom, whose atomics and mutex are larger.)
#[cfg(all(test, not(troika_loom)))]
mod layout_tests {
    use std::mem::{offset_of, size_of};

    use super::{Inner, TaskError};

    /// What the completion and `result()` of a task nobody watches touch
    /// lies in the first 64 bytes of the allocation (after the `Arc`'s two
    /// counts), and the allocation stays within 128 bytes (one allocator
    /// bin, two cache lines).
    #[test]
    fn the_hot_fields_share_the_first_cache_line() {
        const ARC_COUNTS: usize = 16;
        type I = Inner<u64, ()>;
        let outcome_end = offset_of!(I, outcome) + size_of::<Option<Result<u64, TaskError>>>();
        assert!(ARC_COUNTS + offset_of!(I, state) < 64);
        assert!(
            ARC_COUNTS + outcome_end <= 64,
            "outcome ends at {outcome_end}"
        );
        assert!(
            ARC_COUNTS + size_of::<I>() <= 128,
            "{} bytes",
            size_of::<I>()
        );
    }
}
