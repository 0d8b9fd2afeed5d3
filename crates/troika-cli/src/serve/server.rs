//! The accept loop, on hyper's HTTP/1 connection builder directly (rather than
//! `axum::serve`) for what axum does not expose: a header read timeout
//! against slowloris clients, and a graceful shutdown that waits for
//! in-flight requests only up to a grace period.
//!
//! hyper answers a request line longer than its URI limit (64 KiB) with
//! 414, a head past its buffer (about 400 KiB) with 431, and closes a
//! connection whose head does not arrive within the header read timeout.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How the server loop behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// A client must send its request head within this long.
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests get to finish after a shutdown signal.
    pub(crate) grace: Duration,
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
/// gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    signals: Signals,
) -> anyhow::Result<()> {
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
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
    Ok(())
}
