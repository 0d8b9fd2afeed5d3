//! A local HTTP server for the crawl tests: pages with a delay, redirect
//! loops, redirects to `file:` and `ftp:`, pages in chunks, pages that close
//! their connection, an endless body, a page that never
//! answers, a page that stalls after its first bytes, a page that fails once,
//! pages that are not UTF-8, and counters of requests in flight.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use futures::StreamExt;

/// What the server saw.
#[derive(Default)]
pub(crate) struct Seen {
    now: AtomicUsize,
    peak: AtomicUsize,
    /// Per listening port: (in flight now, peak).
    per_port: Mutex<HashMap<u16, (usize, usize)>>,
    /// Requests per path.
    hits: Mutex<HashMap<String, usize>>,
    /// Per listening port: when each request arrived, in order.
    arrivals: Mutex<HashMap<u16, Vec<Instant>>>,
    /// The last request to /echo: method, headers, body.
    echo: Mutex<Option<(String, HeaderMap, String)>>,
    /// Connections accepted, over all servers.
    connections: AtomicUsize,
}

impl Seen {
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub(crate) fn peak_on(&self, port: u16) -> usize {
        self.per_port.lock().unwrap().get(&port).map_or(0, |p| p.1)
    }

    pub(crate) fn arrivals_on(&self, port: u16) -> Vec<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .get(&port)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub(crate) fn echo(&self) -> Option<(String, HeaderMap, String)> {
        self.echo.lock().unwrap().clone()
    }

    /// Connections the servers accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Ctx {
    seen: Arc<Seen>,
    port: u16,
}

/// Counts a request in flight until dropped (also when the client hangs up).
struct InFlight(Ctx);

impl InFlight {
    fn enter(ctx: &Ctx) -> InFlight {
        let now = ctx.seen.now.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.seen.peak.fetch_max(now, Ordering::SeqCst);
        let mut ports = ctx.seen.per_port.lock().unwrap();
        let entry = ports.entry(ctx.port).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        InFlight(ctx.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.seen.now.fetch_sub(1, Ordering::SeqCst);
        if let Some(entry) = self.0.seen.per_port.lock().unwrap().get_mut(&self.0.port) {
            entry.0 -= 1;
        }
    }
}

async fn track(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    ctx.seen
        .arrivals
        .lock()
        .unwrap()
        .entry(ctx.port)
        .or_default()
        .push(Instant::now());
    let _in_flight = InFlight::enter(&ctx);
    *ctx.seen
        .hits
        .lock()
        .unwrap()
        .entry(request.uri().path().to_owned())
        .or_default() += 1;
    next.run(request).await
}

async fn page(Path(n): Path<u32>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let delay: u64 = q.get("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<html><title>page {n}</title><body>{}</body></html>",
            "<p>lorem ipsum</p>".repeat(100)
        ),
    )
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

/// `/redirect?status=303&to=URL`: a redirect of any kind to anywhere.
async fn redirect_to(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = q
        .get("status")
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::FOUND);
    let to = q.get("to").cloned().unwrap_or_default();
    (status, [(header::LOCATION, to)]).into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    StatusCode::from_u16(code)
        .unwrap_or(StatusCode::IM_A_TEAPOT)
        .into_response()
}

async fn flaky(State(ctx): State<Ctx>, Path(key): Path<String>) -> Response {
    // `track` already counted this request.
    if ctx.seen.hits(&format!("/flaky/{key}")) <= 1 {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else {
        "recovered".into_response()
    }
}

async fn endless() -> Response {
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn echo(
    State(ctx): State<Ctx>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> &'static str {
    *ctx.seen.echo.lock().unwrap() = Some((method.to_string(), headers, body));
    "echoed"
}

/// Bytes `/stall` sends before it stalls.
pub(crate) const STALL_BYTES: usize = 1000;

/// Answers 200 and the first [`STALL_BYTES`] of the body, then sends
/// nothing more and never ends it.
async fn stall() -> Response {
    let first = Bytes::from(vec![b'x'; STALL_BYTES]);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures::stream::pending());
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A page in chunks (as nginx's echo module sends its pages): the head and
/// the first chunk, then the rest and the end of the body a moment later.
async fn chunked(Query(q): Query<HashMap<String, String>>) -> Response {
    let delay: u64 = q.get("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let chunks = futures::stream::unfold(0, |sent| async move {
        if sent > 0 {
            tokio::task::yield_now().await;
        }
        (sent < 2).then(|| {
            (
                Ok::<_, std::io::Error>(Bytes::from_static(b"<p>chunk</p>")),
                sent + 1,
            )
        })
    });
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// A Latin-1 body (not UTF-8) with the given Content-Type.
fn latin1(content_type: &'static str, body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The Latin-1 page of `/latin1-meta`, its `<meta>` tag split across
/// chunks of 7 bytes.
async fn latin1_meta_chunked() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = LATIN1_META
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/html")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

const LATIN1_META: &[u8] =
    b"<html><head><meta charset=\"iso-8859-1\"></head><body>caf\xe9</body></html>";

/// Accepts the request and never answers.
async fn never() -> &'static str {
    std::future::pending().await
}

fn app(ctx: Ctx) -> Router {
    Router::new()
        .route("/page/{n}", get(page))
        .route("/chunked/{n}", get(chunked))
        .route(
            "/close/{n}",
            get(|| async { ([(header::CONNECTION, "close")], "closing").into_response() }),
        )
        .route("/status/{code}", get(status))
        .route("/self-loop", get(|| async { redirect("/self-loop") }))
        .route("/to-file", get(|| async { redirect("file:///etc/passwd") }))
        .route(
            "/to-ftp",
            get(|| async { redirect("ftp://127.0.0.1/pub/file") }),
        )
        .route("/to-page", get(|| async { redirect("/page/7") }))
        .route("/redirect", any(redirect_to))
        .route("/endless", get(endless))
        .route("/never", get(never))
        .route("/stall", get(stall))
        .route("/flaky/{key}", get(flaky))
        .route(
            "/latin1",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    &b"caf\xe9 cr\xe8me"[..],
                )
                    .into_response()
            }),
        )
        .route(
            "/latin1-declared-utf8",
            get(|| async { latin1("text/html; charset=utf-8", b"caf\xe9 cr\xe8me") }),
        )
        .route(
            "/latin1-meta",
            get(|| async { latin1("text/html", LATIN1_META) }),
        )
        .route("/latin1-meta-chunked", get(latin1_meta_chunked))
        .route(
            "/latin1-plain",
            get(|| async { latin1("text/plain", b"caf\xe9 cr\xe8me") }),
        )
        .route(
            "/binary",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    &b"\x89PNG\r\n\x1a\n\xff\xfe"[..],
                )
                    .into_response()
            }),
        )
        .route("/echo", any(echo))
        .layer(middleware::from_fn_with_state(ctx.clone(), track))
        .with_state(ctx)
}

/// Servers on 127.0.0.1, each on its own free port, sharing one [`Seen`].
pub(crate) struct Servers {
    pub(crate) seen: Arc<Seen>,
    pub(crate) ports: Vec<u16>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Servers {
    /// Start `n` servers. They are accepting connections when this returns.
    pub(crate) fn start(n: usize) -> Servers {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Seen::default());
        let mut ports = Vec::new();
        for _ in 0..n {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let counted = Arc::clone(&seen);
            let listener = listener.tap_io(move |_| {
                counted.connections.fetch_add(1, Ordering::SeqCst);
            });
            let app = app(Ctx {
                seen: Arc::clone(&seen),
                port,
            });
            runtime.spawn(async move { axum::serve(listener, app).await });
            ports.push(port);
        }
        Servers {
            seen,
            ports,
            runtime: Some(runtime),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.url_on(0, path)
    }

    pub(crate) fn url_on(&self, server: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[server])
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A port on 127.0.0.1 that refuses connections (bound, then closed).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A listener on 127.0.0.1 whose accept queue is full: connecting to it
/// hangs (the kernel drops the SYN), as for a host that does not answer.
/// Keep the returned sockets alive while the port is in use.
pub(crate) fn unanswered_port() -> (Vec<std::net::TcpStream>, rustix::fd::OwnedFd, u16) {
    use rustix::net::{AddressFamily, SocketType, ipproto};
    let listener =
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP)).unwrap();
    let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
    rustix::net::bind(&listener, &any).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let addr =
        std::net::SocketAddr::try_from(rustix::net::getsockname(&listener).unwrap()).unwrap();
    // Fill the queue (it holds backlog + 1) until a connect no longer completes.
    let mut queued = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        queued.push(stream);
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    (queued, listener, addr.port())
}
