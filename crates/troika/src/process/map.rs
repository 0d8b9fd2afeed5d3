//! `map` over a process pool, and the `multiprocessing.Pool` calls.
//!
//! Items travel in chunks: one message carries `chunksize` arguments to a
//! worker and one reply brings their outcomes back, so trivial items cost a
//! few nanoseconds of encoding each instead of a round trip.

use crate::futures::ConfigError;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;

use crossbeam_channel::{Receiver, Sender};

use super::pool::ProcessPool;
use super::registry::RemoteFn;
use super::task::ChunkOutcome;
use crate::futures::{Handle, TaskError, default_window};

/// The largest chunk `map` picks by itself.
const AUTO_CHUNK_MAX: usize = 4096;

/// Outcomes of a chunk that failed as a whole (its worker died, it timed out,
/// its arguments could not be encoded): every item gets the error.
fn spread<R>(outcome: Result<ChunkOutcome<R>, TaskError>, len: usize) -> ChunkOutcome<R> {
    match outcome {
        Ok(mut items) => {
            while items.len() < len {
                items.push(Err(TaskError::new(crate::ErrorKind::Failed(
                    "the worker returned fewer results than items".into(),
                ))));
            }
            items.truncate(len);
            items
        }
        Err(err) => (0..len).map(|_| Err(err.clone())).collect(),
    }
}

/// The iterator of [`ProcessPool::map`] and [`ProcessPool::imap`]: outcomes in
/// input order.
///
/// Lazy: at most a window of chunks is in flight, so an endless iterator works
/// in bounded memory. Dropping it cancels the chunks in flight (a running
/// chunk's worker is killed and replaced).
pub struct ProcessMap<'a, F: RemoteFn, I> {
    pool: &'a ProcessPool,
    items: I,
    chunksize: usize,
    window: usize,
    in_flight: VecDeque<(usize, Handle<ChunkOutcome<F::Output>>)>,
    ready: std::vec::IntoIter<Result<F::Output, TaskError>>,
    _f: PhantomData<F>,
}

impl<F: RemoteFn, I> std::fmt::Debug for ProcessMap<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMap")
            .field("function", &F::NAME)
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .finish()
    }
}

impl<F, I> ProcessMap<'_, F, I>
where
    F: RemoteFn,
    I: Iterator<Item = F::Arg>,
{
    fn fill(&mut self) {
        while self.in_flight.len() < self.window {
            let chunk: Vec<F::Arg> = self.items.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let handle = self.pool.submit_chunk::<F>(&chunk);
            self.in_flight.push_back((chunk.len(), handle));
        }
    }
}

impl<F, I> Iterator for ProcessMap<'_, F, I>
where
    F: RemoteFn,
    I: Iterator<Item = F::Arg>,
{
    type Item = Result<F::Output, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.next() {
                return Some(item);
            }
            self.fill();
            let (len, handle) = self.in_flight.pop_front()?;
            self.ready = spread(handle.result(), len).into_iter();
            // Keep the workers busy while the caller consumes this chunk.
            self.fill();
        }
    }
}

impl<F: RemoteFn, I> Drop for ProcessMap<'_, F, I> {
    fn drop(&mut self) {
        for (_, handle) in &self.in_flight {
            handle.cancel();
        }
    }
}

/// A chunk in flight: its first input position, its length and its handle.
type InFlightChunk<R> = (usize, usize, Handle<ChunkOutcome<R>>);

/// The iterator of [`ProcessPool::map_unordered`] and
/// [`ProcessPool::imap_unordered`]: `(input position, outcome)` in completion
/// order (chunk by chunk).
pub struct ProcessMapUnordered<'a, F: RemoteFn, I> {
    pool: &'a ProcessPool,
    items: I,
    chunksize: usize,
    window: usize,
    next_index: usize,
    next_chunk: u64,
    /// Chunks in flight: chunk number → (first input position, length, handle).
    in_flight: HashMap<u64, InFlightChunk<F::Output>>,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    ready: VecDeque<(usize, Result<F::Output, TaskError>)>,
}

impl<F: RemoteFn, I> std::fmt::Debug for ProcessMapUnordered<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMapUnordered")
            .field("function", &F::NAME)
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .finish()
    }
}

impl<F, I> ProcessMapUnordered<'_, F, I>
where
    F: RemoteFn,
    I: Iterator<Item = F::Arg>,
{
    fn fill(&mut self) {
        while self.in_flight.len() < self.window {
            let chunk: Vec<F::Arg> = self.items.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let handle = self.pool.submit_chunk::<F>(&chunk);
            let number = self.next_chunk;
            self.next_chunk += 1;
            let tx = self.done_tx.clone();
            handle.add_done_callback(move |_| {
                let _ = tx.send(number);
            });
            self.in_flight
                .insert(number, (self.next_index, chunk.len(), handle));
            self.next_index += chunk.len();
        }
    }
}

impl<F, I> Iterator for ProcessMapUnordered<'_, F, I>
where
    F: RemoteFn,
    I: Iterator<Item = F::Arg>,
{
    type Item = (usize, Result<F::Output, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            self.fill();
            if self.in_flight.is_empty() {
                return None;
            }
            // Every chunk's callback sends once and we hold a sender.
            let number = self.done_rx.recv().ok()?;
            let Some((start, len, handle)) = self.in_flight.remove(&number) else {
                continue;
            };
            let outcomes = spread(handle.result(), len);
            self.ready.extend(
                outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(i, o)| (start + i, o)),
            );
            self.fill();
        }
    }
}

impl<F: RemoteFn, I> Drop for ProcessMapUnordered<'_, F, I> {
    fn drop(&mut self) {
        for (_, _, handle) in self.in_flight.values() {
            handle.cancel();
        }
    }
}

impl ProcessPool {
    fn auto_chunksize(&self, size_hint: (usize, Option<usize>)) -> usize {
        let len = size_hint.1.unwrap_or(size_hint.0);
        (len / (self.workers() * 32)).clamp(1, AUTO_CHUNK_MAX)
    }

    /// Run `f` over `items` in input order, lazily, with a bounded window in
    /// flight.
    ///
    /// Items are sent in chunks whose size is picked from the iterator's
    /// length (at most 4096 items; one item when the length is unknown), so
    /// long and short tasks alike spread over the workers. Use
    /// [`imap`](ProcessPool::imap) to choose the chunk size yourself.
    pub fn map<F, I>(&self, f: F, items: I) -> ProcessMap<'_, F, I::IntoIter>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        let items = items.into_iter();
        let chunksize = self.auto_chunksize(items.size_hint());
        self.imap_unchecked(f, items, chunksize)
    }

    /// Run `f` over `items`, yielding `(input position, outcome)` in completion
    /// order. Chunked like [`map`](ProcessPool::map).
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn negate(x: i64) -> i64 { -x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     let mut outcomes: Vec<(usize, i64)> =
    ///         pool.map_unordered(negate, [1, 2, 3]).map(|(i, r)| (i, r.unwrap())).collect();
    ///     outcomes.sort();
    ///     assert_eq!(outcomes, [(0, -1), (1, -2), (2, -3)]);
    /// }
    /// ```
    pub fn map_unordered<F, I>(&self, f: F, items: I) -> ProcessMapUnordered<'_, F, I::IntoIter>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        let items = items.into_iter();
        let chunksize = self.auto_chunksize(items.size_hint());
        self.imap_unordered_unchecked(f, items, chunksize)
    }

    /// `multiprocessing.Pool.imap`: like [`map`](ProcessPool::map) with an
    /// explicit `chunksize` (items per message). A zero chunk size is a
    /// configuration error, as on the thread pool.
    ///
    /// A failure that strikes a whole chunk (its worker died, it timed out)
    /// is reported for each of its items; a panic fails only its own item, and
    /// so does an argument or result that cannot be encoded or decoded (or
    /// whose `Serialize`/`Deserialize` panics), on either side.
    pub fn imap<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<ProcessMap<'_, F, I::IntoIter>, ConfigError>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        check_chunksize(chunksize)?;
        Ok(self.imap_unchecked(f, items, chunksize))
    }

    fn imap_unchecked<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> ProcessMap<'_, F, I::IntoIter>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        let _ = f;
        ProcessMap {
            pool: self,
            items: items.into_iter(),
            chunksize: chunksize.max(1),
            window: default_window(self.workers()),
            in_flight: VecDeque::new(),
            ready: Vec::new().into_iter(),
            _f: PhantomData,
        }
    }

    /// `multiprocessing.Pool.imap_unordered`, with each outcome's input
    /// position.
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn halve(x: u32) -> u32 { x / 2 }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     let total: u32 = pool
    ///         .imap_unordered(halve, 0..100, 10)
    ///         .unwrap()
    ///         .map(|(_, outcome)| outcome.unwrap())
    ///         .sum();
    ///     assert_eq!(total, (0..100).map(|x| x / 2).sum());
    ///     assert!(pool.imap_unordered(halve, 0..1, 0).is_err()); // chunk size 0
    /// }
    /// ```
    pub fn imap_unordered<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<ProcessMapUnordered<'_, F, I::IntoIter>, ConfigError>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        check_chunksize(chunksize)?;
        Ok(self.imap_unordered_unchecked(f, items, chunksize))
    }

    fn imap_unordered_unchecked<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> ProcessMapUnordered<'_, F, I::IntoIter>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        let _ = f;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        ProcessMapUnordered {
            pool: self,
            items: items.into_iter(),
            chunksize: chunksize.max(1),
            window: default_window(self.workers()),
            next_index: 0,
            next_chunk: 0,
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            ready: VecDeque::new(),
        }
    }

    /// `multiprocessing.Pool.apply`: run `f(arg)` in a worker and wait for it.
    pub fn apply<F: RemoteFn>(&self, f: F, arg: F::Arg) -> Result<F::Output, TaskError> {
        self.submit(f, arg).result()
    }

    /// `multiprocessing.Pool.apply_async`: run `f(arg)` in a worker; the
    /// handle is the `AsyncResult` (`result()` is Python's `get()`).
    pub fn apply_async<F: RemoteFn>(&self, f: F, arg: F::Arg) -> Handle<F::Output> {
        self.submit(f, arg)
    }

    /// `multiprocessing.Pool.map`: every outcome in input order, or the first
    /// error.
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn inverse(x: i32) -> i32 { 100 / x }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     assert_eq!(pool.map_all(inverse, [1, 2, 4], 2).unwrap(), [100, 50, 25]);
    ///     // The first error, as Python's `Pool.map` raises it.
    ///     assert!(pool.map_all(inverse, [1, 0, 4], 1).unwrap_err().is_panic());
    /// }
    /// ```
    pub fn map_all<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<F::Output>, TaskError>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        self.imap_unchecked(f, items, chunksize).collect()
    }

    /// `multiprocessing.Pool.starmap`: for a function of several parameters,
    /// whose argument is the tuple of them. The same as
    /// [`map_all`](ProcessPool::map_all).
    ///
    /// # Examples
    ///
    /// ```
    /// troika::remote! {
    ///     fn power(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let pool = troika::ProcessPool::new(2).unwrap();
    ///     assert_eq!(pool.starmap(power, [(2, 10), (3, 3)], 1).unwrap(), [1024, 27]);
    /// }
    /// ```
    pub fn starmap<F, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<F::Output>, TaskError>
    where
        F: RemoteFn,
        I: IntoIterator<Item = F::Arg>,
    {
        self.map_all(f, items, chunksize)
    }
}

fn check_chunksize(chunksize: usize) -> Result<(), ConfigError> {
    if chunksize == 0 {
        return Err(ConfigError("the chunk size must be at least 1".into()));
    }
    Ok(())
}
