//! Large arguments and results cross to and from a worker in a sealed memfd
//! attached to their frame's header: they arrive whole, a worker killed
//! while one is in flight settles its task and leaks no descriptor, and a
//! forged memfd fails only its task.

mod ipc_support;

use std::time::Duration;

use ipc_support::{Bytes, assert_fds_as_before, guarded, open_fds, pattern, wait_until};
use troika::{ErrorKind, Exit, ProcessPool};

const MIB: usize = 1 << 20;
const SIGKILL: i32 = 9;

troika::remote! {
    /// The argument, each byte complemented, so the result is not the
    /// argument's memory sent back.
    fn complement(bytes: Bytes) -> Bytes {
        Bytes(bytes.0.into_iter().map(|b| !b).collect())
    }
}

troika::remote! {
    /// A result of `len` bytes; a thread kills this worker as soon as the
    /// reply's memfd (an arena) exists (the reply is then in flight). Run
    /// on a fresh worker, which holds no arena before.
    fn die_mid_reply(len: usize) -> Bytes {
        std::thread::spawn(|| {
            loop {
                let has_memfd = std::fs::read_dir("/proc/self/fd").is_ok_and(|dir| {
                    dir.flatten().any(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| {
                                let t = t.to_string_lossy();
                                t.contains("memfd:troika-frame") || t.contains("memfd:troika-arena")
                            })
                    })
                });
                if has_memfd {
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::KILL,
                    );
                }
                std::thread::yield_now();
            }
        });
        Bytes(vec![7; len])
    }
}

troika::remote! {
    /// Forge, to the parent, a reply in shared memory whose memfd holds
    /// `held` bytes where the header announces `announced`, sealed or not;
    /// with `send_fd` false, the descriptor never comes.
    fn forge_reply(announced: u64, held: u64, sealed: bool, send_fd: bool) -> u32 {
        use rustix::fs::{MemfdFlags, SealFlags};
        let socket = ipc_support::worker_call_socket();
        let memfd =
            rustix::fs::memfd_create("forged", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&memfd, held).unwrap();
        if sealed {
            rustix::fs::fcntl_add_seals(
                &memfd,
                SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
            )
            .unwrap();
        }
        if send_fd {
            ipc_support::send_fd(socket, std::os::fd::AsFd::as_fd(&memfd));
        }
        // REPLY, in a memfd.
        let header = ipc_support::reply_header(0x8000, u64::MAX, announced);
        assert!(troika::process::__test::forge_reply_for_test(Some(&header)));
        std::process::id()
    }
}

/// 64 MiB out and 64 MiB back, checked byte for byte; sizes around the
/// memfd threshold go both ways too.
#[test]
fn a_64_mib_argument_and_result_arrive_whole() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    for len in [64 * MIB, 512 << 10, (512 << 10) - 16, (512 << 10) + 1, 0, 1] {
        let arg = pattern(len, len as u8);
        let out = pool
            .submit(complement, Bytes(arg.clone()))
            .result()
            .unwrap();
        assert_eq!(out.0.len(), len);
        assert!(
            out.0.iter().zip(&arg).all(|(o, a)| *o == !*a),
            "the result of {len} bytes is the complemented argument"
        );
    }
}

/// A worker killed while its 64 MiB reply is in flight: the task fails as
/// `WorkerDied` (killed by SIGKILL), the pool goes on, and the parent holds
/// no descriptor more than before the pool (no memfd, no socket).
#[test]
fn a_worker_killed_mid_reply_settles_and_leaks_nothing() {
    guarded(
        "a_worker_killed_mid_reply_settles_and_leaks_nothing",
        Duration::from_secs(120),
        || {
            let before = open_fds();
            {
                let pool = ProcessPool::builder().workers(1).build().unwrap();
                let mut died = false;
                // The killer thread races the reply's send; it wins nearly
                // always (writing 64 MiB takes far longer than its scan).
                for _ in 0..5 {
                    match pool.submit(die_mid_reply, 64 * MIB).result() {
                        Err(err) => {
                            assert!(
                                matches!(err.kind(), ErrorKind::WorkerDied(Exit::Signal(SIGKILL))),
                                "{err:?}"
                            );
                            died = true;
                            break;
                        }
                        Ok(out) => assert_eq!(out.0, vec![7; 64 * MIB]),
                    }
                }
                assert!(died, "the worker was never killed mid-reply");
                let again = pool.submit(complement, Bytes(vec![1; MIB])).result();
                assert_eq!(again.unwrap().0, vec![!1; MIB]);
                // The call's own arena (its argument, kept for a resend
                // until the reply) goes back to the free list just after
                // the task completes: at most two are kept.
                wait_until("at most two arenas open in the parent", || {
                    open_fds()
                        .iter()
                        .filter(|fd| fd.contains("memfd:troika-"))
                        .count()
                        <= 2
                });
            }
            assert_fds_as_before(&before);
        },
    );
}

/// A reply in shared memory whose memfd does not match its header (wrong
/// size, not sealed, or no memfd at all) fails its task; the parent survives, the worker is
/// replaced, and the pool serves the next task.
#[test]
fn a_forged_memfd_reply_fails_its_task_only() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let cases = [
        (1 << 20, 10, true, true),
        (4096, 4096, false, true),
        (4096, 4096, true, false),
    ];
    for (announced, held, sealed, send_fd) in cases {
        let err = pool
            .submit(forge_reply, (announced, held, sealed, send_fd))
            .result()
            .unwrap_err();
        match err.kind() {
            ErrorKind::Failed(message) => {
                assert!(message.contains("broke the protocol"), "{message}")
            }
            other => panic!("unexpected error {other:?}"),
        }
        let out = pool.submit(complement, Bytes(vec![3; 600 << 10])).result();
        assert_eq!(out.unwrap().0, vec![!3; 600 << 10]);
    }
}

/// A pattern of `len` bytes with a `Serialize` of its own that writes them
/// one at a time and — if `fail_at` is set — panics or fails after that many
/// (past the memfd threshold, so the memfd the value was being encoded into
/// already exists). It decodes from the bytes: `fail_at` is `None` if they
/// are the pattern.
#[derive(Debug)]
struct Hostile {
    len: usize,
    fail_at: Option<(usize, bool)>,
}

impl serde::Serialize for Hostile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.len))?;
        for i in 0..self.len {
            if let Some((at, panic)) = self.fail_at
                && i == at
            {
                if panic {
                    panic!("hostile Serialize gave up at byte {i}");
                }
                return Err(S::Error::custom(format!(
                    "hostile Serialize refused byte {i}"
                )));
            }
            seq.serialize_element(&((i % 251) as u8))?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Hostile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hostile, D::Error> {
        let bytes = <Vec<u8> as serde::Deserialize>::deserialize(d)?;
        let intact = is_pattern(&bytes);
        Ok(Hostile {
            len: bytes.len(),
            fail_at: (!intact).then_some((0, false)),
        })
    }
}

fn is_pattern(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8)
}

/// Bytes whose `Serialize` writes a pattern of a different length each time
/// it is called (a counter in a static), whatever the value holds: a sizing
/// pass followed by a writing pass would disagree with itself.
#[derive(Debug)]
struct Shifty(Vec<u8>);

static SHIFTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl serde::Serialize for Shifty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = SHIFTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let len = (600 << 10) + n * 4097;
        s.collect_seq((0..len).map(|i| (i % 251) as u8))
    }
}

impl<'de> serde::Deserialize<'de> for Shifty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shifty, D::Error> {
        <Vec<u8> as serde::Deserialize>::deserialize(d).map(Shifty)
    }
}

/// How many of troika's frame memfds this process holds open.
fn frame_memfds() -> usize {
    open_fds()
        .iter()
        .filter(|fd| fd.contains("memfd:troika-frame"))
        .count()
}

troika::remote! {
    /// The length of the argument, and whether it is the pattern.
    fn measure_hostile(bytes: Hostile) -> (usize, bool) {
        (bytes.len, bytes.fail_at.is_none())
    }

    /// The length of the argument, and whether it is the pattern.
    fn measure_shifty(bytes: Shifty) -> (usize, bool) {
        (bytes.0.len(), is_pattern(&bytes.0))
    }

    /// A result whose `Serialize` panics or fails after `fail_at` bytes of
    /// `len`.
    fn hostile_result(len: usize, fail_at: Option<(usize, bool)>) -> Hostile {
        Hostile { len, fail_at }
    }

    /// This worker's pid and how many frame memfds it holds open.
    fn worker_memfds(_unit: ()) -> (u32, usize) {
        (std::process::id(), frame_memfds())
    }
}

/// A `Serialize` of a large argument that panics (or fails) half-way
/// through writing into its memfd fails that task alone, as a panic (or a
/// serialization error with its message); the memfd is closed, and the
/// pool runs the next task. (In a child process: it counts this process's
/// memfds, which other tests' pools hold too.)
#[test]
fn an_argument_whose_serialize_gives_up_half_way_fails_alone() {
    guarded(
        "an_argument_whose_serialize_gives_up_half_way_fails_alone",
        Duration::from_secs(120),
        || {
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            for panic in [true, false] {
                // The last call's memfd (kept for a resend until its reply)
                // is closed by the pool's I/O thread after it completes.
                wait_until("no memfd open", || frame_memfds() == 0);
                let hostile = Hostile {
                    len: 4 * MIB,
                    fail_at: Some((3 * MIB, panic)),
                };
                let err = pool.submit(measure_hostile, hostile).result().unwrap_err();
                if panic {
                    assert!(err.is_panic(), "{err:?}");
                } else {
                    assert!(err.is_serialization(), "{err:?}");
                }
                assert!(
                    err.to_string().contains(&format!("byte {}", 3 * MIB)),
                    "{err}"
                );
                // The submitting thread encoded it, and dropped the memfd
                // before `submit` returned.
                assert_eq!(frame_memfds(), 0, "the argument's memfd was closed");
                let whole = Hostile {
                    len: 2 * MIB,
                    fail_at: None,
                };
                let out = pool.submit(measure_hostile, whole).result();
                assert_eq!(out.unwrap(), (2 * MIB, true));
            }
        },
    );
}

/// A result whose `Serialize` panics (or fails) half-way through writing
/// into the reply's memfd fails that task alone; the worker lives on (the
/// same pid answers next) and holds no memfd.
#[test]
fn a_result_whose_serialize_gives_up_half_way_fails_alone() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let (pid, held) = pool.submit(worker_memfds, ()).result().unwrap();
    assert_eq!(held, 0);
    for panic in [true, false] {
        let err = pool
            .submit(hostile_result, (4 * MIB, Some((3 * MIB, panic))))
            .result()
            .unwrap_err();
        if panic {
            assert!(err.is_panic(), "{err:?}");
        } else {
            assert!(err.is_serialization(), "{err:?}");
        }
        assert!(
            err.to_string().contains(&format!("byte {}", 3 * MIB)),
            "{err}"
        );
        assert_eq!(
            pool.submit(worker_memfds, ()).result().unwrap(),
            (pid, 0),
            "the same worker answers, holding no memfd"
        );
    }
    let whole = pool.submit(hostile_result, (2 * MIB, None)).result();
    let whole = whole.unwrap();
    assert_eq!((whole.len, whole.fail_at), (2 * MIB, None));
}

/// A `Serialize` that writes a different length each time it is called
/// cannot make the frame disagree with its header: the argument arrives as
/// it was written that one time, whole.
#[test]
fn a_serialize_that_changes_its_length_arrives_as_written() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    for _ in 0..3 {
        let (len, intact) = pool
            .submit(measure_shifty, Shifty(Vec::new()))
            .result()
            .unwrap();
        assert!(intact, "the bytes are the pattern");
        assert_eq!((len - (600 << 10)) % 4097, 0, "{len} is one of its lengths");
    }
}
