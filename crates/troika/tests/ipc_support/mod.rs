//! Shared helpers of troika's integration tests (each `tests/*.rs` that
//! needs one includes this module with `mod ipc_support;`).
//!
//! - Waiting for an event with a generous failure path: [`wait_until`].
//! - Reading `/proc`: [`alive`].
//! - A tokio runtime for the `aio` tests: [`runtime`].
//! - Children that are this test binary re-executed (as rayon's
//!   `tests/stack_overflow_crash.rs` does) with a role in the environment and
//!   the test's own name as the filter, so the child runs the same `#[test]`
//!   function and takes the child branch: [`spawn`], [`role`], [`arg`],
//!   [`join`]; and [`guarded`], a hang-prone test run in a child with an
//!   outer deadline.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "TROIKA_IPC_TEST_ROLE";
const ARG: &str = "TROIKA_IPC_TEST_ARG";

/// The role this process plays, if it is a re-executed child. A child dies
/// with the test thread that spawned it, so a failed test leaves no orphan.
pub fn role() -> Option<String> {
    let role = std::env::var(ROLE).ok()?;
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    Some(role)
}

/// The JSON argument handed to this child.
pub fn arg<T: serde::de::DeserializeOwned>() -> T {
    let s = std::env::var(ARG).expect("child started without an argument");
    serde_json::from_str(&s).expect("child argument is not valid JSON")
}

/// Re-executes this test binary to run test `test` as `role`, with `arg`
/// (serialized as JSON) in its environment.
pub fn spawn<T: serde::Serialize>(test: &str, role: &str, arg: &T) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .env(
            ARG,
            serde_json::to_string(arg).expect("serialize child argument"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Waits for `child` to exit (a generous bound is the failure path only;
/// on it the child is killed) and returns its status.
pub fn join(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(status) => status.expect("wait for child"),
        Err(_) => {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            panic!("child {pid} did not finish in 60 s");
        }
    }
}

/// Waits for `child` and asserts that it succeeded.
pub fn join_ok(child: Child) {
    let status = join(child);
    assert!(status.success(), "child failed: {status}");
}

/// Kills `child` with SIGKILL and reaps it.
pub fn kill(mut child: Child) {
    child.kill().expect("kill child");
    child.wait().expect("reap child");
}

/// Entries of /dev/shm whose name contains "troika".
pub fn shm_entries() -> Vec<String> {
    match std::fs::read_dir("/dev/shm") {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("troika"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A generous timeout for waits that should succeed at once.
pub const LONG: Duration = Duration::from_secs(30);

const GUARDED: &str = "TROIKA_GUARDED_TEST";

/// Runs `body` in a child process (this test binary re-executed with `test`
/// as the exact filter) and fails if the child fails or does not finish
/// within `limit`; on the deadline the child is killed, so a test of a
/// hang-prone path can never hang the suite. `test` must be the name of the
/// calling `#[test]` function. In the child, `body` runs directly.
pub fn guarded(test: &str, limit: Duration, body: impl FnOnce()) {
    if std::env::var_os(GUARDED).is_some() {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Output goes to a file, not a pipe: a grandchild that escaped the test
    // (the very thing some of these tests provoke) would hold a pipe open.
    let log_path =
        std::env::temp_dir().join(format!("troika-guarded-{}-{test}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("create guarded log");
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(GUARDED, "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup guarded log"))
        .stderr(log)
        .spawn()
        .expect("spawn guarded child");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let outcome = rx.recv_timeout(limit);
    if outcome.is_err()
        && let Some(p) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    match outcome {
        Ok(status) => {
            let status = status.expect("wait for guarded child");
            assert!(
                status.success() && output.contains("1 passed"),
                "{test} failed in its child ({status}):\n{output}"
            );
        }
        Err(_) => panic!(
            "{test} hung: its child did not finish within {limit:?} and was killed:\n{output}"
        ),
    }
}

/// How long [`wait_until`] re-checks before it fails its test: reached only
/// on the failure path.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `ready` holds, re-checking the state itself (never sleeping
/// for a guessed time); fails after [`PATIENCE`], naming `what`.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// What `read()` gives once it equals `expected`, or its last value after
/// a few seconds (the failure path): for counts the kernel settles a moment
/// after the event a test waits on, such as `/proc/self/task`, which may
/// still list a thread after a join returned from it (the joiner is woken
/// before the exiting thread is released).
pub fn settled<T: PartialEq>(expected: T, mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = read();
        if value == expected || Instant::now() >= deadline {
            return value;
        }
        std::thread::yield_now();
    }
}

/// Whether process `pid` holds the memfd of a large frame (troika's
/// `memfd:troika-frame`, or an arena, `memfd:troika-arena`): open, or
/// mapped. A fresh worker that does has received a large call's argument
/// (or is building a large reply).
pub fn holds_frame_memfd(pid: u32) -> bool {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
        dir.flatten().any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t.contains("memfd:troika-frame") || t.contains("memfd:troika-arena")
            })
        })
    });
    open || std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.contains("memfd:troika-frame") || maps.contains("memfd:troika-arena")
    })
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A tokio runtime with two worker threads and every driver enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A value whose serialization always fails.
#[derive(Debug, serde::Deserialize)]
pub struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

/// `len` bytes of a pattern that differs with `seed` and from one 64 KiB
/// block to the next (so a block sent twice or out of place shows).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed ^ (i >> 16) as u8)
        .collect()
}

/// The descriptors open in this process, with what they point to (but not
/// the one listing them, whose number depends on which were free).
pub fn open_fds() -> Vec<String> {
    let listing = std::path::PathBuf::from(format!("/proc/{}/fd", std::process::id()));
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            if target == listing {
                return None;
            }
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

/// Asserts that this process's descriptors are `before` again (after a
/// pool or process was dropped). On a mismatch the failure names the
/// extra and missing descriptors, the threads alive at that moment, and
/// whether the difference went away within a few seconds (a thread still
/// ending would explain a late close; a leak would not). It found the
/// spawner thread answering before it closed its copy of the working
/// directory (fixed; `process::spawn`'s unit test holds that instant).
pub fn assert_fds_as_before(before: &[String]) {
    let now = open_fds();
    if now == before {
        return;
    }
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let extra: Vec<&String> = now.iter().filter(|f| !before.contains(f)).collect();
    let missing: Vec<&String> = before.iter().filter(|f| !now.contains(f)).collect();
    let later = settled(before.to_vec(), open_fds);
    panic!(
        "the parent's descriptors are not as before: extra {extra:?}, missing {missing:?}; \
         threads alive then: {threads:?}; {}",
        if later == before {
            "they were as before a moment later (closed late)".to_owned()
        } else {
            format!("still different after 10 s: {later:?}")
        }
    );
}

/// In a worker process: its call socket (the second field of the
/// `TROIKA_WORKER` marker), open for the worker's life.
pub fn worker_call_socket() -> std::os::fd::BorrowedFd<'static> {
    let marker = std::env::var("TROIKA_WORKER").unwrap();
    let socket = marker.split(':').nth(1).unwrap().parse::<i32>().unwrap();
    // SAFETY: the worker's call socket, open for its life.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) }
}

/// Send `fd` on the Unix socket `socket` with one byte, as a worker sends
/// a large reply's memfd (a test forging such a reply uses this).
pub fn send_fd(socket: std::os::fd::BorrowedFd<'_>, fd: std::os::fd::BorrowedFd<'_>) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(&[0])],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
}

/// The 24-byte header of a worker's reply frame (kind `REPLY`, status OK)
/// for call `id` announcing a body of `len` bytes, with `flags` or-ed into
/// the kind (`0x8000`: the body is in a memfd; `0x4000`: an arena), for
/// tests that forge replies.
pub fn reply_header(flags: u16, id: u64, len: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&(3u16 | flags).to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&id.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header
}

/// A process pool of one worker whose tasks time out after `timeout`.
pub fn one_worker_with_timeout(timeout: Duration) -> troika::ProcessPool {
    troika::ProcessPool::builder()
        .workers(1)
        .task_timeout(timeout)
        .build()
        .unwrap()
}

/// A byte buffer that serializes as one byte string (a length and a copy),
/// not as a sequence of a hundred million integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}
