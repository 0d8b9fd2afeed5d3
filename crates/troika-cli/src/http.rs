//! The command's one HTTP client stack: hyper with rustls for https.
//! `troika serve`'s API backend uses hyper-util's pooled client over
//! [`connector`]; `troika crawl` keeps its own connections over the same
//! connector (`crawl/pool.rs`).
//!
//! The crawl chose hyper over reqwest for speed: reqwest's layers (the URL
//! parsed three times a request, retry and redirect services around every
//! call) took about half of the 1.25 CPU-seconds a 10,000-page crawl at
//! 1,000 connections cost (0.7 s without them). Redirects are followed by
//! the callers, and no proxy is used.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The pooled HTTP/1.1 client, http and https.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How the client connects and pools.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientOptions {
    /// Give up on a TCP connect after this long (`None`: the OS's limit).
    pub(crate) connect_timeout: Option<Duration>,
    /// Idle connections kept per host.
    pub(crate) max_idle_per_host: usize,
    /// Close an idle pooled connection after this long (`None`: hyper's default).
    pub(crate) idle_timeout: Option<Duration>,
}

/// The connector for http and https URLs: TCP with `TCP_NODELAY`, then TLS
/// (HTTP/1.1 only) verifying certificates against the platform's roots.
/// `connect_timeout` bounds the TCP connect (`None`: the OS's limit).
pub(crate) fn connector(
    connect_timeout: Option<Duration>,
) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false); // https URLs pass through to the TLS layer
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Build a pooled client for http and https URLs over [`connector`].
pub(crate) fn client(options: ClientOptions) -> anyhow::Result<HttpClient> {
    let https = connector(options.connect_timeout)?;
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(options.max_idle_per_host);
    if let Some(idle) = options.idle_timeout {
        builder.pool_idle_timeout(idle);
    }
    Ok(builder.build(https))
}
