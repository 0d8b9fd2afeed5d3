//! What every end-to-end test of the `troika` command needs: running it,
//! with an outer deadline, so a run that hangs on a bug is killed and fails
//! its test instead of hanging the suite.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Long enough for any of these runs on a loaded machine; only a hang
/// reaches it.
pub(crate) const LIMIT: Duration = Duration::from_secs(180);

/// Run `troika` with `args`, writing `stdin` (if any) to it and closing it;
/// kill it and panic if it has not exited within `limit`.
pub(crate) fn run_troika_within(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_troika"));
    command.args(args);
    run_within(command, stdin, limit)
}

/// Run `troika` with `args` under `ulimit -n open_files` (through `sh`),
/// within [`LIMIT`].
pub(crate) fn run_troika_with_open_files(
    open_files: u32,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_troika"))
        .args(args);
    run_within(command, stdin, LIMIT)
}

/// Run `command`, writing `stdin` (if any) to it and closing it; kill it and
/// panic if it has not exited within `limit`.
pub(crate) fn run_within(mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    let pid = rustix::process::Pid::from_child(&child);
    // The watchdog waits for the exit (the event) and kills only on the
    // failure path, when the deadline passes first.
    let (exited, watched) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(limit) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            return true;
        }
        false
    });
    let feeder = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A child that stops reading early closes the pipe: not an error here.
        std::thread::spawn(move || drop(pipe.write_all(&input)))
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut out = Vec::new();
    let _ = stdout.read_to_end(&mut out);
    let status = child.wait().expect("waiting for the command");
    let _ = exited.send(());
    let killed = watchdog.join().expect("the watchdog thread");
    let err = err_reader.join().expect("the stderr reader");
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    assert!(
        !killed,
        "{args:?} did not finish within {limit:?} and was killed; stderr:\n{}",
        String::from_utf8_lossy(&err)
    );
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

/// Run the `troika` binary with `args` and wait for it (at most [`LIMIT`]).
/// `stdin` is written to its standard input and then closed; `None` gives it
/// no standard input.
pub(crate) fn run_troika(args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_troika_within(args, stdin, LIMIT)
}
