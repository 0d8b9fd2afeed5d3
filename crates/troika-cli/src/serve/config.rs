//! The TOML configuration of `troika serve` (`--config FILE`).
//!
//! Every key is optional; a missing key keeps its default, an unknown key or a
//! value out of range is an error that names it. Flags on the command line win
//! over the file.
//!
//! ```toml
//! [server]
//! host = "127.0.0.1"
//! port = 8000
//! pool = "processes"            # or "threads"
//! workers = 2
//! data_dir = "/var/lib/troika"  # where the demo file and database live
//! shutdown_grace_secs = 10
//! log_requests = true
//!
//! [limits]
//! max_get_numbers = 1000
//! max_post_numbers = 100000
//! request_deadline_secs = 10
//! header_read_timeout_secs = 10
//! pool_queue_capacity = 1024
//! max_in_flight = 4096
//! max_head_bytes = 32768
//! body_budget_bytes = 67108864
//!
//! [backends.file]
//! path = "/etc/hostname"        # default: demo.txt in data_dir
//! delay_secs = 0.1
//! timeout_secs = 1
//! max_concurrent = 64
//!
//! [backends.db]
//! path = "demo.sqlite3"         # default: demo.sqlite3 in data_dir
//! query = "SELECT value FROM results WHERE name = 'db'"
//! delay_secs = 0.2
//! timeout_secs = 1
//! max_concurrent = 64
//!
//! [backends.api]
//! url = "https://example.com/"  # default: this service's /demo/api
//! delay_secs = 0.3
//! timeout_secs = 1
//! max_concurrent = 256
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) server: ServerConfig,
    #[serde(default)]
    pub(crate) limits: Limits,
    #[serde(default)]
    pub(crate) backends: Backends,
    /// Fault injection for tests of the error paths; not for production use.
    #[serde(default)]
    pub(crate) faults: Faults,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) pool: Option<String>,
    pub(crate) workers: Option<usize>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) shutdown_grace_secs: f64,
    pub(crate) log_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: None,
            port: None,
            pool: None,
            workers: None,
            data_dir: None,
            shutdown_grace_secs: 10.0,
            log_requests: true,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// The most numbers one `GET /is_prime/…` may ask about.
    pub(crate) max_get_numbers: usize,
    /// The most numbers one `POST /is_prime` may ask about.
    pub(crate) max_post_numbers: usize,
    /// A request still unanswered after this long gets a 504.
    pub(crate) request_deadline_secs: f64,
    /// A client must send its request head within this long (slowloris).
    pub(crate) header_read_timeout_secs: f64,
    /// Pool tasks waiting at most; past it requests are shed with 503.
    pub(crate) pool_queue_capacity: usize,
    /// Requests being served at most; past it requests are shed with 503.
    pub(crate) max_in_flight: usize,
    /// A request head (request line and headers) at most, in bytes; past it,
    /// 431. Also what one connection may buffer of an unfinished head.
    pub(crate) max_head_bytes: usize,
    /// Request bodies held in memory at once, in bytes, over all requests;
    /// a body that does not fit is refused with 503.
    pub(crate) body_budget_bytes: usize,
}

impl Limits {
    /// The largest `POST /is_prime` body: 32 bytes a number (20 digits,
    /// quotes, a comma and spaces) and 4 KiB of slack.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_post_numbers
            .saturating_mul(32)
            .saturating_add(4096)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_get_numbers: 1000,
            max_post_numbers: 100_000,
            request_deadline_secs: 10.0,
            header_read_timeout_secs: 10.0,
            pool_queue_capacity: 1024,
            max_in_flight: 4096,
            max_head_bytes: 32 * 1024,
            body_budget_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[backends]`: the three sources `GET /` fans out to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Backends {
    pub(crate) file: FileBackend,
    pub(crate) db: DbBackend,
    pub(crate) api: ApiBackend,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            file: FileBackend {
                path: None,
                delay_secs: 0.1,
                timeout_secs: 1.0,
                max_concurrent: 64,
            },
            db: DbBackend {
                path: None,
                query: DEFAULT_QUERY.to_owned(),
                delay_secs: 0.2,
                timeout_secs: 1.0,
                max_concurrent: 64,
            },
            api: ApiBackend {
                url: None,
                delay_secs: 0.3,
                timeout_secs: 1.0,
                max_concurrent: 256,
            },
        }
    }
}

/// The query the demo database answers.
pub(crate) const DEFAULT_QUERY: &str = "SELECT value FROM results WHERE name = 'db'";

/// `[backends.file]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBackend {
    pub(crate) path: Option<PathBuf>,
    #[serde(default = "file_delay")]
    pub(crate) delay_secs: f64,
    #[serde(default = "one_second")]
    pub(crate) timeout_secs: f64,
    /// Calls running at once at most (each holds a blocking thread).
    #[serde(default = "blocking_calls")]
    pub(crate) max_concurrent: usize,
}

/// `[backends.db]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DbBackend {
    pub(crate) path: Option<PathBuf>,
    #[serde(default = "default_query")]
    pub(crate) query: String,
    #[serde(default = "db_delay")]
    pub(crate) delay_secs: f64,
    #[serde(default = "one_second")]
    pub(crate) timeout_secs: f64,
    /// Queries running at once at most (each holds a blocking thread).
    #[serde(default = "blocking_calls")]
    pub(crate) max_concurrent: usize,
}

/// `[backends.api]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiBackend {
    pub(crate) url: Option<String>,
    #[serde(default = "api_delay")]
    pub(crate) delay_secs: f64,
    #[serde(default = "one_second")]
    pub(crate) timeout_secs: f64,
    /// HTTP calls running at once at most.
    #[serde(default = "api_calls")]
    pub(crate) max_concurrent: usize,
}

fn file_delay() -> f64 {
    0.1
}
fn db_delay() -> f64 {
    0.2
}
fn api_delay() -> f64 {
    0.3
}
fn one_second() -> f64 {
    1.0
}
fn blocking_calls() -> usize {
    64
}
fn api_calls() -> usize {
    256
}
fn default_query() -> String {
    DEFAULT_QUERY.to_owned()
}

/// `[faults]`: make the pool task of a request fail on purpose, to test how a
/// failed worker is reported (a 503) and that the next request succeeds.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Faults {
    /// A pool task that meets one of these numbers fails as a crashed worker
    /// would: a panic on the thread pool, an abort on the process pool.
    pub(crate) crash_on: Vec<u64>,
}

impl Config {
    /// Read and check a config file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("bad --config {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("bad --config {}", path.display()))?;
        Ok(config)
    }

    /// Check every value's range.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        positive("limits.request_deadline_secs", l.request_deadline_secs)?;
        positive(
            "limits.header_read_timeout_secs",
            l.header_read_timeout_secs,
        )?;
        non_negative(
            "server.shutdown_grace_secs",
            self.server.shutdown_grace_secs,
        )?;
        for (name, value) in [
            ("limits.max_get_numbers", l.max_get_numbers),
            ("limits.max_post_numbers", l.max_post_numbers),
            ("limits.pool_queue_capacity", l.pool_queue_capacity),
            ("limits.max_in_flight", l.max_in_flight),
            (
                "backends.file.max_concurrent",
                self.backends.file.max_concurrent,
            ),
            (
                "backends.db.max_concurrent",
                self.backends.db.max_concurrent,
            ),
            (
                "backends.api.max_concurrent",
                self.backends.api.max_concurrent,
            ),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if !(MIN_HEAD_BYTES..=MAX_HEAD_BYTES).contains(&l.max_head_bytes) {
            bail!(
                "limits.max_head_bytes must be between {MIN_HEAD_BYTES} and {MAX_HEAD_BYTES} (got {})",
                l.max_head_bytes
            );
        }
        if l.body_budget_bytes < l.max_body_bytes() {
            bail!(
                "limits.body_budget_bytes ({}) must hold at least one body of the largest \
                 POST (limits.max_post_numbers {} × 32 + 4096 = {} bytes)",
                l.body_budget_bytes,
                l.max_post_numbers,
                l.max_body_bytes()
            );
        }
        if u32::try_from(l.body_budget_bytes).is_err() {
            bail!(
                "limits.body_budget_bytes must be at most {} (got {})",
                u32::MAX,
                l.body_budget_bytes
            );
        }
        if self.server.workers == Some(0) {
            bail!("server.workers must be at least 1");
        }
        let b = &self.backends;
        for (name, delay, timeout) in [
            ("file", b.file.delay_secs, b.file.timeout_secs),
            ("db", b.db.delay_secs, b.db.timeout_secs),
            ("api", b.api.delay_secs, b.api.timeout_secs),
        ] {
            non_negative(&format!("backends.{name}.delay_secs"), delay)?;
            positive(&format!("backends.{name}.timeout_secs"), timeout)?;
        }
        if let Some(url) = &b.api.url {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("backends.api.url '{url}' is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("backends.api.url '{url}': only http and https are supported");
            }
        }
        Ok(())
    }
}

/// The smallest and largest `limits.max_head_bytes`.
pub(crate) const MIN_HEAD_BYTES: usize = 1024;
pub(crate) const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// Seconds as a [`Duration`]; callers validated the value.
pub(crate) fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
}

/// The longest time a key may name: about 31 years, so that "now plus this"
/// is a representable instant (a larger value made every request panic).
const MAX_SECS: f64 = 1e9;

fn positive(name: &str, value: f64) -> anyhow::Result<()> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_SECS) {
        bail!("{name} must be a number of seconds above 0 and at most {MAX_SECS:e} (got {value})");
    }
    Ok(())
}

fn non_negative(name: &str, value: f64) -> anyhow::Result<()> {
    if !(value.is_finite() && (0.0..=MAX_SECS).contains(&value)) {
        bail!(
            "{name} must be a number of seconds, 0 or more and at most {MAX_SECS:e} (got {value})"
        );
    }
    Ok(())
}
