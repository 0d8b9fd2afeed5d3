//! Scoped tasks: closures that borrow from the caller's stack, run on the pool.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use super::job::{Job, JobFn};
use super::pool::{Shared, ThreadPool};
use crate::futures::{Handle, TaskError};

/// A job that may borrow for `'scope` (a [`JobFn`] before its lifetime is erased).
type ScopedJobFn<'scope> = Box<dyn FnOnce(Option<&Shared>) + Send + 'scope>;

/// Counts the scope's jobs that have not finished (run or dropped).
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

/// Decrements the pending count when the job that owns it is run or dropped.
struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _lock = self.0.lock.lock();
            self.0.cond.notify_all();
        }
    }
}

/// A scope in which tasks may borrow from the stack of the caller of
/// [`ThreadPool::scope`].
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let words = vec!["alpha".to_string(), "beta".to_string()];
/// let total: usize = pool.scope(|s| {
///     let handles: Vec<_> = words.iter().map(|w| s.submit(move || w.len())).collect();
///     handles.into_iter().map(|h| h.result().unwrap()).sum()
/// });
/// assert_eq!(total, 9);
/// ```
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'scope ThreadPool,
    pending: Arc<Pending>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("pending", &self.pending.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Queue a task that may borrow anything that outlives the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let mut halves = [0u32; 2];
    /// let data = [1u32, 2, 3, 4];
    /// pool.scope(|s| {
    ///     let (left, right) = halves.split_at_mut(1);
    ///     s.submit(|| left[0] = data[..2].iter().sum());
    ///     s.submit(|| right[0] = data[2..].iter().sum());
    /// });
    /// assert_eq!(halves, [3, 7]);
    /// ```
    pub fn submit<F, R>(&'scope self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'scope,
        R: Send + 'scope,
    {
        let shared = self.pool.shared();
        let (promise, handle) = crate::futures::pair(shared.id);
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        let guard = PendingGuard(Arc::clone(&self.pending));
        let job: ScopedJobFn<'scope> = Box::new(move |shared: Option<&Shared>| {
            let _guard = guard;
            match shared {
                Some(shared) => shared.run_scoped(&promise, f),
                None => {
                    promise.complete(Err(TaskError::cancelled()));
                }
            }
        });
        // SAFETY: the job borrows data that lives for 'scope. `ThreadPool::scope`
        // does not return (nor unwind past its frame) until `pending` is zero,
        // and `pending` is decremented only when the job's `PendingGuard` is
        // dropped, which happens after the job ran or when the job itself is
        // dropped unrun. So the job is gone before 'scope ends, and erasing the
        // lifetime to store it in the pool's 'static queue is sound. Only the
        // lifetime changes; the layout of the boxed trait object is the same.
        let job: JobFn = unsafe { std::mem::transmute(job) };
        match shared.enqueue(Job::from_box(job), true) {
            Ok(()) => handle,
            Err((job, _)) => {
                job.cancel_now();
                Handle::ready(Err(TaskError::shut_down()))
            }
        }
    }
}

impl ThreadPool {
    /// Run `f` with a [`Scope`] whose tasks may borrow from the current stack.
    ///
    /// Every task submitted in the scope has finished running when `scope`
    /// returns, even if `f` panics (the panic then resumes after the tasks
    /// are done). Called from a worker of this pool, the caller runs queued
    /// tasks while it waits, so a scope inside a task cannot deadlock.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = troika::ThreadPool::new(2).unwrap();
    /// let text = String::from("borrowed, not moved");
    /// let lengths = pool.scope(|s| {
    ///     let words: Vec<_> = text.split(' ').map(|w| s.submit(move || w.len())).collect();
    ///     words.into_iter().map(|h| h.result().unwrap()).collect::<Vec<_>>()
    /// });
    /// assert_eq!(lengths, [9, 3, 5]);
    /// ```
    pub fn scope<'env, F, T>(&self, f: F) -> T
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
    {
        let scope = Scope {
            pool: self,
            pending: Arc::new(Pending::default()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&scope)));
        let pending = &scope.pending;
        let finished = || pending.count.load(Ordering::Acquire) == 0;
        if !super::pool::help_while(self.shared().id, finished) {
            let mut lock = pending.lock.lock();
            while !finished() {
                pending.cond.wait(&mut lock);
            }
        }
        match outcome {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}
