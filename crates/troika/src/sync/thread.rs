//! [`Thread`]: a named OS thread with a timed join (Python's `threading.Thread`).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use super::Event;
use crate::futures::TaskError;

/// Numbers the default names `Thread-1`, `Thread-2`, … as Python does.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(1);

fn default_name() -> String {
    format!("Thread-{}", NEXT_THREAD.fetch_add(1, Ordering::Relaxed))
}

/// The name of the calling thread (Python's `threading.current_thread().name`).
///
/// The main thread is called `main`; a thread started without a name by
/// something other than troika is `<unnamed>`.
///
/// # Examples
///
/// ```
/// use troika::sync::{Thread, current_thread_name};
///
/// let t = Thread::spawn("worker-7", current_thread_name).unwrap();
/// assert_eq!(t.join().unwrap(), "worker-7");
/// ```
pub fn current_thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
}

/// A type that is a thread's body: the Rust form of subclassing
/// `threading.Thread` and overriding `run`.
///
/// [`Thread::start`] moves the value onto a new thread and calls
/// [`run`](Runnable::run) there; [`Thread::join`] hands the value back, so
/// whatever `run` stored in its fields can be read afterwards.
///
/// # Examples
///
/// ```
/// use troika::sync::{Runnable, Thread};
///
/// struct Summer {
///     upto: u64,
///     total: u64,
/// }
///
/// impl Runnable for Summer {
///     fn run(&mut self) {
///         self.total = (1..=self.upto).sum();
///     }
///     fn name(&self) -> Option<String> {
///         Some(format!("sum-to-{}", self.upto))
///     }
/// }
///
/// let t = Thread::start(Summer { upto: 100, total: 0 }).unwrap();
/// assert_eq!(t.name(), "sum-to-100");
/// assert_eq!(t.join().unwrap().total, 5050);
/// ```
pub trait Runnable: Send + 'static {
    /// The thread's work. Runs once, on the new thread.
    fn run(&mut self);

    /// The thread's name; `None` (the default) gives `Thread-N`.
    fn name(&self) -> Option<String> {
        None
    }
}

/// Configures a [`Thread`] before it starts: its name and stack size.
///
/// # Examples
///
/// ```
/// use troika::sync::Thread;
///
/// let t = Thread::builder()
///     .name("big-stack")
///     .stack_size(8 << 20)
///     .spawn(|| 6 * 7)
///     .unwrap();
/// assert_eq!(t.name(), "big-stack");
/// assert_eq!(t.join().unwrap(), 42);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ThreadBuilder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl ThreadBuilder {
    /// A builder with no name (the thread gets `Thread-N`) and the default
    /// stack size.
    pub fn new() -> ThreadBuilder {
        ThreadBuilder::default()
    }

    /// Names the thread. The name shows in panic messages, in
    /// [`current_thread_name`] and (cut to 15 bytes by Linux) in `top -H`.
    pub fn name(mut self, name: impl Into<String>) -> ThreadBuilder {
        self.name = Some(name.into());
        self
    }

    /// Sets the new thread's stack size in bytes.
    pub fn stack_size(mut self, bytes: usize) -> ThreadBuilder {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts a thread running `f` (Python's `Thread(target=f, args=…).start()`;
    /// capture the arguments in the closure). [`Thread::join`] returns what `f`
    /// returns.
    ///
    /// # Errors
    ///
    /// The operating system refused to create the thread (for example, the
    /// process hit its thread limit), or the name contains a NUL byte.
    pub fn spawn<F, T>(self, f: F) -> io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.unwrap_or_else(default_name);
        if name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "thread name contains a NUL byte",
            ));
        }
        let mut builder = std::thread::Builder::new().name(name.clone());
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let finished = Arc::new(Event::new());
        let signal = FinishOnDrop(Arc::clone(&finished));
        let handle = builder.spawn(move || {
            // Set when `f` returns *or* unwinds, so a timed join never waits
            // for a thread that already panicked.
            let _signal = signal;
            f()
        })?;
        Ok(Thread {
            name: name.into(),
            id: handle.thread().id(),
            handle,
            finished,
        })
    }

    /// Starts a thread that calls `runnable.run()` and then hands `runnable`
    /// back through [`Thread::join`]. A name set on the builder wins over
    /// [`Runnable::name`].
    ///
    /// # Errors
    ///
    /// As for [`spawn`](ThreadBuilder::spawn).
    pub fn start<R: Runnable>(mut self, mut runnable: R) -> io::Result<Thread<R>> {
        if self.name.is_none() {
            self.name = runnable.name();
        }
        self.spawn(move || {
            runnable.run();
            runnable
        })
    }
}

/// Raises the thread's completion event when dropped, i.e. when the thread's
/// closure has returned or unwound.
struct FinishOnDrop(Arc<Event>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// A named, running OS thread whose result can be collected with a timeout
/// (Python's `threading.Thread`).
///
/// Start one with [`Thread::spawn`] (a closure: Python's `target=`/`args=`),
/// [`Thread::start`] (a [`Runnable`]: Python's subclass with `run`) or
/// [`Thread::builder`]. Unlike Python, a troika thread starts running as soon
/// as it is created; there is no separate `start()` step.
///
/// [`join`](Thread::join) waits and returns the closure's value, or a
/// [`TaskError`] whose [`is_panic`](TaskError::is_panic) is true if the
/// thread panicked. [`join_timeout`](Thread::join_timeout) gives up after a
/// while and hands the `Thread` back so you can try again. Both wait on a
/// completion signal raised when the closure returns or unwinds; nothing polls.
///
/// Dropping a `Thread` without joining it detaches the thread: it keeps
/// running, and the process does not wait for it at exit (Python waits for
/// non-daemon threads; join them yourself to get that).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::sync::{JoinTimeoutError, Thread};
///
/// let t = Thread::spawn("adder", || 2 + 2).unwrap();
/// assert_eq!(t.name(), "adder");
/// assert_eq!(t.join().unwrap(), 4);
///
/// // A timed join that gives up hands the thread back.
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let slow = Thread::spawn("slow", move || rx.recv().is_ok()).unwrap();
/// let slow = match slow.join_timeout(Duration::from_millis(10)) {
///     Err(JoinTimeoutError::StillRunning(t)) => t,
///     other => panic!("unexpected {other:?}"),
/// };
/// assert!(slow.is_alive());
/// tx.send(()).unwrap();
/// assert!(slow.join().unwrap());
/// ```
pub struct Thread<T = ()> {
    name: Arc<str>,
    id: ThreadId,
    handle: JoinHandle<T>,
    finished: Arc<Event>,
}

impl Thread<()> {
    /// A [`ThreadBuilder`], to set a stack size or to start a thread without
    /// a name.
    pub fn builder() -> ThreadBuilder {
        ThreadBuilder::new()
    }
}

impl<T: Send + 'static> Thread<T> {
    /// Starts a thread called `name` running `f`.
    ///
    /// # Errors
    ///
    /// The operating system refused to create the thread, or `name` contains
    /// a NUL byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::Thread;
    ///
    /// let (n, secs) = (0, 4);
    /// let t = Thread::spawn(format!("loop{n}"), move || secs * 2).unwrap();
    /// assert_eq!(t.join().unwrap(), 8);
    /// ```
    pub fn spawn<F>(name: impl Into<String>, f: F) -> io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        ThreadBuilder::new().name(name).spawn(f)
    }
}

impl<R: Runnable> Thread<R> {
    /// Starts a thread that calls `runnable.run()`; [`join`](Thread::join)
    /// returns `runnable` afterwards. The thread is named by
    /// [`Runnable::name`], or `Thread-N`.
    ///
    /// # Errors
    ///
    /// The operating system refused to create the thread.
    pub fn start(runnable: R) -> io::Result<Thread<R>> {
        ThreadBuilder::new().start(runnable)
    }
}

impl<T> Thread<T> {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The thread's id (Python's `ident`).
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Whether the thread's closure is still running. Becomes `false` as soon
    /// as the closure returns or panics.
    pub fn is_alive(&self) -> bool {
        !self.finished.is_set()
    }

    /// Waits for the thread to finish and returns the closure's value.
    ///
    /// # Errors
    ///
    /// A [`TaskError`] with [`is_panic`](TaskError::is_panic) true and the
    /// panic message if the thread panicked.
    pub fn join(self) -> Result<T, TaskError> {
        self.handle
            .join()
            .map_err(|payload| TaskError::panicked(&*payload))
    }

    /// Waits at most `timeout` for the thread to finish.
    ///
    /// # Errors
    ///
    /// [`JoinTimeoutError::StillRunning`] with this `Thread` if the thread is
    /// still running after `timeout`; [`JoinTimeoutError::Failed`] if it
    /// panicked.
    pub fn join_timeout(self, timeout: Duration) -> Result<T, JoinTimeoutError<T>> {
        if self.finished.wait_timeout(timeout) {
            self.join().map_err(JoinTimeoutError::Failed)
        } else {
            Err(JoinTimeoutError::StillRunning(self))
        }
    }

    /// Waits until the thread has finished, without collecting its result.
    pub fn wait(&self) {
        self.finished.wait();
    }

    /// Waits at most `timeout` for the thread to finish, without collecting
    /// its result; returns whether it finished. This is Python's
    /// `t.join(timeout); not t.is_alive()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::{Event, Thread};
    /// use std::sync::Arc;
    ///
    /// let go = Arc::new(Event::new());
    /// let t = {
    ///     let go = Arc::clone(&go);
    ///     Thread::spawn("waits-for-go", move || go.wait()).unwrap()
    /// };
    /// assert!(!t.wait_timeout(Duration::from_millis(5))); // still waiting for `go`
    /// go.set();
    /// assert!(t.wait_timeout(Duration::from_secs(10)));
    /// t.join().unwrap(); // the result is still there to collect
    /// ```
    #[must_use = "false means the thread is still running"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.finished.wait_timeout(timeout)
    }
}

impl<T> fmt::Debug for Thread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// Why [`Thread::join_timeout`] returned no value.
pub enum JoinTimeoutError<T> {
    /// The thread was still running when the timeout passed; here it is back,
    /// to join again later.
    StillRunning(Thread<T>),
    /// The thread finished by panicking.
    Failed(TaskError),
}

impl<T> JoinTimeoutError<T> {
    /// Whether the thread was still running.
    pub fn is_still_running(&self) -> bool {
        matches!(self, JoinTimeoutError::StillRunning(_))
    }

    /// The thread, if it was still running.
    pub fn into_thread(self) -> Option<Thread<T>> {
        match self {
            JoinTimeoutError::StillRunning(t) => Some(t),
            JoinTimeoutError::Failed(_) => None,
        }
    }
}

impl<T> fmt::Debug for JoinTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinTimeoutError::StillRunning(t) => f.debug_tuple("StillRunning").field(t).finish(),
            JoinTimeoutError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for JoinTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinTimeoutError::StillRunning(t) => write!(f, "thread {:?} is still running", t.name),
            JoinTimeoutError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for JoinTimeoutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinTimeoutError::StillRunning(_) => None,
            JoinTimeoutError::Failed(e) => Some(e),
        }
    }
}
