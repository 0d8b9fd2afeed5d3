//! The thread-based peers behind one small trait: submit a closure, get a
//! handle, wait for its result — the shape of troika's `submit` and
//! `Handle::result`, so every peer runs the same workload code.

use std::sync::mpsc;

use anyhow::Context;

/// A pool that runs closures and hands each result back through a handle.
pub(crate) trait Exec {
    /// What `submit` returns: the way to the task's result.
    type Handle<R: Send + 'static>;
    /// The mode name in the output, such as `rayon::spawn`.
    fn name(&self) -> &'static str;
    /// Run `f` on the pool.
    fn submit<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Self::Handle<R>;
    /// Wait for the task behind `handle`.
    fn wait<R: Send + 'static>(&self, handle: Self::Handle<R>) -> anyhow::Result<R>;
    /// Wait for every task of a burst, in order: by default one
    /// [`wait`](Exec::wait) each; tokio's peers await them all inside one
    /// `block_on`, as a tokio user would, instead of entering the runtime
    /// once per task.
    fn wait_all<R: Send + 'static>(&self, handles: Vec<Self::Handle<R>>) -> anyhow::Result<Vec<R>> {
        handles.into_iter().map(|h| self.wait(h)).collect()
    }
}

/// Await `handles` in order inside one `block_on` of `runtime`.
fn await_all<R: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    handles: Vec<tokio::task::JoinHandle<R>>,
) -> anyhow::Result<Vec<R>> {
    runtime.block_on(async {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.await?);
        }
        Ok(out)
    })
}

/// `f` as a task that sends its result on a one-slot channel, and that
/// channel's receiver: the handle of the peers that have none.
fn replying<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> (impl FnOnce() + Send + 'static, mpsc::Receiver<R>) {
    let (tx, rx) = mpsc::sync_channel(1);
    let task = move || {
        let _ = tx.send(f());
    };
    (task, rx)
}

/// `rayon::ThreadPool::spawn` with a one-slot channel per task as its handle.
pub(crate) struct RayonSpawn(pub(crate) rayon::ThreadPool);

impl RayonSpawn {
    pub(crate) fn new(threads: usize) -> anyhow::Result<Self> {
        Ok(Self(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?,
        ))
    }
}

impl Exec for RayonSpawn {
    type Handle<R: Send + 'static> = mpsc::Receiver<R>;
    fn name(&self) -> &'static str {
        "rayon::spawn"
    }
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> mpsc::Receiver<R> {
        let (task, rx) = replying(f);
        self.0.spawn(task);
        rx
    }
    fn wait<R: Send + 'static>(&self, handle: mpsc::Receiver<R>) -> anyhow::Result<R> {
        handle.recv().context("a rayon task dropped its result")
    }
}

/// The `threadpool` crate's `execute`, with a one-slot channel per task.
pub(crate) struct Threadpool(threadpool::ThreadPool);

impl Threadpool {
    pub(crate) fn new(threads: usize) -> Self {
        Self(threadpool::ThreadPool::new(threads))
    }
}

impl Drop for Threadpool {
    fn drop(&mut self) {
        // Stop as troika's pool does on drop: after the queued tasks.
        self.0.join();
    }
}

impl Exec for Threadpool {
    type Handle<R: Send + 'static> = mpsc::Receiver<R>;
    fn name(&self) -> &'static str {
        "threadpool"
    }
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> mpsc::Receiver<R> {
        let (task, rx) = replying(f);
        self.0.execute(task);
        rx
    }
    fn wait<R: Send + 'static>(&self, handle: mpsc::Receiver<R>) -> anyhow::Result<R> {
        handle
            .recv()
            .context("a threadpool task dropped its result")
    }
}

/// A multi-threaded tokio runtime, waited on from outside with `block_on`.
pub(crate) fn runtime(workers: usize, blocking: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(blocking)
        .enable_time()
        .build()?)
}

/// `tokio::spawn` of a future that runs the closure.
pub(crate) struct TokioSpawn(pub(crate) tokio::runtime::Runtime);

impl Exec for TokioSpawn {
    type Handle<R: Send + 'static> = tokio::task::JoinHandle<R>;
    fn name(&self) -> &'static str {
        "tokio::spawn"
    }
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> tokio::task::JoinHandle<R> {
        self.0.spawn(async move { f() })
    }
    fn wait<R: Send + 'static>(&self, handle: tokio::task::JoinHandle<R>) -> anyhow::Result<R> {
        Ok(self.0.block_on(handle)?)
    }
    fn wait_all<R: Send + 'static>(
        &self,
        handles: Vec<tokio::task::JoinHandle<R>>,
    ) -> anyhow::Result<Vec<R>> {
        await_all(&self.0, handles)
    }
}

/// `tokio::task::spawn_blocking`.
pub(crate) struct TokioBlocking(pub(crate) tokio::runtime::Runtime);

impl Exec for TokioBlocking {
    type Handle<R: Send + 'static> = tokio::task::JoinHandle<R>;
    fn name(&self) -> &'static str {
        "tokio::spawn_blocking"
    }
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> tokio::task::JoinHandle<R> {
        self.0.spawn_blocking(f)
    }
    fn wait<R: Send + 'static>(&self, handle: tokio::task::JoinHandle<R>) -> anyhow::Result<R> {
        Ok(self.0.block_on(handle)?)
    }
    fn wait_all<R: Send + 'static>(
        &self,
        handles: Vec<tokio::task::JoinHandle<R>>,
    ) -> anyhow::Result<Vec<R>> {
        await_all(&self.0, handles)
    }
}
