//! `troika run --cluster`: each job runs on a worker of the cluster, through
//! the one registered function [`run_job`], which a worker serves only when
//! it was started with `--allow-run` (see `crate::worker`).
//!
//! Nothing but an argv and a timeout travels: the worker starts the command
//! with [`GroupChild`] as a local `troika run` does, kills its whole process
//! group at the timeout, and sends back its exit, stdout and stderr whole.
//!
//! A job cancelled by its client (`--halt now`, Ctrl-C) is ended by the worker
//! killing the pool process that runs [`run_job`]; the command's own process
//! group would outlive it, so each job has a guard: `troika run-guard PGID`, a
//! process that waits for its stdin (a pipe from the pool process) to close
//! and then kills the group. A job that ends normally kills its guard first.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troika::Exit;
use troika::process::{CommandStatus, GroupChild};

/// The flag that lets `troika worker` run commands for `troika run --cluster`.
pub(crate) const ALLOW_FLAG: &str = "--allow-run";

/// How a job ended on its worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobOutput {
    /// The exit code, or `None` when a signal ended it (then `signal`).
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    /// The deadline passed and its process group was killed.
    pub(crate) timed_out: bool,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl JobOutput {
    pub(crate) fn status(&self) -> CommandStatus {
        let exit = match (self.code, self.signal) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Unknown,
        };
        CommandStatus {
            exit,
            timed_out: self.timed_out,
        }
    }
}

troika::remote! {
    /// Run one job of `troika run --cluster` in this process (a worker's
    /// pool process): `argv` with stdin from /dev/null, its process group
    /// killed after `timeout_ms` (0: no timeout). `Err` when it cannot start.
    pub(crate) fn run_job(argv: Vec<Vec<u8>>, timeout_ms: u64) -> Result<JobOutput, String> {
        run_here(&argv, timeout_ms)
    }
}

/// The registered name of [`run_job`], which a worker refuses without
/// [`ALLOW_FLAG`].
pub(crate) fn run_job_name() -> &'static str {
    <run_job as troika::RemoteFn>::NAME
}

fn run_here(argv: &[Vec<u8>], timeout_ms: u64) -> Result<JobOutput, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("an empty command".to_owned());
    };
    let program = OsString::from_vec(program.clone());
    let mut command = Command::new(&program);
    command.args(args.iter().cloned().map(OsString::from_vec));
    let child = GroupChild::spawn(&mut command)
        .map_err(|e| format!("cannot run '{}': {e}", program.to_string_lossy()))?;
    let guard = spawn_guard(child.pid()).map_err(|e| {
        format!(
            "cannot start the guard of '{}': {e}",
            program.to_string_lossy()
        )
    })?;
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = child.communicate_into(timeout, &mut stdout, &mut stderr);
    // The group is gone (or lost): the guard must not signal its id again.
    stop_guard(guard);
    let status =
        status.map_err(|e| format!("lost track of '{}': {e}", program.to_string_lossy()))?;
    let (code, signal) = match status.exit {
        Exit::Code(code) => (Some(code), None),
        Exit::Signal(sig) => (None, Some(sig)),
        _ => (None, None),
    };
    Ok(JobOutput {
        code,
        signal,
        timed_out: status.timed_out,
        stdout,
        stderr,
    })
}

/// Start `troika run-guard PGID` with its stdin a pipe from this process, in
/// a process group of its own (so no terminal signal reaches it).
fn spawn_guard(pgid: u32) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("run-guard")
        .arg(pgid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// Kill and reap the guard before its stdin closes.
fn stop_guard(mut guard: Child) {
    let _ = guard.kill();
    let _ = guard.wait();
}

/// How long the guard's SIGTERM gets before its SIGKILL (as a local stop).
const GUARD_GRACE: Duration = Duration::from_millis(200);

/// `troika run-guard PGID`: wait until stdin closes (the pool process that
/// runs the job has ended, killed by a cancel), then end the process group
/// `PGID`: SIGTERM, then SIGKILL a grace later.
pub(crate) fn guard(pgid: i32) -> anyhow::Result<ExitCode> {
    let pid = rustix::process::Pid::from_raw(pgid)
        .filter(|_| pgid > 1)
        .ok_or_else(|| anyhow::anyhow!("run-guard: {pgid} is not a process group id"))?;
    let mut stdin = std::io::stdin().lock();
    let mut sink = [0u8; 64];
    // Nothing is ever written: a read returns at end of file or on an error.
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    if rustix::process::kill_process_group(pid, rustix::process::Signal::TERM).is_ok() {
        std::thread::sleep(GUARD_GRACE);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    Ok(ExitCode::SUCCESS)
}
