//! Large arguments and results cross to and from a worker in a sealed memfd
//! attached to their frame's header: they arrive whole, a worker killed
//! while one is in flight settles its task and leaks no descriptor, and a
//! forged memfd fails only its task.

mod ipc_support;

use std::time::Duration;

use ipc_support::{Bytes, guarded};
use troika::{ErrorKind, Exit, ProcessPool};

const MIB: usize = 1 << 20;
const SIGKILL: i32 = 9;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed ^ (i >> 16) as u8)
        .collect()
}

/// The descriptors open in this process, with what they point to.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
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

troika::remote! {
    /// The argument, each byte complemented, so the result is not the
    /// argument's memory sent back.
    fn complement(bytes: Bytes) -> Bytes {
        Bytes(bytes.0.into_iter().map(|b| !b).collect())
    }
}

troika::remote! {
    /// A result of `len` bytes; a thread kills this worker as soon as the
    /// reply's memfd exists (the reply is then in flight).
    fn die_mid_reply(len: usize) -> Bytes {
        std::thread::spawn(|| {
            loop {
                let has_memfd = std::fs::read_dir("/proc/self/fd").is_ok_and(|dir| {
                    dir.flatten().any(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| t.to_string_lossy().contains("memfd:troika-frame"))
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
        let marker = std::env::var("TROIKA_WORKER").unwrap();
        let mut fds = marker.split(':').skip(1).map(|f| f.parse::<i32>().unwrap());
        let socket = fds.next().unwrap();
        // SAFETY: the worker's call socket, open for its life.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
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
            let mut space =
                [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            let fds = [std::os::fd::AsFd::as_fd(&memfd)];
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            rustix::net::sendmsg(
                socket,
                &[std::io::IoSlice::new(&[0])],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )
            .unwrap();
        }
        let mut header = Vec::new();
        header.extend_from_slice(&(3u16 | 0x8000).to_le_bytes()); // REPLY, in a memfd
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&u64::MAX.to_le_bytes());
        header.extend_from_slice(&announced.to_le_bytes());
        assert!(troika::process::__test::forge_reply_for_test(Some(&header)));
        std::process::id()
    }
}

/// 64 MiB out and 64 MiB back, checked byte for byte; sizes around the
/// memfd threshold go both ways too.
#[test]
fn a_64_mib_argument_and_result_arrive_whole() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    for len in [64 * MIB, 256 << 10, (256 << 10) - 16, (256 << 10) + 1, 0, 1] {
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
                assert!(
                    !open_fds().iter().any(|fd| fd.contains("memfd:")),
                    "no memfd stays open in the parent"
                );
            }
            assert_eq!(open_fds(), before, "the parent's descriptors are as before");
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
        let out = pool.submit(complement, Bytes(vec![3; 300 << 10])).result();
        assert_eq!(out.unwrap().0, vec![!3; 300 << 10]);
    }
}
