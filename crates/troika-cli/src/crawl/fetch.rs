//! Fetching one URL: limits, retries with backoff, redirects, a streamed
//! body cut off at `--max-bytes`.
//!
//! Requests go over the crawl's own keep-alive connections ([`super::pool`],
//! through the command's connector in [`crate::http`]); redirects are
//! followed here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, HeaderMap,
    HeaderValue, LOCATION, PROXY_AUTHORIZATION, TRANSFER_ENCODING, USER_AGENT, WWW_AUTHENTICATE,
};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, StatusCode, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::{Position, Url};

use super::pool::{Origin, Pool};
use super::record::{Failure, FailureKind, Record, millis};

/// What every fetch shares: the client, the limits and the options.
#[derive(Debug)]
pub(crate) struct Fetcher {
    pool: Pool,
    method: Method,
    /// The request headers: the user's, then a user agent and `Accept`
    /// unless the user gave them.
    headers: HeaderMap,
    body: Option<Bytes>,
    max_redirects: usize,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_bytes: u64,
    concurrency: usize,
    /// Bounds requests in flight when tasks may wait for a host (see
    /// [`Fetcher::window`]); without host limits the caller's window does.
    global: Option<Arc<Semaphore>>,
    hosts: Hosts,
}

/// The fetch options, already validated.
#[derive(Debug, Clone)]
pub(crate) struct FetchOptions {
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<String>,
    pub(crate) user_agent: String,
    pub(crate) concurrency: usize,
    pub(crate) per_host: Option<usize>,
    pub(crate) rate_per_host: Option<f64>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) max_redirects: usize,
}

/// A redirect that is not followed.
#[derive(Debug)]
enum Refusal {
    Limit(usize),
    Scheme(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Limit(max) => write!(f, "redirect limit ({max}) exceeded"),
            Refusal::Scheme(scheme) => write!(f, "redirect to scheme '{scheme}' not allowed"),
        }
    }
}

impl Refusal {
    fn kind(&self) -> FailureKind {
        match self {
            Refusal::Limit(_) => FailureKind::RedirectLimit,
            Refusal::Scheme(_) => FailureKind::SchemeNotAllowed,
        }
    }
}

/// Per-host concurrency limits and request spacing, keyed by `host:port`.
///
/// A host's entry lives while a fetch holds it or its next turn under the
/// rate limit is still ahead; the table is swept of other entries whenever it
/// doubles, so a crawl over millions of hosts keeps only the busy ones.
#[derive(Debug)]
struct Hosts {
    per_host: Option<usize>,
    interval: Option<Duration>,
    table: Mutex<HostTable>,
}

#[derive(Debug, Default)]
struct HostTable {
    hosts: HashMap<String, Arc<HostState>>,
    /// Sweep when the table grows past this.
    sweep_at: usize,
}

/// The table is never swept below this size.
const MIN_SWEEP: usize = 1024;

#[derive(Debug)]
struct HostState {
    permits: Option<Arc<Semaphore>>,
    /// The earliest start of the next request to this host (rate limit).
    next_start: Mutex<Instant>,
}

impl Hosts {
    /// Whether any request may have to wait for its host.
    fn limited(&self) -> bool {
        self.per_host.is_some() || self.interval.is_some()
    }

    fn state(&self, key: &str) -> Arc<HostState> {
        let mut table = lock(&self.table);
        if let Some(state) = table.hosts.get(key) {
            return Arc::clone(state);
        }
        if table.hosts.len() >= table.sweep_at.max(MIN_SWEEP) {
            let now = Instant::now();
            // Held by a fetch, its per-host semaphore held or awaited by
            // one, or spacing a future request: keep. Anything else is
            // recreated as new if its host comes back.
            table.hosts.retain(|_, state| {
                Arc::strong_count(state) > 1
                    || state
                        .permits
                        .as_ref()
                        .is_some_and(|p| Arc::strong_count(p) > 1)
                    || *lock(&state.next_start) > now
            });
            table.sweep_at = table.hosts.len() * 2;
        }
        let state = Arc::new(HostState {
            permits: self.per_host.map(|n| Arc::new(Semaphore::new(n))),
            next_start: Mutex::new(Instant::now()),
        });
        table.hosts.insert(key.to_owned(), Arc::clone(&state));
        state
    }

    /// Hosts in the table now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).hosts.len()
    }

    /// Wait for a per-host slot, then for this host's next turn under the
    /// rate limit. The permit (if any) is held for the whole attempt.
    async fn admit(&self, key: &str) -> Option<OwnedSemaphorePermit> {
        let state = self.state(key);
        let permit = match &state.permits {
            // The semaphore is never closed, so acquiring cannot fail.
            Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
            None => None,
        };
        if let Some(interval) = self.interval {
            let start = {
                let mut next = lock(&state.next_start);
                let start = (*next).max(Instant::now());
                *next = start + interval;
                start
            };
            tokio::time::sleep_until(start.into()).await;
        }
        permit
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request's result, before retries are decided.
struct Attempt {
    status: Option<u16>,
    bytes: u64,
    final_url: Option<Url>,
    warning: Option<&'static str>,
    failure: Option<(Failure, bool)>,
}

/// What an attempt has received so far. The attempt writes it as responses
/// and body chunks arrive, so a timeout that cuts the attempt short still
/// knows the status and the bytes that had arrived.
#[derive(Default)]
struct Progress {
    /// The status of the last response that arrived (a redirect's, until
    /// the final one arrives).
    status: Option<u16>,
    /// Body bytes of that response received so far.
    bytes: u64,
    /// The URL that gave that response.
    final_url: Option<Url>,
    warning: Option<&'static str>,
}

/// A failure and whether retrying may help.
type Failed = Option<(Failure, bool)>;

impl Attempt {
    fn retryable(&self) -> bool {
        match &self.failure {
            Some((_, retryable)) => *retryable,
            None => self.status.is_some_and(|s| s >= 500),
        }
    }
}

impl Fetcher {
    /// Build the HTTP client and the limits.
    pub(crate) fn new(options: FetchOptions) -> anyhow::Result<Fetcher> {
        let hosts = Hosts {
            per_host: options.per_host,
            interval: options
                .rate_per_host
                .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok()),
            table: Mutex::default(),
        };
        // As many idle connections as requests in flight: the connection
        // a request gives back is the next one's.
        let pool = Pool::new(
            crate::http::connector(Some(options.connect_timeout))?,
            options.concurrency,
        );
        let mut headers = options.headers;
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, HeaderValue::from_str(&options.user_agent)?);
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        Ok(Fetcher {
            pool,
            method: options.method,
            headers,
            body: options.body.map(Bytes::from),
            max_redirects: options.max_redirects,
            timeout: options.timeout,
            retries: options.retries,
            backoff: options.backoff,
            max_bytes: options.max_bytes,
            concurrency: options.concurrency,
            global: hosts
                .limited()
                .then(|| Arc::new(Semaphore::new(options.concurrency))),
            hosts,
        })
    }

    /// How many fetches the caller should run at once. Without host limits
    /// that is `--concurrency` itself, and the caller's bound is the only
    /// one (a semaphore would only add a lock to every request). With them,
    /// some tasks more, so a few can wait for a busy host's turn without
    /// idling the other hosts; the fetcher's own semaphore then keeps the
    /// requests in flight to `--concurrency`.
    pub(crate) fn window(&self) -> usize {
        if self.global.is_some() {
            self.concurrency.saturating_add(64)
        } else {
            self.concurrency
        }
    }

    /// Fetch one input line and describe the outcome. Never fails: every
    /// problem becomes the record's error.
    pub(crate) async fn fetch(&self, line: &str) -> Record {
        let url = match parse_url(line) {
            Ok(url) => url,
            Err(failure) => return Record::failed(line.to_owned(), failure),
        };
        let host_key = self.hosts.limited().then(|| {
            format!(
                "{}:{}",
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or(0)
            )
        });
        let mut attempts = 0u32;
        // Timed from the first request, not from the wait for a slot.
        let mut started = None;
        let last = loop {
            attempts += 1;
            let attempt = {
                let _host = match &host_key {
                    Some(key) => self.hosts.admit(key).await,
                    None => None,
                };
                // Never closed, so this only fails if the crawl is torn down.
                let _slot = match &self.global {
                    Some(global) => Arc::clone(global).acquire_owned().await.ok(),
                    None => None,
                };
                started.get_or_insert_with(Instant::now);
                let mut progress = Progress::default();
                let outcome =
                    tokio::time::timeout(self.timeout, self.attempt(url.clone(), &mut progress))
                        .await;
                let failure = outcome.unwrap_or_else(|_| {
                    // What had arrived before the deadline stays in the record.
                    Some((
                        Failure::new(
                            FailureKind::Timeout,
                            format!("timed out after {}", seconds(self.timeout)),
                        ),
                        true,
                    ))
                });
                Attempt {
                    status: progress.status,
                    bytes: progress.bytes,
                    final_url: progress.final_url,
                    warning: progress.warning,
                    failure,
                }
            };
            if attempts > self.retries || !attempt.retryable() {
                break attempt;
            }
            tokio::time::sleep(self.backoff_for(attempts)).await;
        };
        let (error, error_kind) = match last.failure {
            Some((failure, _)) => (Some(failure.message), Some(failure.kind)),
            None => (None, None),
        };
        Record {
            url: line.to_owned(),
            status: last.status,
            bytes: last.bytes,
            elapsed_ms: started.map_or(0.0, |t| millis(t.elapsed())),
            error,
            error_kind,
            attempts,
            final_url: last.final_url.filter(|u| *u != url).map(String::from),
            warning: last.warning,
        }
    }

    /// Exponential backoff with jitter: base × 2^(n-1) × [0.5, 1.5), capped at 30 s.
    fn backoff_for(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let jitter = 0.5 + f64::from(jitter_seed() % 1000) / 1000.0;
        exp.mul_f64(jitter).min(Duration::from_secs(30))
    }

    /// One request, with its redirects, and its body read to the end or
    /// to `--max-bytes`. What arrives is written to `progress` as it
    /// arrives; the result is the failure, if any.
    async fn attempt(&self, mut url: Url, progress: &mut Progress) -> Failed {
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        let mut headers = Cow::Borrowed(&self.headers);
        let mut redirects = 0;
        let (response, mut lease) = loop {
            let (request, origin) = match request(&method, &url, &headers, body.clone()) {
                Ok(request) => request,
                Err(failure) => return Some((failure, false)),
            };
            // A redirect's connection is dropped with its unread body,
            // which closes it.
            let (response, lease) = match self.pool.send(origin, request).await {
                Ok(sent) => sent,
                Err(e) => return Some(classify(e.error(), e.is_connect())),
            };
            let status = response.status();
            let Some(target) = redirect_target(&url, status, response.headers()) else {
                break (response, lease);
            };
            let refusal = if !matches!(target.scheme(), "http" | "https") {
                Some(Refusal::Scheme(target.scheme().to_owned()))
            } else if redirects == self.max_redirects {
                Some(Refusal::Limit(self.max_redirects))
            } else {
                None
            };
            progress.status = Some(status.as_u16());
            if let Some(refusal) = refusal {
                progress.final_url = Some(url);
                return Some((Failure::new(refusal.kind(), refusal.to_string()), false));
            }
            redirects += 1;
            // As browsers do: 301, 302 and 303 go on without the body (as a
            // GET unless it was a HEAD); 307 and 308 repeat the request.
            if matches!(
                status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
            ) {
                body = None;
                if method != Method::HEAD {
                    method = Method::GET;
                }
                let headers = headers.to_mut();
                for name in [
                    CONTENT_TYPE,
                    CONTENT_LENGTH,
                    CONTENT_ENCODING,
                    TRANSFER_ENCODING,
                ] {
                    headers.remove(name);
                }
            }
            // Credentials stay with the host they were meant for.
            if (target.host_str(), target.port_or_known_default())
                != (url.host_str(), url.port_or_known_default())
            {
                let headers = headers.to_mut();
                for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE] {
                    headers.remove(name);
                }
            }
            // The redirect is the last response until the next one arrives.
            progress.final_url = Some(std::mem::replace(&mut url, target));
        };
        progress.status = Some(response.status().as_u16());
        progress.final_url = Some(url);
        let (parts, mut incoming) = response.into_parts();
        let charset = Charset::of(&parts.headers);
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            Some((
                Failure::new(
                    FailureKind::TooLarge,
                    format!("too large (more than {} bytes)", self.max_bytes),
                ),
                false,
            ))
        };
        if declared.is_some_and(|n| n > self.max_bytes) {
            return too_large();
        }
        let mut utf8 = Utf8Check::default();
        // The first bytes of a page that may name its charset in a <meta>
        // tag, looked at only if it is not UTF-8. A copy: holding on to the
        // chunk itself would pin the connection's whole read buffer while a
        // long body streams past.
        let mut head = Vec::new();
        loop {
            match lease.frame(&mut incoming).await.transpose() {
                Ok(Some(frame)) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers
                    };
                    let room = self.max_bytes - progress.bytes;
                    let len = chunk.len() as u64;
                    if len > room {
                        // Cut off here: the rest is never read.
                        progress.bytes = self.max_bytes;
                        return too_large();
                    }
                    progress.bytes += len;
                    if charset != Charset::Other {
                        utf8.feed(&chunk);
                        if charset == Charset::Markup && head.len() < PRESCAN {
                            let take = chunk.len().min(PRESCAN - head.len());
                            head.reserve_exact(PRESCAN);
                            head.extend_from_slice(&chunk[..take]);
                        }
                    }
                }
                Ok(None) => {
                    // Read to its end: the connection can serve the next
                    // request. (Cut off or failed, it is dropped: closed.)
                    self.pool.release(lease);
                    break;
                }
                Err(e) => return Some(classify(&e, false)),
            }
        }
        if charset == Charset::Other || utf8.finish() {
            return None;
        }
        let in_meta = meta_charset(&head);
        match (charset, in_meta) {
            (Charset::Utf8, _) => Some((
                Failure::new(
                    FailureKind::InvalidUtf8,
                    "body is not valid UTF-8 (the response declares UTF-8)",
                ),
                false,
            )),
            (_, Some(label)) if is_utf8_label(&label) => Some((
                Failure::new(
                    FailureKind::InvalidUtf8,
                    "body is not valid UTF-8 (its <meta> tag declares UTF-8)",
                ),
                false,
            )),
            // The page names its own charset: nothing to say.
            (_, Some(_)) => None,
            _ => {
                progress.warning = Some(NO_CHARSET);
                None
            }
        }
    }
}

/// The warning for a text body that is not UTF-8 and names no charset.
const NO_CHARSET: &str =
    "body is not valid UTF-8 and names no charset; a browser would read it as windows-1252";

/// Parse an input line; only http and https URLs with a host are fetched.
fn parse_url(line: &str) -> Result<Url, Failure> {
    let url = Url::parse(line)
        .map_err(|e| Failure::new(FailureKind::InvalidUrl, format!("invalid URL: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(Failure::new(
                FailureKind::SchemeNotAllowed,
                format!("scheme '{other}' not allowed (only http and https)"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Failure::new(
            FailureKind::InvalidUrl,
            "invalid URL: no host",
        ));
    }
    Ok(url)
}

/// What a response says about its body's encoding, which decides how a body
/// that is not UTF-8 is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charset {
    /// Declared UTF-8: a UTF-8 (or ASCII) charset parameter, or JSON, which
    /// is UTF-8 by definition (RFC 8259). A body that is not UTF-8 is an
    /// `invalid_utf8` error.
    Utf8,
    /// HTML, or no media type at all, with no charset parameter: the page
    /// may name its charset in a `<meta>` tag; if it names none, a body that
    /// is not UTF-8 is a page with a warning (a browser falls back to
    /// windows-1252 and shows it).
    Markup,
    /// Other text (plain, XML, JavaScript, …) with no charset parameter: a
    /// body that is not UTF-8 is a page with a warning.
    Text,
    /// A binary type or another charset: the bytes are counted, not checked.
    Other,
}

impl Charset {
    fn of(headers: &HeaderMap) -> Charset {
        let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return Charset::Markup;
        };
        let value = value.to_ascii_lowercase();
        let mut parts = value.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let json = media.ends_with("/json") || media.ends_with("+json");
        let textual = json
            || media.starts_with("text/")
            || media.ends_with("xml")
            || media.ends_with("javascript");
        if !textual {
            return Charset::Other;
        }
        let mut labels = parts.filter_map(|p| p.strip_prefix("charset="));
        match labels.next() {
            Some(label) if is_utf8_label(label.trim_matches('"')) => Charset::Utf8,
            Some(_) => Charset::Other,
            None if json => Charset::Utf8,
            None if media == "text/html" || media == "application/xhtml+xml" => Charset::Markup,
            None => Charset::Text,
        }
    }
}

fn is_utf8_label(label: &str) -> bool {
    matches!(
        label.to_ascii_lowercase().as_str(),
        "utf-8" | "utf8" | "unicode-1-1-utf-8" | "us-ascii"
    )
}

/// How far into a page a browser looks for a `<meta>` charset.
const PRESCAN: usize = 1024;

/// The charset a `<meta charset=…>` or `<meta http-equiv=… content="…;
/// charset=…">` tag in the first [`PRESCAN`] bytes names, as a browser's
/// prescan finds it.
fn meta_charset(head: &[u8]) -> Option<String> {
    let head = head[..head.len().min(PRESCAN)].to_ascii_lowercase();
    let mut rest = &head[..];
    while let Some(at) = find(rest, b"<meta") {
        let tag = &rest[at + 5..];
        let end = tag.iter().position(|&b| b == b'>').unwrap_or(tag.len());
        if let Some(label) = find(&tag[..end], b"charset").and_then(|c| {
            let value = tag[c + 7..end].trim_ascii_start().strip_prefix(b"=")?;
            let value = value.trim_ascii_start();
            let value = value
                .strip_prefix(b"\"")
                .or_else(|| value.strip_prefix(b"'"))
                .unwrap_or(value);
            let len = value
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
                .unwrap_or(value.len());
            (len > 0).then(|| String::from_utf8_lossy(&value[..len]).into_owned())
        }) {
            return Some(label);
        }
        rest = &tag[end..];
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Incremental UTF-8 validation across chunk boundaries.
#[derive(Default)]
struct Utf8Check {
    carry: Vec<u8>,
    bad: bool,
}

impl Utf8Check {
    fn feed(&mut self, chunk: &[u8]) {
        if self.bad {
            return;
        }
        let mut joined;
        let data = if self.carry.is_empty() {
            chunk
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            &joined[..]
        };
        match std::str::from_utf8(data) {
            Ok(_) => {}
            // An incomplete sequence at the end: keep it for the next chunk.
            Err(e) if e.error_len().is_none() => {
                self.carry = data[e.valid_up_to()..].to_vec();
            }
            Err(_) => self.bad = true,
        }
    }

    /// True if everything fed was valid UTF-8.
    fn finish(self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

/// The request for `url` and the origin to send it to: origin-form on the
/// wire, with a `Host` header (unless the user gave one); credentials in
/// the URL become a Basic `Authorization` header.
fn request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<(Request<Full<Bytes>>, Origin), Failure> {
    let has_credentials = !url.username().is_empty() || url.password().is_some();
    let target = if has_credentials {
        Cow::Owned(format!(
            "{}://{}",
            url.scheme(),
            &url[Position::BeforeHost..Position::AfterQuery]
        ))
    } else {
        Cow::Borrowed(&url[..Position::AfterQuery]) // no fragment
    };
    let invalid = |e: &dyn std::fmt::Display| {
        Failure::new(FailureKind::InvalidUrl, format!("invalid URL: {e}"))
    };
    let uri: Uri = target.parse().map_err(|e| invalid(&e))?;
    let parts = uri.into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(invalid(&"no host"));
    };
    let path = parts
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut request = Request::new(Full::new(body.unwrap_or_default()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from(path);
    *request.headers_mut() = headers.clone();
    if !headers.contains_key(HOST) {
        // Without its port when it is the scheme's default (`Url` drops it).
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| invalid(&e))?;
        request.headers_mut().insert(HOST, host);
    }
    if has_credentials && !headers.contains_key(AUTHORIZATION) {
        let user = percent_decode(url.username());
        let password = percent_decode(url.password().unwrap_or_default());
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|e| Failure::new(FailureKind::Request, format!("bad request: {e}")))?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    Ok((request, (scheme, authority)))
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// Where a redirect points, resolved against the URL that answered; `None`
/// for any other response (including a 3xx without a usable `Location`,
/// which is the page itself).
fn redirect_target(url: &Url, status: StatusCode, headers: &HeaderMap) -> Option<Url> {
    if !matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = headers.get(LOCATION)?.to_str().ok()?;
    url.join(location).ok()
}

/// Turn a client error into a failure, and say whether retrying may help
/// (connection errors and timeouts may; nothing else here does).
fn classify(e: &(dyn std::error::Error + 'static), connecting: bool) -> (Failure, bool) {
    let mut source = Some(e);
    let mut io_kind = None;
    let mut root = e.to_string();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        root = err.to_string();
        source = err.source();
    }
    let message = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => {
            return (
                Failure::new(FailureKind::Timeout, "connect timed out"),
                true,
            );
        }
        _ if connecting => format!("connection failed: {root}"),
        _ => format!("connection error: {root}"),
    };
    (Failure::new(FailureKind::Connect, message), true)
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A cheap source of jitter for backoff; quality does not matter here.
fn jitter_seed() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_table_keeps_only_busy_hosts() {
        let hosts = Hosts {
            per_host: Some(1),
            interval: None,
            table: Mutex::default(),
        };
        // A host whose permit is held, and one whose state a fetch holds.
        let busy = hosts.state("busy:80");
        let permit = Arc::clone(busy.permits.as_ref().unwrap())
            .try_acquire_owned()
            .unwrap();
        drop(busy);
        let held = hosts.state("held:80");
        for i in 0..10 * MIN_SWEEP {
            hosts.state(&format!("host{i}:80"));
        }
        assert!(hosts.len() <= 2 * MIN_SWEEP, "{} hosts kept", hosts.len());
        // The busy host kept its semaphore: its one slot is still taken.
        let again = hosts.state("busy:80");
        assert!(
            again.permits.as_ref().unwrap().available_permits() == 0,
            "a swept host got a fresh semaphore while a fetch held its slot"
        );
        drop(permit);
        assert!(Arc::ptr_eq(&held, &hosts.state("held:80")));
    }

    #[test]
    fn utf8_split_across_chunks_is_valid() {
        let text = "héllo wörld 你好".as_bytes();
        for cut in 0..text.len() {
            let mut check = Utf8Check::default();
            check.feed(&text[..cut]);
            check.feed(&text[cut..]);
            assert!(check.finish(), "cut at {cut}");
        }
        let mut check = Utf8Check::default();
        check.feed(b"caf\xe9 latin-1");
        assert!(!check.finish());
        let mut check = Utf8Check::default();
        check.feed(b"truncated \xe4\xbd");
        assert!(!check.finish());
    }

    #[test]
    fn only_http_and_https_with_a_host() {
        assert!(parse_url("http://example.com/").is_ok());
        assert!(parse_url("https://example.com/x?y").is_ok());
        assert_eq!(
            parse_url("ftp://example.com/").unwrap_err().kind,
            FailureKind::SchemeNotAllowed
        );
        assert_eq!(
            parse_url("not a url").unwrap_err().kind,
            FailureKind::InvalidUrl
        );
        assert_eq!(
            parse_url("http://").unwrap_err().kind,
            FailureKind::InvalidUrl
        );
    }

    #[test]
    fn requests_leave_fragments_and_credentials_off_the_wire() {
        let headers = HeaderMap::new();
        let url = Url::parse("http://u:p@example.com:8080/a/b?q=1#frag").unwrap();
        let (get, origin) = request(&Method::GET, &url, &headers, None).unwrap();
        assert_eq!(get.uri(), "/a/b?q=1");
        assert_eq!(get.headers()[HOST], "example.com:8080");
        assert_eq!(get.headers()[AUTHORIZATION], "Basic dTpw");
        assert_eq!(origin.0, hyper::http::uri::Scheme::HTTP);
        assert_eq!(origin.1, "example.com:8080");
        let url = Url::parse("https://example.com:443/x#frag").unwrap();
        let (head, origin) = request(&Method::HEAD, &url, &headers, None).unwrap();
        assert_eq!(head.uri(), "/x");
        assert_eq!(head.headers()[HOST], "example.com");
        assert_eq!(origin.1, "example.com");
        assert!(!head.headers().contains_key(AUTHORIZATION));
        // A Host header the user gave is sent as given.
        let mut given = HeaderMap::new();
        given.insert(HOST, HeaderValue::from_static("virtual.example"));
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        let (get, origin) = request(&Method::GET, &url, &given, None).unwrap();
        assert_eq!(get.headers()[HOST], "virtual.example");
        assert_eq!(origin.1, "127.0.0.1:8080");
    }

    #[test]
    fn only_following_statuses_with_a_location_redirect() {
        let base = Url::parse("http://a.example/dir/page").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(redirect_target(&base, StatusCode::FOUND, &headers), None);
        headers.insert(LOCATION, HeaderValue::from_static("../other"));
        let target = redirect_target(&base, StatusCode::SEE_OTHER, &headers).unwrap();
        assert_eq!(target.as_str(), "http://a.example/other");
        for status in [
            StatusCode::OK,
            StatusCode::NOT_MODIFIED,
            StatusCode::MULTIPLE_CHOICES,
        ] {
            assert_eq!(redirect_target(&base, status, &headers), None, "{status}");
        }
    }

    #[test]
    fn the_media_type_and_charset_decide_how_a_body_is_checked() {
        let of = |value: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            }
            Charset::of(&headers)
        };
        assert_eq!(of(None), Charset::Markup);
        assert_eq!(of(Some("text/html")), Charset::Markup);
        assert_eq!(of(Some("text/html; charset=utf-8")), Charset::Utf8);
        assert_eq!(of(Some("text/html; charset=\"UTF-8\"")), Charset::Utf8);
        assert_eq!(of(Some("text/html; charset=iso-8859-1")), Charset::Other);
        assert_eq!(of(Some("text/plain")), Charset::Text);
        assert_eq!(of(Some("application/json")), Charset::Utf8);
        assert_eq!(of(Some("application/ld+json")), Charset::Utf8);
        assert_eq!(of(Some("image/png")), Charset::Other);
    }

    #[test]
    fn a_meta_tag_names_the_charset_as_a_browser_prescan_finds_it() {
        assert_eq!(
            meta_charset(b"<html><head><META Charset=\"ISO-8859-1\"><title>"),
            Some("iso-8859-1".to_owned())
        );
        assert_eq!(
            meta_charset(
                b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\">"
            ),
            Some("windows-1252".to_owned())
        );
        assert_eq!(meta_charset(b"<meta name=x><p>charset=koi8-r</p>"), None);
        assert_eq!(meta_charset(b"<meta charset=>"), None);
        let mut late = vec![b' '; 1024];
        late.extend_from_slice(b"<meta charset=latin1>");
        assert_eq!(meta_charset(&late), None, "only the first 1024 bytes");
    }
}
