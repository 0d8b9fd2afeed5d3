//! The `multiprocessing.Pool` calls on [`ThreadPool`]: `apply`, `apply_async`,
//! `starmap`, `imap` and `imap_unordered` with a chunk size, and
//! `close` / `join` / `terminate`.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use super::pool::ThreadPool;
use crate::futures::{ConfigError, Executor, Handle, TaskError};

/// A function called with its arguments spread out of a tuple, for
/// [`ThreadPool::starmap`] (Python's `Pool.starmap`).
pub trait StarFn<Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output: Send + 'static;
    /// Call the function with the tuple's fields as its arguments.
    fn call(&self, args: Args) -> Self::Output;
}

macro_rules! star_fn {
    ($($arg:ident),+) => {
        impl<Func, Out, $($arg),+> StarFn<($($arg,)+)> for Func
        where
            Func: Fn($($arg),+) -> Out + Send + Sync + 'static,
            Out: Send + 'static,
        {
            type Output = Out;
            #[allow(non_snake_case)]
            fn call(&self, ($($arg,)+): ($($arg,)+)) -> Out {
                self($($arg),+)
            }
        }
    };
}
star_fn!(A);
star_fn!(A, B);
star_fn!(A, B, C);
star_fn!(A, B, C, D);

/// Pulls `size` items at a time from an iterator, lazily.
#[derive(Debug)]
pub(crate) struct Chunks<I> {
    items: I,
    size: usize,
}

impl<I: Iterator> Iterator for Chunks<I> {
    type Item = Vec<I::Item>;

    fn next(&mut self) -> Option<Vec<I::Item>> {
        let chunk: Vec<_> = self.items.by_ref().take(self.size).collect();
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// Split `items` into chunks of `size`; a zero size is a configuration error.
pub(crate) fn chunks<I: IntoIterator>(
    items: I,
    size: usize,
) -> Result<Chunks<I::IntoIter>, ConfigError> {
    if size == 0 {
        return Err(ConfigError("the chunk size must be at least 1".into()));
    }
    Ok(Chunks {
        items: items.into_iter(),
        size,
    })
}

/// Run `f` over one chunk, catching a panic per item so each item gets its own outcome.
fn run_chunk<A, R>(f: &(impl Fn(A) -> R + ?Sized), chunk: Vec<A>) -> Vec<Result<R, TaskError>> {
    chunk
        .into_iter()
        .map(|item| {
            catch_unwind(AssertUnwindSafe(|| f(item))).map_err(|p| TaskError::panicked(&*p))
        })
        .collect()
}

/// Flatten chunk outcomes into item outcomes: a chunk that failed as a whole
/// (cancelled, shut down) fails each of its items with the same error.
fn flatten<R>(
    chunk: Result<Vec<Result<R, TaskError>>, TaskError>,
    len: usize,
) -> Vec<Result<R, TaskError>> {
    match chunk {
        Ok(items) => items,
        Err(e) => (0..len).map(|_| Err(e.clone())).collect(),
    }
}

type ChunkTask<R> = Box<dyn FnOnce() -> Vec<Result<R, TaskError>> + Send>;

/// One task per chunk of `items`, and the length of every chunk made so far
/// (filled lazily as the tasks are pulled), so a chunk that fails as a whole
/// still yields one outcome per item.
#[allow(clippy::type_complexity)]
fn chunk_tasks<A, R, F, I>(
    f: F,
    items: I,
    chunksize: usize,
) -> Result<(impl Iterator<Item = ChunkTask<R>>, Rc<RefCell<Vec<usize>>>), ConfigError>
where
    F: Fn(A) -> R + Send + Sync + 'static,
    A: Send + 'static,
    R: Send + 'static,
    I: Iterator<Item = A>,
{
    let f = Arc::new(f);
    let lens = Rc::new(RefCell::new(Vec::new()));
    let record = Rc::clone(&lens);
    let tasks = chunks(items, chunksize)?.map(move |chunk| {
        record.borrow_mut().push(chunk.len());
        let f = Arc::clone(&f);
        Box::new(move || run_chunk(&*f, chunk)) as ChunkTask<R>
    });
    Ok((tasks, lens))
}

impl ThreadPool {
    /// Run `f` on the pool and wait for its value (Python's `Pool.apply`).
    pub fn apply<F, R>(&self, f: F) -> Result<R, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f).result()
    }

    /// Run `f` on the pool without waiting (Python's `Pool.apply_async`); the
    /// same as [`submit`](ThreadPool::submit).
    pub fn apply_async<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f)
    }

    /// Like [`map`](ThreadPool::map), with the function called on each
    /// tuple's fields (Python's `Pool.starmap`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let sums: Vec<i32> = pool
    ///     .starmap(|a: i32, b: i32| a + b, [(1, 2), (3, 4)])
    ///     .map(Result::unwrap)
    ///     .collect();
    /// assert_eq!(sums, [3, 7]);
    /// ```
    pub fn starmap<Args, F, I>(
        &self,
        f: F,
        items: I,
    ) -> impl Iterator<Item = Result<F::Output, TaskError>> + '_
    where
        F: StarFn<Args>,
        Args: Send + 'static,
        I: IntoIterator<Item = Args>,
        I::IntoIter: 'static,
    {
        self.map(move |args| f.call(args), items)
    }

    /// Ordered, lazy map that sends `chunksize` items per task (Python's
    /// `Pool.imap`): fewer, larger tasks for cheap functions.
    ///
    /// Fails at once if `chunksize` is zero. A panic fails only its own item.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let doubled: Vec<u32> = pool.imap(|x: u32| 2 * x, 0..1000, 100).unwrap().map(Result::unwrap).collect();
    /// assert_eq!(doubled[999], 1998);
    /// assert!(pool.imap(|x: u32| x, 0..1, 0).is_err());
    /// ```
    pub fn imap<A, R, F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<impl Iterator<Item = Result<R, TaskError>> + '_, ConfigError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let (tasks, lens) = chunk_tasks(f, items.into_iter(), chunksize)?;
        let window = crate::default_window(self.workers());
        let mut next_chunk = 0;
        Ok(self.map_tasks(tasks, window).flat_map(move |chunk| {
            let len = lens.borrow()[next_chunk];
            next_chunk += 1;
            flatten(chunk, len)
        }))
    }

    /// Like [`imap`](ThreadPool::imap), yielding `(input position, outcome)`
    /// in completion order (Python's `Pool.imap_unordered`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let mut seen: Vec<usize> = pool
    ///     .imap_unordered(|x: u32| x * 2, 0..10, 3)
    ///     .unwrap()
    ///     .map(|(position, outcome)| {
    ///         assert_eq!(outcome.unwrap(), 2 * position as u32);
    ///         position
    ///     })
    ///     .collect();
    /// seen.sort();
    /// assert_eq!(seen, (0..10).collect::<Vec<_>>());
    /// ```
    pub fn imap_unordered<A, R, F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<impl Iterator<Item = (usize, Result<R, TaskError>)> + '_, ConfigError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
    {
        let (tasks, lens) = chunk_tasks(f, items.into_iter(), chunksize)?;
        let window = crate::default_window(self.workers());
        Ok(self
            .map_tasks_unordered(tasks, window)
            .flat_map(move |(chunk_index, chunk)| {
                let first = chunk_index * chunksize;
                let len = lens.borrow()[chunk_index];
                flatten(chunk, len)
                    .into_iter()
                    .enumerate()
                    .map(move |(offset, outcome)| (first + offset, outcome))
            }))
    }

    /// Stop accepting tasks; queued ones still run (Python's `Pool.close`).
    pub fn close(&self) {
        self.shutdown(false, false);
    }

    /// Wait for every worker to exit (Python's `Pool.join`). Closes the pool
    /// first if it is still open, where Python would raise.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let handle = pool.apply_async(|| 40 + 2);
    /// pool.close(); // no new tasks; the queued one still runs
    /// pool.join();
    /// assert_eq!(handle.result().unwrap(), 42);
    /// assert!(pool.apply(|| 0).unwrap_err().is_shut_down());
    /// ```
    pub fn join(&self) {
        self.shutdown(true, false);
    }

    /// Stop at once, as far as threads allow (Python's `Pool.terminate`):
    /// accept no more tasks, cancel the queued ones, and set the
    /// [`CancelToken`](crate::CancelToken) of every running task submitted
    /// with [`submit_with_token`](ThreadPool::submit_with_token) (also of
    /// one that starts during the call). It does not wait.
    ///
    /// A thread cannot be stopped safely from outside, so a running task
    /// ends only when it returns: one without a token, or that does not look
    /// at it, runs to its end. Follow with [`join`](ThreadPool::join) to wait
    /// for that. The process pool kills its running tasks instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ThreadPool;
    ///
    /// let pool = ThreadPool::new(1).unwrap();
    /// let (started, wait_start) = std::sync::mpsc::channel();
    /// let spinner = pool.submit_with_token(move |token| {
    ///     started.send(()).unwrap();
    ///     while !token.is_cancelled() {
    ///         std::thread::yield_now();
    ///     }
    ///     "stopped"
    /// });
    /// wait_start.recv().unwrap();
    /// let queued = pool.submit(|| "never runs");
    /// pool.terminate();
    /// pool.join();
    /// assert_eq!(spinner.result().unwrap(), "stopped");
    /// assert!(queued.result().unwrap_err().is_cancelled());
    /// ```
    pub fn terminate(&self) {
        self.shutdown(false, true);
        self.shared().cancel_running();
    }
}
