//! A `redis-server` child in a temp dir of its own.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::redis_server_binary;
use crate::resp::{Connection, Reply};

/// The outer deadline of a start, a restart or a stop: a failure path only.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often a start polls for the server's PING. Polling is the event here:
/// the loop ends on the first PONG, this only bounds the busy-wait.
const POLL: Duration = Duration::from_millis(5);

/// Fresh ports tried when the one we picked was taken before the server bound it.
const PORT_ATTEMPTS: usize = 20;

/// Builds a [`RedisServer`] with persistence, a password or a Unix socket.
///
/// # Examples
///
/// ```
/// use troika_test_redis::{RedisServer, Reply};
///
/// let server = RedisServer::builder().password("s3cret").unix_socket(true).start();
/// assert!(server.url().starts_with("redis+unix:///"));
/// assert_eq!(server.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    unix_socket: bool,
    appendonly: bool,
    password: Option<String>,
    tls: bool,
}

impl RedisServerBuilder {
    /// Listens on `redis.sock` in the server's temp dir instead of TCP.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().unix_socket(true).start();
    /// assert!(server.addr().is_none());
    /// assert!(server.socket_path().unwrap().ends_with("redis.sock"));
    /// ```
    pub fn unix_socket(mut self, yes: bool) -> Self {
        self.unix_socket = yes;
        self
    }

    /// `appendonly yes` with `appendfsync always` in the temp dir: every
    /// acknowledged write survives [`RedisServer::kill`] and
    /// [`RedisServer::restart`].
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{RedisServer, Reply};
    ///
    /// let mut server = RedisServer::builder().appendonly(true).start();
    /// server.command(&["SET", "k", "v"]).unwrap();
    /// server.kill();
    /// server.restart();
    /// assert_eq!(server.command(&["GET", "k"]).unwrap(), Reply::Bulk(Some(b"v".to_vec())));
    /// ```
    pub fn appendonly(mut self, yes: bool) -> Self {
        self.appendonly = yes;
        self
    }

    /// `requirepass`: clients must `AUTH` first. [`RedisServer::url`] and
    /// [`RedisServer::command`] carry the password.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().password("pw").start();
    /// assert!(server.url().starts_with("redis://:pw@127.0.0.1:"));
    /// ```
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Also listen with TLS on a second free port of 127.0.0.1
    /// ([`RedisServer::tls_url`]), with a certificate for `127.0.0.1` issued
    /// by a CA made for this server ([`RedisServer::tls_ca_pem`]). The
    /// certificates are made with the `openssl` command; the plain port (or
    /// socket) stays open for [`RedisServer::command`].
    ///
    /// # Panics
    ///
    /// At [`start`](Self::start), when `openssl` is missing or fails, or the
    /// server was built without TLS.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().tls(true).start();
    /// assert!(server.tls_url().unwrap().starts_with("rediss://127.0.0.1:"));
    /// assert!(server.tls_ca_pem().unwrap().starts_with(b"-----BEGIN CERTIFICATE-----"));
    /// ```
    pub fn tls(mut self, yes: bool) -> Self {
        self.tls = yes;
        self
    }

    /// Starts the server and returns once it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed, or the server does not answer
    /// within 30 s (the message carries its log).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().start();
    /// assert!(server.used_memory() > 0);
    /// ```
    pub fn start(self) -> RedisServer {
        let binary = redis_server_binary();
        let dir = make_temp_dir();
        let mut server = RedisServer {
            binary,
            socket: self.unix_socket.then(|| dir.join("redis.sock")),
            dir,
            port: 0,
            tls_port: 0,
            config: self,
            child: None,
            pid: 0,
        };
        if server.config.tls {
            make_certificates(&server.dir);
        }
        if server.socket.is_some() && !server.config.tls {
            server.spawn_and_wait(false);
        } else {
            for attempt in 1.. {
                server.port = if server.socket.is_some() {
                    0
                } else {
                    free_port()
                };
                if server.config.tls {
                    server.tls_port = free_port();
                }
                match server.spawn_and_wait(attempt < PORT_ATTEMPTS) {
                    Started::Ready => break,
                    Started::PortTaken => continue,
                }
            }
        }
        server
    }
}

/// A `redis-server` child for tests, in a temp dir of its own, without
/// persistence unless asked ([`RedisServerBuilder::appendonly`]).
///
/// Dropping it kills the server (SIGKILL) and removes its dir, also when the
/// test panics. The server is also killed when the thread that started (or
/// last restarted) it exits, or when the test process is killed, so a test
/// that times out leaves no server behind; start one server per test rather
/// than sharing one from a `static`.
///
/// # Examples
///
/// ```
/// use troika_test_redis::{RedisServer, Reply};
///
/// let server = RedisServer::start();
/// assert!(server.url().starts_with("redis://127.0.0.1:"));
/// assert_eq!(server.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: PathBuf,
    socket: Option<PathBuf>,
    port: u16,
    /// The TLS port, 0 without TLS.
    tls_port: u16,
    config: RedisServerBuilder,
    child: Option<Child>,
    pid: u32,
}

enum Started {
    Ready,
    PortTaken,
}

impl RedisServer {
    /// Starts a server on a free TCP port of 127.0.0.1, without persistence.
    ///
    /// # Panics
    ///
    /// As [`RedisServerBuilder::start`].
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::start();
    /// assert!(server.addr().unwrap().ip().is_loopback());
    /// ```
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// A builder for a server with a password, persistence or a Unix socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().appendonly(true).start();
    /// # drop(server);
    /// ```
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The URL a `redis` crate (1.x) client connects with:
    /// `redis://127.0.0.1:PORT/` or `redis://:PASSWORD@127.0.0.1:PORT/`, or
    /// `redis+unix:///DIR/redis.sock` with `?pass=PASSWORD` for a password.
    /// The password is percent-encoded.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::builder().unix_socket(true).password("a b").start();
    /// assert!(server.url().ends_with("/redis.sock?pass=a%20b"));
    /// ```
    pub fn url(&self) -> String {
        let pass = self.config.password.as_deref().map(percent_encode);
        match (&self.socket, pass) {
            (Some(path), None) => format!("redis+unix://{}", path.display()),
            (Some(path), Some(p)) => format!("redis+unix://{}?pass={p}", path.display()),
            (None, None) => format!("redis://127.0.0.1:{}/", self.port),
            (None, Some(p)) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
        }
    }

    /// The `rediss://` URL of the TLS port (with the password if there is
    /// one), or `None` without [`RedisServerBuilder::tls`].
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// assert!(RedisServer::start().tls_url().is_none());
    /// ```
    pub fn tls_url(&self) -> Option<String> {
        if !self.config.tls {
            return None;
        }
        let auth = match self.config.password.as_deref() {
            Some(p) => format!(":{}@", percent_encode(p)),
            None => String::new(),
        };
        Some(format!("rediss://{auth}127.0.0.1:{}/", self.tls_port))
    }

    /// The PEM certificate of the CA that issued the TLS port's
    /// certificate, or `None` without [`RedisServerBuilder::tls`].
    pub fn tls_ca_pem(&self) -> Option<Vec<u8>> {
        if !self.config.tls {
            return None;
        }
        let path = self.dir.join("ca.crt");
        Some(fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
    }

    /// The TCP address, or `None` for a Unix-socket server.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// assert!(RedisServer::start().addr().is_some());
    /// ```
    pub fn addr(&self) -> Option<SocketAddr> {
        self.socket
            .is_none()
            .then(|| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)))
    }

    /// The Unix socket's path, or `None` for a TCP server.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// assert!(RedisServer::start().socket_path().is_none());
    /// ```
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The process id of the server (of the last one started, if it is down).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// assert!(RedisServer::start().pid() > 0);
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the server with SIGKILL and reaps it: a crash. Does nothing if
    /// it is already down.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let mut server = RedisServer::start();
    /// server.kill();
    /// assert!(server.command(&["PING"]).is_err());
    /// ```
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with `SHUTDOWN` (which saves when persistence is on)
    /// and reaps it. Kills it if it has not exited after 30 s. Does nothing
    /// if it is already down.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let mut server = RedisServer::start();
    /// server.stop();
    /// assert!(server.command(&["PING"]).is_err());
    /// ```
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The server closes the connection without a reply when it goes down.
        let _ = self.command(&["SHUTDOWN"]);
        let deadline = Instant::now() + DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server did not exit within {DEADLINE:?} of SHUTDOWN; log:\n{}",
                        self.log()
                    );
                }
                Ok(None) => std::thread::sleep(POLL),
            }
        }
    }

    /// Starts the server again on the same port or socket, in the same dir,
    /// with the same configuration (so an append-only file is reloaded), and
    /// returns once it answers `PING`. A server still running is stopped
    /// first ([`stop`](Self::stop)).
    ///
    /// # Panics
    ///
    /// When the server does not answer within 30 s, e.g. because another
    /// process took its port meanwhile (the message carries its log).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let mut server = RedisServer::start();
    /// let url = server.url();
    /// server.kill();
    /// server.restart();
    /// assert_eq!(server.url(), url);
    /// assert!(server.command(&["PING"]).is_ok());
    /// ```
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait(false);
    }

    /// Sends one command on a fresh connection (after `AUTH` when the server
    /// has a password) and returns its reply. An error reply is
    /// `Ok(Reply::Error(..))`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or closes the connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{RedisServer, Reply};
    ///
    /// let server = RedisServer::start();
    /// assert_eq!(server.command(&["INCR", "n"]).unwrap(), Reply::Integer(1));
    /// assert!(server.command(&["NOSUCHCOMMAND"]).unwrap().is_error());
    /// ```
    pub fn command(&self, args: &[&str]) -> io::Result<Reply> {
        let mut conn = self.connect()?;
        if let Some(password) = &self.config.password {
            let reply = conn.command(&["AUTH", password])?;
            if reply.is_error() {
                return Ok(reply);
            }
        }
        conn.command(args)
    }

    /// `used_memory` from `INFO memory`, in bytes.
    ///
    /// # Panics
    ///
    /// When the server is down or the reply has no `used_memory` line.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::RedisServer;
    ///
    /// let server = RedisServer::start();
    /// assert!(server.used_memory() > 100_000);
    /// ```
    pub fn used_memory(&self) -> u64 {
        let reply = self
            .command(&["INFO", "memory"])
            .unwrap_or_else(|e| panic!("INFO memory: {e}"));
        let text = reply
            .as_str()
            .unwrap_or_else(|| panic!("INFO memory: unexpected reply {reply:?}"));
        text.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO memory has no used_memory line:\n{text}"))
    }

    fn connect(&self) -> io::Result<Connection> {
        match (&self.socket, self.addr()) {
            (Some(path), _) => Connection::unix(path),
            (None, Some(addr)) => Connection::tcp(addr),
            (None, None) => unreachable!("a TCP server has an address"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path().display()))
    }

    /// Spawns the server and waits for its PONG. With `retry_port`, a clash
    /// on the TCP port is reported instead of a panic.
    fn spawn_and_wait(&mut self, retry_port: bool) -> Started {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("create {}: {e}", self.log_path().display()));
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup the redis log: {e}"));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--save", "", "--logfile", ""])
            .args([
                "--appendonly",
                if self.config.appendonly { "yes" } else { "no" },
            ])
            .args(["--appendfsync", "always"]);
        match &self.socket {
            Some(path) => {
                cmd.args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(path);
            }
            None => {
                cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()]);
            }
        }
        if let Some(password) = &self.config.password {
            cmd.args(["--requirepass", password]);
        }
        if self.config.tls {
            cmd.args(["--tls-port", &self.tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
            if self.socket.is_some() {
                cmd.args(["--bind", "127.0.0.1"]);
            }
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one prctl system call, which is async-signal-safe; it touches
        // no memory shared with the parent and does not allocate.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + DEADLINE;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = self.log();
                let this_run = log.get(log_start as usize..).unwrap_or(&log);
                if retry_port && this_run.contains("Address already in use") {
                    return Started::PortTaken;
                }
                panic!("redis-server exited at start-up ({status}); log:\n{log}");
            }
            // A server still loading its append-only file answers -LOADING.
            if let Ok(Reply::Simple(pong)) = self.command(&["PING"])
                && pong == "PONG"
            {
                return Started::Ready;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "redis-server did not answer PING within {DEADLINE:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a certificate for 127.0.0.1 that it issued, in `dir`:
/// `ca.crt`, `server.crt`, `server.key` (P-256 keys, valid two days).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run openssl (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=troika test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

fn make_temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("troika-redis-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            // Left behind by an earlier process with our pid: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("aZ9-._~"), "aZ9-._~");
        assert_eq!(percent_encode("a b@:/?&é"), "a%20b%40%3A%2F%3F%26%C3%A9");
    }
}
