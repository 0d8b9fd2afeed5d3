//! `GET /`: the Python Flask app's read_file / read_db / read_api, all three at once.
//!
//! Each backend first waits its delay (the Flask app's 0.1 / 0.2 / 0.3 s, as a
//! tokio timer: no thread sleeps), then does its real work — read a file,
//! query SQLite, call an HTTP API — all under its own timeout, cut short by
//! the request deadline when that comes first. The answer has every
//! backend's result, `null` for the ones that failed, and an `"errors"`
//! object saying what happened to them. The status is 200 while at least one
//! backend answered, 504 when all timed out, 502 otherwise.
//!
//! Each backend has its own capacity (`max_concurrent`): a call waits for a
//! free slot within its timeout, and holds it until its work really ends. A
//! file read or query that blocks forever (a FIFO, a stuck network file
//! system) keeps its blocking thread and its slot, so a hung backend uses up
//! its own slots and nothing else: the other backends keep their threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use serde_json::{Map, Value};
use std::io::Read;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::App;
use super::config::{Backends, secs};
use super::error::json_headers;
use crate::http::{ClientOptions, HttpClient};

/// Redirects the API backend follows before it gives up.
const MAX_API_REDIRECTS: usize = 5;

/// The API backend's `User-Agent`.
const USER_AGENT: &str = concat!("troika-serve/", env!("CARGO_PKG_VERSION"));

/// Answers bigger than this (file contents, API bodies) are refused.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// What `GET /` calls.
#[derive(Debug)]
pub(crate) struct Fanout {
    file: FileSource,
    db: DbSource,
    api: ApiSource,
}

#[derive(Debug)]
struct Timing {
    delay: Duration,
    timeout: Duration,
    /// The backend's slots: one per call running.
    slots: Arc<Semaphore>,
    capacity: usize,
}

impl Timing {
    fn new(delay_secs: f64, timeout_secs: f64, capacity: usize) -> Timing {
        Timing {
            delay: secs(delay_secs),
            timeout: secs(timeout_secs),
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }
}

#[derive(Debug)]
struct FileSource {
    path: PathBuf,
    timing: Timing,
}

struct DbSource {
    path: PathBuf,
    query: String,
    timing: Timing,
    /// Idle read-only connections, reused across requests.
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl std::fmt::Debug for DbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSource")
            .field("path", &self.path)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ApiSource {
    url: String,
    timing: Timing,
    client: HttpClient,
}

/// Why a backend has no result.
#[derive(Debug)]
struct Failure {
    timed_out: bool,
    message: String,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            timed_out: false,
            message: message.into(),
        }
    }
}

impl Fanout {
    /// Set the backends up: make the demo file and database in `data_dir`
    /// unless the configuration names others. `demo_url` is where this
    /// service serves its demo API, for the default API backend.
    pub(crate) fn new(
        config: &Backends,
        data_dir: &std::path::Path,
        demo_url: &str,
    ) -> anyhow::Result<Fanout> {
        let file_path = match &config.file.path {
            Some(path) => path.clone(),
            None => demo_file(data_dir)?,
        };
        let db_path = match &config.db.path {
            Some(path) => path.clone(),
            None => demo_db(data_dir)?,
        };
        let url = match &config.api.url {
            Some(url) => url.clone(),
            None => demo_url.to_owned(),
        };
        let client = crate::http::client(ClientOptions {
            connect_timeout: None,
            max_idle_per_host: config.api.max_concurrent,
            idle_timeout: Some(Duration::from_secs(30)),
        })
        .context("cannot build the HTTP client")?;
        Ok(Fanout {
            file: FileSource {
                path: file_path,
                timing: Timing::new(
                    config.file.delay_secs,
                    config.file.timeout_secs,
                    config.file.max_concurrent,
                ),
            },
            db: DbSource {
                path: db_path,
                query: config.db.query.clone(),
                timing: Timing::new(
                    config.db.delay_secs,
                    config.db.timeout_secs,
                    config.db.max_concurrent,
                ),
                idle: Arc::default(),
            },
            api: ApiSource {
                url,
                timing: Timing::new(
                    config.api.delay_secs,
                    config.api.timeout_secs,
                    config.api.max_concurrent,
                ),
                client,
            },
        })
    }

    /// Where each backend points, for the startup log.
    pub(crate) fn describe(&self) -> String {
        format!(
            "file {}, db {}, api {}",
            self.file.path.display(),
            self.db.path.display(),
            self.api.url
        )
    }
}

fn demo_file(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("demo.txt");
    if !path.exists() {
        std::fs::write(&path, "file result\n")
            .with_context(|| format!("cannot create the demo file {}", path.display()))?;
    }
    Ok(path)
}

fn demo_db(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("demo.sqlite3");
    let conn = Connection::open(&path)
        .with_context(|| format!("cannot open the demo database {}", path.display()))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS results (name TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT OR IGNORE INTO results (name, value) VALUES ('db', 'db result');",
    )
    .with_context(|| format!("cannot create the demo database {}", path.display()))?;
    Ok(path)
}

/// Wait the backend's delay, then a free slot, then run `work` with the
/// slot, all within the backend's timeout or until `deadline` (the
/// request's), whichever comes first.
async fn timed<W, F>(timing: &Timing, deadline: Instant, work: W) -> Result<Value, Failure>
where
    W: FnOnce(OwnedSemaphorePermit) -> F,
    F: Future<Output = Result<Value, Failure>>,
{
    let own_end = Instant::now() + timing.timeout;
    let by_deadline = deadline < own_end;
    let mut waiting_for_slot = false;
    let run = async {
        tokio::time::sleep(timing.delay).await;
        waiting_for_slot = true;
        let slot = Arc::clone(&timing.slots)
            .acquire_owned()
            .await
            .map_err(|_| Failure::new("the backend is closed"))?;
        waiting_for_slot = false;
        work(slot).await
    };
    let outcome = tokio::time::timeout_at(own_end.min(deadline), run).await;
    match outcome {
        Ok(outcome) => outcome,
        Err(_) => {
            let mut message = if by_deadline {
                "the request deadline passed first".to_owned()
            } else {
                format!("timed out after {} s", timing.timeout.as_secs_f64())
            };
            if waiting_for_slot {
                message.push_str(&format!(
                    " waiting for a free slot: all {} calls to this backend are still running",
                    timing.capacity
                ));
            }
            Err(Failure {
                timed_out: true,
                message,
            })
        }
    }
}

impl FileSource {
    /// Open and read the file in one blocking call (tokio's own file API
    /// would hop to a blocking thread once per read). The slot is held until
    /// the call returns, however long after the timeout that is.
    async fn read(&self, slot: OwnedSemaphorePermit) -> Result<Value, Failure> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = read_small_file(&path);
            drop(slot);
            outcome
        })
        .await
        .map_err(|e| Failure::new(format!("the read task failed: {e}")))?
    }
}

fn read_small_file(path: &std::path::Path) -> Result<Value, Failure> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| Failure::new(format!("cannot open {shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(format!("cannot read {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_ANSWER_BYTES {
        return Err(Failure::new(format!(
            "{shown} is larger than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| Failure::new(format!("{shown} is not UTF-8 text")))?;
    Ok(Value::String(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Interrupts a SQLite query whose caller gave up (timed out).
struct Interrupter {
    handle: Arc<Mutex<Option<InterruptHandle>>>,
    finished: bool,
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        if !self.finished
            && let Some(handle) = self.handle.lock().as_ref()
        {
            handle.interrupt();
        }
    }
}

impl DbSource {
    /// Run the query on a blocking thread (SQLite's calls block), reusing an
    /// idle connection when there is one. A query still running when the
    /// timeout fires is interrupted; the slot is held until it returns.
    async fn query(&self, slot: OwnedSemaphorePermit) -> Result<Value, Failure> {
        let idle = Arc::clone(&self.idle);
        let path = self.path.clone();
        let query = self.query.clone();
        let interrupt_slot: Arc<Mutex<Option<InterruptHandle>>> = Arc::default();
        let mut interrupter = Interrupter {
            handle: Arc::clone(&interrupt_slot),
            finished: false,
        };
        let cached = self.idle.lock().pop();
        let busy = slot;
        let slot = interrupt_slot;
        let task = tokio::task::spawn_blocking(move || {
            let conn = match cached {
                Some(conn) => conn,
                None => Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| Failure::new(format!("cannot open {}: {e}", path.display())))?,
            };
            *slot.lock() = Some(conn.get_interrupt_handle());
            let outcome = run_query(&conn, &query);
            slot.lock().take();
            drop(busy);
            if outcome.is_ok() {
                let mut idle = idle.lock();
                if idle.len() < 64 {
                    idle.push(conn);
                }
            }
            outcome
        });
        let outcome = task
            .await
            .map_err(|e| Failure::new(format!("the query task failed: {e}")))?;
        interrupter.finished = true;
        outcome
    }
}

fn run_query(conn: &Connection, query: &str) -> Result<Value, Failure> {
    let mut statement = conn
        .prepare_cached(query)
        .map_err(|e| Failure::new(format!("bad query: {e}")))?;
    let mut rows = statement
        .query([])
        .map_err(|e| Failure::new(format!("query failed: {e}")))?;
    let row = rows
        .next()
        .map_err(|e| Failure::new(format!("query failed: {e}")))?
        .ok_or_else(|| Failure::new("the query returned no rows"))?;
    let value = row
        .get_ref(0)
        .map_err(|e| Failure::new(format!("query failed: {e}")))?;
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(r) => Value::from(r),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(format!("<{} bytes of blob>", b.len())),
    })
}

impl ApiSource {
    async fn call(&self, _slot: OwnedSemaphorePermit) -> Result<Value, Failure> {
        let response = self.get_following_redirects().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::new(format!("HTTP {status}")));
        }
        let is_json = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut body_stream = response.into_body();
        let mut body = Vec::new();
        while let Some(frame) = body_stream.frame().await {
            let frame = frame.map_err(|e| {
                Failure::new(format!("reading the answer failed: {}", error_chain(&e)))
            })?;
            if let Ok(chunk) = frame.into_data() {
                body.extend_from_slice(&chunk);
            }
            if body.len() as u64 > MAX_ANSWER_BYTES {
                return Err(Failure::new(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
        }
        if is_json {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::new(format!("the answer is not valid JSON: {e}")));
        }
        let text = String::from_utf8_lossy(&body);
        Ok(Value::String(
            text.trim_end_matches(['\n', '\r']).to_owned(),
        ))
    }
}

impl ApiSource {
    /// `GET` the API's URL, following up to [`MAX_API_REDIRECTS`] redirects.
    async fn get_following_redirects(
        &self,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let mut url = url::Url::parse(&self.url)
            .map_err(|e| Failure::new(format!("'{}' is not a URL: {e}", self.url)))?;
        for _ in 0..=MAX_API_REDIRECTS {
            let uri: hyper::Uri = url
                .as_str()
                .parse()
                .map_err(|e| Failure::new(format!("'{url}' is not a URL: {e}")))?;
            let request = hyper::Request::get(uri)
                .header(hyper::header::USER_AGENT, USER_AGENT)
                .header(hyper::header::ACCEPT, "*/*")
                .body(http_body_util::Full::default())
                .map_err(|e| Failure::new(format!("request failed: {e}")))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::new(format!("request failed: {}", error_chain(&e))))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .filter(|next| matches!(next.scheme(), "http" | "https"));
            match next {
                Some(next) => url = next,
                // A 3xx without a usable Location is the answer.
                None => return Ok(response),
            }
        }
        Err(Failure::new(format!(
            "request failed: more than {MAX_API_REDIRECTS} redirects"
        )))
    }
}

/// An error and its causes, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `GET /`.
pub(crate) async fn index(State(app): State<Arc<App>>) -> Response {
    let fanout = &app.fanout;
    // Each backend stops at its own timeout or at the request deadline,
    // whichever comes first: the backends that answered are kept.
    let deadline = Instant::now() + app.deadline;
    let (file, db, api) = tokio::join!(
        timed(&fanout.file.timing, deadline, |slot| fanout.file.read(slot)),
        timed(&fanout.db.timing, deadline, |slot| fanout.db.query(slot)),
        timed(&fanout.api.timing, deadline, |slot| fanout.api.call(slot)),
    );
    let mut body = Map::new();
    let mut errors = Map::new();
    let mut answered = 0;
    let mut timed_out = 0;
    for (name, key, outcome) in [
        ("file", "result_file", file),
        ("db", "result_db", db),
        ("api", "result_api", api),
    ] {
        match outcome {
            Ok(value) => {
                answered += 1;
                app.metrics.backend(name, "ok");
                body.insert(key.to_owned(), value);
            }
            Err(failure) => {
                timed_out += usize::from(failure.timed_out);
                app.metrics.backend(
                    name,
                    if failure.timed_out {
                        "timeout"
                    } else {
                        "error"
                    },
                );
                tracing::warn!(backend = name, error = %failure.message, "backend failed");
                body.insert(key.to_owned(), Value::Null);
                errors.insert(name.to_owned(), Value::String(failure.message));
            }
        }
    }
    if !errors.is_empty() {
        body.insert("errors".to_owned(), Value::Object(errors));
    }
    let status = if answered > 0 {
        StatusCode::OK
    } else if timed_out == 3 {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, json_headers(), Value::Object(body).to_string()).into_response()
}

/// `GET /demo/api`: the default target of the API backend.
pub(crate) async fn demo_api() -> &'static str {
    "api result"
}
