//! Large byte vectors are decoded into buffers a process kept from ones
//! it dropped (see `process/spare.rs`): the bytes are exact whatever the
//! buffer held before, one at a time and in bursts, and nothing is left
//! open once the pool is gone.
//!
//! Every test runs in a child process (`guarded`), as in
//! `process_arena.rs`: the buffers and arenas are this process's.

mod ipc_support;

use std::time::Duration;

use ipc_support::{assert_fds_as_before, guarded, open_fds, pattern, wait_until};
use troika::ProcessPool;

const MIB: usize = 1 << 20;

troika::remote! {
    /// A plain byte vector, each byte complemented in place: the result is
    /// the argument's buffer, which the worker keeps for a later argument.
    fn complement_in_place(bytes: Vec<u8>) -> Vec<u8> {
        let mut bytes = bytes;
        for b in &mut bytes {
            *b = !*b;
        }
        bytes
    }

    /// This worker's pid.
    fn worker_pid(_unit: ()) -> u32 {
        std::process::id()
    }
}

/// The anonymous resident memory of process `pid`, in bytes (`RssAnon`).
fn rss_anon(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Whether this process maps an arena.
fn maps_an_arena() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .contains("memfd:troika-arena")
}

/// Plain byte vectors of mixed large sizes, one at a time and in bursts on
/// two workers, come back exact while both sides decode them into buffers
/// they kept from earlier ones (the worker its last result, the parent the
/// arguments it encoded): a kept buffer never shows an earlier message's
/// bytes, and nothing is left open once the pool is gone.
#[test]
fn byte_vectors_decoded_into_kept_buffers_are_exact() {
    guarded(
        "byte_vectors_decoded_into_kept_buffers_are_exact",
        Duration::from_secs(240),
        || {
            let before = open_fds();
            {
                let pool = ProcessPool::builder().workers(2).build().unwrap();
                let sizes = [
                    4 * MIB,
                    5 * MIB,
                    4 * MIB + 1,
                    9 * MIB,
                    8 * MIB + 3,
                    4 * MIB - 1,
                    6 * MIB,
                    3 * MIB,
                ];
                let check = |arg: &[u8], out: &[u8], what: &str| {
                    assert_eq!(out.len(), arg.len(), "{what}: the length");
                    assert!(
                        out.iter().zip(arg).all(|(o, a)| *o == !*a),
                        "{what}: the result is not the complement"
                    );
                };
                for round in 0..3u8 {
                    for (i, &len) in sizes.iter().enumerate() {
                        let arg = pattern(len, round.wrapping_mul(37) ^ i as u8);
                        let out = pool
                            .submit(complement_in_place, arg.clone())
                            .result()
                            .unwrap();
                        check(&arg, &out, &format!("round {round}, {len} bytes"));
                    }
                    for (j, window) in sizes.windows(4).enumerate() {
                        let args: Vec<Vec<u8>> = window
                            .iter()
                            .enumerate()
                            .map(|(k, &len)| pattern(len, round ^ (j * 4 + k) as u8 ^ 0x5a))
                            .collect();
                        let handles: Vec<_> = args
                            .iter()
                            .map(|a| pool.submit(complement_in_place, a.clone()))
                            .collect();
                        for (arg, handle) in args.iter().zip(handles) {
                            let what = format!("round {round}, burst {j}, {} bytes", arg.len());
                            check(arg, &handle.result().unwrap(), &what);
                        }
                    }
                }
            }
            assert_fds_as_before(&before);
            assert!(!maps_an_arena(), "no arena is mapped after the pool");
        },
    );
}

/// The buffer a worker keeps after answering with a large byte vector (its
/// result's) is released once no large message came for a while, the pool
/// alive and idle: the worker's anonymous memory falls back.
#[test]
fn a_kept_buffer_is_released_when_idle() {
    guarded(
        "a_kept_buffer_is_released_when_idle",
        Duration::from_secs(120),
        || {
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            let pid = pool.submit(worker_pid, ()).result().unwrap();
            let before = rss_anon(pid);
            let arg = pattern(32 * MIB, 3);
            let out = pool
                .submit(complement_in_place, arg.clone())
                .result()
                .unwrap();
            assert!(out.iter().zip(&arg).all(|(o, a)| *o == !*a));
            wait_until("the worker's kept buffer released", || {
                rss_anon(pid) < before + 8 * MIB as u64
            });
            // And a buffer kept is used again after the release: still exact.
            let out = pool
                .submit(complement_in_place, arg.clone())
                .result()
                .unwrap();
            assert!(out.iter().zip(&arg).all(|(o, a)| *o == !*a));
        },
    );
}
