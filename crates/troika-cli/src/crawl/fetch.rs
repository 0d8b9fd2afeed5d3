//! Fetching one URL: limits, retries with backoff, redirects, a streamed
//! body cut off at `--max-bytes`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Client, Method, Url};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::record::{Failure, FailureKind, Record, millis};

/// What every fetch shares: the client, the limits and the options.
#[derive(Debug)]
pub(crate) struct Fetcher {
    client: Client,
    method: Method,
    headers: HeaderMap,
    body: Option<String>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_bytes: u64,
    global: Arc<Semaphore>,
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

/// A redirect the policy refused; found again in the error's source chain.
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

impl std::error::Error for Refusal {}

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
    failure: Option<(Failure, bool)>,
}

impl Attempt {
    fn failed(failure: Failure, retryable: bool) -> Attempt {
        Attempt {
            status: None,
            bytes: 0,
            final_url: None,
            failure: Some((failure, retryable)),
        }
    }

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
        let max_redirects = options.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let scheme = attempt.url().scheme().to_owned();
            if scheme != "http" && scheme != "https" {
                attempt.error(Refusal::Scheme(scheme))
            } else if attempt.previous().len() > max_redirects {
                attempt.error(Refusal::Limit(max_redirects))
            } else {
                attempt.follow()
            }
        });
        let client = Client::builder()
            .redirect(policy)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(options.concurrency)
            .build()?;
        Ok(Fetcher {
            client,
            method: options.method,
            headers: options.headers,
            body: options.body,
            timeout: options.timeout,
            retries: options.retries,
            backoff: options.backoff,
            max_bytes: options.max_bytes,
            global: Arc::new(Semaphore::new(options.concurrency)),
            hosts: Hosts {
                per_host: options.per_host,
                interval: options
                    .rate_per_host
                    .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok()),
                table: Mutex::default(),
            },
        })
    }

    /// Fetch one input line and describe the outcome. Never fails: every
    /// problem becomes the record's error.
    pub(crate) async fn fetch(&self, line: &str) -> Record {
        let url = match parse_url(line) {
            Ok(url) => url,
            Err(failure) => return Record::failed(line.to_owned(), failure),
        };
        let host_key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut attempts = 0u32;
        // Timed from the first request, not from the wait for a slot.
        let mut started = None;
        let last = loop {
            attempts += 1;
            let attempt = {
                let _host = self.hosts.admit(&host_key).await;
                // Never closed, so this only fails if the crawl is torn down.
                let _slot = Arc::clone(&self.global).acquire_owned().await.ok();
                started.get_or_insert_with(Instant::now);
                match tokio::time::timeout(self.timeout, self.attempt(url.clone())).await {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::failed(
                        Failure::new(
                            FailureKind::Timeout,
                            format!("timed out after {}", seconds(self.timeout)),
                        ),
                        true,
                    ),
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

    async fn attempt(&self, url: Url) -> Attempt {
        let mut request = self
            .client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let (failure, retryable) = classify(&e, self.timeout);
                return Attempt::failed(failure, retryable);
            }
        };
        let status = response.status().as_u16();
        let final_url = Some(response.url().clone());
        // The client hands back (instead of following) a redirect to a scheme
        // it cannot fetch: refuse it here.
        if response.status().is_redirection()
            && let Some(target) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| response.url().join(v).ok())
            && !matches!(target.scheme(), "http" | "https")
        {
            let refusal = Refusal::Scheme(target.scheme().to_owned());
            return Attempt {
                status: Some(status),
                bytes: 0,
                final_url,
                failure: Some((Failure::new(refusal.kind(), refusal.to_string()), false)),
            };
        }
        let check_utf8 = is_utf8_text(response.headers());
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |bytes| Attempt {
            status: Some(status),
            bytes,
            final_url: final_url.clone(),
            failure: Some((
                Failure::new(
                    FailureKind::TooLarge,
                    format!("too large (more than {} bytes)", self.max_bytes),
                ),
                false,
            )),
        };
        if declared.is_some_and(|n| n > self.max_bytes) {
            return too_large(0);
        }
        let mut bytes = 0u64;
        let mut utf8 = Utf8Check::default();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_bytes - bytes;
                    let len = chunk.len() as u64;
                    if len > room {
                        // Cut off here: the rest is never read.
                        return too_large(self.max_bytes);
                    }
                    bytes += len;
                    if check_utf8 {
                        utf8.feed(&chunk);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let (failure, retryable) = classify(&e, self.timeout);
                    return Attempt {
                        status: Some(status),
                        bytes,
                        final_url,
                        failure: Some((failure, retryable)),
                    };
                }
            }
        }
        let failure = (check_utf8 && !utf8.finish()).then(|| {
            (
                Failure::new(FailureKind::InvalidUtf8, "body is not valid UTF-8"),
                false,
            )
        });
        Attempt {
            status: Some(status),
            bytes,
            final_url,
            failure,
        }
    }
}

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

/// Whether the body is declared (or assumed) to be UTF-8 text: a text-like
/// media type (or none) with no charset or a UTF-8 one. Binary types and
/// other charsets are counted, not checked.
fn is_utf8_text(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.to_ascii_lowercase();
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    let textual = media.starts_with("text/")
        || media.ends_with("json")
        || media.ends_with("+json")
        || media.ends_with("xml")
        || media.ends_with("javascript");
    let charset_ok = parts
        .filter_map(|p| p.strip_prefix("charset="))
        .all(|c| matches!(c.trim_matches('"'), "utf-8" | "utf8" | "us-ascii"));
    textual && charset_ok
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

/// Turn a client error into a failure, and say whether retrying may help.
fn classify(e: &reqwest::Error, timeout: Duration) -> (Failure, bool) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    let mut root = e.to_string();
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return (Failure::new(refusal.kind(), refusal.to_string()), false);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        root = err.to_string();
        source = err.source();
    }
    if e.is_timeout() {
        return (
            Failure::new(
                FailureKind::Timeout,
                format!("timed out after {}", seconds(timeout)),
            ),
            true,
        );
    }
    if e.is_builder() {
        return (
            Failure::new(FailureKind::Request, format!("bad request: {root}")),
            false,
        );
    }
    if e.is_redirect() {
        return (
            Failure::new(
                FailureKind::RedirectLimit,
                format!("redirect error: {root}"),
            ),
            false,
        );
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
        _ if e.is_connect() => format!("connection failed: {root}"),
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
    fn text_types_are_checked_binary_are_not() {
        let mut headers = HeaderMap::new();
        assert!(is_utf8_text(&headers));
        headers.insert(CONTENT_TYPE, "text/html; charset=utf-8".parse().unwrap());
        assert!(is_utf8_text(&headers));
        headers.insert(
            CONTENT_TYPE,
            "text/html; charset=iso-8859-1".parse().unwrap(),
        );
        assert!(!is_utf8_text(&headers));
        headers.insert(CONTENT_TYPE, "image/png".parse().unwrap());
        assert!(!is_utf8_text(&headers));
        headers.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(is_utf8_text(&headers));
    }
}
