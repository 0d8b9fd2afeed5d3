//! [`PoolStats`]: one snapshot shape for every executor.

/// A snapshot of an executor's state, for monitoring and load shedding.
///
/// [`ThreadPool::stats`](crate::ThreadPool::stats),
/// [`ProcessPool::stats`](crate::ProcessPool::stats) and
/// [`AsyncExecutor::stats`](crate::AsyncExecutor::stats) all return it, with
/// the same meaning for each field. The counters are read one by one, without
/// stopping the executor: a snapshot taken while tasks run may be off by the
/// tasks that moved meanwhile.
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// pool.submit(|| 1).result().unwrap();
/// pool.submit(|| -> u32 { panic!("no") }).result().unwrap_err();
/// let stats = pool.stats();
/// assert_eq!(stats.workers, 2);
/// assert_eq!((stats.succeeded, stats.failed), (1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The configured number of workers: threads, worker processes, or the
    /// async runtime's threads.
    pub workers: usize,
    /// Tasks waiting to start: in the queue, or (async) waiting for a
    /// concurrency slot.
    pub queued: usize,
    /// Tasks running now (for the process pool: workers with a task).
    pub busy: usize,
    /// Tasks that produced a value.
    pub succeeded: usize,
    /// Tasks that ended with an error after they were submitted: panicked,
    /// timed out, worker died, cancelled while running, serialization…
    pub failed: usize,
    /// Workers started to replace others: a thread retired by a task
    /// timeout, a worker process that died, timed out or was recycled.
    pub restarts: usize,
}
