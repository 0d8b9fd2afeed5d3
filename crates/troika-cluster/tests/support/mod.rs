//! What the cluster tests share: a real redis-server of their own, worker
//! processes (this test binary started again), and an outer deadline.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use troika_test_redis::RedisServer;

/// A redis-server of the test's own (troika-test-redis), on a Unix socket
/// unless the test needs TCP (for a proxy).
pub struct Redis {
    pub server: RedisServer,
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false, None)
    }

    pub fn start_with(appendonly: bool, password: Option<&str>) -> Redis {
        let mut builder = RedisServer::builder()
            .unix_socket(true)
            .appendonly(appendonly);
        if let Some(pw) = password {
            builder = builder.password(pw);
        }
        Redis {
            server: builder.start(),
            password: password.map(str::to_owned),
        }
    }

    /// A server with a TLS port as well (see `RedisServerBuilder::tls`).
    pub fn start_tls() -> Redis {
        Redis {
            server: RedisServer::builder().unix_socket(true).tls(true).start(),
            password: None,
        }
    }

    pub fn start_tcp() -> Redis {
        Redis {
            server: RedisServer::start(),
            password: None,
        }
    }

    /// The URL, with the server's password if it has one.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The URL with another password.
    pub fn url_with_password(&self, pw: &str) -> String {
        let path = self.server.socket_path().expect("a unix socket");
        format!("redis+unix://{}?pass={pw}", path.display())
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }

    pub fn restart(&mut self) {
        self.server.restart();
    }

    pub fn conn(&self) -> redis::Connection {
        let _ = &self.password;
        redis::Client::open(self.url())
            .expect("a URL")
            .get_connection()
            .expect("a connection")
    }

    pub fn used_memory(&self) -> u64 {
        self.server.used_memory()
    }
}

/// A worker process: this test binary, started as a worker.
pub struct WorkerProc {
    pub child: Child,
}

pub const WORKER_ENV: &str = "TROIKA_CLUSTER_TEST_WORKER";

impl WorkerProc {
    /// `opts`: `processes,lease_ms,prefetch,max_payload,name`.
    pub fn start(url: &str, queue: &str, opts: &str) -> WorkerProc {
        let child = Command::new(std::env::current_exe().unwrap())
            .env(WORKER_ENV, format!("{url}|{queue}|{opts}"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start a worker");
        WorkerProc { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for the exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve as a worker if this process was started as one; returns false if not.
pub fn maybe_serve() -> bool {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return false;
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut parts = spec.split('|');
    let url = parts.next().unwrap_or_default().to_owned();
    let queue = parts.next().unwrap_or_default().to_owned();
    let opts: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    let num = |i: usize, default: u64| {
        opts.get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let mut builder = troika_cluster::Worker::builder(&url, &queue)
        .processes(num(0, 1) as usize)
        .lease(Duration::from_millis(num(1, 2000)))
        .prefetch(num(2, 8) as usize)
        .max_payload(num(3, 16 << 20) as usize)
        .grace(Duration::from_secs(30));
    if let Some(name) = opts.get(4).filter(|s| !s.is_empty()) {
        builder = builder.name(name.clone());
    }
    // A CA certificate file for a rediss:// URL.
    if let Some(ca) = opts.get(5).filter(|s| !s.is_empty()) {
        builder = builder.tls_root_cert(std::fs::read(ca).expect("the CA file"));
    }
    match builder.run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("worker failed: {e}");
            std::process::exit(3)
        }
    }
}

/// Wait until `cond` holds, failing after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A file's lines (empty if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Run each named test in a child of its own (this binary again) with an
/// outer deadline; the child's process group is killed at the deadline.
pub fn run_all(tests: &[(&str, fn())], deadline: Duration) {
    const TEST_ENV: &str = "TROIKA_CLUSTER_TEST_CASE";
    if let Ok(name) = std::env::var(TEST_ENV) {
        let test = tests
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a known test");
        (test.1)();
        std::process::exit(0);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let include_ignored = std::env::args().any(|a| a == "--ignored" || a == "--include-ignored");
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, _) in tests {
        if name.starts_with("ignored_") && !include_ignored {
            continue;
        }
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(TEST_ENV, name)
            .process_group(0)
            .spawn()
            .expect("start a test child");
        let end = started + deadline;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= end {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever the test left (workers, redis-server) goes with its group.
        // SAFETY: kill(2) of the process group we created for the child.
        unsafe {
            libc::kill(-(child.id() as i32), 9);
        }
        let _ = child.wait();
        match status {
            Some(s) if s.success() => {
                println!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Some(s) => {
                println!("test {name} ... FAILED ({s})");
                failed.push(*name);
            }
            None => {
                println!("test {name} ... FAILED (no end within {deadline:?})");
                failed.push(*name);
            }
        }
    }
    println!("{ran} tests, {} failed", failed.len());
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(1);
    }
}
