//! `troika worker`, `troika primes --cluster` and `troika bench --modes
//! cluster` against a real redis-server.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use troika_test_redis::RedisServer;

/// A `troika worker` that is killed if the test fails before stopping it.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn primes_run_on_a_worker_that_stops_on_sigterm() {
    let server = RedisServer::builder().unix_socket(true).start();
    let url = server.url();
    let mut worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_troika"))
            .args([
                "worker",
                "--cluster",
                &url,
                "--queue",
                "t",
                "--processes",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("troika worker starts"),
    );
    let out = common::run_troika_within(
        &[
            "primes",
            "--cluster",
            &url,
            "--queue",
            "t",
            "97",
            "100",
            "x",
        ],
        None,
        common::LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().take(2).collect::<Vec<_>>(),
        ["97 prime", "100 composite"],
        "{stdout}"
    );
    assert!(stdout.lines().nth(2).is_some_and(|l| l.contains("error")));
    assert_eq!(out.status.code(), Some(1), "a bad line makes the status 1");
    let pid = rustix::process::Pid::from_child(&worker.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + common::LIMIT;
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let server = RedisServer::builder().password("right").start();
    let url = format!("redis://:wrong@{}/", server.addr().unwrap());
    let out = common::run_troika_within(&["primes", "--cluster", &url, "7"], None, common::LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is not printed: {stderr}"
    );
}

#[test]
fn bench_has_cluster_rows() {
    let out = common::run_troika_within(
        &[
            "bench",
            "--modes",
            "cluster",
            "--workload",
            "overhead",
            "--tasks",
            "2000",
            "--workers",
            "1",
            "--json",
        ],
        None,
        common::LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.contains("\"cluster\""))
            .expect("a cluster row"),
    )
    .unwrap();
    assert_eq!(row["workload"], "overhead");
    assert!(row["tasks_per_s"].as_f64().unwrap() > 0.0);
    assert!(row["p99_us"].as_f64().unwrap() > 0.0);
}
