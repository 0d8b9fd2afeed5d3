//! What every end-to-end test of the `troika` command needs: running it with
//! an outer deadline (a run that hangs on a bug is killed and fails its test
//! instead of hanging the suite), waiting for an event with a generous
//! failure path, scratch directories, and reading `/proc`.
//!
//! `TROIKA_UNDER_TEST` runs the tests against another binary (to see a test
//! fail on an older build).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for any of these runs on a loaded machine; only a hang
/// reaches it.
pub(crate) const LIMIT: Duration = Duration::from_secs(180);

/// The failure path of every wait for an event.
pub(crate) const GENEROUS: Duration = Duration::from_secs(60);

/// The `troika` binary under test: Cargo's, or `TROIKA_UNDER_TEST`.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("TROIKA_UNDER_TEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_troika")))
}

/// Kills `pid` unless the returned sender reports first, within `deadline`.
/// The thread's result says whether it killed.
pub(crate) fn watchdog(
    pid: u32,
    deadline: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (done, wait) = mpsc::channel::<()>();
    // The watchdog waits for the report (the event) and kills only on the
    // failure path, when the deadline passes first.
    let guard = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(deadline) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return true;
        }
        false
    });
    (done, guard)
}

/// Start `troika` with `args` and `stdin`, its stdout and stderr piped, for
/// a test that talks to it while it runs; [`finish`] collects it.
pub(crate) fn spawn_troika<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: Stdio) -> Child {
    Command::new(binary())
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the troika binary runs")
}

/// Run `troika` with `args`, writing `stdin` (if any) to it and closing it;
/// kill it and panic if it has not exited within `limit`.
pub(crate) fn run_troika_within(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    let mut command = Command::new(binary());
    command.args(args);
    run_within(command, stdin, limit)
}

/// Run the `troika` binary with `args` and wait for it (at most [`LIMIT`]).
/// `stdin` is written to its standard input and then closed; `None` gives it
/// no standard input.
pub(crate) fn run_troika(args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_troika_within(args, stdin, LIMIT)
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
        .arg(binary())
        .args(args);
    run_within(command, stdin, LIMIT)
}

/// Run `command` with its output captured, writing `stdin` (if any) to it
/// and closing it; kill it and panic if it has not exited within `limit`.
pub(crate) fn run_within(mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let what = format!("{command:?}");
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
    finish(&mut child, stdin.map(<[u8]>::to_vec), limit, &what)
}

/// Feed `stdin` (if any) to a started `child` and close it, collect its
/// stdout and stderr (those that are piped) and wait for it; kill it and
/// panic, naming `what`, if it has not exited within `limit`.
pub(crate) fn finish(
    child: &mut Child,
    stdin: Option<Vec<u8>>,
    limit: Duration,
    what: &str,
) -> Output {
    let (done, guard) = watchdog(child.id(), limit);
    let feeder = match (stdin, child.stdin.take()) {
        // A child that stops reading early closes the pipe: not an error here.
        (Some(input), Some(mut pipe)) => Some(std::thread::spawn(move || {
            drop(pipe.write_all(&input));
        })),
        _ => None,
    };
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut buf);
        }
        buf
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut out);
    }
    let status = child.wait().expect("waiting for the command");
    let _ = done.send(());
    let killed = guard.join().expect("the watchdog thread");
    let err = err_reader.join().expect("the stderr reader");
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    assert!(
        !killed,
        "{what} did not finish within {limit:?} and was killed; stderr:\n{}",
        text(&err)
    );
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

/// Bytes as text, lossily.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh, empty scratch directory, its own for every call.
pub(crate) fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "troika-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait for an event by re-checking a condition (never sleeping for a
/// guessed time); fails after [`GENEROUS`], naming `what`.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Wait for `child` to exit, with [`GENEROUS`] as the failure path (the
/// child is left for the caller to kill).
pub(crate) fn wait_for_exit(child: &mut Child, what: &str) -> ExitStatus {
    let mut status = None;
    wait_until(what, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.expect("the child has exited")
}

/// Whether process `pid` still runs (a zombie has exited).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
