//! Running an external command under supervision: in its own process group,
//! with its output captured, a deadline that kills the whole group, and the
//! child always reaped. `troika run` is built on this.

use std::io::{self, Read, Write};
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

/// How often to look whether a group outlives its leader.
const GROUP_CHECK: Duration = Duration::from_millis(20);

/// The most read from a finished job's pipes once its group is gone.
const DRAIN_LIMIT: usize = 16 << 20;

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

/// How a command ended, when its output went to writers
/// ([`GroupChild::communicate_into`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandStatus {
    /// How the leader ended.
    pub exit: Exit,
    /// Whether the deadline passed and its group was killed.
    pub timed_out: bool,
}

impl CommandStatus {
    /// Exit code 0 and not timed out.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0) && !self.timed_out
    }
}

/// Signals a running command's whole process group, from any thread,
/// whether or not the group's leader still lives.
///
/// A group's id stays reserved while any member lives, so signalling it
/// reaches the command's processes only; once a signal or a probe finds the
/// group empty (`ESRCH`) the killer never signals that id again.
#[derive(Clone, Debug)]
pub struct GroupKiller {
    pgid: Pid,
    gone: Arc<AtomicBool>,
}

impl GroupKiller {
    /// Send `SIGKILL` to every process in the group (children and
    /// grandchildren that stayed in it, also after the leader exited). A
    /// no-op once the group is gone.
    pub fn kill(&self) {
        self.signal(Signal::KILL);
    }

    /// Send `SIGTERM` to every process in the group: the polite first step
    /// (GNU parallel's), to be followed by [`kill`](Self::kill) after a grace.
    pub fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Whether any process of the group still exists (a zombie leader that
    /// is not reaped yet counts).
    pub fn alive(&self) -> bool {
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        match rustix::process::test_kill_process_group(self.pgid) {
            Err(rustix::io::Errno::SRCH) => {
                self.gone.store(true, Ordering::Release);
                false
            }
            _ => true,
        }
    }

    fn signal(&self, signal: Signal) {
        if !self.gone.load(Ordering::Acquire)
            && rustix::process::kill_process_group(self.pgid, signal)
                == Err(rustix::io::Errno::SRCH)
        {
            self.gone.store(true, Ordering::Release);
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
    gone: Arc<AtomicBool>,
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
            gone: Arc::new(AtomicBool::new(false)),
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
            gone: Arc::clone(&self.gone),
        }
    }

    /// Read all output and wait for the command to exit. Past `timeout` the
    /// group gets SIGTERM, then SIGKILL after a short grace, whether or not
    /// its leader still lives; the output read so far is kept. The leader is
    /// always reaped. Reading stops once the leader has exited and no process
    /// is left in its group: a process that left the group (`setsid`) and
    /// still holds the output pipes is not waited for.
    pub fn communicate(self, timeout: Option<Duration>) -> io::Result<CommandOutput> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let status = self.communicate_into(timeout, &mut stdout, &mut stderr)?;
        Ok(CommandOutput {
            stdout,
            stderr,
            exit: status.exit,
            timed_out: status.timed_out,
        })
    }

    /// [`communicate`](Self::communicate), with the output written to `out`
    /// and `err` as it arrives instead of held in memory. A writer's error
    /// kills the group and is returned.
    pub fn communicate_into<O, E>(
        mut self,
        timeout: Option<Duration>,
        out: &mut O,
        err: &mut E,
    ) -> io::Result<CommandStatus>
    where
        O: Write + ?Sized,
        E: Write + ?Sized,
    {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let killer = self.killer();
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
                killer.terminate();
            }
            if let Some(at) = killed_at
                && now >= at + TERM_GRACE
            {
                // Grandchildren may hold the pipes open: kill them all.
                killer.kill();
                if exit.is_some() && now >= at + 2 * TERM_GRACE {
                    // What still holds the pipes escaped the group: stop.
                    self.stdout = None;
                    self.stderr = None;
                    continue;
                }
            }
            if exit.is_some() && !killer.alive() {
                // The job is over and its group is gone: take what is already
                // in the pipes, and wait for no process that left the group.
                self.drain(out, err, &mut buf)?;
                continue;
            }
            let mut wake = match (killed_at, deadline) {
                (Some(at), _) if now < at + TERM_GRACE => Some(at + TERM_GRACE),
                (Some(at), _) => Some(at + 2 * TERM_GRACE),
                (None, Some(deadline)) => Some(deadline),
                (None, None) => None,
            };
            if exit.is_some() {
                // Members of the group outlive the leader: look again soon
                // whether they are gone.
                let check = now + GROUP_CHECK;
                wake = Some(wake.map_or(check, |w| w.min(check)));
            }
            let ready = self.poll(exit.is_none(), wake)?;
            let read = (|| {
                if ready.stdout {
                    read_some(&mut self.stdout, out, &mut buf)?;
                }
                if ready.stderr {
                    read_some(&mut self.stderr, err, &mut buf)?;
                }
                Ok::<_, io::Error>(())
            })();
            if let Err(e) = read {
                killer.kill();
                return Err(e);
            }
            if ready.exited && exit.is_none() {
                exit = self.try_reap()?;
            }
        }
        // One last look: if the group is empty now, every killer of it goes
        // quiet, so a killer kept past this call cannot signal a later group
        // that is given the same number.
        killer.alive();
        Ok(CommandStatus {
            exit: exit.unwrap_or(Exit::Unknown),
            timed_out,
        })
    }

    /// Read what the pipes hold now (at most [`DRAIN_LIMIT`] bytes, against a
    /// writer outside the group that never stops), then close them.
    fn drain<O, E>(&mut self, out: &mut O, err: &mut E, buf: &mut [u8]) -> io::Result<()>
    where
        O: Write + ?Sized,
        E: Write + ?Sized,
    {
        let mut left = DRAIN_LIMIT;
        while left > 0 && (self.stdout.is_some() || self.stderr.is_some()) {
            let ready = self.poll(false, Some(Instant::now()))?;
            if !ready.stdout && !ready.stderr {
                break;
            }
            if ready.stdout {
                left = left.saturating_sub(read_some(&mut self.stdout, out, buf)?);
            }
            if ready.stderr {
                left = left.saturating_sub(read_some(&mut self.stderr, err, buf)?);
            }
        }
        self.stdout = None;
        self.stderr = None;
        Ok(())
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
        Ok(self.child.try_exit())
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // Dropped before `communicate` finished: kill the whole group, not
        // only the leader (which `ChildProc` then reaps).
        if self.child.try_exit().is_none() {
            self.killer().kill();
        }
    }
}

struct Ready {
    stdout: bool,
    stderr: bool,
    exited: bool,
}

/// Read what is available into `into`; on end-of-file, close the pipe.
/// Returns the bytes read.
fn read_some<R: Read, W: Write + ?Sized>(
    pipe: &mut Option<R>,
    into: &mut W,
    buf: &mut [u8],
) -> io::Result<usize> {
    if let Some(reader) = pipe {
        match reader.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => {
                into.write_all(&buf[..n])?;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> GroupChild {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        GroupChild::spawn(&mut command).unwrap()
    }

    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, s)| !s.trim_start().starts_with('Z'))
        })
    }

    /// A killer kept after `communicate` of a group that ended is quiet:
    /// the group's number may be given to another group later.
    #[test]
    fn a_killer_of_a_finished_group_goes_quiet() {
        let child = sh("exit 0");
        let killer = child.killer();
        child.communicate(None).unwrap();
        assert!(killer.gone.load(Ordering::Acquire));
        assert!(!killer.alive());
    }

    #[test]
    fn the_deadline_kills_the_group_after_its_leader_exited() {
        // The leader exits at once; its background child holds stdout.
        let child = sh("sleep 60 & echo $!; exit 0");
        let output = child.communicate(Some(Duration::from_millis(300))).unwrap();
        let pid = String::from_utf8(output.stdout).unwrap();
        assert!(output.timed_out);
        // It was killed: it ends (exiting takes a moment past closing its
        // pipes), long before its 60 s.
        let until = Instant::now() + Duration::from_secs(10);
        while running(&pid) {
            assert!(
                Instant::now() < until,
                "the background child outlived the deadline"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn reading_stops_when_only_an_escaped_process_holds_the_pipes() {
        let child = sh("setsid sleep 60 & echo $!; echo done >&2");
        let output = child.communicate(None).unwrap();
        assert_eq!(output.stderr, b"done\n");
        let pid = String::from_utf8(output.stdout).unwrap();
        let _ = rustix::process::kill_process(
            Pid::from_raw(pid.trim().parse().unwrap()).unwrap(),
            Signal::KILL,
        );
    }
}
