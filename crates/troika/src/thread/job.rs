//! The thread pool's job: what its queue holds. A submitted task keeps its
//! closure in the same allocation as its handle's state, so a task costs
//! one allocation; this is the pool's `unsafe` part.

use std::cell::UnsafeCell;
use std::sync::Arc;

use super::pool::Shared;
use crate::futures::{Handle, Inner, Promise, TaskError};

/// What a boxed job is called with: the pool's shared state to run on, or
/// `None` to cancel it. Passing the pool in (rather than each job holding an
/// `Arc` of it) keeps the pool's reference count off the per-task path.
pub(crate) type JobFn = Box<dyn FnOnce(Option<&Shared>) + Send>;

/// A queued unit of work.
pub(crate) enum Job {
    /// A submitted task: its closure lives in the same allocation as its
    /// handle's state, so a task costs one allocation.
    Task(Arc<dyn RunTask>),
    /// A submitted task already marked running: handed straight to a
    /// worker waiting for it (see `Shared::enqueue`), so the worker need not
    /// write the task's state to start it.
    Started(Arc<dyn RunTask>),
    /// Anything else (scoped tasks, whose borrows cannot live in a handle).
    Boxed(JobFn),
}

impl Job {
    pub(crate) fn from_box(f: JobFn) -> Job {
        Job::Boxed(f)
    }

    pub(crate) fn run(self, shared: &Shared) {
        match self {
            Job::Task(task) => task.run(Some(shared), false),
            Job::Started(task) => task.run(Some(shared), true),
            Job::Boxed(f) => f(Some(shared)),
        }
    }

    pub(crate) fn cancel_now(self) {
        match self {
            Job::Task(task) => task.run(None, false),
            Job::Started(task) => task.run(None, true),
            Job::Boxed(f) => f(None),
        }
    }

    /// Mark a submitted task running now, for a worker that is certain to
    /// run it next: [`Job::Started`] if its `start` succeeded (it was not
    /// cancelled meanwhile), else unchanged (the worker then finds it
    /// decided and skips it).
    pub(crate) fn start_now(self) -> Job {
        match self {
            Job::Task(task) if task.start() => Job::Started(task),
            other => other,
        }
    }
}

/// A task's closure, kept in the tail of its handle's allocation.
///
/// Only the consumer of the task's one [`Job`] touches the closure: a job is
/// taken off the queue once and then run or cancelled by value, once.
pub(crate) struct Closure<F>(UnsafeCell<Option<F>>);

// SAFETY: the cell is only accessed through `Job::run` / `Job::cancel_now`,
// which consume the task's single `Job`, so at most one thread ever touches the
// closure and never two at once. Handles share the allocation but never read
// the closure. Moving the closure to that thread (or dropping it on whichever
// thread frees the allocation) needs `F: Send`, which is required here.
unsafe impl<F: Send> Sync for Closure<F> {}

/// A submitted task, run (with the pool) or cancelled (with `None`) once.
pub(crate) trait RunTask: Send + Sync {
    /// `started`: the task was already moved to running (by [`start`](Self::start)).
    fn run(self: Arc<Self>, shared: Option<&Shared>, started: bool);

    /// Move the task from pending to running; false if it was decided
    /// (cancelled) first.
    fn start(&self) -> bool;
}

impl<F, R> RunTask for Inner<R, Closure<F>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Arc<Self>, shared: Option<&Shared>, started: bool) {
        // SAFETY: this is the consumer of the task's only job (see `Closure`).
        let f = unsafe { (*self.tail.0.get()).take() };
        let promise = Promise::from_inner(self);
        match (shared, f) {
            (Some(shared), Some(f)) => shared.run(&promise, f, started),
            _ => {
                promise.complete(Err(TaskError::cancelled()));
            }
        }
    }

    fn start(&self) -> bool {
        Inner::start(self)
    }
}

impl Shared {
    /// Build the job for a closure, linked to a new handle.
    pub(crate) fn job<F, R>(&self, f: F) -> (Job, Handle<R>)
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let task = Arc::new(Inner::new(self.id, Closure(UnsafeCell::new(Some(f)))));
        let job = Job::Task(Arc::clone(&task) as Arc<dyn RunTask>);
        (job, Handle::from_inner(task))
    }
}
