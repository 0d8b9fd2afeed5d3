//! [`Worker`]: serve a queue's tasks with a local process pool.
//!
//! One background task reads new entries (`XREADGROUP COUNT n`) as long as
//! the worker has room (at most `prefetch` entries held), another claims
//! entries whose worker stopped renewing them (`XAUTOCLAIM` after the
//! lease), a third renews the lease of every entry held (`XCLAIM … JUSTID`
//! every third of the lease), and the completer stores outcomes, acks and
//! deletes entries in one `MULTI` pipeline per batch. A pub/sub channel
//! carries cancels of running tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{Notify, Semaphore, mpsc};
use troika::{Handle, ProcessPool, TaskError};

use crate::conn::{self, Backoff};
use crate::error::ClusterError;
use crate::exec::run_by_name;
use crate::wire::{self, Head, Keys, ResultMsg, TaskMsg, WireError};

type ExecOut = Result<Vec<u8>, WireError>;

/// A worker as it announces itself in Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its name (unique in the queue).
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// How many tasks it runs at once.
    pub processes: usize,
    /// When it last reported, in milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
}

/// The workers of the queue seen in the last 5 seconds.
pub(crate) async fn live_workers(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> redis::RedisResult<Vec<WorkerInfo>> {
    let since = conn::now_ms().saturating_sub(5_000);
    let names: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys.workers())
        .arg(since)
        .arg("+inf")
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (name, _) in &names {
        pipe.cmd("HGETALL").arg(keys.worker(name));
    }
    let details: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
    Ok(names
        .into_iter()
        .zip(details)
        .map(|((name, seen), d)| WorkerInfo {
            host: d.get("host").cloned().unwrap_or_default(),
            pid: d.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0),
            processes: d.get("processes").and_then(|p| p.parse().ok()).unwrap_or(1),
            last_seen_ms: seen as u64,
            name,
        })
        .collect())
}

/// Settings of a [`Worker`]; start with [`Worker::builder`].
#[derive(Clone, Debug)]
pub struct WorkerBuilder {
    url: String,
    queue: String,
    processes: Option<usize>,
    name: Option<String>,
    lease: Duration,
    prefetch: Option<usize>,
    batch: usize,
    max_payload: usize,
    grace: Duration,
    connect_timeout: Duration,
    /// Registered functions this worker refuses to run, with the reason.
    refused: HashMap<String, String>,
    root_cert: Option<Vec<u8>>,
}

/// The worker side: serve the tasks of a queue with this program's
/// registered (`remote!`) functions, each on a process of a local
/// [`ProcessPool`], so that a task that crashes fails alone.
///
/// # Examples
///
/// A program becomes a worker for its own functions with one call, after
/// `troika::init()`:
///
/// ```no_run
/// troika::remote! {
///     fn square(x: u64) -> u64 { x * x }
/// }
///
/// fn main() -> Result<(), troika_cluster::ClusterError> {
///     troika::init();
///     troika_cluster::Worker::builder("redis://127.0.0.1/", "demo")
///         .processes(4)
///         .run()?; // until SIGTERM
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Worker {
    _private: (),
}

impl Worker {
    /// Settings for a worker of `queue` on the Redis at `url`.
    pub fn builder(url: &str, queue: &str) -> WorkerBuilder {
        WorkerBuilder {
            url: url.to_owned(),
            queue: queue.to_owned(),
            processes: None,
            name: None,
            lease: Duration::from_secs(30),
            prefetch: None,
            batch: 256,
            max_payload: 16 << 20,
            grace: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            refused: HashMap::new(),
            root_cert: None,
        }
    }
}

impl WorkerBuilder {
    /// How many tasks run at once (processes of the local pool). Default:
    /// the available parallelism.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The worker's name, unique in the queue. Default: `host-pid`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long a task may go without its worker renewing it before other
    /// workers take it over (the worker renews every third of it while it
    /// lives, so a slow task is never taken from a live worker). Default: 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// At most this many tasks held at once (running, or queued locally
    /// behind the running ones). Default: 16 per process.
    ///
    /// Within this bound the worker holds only about 2 ms of work beyond
    /// the running tasks, timed as they complete: trivial tasks are read in
    /// large batches, while slow ones stay in the queue for whichever
    /// worker frees a process first (so the last of a run's slow tasks are
    /// not stuck behind one busy worker while another idles).
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.prefetch = Some(tasks);
        self
    }

    /// At most this many entries per read. Default: 256.
    pub fn batch(mut self, entries: usize) -> Self {
        self.batch = entries;
        self
    }

    /// Entries larger than this are dead-lettered unread. Default: 16 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// After SIGTERM, how long running tasks may take to finish before they
    /// are killed and handed back. Default: 60 s.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Check a `rediss://` server's certificate against this CA certificate
    /// (PEM) instead of the system's trust store (which honours
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`), as
    /// [`ClusterBuilder::tls_root_cert`](crate::ClusterBuilder::tls_root_cert).
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert = Some(pem.into());
        self
    }

    /// How long connecting may take. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Do not run the registered function named `name` (its
    /// [`RemoteFn::NAME`](troika::RemoteFn::NAME)) although this program
    /// registers it: a task for it fails with `reason` and is dead-lettered,
    /// as a task for an unknown function is. For functions that only some
    /// workers should serve, such as one that runs commands.
    pub fn refuse(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.refused.insert(name.into(), reason.into());
        self
    }

    /// Serve the queue until SIGTERM (or SIGINT), then take nothing new,
    /// hand back what has not started, let running tasks finish (within the
    /// grace period) and return.
    ///
    /// Fails at once if Redis cannot be reached or refuses the password.
    /// Call it after `troika::init()` in the program whose functions it
    /// should run.
    pub fn run(self) -> Result<(), ClusterError> {
        let processes = match self.processes {
            Some(0) => return Err(ClusterError::Config("a worker needs a process".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.lease < Duration::from_millis(30) || self.batch == 0 {
            return Err(ClusterError::Config(
                "the lease must be at least 30 ms and the batch at least 1".into(),
            ));
        }
        let client = conn::client(&self.url, self.root_cert.as_deref())?;
        let pool = ProcessPool::new(processes).map_err(|e| ClusterError::Config(e.to_string()))?;
        let host = conn::host_name();
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("troika-worker")
            .enable_all()
            .build()?;
        let prefetch = self.prefetch.unwrap_or(processes * 16).max(1);
        let result = runtime.block_on(serve(Setup {
            client,
            pool,
            keys: Keys::new(&self.queue),
            name,
            host,
            processes,
            prefetch,
            cfg: self,
        }));
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

struct Setup {
    client: redis::Client,
    pool: ProcessPool,
    keys: Keys,
    name: String,
    host: String,
    processes: usize,
    prefetch: usize,
    cfg: WorkerBuilder,
}

/// Why a held task ends other than by finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Run,
    /// Its client cancelled it: store nothing.
    Cancelled,
    TimedOut(u64),
    /// The worker is stopping: write it back to the queue.
    HandBack,
}

struct Held {
    msg: TaskMsg,
    delivered: u32,
    fate: Fate,
    handle: Option<Handle<ExecOut>>,
}

/// What the completer writes for one entry.
enum Action {
    Store(ResultMsg, u64),
    Requeue(TaskMsg),
    DeadLetter {
        fields: Vec<u8>,
        reason: String,
        deliveries: u64,
        result: Option<(ResultMsg, u64)>,
    },
    Ack,
}

struct Done {
    entry: String,
    action: Action,
    /// The task's client, for its result stream.
    client: Option<String>,
}

struct Core {
    keys: Keys,
    name: String,
    pool: ProcessPool,
    held: Mutex<HashMap<String, Held>>,
    permits: Semaphore,
    done: mpsc::UnboundedSender<Done>,
    completions: mpsc::UnboundedSender<(String, Result<ExecOut, TaskError>)>,
    /// Entries not yet written back by the completer.
    outstanding: AtomicUsize,
    stopping: AtomicBool,
    max_payload: usize,
    refused: HashMap<String, String>,
    /// Processes of the local pool.
    processes: usize,
    /// At most this many tasks held.
    prefetch: usize,
    /// The reader waits for this much room before it reads while the pool
    /// still has work queued (fewer, larger reads under load).
    low_water: usize,
    /// How long tasks take here: sizes the read-ahead (see [`ReadAhead`]).
    pace: ReadAhead,
}

/// How many tasks a worker holds: enough to keep its processes busy for
/// [`ReadAhead::WINDOW`] beyond the running ones, so that trivial tasks are
/// read in large batches while slow ones are not hoarded. A worker that held
/// 16 slow tasks per process at the end of a run would keep its processes
/// busy while another worker's stood idle; holding one task beyond the
/// running ones keeps the queue with the workers that are free.
#[derive(Debug, Default)]
struct ReadAhead {
    /// A moving average of the time between completions while tasks were
    /// waiting for a process, times the processes: the time one task takes.
    /// Nanoseconds, 0 until measured.
    task_ns: AtomicU64,
    /// When the last task completed (nanoseconds since `epoch`).
    last_ns: AtomicU64,
    epoch: OnceInstant,
    /// Signalled when a held task completes.
    room: Notify,
}

/// An `Instant` fixed when first asked for.
#[derive(Debug, Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn elapsed_ns(&self) -> u64 {
        let start = *self.0.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl ReadAhead {
    /// Queued work beyond the running tasks that the worker keeps at hand:
    /// a few Redis round trips' worth.
    const WINDOW: Duration = Duration::from_millis(2);

    /// A held task completed while `busy` (another task was waiting for a
    /// process).
    fn completed(&self, processes: usize, busy: bool) {
        self.record(self.epoch.elapsed_ns().max(1), processes, busy);
        self.room.notify_one();
    }

    /// Count a completion at `now` nanoseconds.
    fn record(&self, now: u64, processes: usize, busy: bool) {
        let last = self.last_ns.swap(now, Ordering::Relaxed);
        if busy && last != 0 {
            let sample = (now - last.min(now)).saturating_mul(processes as u64);
            let old = self.task_ns.load(Ordering::Relaxed);
            // An average over about eight completions; the first sample
            // counts whole.
            let new = if old == 0 {
                sample
            } else {
                old - old / 8 + sample / 8
            };
            self.task_ns.store(new.max(1), Ordering::Relaxed);
        }
    }

    /// How many tasks to hold, at most `prefetch`.
    fn limit(&self, processes: usize, prefetch: usize) -> usize {
        let task = self.task_ns.load(Ordering::Relaxed);
        if task == 0 {
            return prefetch;
        }
        let ahead = (Self::WINDOW.as_nanos() as u64 * processes as u64).div_ceil(task);
        (processes + usize::try_from(ahead).unwrap_or(usize::MAX).max(1)).min(prefetch)
    }
}

async fn serve(setup: Setup) -> Result<(), ClusterError> {
    let Setup {
        client,
        pool,
        keys,
        name,
        host,
        processes,
        prefetch,
        cfg,
    } = setup;
    let url = cfg.url.clone();
    let connect = cfg.connect_timeout;
    let response = Duration::from_secs(5);
    let connected = tokio::time::timeout(connect, async {
        let mut cmd = conn::manager(&client, &url, response, connect).await?;
        let reader = conn::manager(&client, &url, Duration::from_secs(10), connect).await?;
        let writer = conn::manager(&client, &url, response, connect).await?;
        conn::ensure_group(&mut cmd, &keys.tasks())
            .await
            .map_err(|e| conn::connect_error(&url, &e))?;
        Ok::<_, ClusterError>((cmd, reader, writer))
    })
    .await
    .unwrap_or_else(|_| {
        Err(ClusterError::Unreachable {
            url: conn::redact(&url),
            reason: format!("no answer within {connect:?}"),
        })
    });
    let (cmd, reader, writer) = connected?;
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (comp_tx, comp_rx) = mpsc::unbounded_channel();
    let core = Arc::new(Core {
        keys: keys.clone(),
        name: name.clone(),
        pool,
        held: Mutex::new(HashMap::new()),
        permits: Semaphore::new(prefetch),
        done: done_tx,
        completions: comp_tx,
        outstanding: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        max_payload: cfg.max_payload,
        refused: cfg.refused.clone(),
        processes,
        low_water: (prefetch / 2).clamp(1, cfg.batch.max(1)),
        pace: ReadAhead::default(),
        prefetch,
    });
    tracing::info!(
        "troika worker {name} on {host} serves queue {} at {} with {processes} processes",
        cfg.queue,
        conn::redact(&url)
    );
    let started = conn::now_ms();
    let tasks = vec![
        tokio::spawn(completer(Arc::clone(&core), writer, done_rx, url.clone())),
        tokio::spawn(settler(Arc::clone(&core), comp_rx)),
        tokio::spawn(heartbeat(
            Arc::clone(&core),
            cmd.clone(),
            host.clone(),
            processes,
            started,
        )),
        tokio::spawn(renewer(Arc::clone(&core), cmd.clone(), cfg.lease)),
        tokio::spawn(claimer(
            Arc::clone(&core),
            cmd.clone(),
            cfg.lease,
            cfg.batch,
        )),
        tokio::spawn(canceller(Arc::clone(&core), client.clone())),
    ];
    let reading = tokio::spawn(read_loop(Arc::clone(&core), reader, cfg.batch, url.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(
        "troika worker {name}: stopping (takes nothing new, hands back what has not started)"
    );
    core.stopping.store(true, Ordering::Relaxed);
    // The reader may be waiting for room: let it see `stopping`.
    core.pace.room.notify_one();
    let _ = reading.await;
    // Hand back what has not started; let the running ones finish.
    hand_back(&core, |h| h.handle.as_ref().is_none_or(|h| !h.is_running()));
    let deadline = Instant::now() + cfg.grace;
    while core.outstanding.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            tracing::warn!("troika worker {name}: grace period over; handing back running tasks");
            hand_back(&core, |_| true);
            break;
        }
        // Shutting down: a short poll of our own counters, not a test wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let flush_deadline = Instant::now() + Duration::from_secs(10);
    while core.outstanding.load(Ordering::Acquire) > 0 && Instant::now() < flush_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in tasks {
        task.abort();
    }
    let mut cmd = cmd;
    let _ = redis::pipe()
        .cmd("ZREM")
        .arg(keys.workers())
        .arg(&name)
        .ignore()
        .cmd("DEL")
        .arg(keys.worker(&name))
        .ignore()
        .cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(keys.tasks())
        .arg(wire::GROUP)
        .arg(&name)
        .ignore()
        .query_async::<()>(&mut cmd)
        .await;
    core.pool.shutdown(true, true);
    tracing::info!("troika worker {name}: stopped");
    Ok(())
}

/// Mark the held tasks that `which` picks as handed back and cancel them
/// locally; the completer writes them back to the queue.
fn hand_back(core: &Core, which: impl Fn(&Held) -> bool) {
    let handles: Vec<Handle<ExecOut>> = {
        let mut held = core.held.lock();
        held.values_mut()
            .filter(|h| h.fate == Fate::Run && which(h))
            .filter_map(|h| {
                h.fate = Fate::HandBack;
                h.handle.take()
            })
            .collect()
    };
    for handle in handles {
        handle.cancel();
    }
}

/// Holding `have` permits, take (and forget) more that are free at once,
/// up to `up_to` in all; returns how many are held.
fn take_permits(permits: &Semaphore, mut have: usize, up_to: usize) -> usize {
    while have < up_to {
        match permits.try_acquire() {
            Ok(p) => {
                p.forget();
                have += 1;
            }
            Err(_) => break,
        }
    }
    have
}

/// Read new entries while there is room.
async fn read_loop(core: Arc<Core>, mut conn: ConnectionManager, batch: usize, url: String) {
    let mut backoff = Backoff::new();
    let mut failing = false;
    while !core.stopping.load(Ordering::Relaxed) {
        // Slow tasks: hold only what keeps the processes busy (a completion
        // makes room and wakes this; a stored wake-up is never lost).
        let room = loop {
            let limit = core.pace.limit(core.processes, core.prefetch);
            let room = limit.saturating_sub(core.held.lock().len());
            if room > 0 || core.stopping.load(Ordering::Relaxed) {
                break room.max(1);
            }
            core.pace.room.notified().await;
        };
        let Ok(first) = core.permits.acquire().await else {
            return;
        };
        first.forget();
        let mut n = 1;
        let batch = batch.min(room);
        loop {
            n = take_permits(&core.permits, n, batch);
            // Under load (every process busy and more waiting here) there is
            // no hurry: wait for room for a larger read instead of one
            // XREADGROUP per finished task. A finished task returns its
            // permit, so this wait ends.
            if n >= core.low_water.min(batch)
                || core.stopping.load(Ordering::Relaxed)
                || core.held.lock().len() <= core.processes
            {
                break;
            }
            match core.permits.acquire().await {
                Ok(p) => {
                    p.forget();
                    n += 1;
                }
                Err(_) => return,
            }
        }
        if core.stopping.load(Ordering::Relaxed) {
            core.permits.add_permits(n);
            break;
        }
        let read = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(wire::GROUP)
            .arg(&core.name)
            .arg("COUNT")
            .arg(n)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(core.keys.tasks())
            .arg(">")
            .query_async::<Option<StreamReadReply>>(&mut conn)
            .await;
        match read {
            Ok(reply) => {
                if failing {
                    tracing::info!(
                        "troika worker {}: reading tasks from Redis again",
                        core.name
                    );
                    failing = false;
                }
                backoff.reset();
                let entries: Vec<StreamId> = reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                    .unwrap_or_default();
                core.permits.add_permits(n - entries.len().min(n));
                for entry in entries {
                    dispatch(&core, entry, 1);
                }
            }
            Err(err) => {
                core.permits.add_permits(n);
                if err.to_string().contains("NOGROUP") {
                    // Redis lost the group (restarted without persistence):
                    // make it again.
                    let _ = conn::ensure_group(&mut conn, &core.keys.tasks()).await;
                }
                if !failing {
                    tracing::warn!(
                        "troika worker {}: cannot read tasks from Redis at {} ({err}); retrying with back-off",
                        core.name,
                        conn::redact(&url)
                    );
                    failing = true;
                }
                backoff.wait().await;
            }
        }
    }
}

/// Start one delivered entry, or dead-letter it. The entry holds a permit.
fn dispatch(core: &Arc<Core>, entry: StreamId, delivered: u32) {
    core.outstanding.fetch_add(1, Ordering::AcqRel);
    let id = entry.id.clone();
    let raw = match entry.map.get(wire::FIELD) {
        Some(redis::Value::BulkString(bytes)) if entry.map.len() == 1 => bytes.clone(),
        _ => {
            let fields: Vec<String> = entry.map.keys().cloned().collect();
            return dead_letter(
                core,
                id,
                Vec::new(),
                format!("not a troika task: fields {fields:?} instead of one `m`"),
                u64::from(delivered),
                None,
            );
        }
    };
    let head = wire::decode::<Head>(&raw)
        .ok()
        .filter(|h| h.version == wire::VERSION);
    if raw.len() > core.max_payload {
        let reason = format!(
            "the entry is {} bytes, over this worker's limit of {} bytes",
            raw.len(),
            core.max_payload
        );
        let answer = head.map(|h| {
            (
                h.client,
                h.id,
                WireError::TooLarge {
                    size: raw.len() as u64,
                    limit: core.max_payload as u64,
                },
            )
        });
        let keep = raw[..raw.len().min(256)].to_vec();
        return dead_letter(core, id, keep, reason, u64::from(delivered), answer);
    }
    let msg = match wire::decode::<TaskMsg>(&raw) {
        Ok(msg) if msg.version == wire::VERSION => msg,
        Ok(msg) => {
            return dead_letter(
                core,
                id,
                raw,
                format!(
                    "entry format version {} is not {}",
                    msg.version,
                    wire::VERSION
                ),
                u64::from(delivered),
                None,
            );
        }
        Err(e) => {
            return dead_letter(
                core,
                id,
                raw,
                format!("cannot decode the entry: {e}"),
                u64::from(delivered),
                None,
            );
        }
    };
    let refusal = if troika::process::is_registered(&msg.name) {
        core.refused
            .get(&msg.name)
            .map(|why| format!("worker {} refuses `{}`: {why}", core.name, msg.name))
    } else {
        Some(format!(
            "no function named `{}` is registered in worker {}",
            msg.name, core.name
        ))
    };
    if let Some(reason) = refusal {
        let answer = Some((
            msg.client.clone(),
            msg.id,
            WireError::Failed(reason.clone()),
        ));
        return dead_letter(core, id, raw, reason, u64::from(delivered), answer);
    }
    let deliveries = u64::from(msg.earlier) + u64::from(delivered);
    if deliveries > u64::from(msg.max_deliveries) {
        let reason = format!(
            "delivered {deliveries} times (at most {}): its worker died each time",
            msg.max_deliveries
        );
        let answer = Some((
            msg.client.clone(),
            msg.id,
            WireError::DeadLettered {
                deliveries,
                reason: reason.clone(),
            },
        ));
        return dead_letter(core, id, raw, reason, deliveries, answer);
    }
    let timeout_ms = msg.timeout_ms;
    let call = (msg.name.clone(), msg.arg.clone());
    core.held.lock().insert(
        id.clone(),
        Held {
            msg,
            delivered,
            fate: Fate::Run,
            handle: None,
        },
    );
    let handle = core.pool.submit(run_by_name, call);
    let completions = core.completions.clone();
    let entry_id = id.clone();
    handle.add_done_callback(move |outcome| {
        let outcome = outcome.cloned().map_err(Clone::clone);
        let _ = completions.send((entry_id, outcome));
    });
    {
        let mut held = core.held.lock();
        match held.get_mut(&id) {
            Some(h) if h.fate == Fate::Run => h.handle = Some(handle),
            // Cancelled or handed back before the handle was stored.
            Some(_) => {
                drop(held);
                handle.cancel();
            }
            None => {}
        }
    }
    if timeout_ms > 0 {
        let core = Arc::clone(core);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            let handle = {
                let mut held = core.held.lock();
                match held.get_mut(&id) {
                    Some(h) if h.fate == Fate::Run => {
                        h.fate = Fate::TimedOut(timeout_ms);
                        h.handle.take()
                    }
                    _ => None,
                }
            };
            if let Some(handle) = handle {
                handle.cancel();
            }
        });
    }
}

fn dead_letter(
    core: &Core,
    entry: String,
    fields: Vec<u8>,
    reason: String,
    deliveries: u64,
    answer: Option<(String, u64, WireError)>,
) {
    tracing::warn!(
        "troika worker {}: entry {entry} dead-lettered: {reason}",
        core.name
    );
    let (client, result) = match answer {
        Some((client, id, err)) => (
            Some(client),
            Some((
                ResultMsg {
                    version: wire::VERSION,
                    id,
                    worker: core.name.clone(),
                    outcome: Err(err),
                },
                60_000,
            )),
        ),
        None => (None, None),
    };
    let _ = core.done.send(Done {
        entry,
        action: Action::DeadLetter {
            fields,
            reason,
            deliveries,
            result,
        },
        client,
    });
}

/// Turn local outcomes into actions for the completer.
async fn settler(
    core: Arc<Core>,
    mut rx: mpsc::UnboundedReceiver<(String, Result<ExecOut, TaskError>)>,
) {
    while let Some((entry, outcome)) = rx.recv().await {
        let (held, busy) = {
            let mut held = core.held.lock();
            // Another task was waiting: the process went straight on to it,
            // so the time since the last completion is one task's.
            let busy = held.len() > core.processes;
            match held.remove(&entry) {
                Some(h) => (h, busy),
                None => continue,
            }
        };
        core.pace.completed(core.processes, busy);
        let msg = held.msg;
        let ttl = msg.result_ttl_ms;
        let result = |outcome: ExecOut| {
            Action::Store(
                ResultMsg {
                    version: wire::VERSION,
                    id: msg.id,
                    worker: core.name.clone(),
                    outcome,
                },
                ttl,
            )
        };
        let action = match (held.fate, outcome) {
            (Fate::Cancelled, _) => Action::Ack,
            (Fate::HandBack, _) => Action::Requeue(TaskMsg {
                earlier: msg.earlier,
                ..msg.clone()
            }),
            (Fate::TimedOut(ms), _) => result(Err(WireError::TimedOut(ms))),
            (Fate::Run, Ok(out)) => result(out),
            (Fate::Run, Err(err)) if err.is_worker_died() => {
                let deliveries = u64::from(msg.earlier) + u64::from(held.delivered);
                if deliveries >= u64::from(msg.max_deliveries) {
                    let reason =
                        format!("it killed its worker process {deliveries} times (last: {err})");
                    Action::DeadLetter {
                        fields: wire::encode(&msg),
                        reason: reason.clone(),
                        deliveries,
                        result: Some((
                            ResultMsg {
                                version: wire::VERSION,
                                id: msg.id,
                                worker: core.name.clone(),
                                outcome: Err(WireError::DeadLettered { deliveries, reason }),
                            },
                            ttl,
                        )),
                    }
                } else {
                    tracing::warn!(
                        "troika worker {}: task {} killed its process ({err}); queued again",
                        core.name,
                        msg.id
                    );
                    Action::Requeue(TaskMsg {
                        earlier: u32::try_from(deliveries).unwrap_or(u32::MAX),
                        ..msg.clone()
                    })
                }
            }
            (Fate::Run, Err(err)) => result(Err(WireError::from_task_error(&err))),
        };
        let _ = core.done.send(Done {
            entry,
            action,
            client: Some(msg.client.clone()),
        });
    }
}

/// Store outcomes, then ack and delete their entries, a batch per `MULTI`.
async fn completer(
    core: Arc<Core>,
    mut conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Done>,
    url: String,
) {
    let tasks = core.keys.tasks();
    let dead = core.keys.dead();
    let mut backoff = Backoff::new();
    let mut batch: Vec<Done> = Vec::new();
    let mut failing = false;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(done) => batch.push(done),
                None => return,
            }
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(done) => batch.push(done),
                    Err(_) => break,
                }
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Each client's result stream gets its TTL once per batch; the
        // entries are acked and deleted with one XACK and one XDEL.
        let mut clients: Vec<(&str, u64)> = Vec::new();
        let store = |pipe: &mut redis::Pipeline, result: &ResultMsg, client: &str| {
            pipe.cmd("XADD")
                .arg(core.keys.results(client))
                .arg("*")
                .arg(wire::FIELD)
                .arg(wire::encode(result))
                .ignore();
        };
        for done in &batch {
            let client = done.client.as_deref().unwrap_or("");
            match &done.action {
                Action::Store(result, ttl) => {
                    store(&mut pipe, result, client);
                    clients.push((client, *ttl));
                }
                Action::Requeue(msg) => {
                    pipe.cmd("XADD")
                        .arg(&tasks)
                        .arg("*")
                        .arg(wire::FIELD)
                        .arg(wire::encode(msg))
                        .ignore();
                }
                Action::DeadLetter {
                    fields,
                    reason,
                    deliveries,
                    result,
                } => {
                    pipe.cmd("XADD")
                        .arg(&dead)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(wire::DEAD_LETTER_MAXLEN)
                        .arg("*")
                        .arg("entry")
                        .arg(&done.entry)
                        .arg("reason")
                        .arg(reason)
                        .arg("deliveries")
                        .arg(*deliveries)
                        .arg("worker")
                        .arg(&core.name)
                        .arg(wire::FIELD)
                        .arg(fields.as_slice())
                        .ignore();
                    if let (Some((result, ttl)), Some(client)) = (result, &done.client) {
                        store(&mut pipe, result, client);
                        clients.push((client, *ttl));
                    }
                }
                Action::Ack => {}
            }
        }
        clients.sort_unstable();
        clients.dedup_by(|a, b| a.0 == b.0);
        for (client, ttl) in clients {
            pipe.cmd("PEXPIRE")
                .arg(core.keys.results(client))
                .arg(ttl.max(1))
                .ignore();
        }
        let entries: Vec<&str> = batch.iter().map(|d| d.entry.as_str()).collect();
        pipe.cmd("XACK")
            .arg(&tasks)
            .arg(wire::GROUP)
            .arg(&entries)
            .ignore()
            .cmd("XDEL")
            .arg(&tasks)
            .arg(&entries)
            .ignore();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if failing {
                    tracing::info!("troika worker {}: storing outcomes again", core.name);
                    failing = false;
                }
                backoff.reset();
                let n = batch.len();
                batch.clear();
                core.permits.add_permits(n);
                core.outstanding.fetch_sub(n, Ordering::AcqRel);
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "troika worker {}: cannot store outcomes in Redis at {} ({err}); retrying with back-off",
                        core.name,
                        conn::redact(&url)
                    );
                    failing = true;
                }
                backoff.wait().await;
            }
        }
    }
}

/// Announce the worker every second.
async fn heartbeat(
    core: Arc<Core>,
    mut conn: ConnectionManager,
    host: String,
    processes: usize,
    started: u64,
) {
    let key = core.keys.worker(&core.name);
    loop {
        let now = conn::now_ms();
        let held = core.held.lock().len();
        let _ = redis::pipe()
            .cmd("ZADD")
            .arg(core.keys.workers())
            .arg(now)
            .arg(&core.name)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(core.keys.workers())
            .arg("-inf")
            .arg(now.saturating_sub(60_000))
            .ignore()
            .cmd("HSET")
            .arg(&key)
            .arg("host")
            .arg(&host)
            .arg("pid")
            .arg(std::process::id())
            .arg("processes")
            .arg(processes)
            .arg("started_ms")
            .arg(started)
            .arg("held")
            .arg(held)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(10_000)
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Renew the lease of every held entry every third of the lease.
async fn renewer(core: Arc<Core>, mut conn: ConnectionManager, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let ids: Vec<String> = core.held.lock().keys().cloned().collect();
        for chunk in ids.chunks(500) {
            let renewed = redis::cmd("XCLAIM")
                .arg(core.keys.tasks())
                .arg(wire::GROUP)
                .arg(&core.name)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async::<Vec<String>>(&mut conn)
                .await;
            match renewed {
                Ok(kept) => cancel_vanished(&core, chunk, &kept),
                Err(err) => {
                    tracing::warn!("troika worker {}: cannot renew leases ({err})", core.name);
                    break;
                }
            }
        }
    }
}

/// Stop the held tasks of `asked` whose entries Redis no longer has (`kept`
/// lists those it has). A client deletes the entry of a task it cancels
/// (`XDEL`) as well as announcing the cancel, so a worker that missed the
/// announcement (cut off from Redis at the time) learns of the cancel at its
/// next renewal. An entry that a Redis restart lost is stopped too: its
/// client fails it as lost.
fn cancel_vanished(core: &Core, asked: &[String], kept: &[String]) {
    if kept.len() == asked.len() {
        return;
    }
    let kept: std::collections::HashSet<&str> = kept.iter().map(String::as_str).collect();
    let handles: Vec<Handle<ExecOut>> = {
        let mut held = core.held.lock();
        asked
            .iter()
            .filter(|id| !kept.contains(id.as_str()))
            .filter_map(|id| {
                let h = held.get_mut(id).filter(|h| h.fate == Fate::Run)?;
                tracing::info!(
                    "troika worker {}: task {} of client {} is gone from the queue \
                     (cancelled); stopping it",
                    core.name,
                    h.msg.id,
                    h.msg.client
                );
                h.fate = Fate::Cancelled;
                h.handle.take()
            })
            .collect()
    };
    for handle in handles {
        handle.cancel();
    }
}

/// Take over entries whose worker stopped renewing them.
async fn claimer(core: Arc<Core>, mut conn: ConnectionManager, lease: Duration, batch: usize) {
    let mut cursor = "0-0".to_owned();
    loop {
        tokio::time::sleep(lease / 2).await;
        if core.stopping.load(Ordering::Relaxed) {
            return;
        }
        // Wait for room like the reader does (the semaphore is fair, so the
        // reader, which takes all the room there is, cannot starve this).
        let Ok(first) = core.permits.acquire().await else {
            return;
        };
        first.forget();
        let n = take_permits(&core.permits, 1, batch);
        let claimed = redis::cmd("XAUTOCLAIM")
            .arg(core.keys.tasks())
            .arg(wire::GROUP)
            .arg(&core.name)
            .arg(lease.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(n)
            .query_async::<StreamAutoClaimReply>(&mut conn)
            .await;
        let reply = match claimed {
            Ok(reply) => reply,
            Err(err) => {
                core.permits.add_permits(n);
                tracing::warn!("troika worker {}: cannot claim tasks ({err})", core.name);
                continue;
            }
        };
        cursor = reply.next_stream_id.clone();
        let entries = reply.claimed;
        core.permits.add_permits(n - entries.len().min(n));
        if entries.is_empty() {
            continue;
        }
        // How often each was delivered (XAUTOCLAIM counted this one).
        let mut pipe = redis::pipe();
        for entry in &entries {
            pipe.cmd("XPENDING")
                .arg(core.keys.tasks())
                .arg(wire::GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let counts: Vec<Vec<(String, String, u64, u64)>> =
            pipe.query_async(&mut conn).await.unwrap_or_default();
        for (i, entry) in entries.into_iter().enumerate() {
            let delivered = counts
                .get(i)
                .and_then(|c| c.first())
                .map_or(2, |c| u32::try_from(c.3).unwrap_or(u32::MAX));
            tracing::info!(
                "troika worker {}: took over task entry {} (delivery {delivered})",
                core.name,
                entry.id
            );
            dispatch(&core, entry, delivered);
        }
    }
}

/// Kill held tasks whose client cancelled them.
async fn canceller(core: Arc<Core>, client: redis::Client) {
    let mut backoff = Backoff::new();
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(_) => {
                backoff.wait().await;
                continue;
            }
        };
        if pubsub.subscribe(core.keys.cancel_channel()).await.is_err() {
            backoff.wait().await;
            continue;
        }
        backoff.reset();
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Some((client_id, id)) = payload.rsplit_once(':') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            let handle = {
                let mut held = core.held.lock();
                held.values_mut()
                    .find(|h| h.msg.id == id && h.msg.client == client_id && h.fate == Fate::Run)
                    .and_then(|h| {
                        h.fate = Fate::Cancelled;
                        h.handle.take()
                    })
            };
            if let Some(handle) = handle {
                handle.cancel();
            }
        }
        backoff.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadAhead;

    /// Completions `gap_ns` apart, each with a task waiting behind it.
    fn paced(gap_ns: u64, processes: usize) -> ReadAhead {
        let pace = ReadAhead::default();
        for i in 1..=64 {
            pace.record(i * gap_ns, processes, true);
        }
        pace
    }

    #[test]
    fn holds_everything_allowed_until_tasks_are_timed() {
        assert_eq!(ReadAhead::default().limit(2, 32), 32);
        // Completions with nothing waiting say nothing about a task's cost.
        let pace = ReadAhead::default();
        for i in 1..=10 {
            pace.record(i * 50_000_000, 2, false);
        }
        assert_eq!(pace.limit(2, 32), 32);
    }

    #[test]
    fn slow_tasks_are_not_hoarded() {
        // 10 ms tasks on one process: the running one and one more.
        assert_eq!(paced(10_000_000, 1).limit(1, 16), 2);
        // Two processes finishing alternately every 5 ms: 10 ms a task.
        assert_eq!(paced(5_000_000, 2).limit(2, 32), 3);
    }

    #[test]
    fn trivial_tasks_fill_the_prefetch() {
        assert_eq!(paced(20_000, 1).limit(1, 16), 16);
        // 0.5 ms tasks: 2 ms of work ahead is four tasks.
        assert_eq!(paced(500_000, 1).limit(1, 16), 5);
    }

    #[test]
    fn the_average_follows_a_change_of_pace() {
        let pace = paced(10_000_000, 1);
        let base = 64 * 10_000_000;
        for i in 1..=64 {
            pace.record(base + i * 20_000, 1, true);
        }
        assert_eq!(pace.limit(1, 16), 16);
    }
}
