//! Every way a worker can die, and every stage where a task can fail: each
//! failure is produced for real in a worker process (so the test runner
//! survives it), fails only its own task with the right error, and leaves the
//! pool working with a replaced worker.

mod ipc_support;

use std::time::{Duration, Instant};

use ipc_support::{Bytes, guarded, holds_frame_memfd, one_worker_with_timeout, wait_until};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use troika::{ErrorKind, Exit, ProcessPool, RemoteFn, TaskError};

const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const BIG: usize = 100 << 20;

/// A value that refuses to serialize when it is 666 and to deserialize when
/// it is 13, so each stage can be made to fail on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Picky(u32);

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 666 {
            return Err(serde::ser::Error::custom("666 will not be written"));
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
        let value = u32::deserialize(d)?;
        if value == 13 {
            return Err(serde::de::Error::custom("13 will not be read"));
        }
        Ok(Picky(value))
    }
}

troika::remote! {
    fn worker_pid() -> u32 {
        std::process::id()
    }

    fn abort_now() -> u32 {
        std::process::abort()
    }

    fn segfault() -> u32 {
        // SAFETY: this is deliberately NOT sound: it writes through a pointer
        // to an unmapped address to make the worker die of SIGSEGV for real.
        // It runs only in a worker process, which the pool replaces.
        unsafe { std::ptr::write_volatile(std::ptr::dangling_mut::<u64>().wrapping_add(7), 1) };
        0
    }

    fn exit_with(code: i32) -> u32 {
        std::process::exit(code)
    }

    fn kill_self() -> u32 {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        loop {
            std::thread::park();
        }
    }

    fn allocate(bytes: usize) -> usize {
        let v = vec![1u8; bytes];
        std::hint::black_box(&v);
        v.len()
    }

    fn echo_picky(p: Picky) -> Picky {
        p
    }

    fn make_picky(n: u32) -> Picky {
        Picky(n)
    }

    fn sleep_ms(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    fn big_len(data: Bytes) -> usize {
        data.0.len()
    }

    /// Takes a big argument and holds it until the worker is killed, so a
    /// kill that follows the start of the transfer always finds the task in
    /// flight, whether the body is still crossing or already arrived.
    fn big_arg_then_wait(data: Bytes) -> usize {
        std::hint::black_box(&data);
        loop {
            std::thread::park();
        }
    }

    fn big_result(bytes: usize) -> Bytes {
        Bytes(vec![7u8; bytes])
    }

    /// Returns a big result whose encoding kills the worker half-way
    /// through: the reply's shared memory exists and is half written.
    fn big_result_then_die(bytes: usize) -> DiesHalfWay {
        DiesHalfWay(bytes)
    }
}

/// `n` bytes that the worker is SIGKILLed in the middle of encoding: after
/// half of them, so a 100 MB value has spilled into its memfd by then.
#[derive(Debug)]
struct DiesHalfWay(usize);

impl Serialize for DiesHalfWay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0))?;
        for i in 0..self.0 {
            if i == self.0 / 2 {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
            }
            seq.serialize_element(&7u8)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for DiesHalfWay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(|v| DiesHalfWay(v.len()))
    }
}

/// A function nobody registered.
#[derive(Clone, Copy, Debug)]
struct Unregistered;

impl RemoteFn for Unregistered {
    type Arg = u32;
    type Output = u32;
    const NAME: &'static str = "nowhere::unregistered";
    fn run(arg: u32) -> u32 {
        arg
    }
}

fn one_worker() -> ProcessPool {
    ProcessPool::new(1).unwrap()
}

/// The task fails with `expected`, and the pool still runs tasks afterwards
/// on a new worker.
fn assert_died(pool: &ProcessPool, err: TaskError, expected: Exit, old_pid: u32) {
    assert_eq!(err.kind(), &ErrorKind::WorkerDied(expected), "{err}");
    let new_pid = pool.submit(worker_pid, ()).result().unwrap();
    assert_ne!(new_pid, old_pid, "the dead worker was replaced");
    assert!(pool.stats().restarts >= 1);
}

#[test]
fn abort_fails_only_its_task() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(abort_now, ()).result().unwrap_err();
    assert_died(&pool, err, Exit::Signal(SIGABRT), pid);
}

#[test]
fn segfault_is_reported_as_sigsegv() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(segfault, ()).result().unwrap_err();
    assert_died(&pool, err, Exit::Signal(SIGSEGV), pid);
    assert!(err_text(Exit::Signal(SIGSEGV)).contains("SIGSEGV"));
}

fn err_text(exit: Exit) -> String {
    TaskError::new(ErrorKind::WorkerDied(exit)).to_string()
}

#[test]
fn exit_code_is_reported() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(exit_with, 3).result().unwrap_err();
    assert_died(&pool, err, Exit::Code(3), pid);
    // exit(0) in a task is a death too: the task produced no value.
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(exit_with, 0).result().unwrap_err();
    assert_died(&pool, err, Exit::Code(0), pid);
}

#[test]
fn killed_by_a_signal() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(kill_self, ()).result().unwrap_err();
    assert_died(&pool, err, Exit::Signal(SIGKILL), pid);
}

#[test]
fn killed_from_outside_while_running() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let handle = pool.submit(sleep_ms, 60_000);
    wait_until("the task to start", || handle.is_running());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let err = handle.result().unwrap_err();
    assert_died(&pool, err, Exit::Signal(SIGKILL), pid);
}

#[test]
fn allocation_past_the_memory_cap() {
    let pool = ProcessPool::builder()
        .workers(1)
        .memory_cap(512 << 20)
        .build()
        .unwrap();
    assert_eq!(pool.submit(allocate, 1 << 20).result().unwrap(), 1 << 20);
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    // Rust aborts when an allocation fails.
    let err = pool.submit(allocate, 2 << 30).result().unwrap_err();
    assert_died(&pool, err, Exit::Signal(SIGABRT), pid);
}

#[test]
fn argument_that_cannot_be_encoded_fails_in_the_parent() {
    let pool = one_worker();
    let err = pool.submit(echo_picky, Picky(666)).result().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains("in the parent"), "{err}");
    assert_eq!(
        pool.submit(echo_picky, Picky(1)).result().unwrap(),
        Picky(1)
    );
}

#[test]
fn argument_that_cannot_be_decoded_fails_in_the_worker() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(echo_picky, Picky(13)).result().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains("in the worker"), "{err}");
    assert_eq!(
        pool.submit(worker_pid, ()).result().unwrap(),
        pid,
        "worker survives"
    );
}

#[test]
fn result_that_cannot_be_encoded_fails_in_the_worker() {
    let pool = one_worker();
    let err = pool.submit(make_picky, 666).result().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(
        err.to_string()
            .contains("encoding the result in the worker"),
        "{err}"
    );
    assert_eq!(pool.submit(make_picky, 5).result().unwrap(), Picky(5));
}

#[test]
fn result_that_cannot_be_decoded_fails_in_the_parent() {
    let pool = one_worker();
    let err = pool.submit(make_picky, 13).result().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(
        err.to_string()
            .contains("decoding the result in the parent"),
        "{err}"
    );
    assert_eq!(pool.submit(make_picky, 5).result().unwrap(), Picky(5));
    assert_eq!(pool.stats().restarts, 0);
}

#[test]
fn unregistered_function_is_a_clear_error() {
    let pool = one_worker();
    let err = pool.submit(Unregistered, 1).result().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Failed(m) if m.contains("nowhere::unregistered")));
}

#[test]
fn chunk_items_fail_alone() {
    let pool = one_worker();
    let outcomes: Vec<_> = pool
        .imap(make_picky, [1, 666, 2, 3], 4)
        .unwrap()
        .collect::<Vec<Result<Picky, TaskError>>>();
    assert_eq!(outcomes[0], Ok(Picky(1)));
    assert!(outcomes[1].as_ref().unwrap_err().is_serialization());
    assert_eq!(outcomes[2], Ok(Picky(2)));
    assert_eq!(outcomes[3], Ok(Picky(3)));
}

#[test]
fn hundred_megabytes_each_way() {
    let pool = ProcessPool::new(2).unwrap();
    let arg = Bytes(vec![3u8; BIG]);
    let len = pool.submit(big_len, arg.clone());
    let result = pool.submit(big_result, BIG);
    assert_eq!(len.result().unwrap(), BIG);
    let data = result.result().map_err(|e| e.to_string()).map(|b| b.0);
    assert!(data.is_ok_and(|d| d.len() == BIG && d.iter().all(|&b| b == 7)));
    // Big calls queued behind each other on one worker, with big results
    // coming back while the next big argument is written: nothing deadlocks.
    let pool = one_worker();
    let a = pool.submit(big_result, BIG);
    let b = pool.submit(big_len, arg.clone());
    let c = pool.submit(big_result, BIG);
    assert!(a.result().is_ok_and(|d| d.0.len() == BIG));
    assert_eq!(b.result().unwrap(), BIG);
    assert!(c.result().is_ok_and(|d| d.0.len() == BIG));
}

/// Regression (seen once, with the tests running in parallel threads): the
/// killer below watches this process's descriptors for a frame's memfd, and
/// another test's memfd (`sigkill_in_the_middle_of_returning_100_mb` maps
/// its reply's) made it kill the idle worker before the call was sent; the
/// call then went to the replacement, which holds it for ever. So the test
/// runs alone in a child process, under an outer deadline.
#[test]
fn sigkill_in_the_middle_of_sending_100_mb() {
    guarded(
        "sigkill_in_the_middle_of_sending_100_mb",
        Duration::from_secs(180),
        sigkill_in_the_middle_of_sending_100_mb_alone,
    );
}

fn sigkill_in_the_middle_of_sending_100_mb_alone() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let killer = std::thread::spawn(move || {
        // Kill the worker once the 100 MB argument has reached it: its
        // memfd is in the worker's descriptors or mapped there (see
        // wire.rs). The parent's own memfd proves nothing: the argument is
        // encoded into it before the call is queued, and a worker killed
        // then dies idle and its replacement runs the call.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut in_transfer = false;
        while !in_transfer && Instant::now() < deadline {
            in_transfer = holds_frame_memfd(pid);
            std::thread::yield_now();
        }
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
        in_transfer
    });
    let err = pool
        .submit(big_arg_then_wait, Bytes(vec![1u8; BIG]))
        .result()
        .unwrap_err();
    assert!(killer.join().unwrap(), "killed mid-transfer");
    assert_died(&pool, err, Exit::Signal(SIGKILL), pid);
}

#[test]
fn sigkill_in_the_middle_of_returning_100_mb() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let Err(err) = pool.submit(big_result_then_die, BIG).result() else {
        panic!("the worker should have died mid-transfer");
    };
    assert_died(&pool, err, Exit::Signal(SIGKILL), pid);
}

#[test]
fn timeout_kills_and_replaces_the_worker() {
    let pool = one_worker_with_timeout(Duration::from_millis(300));
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(sleep_ms, 60_000).result().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let new_pid = pool.submit(worker_pid, ()).result().unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(pool.submit(sleep_ms, 1).result().unwrap(), 1);
}

#[test]
fn with_a_timeout_each_call_of_a_batch_has_its_own_clock() {
    // Quick calls are sent to a worker in batches, also under a task timeout.
    // A call's clock starts when the call before it replies: two 200 ms calls
    // sent together under a 300 ms timeout both succeed, and a call that
    // hangs fails alone, while the calls queued behind it run on the new
    // worker. The first call of each round goes out alone; the rest are
    // queued within microseconds, long before it replies, so they travel as
    // one batch (the outcome asserted holds whether or not they do).
    let pool = one_worker_with_timeout(Duration::from_millis(300));
    for _ in 0..100 {
        pool.submit(worker_pid, ()).result().unwrap(); // quick calls: batches grow
    }
    for _ in 0..2 {
        let first = pool.submit(worker_pid, ());
        let slow: Vec<_> = (0..2).map(|_| pool.submit(sleep_ms, 200)).collect();
        let after = pool.submit(worker_pid, ());
        first.result().unwrap();
        for handle in slow {
            assert_eq!(handle.result().unwrap(), 200, "charged for its predecessor");
        }
        after.result().unwrap();

        let pid = pool.submit(worker_pid, ()).result().unwrap();
        let before: Vec<_> = (0..3).map(|_| pool.submit(worker_pid, ())).collect();
        let hung = pool.submit(sleep_ms, 60_000);
        let behind: Vec<_> = (0..3).map(|_| pool.submit(worker_pid, ())).collect();
        for handle in before {
            assert_eq!(handle.result().unwrap(), pid);
        }
        assert!(hung.result().unwrap_err().is_timeout());
        for handle in behind {
            assert_ne!(handle.result().unwrap(), pid, "ran on the replacement");
        }
    }
}

#[test]
fn cancel_of_a_running_task_kills_its_worker() {
    let pool = one_worker();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    let handle = pool.submit(sleep_ms, 60_000);
    let queued = pool.submit(worker_pid, ());
    wait_until("the task to start", || handle.is_running());
    assert!(handle.cancel());
    assert!(handle.result().unwrap_err().is_cancelled());
    // The task queued behind it runs on the replacement.
    assert_ne!(queued.result().unwrap(), pid);
}

#[test]
fn cancel_of_a_pending_task_removes_it() {
    let pool = one_worker();
    let running = pool.submit(sleep_ms, 200);
    let pending = pool.submit(exit_with, 9);
    assert!(pending.cancel());
    assert!(pending.result().unwrap_err().is_cancelled());
    assert_eq!(running.result().unwrap(), 200);
    assert_eq!(pool.stats().restarts, 0, "the cancelled task never ran");
}

#[test]
fn recycling_after_n_tasks() {
    let pool = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..9)
        .map(|_| pool.submit(worker_pid, ()).result().unwrap())
        .collect();
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{pids:?}");
}

troika::remote! {
    fn leak(bytes: usize) -> usize {
        let v = vec![1u8; bytes];
        v.leak().len()
    }
}

#[test]
fn recycling_above_an_rss_limit() {
    let pool = ProcessPool::builder()
        .workers(1)
        .max_worker_rss(64 << 20)
        .build()
        .unwrap();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
    pool.submit(leak, 128 << 20).result().unwrap();
    assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
}

#[test]
fn cancel_reaches_a_task_that_was_sent_again_after_a_death() {
    // Quick tasks make the pool batch calls; a crash then sends the calls
    // behind it again, to the replacement worker.
    let pool = one_worker();
    for _ in 0..200 {
        pool.submit(worker_pid, ()).result().unwrap();
    }
    let crash = pool.submit(exit_with, 4);
    let sleeper = pool.submit(sleep_ms, 600_000);
    assert_eq!(
        crash.result().unwrap_err().kind(),
        &ErrorKind::WorkerDied(Exit::Code(4))
    );
    wait_until("the sleeper to run", || {
        sleeper.is_running() && pool.stats().busy == 1
    });
    let restarts = pool.stats().restarts;
    // Cancel kills the worker now running it (not the one that died).
    assert!(sleeper.cancel());
    assert!(sleeper.result().unwrap_err().is_cancelled());
    wait_until("a restart", || pool.stats().restarts > restarts);
    pool.submit(worker_pid, ()).result().unwrap();
}
