//! The life of worker processes: deaths hidden by a process the task forked,
//! failing initializers, the environment a worker starts in, and what a pool
//! or a `Process` leaves behind once dropped.

mod ipc_support;

use std::collections::BTreeSet;
use std::time::Duration;

use ipc_support::{guarded, holds_frame_memfd, one_worker_with_timeout, settled, wait_until};
use troika::{ErrorKind, Exit, Process, ProcessPool};

const SIGKILL: i32 = 9;

troika::remote! {
    fn worker_pid() -> u32 {
        std::process::id()
    }

    fn exit_with(code: i32) -> u32 {
        std::process::exit(code)
    }

    /// Fork a grandchild that inherits the worker's pipes and holds them
    /// open until the process `test_pid` (the test) exits, then hang.
    fn escape_then_hang(test_pid: i32) -> u32 {
        // SAFETY: a worker runs its calls on its only thread, so the forked
        // copy holds no lock another thread owned; the grandchild only
        // makes raw system calls and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if let Some(test) = rustix::process::Pid::from_raw(test_pid)
                && let Ok(fd) = rustix::process::pidfd_open(test, rustix::process::PidfdFlags::empty())
            {
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                let _ = rustix::event::poll(&mut fds, None);
            }
            // SAFETY: ends the forked copy without running anything of the
            // worker's (no atexit handlers, no buffers flushed twice).
            unsafe { libc::_exit(0) };
        }
        std::thread::sleep(Duration::from_secs(3600));
        0
    }

    /// Fork a grandchild that holds the worker's pipes until the process
    /// `test_pid` exits, and return the worker's pid at once.
    fn escape_in_background(test_pid: i32) -> u32 {
        // SAFETY: as in `escape_then_hang`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if let Some(test) = rustix::process::Pid::from_raw(test_pid)
                && let Ok(fd) = rustix::process::pidfd_open(test, rustix::process::PidfdFlags::empty())
            {
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                let _ = rustix::event::poll(&mut fds, None);
            }
            // SAFETY: as in `escape_then_hang`.
            unsafe { libc::_exit(0) };
        }
        std::process::id()
    }

    fn text_len(text: String) -> usize {
        text.len()
    }

    fn init_panics() -> () {
        panic!("no database at db.invalid");
    }

    fn init_aborts() -> () {
        std::process::abort();
    }

    fn add_one(x: u64) -> u64 {
        x + 1
    }

    /// The environment variable `TROIKA_LIFECYCLE_ENV` and the working
    /// directory, as the worker sees them, and its pid.
    fn env_and_cwd() -> (Option<String>, String, u32) {
        (
            std::env::var("TROIKA_LIFECYCLE_ENV").ok(),
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            std::process::id(),
        )
    }

    /// The ignored and blocked signal masks of the worker, and its pid.
    fn signal_masks() -> (String, String, u32) {
        (status_field("SigIgn"), status_field("SigBlk"), std::process::id())
    }
}

/// A field of `/proc/self/status`.
fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The children of process `pid` (all its threads).
fn children_of(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(list) = std::fs::read_to_string(path) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

fn kill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

fn test_pid() -> i32 {
    std::process::id() as i32
}

#[test]
fn killed_worker_settles_while_a_forked_grandchild_holds_its_pipe() {
    guarded(
        "killed_worker_settles_while_a_forked_grandchild_holds_its_pipe",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(1).unwrap();
            let worker = pool.submit(worker_pid, ()).result().unwrap();
            let handle = pool.submit(escape_then_hang, test_pid());
            wait_until("a child of the worker", || !children_of(worker).is_empty());
            kill(worker);
            let err = handle.result().unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::WorkerDied(Exit::Signal(SIGKILL)));
            // The pool carries on with a new worker.
            assert_eq!(pool.submit(add_one, 1).result().unwrap(), 2);
        },
    );
}

#[test]
fn timed_out_task_settles_while_a_forked_grandchild_holds_its_pipe() {
    guarded(
        "timed_out_task_settles_while_a_forked_grandchild_holds_its_pipe",
        Duration::from_secs(60),
        || {
            let limit = Duration::from_millis(300);
            let pool = one_worker_with_timeout(limit);
            let handle = pool.submit(escape_then_hang, test_pid());
            let err = handle.result().unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::TimedOut(limit));
            assert_eq!(pool.submit(add_one, 1).result().unwrap(), 2);
        },
    );
}

#[test]
fn killed_process_joins_while_a_forked_grandchild_holds_its_pipe() {
    guarded(
        "killed_process_joins_while_a_forked_grandchild_holds_its_pipe",
        Duration::from_secs(60),
        || {
            let p = Process::spawn(escape_then_hang, test_pid()).unwrap();
            let pid = p.pid();
            wait_until("a child", || !children_of(pid).is_empty());
            p.kill();
            let err = p.join().unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::WorkerDied(Exit::Signal(SIGKILL)));
        },
    );
}

fn assert_broken(err: &troika::TaskError, needle: &str) {
    assert!(
        matches!(err.kind(), ErrorKind::InitializerFailed(_)),
        "expected an initializer failure, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("initializer") && text.contains(needle),
        "unclear error: {text}"
    );
}

#[test]
fn panicking_initializer_breaks_the_pool() {
    guarded(
        "panicking_initializer_breaks_the_pool",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::builder()
                .workers(2)
                .initializer(init_panics, ())
                .build()
                .unwrap();
            let queued = pool.submit(add_one, 1);
            assert_broken(&queued.result().unwrap_err(), "no database at db.invalid");
            // Later tasks fail at once, with the same reason.
            let later = pool.submit(add_one, 2);
            assert_broken(&later.result().unwrap_err(), "no database at db.invalid");
            assert_eq!(pool.stats().restarts, 0, "{:?}", pool.stats());
        },
    );
}

#[test]
fn aborting_initializer_breaks_the_pool_without_spinning() {
    guarded(
        "aborting_initializer_breaks_the_pool_without_spinning",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::builder()
                .workers(1)
                .initializer(init_aborts, ())
                .build()
                .unwrap();
            let queued = pool.submit(add_one, 1);
            assert_broken(&queued.result().unwrap_err(), "SIGABRT");
            let restarts = pool.stats().restarts;
            assert!(restarts <= 3, "{restarts} restarts");
            let later = pool.submit(add_one, 2);
            assert_broken(&later.result().unwrap_err(), "SIGABRT");
            // No worker is started for a broken pool.
            assert_eq!(pool.stats().restarts, restarts);
            assert!(pool.worker_pids().is_empty(), "{:?}", pool.worker_pids());
        },
    );
}

/// Kill the worker of a one-worker pool by making it exit, and return the
/// pid of the one that replaced it.
fn replace_worker(pool: &ProcessPool, old: u32) -> u32 {
    assert!(pool.submit(exit_with, 3).result().is_err());
    let new = pool.submit(worker_pid, ()).result().unwrap();
    assert_ne!(new, old);
    new
}

#[test]
fn replacement_workers_keep_the_build_time_environment_and_cwd() {
    guarded(
        "replacement_workers_keep_the_build_time_environment_and_cwd",
        Duration::from_secs(60),
        || {
            let base = std::env::temp_dir().join(format!("troika-lifecycle-{}", test_pid()));
            let (at_build, later) = (base.join("at-build"), base.join("later"));
            std::fs::create_dir_all(&at_build).unwrap();
            std::fs::create_dir_all(&later).unwrap();
            let at_build = at_build.canonicalize().unwrap();
            // SAFETY: this process's environment is only read and written
            // through std, which serializes those accesses.
            unsafe { std::env::set_var("TROIKA_LIFECYCLE_ENV", "at-build") };
            std::env::set_current_dir(&at_build).unwrap();
            let pool = ProcessPool::new(1).unwrap();
            // SAFETY: as above.
            unsafe { std::env::set_var("TROIKA_LIFECYCLE_ENV", "later") };
            std::env::set_current_dir(&later).unwrap();
            let (env, cwd, mut pid) = pool.submit(env_and_cwd, ()).result().unwrap();
            assert_eq!(env.as_deref(), Some("at-build"));
            assert_eq!(cwd, at_build.display().to_string());
            // The first replacement may be the spare started right after the
            // build; the next ones are started after the change.
            for _ in 0..3 {
                pid = replace_worker(&pool, pid);
                let (env, cwd, _) = pool.submit(env_and_cwd, ()).result().unwrap();
                assert_eq!(env.as_deref(), Some("at-build"));
                assert_eq!(cwd, at_build.display().to_string());
            }
            drop(pool);
            let _ = std::fs::remove_dir_all(&base);
        },
    );
}

fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: installs a plain disposition (default or ignore) through a
    // zeroed `sigaction` that lives on this frame.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        assert_eq!(libc::sigaction(sig, &action, std::ptr::null_mut()), 0);
    }
}

#[test]
fn workers_get_the_build_time_signal_dispositions_and_an_empty_mask() {
    guarded(
        "workers_get_the_build_time_signal_dispositions_and_an_empty_mask",
        Duration::from_secs(60),
        || {
            // As a program might: ignore SIGINT (nohup-like) and SIGUSR1.
            // SIGPIPE is ignored too, by Rust's runtime before `main`.
            set_disposition(libc::SIGINT, libc::SIG_IGN);
            set_disposition(libc::SIGUSR1, libc::SIG_IGN);
            let expected = status_field("SigIgn");
            let pool = ProcessPool::new(1).unwrap();
            // Changed after the build: workers must not follow.
            set_disposition(libc::SIGUSR1, libc::SIG_DFL);
            set_disposition(libc::SIGUSR2, libc::SIG_IGN);
            let (ignored, blocked, mut pid) = pool.submit(signal_masks, ()).result().unwrap();
            assert_eq!(ignored, expected, "ignored signals of the first worker");
            assert_eq!(
                u64::from_str_radix(&blocked, 16).unwrap(),
                0,
                "blocked: {blocked}"
            );
            for _ in 0..3 {
                pid = replace_worker(&pool, pid);
                let (ignored, blocked, _) = pool.submit(signal_masks, ()).result().unwrap();
                assert_eq!(ignored, expected, "ignored signals of a replacement");
                assert_eq!(
                    u64::from_str_radix(&blocked, 16).unwrap(),
                    0,
                    "blocked: {blocked}"
                );
            }
        },
    );
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// What this process's descriptors point at, for failure messages.
fn fd_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|f| {
            std::fs::read_link(f.path())
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// The names of this process's threads, for failure messages.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

#[test]
fn dropped_pool_and_process_leave_no_process_thread_or_descriptor() {
    guarded(
        "dropped_pool_and_process_leave_no_process_thread_or_descriptor",
        Duration::from_secs(60),
        || {
            let me = std::process::id();
            // The first pool starts troika's one process-wide thread (the
            // spawner); it is the only thing allowed to outlive a pool.
            drop(ProcessPool::new(1).unwrap());
            let (threads, fds) = (thread_count(), fd_count());
            assert!(children_of(me).is_empty(), "{:?}", children_of(me));

            let pool = ProcessPool::builder()
                .workers(2)
                .task_timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            assert_eq!(pool.submit(add_one, 1).result().unwrap(), 2);
            drop(pool);
            assert!(children_of(me).is_empty(), "{:?}", children_of(me));
            assert_eq!(settled(threads, thread_count), threads);
            assert_eq!(fd_count(), fds);

            let p = Process::spawn(add_one, 1).unwrap();
            assert_eq!(p.join().unwrap(), 2);
            assert!(children_of(me).is_empty(), "{:?}", children_of(me));
            assert_eq!(settled(threads, thread_count), threads);
            assert_eq!(fd_count(), fds);
        },
    );
}

#[test]
fn communicate_returns_when_a_process_that_left_the_group_holds_the_pipes() {
    guarded(
        "communicate_returns_when_a_process_that_left_the_group_holds_the_pipes",
        Duration::from_secs(60),
        || {
            // The escaped process holds stdout and stderr until the test ends.
            let script = format!(
                "setsid sh -c 'while kill -0 {} 2>/dev/null; do sleep 1; done' & exec sleep 600",
                test_pid()
            );
            let mut command = std::process::Command::new("sh");
            command.args(["-c", &script]);
            let output = troika::process::GroupChild::spawn(&mut command)
                .unwrap()
                .communicate(Some(Duration::from_millis(200)))
                .unwrap();
            assert!(output.timed_out);
            assert!(
                matches!(output.exit, Exit::Signal(15) | Exit::Signal(SIGKILL)),
                "{:?}",
                output.exit
            );
        },
    );
}

#[test]
fn dropped_executors_and_commands_leave_no_thread_or_descriptor() {
    guarded(
        "dropped_executors_and_commands_leave_no_thread_or_descriptor",
        Duration::from_secs(60),
        || {
            let me = std::process::id();
            // tokio's signal driver opens a socket pair once per process.
            drop(
                troika::aio::AsyncExecutor::builder()
                    .workers(1)
                    .build()
                    .unwrap(),
            );
            let (threads, fds) = (thread_count(), fd_count());

            let pool = troika::ThreadPool::builder()
                .workers(3)
                .task_timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            assert_eq!(pool.submit(|| 1).result().unwrap(), 1);
            drop(pool);
            assert_eq!(settled(threads, thread_count), threads, "ThreadPool");
            assert_eq!(fd_count(), fds, "ThreadPool");

            let executor = troika::aio::AsyncExecutor::builder()
                .workers(2)
                .build()
                .unwrap();
            assert_eq!(executor.submit(async { 1 }).result().unwrap(), 1);
            assert_eq!(executor.spawn_blocking(|| 2).result().unwrap(), 2);
            drop(executor);
            assert_eq!(
                settled(threads, thread_count),
                threads,
                "AsyncExecutor: {:?}",
                thread_names()
            );
            assert_eq!(fd_count(), fds, "AsyncExecutor: {:?}", fd_names());

            let mut command = std::process::Command::new("sh");
            command.args(["-c", "echo hi; exec sleep 600"]);
            let child = troika::process::GroupChild::spawn(&mut command).unwrap();
            drop(child);
            assert!(children_of(me).is_empty(), "{:?}", children_of(me));
            assert_eq!(fd_count(), fds, "GroupChild");
        },
    );
}

#[test]
fn a_write_to_a_worker_killed_mid_transfer_ends_while_a_grandchild_holds_its_socket() {
    guarded(
        "a_write_to_a_worker_killed_mid_transfer_ends_while_a_grandchild_holds_its_socket",
        Duration::from_secs(60),
        || {
            const BIG: usize = 100 << 20;
            let pool = ProcessPool::new(1).unwrap();
            // An earlier task left a process behind that holds the pipes.
            let pid = pool
                .submit(escape_in_background, test_pid())
                .result()
                .unwrap();
            wait_until("a child", || !children_of(pid).is_empty());
            let killer = std::thread::spawn(move || {
                // Kill the worker once the argument has reached it (its
                // memfd is open or mapped there). The parent's own memfd
                // proves nothing: the argument is encoded into it before
                // the call is queued, and a worker killed then dies idle.
                wait_until("the argument in transfer", || holds_frame_memfd(pid));
                kill(pid);
            });
            let err = pool
                .submit(text_then_hang, "a".repeat(BIG))
                .result()
                .unwrap_err();
            killer.join().unwrap();
            assert_eq!(err.kind(), &ErrorKind::WorkerDied(Exit::Signal(SIGKILL)));
            assert_eq!(pool.submit(add_one, 1).result().unwrap(), 2);
        },
    );
}

troika::remote! {
    fn hang() -> u32 {
        std::thread::sleep(Duration::from_secs(3600));
        0
    }

    /// Takes a big argument and holds it until the worker is killed, so a
    /// kill that follows the start of the transfer always finds the task in
    /// flight, whether the body is still crossing or already arrived.
    fn text_then_hang(text: String) -> usize {
        std::hint::black_box(&text);
        loop {
            std::thread::park();
        }
    }
}

#[test]
fn dropping_a_process_pool_with_a_task_that_never_finishes_returns() {
    guarded(
        "dropping_a_process_pool_with_a_task_that_never_finishes_returns",
        Duration::from_secs(60),
        || {
            // The default drop timeout (10 s) bounds the drop.
            let pool = ProcessPool::new(1).unwrap();
            let stuck = pool.submit(hang, ());
            wait_until("the stuck task to run", || stuck.is_running());
            drop(pool);
            assert!(!stuck.is_done());
        },
    );
}

#[test]
fn a_panic_unwinds_past_a_process_pool_with_a_stuck_task() {
    guarded(
        "a_panic_unwinds_past_a_process_pool_with_a_stuck_task",
        Duration::from_secs(60),
        || {
            let unwound = std::panic::catch_unwind(|| {
                let pool = ProcessPool::new(1).unwrap();
                let stuck = pool.submit(hang, ());
                wait_until("the stuck task to run", || stuck.is_running());
                panic!("the caller failed");
            });
            assert!(unwound.is_err());
        },
    );
}

#[test]
fn process_pool_shutdown_timeout_leaves_stuck_tasks_running_in_the_background() {
    guarded(
        "process_pool_shutdown_timeout_leaves_stuck_tasks_running_in_the_background",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(2).unwrap();
            let quick = pool.submit(add_one, 1);
            assert_eq!(quick.result().unwrap(), 2);
            let stuck = pool.submit(hang, ());
            wait_until("the stuck task to run", || stuck.is_running());
            let pid = pool.worker_pids();
            assert!(!pool.shutdown_timeout(Duration::from_millis(50)));
            assert!(pool.submit(add_one, 1).result().unwrap_err().is_shut_down());
            assert!(!stuck.is_done());
            // It still runs: killing its worker settles it.
            for pid in pid {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
            assert_eq!(
                stuck.result().unwrap_err().kind(),
                &ErrorKind::WorkerDied(Exit::Signal(SIGKILL))
            );

            // Nothing stuck: every worker exits in time.
            let pool = ProcessPool::new(2).unwrap();
            let quick = pool.submit(add_one, 1);
            assert!(pool.shutdown_timeout(Duration::from_secs(30)));
            assert_eq!(quick.result().unwrap(), 2);

            // The drop timeout is configurable.
            let pool = ProcessPool::builder()
                .workers(1)
                .drop_timeout(Duration::from_millis(20))
                .build()
                .unwrap();
            let stuck = pool.submit(hang, ());
            wait_until("the stuck task to run", || stuck.is_running());
            drop(pool);
            assert!(!stuck.is_done());
        },
    );
}
