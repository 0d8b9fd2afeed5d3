//! Test support for `cli_serve.rs`: start the real `troika serve` on
//! 127.0.0.1 port 0, a raw HTTP/1.1 client, and a tiny API server that
//! answers, fails, hangs or resets on demand.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports, reason = "not every serve test waits")]
pub(crate) use crate::common::{GENEROUS, scratch, wait_until};

/// Wait for a server to exit, with [`GENEROUS`] as the failure path.
pub(crate) fn wait_for_exit(child: &mut Child) -> ExitStatus {
    crate::common::wait_for_exit(child, "the server to exit")
}

/// The output of a finished `troika` run.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Run `troika` to completion (for startup errors).
pub(crate) fn troika(args: &[&str]) -> Output {
    let mut command = Command::new(crate::common::binary());
    command.args(args).env("XDG_DATA_HOME", scratch("xdg"));
    let out = crate::common::run_within(command, None, crate::common::LIMIT);
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `"error"` field of a JSON error reply.
pub(crate) fn error_of(reply: &Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {}", reply.body))
        .to_owned()
}

/// A running `troika serve`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
    lines: Receiver<String>,
    pub(crate) stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Start the server with extra `[server]` keys and extra sections.
    pub(crate) fn start(server_keys: &str, sections: &str) -> Server {
        let dir = scratch("server");
        let config = dir.join("serve.toml");
        std::fs::write(
            &config,
            format!("[server]\ndata_dir = {dir:?}\n{server_keys}\n{sections}"),
        )
        .unwrap();
        let mut args = vec![
            "serve".to_owned(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--config".into(),
            config.to_str().unwrap().to_owned(),
        ];
        // The thread pool unless the test's config names a pool.
        if !server_keys.contains("pool =") {
            args.extend(["--pool".to_owned(), "threads".to_owned()]);
        }
        if !server_keys.contains("workers") {
            args.extend(["--workers".to_owned(), "2".to_owned()]);
        }
        let mut child = crate::common::spawn_troika(&args, Stdio::null());
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let first = match lines.recv_timeout(GENEROUS) {
            Ok(line) => line,
            Err(_) => panic!(
                "the server did not start; stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            dir,
            lines,
            stderr,
        }
    }

    /// Wait for a line on the server's stdout.
    pub(crate) fn wait_for_line(&self, expected: &str) {
        let deadline = Instant::now() + GENEROUS;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(expected) => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line '{expected}' on stdout; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A value of `/metrics`: the first line that starts with `series`.
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        let text = request(self.addr, "GET", "/metrics", None).body;
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Send a signal to the server.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Send raw bytes and read everything the server sends back.
pub(crate) fn request_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection with a generous read and write timeout (the failure path).
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    stream.set_write_timeout(Some(GENEROUS)).unwrap();
    stream
}

/// Read one answer's head (up to the blank line) from `stream`: the status
/// and the head's text. `None` when the server closed the connection first.
pub(crate) fn read_reply_head(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Send `head` (without its final blank line) and `body` on a fresh
/// connection and read the whole answer.
pub(crate) fn request_with_head(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = connect(addr);
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "reading the answer failed: {e}");
    }
    parse(&raw).unwrap_or_else(|| panic!("bad answer: {}", String::from_utf8_lossy(&raw)))
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub(crate) fn request(addr: SocketAddr, method: &str, target: &str, body: Option<&[u8]>) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        // The server may answer (413) and close before reading it all.
        let _ = stream.write_all(body);
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        assert!(
            !raw.is_empty(),
            "reading the answer to {method} {target} failed: {e}"
        );
    }
    parse(&raw).unwrap_or_else(|| panic!("bad answer: {}", String::from_utf8_lossy(&raw)))
}

/// Parse one raw HTTP/1.1 answer (head and body).
pub(crate) fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..end]).ok()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[end + 2..end + 2 + size]);
            at = end + 2 + size + 2;
        }
        rest = body;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&rest).into_owned(),
    })
}

/// How the tiny API server behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ApiMode {
    /// Answer 200 with this JSON.
    Json(&'static str),
    /// Answer 500.
    Status500,
    /// Read the request, then never answer (the connection stays open).
    Hang,
    /// Read the request, then reset the connection.
    Reset,
    /// Report the request, wait for `release`, then answer "late api result".
    Held,
    /// Answer the first `n` requests with a redirect (302, a relative
    /// `Location`), then 200 with this JSON.
    Redirects(usize, &'static str),
}

/// A tiny HTTP server on 127.0.0.1:0 for the API backend.
pub(crate) struct TinyApi {
    addr: SocketAddr,
    got: Receiver<()>,
    go: Sender<()>,
}

impl TinyApi {
    pub(crate) fn start(mode: ApiMode) -> TinyApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (got_tx, got) = channel();
        let (go, go_rx) = channel::<()>();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut redirected = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                read_head(&mut stream);
                match mode {
                    ApiMode::Json(body) => respond(&mut stream, "200 OK", "application/json", body),
                    ApiMode::Status500 => respond(
                        &mut stream,
                        "500 Internal Server Error",
                        "text/plain",
                        "boom",
                    ),
                    ApiMode::Hang => held.push(stream),
                    ApiMode::Reset => {
                        let _ =
                            rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
                        drop(stream);
                    }
                    ApiMode::Held => {
                        let _ = got_tx.send(());
                        if go_rx.recv().is_err() {
                            break;
                        }
                        respond(&mut stream, "200 OK", "text/plain", "late api result");
                    }
                    ApiMode::Redirects(n, _) if redirected < n => {
                        redirected += 1;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 302 Found\r\nLocation: next-{redirected}\r\n\
                             Content-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    ApiMode::Redirects(_, body) => {
                        respond(&mut stream, "200 OK", "application/json", body)
                    }
                }
            }
        });
        TinyApi { addr, got, go }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Wait until a request reached the server ([`ApiMode::Held`]).
    pub(crate) fn wait_for_request(&self) {
        self.got
            .recv_timeout(GENEROUS)
            .expect("the API server got no request");
    }

    /// Let the held request be answered.
    pub(crate) fn release(&self) {
        let _ = self.go.send(());
    }
}

fn read_head(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(GENEROUS));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
