//! [`Handle`], the consumer side of a task, and [`Promise`], the side an
//! executor completes.
//!
//! # How a task's life is tracked
//!
//! A task moves through four phases kept in one atomic byte: `PENDING` (queued),
//! `RUNNING` (a worker claimed it), `DONE` (an outcome was decided) and `TAKEN`
//! (the outcome was moved out). The move to `DONE` is a compare-and-swap, so
//! exactly one party decides the outcome: the worker that finished the task, a
//! `cancel()` that won the race against the worker, or a watchdog that timed
//! the task out. Whoever loses the race drops its value.
//!
//! The decided outcome is first *lent* to the done-callbacks (without holding
//! the lock, so a callback may do anything), then published under the mutex,
//! and only then are blocked waiters and async wakers woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::loom::{AtomicBool, AtomicU8, Condvar, Mutex, MutexGuard};

use super::error::TaskError;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// How long a waiter spins before it parks. A kernel wake-up costs tens of
/// microseconds on an idle core (see COSTS.md), so a short spin makes quick
/// tasks' round trips fast, while the bound keeps waiting cheap.
const SPIN: Duration = Duration::from_micros(40);

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

pub(crate) struct Inner<T, J: ?Sized = ()> {
    phase: AtomicU8,
    /// Set once the outcome is published and may be taken.
    ready: AtomicBool,
    stop: AtomicBool,
    /// The executor that owns the task (0 for none): a waiter that is itself a
    /// worker of that executor runs queued tasks while it waits.
    owner: usize,
    state: Mutex<State<T>>,
    cond: Condvar,
    /// The executor's part of the allocation (see [`Tail`]).
    pub(crate) tail: J,
}

struct State<T> {
    outcome: Option<Result<T, TaskError>>,
    callbacks: Vec<Callback<T>>,
    /// True while the outcome is out on loan to the callbacks.
    lent: bool,
    waker: Option<Waker>,
    /// Stops a running task for good (the process pool kills its worker,
    /// the async executor wakes its future to drop it).
    kill: Option<Kill>,
}

/// What `cancel()` does to a running task.
enum Kill {
    /// An executor's own hook (the process pool kills the worker).
    Hook(Box<dyn FnOnce() + Send>),
    /// A future that ends itself once its outcome is decided: deciding the
    /// outcome wakes it (with the waker it left when it last returned
    /// `Pending`; none before that, so a task that never waits pays
    /// nothing), and it drops itself on that poll. See
    /// [`Promise::park_until_decided`].
    Wake(Option<Waker>),
}

impl Kill {
    fn run(self) {
        match self {
            Kill::Hook(hook) => hook(),
            Kill::Wake(waker) => waker.into_iter().for_each(Waker::wake),
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

/// A linked pair for a task run as a future (the async executor's): a
/// `cancel()` of the running task decides it as cancelled and wakes the
/// future, which then ends (see [`Promise::park_until_decided`]).
pub(crate) fn future_pair<T>() -> (Promise<T>, Handle<T>) {
    let inner: Arc<Erased<T>> = Arc::new(Inner::with_kill(0, (), Some(Kill::Wake(None))));
    (
        Promise {
            inner: Arc::clone(&inner),
        },
        Handle { inner },
    )
}

impl<T, J> Inner<T, J> {
    /// The state of a pending task owned by executor `owner` (0 for none),
    /// with the executor's `tail` in the same allocation.
    pub(crate) fn new(owner: usize, tail: J) -> Inner<T, J> {
        Inner::with_kill(owner, tail, None)
    }

    fn with_kill(owner: usize, tail: J, kill: Option<Kill>) -> Inner<T, J> {
        Inner {
            phase: AtomicU8::new(PENDING),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            owner,
            state: Mutex::new(State {
                outcome: None,
                callbacks: Vec::new(),
                lent: false,
                waker: None,
                kill,
            }),
            cond: Condvar::new(),
            tail,
        }
    }
}

impl<T, J: ?Sized> Inner<T, J> {
    /// Decide the outcome if nobody has yet. Returns whether this call decided it.
    fn decide(&self, outcome: Result<T, TaskError>) -> bool {
        let mut phase = self.phase.load(Ordering::Acquire);
        loop {
            if phase >= DONE {
                return false;
            }
            match self
                .phase
                .compare_exchange_weak(phase, DONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => phase = actual,
            }
        }
        self.lend_then_publish(self.state.lock(), outcome);
        true
    }

    /// Lend the decided outcome to every callback, including any added
    /// meanwhile, without holding the lock; then publish it.
    fn lend_then_publish<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<T>>,
        outcome: Result<T, TaskError>,
    ) {
        state.lent = true;
        // A future waiting to be told its outcome was decided is woken
        // once the lock is released.
        let kill = state.kill.take();
        loop {
            let callbacks = std::mem::take(&mut state.callbacks);
            if callbacks.is_empty() {
                break;
            }
            drop(state);
            run_callbacks(callbacks, &outcome);
            state = self.state.lock();
        }
        self.publish(state, outcome);
        if let Some(wake @ Kill::Wake(_)) = kill {
            wake.run();
        }
    }

    /// Store the outcome and wake every waiter.
    fn publish(&self, mut state: MutexGuard<'_, State<T>>, outcome: Result<T, TaskError>) {
        state.outcome = Some(outcome);
        state.lent = false;
        self.ready.store(true, Ordering::Release);
        let waker = state.waker.take();
        drop(state);
        self.cond.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Register what `cancel()` does to the running task, unless it is done.
    fn set_kill(&self, kill: Kill) {
        let mut state = self.state.lock();
        if self.phase.load(Ordering::Acquire) < DONE {
            state.kill = Some(kill);
        }
    }

    /// Block until the outcome is published or `deadline` passes.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_ready() {
            return true;
        }
        if self.owner != 0 && crate::thread::help_while(self.owner, || self.is_ready()) {
            return true;
        }
        let spin_end = Instant::now() + SPIN;
        let mut spins = 0u32;
        // Loom explores interleavings, not time: no spinning under the model.
        while !cfg!(troika_loom) && !self.is_ready() {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) {
                if Instant::now() >= spin_end {
                    break;
                }
                // Let a thread that shares this core run: on a busy machine
                // it may be the very one that completes this task (the
                // process pool's reader, or a worker process).
                std::thread::yield_now();
            }
        }
        let mut state = self.state.lock();
        while !self.is_ready() {
            match deadline {
                None => self.cond.wait(&mut state),
                Some(deadline) => {
                    if self.cond.wait_until(&mut state, deadline).timed_out() {
                        return self.is_ready();
                    }
                }
            }
        }
        true
    }

    fn take(&self) -> Result<T, TaskError> {
        let mut state = self.state.lock();
        // `ready` is only set together with the outcome, and only a consumed
        // handle takes it, so it is present here.
        state.outcome.take().unwrap_or_else(|| {
            Err(TaskError::new(super::ErrorKind::Failed(
                "outcome already taken".into(),
            )))
        })
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
    pub fn result(self) -> Result<T, TaskError> {
        self.inner.wait_until(None);
        self.inner.take()
    }

    /// Wait at most `timeout` for the outcome.
    ///
    /// Returns `Ok(outcome)` when the task finished in time, or `Err(self)` —
    /// the handle back, still valid — when it did not.
    pub fn result_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, Handle<T>> {
        let deadline = Instant::now().checked_add(timeout);
        if self.inner.wait_until(deadline) {
            Ok(self.inner.take())
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
        self.inner.phase.load(Ordering::Acquire) >= DONE
    }

    /// Whether a worker has started the task (and it may still be running).
    ///
    /// The process pool also counts a call it has already written to a
    /// worker behind another one: it can no longer be taken back and runs
    /// next, so `cancel()` returns false for it (as Python's pool does for
    /// calls in its call queue).
    pub fn is_running(&self) -> bool {
        self.inner.phase.load(Ordering::Acquire) == RUNNING
    }

    /// Try to cancel the task. Returns true if this call cancelled it.
    ///
    /// A task that has not started is removed and never runs. A running task
    /// is asked to stop through its [`CancelToken`](super::CancelToken); the
    /// thread pool cannot stop a running thread, so for it this returns false,
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
        if self
            .inner
            .phase
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.finish_forced(TaskError::cancelled());
            return true;
        }
        // Running: only an executor that registered a kill hook can stop it.
        let kill = {
            let mut state = self.inner.state.lock();
            if self.inner.phase.load(Ordering::Acquire) == RUNNING {
                state.kill.take()
            } else {
                None
            }
        };
        match kill {
            Some(kill) if self.inner.decide(Err(TaskError::cancelled())) => {
                kill.run();
                true
            }
            _ => false,
        }
    }

    /// Publish an outcome after the phase was already moved to `DONE` by CAS.
    fn finish_forced(&self, err: TaskError) {
        // `decide` expects a phase below DONE, so lend and publish directly.
        self.inner
            .lend_then_publish(self.inner.state.lock(), Err(err));
    }

    /// Run `callback` once the task is done, with a reference to its value or error.
    ///
    /// If the task is already done, the callback runs at once on this thread;
    /// otherwise it runs on the thread that completes the task. A panicking
    /// callback is reported on stderr and otherwise ignored.
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
        let mut state = self.inner.state.lock();
        if !self.inner.is_ready() {
            state.callbacks.push(Box::new(callback));
            return;
        }
        // Done: borrow the outcome out of the lock so the callback runs unlocked.
        let Some(outcome) = state.outcome.take() else {
            return;
        };
        state.lent = true;
        self.inner.ready.store(false, Ordering::Release);
        drop(state);
        run_callbacks(vec![Box::new(callback)], &outcome);
        self.inner
            .lend_then_publish(self.inner.state.lock(), outcome);
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
        let mut state = self.inner.state.lock();
        if self.inner.is_ready() {
            drop(state);
            return Poll::Ready(self.inner.take());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.inner.phase.load(Ordering::Relaxed) {
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
        self.inner
            .phase
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Complete the task. Returns false if its outcome was already decided
    /// (cancelled or timed out), in which case `outcome` is dropped.
    pub fn complete(&self, outcome: Result<T, TaskError>) -> bool {
        self.inner.decide(outcome)
    }

    /// Set the task's stop flag, which its [`CancelToken`](super::CancelToken)
    /// reports, without deciding its outcome.
    pub(crate) fn request_stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the outcome was already decided (cancelled, timed out or done).
    pub fn is_done(&self) -> bool {
        self.inner.phase.load(Ordering::Acquire) >= DONE
    }

    /// For a task made by [`future_pair`] whose future returned `Pending`:
    /// leave `waker` to be woken when the outcome is decided (by a
    /// `cancel()`). False if it is decided already: the future should end
    /// now instead of waiting.
    pub(crate) fn park_until_decided(&self, waker: &Waker) -> bool {
        let mut state = self.inner.state.lock();
        if self.inner.phase.load(Ordering::Acquire) >= DONE {
            return false;
        }
        match &state.kill {
            Some(Kill::Wake(Some(left))) if left.will_wake(waker) => {}
            _ => state.kill = Some(Kill::Wake(Some(waker.clone()))),
        }
        true
    }

    /// Register what `cancel()` does to a running task (the process pool kills
    /// the worker). Dropped once the task is done. [`Handle::cancel`] of a
    /// started task returns true, and decides the outcome as cancelled, only
    /// when a hook is registered; it runs the hook once.
    pub fn set_kill(&self, kill: Box<dyn FnOnce() + Send>) {
        self.inner.set_kill(Kill::Hook(kill));
    }
}

impl<T> std::fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
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
}
