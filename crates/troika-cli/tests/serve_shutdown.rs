//! `troika serve` at shutdown and when checks are abandoned (issue 13,
//! item 7): a `GET /` in flight at SIGTERM still gets its demo API's answer;
//! the thread pool keeps to the grace period and stops a trial division in
//! the middle of a number once its request has timed out. The real binary on
//! 127.0.0.1, port 0.

mod common;
mod serve_support;

use std::time::{Duration, Instant};

use serve_support::{Server, request, wait_for_exit, wait_until};

/// The largest prime below 2^64: trial division needs 2^31 divisions, many
/// seconds of CPU.
const BIG_PRIME: u64 = 18_446_744_073_709_551_557;

#[test]
fn sigterm_lets_a_fanout_in_flight_reach_the_demo_api() {
    // The API backend (the service's own demo API) is called 2 s into the
    // request, well after the SIGTERM below.
    let mut server = Server::start(
        "shutdown_grace_secs = 60\n",
        "[backends.file]\ndelay_secs = 0\n[backends.db]\ndelay_secs = 0\n\
         [backends.api]\ndelay_secs = 2\ntimeout_secs = 30\n",
    );
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || request(addr, "GET", "/", None));
    // In flight: the `GET /` and the `/metrics` request that looks.
    wait_until("the GET / to be in flight", || {
        server.metric("troika_serve_in_flight_requests") == Some(2.0)
    });
    server.signal(rustix::process::Signal::TERM);
    server.wait_for_line("shutting down (SIGTERM)");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_api"], "api result", "{body}");
    assert_eq!(body["result_file"], "file result", "{body}");
    let status = wait_for_exit(&mut server.child);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn the_thread_pool_keeps_to_the_grace_period() {
    let grace = Duration::from_millis(500);
    let mut server = Server::start(
        "workers = 1\nshutdown_grace_secs = 0.5\n",
        "[limits]\nrequest_deadline_secs = 600\n",
    );
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            &format!("/is_prime/{BIG_PRIME}?algorithm=trial"),
            None,
        )
    });
    wait_until("the worker to be busy", || {
        server.metric("troika_serve_pool_busy_workers") == Some(1.0)
    });
    let signalled = Instant::now();
    server.signal(rustix::process::Signal::TERM);
    let status = wait_for_exit(&mut server.child);
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    // The bound is the grace period; the margin is generous for a
    // loaded machine (the trial division alone takes many seconds).
    assert!(
        took < grace + Duration::from_secs(4),
        "exited {took:?} after SIGTERM with a grace period of {grace:?}"
    );
    // The client got an answer or a closed connection, not a hang.
    let _ = in_flight.join();
}

/// The states of the server's `serve-worker` threads, from /proc.
fn worker_states(pid: u32) -> Vec<char> {
    let mut states = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return states;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state …"; comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.contains("(serve-worker") {
            states.extend(rest.trim_start().chars().next());
        }
    }
    states
}

/// Wait until no serve-worker thread of `pid` is running; fails after
/// `bound` (the check it gives up would take many seconds more).
fn wait_for_idle_workers(pid: u32, bound: Duration, what: &str) {
    let gave_up_by = Instant::now() + bound;
    loop {
        let states = worker_states(pid);
        if !states.is_empty() && states.iter().all(|&s| s != 'R') {
            return;
        }
        assert!(
            Instant::now() < gave_up_by,
            "a worker is still dividing {bound:?} after {what}: {states:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_trial_division_stops_when_its_client_goes_away() {
    let server = Server::start("workers = 1\n", "[limits]\nrequest_deadline_secs = 600\n");
    let mut stream = serve_support::connect(server.addr);
    std::io::Write::write_all(
        &mut stream,
        format!("GET /is_prime/{BIG_PRIME}?algorithm=trial HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    wait_until("the worker to be busy", || {
        server.metric("troika_serve_pool_busy_workers") == Some(1.0)
    });
    drop(stream);
    wait_for_idle_workers(server.pid(), Duration::from_secs(3), "its client left");
    assert_eq!(request(server.addr, "GET", "/is_prime/7", None).status, 200);
}

#[test]
fn a_timed_out_trial_division_stops_in_the_middle_of_a_number() {
    let server = Server::start("workers = 1\n", "[limits]\nrequest_deadline_secs = 0.3\n");
    let reply = request(
        server.addr,
        "GET",
        &format!("/is_prime/{BIG_PRIME}?algorithm=trial"),
        None,
    );
    assert_eq!(reply.status, 504, "{}", reply.body);
    // The worker gives the number up instead of burning CPU for seconds: no
    // serve-worker thread is running. The bound is generous; the division
    // itself would take many seconds more.
    wait_for_idle_workers(
        server.pid(),
        Duration::from_secs(3),
        "its request timed out",
    );
    assert_eq!(request(server.addr, "GET", "/is_prime/7", None).status, 200);
}
