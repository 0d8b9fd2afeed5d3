//! [`Queue`]: a thread-safe FIFO, LIFO or priority queue with `task_done` /
//! `join` (Python's `queue.Queue`, `queue.LifoQueue`, `queue.PriorityQueue`).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex};

use super::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, TaskDoneError, TryGetError, TryPutError,
};

/// The order in which a [`Queue`] hands out its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// First in, first out (Python's `queue.Queue`).
    Fifo,
    /// Last in, first out (Python's `queue.LifoQueue`).
    Lifo,
    /// Smallest first (Python's `queue.PriorityQueue`); equal items come out
    /// in the order they were put.
    Priority,
}

/// A binary min-heap ordered by a comparison captured when the queue was
/// made, so that `Queue<T>` itself needs no `T: Ord`. Ties are broken by a
/// sequence number, so equal priorities come out first-in first-out.
struct Heap<T> {
    items: Vec<(T, u64)>,
    next_seq: u64,
    less: fn(&T, &T) -> bool,
}

impl<T> Heap<T> {
    fn before(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.items[a], &self.items[b]);
        (self.less)(&x.0, &y.0) || (!(self.less)(&y.0, &x.0) && x.1 < y.1)
    }

    fn push(&mut self, item: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.items.push((item, seq));
        let mut child = self.items.len() - 1;
        while child > 0 {
            let parent = (child - 1) / 2;
            if !self.before(child, parent) {
                break;
            }
            self.items.swap(child, parent);
            child = parent;
        }
    }

    fn pop(&mut self) -> Option<T> {
        let last = self.items.len().checked_sub(1)?;
        self.items.swap(0, last);
        let top = self.items.pop().map(|(item, _)| item);
        let len = self.items.len();
        let mut parent = 0;
        loop {
            let left = 2 * parent + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.before(right, left) {
                right
            } else {
                left
            };
            if !self.before(child, parent) {
                break;
            }
            self.items.swap(child, parent);
            parent = child;
        }
        top
    }
}

enum Store<T> {
    Fifo(VecDeque<T>),
    Lifo(Vec<T>),
    Priority(Heap<T>),
}

impl<T> Store<T> {
    fn push(&mut self, item: T) {
        match self {
            Store::Fifo(items) => items.push_back(item),
            Store::Lifo(items) => items.push(item),
            Store::Priority(heap) => heap.push(item),
        }
    }

    fn pop(&mut self) -> Option<T> {
        match self {
            Store::Fifo(items) => items.pop_front(),
            Store::Lifo(items) => items.pop(),
            Store::Priority(heap) => heap.pop(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Fifo(items) => items.len(),
            Store::Lifo(items) => items.len(),
            Store::Priority(heap) => heap.items.len(),
        }
    }
}

struct State<T> {
    items: Store<T>,
    /// Items put and not yet marked done with `task_done`.
    unfinished: usize,
    /// Set by [`Queue::close`]; never cleared.
    closed: bool,
}

/// Why an internal put or get stopped, before it is shaped into the error
/// type of the public operation.
enum Stop {
    /// Would block (`try_*`) or the deadline passed (`*_timeout`).
    NotNow,
    Closed,
}

/// How long an operation may block.
#[derive(Clone, Copy)]
enum Block {
    No,
    Forever,
    Until(Instant),
}

impl Block {
    fn timeout(timeout: Duration) -> Block {
        Instant::now()
            .checked_add(timeout)
            .map_or(Block::Forever, Block::Until)
    }
}

/// A thread-safe queue: many producers [`put`](Queue::put), many consumers
/// [`get`](Queue::get) (Python's `queue.Queue`, `LifoQueue` and
/// `PriorityQueue` in one type).
///
/// - **Order**: [`Queue::new`] is FIFO, [`Queue::lifo`] is LIFO and
///   [`Queue::priority`] hands out the smallest item first (needs `T: Ord`;
///   put `(priority, item)` tuples as in Python). Equal priorities come out in
///   the order they were put, which Python does not promise.
/// - **Bound**: `maxsize` items at most; `0` means unbounded. A full queue
///   blocks [`put`](Queue::put).
/// - **Three ways to wait**, as everywhere in troika: blocking
///   ([`put`](Queue::put) / [`get`](Queue::get)), with a timeout
///   ([`put_timeout`](Queue::put_timeout) / [`get_timeout`](Queue::get_timeout))
///   and not at all ([`try_put`](Queue::try_put) / [`try_get`](Queue::try_get),
///   Python's `put_nowait` / `get_nowait`). Each has its own error type,
///   which says exactly what can happen: [`TryPutError`]`::{Full, Closed}`,
///   [`PutTimeoutError`]`::{Timeout, Closed}`, [`PutError`] (closed) and
///   the same three for gets; a failed put hands the item back.
/// - **Closing**: [`close`](Queue::close) (Python 3.13's `shutdown()`) makes
///   puts fail and lets getters drain the queue, then fail — an end of work
///   that needs no sentinel item.
/// - **Work tracking**: every put counts one unfinished task; a consumer
///   calls [`task_done`](Queue::task_done) when it has *processed* an item,
///   and [`join`](Queue::join) waits until the count is back to zero. Calling
///   `task_done` too often is a [`TaskDoneError`], not a panic.
///
/// Share it between threads with an `Arc`. Built on a `parking_lot` mutex and
/// three condition variables (not empty, not full, all done), like CPython's.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use troika::sync::{Queue, Thread};
///
/// let q = Arc::new(Queue::new(0));
/// let consumer = {
///     let q = Arc::clone(&q);
///     Thread::spawn("consumer", move || {
///         let mut sum = 0;
///         while let Ok(n) = q.get() {
///             sum += n;
///             q.task_done().unwrap();
///         }
///         sum // the queue was closed and drained
///     })
///     .unwrap()
/// };
/// for n in 1..=10 {
///     q.put(n).unwrap();
/// }
/// q.join(); // every number has been processed
/// q.close();
/// assert_eq!(consumer.join().unwrap(), 55);
///
/// let pq = Queue::priority(0);
/// for job in [(3, "low"), (1, "urgent"), (2, "normal")] {
///     pq.put(job).unwrap();
/// }
/// assert_eq!(pq.get(), Ok((1, "urgent")));
/// ```
pub struct Queue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
    maxsize: usize,
    kind: QueueKind,
}

impl<T> Queue<T> {
    fn with_store(maxsize: usize, kind: QueueKind, items: Store<T>) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items,
                unfinished: 0,
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
            maxsize,
            kind,
        }
    }

    /// A first-in first-out queue holding at most `maxsize` items (`0`: no
    /// limit), as Python's `queue.Queue(maxsize)`.
    pub fn new(maxsize: usize) -> Queue<T> {
        Queue::with_store(maxsize, QueueKind::Fifo, Store::Fifo(VecDeque::new()))
    }

    /// An unbounded first-in first-out queue; same as `Queue::new(0)`.
    pub fn unbounded() -> Queue<T> {
        Queue::new(0)
    }

    /// A last-in first-out queue (a stack), as Python's
    /// `queue.LifoQueue(maxsize)`.
    pub fn lifo(maxsize: usize) -> Queue<T> {
        Queue::with_store(maxsize, QueueKind::Lifo, Store::Lifo(Vec::new()))
    }

    /// A queue that hands out the smallest item first, as Python's
    /// `queue.PriorityQueue(maxsize)`; ties come out first-in first-out.
    pub fn priority(maxsize: usize) -> Queue<T>
    where
        T: Ord,
    {
        Queue::with_store(
            maxsize,
            QueueKind::Priority,
            Store::Priority(Heap {
                items: Vec::new(),
                next_seq: 0,
                less: |a, b| a < b,
            }),
        )
    }

    /// The order this queue hands out items in.
    pub fn kind(&self) -> QueueKind {
        self.kind
    }

    /// The most items the queue holds; `0` means unbounded.
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// How many items are in the queue now (Python's `qsize()`). Another
    /// thread may change it before you act on it, as in Python.
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Whether the queue holds no items right now (Python's `empty()`).
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is at its `maxsize` right now (Python's `full()`;
    /// never true if unbounded).
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.maxsize > 0 && self.len() >= self.maxsize
    }

    /// How many put items have not yet been marked done with
    /// [`task_done`](Queue::task_done).
    pub fn unfinished_tasks(&self) -> usize {
        self.state.lock().unfinished
    }

    fn put_inner(&self, item: T, block: Block) -> Result<(), (Stop, T)> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err((Stop::Closed, item));
            }
            if self.maxsize == 0 || state.items.len() < self.maxsize {
                break;
            }
            match block {
                Block::No => return Err((Stop::NotNow, item)),
                Block::Forever => self.not_full.wait(&mut state),
                Block::Until(deadline) => {
                    if self.not_full.wait_until(&mut state, deadline).timed_out()
                        && !state.closed
                        && state.items.len() >= self.maxsize
                    {
                        return Err((Stop::NotNow, item));
                    }
                }
            }
        }
        state.items.push(item);
        state.unfinished = state.unfinished.saturating_add(1);
        drop(state);
        self.not_empty.notify_one();
        Ok(())
    }

    fn get_inner(&self, block: Block) -> Result<T, Stop> {
        let mut state = self.state.lock();
        loop {
            if let Some(item) = state.items.pop() {
                drop(state);
                if self.maxsize > 0 {
                    self.not_full.notify_one();
                }
                return Ok(item);
            }
            if state.closed {
                return Err(Stop::Closed);
            }
            match block {
                Block::No => return Err(Stop::NotNow),
                Block::Forever => self.not_empty.wait(&mut state),
                Block::Until(deadline) => {
                    if self.not_empty.wait_until(&mut state, deadline).timed_out()
                        && !state.closed
                        && state.items.len() == 0
                    {
                        return Err(Stop::NotNow);
                    }
                }
            }
        }
    }

    /// Puts `item` at the back, blocking while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError`], with the item, if the queue is or becomes
    /// [closed](Queue::close) (Python 3.13's `queue.ShutDown`).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::Queue;
    ///
    /// let q = Queue::new(2);
    /// q.put("a").unwrap();
    /// q.put("b").unwrap(); // a third put would wait for a get
    /// assert_eq!(q.len(), 2);
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_inner(item, Block::Forever)
            .map_err(|(_, item)| PutError(item))
    }

    /// Puts `item`, waiting at most `timeout` for room (Python's
    /// `put(item, timeout=…)`).
    ///
    /// # Errors
    ///
    /// [`PutTimeoutError::Timeout`] if the queue stayed full,
    /// [`PutTimeoutError::Closed`] if it is or becomes closed; both hand the
    /// item back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::Queue;
    ///
    /// let q = Queue::new(1);
    /// q.put_timeout('x', Duration::from_secs(1)).unwrap();
    /// let err = q.put_timeout('y', Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!(err.into_inner(), 'y');
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.put_inner(item, Block::timeout(timeout))
            .map_err(|(stop, item)| match stop {
                Stop::NotNow => PutTimeoutError::Timeout(item),
                Stop::Closed => PutTimeoutError::Closed(item),
            })
    }

    /// Puts `item` only if there is room now (Python's `put_nowait`).
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if the queue is full, [`TryPutError::Closed`] if
    /// it is closed; both hand the item back.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::{Queue, TryPutError};
    ///
    /// let q = Queue::new(1);
    /// q.try_put(1).unwrap();
    /// assert_eq!(q.try_put(2), Err(TryPutError::Full(2)));
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_inner(item, Block::No)
            .map_err(|(stop, item)| match stop {
                Stop::NotNow => TryPutError::Full(item),
                Stop::Closed => TryPutError::Closed(item),
            })
    }

    /// Takes the next item, blocking while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError`] once the queue is [closed](Queue::close) and every item
    /// put before the close has been taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{GetError, Queue, Thread};
    ///
    /// let q = Arc::new(Queue::new(0));
    /// let producer = {
    ///     let q = Arc::clone(&q);
    ///     Thread::spawn("producer", move || {
    ///         for n in 1..=3 {
    ///             q.put(n).unwrap();
    ///         }
    ///         q.close(); // no sentinel needed: getters drain, then stop
    ///     })
    ///     .unwrap()
    /// };
    /// let mut sum = 0;
    /// while let Ok(n) = q.get() {
    ///     sum += n;
    /// }
    /// producer.join().unwrap();
    /// assert_eq!(sum, 6);
    /// assert_eq!(q.get(), Err(GetError));
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        loop {
            match self.get_inner(Block::Forever) {
                Ok(item) => return Ok(item),
                Err(Stop::Closed) => return Err(GetError),
                // A blocking get has no deadline; this is not reached.
                Err(Stop::NotNow) => {}
            }
        }
    }

    /// Takes the next item, waiting at most `timeout` (Python's
    /// `get(timeout=…)`).
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`] if the queue stayed empty,
    /// [`GetTimeoutError::Closed`] if it is closed and drained.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::Queue;
    ///
    /// let q = Queue::new(0);
    /// q.put(7).unwrap();
    /// assert_eq!(q.get_timeout(Duration::from_secs(1)), Ok(7));
    /// assert!(q.get_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_inner(Block::timeout(timeout))
            .map_err(|stop| match stop {
                Stop::NotNow => GetTimeoutError::Timeout,
                Stop::Closed => GetTimeoutError::Closed,
            })
    }

    /// Takes the next item if there is one now (Python's `get_nowait`).
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`] if the queue is empty,
    /// [`TryGetError::Closed`] if it is closed and drained.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::{Queue, TryGetError};
    ///
    /// let q = Queue::lifo(0);
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.try_get(), Ok(2));
    /// assert_eq!(q.try_get(), Ok(1));
    /// assert_eq!(q.try_get(), Err(TryGetError::Empty));
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_inner(Block::No).map_err(|stop| match stop {
            Stop::NotNow => TryGetError::Empty,
            Stop::Closed => TryGetError::Closed,
        })
    }

    /// Closes the queue (Python 3.13's `Queue.shutdown()`; the same call as
    /// [`ipc::Queue::close`](crate::ipc::Queue::close)): from now on every
    /// put fails, and gets return the items still queued, then fail. Every
    /// thread blocked in a put or get wakes up to find it so. Closing twice
    /// is harmless; a close cannot be undone. [`join`](Queue::join) and
    /// [`task_done`](Queue::task_done) are not affected.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::{GetError, Queue};
    ///
    /// let q = Queue::new(0);
    /// q.put("last").unwrap();
    /// q.close();
    /// assert!(q.is_closed());
    /// assert!(q.put("too late").is_err());
    /// assert_eq!(q.get(), Ok("last"));
    /// assert_eq!(q.get(), Err(GetError));
    /// ```
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Whether the queue was [closed](Queue::close).
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// A blocking iterator over the items: each `next` is a
    /// [`get`](Queue::get), and the iteration ends when the queue is closed
    /// and drained (as [`ipc::Queue::iter`](crate::ipc::Queue::iter)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Queue, Thread};
    ///
    /// let q = Arc::new(Queue::new(2));
    /// let producer = {
    ///     let q = Arc::clone(&q);
    ///     Thread::spawn("producer", move || {
    ///         for word in ["one", "two", "three"] {
    ///             q.put(word).unwrap();
    ///         }
    ///         q.close();
    ///     })
    ///     .unwrap()
    /// };
    /// let words: Vec<_> = q.iter().collect();
    /// producer.join().unwrap();
    /// assert_eq!(words, ["one", "two", "three"]);
    /// ```
    pub fn iter(&self) -> QueueIter<'_, T> {
        QueueIter { queue: self }
    }

    /// Marks one item taken with `get` as processed. When every item put has
    /// been marked, [`join`](Queue::join) returns.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] if there is no unfinished item (called more times
    /// than items were put); the count stays at zero.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let mut state = self.state.lock();
        if state.unfinished == 0 {
            return Err(TaskDoneError);
        }
        state.unfinished -= 1;
        if state.unfinished == 0 {
            self.all_done.notify_all();
        }
        Ok(())
    }

    /// Blocks until every item put has been marked with
    /// [`task_done`](Queue::task_done). Returns at once if none is unfinished.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Queue, Thread};
    ///
    /// let q = Arc::new(Queue::new(0));
    /// let worker = {
    ///     let q = Arc::clone(&q);
    ///     Thread::spawn("worker", move || {
    ///         for job in &*q {
    ///             let _: u32 = job; // ... process it ...
    ///             q.task_done().unwrap(); // then say so
    ///         }
    ///     })
    ///     .unwrap()
    /// };
    /// for job in 0..5 {
    ///     q.put(job).unwrap();
    /// }
    /// q.join(); // all 5 processed, not merely taken
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// q.close();
    /// worker.join().unwrap();
    /// ```
    pub fn join(&self) {
        let mut state = self.state.lock();
        while state.unfinished > 0 {
            self.all_done.wait(&mut state);
        }
    }

    /// Like [`join`](Queue::join) but gives up after `timeout`; returns
    /// whether every item was done (`false`: the timeout passed first), as
    /// [`Event::wait_timeout`](super::Event::wait_timeout) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::Queue;
    ///
    /// let q = Queue::new(0);
    /// q.put(()).unwrap();
    /// assert!(!q.join_timeout(Duration::from_millis(5))); // not yet done
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert!(q.join_timeout(Duration::from_millis(5)));
    /// ```
    #[must_use = "false means some items were still unfinished"]
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let Block::Until(deadline) = Block::timeout(timeout) else {
            self.join();
            return true;
        };
        let mut state = self.state.lock();
        while state.unfinished > 0 {
            if self.all_done.wait_until(&mut state, deadline).timed_out() && state.unfinished > 0 {
                return false;
            }
        }
        true
    }
}

/// The blocking iterator of [`Queue::iter`].
#[derive(Debug)]
pub struct QueueIter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T> Iterator for QueueIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.get().ok()
    }
}

impl<'a, T> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = QueueIter<'a, T>;

    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

impl<T> Default for Queue<T> {
    /// An unbounded FIFO queue.
    fn default() -> Queue<T> {
        Queue::unbounded()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Queue")
            .field("kind", &self.kind)
            .field("maxsize", &self.maxsize)
            .field("qsize", &state.items.len())
            .field("unfinished_tasks", &state.unfinished)
            .field("closed", &state.closed)
            .finish()
    }
}
