//! `troika serve`: the Python tutorials' Flask service as a real HTTP service, on axum,
//! hyper and tokio.
//!
//! - `GET /is_prime/<numbers>` and `POST /is_prime` check numbers on a pool
//!   ([`primes`], [`pool`]);
//! - `GET /` fans out to a file, a SQLite database and an HTTP API at once
//!   ([`fanout`]);
//! - `GET /healthz` and `GET /metrics` ([`metrics`]).
//!
//! The server loop ([`server`]) accepts connections with a header read
//! timeout and a limit on request heads, and on SIGTERM or SIGINT stops
//! accepting, lets in-flight requests finish within a grace period and shuts
//! the pool down.
//!
//! # Memory budget
//!
//! What clients can make the server hold is bounded by the `[limits]`:
//! - a request head: `max_head_bytes` (32 KiB) per connection, also while it
//!   is unfinished (431 past it);
//! - request bodies: `max_post_numbers` × 32 + 4 KiB (3.2 MB) per request
//!   (413 past it, at once when `Content-Length` says so), and
//!   `body_budget_bytes` (64 MiB) over all requests at once (503 past it, so
//!   `max_in_flight` × the largest body never has to fit in memory);
//! - a backend's answer: 1 MiB.
//!
//! # Demo API
//!
//! Unless `[backends.api] url` names another, `GET /` calls the demo API on
//! a listener of its own on 127.0.0.1: its calls do not count against the
//! clients' `max_in_flight`, and it keeps serving after SIGTERM closes the
//! main listener, as long as the requests that use it (it stops with the
//! runtime).

mod config;
mod error;
mod fanout;
mod log;
mod metrics;
mod pool;
mod primes;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;

use config::{Config, Limits, secs};
use error::ApiError;
use metrics::Metrics;
use pool::{Backend, PoolKind};

/// Options of `troika serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// The port to listen on; 0 picks a free one [default: 8000].
    #[arg(long)]
    port: Option<u16>,
    /// What runs the prime checks [default: processes].
    #[arg(long, value_enum)]
    pool: Option<PoolKind>,
    /// Workers of the pool [default: the available parallelism].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// A TOML file with limits, timeouts and backends (--help shows its keys).
    #[arg(long, value_name = "FILE", long_help = CONFIG_HELP)]
    config: Option<PathBuf>,
}

/// `--config`'s long help: every key with its default.
const CONFIG_HELP: &str = "A TOML file with limits, timeouts and backends; every key is optional \
and flags win over it. The keys, with their defaults:

[server]
host = \"127.0.0.1\"
port = 8000
pool = \"processes\"           # or \"threads\"
workers = …                  # default: the available parallelism
data_dir = \"…\"               # the demo file and database; default $XDG_DATA_HOME/troika/serve, else ~/.local/share/troika/serve
shutdown_grace_secs = 10
log_requests = true

[limits]
max_get_numbers = 1000
max_post_numbers = 100000
request_deadline_secs = 10
header_read_timeout_secs = 10
pool_queue_capacity = 1024   # pool tasks waiting; past it, 503
max_in_flight = 4096         # requests being served; past it, 503
max_head_bytes = 32768       # request line and headers, also unfinished; past it, 431
body_budget_bytes = 67108864 # POST bodies in memory at once, all requests; past it, 503
                             # (one body: max_post_numbers x 32 + 4096 bytes; past it, 413)

[backends.file]
path = \"…\"                   # default: demo.txt in data_dir
delay_secs = 0.1
timeout_secs = 1             # cut short by request_deadline_secs when that comes first
max_concurrent = 64          # calls at once; a call waits for a slot within its timeout

[backends.db]
path = \"…\"                   # default: demo.sqlite3 in data_dir (made on first start)
query = \"SELECT value FROM results WHERE name = 'db'\"
delay_secs = 0.2
timeout_secs = 1
max_concurrent = 64

[backends.api]
url = \"…\"                    # default: the demo API, served on its own 127.0.0.1 port
delay_secs = 0.3
timeout_secs = 1
max_concurrent = 256

POST /is_prime takes application/json (415 otherwise). On SIGTERM or SIGINT
the server stops accepting and gives requests in flight shutdown_grace_secs
to finish; then it drops them, which stops their checks.";

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) backend: Backend,
    pub(crate) limits: Limits,
    pub(crate) max_body_bytes: usize,
    /// Bytes of request bodies held at once, over all requests.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) deadline: Duration,
    pub(crate) metrics: Metrics,
    pub(crate) crash_on: Arc<[u64]>,
    pub(crate) fanout: fanout::Fanout,
    log_requests: bool,
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let host = args
        .host
        .or_else(|| config.server.host.clone())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = args.port.or(config.server.port).unwrap_or(8000);
    let pool_kind = match (args.pool, config.server.pool.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some("threads")) => PoolKind::Threads,
        (None, Some("processes")) | (None, None) => PoolKind::Processes,
        (None, Some(other)) => {
            bail!("bad --config: server.pool '{other}' (expected processes or threads)")
        }
    };
    let workers = match args.workers.or(config.server.workers) {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let _log_guard = init_logging()?;
    let deadline = secs(config.limits.request_deadline_secs);
    let backend = Backend::start(
        pool_kind,
        workers,
        config.limits.pool_queue_capacity,
        deadline,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve-io")
        .build()
        .context("cannot start the async runtime")?;
    let grace = secs(config.server.shutdown_grace_secs);
    let outcome = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        let local = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let demo_url = match &config.backends.api.url {
            Some(url) => url.clone(),
            None => serve_demo_api().await?,
        };
        let data_dir = data_dir(&config)?;
        let fanout = fanout::Fanout::new(&config.backends, &data_dir, &demo_url)?;
        let limits = config.limits.clone();
        let app = Arc::new(App {
            backend,
            max_body_bytes: limits.max_body_bytes(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(limits.body_budget_bytes)),
            limits,
            deadline,
            metrics: Metrics::default(),
            crash_on: config.faults.crash_on.clone().into(),
            fanout,
            log_requests: config.server.log_requests,
        });
        tracing::info!(
            pool = app.backend.name(),
            workers,
            backends = %app.fanout.describe(),
            "troika serve starting"
        );
        let signals = server::Signals::watch()?;
        // Tests and scripts read the port from this line (with --port 0).
        println!("listening on http://{local}");
        let router = router(Arc::clone(&app));
        let settings = server::Settings {
            header_read_timeout: secs(config.limits.header_read_timeout_secs),
            grace,
            max_head_bytes: config.limits.max_head_bytes,
        };
        let signalled =
            server::serve(listener, router, Arc::clone(&app), settings, signals).await?;
        Ok::<_, anyhow::Error>((app, signalled))
    });
    // Dropping the requests still in flight (the grace period is over) stops
    // their pool work. Blocking threads still stuck in a hung backend (a file
    // that never answers) must not hold the exit up past the grace period.
    let left = match &outcome {
        Ok((_, signalled)) => grace.saturating_sub(signalled.elapsed()),
        Err(_) => Duration::ZERO,
    };
    runtime.shutdown_timeout(left.min(Duration::from_secs(1)));
    let (app, _) = outcome?;
    app.backend.shutdown();
    tracing::info!("stopped");
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serve the demo API (`GET /demo/api`) on a listener of its own on
/// 127.0.0.1 (see the module docs); returns its URL. It runs until the
/// runtime stops.
async fn serve_demo_api() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen for the demo API on 127.0.0.1")?;
    let local = listener
        .local_addr()
        .context("cannot read the demo API's address")?;
    let router = Router::new().route("/demo/api", get(fanout::demo_api));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "the demo API stopped");
        }
    });
    Ok(format!("http://{local}/demo/api"))
}

/// Where the demo file and database live: `[server] data_dir`, else
/// `$XDG_DATA_HOME/troika/serve`, else `~/.local/share/troika/serve`, else a
/// directory under the temporary directory.
fn data_dir(config: &Config) -> anyhow::Result<PathBuf> {
    let dir = match &config.server.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir)
            .join("troika/serve"),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(dir)
}

/// Logs go to stderr, buffered (see [`log`]): a request pays for formatting
/// its line and copying it, not for a write. The guard writes what is left
/// when it is dropped, at exit.
fn init_logging() -> anyhow::Result<log::LogGuard<std::io::Stderr>> {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) =
        log::buffered(std::io::stderr()).context("cannot start the log flusher thread")?;
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(colour)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    Ok(guard)
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(fanout::index))
        .route(
            "/is_prime",
            get(primes::get_empty).post(primes::post_is_prime),
        )
        .route("/is_prime/", get(primes::get_empty))
        .route("/is_prime/{numbers}", get(primes::get_is_prime))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/demo/api", get(fanout::demo_api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            observe,
        ))
        .with_state(app)
}

async fn healthz() -> impl IntoResponse {
    (error::json_headers(), r#"{"status":"ok"}"#)
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app.metrics.render(app.backend.stats(), app.backend.name());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {} {}",
            request.method(),
            shorten(request.uri().path(), 200)
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            shorten(request.uri().path(), 200)
        ),
    )
}

fn shorten(text: &str, max: usize) -> String {
    let mut shown: String = text.chars().take(max).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// The route label of a request, from a fixed set (unknown paths share one
/// label, so a scan cannot blow the metrics up).
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched.map(MatchedPath::as_str) {
        Some("/") => "/",
        Some("/is_prime") => "/is_prime",
        Some("/is_prime/") => "/is_prime/",
        Some("/is_prime/{numbers}") => "/is_prime/{numbers}",
        Some("/healthz") => "/healthz",
        Some("/metrics") => "/metrics",
        Some("/demo/api") => "/demo/api",
        _ => "unmatched",
        // (`unparsed`, hyper's own answers, is counted in `server`.)
    }
}

/// Decrements the in-flight gauge when a request ends, however it ends.
struct InFlightGuard(Arc<App>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every request: the in-flight limit, metrics and one structured log line.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let path = shorten(request.uri().path(), 200);
    let now_in_flight = app.metrics.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = InFlightGuard(Arc::clone(&app));
    let exempt = matches!(route, "/healthz" | "/metrics");
    let response = if !exempt && now_in_flight > app.limits.max_in_flight as u64 {
        app.metrics.shed.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry later",
        )
        .into_response()
    } else {
        next.run(request).await
    };
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    app.metrics.record(route, status, elapsed);
    if app.log_requests {
        tracing::info!(
            %method,
            path = %path,
            route,
            status,
            latency_ms = elapsed.as_micros() as f64 / 1000.0,
            "request"
        );
    }
    response
}
