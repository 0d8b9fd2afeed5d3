//! Starting worker processes safely, and watching them die.
//!
//! A worker is the current binary re-executed (`/proc/self/exe`) with the
//! environment variable [`MARKER`] set to
//! `PARENT_PID:READ_FD:WRITE_FD[:RINGS_FD]`. Its channel ends (a socket to
//! read from, a pipe to write to, and the memfd of the shared rings that the
//! small messages travel through, see `channel.rs`) are created
//! close-on-exec, so no other child started at the same time inherits them;
//! only in the forked child, right before `exec`, are they made inheritable.
//! That pre-exec step also sets the parent-death signal and the optional
//! address-space limit. Everything it calls is a raw
//! system call (rustix), so it is safe in the forked copy of a multi-threaded
//! parent.
//!
//! Every worker is started from one long-lived thread, the *spawner*: Linux
//! delivers the parent-death signal when the thread that forked the child
//! exits, so a worker forked from a short-lived thread would be killed with
//! it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

use super::channel::Rings;
use crate::futures::Exit;

/// The environment variable that turns a re-executed binary into a worker.
pub(crate) const MARKER: &str = "TROIKA_WORKER";

/// The reply pipe's buffer is enlarged to this.
pub(crate) const PIPE_SIZE: usize = 1 << 20;

/// What a new worker needs: its memory cap, and the environment it starts
/// in, captured once (when a pool is built or a `Process` spawned) so that a
/// worker started later to replace another sees the same values.
#[derive(Clone, Debug)]
pub(crate) struct SpawnConfig {
    /// An address-space limit (`RLIMIT_AS`) in bytes.
    pub(crate) memory_cap: Option<u64>,
    /// The environment variables at capture.
    env: Arc<Vec<(OsString, OsString)>>,
    /// The working directory at capture, held open (`O_PATH`) so that it
    /// is the same directory even if it is renamed later; `None` if it
    /// could not be opened (the worker then inherits the spawner's).
    cwd: Option<Arc<OwnedFd>>,
    /// The directory's identity (device, inode), to compare configurations.
    cwd_id: Option<(u64, u64)>,
    /// Bit `n - 1` is set if signal `n` was ignored (`SIG_IGN`) at capture.
    ignored: u64,
}

impl SpawnConfig {
    /// The configuration for workers started now and later: this moment's
    /// environment, working directory and ignored signals.
    pub(crate) fn capture(memory_cap: Option<u64>) -> SpawnConfig {
        let cwd = rustix::fs::open(
            ".",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let cwd_id = cwd
            .as_ref()
            .and_then(|fd| rustix::fs::fstat(fd).ok())
            .map(|st| (st.st_dev, st.st_ino));
        SpawnConfig {
            memory_cap,
            env: Arc::new(std::env::vars_os().collect()),
            cwd: cwd.map(Arc::new),
            cwd_id,
            ignored: ignored_signals(),
        }
    }
}

impl PartialEq for SpawnConfig {
    fn eq(&self, other: &SpawnConfig) -> bool {
        self.memory_cap == other.memory_cap
            && self.cwd_id == other.cwd_id
            && self.ignored == other.ignored
            && self.env == other.env
    }
}

impl Eq for SpawnConfig {}

/// The highest signal number whose disposition a worker copies.
const MAX_SIGNAL: i32 = 64;

/// The signals this process ignores now, as a mask (bit `n - 1` for signal
/// `n`). A handled signal is not copied: its handler is the program's code,
/// which a worker does not run, so in the worker it has its default action,
/// as `exec` leaves it.
fn ignored_signals() -> u64 {
    let mut mask = 0;
    for sig in 1..=MAX_SIGNAL {
        // SAFETY: `sigaction` with a null new action only reads the current
        // one into `old`, a zeroed (valid) `sigaction` owned by this frame.
        let ignored = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
        };
        if ignored {
            mask |= 1 << (sig - 1);
        }
    }
    mask
}

/// A started worker: its process, the socket to it and the pipe from it.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: ChildProc,
    /// Parent → worker.
    pub(crate) to_child: OwnedFd,
    /// Worker → parent.
    pub(crate) from_child: OwnedFd,
    /// The rings the small messages travel through both ways (`None` if
    /// they could not be made: the worker then reads the socket and writes
    /// the pipe, as it would anyway without them).
    pub(crate) rings: Option<Arc<Rings>>,
}

enum Request {
    /// Start a worker (or hand out the spare) and send it back.
    Spawn(SpawnConfig, Sender<io::Result<Spawned>>),
    /// A pool with this configuration wants a spare kept.
    Lease(SpawnConfig),
    /// A pool with this configuration is gone; the reply says that the
    /// spare it may have left is reaped.
    Release(SpawnConfig, Sender<()>),
}

static SPAWNER: OnceLock<Option<Sender<Request>>> = OnceLock::new();

fn spawner() -> io::Result<&'static Sender<Request>> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        std::thread::Builder::new()
            .name("troika-spawner".into())
            .spawn(move || spawner_loop(&rx))
            .ok()
            .map(|_| tx)
    });
    spawner
        .as_ref()
        .ok_or_else(|| io::Error::other("could not start the troika spawner thread"))
}

/// Start a worker from the spawner thread.
pub(crate) fn spawn_worker(config: SpawnConfig) -> io::Result<Spawned> {
    if super::worker::marked_for_me() && !super::worker::is_worker() {
        // A child that was meant to be a worker is running the program's
        // `main` instead: spawning here would recurse without end.
        return Err(io::Error::other(
            "this process was started as a troika worker but is running main(); \
             call troika::init() at the top of main",
        ));
    }
    let spawner = spawner()?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    spawner
        .send(Request::Spawn(config, tx))
        .map_err(|_| io::Error::other("the troika spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the troika spawner thread is gone"))?
}

/// While held, the spawner keeps one started worker in reserve for
/// `config` (a pool holds one for its life). When the last lease of a
/// configuration is dropped, its spare worker is killed and reaped.
#[derive(Debug)]
pub(crate) struct SpareLease {
    config: Option<SpawnConfig>,
}

impl SpareLease {
    /// Ask the spawner to keep a spare worker for `config`.
    pub(crate) fn new(config: &SpawnConfig) -> SpareLease {
        let sent = spawner()
            .ok()
            .is_some_and(|s| s.send(Request::Lease(config.clone())).is_ok());
        SpareLease {
            config: sent.then(|| config.clone()),
        }
    }
}

impl Drop for SpareLease {
    fn drop(&mut self) {
        if let (Some(config), Ok(spawner)) = (self.config.take(), spawner()) {
            // Wait until the spare is gone, so that a dropped pool leaves
            // no process behind.
            let (tx, rx) = crossbeam_channel::bounded(1);
            if spawner.send(Request::Release(config, tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }
}

fn spawner_loop(requests: &Receiver<Request>) {
    // Runs for the life of the process: the parent-death signal of every
    // worker is tied to this thread.
    //
    // One started worker is kept in reserve for each configuration a live
    // pool leased, so that a dead worker's replacement is handed out at
    // once instead of after a fork, an exec and the loader (about a
    // millisecond, many more on a busy machine).
    let mut leases: Vec<(SpawnConfig, usize)> = Vec::new();
    let mut spares: Vec<(SpawnConfig, Spawned)> = Vec::new();
    while let Ok(request) = requests.recv() {
        let config = match request {
            Request::Spawn(config, reply) => {
                let spare = spares
                    .iter()
                    .position(|(c, _)| *c == config)
                    .map(|i| spares.swap_remove(i).1);
                let spawned = match spare {
                    Some(spare) if spare.child.try_exit().is_none() => Ok(spare),
                    _ => spawn_now(&config),
                };
                if !leases.iter().any(|(c, _)| *c == config) {
                    // Nothing to refill: the request's configuration (and
                    // the working directory it holds open) is closed
                    // before the caller hears back, so that a caller who
                    // then drops everything leaves no descriptor behind.
                    let cap = config.memory_cap;
                    drop(config);
                    let _ = reply.send(spawned);
                    after_reply(cap);
                    continue;
                }
                let _ = reply.send(spawned);
                after_reply(config.memory_cap);
                config
            }
            Request::Lease(config) => {
                match leases.iter_mut().find(|(c, _)| *c == config) {
                    Some((_, n)) => *n += 1,
                    None => leases.push((config.clone(), 1)),
                }
                config
            }
            Request::Release(config, done) => {
                if let Some(i) = leases.iter().position(|(c, _)| *c == config) {
                    leases[i].1 -= 1;
                    if leases[i].1 == 0 {
                        leases.swap_remove(i);
                        // Dropping the spare kills and reaps it.
                        spares.retain(|(c, _)| *c != config);
                    }
                }
                // Closed before the reply, as above: the pool being
                // dropped waits for it and then finds its descriptors gone.
                let cap = config.memory_cap;
                drop(config);
                let _ = done.send(());
                after_reply(cap);
                continue;
            }
        };
        // Waiting requests come first; the reserve is refilled when idle.
        let leased = leases.iter().any(|(c, _)| *c == config);
        let stocked = spares.iter().any(|(c, _)| *c == config);
        if leased
            && !stocked
            && requests.is_empty()
            && let Ok(spare) = spawn_now(&config)
        {
            spares.push((config, spare));
        }
    }
}

/// Run by the spawner right after it answered a request for a
/// configuration with this memory cap; unit tests hold it there.
#[cfg(test)]
type AfterReply = Box<dyn Fn(Option<u64>) + Send>;
#[cfg(test)]
static AFTER_REPLY: Mutex<Option<AfterReply>> = Mutex::new(None);

fn after_reply(_memory_cap: Option<u64>) {
    #[cfg(test)]
    if let Some(hook) = AFTER_REPLY.lock().as_ref() {
        hook(_memory_cap);
    }
}

fn spawn_now(config: &SpawnConfig) -> io::Result<Spawned> {
    // Make sure the constructor that runs workers is linked into this binary.
    super::worker::link_constructor();
    // Parent → worker is a socket pair, so that the parent can write with
    // MSG_NOSIGNAL: a worker that died mid-write is an EPIPE error, never a
    // SIGPIPE that would kill a parent which restored its default action.
    let (to_child, child_read) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // Worker → parent is a pipe with an enlarged buffer.
    let (from_child, child_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // A larger buffer only helps; failing to get it is not an error.
    let _ = rustix::pipe::fcntl_setpipe_size(&from_child, PIPE_SIZE);
    // The rings, shared through a memfd the child inherits and maps.
    let (rings, shm) = match Rings::create() {
        Ok((rings, shm)) => (Some(rings), Some(shm)),
        Err(_) => (None, None),
    };
    let parent = rustix::process::getpid();
    let shm_fd = shm.as_ref().map(|fd| fd.as_raw_fd());
    let mut marker = format!(
        "{}:{}:{}",
        parent.as_raw_nonzero(),
        child_read.as_raw_fd(),
        child_write.as_raw_fd()
    );
    if let Some(fd) = shm_fd {
        marker.push_str(&format!(":{fd}"));
    }
    let memory_cap = config.memory_cap;
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command
        .env_clear()
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .env(MARKER, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let (read_fd, write_fd) = (child_read.as_raw_fd(), child_write.as_raw_fd());
    let cwd_fd = config.cwd.as_ref().map(|fd| fd.as_raw_fd());
    let ignored = config.ignored;
    // Runs in the forked child before `exec` (see the SAFETY note below).
    let hook = move || -> io::Result<()> {
        use rustix::fd::BorrowedFd;
        for fd in [Some(read_fd), Some(write_fd), shm_fd]
            .into_iter()
            .flatten()
        {
            // SAFETY: `fd` is one of the two pipe ends or the rings' memfd,
            // open in this forked copy as in the parent (the parent keeps
            // them open until `spawn` returns).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        if let Some(fd) = cwd_fd {
            // SAFETY: the directory descriptor is held open by `config`,
            // which outlives `spawn`, so it is open in this forked copy.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::process::fchdir(fd)?;
        }
        // Signal dispositions as the program had them at capture: ignored
        // ones ignored, every other one at its default (std has already
        // emptied the signal mask and reset SIGPIPE to its default).
        for sig in 1..=MAX_SIGNAL {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let handler = if ignored & (1 << (sig - 1)) != 0 {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            // SAFETY: `sigaction` is async-signal-safe; the new action is a
            // zeroed `sigaction` on this frame with a plain disposition.
            // Numbers the C library reserves fail with EINVAL, which is fine.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler;
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died before the signal was armed.
        if rustix::process::getppid() != Some(parent) {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if let Some(bytes) = memory_cap {
            rustix::process::setrlimit(
                rustix::process::Resource::As,
                rustix::process::Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                },
            )?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed. It only makes raw system calls
    // through rustix and libc (fcntl, fchdir, sigaction, prctl, getppid,
    // setrlimit), allocates nothing
    // (the error it may return is a plain OS code) and takes no lock.
    unsafe {
        command.pre_exec(hook);
    }
    let child = command.spawn()?;
    drop((child_read, child_write, shm));
    Ok(Spawned {
        child: ChildProc::adopt(child)?,
        to_child,
        from_child,
        rings,
    })
}

/// A child process, addressed through a pidfd so that a signal can never hit
/// an unrelated process that reused its pid.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pid: u32,
    pidfd: OwnedFd,
    exit: Mutex<Option<Exit>>,
}

impl ChildProc {
    /// Take over a child std started: from now on only the pidfd signals and
    /// reaps it. Nobody else reaps our children, so the pid still names this
    /// child (at worst a zombie) when the pidfd is opened.
    pub(crate) fn adopt(child: std::process::Child) -> io::Result<ChildProc> {
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1))
            .ok_or_else(|| io::Error::other("invalid child pid"))?;
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
        // Dropping std's handle neither kills nor reaps; the pidfd does both.
        drop(child);
        Ok(ChildProc {
            pid: pid.as_raw_nonzero().get().unsigned_abs(),
            pidfd,
            exit: Mutex::new(None),
        })
    }

    /// The pidfd, readable once the child has exited.
    pub(crate) fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Send a signal unless the child was already reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        let exit = self.exit.lock();
        if exit.is_none() {
            // ESRCH (already exited, not yet reaped) is fine.
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, signal);
        }
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub(crate) fn try_exit(&self) -> Option<Exit> {
        let mut exit = self.exit.lock();
        if exit.is_none() {
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
            match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), options) {
                Ok(Some(status)) => *exit = Some(exit_of(&status)),
                Ok(None) => {}
                // ECHILD: reaped elsewhere (a program that reaps every child).
                Err(_) => *exit = Some(Exit::Unknown),
            }
        }
        *exit
    }

    /// Wait up to `timeout` (forever if `None`) for the child to exit; reaps it.
    pub(crate) fn wait_exit(&self, timeout: Option<Duration>) -> Option<Exit> {
        use rustix::event::{PollFd, PollFlags, poll};
        if let Some(exit) = self.try_exit() {
            return Some(exit);
        }
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let ts = left.map(|d| rustix::event::Timespec {
                tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: d.subsec_nanos().into(),
            });
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return self.try_exit(),
            }
            if let Some(exit) = self.try_exit() {
                return Some(exit);
            }
            if left.is_some_and(|d| d.is_zero()) {
                return None;
            }
        }
    }

    /// Kill the child and reap it.
    pub(crate) fn kill_and_reap(&self) -> Exit {
        self.signal(Signal::KILL);
        self.wait_exit(None).unwrap_or(Exit::Unknown)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Never leave a zombie or a stray worker behind.
        if self.try_exit().is_none() {
            self.kill_and_reap();
        }
    }
}

pub(crate) fn exit_of(status: &rustix::process::WaitIdStatus) -> Exit {
    if let Some(sig) = status.terminating_signal() {
        Exit::Signal(sig)
    } else if let Some(code) = status.exit_status() {
        Exit::Code(code)
    } else {
        Exit::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory cap no other test uses, so the hook holds only this test's
    /// requests (1 TiB: no limit in practice).
    const MARK: u64 = 1 << 40;

    /// The spawner closes its copy of a configuration (which holds the
    /// working directory open) before it answers, so that a caller who
    /// drops its own copy once answered holds no descriptor: the spawner is
    /// held right after its answer while the copies are counted. (With the
    /// answer first, a pool dropped in a test sometimes left the directory
    /// open for a moment, seen once by a descriptor check in CI.)
    #[test]
    fn the_spawner_drops_its_copy_of_a_configuration_before_it_answers() {
        let (go, wait) = crossbeam_channel::bounded::<()>(0);
        let (held, is_held) = crossbeam_channel::bounded::<()>(0);
        let wait = Mutex::new(wait);
        *AFTER_REPLY.lock() = Some(Box::new(move |cap| {
            // Never a panic here: it would end the spawner of every test.
            if cap == Some(MARK) && held.send(()).is_ok() {
                let _ = wait.lock().recv();
            }
        }));
        let config = SpawnConfig::capture(Some(MARK));
        let cwd = Arc::clone(config.cwd.as_ref().expect("the working directory opens"));
        // A worker spawned alone (no lease, nothing to refill).
        let spawned = spawn_worker(config.clone()).expect("a worker starts");
        is_held.recv().unwrap();
        assert_eq!(Arc::strong_count(&cwd), 2, "the test's config and `cwd`");
        go.send(()).unwrap();
        drop(spawned);
        // A lease released: its spare and both copies are gone at the answer.
        let lease = SpareLease::new(&config);
        let spawned = spawn_worker(config.clone()).expect("a worker starts");
        is_held.recv().unwrap();
        go.send(()).unwrap();
        drop(spawned);
        drop(lease);
        is_held.recv().unwrap();
        assert_eq!(Arc::strong_count(&cwd), 2, "the test's config and `cwd`");
        go.send(()).unwrap();
        *AFTER_REPLY.lock() = None;
    }
}
