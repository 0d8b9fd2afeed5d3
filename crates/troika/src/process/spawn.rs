//! Starting worker processes safely, and watching them die.
//!
//! A worker is the current binary re-executed (`/proc/self/exe`) with the
//! environment variable [`MARKER`] set to `PARENT_PID:READ_FD:WRITE_FD`. The
//! two pipe ends are created close-on-exec, so no other child started at the
//! same time inherits them; only in the forked child, right before `exec`,
//! are they made inheritable. That pre-exec step also sets the parent-death
//! signal and the optional address-space limit. Everything it calls is a raw
//! system call (rustix), so it is safe in the forked copy of a multi-threaded
//! parent.
//!
//! Every worker is started from one long-lived thread, the *spawner*: Linux
//! delivers the parent-death signal when the thread that forked the child
//! exits, so a worker forked from a short-lived thread would be killed with
//! it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

use crate::futures::Exit;

/// The environment variable that turns a re-executed binary into a worker.
pub(crate) const MARKER: &str = "TROIKA_WORKER";

/// The reply pipe's buffer is enlarged to this.
pub(crate) const PIPE_SIZE: usize = 1 << 20;

/// What a new worker needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpawnConfig {
    /// An address-space limit (`RLIMIT_AS`) in bytes.
    pub(crate) memory_cap: Option<u64>,
}

/// A started worker: its process and its two pipe ends.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: ChildProc,
    /// Parent → worker.
    pub(crate) to_child: OwnedFd,
    /// Worker → parent.
    pub(crate) from_child: OwnedFd,
}

type Request = (SpawnConfig, Sender<io::Result<Spawned>>);

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
    static SPAWNER: OnceLock<Option<Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        std::thread::Builder::new()
            .name("troika-spawner".into())
            .spawn(move || spawner_loop(&rx))
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        return Err(io::Error::other(
            "could not start the troika spawner thread",
        ));
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    spawner
        .send((config, tx))
        .map_err(|_| io::Error::other("the troika spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the troika spawner thread is gone"))?
}

fn spawner_loop(requests: &Receiver<Request>) {
    // Runs for the life of the process: the parent-death signal of every
    // worker is tied to this thread.
    //
    // One started worker is kept in reserve for each configuration that was
    // asked for, so that a dead worker's replacement is handed out at once
    // instead of after a fork, an exec and the loader (about a millisecond,
    // many more on a busy machine).
    let mut spares: Vec<(SpawnConfig, Spawned)> = Vec::new();
    while let Ok((config, reply)) = requests.recv() {
        let spare = spares
            .iter()
            .position(|(c, _)| *c == config)
            .map(|i| spares.swap_remove(i).1);
        let spawned = match spare {
            Some(spare) if spare.child.try_exit().is_none() => Ok(spare),
            _ => spawn_now(&config),
        };
        let _ = reply.send(spawned);
        // Waiting requests come first; the reserve is refilled when idle.
        if requests.is_empty()
            && let Ok(spare) = spawn_now(&config)
        {
            spares.push((config, spare));
        }
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
    let parent = rustix::process::getpid();
    let marker = format!(
        "{}:{}:{}",
        parent.as_raw_nonzero(),
        child_read.as_raw_fd(),
        child_write.as_raw_fd()
    );
    let memory_cap = config.memory_cap;
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command
        .env(MARKER, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let (read_fd, write_fd) = (child_read.as_raw_fd(), child_write.as_raw_fd());
    // Runs in the forked child before `exec` (see the SAFETY note below).
    let hook = move || -> io::Result<()> {
        use rustix::fd::BorrowedFd;
        for fd in [read_fd, write_fd] {
            // SAFETY: `fd` is one of the two pipe ends, open in this forked
            // copy as in the parent (the parent keeps them open until `spawn`
            // returns).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
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
    // through rustix (fcntl, prctl, getppid, setrlimit), allocates nothing
    // (the error it may return is a plain OS code) and takes no lock.
    unsafe {
        command.pre_exec(hook);
    }
    let child = command.spawn()?;
    drop((child_read, child_write));
    Ok(Spawned {
        child: ChildProc::adopt(child)?,
        to_child,
        from_child,
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
