//! The process pool's data path under hostile user types and peers: panics
//! and errors in `Serialize`/`Deserialize` on either side, one bad item in a
//! chunk, a cancel of a call batched behind another, and a worker announcing
//! a huge reply. Each failure must fail its own task (or item) with a clear
//! error and leave the pool working.

mod ipc_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc_support::guarded;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use troika::{ErrorKind, ProcessPool, TaskError};

/// A value whose `Serialize` panics on 101 and fails on 666, and whose
/// `Deserialize` panics on 202 and fails on 13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Touchy(u32);

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            101 => panic!("serialize refuses 101"),
            666 => Err(serde::ser::Error::custom("bad value 666")),
            n => s.serialize_u32(n),
        }
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
        match u32::deserialize(d)? {
            202 => panic!("deserialize refuses 202"),
            13 => Err(serde::de::Error::custom("13 will not be read")),
            n => Ok(Touchy(n)),
        }
    }
}

/// A value whose `Drop` panics in the parent (not in a worker).
#[derive(Debug, Serialize, Deserialize)]
struct DropBomb(u32);

impl Drop for DropBomb {
    fn drop(&mut self) {
        if std::env::var_os("TROIKA_WORKER").is_none() && !std::thread::panicking() {
            panic!("drop bomb {}", self.0);
        }
    }
}

/// Touchy values deep inside derived types, sequences and options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Nested {
    label: String,
    items: Vec<Touchy>,
    maybe: Option<Touchy>,
}

troika::remote! {
    fn echo(t: Touchy) -> Touchy {
        t
    }

    fn make(n: u32) -> Touchy {
        Touchy(n)
    }

    fn worker_pid() -> u32 {
        std::process::id()
    }

    fn byte_count(bytes: Vec<u8>) -> usize {
        bytes.len()
    }

    fn make_bytes(len: usize) -> Vec<u8> {
        vec![7; len]
    }

    fn make_nested(n: u32) -> Nested {
        Nested { label: "x".into(), items: vec![Touchy(1), Touchy(n)], maybe: Some(Touchy(2)) }
    }

    fn echo_nested(n: Nested) -> u32 {
        n.items.len() as u32
    }

    /// Open the FIFO at `path` for reading (the test's open for writing
    /// returns once this runs) and wait for one byte.
    fn wait_on_fifo(path: String) -> u32 {
        use std::io::Read;
        let mut fifo = std::fs::File::open(path).unwrap();
        let mut byte = [0u8; 1];
        fifo.read_exact(&mut byte).unwrap();
        u32::from(byte[0])
    }

    /// A `DropBomb`, once the FIFO at `path` delivers a byte.
    fn bomb_after_fifo(path: String) -> DropBomb {
        DropBomb(wait_on_fifo::call(path))
    }

    /// Append `n` to the file at `path` (one line per call that ran), then
    /// panic if `n` is 7.
    fn tally(path: String, n: u32) -> u32 {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
        writeln!(file, "{n}").unwrap();
        assert!(n != 7, "tally refuses 7");
        n
    }

    /// Leave a mark that this call ran.
    fn leave_mark(path: String) -> u32 {
        std::fs::write(path, b"ran").unwrap();
        7
    }

    /// Write a forged reply header announcing `len` bytes of body into this
    /// worker's reply stream, as a corrupt or hostile worker would.
    fn forge_reply(len: u64) -> u32 {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&3u16.to_le_bytes()); // REPLY
        header.extend_from_slice(&0u16.to_le_bytes()); // OK
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&u64::MAX.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        assert!(troika::process::__test::forge_reply_for_test(Some(&header)));
        0
    }
}

fn one_worker() -> ProcessPool {
    ProcessPool::new(1).unwrap()
}

fn assert_panic(outcome: &Result<Touchy, TaskError>, message: &str) {
    let err = outcome.as_ref().unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert!(
        err.panic_message().is_some_and(|m| m.contains(message)),
        "{err}"
    );
}

fn assert_serialization(outcome: &Result<Touchy, TaskError>, message: &str) {
    let err = outcome.as_ref().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains(message), "{err}");
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("troika-codec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path_string(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

// --- 1. user code that panics on a pool thread in the parent ---------------

#[test]
fn deserialize_panic_in_the_parent_fails_its_handle_alone() {
    guarded(
        "deserialize_panic_in_the_parent_fails_its_handle_alone",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            assert_panic(&pool.submit(make, 202).result(), "deserialize refuses 202");
            // The pool's I/O thread lives on.
            assert_eq!(pool.submit(make, 5).result().unwrap(), Touchy(5));
            assert_eq!(pool.stats().restarts, 0);
        },
    );
}

#[test]
fn deserialize_panic_in_the_parent_fails_its_chunk_item_alone() {
    guarded(
        "deserialize_panic_in_the_parent_fails_its_chunk_item_alone",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let outcomes: Vec<_> = pool.imap(make, [1, 202, 3], 3).unwrap().collect();
            assert_eq!(outcomes[0], Ok(Touchy(1)));
            assert_panic(&outcomes[1], "deserialize refuses 202");
            assert_eq!(outcomes[2], Ok(Touchy(3)));
            assert_eq!(pool.submit(make, 5).result().unwrap(), Touchy(5));
        },
    );
}

#[test]
fn serialize_panic_in_the_parent_fails_the_submitted_handle() {
    guarded(
        "serialize_panic_in_the_parent_fails_the_submitted_handle",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            assert_panic(
                &pool.submit(echo, Touchy(101)).result(),
                "serialize refuses 101",
            );
            let refused = pool.try_submit(echo, Touchy(101)).unwrap().result();
            assert_panic(&refused, "serialize refuses 101");
            assert_eq!(pool.submit(echo, Touchy(4)).result().unwrap(), Touchy(4));
        },
    );
}

#[test]
fn serialize_panic_in_the_parent_fails_its_chunk_item_alone() {
    guarded(
        "serialize_panic_in_the_parent_fails_its_chunk_item_alone",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let items = [Touchy(1), Touchy(101), Touchy(3)];
            let outcomes: Vec<_> = pool.imap(echo, items, 3).unwrap().collect();
            assert_eq!(outcomes[0], Ok(Touchy(1)));
            assert_panic(&outcomes[1], "serialize refuses 101");
            assert_eq!(outcomes[2], Ok(Touchy(3)));
        },
    );
}

#[test]
fn serialize_panic_in_the_initializer_argument_is_a_config_error() {
    guarded(
        "serialize_panic_in_the_initializer_argument_is_a_config_error",
        Duration::from_secs(60),
        || {
            let err = ProcessPool::builder()
                .workers(1)
                .initializer(echo, Touchy(101))
                .build()
                .unwrap_err();
            assert!(err.to_string().contains("serialize refuses 101"), "{err}");
        },
    );
}

#[test]
fn panicking_done_callback_on_the_io_thread_leaves_the_pool_working() {
    guarded(
        "panicking_done_callback_on_the_io_thread_leaves_the_pool_working",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let dir = scratch("callback");
            let fifo = dir.join("gate");
            rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RWXU).unwrap();
            let gated = pool.submit(wait_on_fifo, path_string(&fifo));
            // Registered while the task runs: the callback runs on the I/O
            // thread that completes it.
            gated.add_done_callback(|_| panic!("callback boom"));
            std::fs::write(&fifo, [9u8]).unwrap();
            assert_eq!(gated.result().unwrap(), 9);
            assert_eq!(pool.submit(make, 5).result().unwrap(), Touchy(5));
        },
    );
}

#[test]
fn panicking_drop_of_an_unclaimed_result_leaves_the_pool_working() {
    guarded(
        "panicking_drop_of_an_unclaimed_result_leaves_the_pool_working",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let dir = scratch("drop-bomb");
            let fifo = dir.join("gate");
            rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RWXU).unwrap();
            // The handle is gone before the result arrives: the value is
            // dropped on the pool's I/O thread.
            drop(pool.submit(bomb_after_fifo, path_string(&fifo)));
            std::fs::write(&fifo, [1u8]).unwrap();
            assert_eq!(pool.submit(make, 5).result().unwrap(), Touchy(5));
            assert_eq!(pool.submit(make, 6).result().unwrap(), Touchy(6));
        },
    );
}

// --- 2. user code that panics in the worker ---------------------------------

#[test]
fn deserialize_panic_in_the_worker_is_a_panic_and_the_worker_lives() {
    guarded(
        "deserialize_panic_in_the_worker_is_a_panic_and_the_worker_lives",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            assert_panic(
                &pool.submit(echo, Touchy(202)).result(),
                "deserialize refuses 202",
            );
            assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

#[test]
fn serialize_panic_in_the_worker_is_a_panic_and_the_worker_lives() {
    guarded(
        "serialize_panic_in_the_worker_is_a_panic_and_the_worker_lives",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            assert_panic(&pool.submit(make, 101).result(), "serialize refuses 101");
            assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

#[test]
fn panics_in_the_worker_fail_their_chunk_items_alone() {
    guarded(
        "panics_in_the_worker_fail_their_chunk_items_alone",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let made: Vec<_> = pool.imap(make, [1, 101, 3], 3).unwrap().collect();
            assert_eq!(made[0], Ok(Touchy(1)));
            assert_panic(&made[1], "serialize refuses 101");
            assert_eq!(made[2], Ok(Touchy(3)));
            let items = [Touchy(1), Touchy(202), Touchy(3)];
            let echoed: Vec<_> = pool.imap(echo, items, 3).unwrap().collect();
            assert_eq!(echoed[0], Ok(Touchy(1)));
            assert_panic(&echoed[1], "deserialize refuses 202");
            assert_eq!(echoed[2], Ok(Touchy(3)));
            assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

// --- 3. one bad item of a chunk fails alone ----------------------------------

#[test]
fn imap_one_undecodable_result_fails_alone() {
    let pool = one_worker();
    let outcomes: Vec<_> = pool.imap(make, [1, 13, 2, 3], 4).unwrap().collect();
    assert_eq!(outcomes[0], Ok(Touchy(1)));
    assert_serialization(&outcomes[1], "decoding the result in the parent");
    assert_eq!(outcomes[2], Ok(Touchy(2)));
    assert_eq!(outcomes[3], Ok(Touchy(3)));
}

#[test]
fn imap_one_unencodable_argument_fails_alone() {
    let pool = one_worker();
    let items = [Touchy(1), Touchy(666), Touchy(2)];
    let outcomes: Vec<_> = pool.imap(echo, items, 3).unwrap().collect();
    assert_eq!(outcomes[0], Ok(Touchy(1)));
    assert_serialization(&outcomes[1], "encoding the argument in the parent");
    assert_eq!(outcomes[2], Ok(Touchy(2)));
}

#[test]
fn imap_one_undecodable_argument_fails_alone() {
    let pool = one_worker();
    let items = [Touchy(1), Touchy(13), Touchy(2)];
    let outcomes: Vec<_> = pool.imap(echo, items, 3).unwrap().collect();
    assert_eq!(outcomes[0], Ok(Touchy(1)));
    assert_serialization(&outcomes[1], "decoding the argument in the worker");
    assert_eq!(outcomes[2], Ok(Touchy(2)));
}

#[test]
fn unordered_map_one_bad_item_fails_alone() {
    let pool = one_worker();
    let mut outcomes: Vec<_> = pool.imap_unordered(make, [1, 13, 2], 3).unwrap().collect();
    outcomes.sort_by_key(|(i, _)| *i);
    assert_eq!(outcomes[0].1, Ok(Touchy(1)));
    assert_serialization(&outcomes[1].1, "decoding the result in the parent");
    assert_eq!(outcomes[2].1, Ok(Touchy(2)));
}

/// What a chunk item holding `n` must come back as: the value, or the
/// error its `Touchy` raises on the way (`parent_first`: the value is an
/// argument, encoded in the parent and decoded in the worker; otherwise a
/// result, encoded in the worker and decoded in the parent).
fn assert_item(outcome: &Result<Touchy, TaskError>, n: u32, parent_first: bool) {
    let (encoding, decoding) = if parent_first {
        (
            "encoding the argument in the parent",
            "decoding the argument in the worker",
        )
    } else {
        (
            "encoding the result in the worker",
            "decoding the result in the parent",
        )
    };
    match n {
        101 => assert_panic(outcome, "serialize refuses 101"),
        666 => {
            assert_serialization(outcome, encoding);
            assert_serialization(outcome, "bad value 666");
        }
        202 => assert_panic(outcome, "deserialize refuses 202"),
        13 => {
            assert_serialization(outcome, decoding);
            assert_serialization(outcome, "13 will not be read");
        }
        n => assert_eq!(outcome, &Ok(Touchy(n))),
    }
}

/// Bad items of every kind — first, last, side by side and alone in the
/// middle of a long chunk — fail alone, with their own errors, on either
/// side; every other item comes back in its place, and nothing runs twice.
#[test]
fn bad_items_anywhere_in_a_long_chunk_fail_alone() {
    guarded(
        "bad_items_anywhere_in_a_long_chunk_fail_alone",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let bad = [
                (0, 101),
                (1, 13),
                (2, 666),
                (500, 202),
                (501, 101),
                (998, 666),
                (999, 13),
            ];
            let items: Vec<u32> = (0..1000)
                .map(|i| bad.iter().find(|b| b.0 == i).map_or(1000 + i, |b| b.1))
                .collect();
            for chunksize in [1000, 7] {
                let echoed: Vec<_> = pool
                    .imap(echo, items.iter().map(|&n| Touchy(n)), chunksize)
                    .unwrap()
                    .collect();
                assert_eq!(echoed.len(), items.len());
                for (outcome, &n) in echoed.iter().zip(&items) {
                    assert_item(outcome, n, true);
                }
                let made: Vec<_> = pool
                    .imap(make, items.iter().copied(), chunksize)
                    .unwrap()
                    .collect();
                assert_eq!(made.len(), items.len());
                for (outcome, &n) in made.iter().zip(&items) {
                    assert_item(outcome, n, false);
                }
            }
            assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

/// A panic in the function fails its item alone, and the items after it in
/// the chunk still run, each exactly once.
#[test]
fn a_panicking_item_in_a_chunk_runs_the_others_once() {
    guarded(
        "a_panicking_item_in_a_chunk_runs_the_others_once",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let dir = scratch("tally");
            let log = path_string(&dir.join("calls"));
            let outcomes: Vec<_> = pool
                .imap(tally, (0..100).map(|n| (log.clone(), n)), 100)
                .unwrap()
                .collect();
            for (n, outcome) in (0..100).zip(&outcomes) {
                match outcome {
                    Ok(value) => assert_eq!(*value, n),
                    Err(err) => {
                        assert_eq!(n, 7, "{err}");
                        assert!(err.is_panic(), "{err}");
                    }
                }
            }
            assert!(outcomes[7].is_err());
            let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
            let calls: Vec<u32> = calls.lines().map(|l| l.parse().unwrap()).collect();
            assert_eq!(calls, (0..100).collect::<Vec<u32>>());
            let _ = std::fs::remove_dir_all(dir);
        },
    );
}

/// A chunk whose every item fails, of each kind on each side, fails item by
/// item and leaves the worker serving.
#[test]
fn a_chunk_of_only_bad_items_fails_item_by_item() {
    guarded(
        "a_chunk_of_only_bad_items_fails_item_by_item",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            for n in [101, 666, 202, 13] {
                let echoed: Vec<_> = pool
                    .imap(echo, vec![Touchy(n); 300], 300)
                    .unwrap()
                    .collect();
                assert_eq!(echoed.len(), 300);
                echoed
                    .iter()
                    .for_each(|outcome| assert_item(outcome, n, true));
                let made: Vec<_> = pool.imap(make, vec![n; 300], 300).unwrap().collect();
                assert_eq!(made.len(), 300);
                made.iter()
                    .for_each(|outcome| assert_item(outcome, n, false));
            }
            assert_eq!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

// --- 4. cancel of a call batched behind another ------------------------------

/// A call written to a worker behind another one (a batch) cannot be taken
/// back: `cancel()` must not claim it did. Either it is refused, or the call
/// really never runs.
#[test]
fn cancel_of_a_call_batched_behind_another_keeps_its_promise() {
    guarded(
        "cancel_of_a_call_batched_behind_another_keeps_its_promise",
        Duration::from_secs(120),
        || {
            const PER_WORKER: usize = 60;
            let dir = scratch("batched-cancel");
            let pool = ProcessPool::builder()
                .workers(1)
                .max_tasks_per_worker(PER_WORKER)
                .build()
                .unwrap();
            for attempt in 0..50 {
                // Quick calls teach the pool that calls are short, so that it
                // batches them; the last one retires the worker. Calls
                // submitted before its replacement is ready wait in the queue
                // and go to it together, as one batch.
                for _ in 0..PER_WORKER {
                    pool.submit(worker_pid, ()).result().unwrap();
                }
                let fifo = dir.join(format!("gate-{attempt}"));
                let mark = dir.join(format!("ran-{attempt}"));
                rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RWXU).unwrap();
                let blocker = pool.submit(wait_on_fifo, path_string(&fifo));
                let victim = pool.submit(leave_mark, path_string(&mark));
                let batched = pool.stats().queued == 2;
                // Opening the FIFO for writing returns once the blocker runs.
                let mut gate = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                let batched = batched && pool.stats().queued == 0;
                let cancelled = batched && victim.cancel();
                std::io::Write::write_all(&mut gate, &[1]).unwrap();
                drop(gate);
                assert_eq!(blocker.result().unwrap(), 1);
                // The worker runs calls in order: once this one answered, the
                // victim has run or been skipped.
                pool.submit(worker_pid, ()).result().unwrap();
                let ran = mark.exists();
                let outcome = victim.result();
                if !batched {
                    continue; // the replacement was ready too soon: try again
                }
                if cancelled {
                    assert!(!ran, "cancel() returned true, yet the call ran");
                    assert!(outcome.unwrap_err().is_cancelled());
                } else {
                    assert!(ran, "a call whose cancel was refused must run");
                    assert_eq!(outcome.unwrap(), 7);
                }
                return;
            }
            panic!("never got two calls into one batch");
        },
    );
}

// --- 5. a worker announcing a huge reply -------------------------------------

#[test]
fn forged_huge_reply_header_fails_the_task_not_the_parent() {
    guarded(
        "forged_huge_reply_header_fails_the_task_not_the_parent",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let err = pool.submit(forge_reply, 60 << 30).result().unwrap_err();
            let text = err.to_string();
            assert!(!err.is_worker_died(), "{err}");
            assert!(text.contains(&(60u64 << 30).to_string()), "{err}");
            assert!(text.contains("frame limit"), "{err}");
            // The pool replaced the lying worker and goes on.
            let new_pid = pool.submit(worker_pid, ()).result().unwrap();
            assert_ne!(new_pid, pid);
            assert_eq!(pool.submit(make, 5).result().unwrap(), Touchy(5));
        },
    );
}

#[test]
fn frame_limit_out_of_range_is_a_config_error() {
    for bytes in [0, 1023, (8 << 30) + 1] {
        let err = ProcessPool::builder()
            .workers(1)
            .max_frame_bytes(bytes)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("frame limit"), "{err}");
        assert!(err.to_string().contains(&bytes.to_string()), "{err}");
    }
}

fn small_frames() -> ProcessPool {
    ProcessPool::builder()
        .workers(1)
        .max_frame_bytes(64 << 10)
        .build()
        .unwrap()
}

fn assert_too_large(err: &TaskError, at_least: u64) {
    match *err.kind() {
        ErrorKind::FrameTooLarge { size, limit } => {
            assert!(size >= at_least, "{err}");
            assert_eq!(limit, 64 << 10, "{err}");
        }
        _ => panic!("expected a frame-too-large error, got {err}"),
    }
    assert!(err.is_frame_too_large());
    assert!(err.to_string().contains("65536"), "{err}");
}

#[test]
fn argument_over_the_frame_limit_fails_at_submit() {
    let pool = small_frames();
    let err = pool
        .submit(byte_count, vec![1; 100_000])
        .result()
        .unwrap_err();
    assert_too_large(&err, 100_000);
    // A chunk over the limit fails each of its items.
    let outcomes: Vec<_> = pool
        .imap(byte_count, (0..4).map(|_| vec![1; 30_000]), 4)
        .unwrap()
        .collect();
    for outcome in &outcomes {
        assert_too_large(outcome.as_ref().unwrap_err(), 120_000);
    }
    assert_eq!(
        pool.submit(byte_count, vec![1; 1000]).result().unwrap(),
        1000
    );
    assert_eq!(pool.stats().restarts, 0);
}

#[test]
fn reply_over_the_frame_limit_fails_the_task_and_replaces_the_worker() {
    guarded(
        "reply_over_the_frame_limit_fails_the_task_and_replaces_the_worker",
        Duration::from_secs(60),
        || {
            let pool = small_frames();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let err = pool.submit(make_bytes, 200_000).result().unwrap_err();
            assert_too_large(&err, 200_000);
            assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
            assert_eq!(pool.submit(make_bytes, 1000).result().unwrap().len(), 1000);
        },
    );
}
// --- 6. serde's own error messages are kept -----------------------------------

#[test]
fn serde_error_messages_reach_the_task_error() {
    let pool = one_worker();
    let cases = [
        (pool.submit(echo, Touchy(666)).result(), "bad value 666"),
        (
            pool.submit(echo, Touchy(13)).result(),
            "13 will not be read",
        ),
        (pool.submit(make, 666).result(), "bad value 666"),
        (pool.submit(make, 13).result(), "13 will not be read"),
    ];
    for (outcome, message) in &cases {
        assert_serialization(outcome, message);
    }
}

#[test]
fn serde_error_messages_reach_chunk_items() {
    let pool = one_worker();
    let echoed: Vec<_> = pool
        .imap(echo, [Touchy(666), Touchy(13)], 2)
        .unwrap()
        .collect();
    assert_serialization(&echoed[0], "bad value 666");
    assert_serialization(&echoed[1], "13 will not be read");
    let made: Vec<_> = pool.imap(make, [666, 13], 2).unwrap().collect();
    assert_serialization(&made[0], "bad value 666");
    assert_serialization(&made[1], "13 will not be read");
}

#[test]
fn serde_error_messages_of_nested_values_are_kept() {
    let pool = one_worker();
    let nested = |n| Nested {
        label: "y".into(),
        items: vec![Touchy(n)],
        maybe: None,
    };
    let cases = [
        (
            pool.submit(echo_nested, nested(666)).result(),
            "bad value 666",
        ),
        (
            pool.submit(echo_nested, nested(13)).result(),
            "13 will not be read",
        ),
    ];
    for (outcome, message) in &cases {
        let err = outcome.as_ref().unwrap_err();
        assert!(
            err.is_serialization() && err.to_string().contains(message),
            "{err}"
        );
    }
    let made = [
        (pool.submit(make_nested, 666).result(), "bad value 666"),
        (pool.submit(make_nested, 13).result(), "13 will not be read"),
    ];
    for (outcome, message) in &made {
        let err = outcome.as_ref().unwrap_err();
        assert!(
            err.is_serialization() && err.to_string().contains(message),
            "{err}"
        );
    }
    assert_eq!(
        pool.submit(make_nested, 3).result().unwrap().items[1],
        Touchy(3)
    );
}

#[test]
fn forged_huge_reply_header_from_a_process_is_refused() {
    guarded(
        "forged_huge_reply_header_from_a_process_is_refused",
        Duration::from_secs(60),
        || {
            let process = troika::Process::spawn(forge_reply, 60 << 30).unwrap();
            let err = process.join().unwrap_err();
            assert!(err.is_frame_too_large(), "{err}");
            assert!(
                err.to_string().contains(&(60u64 << 30).to_string()),
                "{err}"
            );
        },
    );
}

#[test]
fn initializer_argument_over_the_frame_limit_is_a_config_error() {
    let err = ProcessPool::builder()
        .workers(1)
        .max_frame_bytes(64 << 10)
        .initializer(byte_count, vec![1; 100_000])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("frame limit of 65536"), "{err}");
}

#[test]
fn reply_for_a_call_that_is_not_running_fails_the_task_as_a_protocol_error() {
    guarded(
        "reply_for_a_call_that_is_not_running_fails_the_task_as_a_protocol_error",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            // An empty reply for call id u64::MAX, which was never sent.
            let err = pool.submit(forge_reply, 0).result().unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Failed(m) if m.contains("protocol")),
                "{err}"
            );
            assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
        },
    );
}

#[test]
fn a_forged_reply_behind_real_ones_settles_those_and_fails_its_task() {
    guarded(
        "a_forged_reply_behind_real_ones_settles_those_and_fails_its_task",
        Duration::from_secs(60),
        || {
            let pool = one_worker();
            for _ in 0..20 {
                let pid = pool.submit(worker_pid, ()).result().unwrap();
                // Real replies queued ahead of a forged one reach the parent
                // together, and are claimed together (`claim_replies`): each
                // real one settles with its own value, the forged one stops
                // the batch and fails the call that was running.
                let real: Vec<_> = (0..40).map(|_| pool.submit(worker_pid, ())).collect();
                let forged = pool.submit(forge_reply, 0);
                for handle in real {
                    assert_eq!(handle.result().unwrap(), pid);
                }
                let err = forged.result().unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::Failed(m) if m.contains("protocol")),
                    "{err}"
                );
                assert_ne!(pool.submit(worker_pid, ()).result().unwrap(), pid);
            }
        },
    );
}
