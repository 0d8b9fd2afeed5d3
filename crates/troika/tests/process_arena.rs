//! Large arguments and results travel in arenas, memfds reused from one
//! message to the next (see `process/arena.rs`): bytes arrive exact across
//! many tasks of mixed sizes while few arenas are ever made; an arena grows
//! for a larger message and is released when idle; a worker killed while it
//! writes or reads one, a `Serialize` that panics half-way, and a forged
//! arena fail only their task; nothing leaks.
//!
//! Every test runs in a child process (`guarded`): they count this
//! process's arenas, which are shared by all its pools.

mod ipc_support;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ipc_support::{Bytes, assert_fds_as_before, guarded, open_fds, pattern, wait_until};
use troika::{ErrorKind, Exit, ProcessPool};

const MIB: usize = 1 << 20;
const SIGKILL: i32 = 9;

/// This process's arenas: (inode, size) of each arena descriptor it holds
/// (a sender's), and the inodes of the arenas it has mapped (a sender's or
/// a receiver's).
fn arenas() -> (Vec<(u64, u64)>, BTreeSet<u64>) {
    let mut open = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let arena = std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().contains("memfd:troika-arena"));
            if arena && let Ok(meta) = std::fs::metadata(e.path()) {
                open.push((meta.ino(), meta.len()));
            }
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = maps
        .lines()
        .filter(|l| l.contains("memfd:troika-arena"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    (open, mapped)
}

/// A byte vector whose `Serialize` and `Deserialize` go one byte at a
/// time (a sequence), and SIGKILL their own process half-way when asked:
/// `kill_on_write` in `Serialize`, `kill_on_read` in `Deserialize` (only in
/// a worker: the parent never kills itself).
#[derive(Debug)]
struct Killer {
    bytes: Vec<u8>,
    kill_on_write: bool,
    kill_on_read: bool,
}

fn in_worker() -> bool {
    std::env::var_os("TROIKA_WORKER").is_some()
}

fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    unreachable!("SIGKILL returned");
}

impl serde::Serialize for Killer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The flags first, then the bytes.
        let mut seq = s.serialize_seq(Some(self.bytes.len() + 2))?;
        seq.serialize_element(&u8::from(self.kill_on_write))?;
        seq.serialize_element(&u8::from(self.kill_on_read))?;
        for (i, b) in self.bytes.iter().enumerate() {
            if self.kill_on_write && in_worker() && i == self.bytes.len() / 2 {
                kill_self();
            }
            seq.serialize_element(b)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Killer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Killer, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Killer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a killer")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Killer, A::Error> {
                let len = seq.size_hint().unwrap_or(2).saturating_sub(2);
                let kill_on_write = seq.next_element::<u8>()? == Some(1);
                let kill_on_read = seq.next_element::<u8>()? == Some(1);
                let mut bytes = Vec::with_capacity(len);
                while let Some(b) = seq.next_element::<u8>()? {
                    if kill_on_read && in_worker() && bytes.len() == len / 2 {
                        kill_self();
                    }
                    bytes.push(b);
                }
                Ok(Killer {
                    bytes,
                    kill_on_write,
                    kill_on_read,
                })
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// A result whose `Serialize` panics after `at` of its `len` bytes.
#[derive(Debug)]
struct Panicky {
    len: usize,
    at: usize,
}

impl serde::Serialize for Panicky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for i in 0..self.len {
            assert!(i != self.at, "Serialize gave up at byte {i}");
            seq.serialize_element(&(i as u8))?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Panicky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Panicky, D::Error> {
        let bytes = <Vec<u8> as serde::Deserialize>::deserialize(d)?;
        Ok(Panicky {
            len: bytes.len(),
            at: usize::MAX,
        })
    }
}

troika::remote! {
    /// The argument, each byte complemented (so the result is not the
    /// argument's memory sent back).
    fn complement(bytes: Bytes) -> Bytes {
        Bytes(bytes.0.into_iter().map(|b| !b).collect())
    }

    /// The argument back, unchanged.
    fn echo(bytes: Bytes) -> Bytes {
        bytes
    }

    /// The argument back (its `Deserialize` in the worker may kill it
    /// mid-read, its `Serialize` mid-write).
    fn pass(killer: Killer) -> Killer {
        killer
    }

    /// A result of `len` bytes whose `Serialize` panics at byte `at`.
    fn panicky(len: usize, at: usize) -> Panicky {
        Panicky { len, at }
    }

    /// This worker's pid and its arenas (see `arenas`).
    fn worker_arenas(_unit: ()) -> (u32, Vec<(u64, u64)>, BTreeSet<u64>) {
        let (open, mapped) = arenas();
        (std::process::id(), open, mapped)
    }

    /// Forge, to the parent, a reply in an arena: a memfd of `held` bytes
    /// (with the arena's header page if `magic`, sealed against shrinking
    /// if `sealed`) under a header announcing a body of `announced` bytes;
    /// with `send_fd` false, the descriptor never comes.
    fn forge_arena(announced: u64, held: u64, magic: bool, sealed: bool, send_fd: bool) -> u32 {
        use rustix::fs::{MemfdFlags, SealFlags};
        let socket = ipc_support::worker_call_socket();
        let memfd =
            rustix::fs::memfd_create("troika-arena", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&memfd, held).unwrap();
        if magic {
            let mut head = b"troikaAR".to_vec();
            head.extend_from_slice(&42u64.to_le_bytes());
            rustix::io::pwrite(&memfd, &head, 0).unwrap();
        }
        if sealed {
            rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK).unwrap();
        }
        if send_fd {
            ipc_support::send_fd(socket, std::os::fd::AsFd::as_fd(&memfd));
        }
        // REPLY, in a memfd that is an arena.
        let header = ipc_support::reply_header(0x8000 | 0x4000, u64::MAX, announced);
        assert!(troika::process::__test::forge_reply_for_test(Some(&header)));
        std::process::id()
    }
}

/// Many tasks of mixed sizes, both ways through arenas, bytes checked
/// exactly: the parent and the worker each make a handful of arenas for
/// forty large messages (they are reused), keep at most a few open, and
/// the parent holds no descriptor more than before once the pool is gone.
#[test]
fn arenas_are_reused_across_mixed_sizes() {
    guarded(
        "arenas_are_reused_across_mixed_sizes",
        Duration::from_secs(240),
        || {
            let before = open_fds();
            {
                let pool = ProcessPool::builder().workers(1).build().unwrap();
                let sizes = [
                    600 << 10,
                    4 * MIB,
                    32 * MIB,
                    MIB,
                    (512 << 10) + 1,
                    9 * MIB,
                    (512 << 10) - 16,
                    2 * MIB,
                    3 * MIB + 7,
                    700 << 10,
                ];
                let mut parent_seen = BTreeSet::new();
                let mut worker_seen = BTreeSet::new();
                for round in 0..4u8 {
                    for (i, &len) in sizes.iter().enumerate() {
                        let seed = round.wrapping_mul(31) ^ i as u8;
                        let arg = pattern(len, seed);
                        let out = pool
                            .submit(complement, Bytes(arg.clone()))
                            .result()
                            .unwrap();
                        assert_eq!(out.0.len(), len);
                        assert!(
                            out.0.iter().zip(&arg).all(|(o, a)| *o == !*a),
                            "round {round}, {len} bytes: the result is not the complement"
                        );
                        let (open, _) = arenas();
                        // Kept free (2) and the last call's, whose frame
                        // the I/O thread may not have dropped yet.
                        assert!(open.len() <= 3, "the parent holds {open:?}");
                        parent_seen.extend(open.iter().map(|a| a.0));
                        let (_, open, mapped) = pool.submit(worker_arenas, ()).result().unwrap();
                        assert!(open.len() <= 2, "the worker holds {open:?}");
                        assert!(mapped.len() <= 4, "the worker maps {mapped:?}");
                        worker_seen.extend(open.iter().map(|a| a.0));
                    }
                }
                assert!(
                    parent_seen.len() <= 6,
                    "the parent made {} arenas for 40 calls",
                    parent_seen.len()
                );
                assert!(
                    worker_seen.len() <= 4,
                    "the worker made {} arenas for 40 replies",
                    worker_seen.len()
                );
            }
            assert_fds_as_before(&before);
            assert!(arenas().1.is_empty(), "no arena is mapped after the pool");
        },
    );
}

/// An arena grows for a larger message (the same memfd, now larger) and is
/// released, on both sides, once no large message came for a while.
#[test]
fn an_arena_grows_and_is_released_when_idle() {
    guarded(
        "an_arena_grows_and_is_released_when_idle",
        Duration::from_secs(180),
        || {
            // Made first: in a debug build, making 64 MiB takes longer than
            // the idle time after which the small arena would be released.
            let big = pattern(64 * MIB, 2);
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            let small = pattern(MIB, 1);
            assert_eq!(
                pool.submit(echo, Bytes(small.clone())).result().unwrap().0,
                small
            );
            let (pid, open, _) = pool.submit(worker_arenas, ()).result().unwrap();
            assert_eq!(open.len(), 1, "one arena for one reply: {open:?}");
            let (ino, size) = open[0];
            assert!(size < 8 * MIB as u64, "{size}");
            assert_eq!(
                pool.submit(echo, Bytes(big.clone())).result().unwrap().0,
                big
            );
            let (_, open, _) = pool.submit(worker_arenas, ()).result().unwrap();
            assert_eq!(open.len(), 1, "{open:?}");
            assert_eq!(
                open[0].0, ino,
                "the same arena, grown: {open:?}, was {ino} of {size}"
            );
            assert!(open[0].1 >= 64 * MIB as u64, "{open:?}");
            assert!(!arenas().0.is_empty(), "the parent keeps its arena free");
            // Released after two idle seconds: the worker's arena and its
            // mapping of the parent's, the parent's arena and its mapping
            // of the worker's. Small calls meanwhile change nothing.
            wait_until("the worker's arenas released", || {
                let (now, open, mapped) = pool.submit(worker_arenas, ()).result().unwrap();
                assert_eq!(now, pid);
                open.is_empty() && mapped.is_empty()
            });
            wait_until("the parent's arenas released", || {
                let (open, mapped) = arenas();
                open.is_empty() && mapped.is_empty()
            });
            // And made again when needed.
            assert_eq!(
                pool.submit(echo, Bytes(big.clone())).result().unwrap().0,
                big
            );
        },
    );
}

/// A worker SIGKILLed half-way through reading a large argument out of the
/// parent's arena, and one killed half-way through writing a large result
/// into its own, fail their task as `WorkerDied`; the next tasks (large,
/// bytes checked) run on the replacement; the parent leaks nothing.
#[test]
fn a_worker_killed_mid_transfer_either_way_fails_its_task_only() {
    guarded(
        "a_worker_killed_mid_transfer_either_way_fails_its_task_only",
        Duration::from_secs(240),
        || {
            let before = open_fds();
            {
                let pool = ProcessPool::builder().workers(1).build().unwrap();
                for (kill_on_write, kill_on_read) in [(false, true), (true, false), (false, true)] {
                    let killer = Killer {
                        bytes: pattern(3 * MIB, 5),
                        kill_on_write,
                        kill_on_read,
                    };
                    let err = pool.submit(pass, killer).result().unwrap_err();
                    assert!(
                        matches!(err.kind(), ErrorKind::WorkerDied(Exit::Signal(SIGKILL))),
                        "{err:?}"
                    );
                    for seed in 0..3 {
                        let arg = pattern(2 * MIB + seed * 4097, seed as u8);
                        let out = pool
                            .submit(complement, Bytes(arg.clone()))
                            .result()
                            .unwrap();
                        assert!(out.0.iter().zip(&arg).all(|(o, a)| *o == !*a));
                        assert_eq!(out.0.len(), arg.len());
                    }
                    let whole = Killer {
                        bytes: pattern(MIB, 9),
                        kill_on_write: false,
                        kill_on_read: false,
                    };
                    let out = pool.submit(pass, whole).result().unwrap();
                    assert!(out.bytes == pattern(MIB, 9));
                    // The killed worker's argument arena is never released:
                    // it goes with its task instead of waiting among the free
                    // ones (where three kills kept three until the idle trim).
                    // Left: the arena the calls reuse, and perhaps the last
                    // call's, whose frame the I/O thread may not have dropped.
                    let (open, _) = arenas();
                    assert!(open.len() <= 2, "the parent holds {open:?}");
                }
            }
            assert_fds_as_before(&before);
        },
    );
}

/// A result whose `Serialize` panics half-way through a large body fails
/// its task alone; the worker lives on, and its next reply reuses the arena
/// the failed one was being written into.
#[test]
fn a_result_that_panics_half_way_leaves_its_arena_reusable() {
    guarded(
        "a_result_that_panics_half_way_leaves_its_arena_reusable",
        Duration::from_secs(120),
        || {
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            let err = pool
                .submit(panicky, (4 * MIB, 3 * MIB))
                .result()
                .unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            assert!(
                err.to_string().contains(&format!("byte {}", 3 * MIB)),
                "{err}"
            );
            let (pid, open, _) = pool.submit(worker_arenas, ()).result().unwrap();
            assert_eq!(open.len(), 1, "the arena it was writing is kept: {open:?}");
            let arg = pattern(4 * MIB, 3);
            let out = pool
                .submit(complement, Bytes(arg.clone()))
                .result()
                .unwrap();
            assert!(out.0.iter().zip(&arg).all(|(o, a)| *o == !*a));
            let (again, reused, _) = pool.submit(worker_arenas, ()).result().unwrap();
            assert_eq!(again, pid, "the same worker answers");
            assert_eq!(reused.len(), 1, "{reused:?}");
            assert_eq!(reused[0].0, open[0].0, "its next reply reused the arena");
        },
    );
}

/// A reply that names an arena which does not hold the announced body
/// (too short), is not sealed against shrinking (it could raise SIGBUS in
/// the parent), is no arena at all, or never comes, fails its task with a
/// protocol error; the parent survives, the worker is replaced, and large
/// calls go on exact.
#[test]
fn a_forged_arena_reply_fails_its_task_only() {
    guarded(
        "a_forged_arena_reply_fails_its_task_only",
        Duration::from_secs(120),
        || {
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            let cases = [
                (10 * MIB as u64, MIB as u64 + 4096, true, true, true),
                (u64::MAX - 4096, MIB as u64, true, true, true),
                (4096, MIB as u64, true, false, true),
                (4096, MIB as u64, false, true, true),
                (4096, MIB as u64, true, true, false),
            ];
            for (announced, held, magic, sealed, send_fd) in cases {
                let err = pool
                    .submit(forge_arena, (announced, held, magic, sealed, send_fd))
                    .result()
                    .unwrap_err();
                match err.kind() {
                    ErrorKind::Failed(message) => {
                        assert!(message.contains("broke the protocol"), "{message}")
                    }
                    ErrorKind::FrameTooLarge { .. } => {}
                    other => panic!("unexpected error {other:?}"),
                }
                let arg = pattern(3 * MIB, 4);
                let out = pool
                    .submit(complement, Bytes(arg.clone()))
                    .result()
                    .unwrap();
                assert!(out.0.iter().zip(&arg).all(|(o, a)| *o == !*a));
            }
        },
    );
}
