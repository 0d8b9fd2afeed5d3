//! Running an external command under supervision: in its own process group,
//! with its output captured, a deadline that kills the whole group, and the
//! child always reaped. `troika run` is built on this.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal};

use super::spawn::ChildProc;
use crate::futures::Exit;

/// How long a timed-out group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(200);

/// What a finished command left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: Exit,
    /// Whether the deadline passed and its group was killed.
    pub timed_out: bool,
}

impl CommandOutput {
    /// Exit code 0 and not timed out.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0) && !self.timed_out
    }
}

/// Kills a running command's whole process group, from any thread.
#[derive(Clone, Debug)]
pub struct GroupKiller {
    pgid: Pid,
    reaped: Arc<AtomicBool>,
}

impl GroupKiller {
    /// Send `SIGKILL` to every process in the group (children and
    /// grandchildren that stayed in it). A no-op once the command was reaped.
    pub fn kill(&self) {
        self.signal(Signal::KILL);
    }

    fn signal(&self, signal: Signal) {
        if !self.reaped.load(Ordering::Acquire) {
            // ESRCH: the group is already gone.
            let _ = rustix::process::kill_process_group(self.pgid, signal);
        }
    }
}

/// A command started in a process group of its own (see [`GroupChild::spawn`]).
///
/// # Examples
///
/// ```
/// use std::process::Command;
/// use std::time::Duration;
/// use troika::process::GroupChild;
///
/// let mut command = Command::new("sh");
/// command.args(["-c", "echo out; echo err >&2; exit 3"]);
/// let output = GroupChild::spawn(&mut command)?.communicate(Some(Duration::from_secs(10)))?;
/// assert_eq!(output.stdout, b"out\n");
/// assert_eq!(output.stderr, b"err\n");
/// assert_eq!(output.exit, troika::Exit::Code(3));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct GroupChild {
    /// The leader, held by pidfd: it kills and reaps it if dropped early.
    child: ChildProc,
    pid: Pid,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    reaped: Arc<AtomicBool>,
}

impl GroupChild {
    /// Start `command` as the leader of a new process group, with stdin from
    /// `/dev/null` and stdout and stderr captured.
    pub fn spawn(command: &mut Command) -> io::Result<GroupChild> {
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let child = ChildProc::adopt(child)?;
        let pid = i32::try_from(child.pid())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("the child has an invalid pid"))?;
        Ok(GroupChild {
            child,
            pid,
            stdout,
            stderr,
            reaped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The leader's pid, which is also the group's id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// A handle that kills the group from another thread.
    pub fn killer(&self) -> GroupKiller {
        GroupKiller {
            pgid: self.pid,
            reaped: Arc::clone(&self.reaped),
        }
    }

    /// Read all output and wait for the command to exit. Past `timeout` the
    /// group gets SIGTERM, then SIGKILL after a short grace; the output read
    /// so far is kept. The leader is always reaped. A process that left the
    /// group (`setsid`) and still holds the output pipes after the kill is
    /// not waited for: reading stops one more grace period later, so with a
    /// timeout this returns within the timeout plus 400 ms.
    pub fn communicate(mut self, timeout: Option<Duration>) -> io::Result<CommandOutput> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit = None;
        let mut timed_out = false;
        let mut killed_at: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while exit.is_none() || self.stdout.is_some() || self.stderr.is_some() {
            let now = Instant::now();
            if let Some(deadline) = deadline
                && now >= deadline
                && !timed_out
            {
                timed_out = true;
                killed_at = Some(now);
                self.killer().signal(Signal::TERM);
            }
            if let Some(at) = killed_at
                && now >= at + TERM_GRACE
            {
                // Grandchildren may hold the pipes open: kill them all.
                self.killer().kill();
                if exit.is_some() && now >= at + 2 * TERM_GRACE {
                    // What still holds the pipes escaped the group: stop.
                    self.stdout = None;
                    self.stderr = None;
                    continue;
                }
            }
            let wake = match (killed_at, deadline) {
                (Some(at), _) if now < at + TERM_GRACE => Some(at + TERM_GRACE),
                (Some(at), _) => Some(at + 2 * TERM_GRACE),
                (None, Some(deadline)) => Some(deadline),
                (None, None) => None,
            };
            let ready = self.poll(exit.is_none(), wake)?;
            if ready.stdout {
                read_some(&mut self.stdout, &mut stdout, &mut buf)?;
            }
            if ready.stderr {
                read_some(&mut self.stderr, &mut stderr, &mut buf)?;
            }
            if ready.exited && exit.is_none() {
                exit = self.try_reap()?;
            }
        }
        Ok(CommandOutput {
            stdout,
            stderr,
            exit: exit.unwrap_or(Exit::Unknown),
            timed_out,
        })
    }

    fn poll(&self, watch_exit: bool, until: Option<Instant>) -> io::Result<Ready> {
        let pidfd = self.child.pidfd();
        let mut fds = Vec::with_capacity(3);
        let mut slots = [None; 3];
        if let Some(out) = &self.stdout {
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(out, PollFlags::IN));
        }
        if let Some(err) = &self.stderr {
            slots[1] = Some(fds.len());
            fds.push(PollFd::new(err, PollFlags::IN));
        }
        if watch_exit {
            slots[2] = Some(fds.len());
            fds.push(PollFd::new(&pidfd, PollFlags::IN));
        }
        let timeout = until.map(|until| {
            let left = until.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: left.subsec_nanos().into(),
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |slot: Option<usize>| slot.is_some_and(|i| !fds[i].revents().is_empty());
        Ok(Ready {
            stdout: ready(slots[0]),
            stderr: ready(slots[1]),
            exited: ready(slots[2]),
        })
    }

    fn try_reap(&self) -> io::Result<Option<Exit>> {
        let exit = self.child.try_exit();
        if exit.is_some() {
            self.reaped.store(true, Ordering::Release);
        }
        Ok(exit)
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // Dropped before `communicate` finished: kill the whole group, not
        // only the leader (which `ChildProc` then reaps).
        if self.child.try_exit().is_none() {
            self.killer().kill();
        }
        self.reaped.store(true, Ordering::Release);
    }
}

struct Ready {
    stdout: bool,
    stderr: bool,
    exited: bool,
}

/// Read what is available; on end-of-file, close the pipe.
fn read_some<R: Read>(pipe: &mut Option<R>, into: &mut Vec<u8>, buf: &mut [u8]) -> io::Result<()> {
    if let Some(reader) = pipe {
        match reader.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
