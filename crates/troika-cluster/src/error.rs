//! The errors of connecting and of running a worker.

/// Why a [`Cluster`](crate::Cluster) or [`Worker`](crate::Worker) could not
/// start or went on no longer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The URL is not a Redis URL this crate understands.
    #[error("invalid Redis URL `{url}`: {reason}")]
    Url {
        /// The URL as given, with any password blanked out.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis refused the credentials (wrong user or password, or none given
    /// to a server that wants one).
    #[error("Redis at {url} refused the credentials: {reason}")]
    Auth {
        /// The URL, password blanked out.
        url: String,
        /// Redis's answer.
        reason: String,
    },
    /// Redis could not be reached within the connect timeout.
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL, password blanked out.
        url: String,
        /// The last error.
        reason: String,
    },
    /// A setting was out of range, or the local process pool could not start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An operating-system call failed (such as installing the SIGTERM handler).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClusterError {
    /// Whether Redis refused the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, ClusterError::Auth { .. })
    }

    /// Whether Redis could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClusterError::Unreachable { .. })
    }
}
