//! The [`Executor`] trait and the combinators every executor shares:
//! ordered and unordered `map`, [`as_completed`] and [`wait`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::error::{SubmitError, TaskError};
use super::handle::Handle;

/// A unit of work an executor knows how to run.
///
/// For the thread pool a task is any `FnOnce() -> R` closure; the process pool
/// runs registered functions with serialized arguments instead, since a closure
/// cannot cross into another process.
pub trait Task: Send + 'static {
    /// What the task produces.
    type Output: Send + 'static;
}

impl<F, R> Task for F
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    type Output = R;
}

/// Something that runs tasks of type `T` and hands back [`Handle`]s.
///
/// `ThreadPool`, `ProcessPool` and the async executor implement it, so code
/// written against `Executor` runs on any of them. The provided methods build
/// ordered and unordered `map` on top of `submit`.
pub trait Executor<T: Task> {
    /// Queue a task. A task submitted after shutdown gets a handle that is
    /// already failed with a shut-down error.
    fn submit(&self, task: T) -> Handle<T::Output>;

    /// Queue a task, or hand it back if the executor is shut down or its
    /// bounded queue is full.
    fn try_submit(&self, task: T) -> Result<Handle<T::Output>, SubmitError<T>>;

    /// How many tasks the executor runs at once; `map` keeps a small multiple
    /// of this in flight.
    fn parallelism(&self) -> usize;

    /// Run every task and yield the outcomes in input order.
    ///
    /// Lazy: at most `window` tasks are in flight (queued or running), so an
    /// endless iterator works in bounded memory. Dropping the iterator cancels
    /// the tasks that have not started.
    fn map_tasks<I>(&self, tasks: I, window: usize) -> Map<'_, Self, T, I::IntoIter>
    where
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        Map {
            executor: self,
            tasks: tasks.into_iter(),
            window: window.max(1),
            in_flight: VecDeque::new(),
        }
    }

    /// Like [`map_tasks`](Executor::map_tasks), but yield each outcome as soon
    /// as its task finishes, with the task's input position.
    fn map_tasks_unordered<I>(
        &self,
        tasks: I,
        window: usize,
    ) -> MapUnordered<'_, Self, T, I::IntoIter>
    where
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        MapUnordered {
            executor: self,
            tasks: tasks.into_iter(),
            window: window.max(1),
            next_index: 0,
            completed: AsCompleted::new(),
        }
    }
}

/// The default in-flight window of `map`: enough to keep every worker busy
/// while results are consumed.
pub fn default_window(parallelism: usize) -> usize {
    parallelism.saturating_mul(4).max(16)
}

/// The iterator of [`Executor::map_tasks`]: outcomes in input order.
#[derive(Debug)]
pub struct Map<'a, E, T: Task, I> {
    executor: &'a E,
    tasks: I,
    window: usize,
    in_flight: VecDeque<Handle<T::Output>>,
}

impl<E, T, I> Iterator for Map<'_, E, T, I>
where
    E: Executor<T>,
    T: Task,
    I: Iterator<Item = T>,
{
    type Item = Result<T::Output, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.in_flight.len() < self.window {
            match self.tasks.next() {
                Some(task) => self.in_flight.push_back(self.executor.submit(task)),
                None => break,
            }
        }
        self.in_flight.pop_front().map(Handle::result)
    }
}

impl<E, T: Task, I> Drop for Map<'_, E, T, I> {
    fn drop(&mut self) {
        for handle in &self.in_flight {
            handle.cancel();
        }
    }
}

/// The iterator of [`Executor::map_tasks_unordered`]: `(input position, outcome)`
/// in completion order.
#[derive(Debug)]
pub struct MapUnordered<'a, E, T: Task, I> {
    executor: &'a E,
    tasks: I,
    window: usize,
    next_index: usize,
    completed: AsCompleted<T::Output>,
}

impl<E, T, I> Iterator for MapUnordered<'_, E, T, I>
where
    E: Executor<T>,
    T: Task,
    I: Iterator<Item = T>,
{
    type Item = (usize, Result<T::Output, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.completed.remaining() < self.window {
            match self.tasks.next() {
                Some(task) => {
                    let handle = self.executor.submit(task);
                    self.completed.push(self.next_index, handle);
                    self.next_index += 1;
                }
                None => break,
            }
        }
        self.completed
            .next()
            .map(|(index, handle)| (index, handle.result()))
    }
}

impl<E, T: Task, I> Drop for MapUnordered<'_, E, T, I> {
    fn drop(&mut self) {
        self.completed.cancel_all();
    }
}

/// Handles yielded as their tasks finish, like Python's `as_completed`.
///
/// Each item is `(position, handle)`, where `position` is the handle's place
/// in the input; its `result()` returns at once.
///
/// # Examples
///
/// ```
/// use troika::{ThreadPool, as_completed};
///
/// let pool = ThreadPool::new(2).unwrap();
/// let handles: Vec<_> = [30u64, 10, 20]
///     .into_iter()
///     .map(|ms| pool.submit(move || { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }))
///     .collect();
/// let mut total = 0;
/// for (position, handle) in as_completed(handles) {
///     assert!(position < 3);
///     total += handle.result().unwrap();
/// }
/// assert_eq!(total, 60);
/// ```
pub fn as_completed<T, I>(handles: I) -> AsCompleted<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = Handle<T>>,
{
    let mut completed = AsCompleted::new();
    for (index, handle) in handles.into_iter().enumerate() {
        completed.push(index, handle);
    }
    completed
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    slots: Vec<Option<Handle<T>>>,
    /// The caller-visible position of each slot.
    positions: Vec<usize>,
    remaining: usize,
    tx: Sender<usize>,
    rx: Receiver<usize>,
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<T: Send + 'static> AsCompleted<T> {
    fn new() -> AsCompleted<T> {
        let (tx, rx) = crossbeam_channel::unbounded();
        AsCompleted {
            slots: Vec::new(),
            positions: Vec::new(),
            remaining: 0,
            tx,
            rx,
        }
    }

    fn push(&mut self, index: usize, handle: Handle<T>) {
        let tx = self.tx.clone();
        let slot = self.slots.len();
        handle.add_done_callback(move |_| {
            // The receiver may be gone if the iterator was dropped: fine.
            let _ = tx.send(slot);
        });
        self.slots.push(Some(handle));
        self.positions.push(index);
        self.remaining += 1;
    }

    /// How many handles have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next finished handle, waiting at most `timeout`; `None` when the
    /// time runs out or no handle is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = troika::ThreadPool::new(1).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let stuck = pool.submit(move || wait.recv().is_ok());
    /// let mut done = troika::as_completed([stuck]);
    /// assert!(done.next_timeout(Duration::from_millis(1)).is_none());
    /// release.send(()).unwrap();
    /// let (position, handle) = done.next_timeout(Duration::from_secs(60)).unwrap();
    /// assert_eq!(position, 0);
    /// assert!(handle.result().unwrap());
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<(usize, Handle<T>)> {
        if self.remaining == 0 {
            return None;
        }
        let slot = self.rx.recv_timeout(timeout).ok()?;
        self.take(slot)
    }

    fn take(&mut self, slot: usize) -> Option<(usize, Handle<T>)> {
        let handle = self.slots.get_mut(slot)?.take()?;
        self.remaining -= 1;
        Some((self.positions[slot], handle))
    }

    fn cancel_all(&self) {
        for handle in self.slots.iter().flatten() {
            handle.cancel();
        }
    }
}

impl<T: Send + 'static> Iterator for AsCompleted<T> {
    type Item = (usize, Handle<T>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // Every pushed handle's callback sends exactly once, and we hold a
        // sender, so this cannot disconnect while handles remain.
        let slot = self.rx.recv().ok()?;
        self.take(slot)
    }
}

/// When [`wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// When every task is done.
    All,
    /// When any task is done.
    FirstCompleted,
    /// When any task fails, or every task is done.
    FirstError,
}

/// What [`wait`] found: positions of finished and unfinished handles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitOutcome {
    /// Positions (in the input slice) of handles whose task is done.
    pub done: Vec<usize>,
    /// Positions of handles whose task is not done yet.
    pub pending: Vec<usize>,
}

/// Wait for handles as Python's `concurrent.futures.wait` does.
///
/// Returns when `mode` is satisfied or `timeout` (if any) runs out; the handles
/// stay with the caller.
///
/// # Examples
///
/// ```
/// use troika::{ThreadPool, WaitMode, wait};
///
/// let pool = ThreadPool::new(2).unwrap();
/// let handles = vec![pool.submit(|| 1), pool.submit(|| 2)];
/// let outcome = wait(&handles, WaitMode::All, None);
/// assert_eq!(outcome.done.len(), 2);
/// assert!(outcome.pending.is_empty());
/// ```
pub fn wait<T: Send + 'static>(
    handles: &[Handle<T>],
    mode: WaitMode,
    timeout: Option<Duration>,
) -> WaitOutcome {
    #[derive(Default)]
    struct Tally {
        done: usize,
        failed: usize,
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let shared = Arc::new((Mutex::new(Tally::default()), Condvar::new()));
    for handle in handles {
        let shared = Arc::clone(&shared);
        handle.add_done_callback(move |outcome| {
            let mut tally = shared.0.lock();
            tally.done += 1;
            tally.failed += usize::from(outcome.is_err());
            shared.1.notify_all();
        });
    }
    let total = handles.len();
    let satisfied = |tally: &Tally| match mode {
        WaitMode::All => tally.done == total,
        WaitMode::FirstCompleted => tally.done > 0 || total == 0,
        WaitMode::FirstError => tally.failed > 0 || tally.done == total,
    };
    {
        let mut tally = shared.0.lock();
        while !satisfied(&tally) {
            match deadline {
                None => shared.1.wait(&mut tally),
                Some(deadline) => {
                    if shared.1.wait_until(&mut tally, deadline).timed_out() {
                        break;
                    }
                }
            }
        }
    }
    let (done, pending) = (0..total).partition(|&i| handles[i].is_done());
    WaitOutcome { done, pending }
}
