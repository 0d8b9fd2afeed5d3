//! [`Cluster`]: the client side, an [`Executor`] whose tasks run on workers
//! elsewhere.
//!
//! A submit encodes the call and hands it to a background task that writes
//! tasks in batches (one `XADD` pipeline for up to `batch` tasks); another
//! background task reads this client's result stream (`XREAD BLOCK`) and
//! settles the handles; a third keeps the client's keys alive and counts
//! the workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;
use troika::{
    Call, ErrorKind, Executor, Handle, Promise, RemoteFn, SubmitError, SubmitErrorReason, TaskError,
};

use crate::conn::{self, Backoff};
use crate::error::ClusterError;
use crate::wire::{self, Keys, ResultMsg, TaskMsg};

/// How a settled task's bytes become its handle's value.
type Settle = Box<dyn FnOnce(Result<Vec<u8>, TaskError>, &str) + Send>;

struct Pending {
    settle: Settle,
    /// The task's entry id in the task stream, once written.
    entry: Option<String>,
    /// When a task that could not be written yet is given up.
    deadline: Instant,
    submitted: Instant,
}

enum Command {
    Submit { id: u64, msg: Vec<u8> },
    Cancel { id: u64, entry: Option<String> },
}

struct State {
    pending: HashMap<u64, Pending>,
    closed: bool,
}

struct Config {
    task_timeout: Option<Duration>,
    max_deliveries: u32,
    result_ttl: Duration,
    submit_timeout: Duration,
    window: usize,
    max_payload: usize,
    batch: usize,
    no_worker_timeout: Option<Duration>,
}

struct Shared {
    keys: Keys,
    client_id: String,
    results: String,
    url: String,
    config: Config,
    state: Mutex<State>,
    cond: Condvar,
    next_id: AtomicU64,
    commands: mpsc::UnboundedSender<Command>,
    parallelism: AtomicUsize,
    workers: AtomicUsize,
    stopped: AtomicBool,
}

/// Settings of a [`Cluster`] client; start with [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    url: String,
    queue: String,
    task_timeout: Option<Duration>,
    max_deliveries: u32,
    result_ttl: Duration,
    submit_timeout: Duration,
    connect_timeout: Duration,
    window: usize,
    max_payload: usize,
    batch: usize,
    no_worker_timeout: Option<Duration>,
    root_cert: Option<Vec<u8>>,
}

impl ClusterBuilder {
    /// Check a `rediss://` server's certificate against this CA certificate
    /// (PEM) instead of the system's trust store. Default: the system's
    /// store, which also honours the `SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// environment variables.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/redis/ca.crt").unwrap();
    /// let cluster = troika_cluster::Cluster::builder("rediss://redis-host:6380/", "jobs")
    ///     .tls_root_cert(ca)
    ///     .build()
    ///     .unwrap();
    /// # drop(cluster);
    /// ```
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert = Some(pem.into());
        self
    }

    /// Fail a task with [`ErrorKind::NoWorker`] (and remove it from the
    /// queue) when it has waited this long while no worker was alive. Default:
    /// none (a task waits for a worker as long as it takes).
    pub fn no_worker_timeout(mut self, timeout: Duration) -> Self {
        self.no_worker_timeout = Some(timeout);
        self
    }

    /// Fail a task that runs longer than `timeout` on its worker (the worker
    /// kills the process that runs it). Default: none.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Give a task up (fail its handle with
    /// [`ErrorKind::DeadLettered`] and move it to the dead-letter stream)
    /// once it has been delivered this many times without an outcome: its
    /// worker died, or its process crashed, each time. Default: 3.
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// How long this client's result stream lives after the client was last
    /// seen (it refreshes it every third of this). A client that disappears
    /// leaves nothing behind for longer. Default: 60 s.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// How long a submitted task may wait for Redis to come back before its
    /// handle fails with [`ErrorKind::BrokerUnreachable`]. Default: 10 s.
    pub fn submit_timeout(mut self, timeout: Duration) -> Self {
        self.submit_timeout = timeout;
        self
    }

    /// How long [`build`](ClusterBuilder::build) tries to reach Redis.
    /// Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// At most this many tasks in flight (written and not settled):
    /// `submit` blocks, `try_submit` refuses with `Full`. Default: 100,000.
    pub fn window(mut self, tasks: usize) -> Self {
        self.window = tasks;
        self
    }

    /// The largest encoded argument accepted, in bytes; a larger one fails
    /// its handle with [`ErrorKind::FrameTooLarge`]. Workers have their own
    /// limit. Default: 16 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// At most this many tasks per `XADD` pipeline. Default: 512.
    pub fn batch(mut self, tasks: usize) -> Self {
        self.batch = tasks;
        self
    }

    /// Connect.
    ///
    /// Fails with [`ClusterError::Auth`] when Redis refuses the password,
    /// [`ClusterError::Unreachable`] when it cannot be reached within the
    /// connect timeout, [`ClusterError::Url`] for a bad URL.
    pub fn build(self) -> Result<Cluster, ClusterError> {
        if self.max_deliveries == 0 || self.window == 0 || self.batch == 0 {
            return Err(ClusterError::Config(
                "max_deliveries, window and batch must be at least 1".into(),
            ));
        }
        if self.queue.is_empty() || self.queue.contains(char::is_whitespace) {
            return Err(ClusterError::Config(format!(
                "a queue name must be non-empty without spaces, not `{}`",
                self.queue
            )));
        }
        let client = conn::client(&self.url, self.root_cert.as_deref())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("troika-cluster")
            .enable_all()
            .build()?;
        let keys = Keys::new(&self.queue);
        let url = self.url.clone();
        let connect = self.connect_timeout;
        let tasks_key = keys.tasks();
        let (conns, _) = on_runtime(&runtime, async move {
            let deadline = tokio::time::sleep(connect);
            tokio::pin!(deadline);
            let work = async {
                let response = Duration::from_secs(5);
                let mut writer = conn::manager(&client, &url, response, connect).await?;
                let reader = conn::manager(&client, &url, Duration::from_secs(10), connect).await?;
                let keeper = conn::manager(&client, &url, response, connect).await?;
                conn::ensure_group(&mut writer, &tasks_key)
                    .await
                    .map_err(|e| conn::connect_error(&url, &e))?;
                // The server's identity now, before any task is written: a
                // restart from here on is seen even if it comes before the
                // keeper's first look.
                let run_id = server_run_id(&mut writer).await;
                Ok::<_, ClusterError>((writer, reader, keeper, run_id))
            };
            tokio::select! {
                r = work => (r, ()),
                () = &mut deadline => (Err(ClusterError::Unreachable {
                    url: conn::redact(&url),
                    reason: format!("no answer within {connect:?}"),
                }), ()),
            }
        });
        let (writer, reader, keeper, run_id) = conns?;
        let client_id = conn::fresh_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            results: keys.results(&client_id),
            keys,
            client_id,
            url: conn::redact(&self.url),
            config: Config {
                task_timeout: self.task_timeout,
                max_deliveries: self.max_deliveries,
                result_ttl: self.result_ttl.max(Duration::from_millis(300)),
                submit_timeout: self.submit_timeout,
                window: self.window,
                max_payload: self.max_payload,
                batch: self.batch,
                no_worker_timeout: self.no_worker_timeout,
            },
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: false,
            }),
            cond: Condvar::new(),
            next_id: AtomicU64::new(1),
            commands: tx,
            parallelism: AtomicUsize::new(1),
            workers: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        runtime.spawn(submitter(Arc::clone(&shared), writer, rx));
        runtime.spawn(reader_loop(Arc::clone(&shared), reader));
        runtime.spawn(keeper_loop(Arc::clone(&shared), keeper, run_id));
        Ok(Cluster {
            shared,
            runtime: Some(runtime),
        })
    }
}

/// A handle already settled with `outcome`.
fn ready<T>(outcome: Result<T, TaskError>) -> Handle<T> {
    let (promise, handle) = Promise::new();
    promise.complete(outcome);
    handle
}

/// Run `fut` on `runtime` and wait for it from this (non-async) thread.
fn on_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // The task always sends unless the runtime is shut down, which only our
    // own Drop does.
    rx.recv()
        .expect("the cluster runtime runs while connecting")
}

/// The client of a queue of tasks that workers on any machine run: the
/// same futures API as [`ProcessPool`](troika::ProcessPool) for registered
/// (`remote!`) functions.
///
/// # Examples
///
/// ```no_run
/// troika::remote! {
///     fn square(x: u64) -> u64 { x * x }
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     troika::init();
///     let cluster = troika_cluster::Cluster::connect("redis://127.0.0.1/", "demo")?;
///     let handle = cluster.submit(square, 7);
///     assert_eq!(handle.result()?, 49);
///     Ok(())
/// }
/// ```
pub struct Cluster {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.shared.url)
            .field("client", &self.shared.client_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connect to Redis at `url` with default settings and serve `queue`.
    pub fn connect(url: &str, queue: &str) -> Result<Cluster, ClusterError> {
        Cluster::builder(url, queue).build()
    }

    /// Settings for a client of `queue` on the Redis at `url`.
    pub fn builder(url: &str, queue: &str) -> ClusterBuilder {
        ClusterBuilder {
            url: url.to_owned(),
            queue: queue.to_owned(),
            task_timeout: None,
            max_deliveries: 3,
            result_ttl: Duration::from_secs(60),
            submit_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            window: 100_000,
            max_payload: 16 << 20,
            batch: 512,
            no_worker_timeout: None,
            root_cert: None,
        }
    }

    /// This client's id (its result stream is named after it).
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Live workers seen at the last heartbeat check (every third of the
    /// result TTL).
    pub fn live_workers(&self) -> usize {
        self.shared.workers.load(Ordering::Relaxed)
    }

    /// Tasks submitted and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().pending.len()
    }

    /// Run `f(arg)` on a worker; returns its handle at once.
    ///
    /// Blocks while the in-flight window is full. After shutdown the handle
    /// is already failed with a shut-down error.
    pub fn submit<F: RemoteFn>(&self, f: F, arg: F::Arg) -> Handle<F::Output> {
        let _ = f;
        match self.enqueue::<F, _>(&arg, true, |bytes, _| troika::process::decode_value(&bytes)) {
            Ok(handle) => handle,
            Err(_) => ready(Err(TaskError::new(ErrorKind::ShutDown))),
        }
    }

    /// Like [`submit`](Cluster::submit), and the handle's value also names
    /// the worker that produced it.
    pub fn submit_traced<F: RemoteFn>(&self, f: F, arg: F::Arg) -> Handle<(F::Output, String)> {
        let _ = f;
        let settle = |bytes: Vec<u8>, worker: &str| {
            troika::process::decode_value(&bytes).map(|v| (v, worker.to_owned()))
        };
        match self.enqueue::<F, _>(&arg, true, settle) {
            Ok(handle) => handle,
            Err(_) => ready(Err(TaskError::new(ErrorKind::ShutDown))),
        }
    }

    /// Queue `f(arg)`, or hand the call back if the client is shut down or
    /// the in-flight window is full.
    pub fn try_submit<F: RemoteFn>(
        &self,
        f: F,
        arg: F::Arg,
    ) -> Result<Handle<F::Output>, SubmitError<Call<F>>> {
        match self.enqueue::<F, _>(&arg, false, |bytes, _| {
            troika::process::decode_value(&bytes)
        }) {
            Ok(handle) => Ok(handle),
            Err(reason) => Err(SubmitError {
                task: Call::new(f, arg),
                reason,
            }),
        }
    }

    fn enqueue<F, T>(
        &self,
        arg: &F::Arg,
        block: bool,
        decode: impl FnOnce(Vec<u8>, &str) -> Result<T, TaskError> + Send + 'static,
    ) -> Result<Handle<T>, SubmitErrorReason>
    where
        F: RemoteFn,
        T: Send + 'static,
    {
        let shared = &self.shared;
        let encoded = troika::process::encode_value(arg).and_then(|bytes| {
            if bytes.len() > shared.config.max_payload {
                Err(TaskError::new(ErrorKind::FrameTooLarge {
                    size: bytes.len() as u64,
                    limit: shared.config.max_payload as u64,
                }))
            } else {
                Ok(bytes)
            }
        });
        let mut state = shared.state.lock();
        loop {
            if state.closed {
                return Err(SubmitErrorReason::ShutDown);
            }
            if state.pending.len() < shared.config.window {
                break;
            }
            if !block {
                return Err(SubmitErrorReason::Full);
            }
            shared.cond.wait(&mut state);
        }
        let arg = match encoded {
            Ok(bytes) => bytes,
            Err(err) => return Ok(ready(Err(err))),
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = wire::encode(&TaskMsg {
            version: wire::VERSION,
            client: shared.client_id.clone(),
            id,
            name: F::NAME.to_owned(),
            arg,
            timeout_ms: shared
                .config
                .task_timeout
                .map_or(0, |d| d.as_millis().max(1) as u64),
            max_deliveries: shared.config.max_deliveries,
            earlier: 0,
            result_ttl_ms: shared.config.result_ttl.as_millis() as u64,
        });
        let (promise, handle) = Promise::<T>::new();
        // The client cannot tell a queued task from a running one: the task
        // counts as started from the moment it is submitted, and its kill
        // hook removes it from the stream (if no worker has it yet) and
        // tells the worker that runs it to kill it.
        promise.start();
        let weak = Arc::downgrade(shared);
        promise.set_kill(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.forget_cancelled(id);
            }
        }));
        let settle: Settle = Box::new(move |outcome, worker| {
            promise.complete(outcome.and_then(|bytes| decode(bytes, worker)));
        });
        state.pending.insert(
            id,
            Pending {
                settle,
                entry: None,
                deadline: Instant::now() + shared.config.submit_timeout,
                submitted: Instant::now(),
            },
        );
        drop(state);
        let _ = shared.commands.send(Command::Submit { id, msg });
        Ok(handle)
    }

    /// Shut the client down: no new task is accepted. With `cancel_pending`,
    /// every task not settled yet is cancelled (removed from the queue, or
    /// killed on its worker). With `wait`, returns once every task is settled.
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let shared = &self.shared;
        let cancelled: Vec<(u64, Pending)> = {
            let mut state = shared.state.lock();
            state.closed = true;
            if cancel_pending {
                state.pending.drain().collect()
            } else {
                Vec::new()
            }
        };
        shared.cond.notify_all();
        for (id, pending) in cancelled {
            let _ = shared.commands.send(Command::Cancel {
                id,
                entry: pending.entry.clone(),
            });
            (pending.settle)(Err(TaskError::new(ErrorKind::Cancelled)), "");
        }
        if wait {
            let mut state = shared.state.lock();
            while !state.pending.is_empty() {
                shared.cond.wait(&mut state);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let shared = &self.shared;
        let left: Vec<Pending> = {
            let mut state = shared.state.lock();
            state.closed = true;
            state.pending.drain().map(|(_, p)| p).collect()
        };
        shared.cond.notify_all();
        for pending in left {
            (pending.settle)(
                Err(TaskError::new(ErrorKind::Failed(
                    "the cluster client was dropped before the task settled".into(),
                ))),
                "",
            );
        }
        shared.stopped.store(true, Ordering::Relaxed);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    /// A handle was cancelled: forget it and tell Redis and the workers.
    fn forget_cancelled(&self, id: u64) {
        let entry = {
            let mut state = self.state.lock();
            let pending = state.pending.remove(&id);
            pending.map(|p| p.entry)
        };
        self.cond.notify_all();
        if let Some(entry) = entry {
            let _ = self.commands.send(Command::Cancel { id, entry });
        }
    }

    /// Settle task `id` (once: a second outcome, from a task that ran
    /// twice, finds nothing).
    fn settle(&self, id: u64, outcome: Result<Vec<u8>, TaskError>, worker: &str) {
        let pending = self.state.lock().pending.remove(&id);
        if let Some(pending) = pending {
            self.cond.notify_all();
            (pending.settle)(outcome, worker);
        }
    }
}

/// Write submitted tasks and cancels in batches, one pipeline per batch.
async fn submitter(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let tasks = shared.keys.tasks();
    let channel = shared.keys.cancel_channel();
    let mut backoff = Backoff::new();
    let mut batch: Vec<Command> = Vec::new();
    let mut down_since: Option<Instant> = None;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(cmd) => batch.push(cmd),
                None => return,
            }
        }
        while batch.len() < shared.config.batch {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        // Drop tasks cancelled (or settled by a timeout) before being written.
        {
            let state = shared.state.lock();
            batch.retain(|cmd| match cmd {
                Command::Submit { id, .. } => state.pending.contains_key(id),
                Command::Cancel { .. } => true,
            });
        }
        if batch.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for cmd in &batch {
            match cmd {
                Command::Submit { msg, .. } => {
                    pipe.cmd("XADD")
                        .arg(&tasks)
                        .arg("*")
                        .arg(wire::FIELD)
                        .arg(msg.as_slice());
                }
                Command::Cancel { id, entry } => {
                    if let Some(entry) = entry {
                        pipe.cmd("XDEL").arg(&tasks).arg(entry).ignore();
                    }
                    pipe.cmd("PUBLISH")
                        .arg(&channel)
                        .arg(format!("{}:{id}", shared.client_id))
                        .ignore();
                }
            }
        }
        match pipe.query_async::<Vec<String>>(&mut conn).await {
            Ok(ids) => {
                if let Some(since) = down_since.take() {
                    tracing::info!(
                        "troika-cluster: Redis at {} is back after {:?}",
                        shared.url,
                        since.elapsed()
                    );
                }
                backoff.reset();
                let mut ids = ids.into_iter();
                let mut late_cancels = Vec::new();
                let mut state = shared.state.lock();
                for cmd in batch.drain(..) {
                    if let Command::Submit { id, .. } = cmd {
                        let entry = ids.next();
                        match state.pending.get_mut(&id) {
                            Some(pending) => pending.entry = entry,
                            // Cancelled while being written: remove it now.
                            None => late_cancels.push(Command::Cancel { id, entry }),
                        }
                    }
                }
                drop(state);
                batch.extend(late_cancels);
            }
            Err(err) => {
                if down_since.is_none() {
                    tracing::warn!(
                        "troika-cluster: cannot write to Redis at {} ({err}); retrying with back-off",
                        shared.url
                    );
                    down_since = Some(Instant::now());
                }
                let now = Instant::now();
                let mut expired = Vec::new();
                {
                    let state = shared.state.lock();
                    batch.retain(|cmd| match cmd {
                        Command::Submit { id, .. } => match state.pending.get(id) {
                            Some(p) if p.deadline <= now => {
                                expired.push(*id);
                                false
                            }
                            Some(_) => true,
                            None => false,
                        },
                        Command::Cancel { .. } => true,
                    });
                }
                for id in expired {
                    shared.settle(
                        id,
                        Err(TaskError::new(ErrorKind::BrokerUnreachable(format!(
                            "could not write the task to Redis at {} within {:?}: {err}",
                            shared.url, shared.config.submit_timeout
                        )))),
                        "",
                    );
                }
                backoff.wait().await;
            }
        }
    }
}

/// The next stream id after `id` (`ms-seq`), for trimming what was read.
fn after(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => match seq.parse::<u64>() {
            Ok(seq) => format!("{ms}-{}", seq + 1),
            Err(_) => id.to_owned(),
        },
        None => id.to_owned(),
    }
}

/// Read this client's results and settle the handles; trim what was read.
async fn reader_loop(shared: Arc<Shared>, mut conn: ConnectionManager) {
    let mut last = "0-0".to_owned();
    let mut backoff = Backoff::new();
    let mut failing = false;
    // What was read is trimmed in the same round trip as the next read.
    let mut trim: Option<String> = None;
    while !shared.stopped.load(Ordering::Relaxed) {
        let mut pipe = redis::pipe();
        if let Some(after) = &trim {
            pipe.cmd("XTRIM")
                .arg(&shared.results)
                .arg("MINID")
                .arg(after)
                .ignore();
        }
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(4096)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&shared.results)
            .arg(&last);
        let read = pipe
            .query_async::<(Option<StreamReadReply>,)>(&mut conn)
            .await
            .map(|(reply,)| reply);
        if read.is_ok() {
            trim = None;
        }
        let reply = match read {
            Ok(reply) => {
                if failing {
                    tracing::info!("troika-cluster: reading results from Redis again");
                    failing = false;
                }
                backoff.reset();
                reply
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "troika-cluster: cannot read results from Redis at {} ({err}); retrying with back-off",
                        shared.url
                    );
                    failing = true;
                }
                backoff.wait().await;
                continue;
            }
        };
        let Some(reply) = reply else { continue };
        for key in reply.keys {
            for entry in key.ids {
                last = entry.id.clone();
                let Some(redis::Value::BulkString(bytes)) = entry.map.get(wire::FIELD) else {
                    continue;
                };
                let Ok(msg) = wire::decode::<ResultMsg>(bytes) else {
                    tracing::warn!("troika-cluster: an undecodable result entry was skipped");
                    continue;
                };
                let outcome = msg.outcome.map_err(wire::WireError::into_task_error);
                shared.settle(msg.id, outcome, &msg.worker);
            }
        }
        trim = Some(after(&last));
    }
}

/// The `run_id` of the Redis server behind `conn` (it changes when the
/// server restarts), if it answers.
async fn server_run_id(conn: &mut ConnectionManager) -> Option<String> {
    let info = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|s| s.trim().to_owned())
}

/// Keep this client's result stream alive and count live workers; after a
/// Redis restart (a new `run_id` since `run_id`, the server's when the
/// client connected), fail the tasks the server lost.
async fn keeper_loop(shared: Arc<Shared>, mut conn: ConnectionManager, mut run_id: Option<String>) {
    let period = shared.config.result_ttl / 3;
    let ttl_ms = shared.config.result_ttl.as_millis() as u64;
    while !shared.stopped.load(Ordering::Relaxed) {
        if let Some(now) = server_run_id(&mut conn).await {
            // The old identity is kept until the check is done, so a check
            // cut short (the server still loading, a dropped connection)
            // runs again on the next round.
            let settled = match &run_id {
                Some(before) if *before != now => {
                    tracing::warn!(
                        "troika-cluster: Redis at {} restarted; checking which tasks it kept",
                        shared.url
                    );
                    lost_in_restart(&shared, &mut conn).await
                }
                _ => true,
            };
            if settled {
                run_id = Some(now);
            }
        }
        let _ = redis::cmd("PEXPIRE")
            .arg(&shared.results)
            .arg(ttl_ms)
            .query_async::<()>(&mut conn)
            .await;
        if let Ok(workers) = crate::worker::live_workers(&mut conn, &shared.keys).await {
            shared.workers.store(workers.len(), Ordering::Relaxed);
            let processes: usize = workers.iter().map(|w| w.processes).sum();
            shared
                .parallelism
                .store(processes.max(1), Ordering::Relaxed);
            if workers.is_empty()
                && let Some(limit) = shared.config.no_worker_timeout
            {
                fail_without_workers(&shared, limit);
            }
        }
        tokio::time::sleep(period.min(Duration::from_secs(1))).await;
    }
}

/// Fail the tasks that waited longer than `limit` while no worker was alive,
/// and take them off the queue.
fn fail_without_workers(shared: &Shared, limit: Duration) {
    let stale: Vec<(u64, Pending)> = {
        let mut state = shared.state.lock();
        let ids: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| p.submitted.elapsed() >= limit)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| state.pending.remove(&id).map(|p| (id, p)))
            .collect()
    };
    if stale.is_empty() {
        return;
    }
    shared.cond.notify_all();
    for (id, pending) in stale {
        let _ = shared.commands.send(Command::Cancel {
            id,
            entry: pending.entry.clone(),
        });
        (pending.settle)(
            Err(TaskError::new(ErrorKind::NoWorker(format!(
                "no worker of queue `{queue}` was alive for {limit:?} (start one with \
                 `troika worker --cluster URL --queue {queue}` or Worker::builder(..).run())",
                queue = shared.keys.queue()
            )))),
            "",
        );
    }
}

/// After a Redis restart, fail the tasks whose entries it no longer has and
/// whose results are not waiting either (a Redis without persistence loses
/// them). Such a task may still have run, on a worker that had it.
///
/// Returns false if the check could not be completed (a query failed), so
/// the caller tries again.
async fn lost_in_restart(shared: &Shared, conn: &mut ConnectionManager) -> bool {
    let written: std::collections::HashSet<u64> = {
        let state = shared.state.lock();
        state
            .pending
            .iter()
            .filter(|(_, p)| p.entry.is_some())
            .map(|(id, _)| *id)
            .collect()
    };
    if written.is_empty() {
        return true;
    }
    // Scan the task stream for this client's tasks (an entry handed back or
    // queued again after a crash has a new id, so ids alone do not tell).
    let tasks = shared.keys.tasks();
    let mut kept = std::collections::HashSet::new();
    let mut from = "-".to_owned();
    loop {
        let Ok(page) = redis::cmd("XRANGE")
            .arg(&tasks)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async::<redis::streams::StreamRangeReply>(conn)
            .await
        else {
            return false;
        };
        let Some(last) = page.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        for entry in &page.ids {
            if let Some(redis::Value::BulkString(bytes)) = entry.map.get(wire::FIELD)
                && let Ok(head) = wire::decode::<wire::Head>(bytes)
                && head.client == shared.client_id
            {
                kept.insert(head.id);
            }
        }
        if page.ids.len() < 10_000 {
            break;
        }
        from = format!("({last}");
    }
    let lost: Vec<u64> = written
        .into_iter()
        .filter(|id| !kept.contains(id))
        .collect();
    if lost.is_empty() {
        return true;
    }
    // Results already stored for some of them are read as usual.
    let Ok(waiting) = redis::cmd("XRANGE")
        .arg(&shared.results)
        .arg("-")
        .arg("+")
        .query_async::<redis::streams::StreamRangeReply>(conn)
        .await
    else {
        return false;
    };
    let stored: std::collections::HashSet<u64> = waiting
        .ids
        .iter()
        .filter_map(|e| match e.map.get(wire::FIELD) {
            Some(redis::Value::BulkString(b)) => wire::decode::<ResultMsg>(b).ok().map(|m| m.id),
            _ => None,
        })
        .collect();
    for id in lost.into_iter().filter(|id| !stored.contains(id)) {
        shared.settle(
            id,
            Err(TaskError::new(ErrorKind::BrokerUnreachable(format!(
                "Redis at {} restarted without this task (is persistence, appendonly, on?); \
                 it may have run",
                shared.url
            )))),
            "",
        );
    }
    true
}

impl<F: RemoteFn> Executor<Call<F>> for Cluster {
    fn submit(&self, task: Call<F>) -> Handle<F::Output> {
        Cluster::submit(self, task.f, task.arg)
    }

    fn try_submit(&self, task: Call<F>) -> Result<Handle<F::Output>, SubmitError<Call<F>>> {
        Cluster::try_submit(self, task.f, task.arg)
    }

    fn parallelism(&self) -> usize {
        self.shared.parallelism.load(Ordering::Relaxed)
    }
}
