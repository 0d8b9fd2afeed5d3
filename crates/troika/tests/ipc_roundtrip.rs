//! Round-trip latency of a Pipe and of a Queue pair between two processes.
//! A measurement, not a test (no timed assertions): it is `#[ignore]`d and
//! prints its figures. Run it in release:
//!
//! `cargo test --release -p troika --test ipc_roundtrip -- --ignored --nocapture`

mod ipc_support;

use ipc_support::{LONG, join_ok, role, spawn};
use std::time::{Duration, Instant};
use troika::ipc::{Pipe, Queue};

const N: usize = 20_000;
const WARMUP: usize = 1_000;

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let total: Duration = lat.iter().sum();
    println!(
        "{what}: {} round trips, p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs",
        lat.len(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / lat.len() as f64
    );
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture in release"]
fn pipe_round_trip() {
    if let Some(_r) = role() {
        let conn: Pipe<u64, u64> = ipc_support::arg();
        while let Ok(x) = conn.recv() {
            conn.send(&x).unwrap();
        }
        return;
    }
    let (me, child_end) = Pipe::<u64, u64>::pair().unwrap();
    let child = spawn("pipe_round_trip", "echo", &child_end);
    drop(child_end);
    let mut lat = Vec::with_capacity(N);
    for i in 0..(WARMUP + N) as u64 {
        let t = Instant::now();
        me.send(&i).unwrap();
        assert_eq!(me.recv_timeout(LONG).unwrap(), i);
        if i as usize >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    drop(me);
    join_ok(child);
    report("Pipe<u64> parent -> child -> parent", lat);
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture in release"]
fn queue_round_trip() {
    if let Some(_r) = role() {
        let (ping, pong): (Queue<Option<u64>>, Queue<u64>) = ipc_support::arg();
        while let Some(x) = ping.get().unwrap() {
            pong.put(&x).unwrap();
        }
        return;
    }
    let ping = Queue::<Option<u64>>::new(64).unwrap();
    let pong = Queue::<u64>::new(64).unwrap();
    let child = spawn("queue_round_trip", "echo", &(&ping, &pong));
    let mut lat = Vec::with_capacity(N);
    for i in 0..(WARMUP + N) as u64 {
        let t = Instant::now();
        ping.put(&Some(i)).unwrap();
        assert_eq!(pong.get_timeout(LONG).unwrap(), i);
        if i as usize >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    ping.put(&None).unwrap();
    join_ok(child);
    report("Queue<u64> put -> child get/put -> get", lat);
}

/// The baseline, in the same run: 8 bytes over two plain OS pipes with
/// blocking reads (what `Pipe` and `Queue` should be compared with).
#[test]
#[ignore = "a measurement; run with --ignored --nocapture in release"]
fn os_pipe_round_trip_baseline() {
    use std::io::{Read, Write};
    if let Some(_r) = role() {
        let (pid, rfd, wfd): (u32, i32, i32) = ipc_support::arg();
        let mut r = std::fs::File::open(format!("/proc/{pid}/fd/{rfd}")).unwrap();
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/fd/{wfd}"))
            .unwrap();
        let mut buf = [0u8; 8];
        while r.read_exact(&mut buf).is_ok() {
            w.write_all(&buf).unwrap();
        }
        return;
    }
    let (to_child_r, to_child_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (from_child_r, from_child_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    use std::os::fd::AsRawFd;
    let arg = (
        std::process::id(),
        to_child_r.as_raw_fd(),
        from_child_w.as_raw_fd(),
    );
    let child = spawn("os_pipe_round_trip_baseline", "echo", &arg);
    let mut w = std::fs::File::from(to_child_w);
    let mut r = std::fs::File::from(from_child_r);
    // Our copies of the child's ends must stay open until it has opened them:
    // the first round trip proves that.
    let mut buf = [0u8; 8];
    let mut lat = Vec::with_capacity(N);
    for i in 0..(WARMUP + N) as u64 {
        let t = Instant::now();
        w.write_all(&i.to_le_bytes()).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), i);
        if i as usize >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    drop((to_child_r, from_child_w, w));
    join_ok(child);
    report("OS pipes, 8 bytes, blocking read (baseline)", lat);
}
