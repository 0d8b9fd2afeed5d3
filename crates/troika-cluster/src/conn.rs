//! Connections to Redis: parsing the URL, telling a refused password from
//! an unreachable server, and connections that reconnect by themselves.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::ClusterError;

/// A URL with its password blanked out, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("pass", _)) => "pass=***".to_owned(),
                    _ => kv.to_owned(),
                })
                .collect();
            return format!("{}?{}", redact(base), query.join("&"));
        }
        None => url,
    };
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((cred, host)) => match cred.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The client of `url`: `redis://[user:password@]host[:port][/db]`,
/// `rediss://…` (TLS), or `unix:///path/to/socket` / `redis+unix:///path`.
/// A `rediss://` server's certificate is checked against `root_cert` (PEM)
/// when given, else against the system's trust store (which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub(crate) fn client(url: &str, root_cert: Option<&[u8]>) -> Result<redis::Client, ClusterError> {
    let bad_url = |e: redis::RedisError| ClusterError::Url {
        url: redact(url),
        reason: e.to_string(),
    };
    match root_cert {
        None => {
            if url.starts_with("rediss://") {
                install_crypto();
            }
            redis::Client::open(url).map_err(bad_url)
        }
        Some(pem) => {
            if !url.starts_with("rediss://") {
                return Err(ClusterError::Config(format!(
                    "a TLS root certificate was given for {}, which is not a rediss:// URL",
                    redact(url)
                )));
            }
            install_crypto();
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )
            .map_err(bad_url)
        }
    }
}

/// Make aws-lc-rs rustls's process-wide crypto provider unless one is set
/// already: without it, rustls cannot pick one by itself when a program
/// links more than one (or none) and the first TLS connection panics.
fn install_crypto() {
    // An error means a provider is installed already: the program chose.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Classify a connection error.
pub(crate) fn connect_error(url: &str, err: &redis::RedisError) -> ClusterError {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || lower.contains("noauth")
        || lower.contains("wrongpass")
        || lower.contains("invalid password")
        || lower.contains("invalid username-password")
        || lower.contains("authentication")
    {
        ClusterError::Auth {
            url: redact(url),
            reason: text,
        }
    } else {
        ClusterError::Unreachable {
            url: redact(url),
            reason: text,
        }
    }
}

/// A connection that reconnects by itself after an error. `response` is how
/// long one command may take (longer for blocking reads).
pub(crate) async fn manager(
    client: &redis::Client,
    url: &str,
    response: Duration,
    connect: Duration,
) -> Result<ConnectionManager, ClusterError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2));
    let mut conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| connect_error(url, &e))?;
    // A server that wants a password may accept the connection and refuse
    // the first command: ask one now, so that a wrong password is an error
    // here and not a hang later.
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| connect_error(url, &e))?;
    Ok(conn)
}

/// Back-off between retries: 50 ms doubling to 2 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(50),
        }
    }

    /// Sleep the current delay and lengthen it.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(50);
    }
}

/// Create the workers' group on the task stream (and the stream), from the
/// stream's start, unless it exists.
pub(crate) async fn ensure_group(
    conn: &mut ConnectionManager,
    tasks: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(tasks)
        .arg(crate::wire::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh id for a client or worker: unpredictable enough to be unique
/// across machines (time, pid and the standard library's random hash keys).
pub(crate) fn fresh_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_blanked_out() {
        assert_eq!(
            redact("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(
            redact("redis+unix:///s.sock?db=1&pass=secret"),
            "redis+unix:///s.sock?db=1&pass=***"
        );
        assert_eq!(redact("redis://h"), "redis://h");
    }
}
