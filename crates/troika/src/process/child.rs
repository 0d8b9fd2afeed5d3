//! [`Process`]: one function call in its own child process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::process::Signal;

use super::channel::{CallSender, Dir, RingReader, Rings};
use super::registry::RemoteFn;
use super::spawn::{self, ChildProc, SpawnConfig};
use super::task;
use super::wire::{self, FrameReader};
use crate::futures::{ErrorKind, Exit, TaskError};

/// Why a [`Process`] could not be started.
///
/// Either its argument cannot be sent ([`is_serialization`](Self::is_serialization):
/// it cannot be encoded, or it is over the frame limit), or the system
/// refused to start the child process or the thread that talks to it: then
/// the [`io::Error`](std::io::Error) is the error's
/// [`source`](std::error::Error::source).
///
/// # Examples
///
/// ```
/// use troika::Process;
///
/// #[derive(serde::Deserialize)]
/// struct Secret;
///
/// impl serde::Serialize for Secret {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(serde::ser::Error::custom("a secret stays here"))
///     }
/// }
///
/// troika::remote! {
///     fn tell(secret: Secret) -> bool { let _ = secret; true }
/// }
///
/// fn main() {
///     troika::init();
///     let err = Process::spawn(tell, Secret).unwrap_err();
///     assert!(err.is_serialization());
///     assert!(err.to_string().contains("a secret stays here"));
///     assert!(err.io_error().is_none());
/// }
/// ```
#[derive(Debug)]
pub struct SpawnError {
    kind: SpawnErrorKind,
}

#[derive(Debug)]
enum SpawnErrorKind {
    Argument(TaskError),
    Start {
        what: &'static str,
        source: std::io::Error,
    },
}

impl SpawnError {
    fn start(what: &'static str, source: std::io::Error) -> SpawnError {
        SpawnError {
            kind: SpawnErrorKind::Start { what, source },
        }
    }

    /// The argument could not be encoded, or is over the frame limit.
    pub fn is_serialization(&self) -> bool {
        matches!(self.kind, SpawnErrorKind::Argument(_))
    }

    /// The I/O error that kept the child process (or its I/O thread) from
    /// starting, if that is what happened.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match &self.kind {
            SpawnErrorKind::Start { source, .. } => Some(source),
            SpawnErrorKind::Argument(_) => None,
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            SpawnErrorKind::Argument(err) => err.fmt(f),
            SpawnErrorKind::Start { what, .. } => write!(f, "could not start {what}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            SpawnErrorKind::Argument(_) => None,
            SpawnErrorKind::Start { source, .. } => Some(source),
        }
    }
}

/// Configures a [`Process`]: its name and memory cap.
#[derive(Clone, Debug, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    memory_cap: Option<u64>,
}

impl ProcessBuilder {
    /// The process's name (default `Process-N`, as in Python).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Limit the child's address space to `bytes` (`RLIMIT_AS`).
    pub fn memory_cap(mut self, bytes: u64) -> Self {
        self.memory_cap = Some(bytes);
        self
    }

    /// Start `f(arg)` in a new child process.
    pub fn spawn<F: RemoteFn>(self, f: F, arg: F::Arg) -> Result<Process<F::Output>, SpawnError> {
        let _ = f;
        static COUNTER: AtomicUsize = AtomicUsize::new(1);
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        // Pipe ends and exports in `arg` count as sent only once the child
        // exists to receive them: on any error below, `transfer` is dropped
        // before `arg`, so a pipe end in it stays ours and closes its pipe.
        let (frame, transfer) = crate::ipc::capture(|| task::encode_call::<F>(1, &arg));
        let frame = frame.map_err(|e| SpawnError {
            kind: SpawnErrorKind::Argument(e),
        })?;
        let size = (frame.len() - wire::HEADER) as u64;
        if size > wire::DEFAULT_MAX_BODY {
            let limit = wire::DEFAULT_MAX_BODY;
            return Err(SpawnError {
                kind: SpawnErrorKind::Argument(TaskError::new(ErrorKind::FrameTooLarge {
                    size,
                    limit,
                })),
            });
        }
        let spawned = spawn::spawn_worker(SpawnConfig::capture(self.memory_cap))
            .map_err(|e| SpawnError::start("a child process", e))?;
        let child = Arc::new(spawned.child);
        let shared = Arc::new(Outcome {
            state: Mutex::new(State {
                result: None,
                exit: None,
            }),
            cond: Condvar::new(),
        });
        let io_child = Arc::clone(&child);
        let io_shared = Arc::clone(&shared);
        let (to_child, from_child, rings) = (spawned.to_child, spawned.from_child, spawned.rings);
        let io = std::thread::Builder::new()
            .name(format!("troika-{name}"))
            .spawn(move || {
                let result = talk::<F::Output>(&frame, to_child, from_child, rings, &io_child);
                if let Some(Err(e)) = &result
                    && e.is_frame_too_large()
                {
                    // It lied about its reply: it may never exit by itself.
                    io_child.signal(Signal::KILL);
                }
                let exit = io_child.wait_exit(None).unwrap_or(Exit::Unknown);
                let result = result.unwrap_or(Err(TaskError::new(ErrorKind::WorkerDied(exit))));
                let mut state = io_shared.state.lock();
                state.result = Some(result);
                state.exit = Some(exit);
                io_shared.cond.notify_all();
            })
            .map_err(|e| SpawnError::start("the child's I/O thread", e))?;
        transfer.commit();
        Ok(Process {
            name,
            child,
            shared,
            io: Some(io),
        })
    }
}

/// Send the call, close the socket, read the reply. `None` if the child died
/// before answering.
fn talk<R: serde::de::DeserializeOwned + Send + 'static>(
    frame: &super::framebuf::Frame,
    to_child: std::os::fd::OwnedFd,
    from_child: std::os::fd::OwnedFd,
    rings: Option<std::sync::Arc<Rings>>,
    child: &ChildProc,
) -> Option<Result<R, TaskError>> {
    // The call may be large: the child reads it whole before it answers, so
    // writing first cannot deadlock.
    let mut sender = CallSender::new(to_child, rings.as_ref());
    let sent = sender.send_frames([frame].into_iter());
    // End of file for the child, whose large reply's memfd still comes on
    // this socket (see `wire::send_reply`).
    let _ = rustix::net::shutdown(&sender, rustix::net::Shutdown::Write);
    let mut reader = FrameReader::new(from_child, Duration::from_micros(50)).ok()?;
    if let Some(rings) = rings {
        reader.use_ring(RingReader::new(rings, Dir::Replies));
    }
    let to_child = sender;
    reader.fds_from(move || wire::recv_fd(std::os::fd::AsFd::as_fd(&to_child)));
    // A process the child forked may keep the pipe open after the child
    // died: stop waiting when the child exits.
    reader.watch_exit(child.pidfd().try_clone_to_owned().ok()?);
    loop {
        let (header, body) = match reader.next_frame() {
            Ok(frame) => frame?,
            // A reply announced over the frame limit was refused unread.
            Err(_) => {
                let refused = reader.refused()?;
                return Some(Err(TaskError::new(ErrorKind::FrameTooLarge {
                    size: refused.len,
                    limit: wire::DEFAULT_MAX_BODY,
                })));
            }
        };
        if header.kind == wire::REPLY {
            sent.ok()?;
            let (promise, handle) = crate::futures::pair(0);
            let sink = task::One { promise };
            task::Sink::finish(&sink, header.status, body, &|_| {});
            return Some(handle.result());
        }
    }
}

struct State<R> {
    result: Option<Result<R, TaskError>>,
    exit: Option<Exit>,
}

struct Outcome<R> {
    state: Mutex<State<R>>,
    cond: Condvar,
}

/// A function call running in its own child process, like Python's
/// `multiprocessing.Process`.
///
/// The child is this binary re-executed (see [`init`](crate::init)); the
/// function is one defined with [`remote!`](crate::remote), its argument and
/// result cross the process boundary serialized. The child exits once the
/// call returns. Dropping a `Process` does not stop it; it dies with the
/// parent at the latest, and is always reaped. The argument and the result
/// may each encode to at most 1 GiB: a longer argument fails the spawn, a
/// longer result fails [`join`](Process::join) with
/// [`ErrorKind::FrameTooLarge`] (and the child is killed).
///
/// # Examples
///
/// ```
/// use troika::Process;
///
/// troika::remote! {
///     fn shout(word: String) -> String { word.to_uppercase() }
/// }
///
/// fn main() {
///     troika::init();
///     let p = Process::builder().name("shouter").spawn(shout, "hi".into()).unwrap();
///     assert_eq!(p.name(), "shouter");
///     assert!(p.pid() > 0);
///     assert_eq!(p.join().unwrap(), "HI");
/// }
/// ```
pub struct Process<R> {
    name: String,
    child: Arc<ChildProc>,
    shared: Arc<Outcome<R>>,
    io: Option<JoinHandle<()>>,
}

impl<R: Send + 'static> Process<R> {
    /// Start `f(arg)` in a new child process with default settings.
    pub fn spawn<F: RemoteFn<Output = R>>(f: F, arg: F::Arg) -> Result<Process<R>, SpawnError> {
        ProcessBuilder::default().spawn(f, arg)
    }
}

impl Process<()> {
    /// A builder for a named or memory-capped process.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }
}

impl<R> Process<R> {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.child.try_exit().is_none()
    }

    /// How the child ended: `None` while it runs.
    pub fn exit_status(&self) -> Option<Exit> {
        self.shared
            .state
            .lock()
            .exit
            .or_else(|| self.child.try_exit())
    }

    /// Wait at most `timeout` for the child to end; true if it has.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::{Exit, Process};
    ///
    /// troika::remote! {
    ///     fn forever() -> bool { loop { std::thread::park(); } }
    /// }
    ///
    /// fn main() {
    ///     troika::init();
    ///     let p = Process::spawn(forever, ()).unwrap();
    ///     assert!(!p.join_timeout(Duration::from_millis(10)));
    ///     assert!(p.is_alive());
    ///     p.kill();
    ///     assert!(p.join_timeout(Duration::from_secs(60)));
    ///     assert_eq!(p.exit_status(), Some(Exit::Signal(9)));
    ///     assert!(p.join().unwrap_err().is_worker_died());
    /// }
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.state.lock();
        while state.result.is_none() {
            match deadline {
                Some(deadline) => {
                    if self
                        .shared
                        .cond
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return state.result.is_some();
                    }
                }
                None => self.shared.cond.wait(&mut state),
            }
        }
        true
    }

    /// Wait for the child to end and return the function's value, or why
    /// there is none (it panicked, it died, it was killed…).
    pub fn join(mut self) -> Result<R, TaskError> {
        if let Some(io) = self.io.take() {
            let _ = io.join();
        }
        let mut state = self.shared.state.lock();
        state.result.take().unwrap_or_else(|| {
            Err(TaskError::new(ErrorKind::Failed(
                "the process's outcome is unknown".into(),
            )))
        })
    }

    /// Ask the child to stop (`SIGTERM`).
    pub fn terminate(&self) {
        self.child.signal(Signal::TERM);
    }

    /// Kill the child (`SIGKILL`).
    pub fn kill(&self) {
        self.child.signal(Signal::KILL);
    }
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("exit", &self.exit_status())
            .finish()
    }
}
