//! The crawl's keep-alive connections: a fetch takes an idle connection to
//! its origin, or opens one if there is none, and gives it back as soon as
//! it has read the whole body.
//!
//! hyper-util's pooled client, which the crawl used before, hands a
//! connection back from a task of its own once the connection is idle
//! again, so the next fetch often found none idle and opened another while
//! the first was on its way back: 1,000 slots opened 1,068 connections, and
//! every request cost a spawn. Here the fetch that read the body puts the
//! connection back itself, before it ends, so a slot's next fetch finds it:
//! N fetches at a time to one origin open at most N connections. A
//! connection that is still busy finishing the last response is waited for
//! in [`Pool::send`] (`ready`), not replaced.
//!
//! A connection has no task of its own either: hyper's `Connection` future,
//! which reads and writes its socket, is polled by the fetch that holds the
//! connection, beside whatever that fetch waits for (the connection to be
//! ready, the response, the next body chunk; see [`Conn::drive`]). A
//! response then wakes the fetch once, where a connection task would be
//! woken first and then wake the fetch. An idle connection is polled by
//! nobody: one the server closed meanwhile is found closed by the next
//! fetch that takes it, which then takes the next one (as it did before).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Context;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

/// A connection's sending half.
type Sender = SendRequest<Full<Bytes>>;

/// A connection's other half: the future that reads and writes its socket.
type Io = http1::Connection<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>, Full<Bytes>>;

/// One HTTP/1.1 connection: requests go in through `sender`; `io` does the
/// connection's I/O when polled ([`Conn::drive`]), and is `None` once the
/// connection has ended.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: Sender,
    io: Option<Pin<Box<Io>>>,
}

impl Conn {
    /// Do the connection's pending I/O, and have `cx` woken when there is
    /// more. A connection that has ended (closed by either side, or failed)
    /// is dropped, which fails whatever still waits on it.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(io) = &mut self.io
            && io.as_mut().poll(cx).is_ready()
        {
            self.io = None;
        }
    }

    fn is_closed(&self) -> bool {
        self.io.is_none() || self.sender.is_closed()
    }

    /// Wait until a request can be sent, doing the connection's I/O.
    async fn ready(&mut self) -> hyper::Result<()> {
        poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Wait for `future` (a response of this connection), doing the
    /// connection's I/O meanwhile.
    async fn run<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        poll_fn(|cx| {
            self.drive(cx);
            future.as_mut().poll(cx)
        })
        .await
    }
}

/// Where a connection goes: connections are shared by requests to the same
/// scheme, host and port.
pub(crate) type Origin = (Scheme, Authority);

/// An idle connection is closed after this long unused (hyper's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections by origin.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<IdleSet>,
    /// Idle connections kept over all origins (`--concurrency`).
    max_idle: usize,
}

#[derive(Debug, Default)]
struct IdleSet {
    /// The most recently used last; no list is empty.
    by_origin: HashMap<Origin, Vec<Idle>>,
    len: usize,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection in use by one request; [`Pool::release`] gives it back.
/// Dropped instead (the body not read to its end, an error), it closes.
/// Its holder reads the response body with [`Lease::frame`], which does the
/// connection's I/O.
#[derive(Debug)]
pub(crate) struct Lease {
    origin: Origin,
    conn: Conn,
}

impl Lease {
    /// The next frame of `body`, the body of the response this connection
    /// is giving.
    pub(crate) async fn frame(
        &mut self,
        body: &mut Incoming,
    ) -> Option<Result<Frame<Bytes>, hyper::Error>> {
        poll_fn(|cx| {
            self.conn.drive(cx);
            Pin::new(&mut *body).poll_frame(cx)
        })
        .await
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Opening the connection failed (TCP, TLS or the HTTP handshake).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or answered.
    Http(hyper::Error),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }

    /// The error, to walk its sources.
    pub(crate) fn error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendError::Connect(e) => &**e,
            SendError::Http(e) => e,
        }
    }
}

impl Pool {
    /// A pool that opens connections through `connector` and keeps at most
    /// `max_idle` idle ones.
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, max_idle: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::default(),
            max_idle,
        }
    }

    /// Send `request` (origin-form, with its `Host` header) to `origin`, on
    /// an idle connection if there is one. A request that a reused
    /// connection closed before it was sent goes on the next one, or on a
    /// new connection.
    pub(crate) async fn send(
        &self,
        origin: Origin,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        while let Some(mut conn) = self.take(&origin) {
            // Closed since it went idle: try the next one.
            if conn.ready().await.is_err() {
                continue;
            }
            let sent = conn.sender.try_send_request(request);
            match conn.run(sent).await {
                Ok(response) => return Ok((response, Lease { origin, conn })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut conn = self.connect(&origin).await?;
        let sent = conn.sender.send_request(request);
        let response = conn.run(sent).await.map_err(SendError::Http)?;
        Ok((response, Lease { origin, conn }))
    }

    /// Give a connection back once its response has been read to the end.
    pub(crate) fn release(&self, lease: Lease) {
        if lease.conn.is_closed() || self.max_idle == 0 {
            return;
        }
        let evicted;
        {
            let mut idle = lock(&self.idle);
            // Full: make room by closing the longest-idle connection of
            // some origin (this one's if it is the only one).
            evicted = if idle.len >= self.max_idle {
                idle.evict_one()
            } else {
                None
            };
            idle.len += 1;
            idle.by_origin.entry(lease.origin).or_default().push(Idle {
                conn: lease.conn,
                since: Instant::now(),
            });
        }
        drop(evicted); // closes it, outside the lock
    }

    /// The most recently used idle connection to `origin` that has not
    /// expired or closed.
    fn take(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        let IdleSet { by_origin, len } = &mut *idle;
        let list = by_origin.get_mut(origin)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(entry) = list.pop() {
            *len -= 1;
            if now.duration_since(entry.since) < IDLE_TIMEOUT && !entry.conn.is_closed() {
                found = Some(entry.conn);
                break;
            }
        }
        if list.is_empty() {
            by_origin.remove(origin);
        }
        found
    }

    /// Open a connection to `origin`.
    async fn connect(&self, origin: &Origin) -> Result<Conn, SendError> {
        let uri = Uri::builder()
            .scheme(origin.0.clone())
            .authority(origin.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.into()))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(SendError::Connect)?;
        let (sender, io) = http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok(Conn {
            sender,
            io: Some(Box::pin(io)),
        })
    }

    /// Idle connections now.
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        lock(&self.idle).len
    }
}

impl IdleSet {
    /// Remove the longest-idle connection of the first origin found.
    fn evict_one(&mut self) -> Option<Idle> {
        let origin = self.by_origin.keys().next()?.clone();
        let list = self.by_origin.get_mut(&origin)?;
        let oldest = list.remove(0);
        if list.is_empty() {
            self.by_origin.remove(&origin);
        }
        self.len -= 1;
        Some(oldest)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(authority: &str) -> Origin {
        (Scheme::HTTP, authority.parse().unwrap())
    }

    #[tokio::test]
    async fn idle_connections_stay_within_the_limit_over_all_origins() {
        // The kernel completes the TCP handshakes on its own; nothing needs
        // to be accepted or answered for the connections to stay open.
        let mut origins = Vec::new();
        let mut listeners = Vec::new();
        for _ in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            origins.push(origin(&format!("127.0.0.1:{port}")));
            listeners.push(listener);
        }
        let (a, b) = (origins[0].clone(), origins[1].clone());
        let connector = crate::http::connector(Some(Duration::from_secs(10))).unwrap();
        let pool = Pool::new(connector, 2);
        for _ in 0..3 {
            let conn = pool.connect(&a).await.unwrap();
            pool.release(Lease {
                origin: a.clone(),
                conn,
            });
        }
        assert_eq!(pool.idle_len(), 2);
        let conn = pool.connect(&b).await.unwrap();
        pool.release(Lease {
            origin: b.clone(),
            conn,
        });
        assert_eq!(pool.idle_len(), 2, "an idle connection of a was closed");
        assert!(pool.take(&b).is_some());
        assert!(pool.take(&a).is_some());
        assert!(pool.take(&a).is_none());
        assert_eq!(pool.idle_len(), 0);
    }
}
