//! `troika run --cluster`: each job runs on a worker of the cluster, through
//! the one registered function [`run_job`], which a worker serves only when
//! it was started with `--allow-run` (see `crate::worker`).
//!
//! Nothing but an argv and a timeout travels: the worker starts the command
//! with [`GroupChild`] as a local `troika run` does, kills its whole process
//! group at the timeout, and sends back its exit, stdout and stderr whole.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
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
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = child
        .communicate_into(timeout, &mut stdout, &mut stderr)
        .map_err(|e| format!("lost track of '{}': {e}", program.to_string_lossy()))?;
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
