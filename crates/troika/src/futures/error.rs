//! The typed errors of the futures API.

use std::fmt;
use std::time::Duration;

/// Why a task produced no value.
///
/// Every executor reports failures with this one type, so code that consumes
/// handles does not care whether the task ran on a thread, in a child process
/// or on the async runtime. Inspect it with the `is_*` helpers or match on
/// [`TaskError::kind`].
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let pool = ThreadPool::new(1).unwrap();
/// let err = pool.submit(|| -> u32 { panic!("boom") }).result().unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.panic_message(), Some("boom"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: ErrorKind,
}

/// The reason behind a [`TaskError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The task panicked; the panic message is kept (or a placeholder when the
    /// payload was not a string).
    Panicked(String),
    /// The task ran longer than the executor's per-task timeout, counted from
    /// the moment it started running.
    TimedOut(Duration),
    /// The task was cancelled before it produced a value.
    Cancelled,
    /// The executor was shut down before the task could run.
    ShutDown,
    /// The worker process running the task died.
    WorkerDied(Exit),
    /// The task's arguments or result could not be serialized or deserialized;
    /// the message says on which side and at which stage, and includes the
    /// message of the error the value's own `Serialize` or `Deserialize`
    /// raised (such as `S::Error::custom("bad value 666")`).
    Serialization(String),
    /// The executor could not run the task for another reason (for example,
    /// the function is unknown to the worker); the message says why.
    Failed(String),
    /// A message between the process pool and a worker (the task's encoded
    /// argument, or its reply) was longer than the frame limit, so it was
    /// refused before anything was allocated for it. A worker that announces
    /// such a reply is killed and replaced. The limit is set with
    /// [`ProcessPoolBuilder::max_frame_bytes`](crate::ProcessPoolBuilder::max_frame_bytes).
    FrameTooLarge {
        /// The length the message has (or its header announced), in bytes.
        size: u64,
        /// The limit it broke, in bytes.
        limit: u64,
    },
    /// The pool's initializer failed (it panicked, or killed the worker
    /// process it ran in), so the pool is broken and runs no task, like
    /// Python's `BrokenProcessPool`; the message says how it failed.
    InitializerFailed(String),
    /// A distributed executor found no worker to run the task (none is
    /// registered, or none took it within the executor's limit); the message
    /// says which queue and how long it waited.
    NoWorker(String),
    /// A distributed executor could not reach its broker (such as Redis) to
    /// send the task or learn its outcome within its timeout; the message
    /// names the broker and the last error.
    BrokerUnreachable(String),
    /// The task was delivered to workers more times than the executor allows
    /// (each time its worker died or it was handed back), so it was given up
    /// and set aside (in a dead-letter queue an operator can inspect).
    DeadLettered {
        /// How many times it was delivered.
        deliveries: u64,
        /// Why the last delivery failed.
        reason: String,
    },
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
    /// It could not be observed (for example, it was already reaped elsewhere).
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(sig) => write!(f, "signal {sig} ({})", signal_name(sig)),
            Exit::Unknown => f.write_str("an unknown status"),
        }
    }
}

/// The conventional name of a Linux signal number, such as `SIGKILL`.
pub fn signal_name(sig: i32) -> &'static str {
    const NAMES: [&str; 32] = [
        "signal 0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("a real-time signal")
}

impl TaskError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind) -> TaskError {
        TaskError { kind }
    }

    pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> TaskError {
        TaskError::new(ErrorKind::Panicked(panic_message(payload)))
    }

    pub(crate) fn cancelled() -> TaskError {
        TaskError::new(ErrorKind::Cancelled)
    }

    pub(crate) fn shut_down() -> TaskError {
        TaskError::new(ErrorKind::ShutDown)
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, ErrorKind::Panicked(_))
    }

    /// The panic message, if the task panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Panicked(msg) => Some(msg),
            _ => None,
        }
    }

    /// The task hit the executor's per-task timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::TimedOut(_))
    }

    /// The task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, ErrorKind::Cancelled)
    }

    /// The executor was shut down before the task ran.
    pub fn is_shut_down(&self) -> bool {
        matches!(self.kind, ErrorKind::ShutDown)
    }

    /// The worker process died while running the task.
    pub fn is_worker_died(&self) -> bool {
        matches!(self.kind, ErrorKind::WorkerDied(_))
    }

    /// The task's input or output could not be (de)serialized.
    pub fn is_serialization(&self) -> bool {
        matches!(self.kind, ErrorKind::Serialization(_))
    }

    /// No worker of a distributed executor was there to run the task.
    pub fn is_no_worker(&self) -> bool {
        matches!(self.kind, ErrorKind::NoWorker(_))
    }

    /// A distributed executor could not reach its broker.
    pub fn is_broker_unreachable(&self) -> bool {
        matches!(self.kind, ErrorKind::BrokerUnreachable(_))
    }

    /// The task was delivered too many times and dead-lettered.
    pub fn is_dead_lettered(&self) -> bool {
        matches!(self.kind, ErrorKind::DeadLettered { .. })
    }

    /// The task's argument or reply was over the process pool's frame limit.
    pub fn is_frame_too_large(&self) -> bool {
        matches!(self.kind, ErrorKind::FrameTooLarge { .. })
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskError").field(&self.kind).finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Panicked(msg) => write!(f, "task panicked: {msg}"),
            ErrorKind::TimedOut(limit) => write!(f, "task timed out after {limit:?}"),
            ErrorKind::Cancelled => f.write_str("task was cancelled"),
            ErrorKind::ShutDown => f.write_str("executor was shut down before the task ran"),
            ErrorKind::WorkerDied(exit) => write!(f, "worker process died with {exit}"),
            ErrorKind::Serialization(msg) => write!(f, "serialization failed: {msg}"),
            ErrorKind::Failed(msg) => write!(f, "task failed: {msg}"),
            ErrorKind::FrameTooLarge { size, limit } => write!(
                f,
                "a message of {size} bytes exceeds the frame limit of {limit} bytes \
                 (see ProcessPoolBuilder::max_frame_bytes)"
            ),
            ErrorKind::InitializerFailed(msg) => {
                write!(f, "the pool is broken: its initializer failed: {msg}")
            }
            ErrorKind::NoWorker(msg) => write!(f, "no worker is reachable: {msg}"),
            ErrorKind::BrokerUnreachable(msg) => write!(f, "the broker is unreachable: {msg}"),
            ErrorKind::DeadLettered { deliveries, reason } => write!(
                f,
                "task given up after {deliveries} deliveries and dead-lettered: {reason}"
            ),
        }
    }
}

impl std::error::Error for TaskError {}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// A task that could not be submitted; the task is handed back.
///
/// Returned by `try_submit` when the executor is shut down or its bounded
/// queue is full.
#[derive(thiserror::Error)]
#[error("{reason}")]
pub struct SubmitError<T> {
    /// The task that was not submitted.
    pub task: T,
    /// Why it was refused.
    pub reason: SubmitErrorReason,
}

/// Why [`SubmitError`] was returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitErrorReason {
    /// The executor is shut down (or closed, in `multiprocessing.Pool` terms).
    #[error("executor is shut down")]
    ShutDown,
    /// The executor's bounded queue is full.
    #[error("executor queue is full")]
    Full,
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// A configuration value that was out of range, such as zero workers or a
/// zero chunk size.
///
/// A builder reports it inside a [`BuildError`] (see
/// [`BuildError::is_config`]); calls that take a setting directly, such as
/// [`ThreadPool::imap`](crate::ThreadPool::imap)'s chunk size, return it
/// as it is.
///
/// # Examples
///
/// ```
/// let pool = troika::ThreadPool::new(1).unwrap();
/// let err = pool.imap(|x: u32| x, 0..10, 0).err().unwrap();
/// assert!(err.to_string().contains("chunk size"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub(crate) String);

/// Why an executor could not be built.
///
/// Either a setting was out of range ([`is_config`](BuildError::is_config),
/// with the [`ConfigError`] saying which), or the system refused to start
/// one of its threads, worker processes or its runtime: then the
/// [`io::Error`](std::io::Error) is the error's
/// [`source`](std::error::Error::source) (so `anyhow`'s `{:#}` prints both).
/// Whatever a failed build had started
/// is stopped again before the error is returned.
///
/// # Examples
///
/// ```
/// use troika::ThreadPool;
///
/// let err = ThreadPool::new(0).unwrap_err();
/// assert!(err.is_config());
/// assert!(err.io_error().is_none());
///
/// // A thread whose stack cannot be allocated does not start.
/// let err = ThreadPool::builder().stack_size(usize::MAX).build().unwrap_err();
/// assert!(err.io_error().is_some());
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Debug)]
pub struct BuildError {
    kind: BuildErrorKind,
}

#[derive(Debug)]
enum BuildErrorKind {
    Config(ConfigError),
    Start {
        what: &'static str,
        source: std::io::Error,
    },
}

impl BuildError {
    /// The system refused to start `what` (a thread, a worker process, the
    /// runtime...).
    pub(crate) fn start(what: &'static str, source: std::io::Error) -> BuildError {
        BuildError {
            kind: BuildErrorKind::Start { what, source },
        }
    }

    /// A setting was out of range (zero workers, a zero timeout...).
    pub fn is_config(&self) -> bool {
        matches!(self.kind, BuildErrorKind::Config(_))
    }

    /// The I/O error that kept a thread, a worker process or the runtime
    /// from starting, if that is what happened.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match &self.kind {
            BuildErrorKind::Start { source, .. } => Some(source),
            BuildErrorKind::Config(_) => None,
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(err: ConfigError) -> BuildError {
        BuildError {
            kind: BuildErrorKind::Config(err),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BuildErrorKind::Config(err) => err.fmt(f),
            BuildErrorKind::Start { what, .. } => write!(f, "could not start {what}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            // The configuration error is this error's whole message.
            BuildErrorKind::Config(_) => None,
            BuildErrorKind::Start { source, .. } => Some(source),
        }
    }
}

/// The checks every executor builder shares.
pub(crate) mod checks {
    use std::time::Duration;

    use super::ConfigError;

    /// The worker count asked for, or the available parallelism; zero is an error.
    pub(crate) fn workers(requested: Option<usize>) -> Result<usize, ConfigError> {
        match requested {
            Some(0) => Err(ConfigError("a pool needs at least one worker".into())),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// A per-task timeout, if any, must be longer than zero.
    pub(crate) fn timeout(timeout: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
        match timeout {
            Some(Duration::ZERO) => Err(ConfigError(
                "the task timeout must be longer than zero".into(),
            )),
            other => Ok(other),
        }
    }

    /// A queue bound, if any, must hold at least one task.
    pub(crate) fn queue_capacity(capacity: Option<usize>) -> Result<Option<usize>, ConfigError> {
        match capacity {
            Some(0) => Err(ConfigError("the queue capacity must be at least 1".into())),
            other => Ok(other),
        }
    }
}
