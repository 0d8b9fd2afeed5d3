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

/// A `troika worker` of queue `queue` named `name` with the options
/// `extra`, returned once it serves
/// (its "serves queue" line); its further log is drained by a thread.
fn serving_worker(url: &str, queue: &str, name: &str, extra: &[&str]) -> Worker {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_troika"))
        .args(["worker", "--cluster", url, "--queue", queue, "--name", name])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("troika worker starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let worker = Worker(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("serves queue")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(common::GENEROUS)
        .unwrap_or_else(|_| panic!("worker {name} did not start serving"));
    worker
}

#[test]
fn run_spreads_jobs_over_two_workers_in_order_with_a_joblog_naming_them() {
    let server = RedisServer::builder().unix_socket(true).start();
    let url = server.url();
    // One task held at a time each: while one worker runs a job, the next
    // goes to the other.
    let allow = ["--allow-run", "--processes", "1", "--prefetch", "1"];
    let _a = serving_worker(&url, "jobs", "worker-a", &allow);
    let _b = serving_worker(&url, "jobs", "worker-b", &allow);
    let dir = std::env::temp_dir().join(format!("troika-run-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("joblog");
    let inputs: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let mut args = vec![
        "run",
        "--cluster",
        &url,
        "--queue",
        "jobs",
        "-j",
        "4",
        "-k",
        "--joblog",
        log.to_str().unwrap(),
        "sh",
        "-c",
        "sleep 0.05; echo out $1; echo err $1 >&2",
        "_",
        ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = common::run_troika_within(&args, None, common::LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected: Vec<String> = (1..=20).map(|i| format!("out {i}")).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        expected
    );
    let errs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("err ")).collect();
    assert_eq!(errs.len(), 20, "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    let hosts: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(hosts.len(), 20, "{text}");
    assert!(
        hosts.iter().all(|h| *h == "worker-a" || *h == "worker-b"),
        "{text}"
    );
    assert!(
        hosts.contains(&"worker-a") && hosts.contains(&"worker-b"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_timeout_kills_the_job_group_on_the_worker() {
    let server = RedisServer::builder().unix_socket(true).start();
    let url = server.url();
    let _w = serving_worker(
        &url,
        "slow",
        "worker-t",
        &["--allow-run", "--processes", "1"],
    );
    let dir = std::env::temp_dir().join(format!("troika-run-cluster-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("joblog");
    let pid_file = dir.join("pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
    let out = common::run_troika_within(
        &[
            "run",
            "--cluster",
            &url,
            "--queue",
            "slow",
            "--timeout",
            "0.5",
            "--joblog",
            log.to_str().unwrap(),
            "sh",
            "-c",
            &script,
            ":::",
            "x",
        ],
        None,
        common::LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    let fields: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(
        (fields[1], fields[6], fields[7]),
        ("worker-t", "-1", "15"),
        "{text}"
    );
    // The grandchild in the job's group was killed with it: gone, or a
    // zombie waiting for init.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    assert!(
        stat.is_empty() || state.starts_with('Z'),
        "still running: {stat}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_worker_without_allow_run_refuses_jobs_naming_the_flag() {
    let server = RedisServer::builder().unix_socket(true).start();
    let url = server.url();
    let _w = serving_worker(&url, "closed", "worker-n", &["--processes", "1"]);
    let out = common::run_troika_within(
        &[
            "run",
            "--cluster",
            &url,
            "--queue",
            "closed",
            "echo",
            ":::",
            "hi",
        ],
        None,
        common::LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("--allow-run"), "{stderr}");
    assert!(stderr.contains("worker-n"), "{stderr}");
}

#[test]
fn halt_now_kills_a_running_remote_job_and_its_group() {
    let server = RedisServer::builder().unix_socket(true).start();
    let url = server.url();
    let _w = serving_worker(
        &url,
        "halt",
        "worker-h",
        &["--allow-run", "--processes", "2"],
    );
    let dir = std::env::temp_dir().join(format!("troika-run-cluster-h-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    // Job `fail` fails once job `hang` has started its grandchild.
    let script = format!(
        "if [ $1 = hang ]; then sleep 60 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait; \
         else while [ ! -s {p} ]; do sleep 0.01; done; exit 3; fi",
        p = pid_file.display()
    );
    let started = Instant::now();
    let out = common::run_troika_within(
        &[
            "run",
            "--cluster",
            &url,
            "--queue",
            "halt",
            "-j",
            "2",
            "--halt",
            "now,fail=1",
            "sh",
            "-c",
            &script,
            "_",
            ":::",
            "hang",
            "fail",
        ],
        None,
        common::LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the hanging job was waited for"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat_path = format!("/proc/{}/stat", pid.trim());
    let deadline = Instant::now() + common::GENEROUS;
    loop {
        let stat = std::fs::read_to_string(&stat_path).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled job's group lives on: {stat}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
