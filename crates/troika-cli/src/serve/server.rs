//! The accept loop, on hyper's HTTP/1 connection builder directly (rather than
//! `axum::serve`) for what axum does not expose: a header read timeout
//! against slowloris clients, and a graceful shutdown that waits for
//! in-flight requests only up to a grace period.
//!
//! A request head (request line and headers) is limited to
//! `[limits] max_head_bytes` (32 KiB by default): hyper answers a longer one
//! with 431, and one connection never buffers more than that of an
//! unfinished head, so 1,000 clients holding unfinished heads cost tens of
//! megabytes, not hundreds. hyper also closes a connection whose head does
//! not arrive within the header read timeout.
//!
//! hyper writes its own answers to unparsable requests (400, 414, 431) with
//! an empty body, past the router. [`AutoAnswers`] sits between hyper and
//! the socket, turns those into the JSON error bodies every other error has,
//! and counts them in `/metrics` under the route `unparsed`.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::App;

/// How the server loop behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// A client must send its request head within this long.
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests get to finish after a shutdown signal.
    pub(crate) grace: Duration,
    /// A request head at most, in bytes (431 past it).
    pub(crate) max_head_bytes: usize,
}

/// SIGTERM and SIGINT, watched from before the server says it listens (a
/// signal sent as soon as the port is known must not kill it outright).
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub(crate) fn watch() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }
}

/// Serve `router` on `listener` until SIGTERM or SIGINT, then shut down
/// gracefully: stop accepting, then wait up to the grace period for the
/// connections to finish. Returns when the signal came.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    app: Arc<App>,
    settings: Settings,
    signals: Signals,
) -> anyhow::Result<Instant> {
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_head_bytes)
        // hyper's read buffer: what an unfinished head can hold (8 KiB at least).
        .max_buf_size(settings.max_head_bytes.max(8192))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    let signal_name = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // briefly rather than spin; the loop goes on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let stream = AutoAnswers::new(stream, Arc::clone(&app), settings.max_head_bytes);
                let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    drop(listener);
    let signalled = Instant::now();
    tracing::info!(
        signal = signal_name,
        grace_secs = settings.grace.as_secs_f64(),
        "shutting down: no new connections; finishing requests in flight"
    );
    println!("shutting down ({signal_name})");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("every connection finished"),
        () = tokio::time::sleep(settings.grace) => {
            tracing::warn!("the grace period ended with requests still in flight; dropping them");
        }
    }
    Ok(signalled)
}

/// The socket of one connection, as hyper sees it. Reads pass through;
/// a write of one of hyper's own error answers (an empty-bodied 400, 414 or
/// 431, which the router never sends: its errors are JSON) is replaced by
/// the same answer with a JSON body, and counted.
pub(crate) struct AutoAnswers<S> {
    inner: S,
    app: Arc<App>,
    max_head_bytes: usize,
    /// The replacement answer still to write, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> AutoAnswers<S> {
    pub(crate) fn new(inner: S, app: Arc<App>, max_head_bytes: usize) -> AutoAnswers<S> {
        AutoAnswers {
            inner,
            app,
            max_head_bytes,
            pending: None,
        }
    }

    /// The JSON answer that replaces hyper's answer in `written`, if
    /// `written` starts with one.
    fn replacement(&self, written: &[u8]) -> Option<Vec<u8>> {
        let status = automatic_status(written)?;
        let message = match status {
            431 => format!(
                "the request head (request line and headers) is larger than {} bytes",
                self.max_head_bytes
            ),
            414 => "the request target is too long".to_owned(),
            _ => "the request is not valid HTTP/1.1".to_owned(),
        };
        let body = serde_json::json!({ "error": message }).to_string();
        let reason = match status {
            431 => "Request Header Fields Too Large",
            414 => "URI Too Long",
            _ => "Bad Request",
        };
        self.app.metrics.record("unparsed", status, Duration::ZERO);
        if self.app.log_requests {
            tracing::info!(route = "unparsed", status, "request");
        }
        Some(
            format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

/// The status of hyper's own error answer at the start of `written`: a
/// status line of 400, 414 or 431 in a head without a content type.
fn automatic_status(written: &[u8]) -> Option<u16> {
    let status = match written.get(..13)? {
        b"HTTP/1.1 400 " | b"HTTP/1.0 400 " => 400,
        b"HTTP/1.1 414 " | b"HTTP/1.0 414 " => 414,
        b"HTTP/1.1 431 " | b"HTTP/1.0 431 " => 431,
        _ => return None,
    };
    let end = written
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(written.len());
    let head = &written[..end];
    let typed = head
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    (!typed).then_some(status)
}

impl<S: AsyncWrite + Unpin> AutoAnswers<S> {
    /// Write what is left of the replacement answer.
    fn poll_pending(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AutoAnswers<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AutoAnswers<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match this.replacement(buf) {
                Some(bytes) => this.pending = Some((bytes, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // After hyper's own answer the connection closes: whatever hyper
        // writes is taken as written once the replacement is out.
        ready!(this.poll_pending(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum();
        if this.pending.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            match first.and_then(|b| this.replacement(b)) {
                Some(bytes) => this.pending = Some((bytes, 0)),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        ready!(this.poll_pending(cx))?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::automatic_status;

    #[test]
    fn only_hypers_own_untyped_error_answers_are_replaced() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_status(hyper_431), Some(431));
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_status(hyper_400), Some(400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(automatic_status(ours), None);
        assert_eq!(automatic_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(automatic_status(b"HTTP/1.1 4"), None);
        assert_eq!(automatic_status(b"{\"error\": 1}"), None);
    }
}
