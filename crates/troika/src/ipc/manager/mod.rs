//! `Manager`: a server thread holding shared maps and lists, reached by other
//! processes over a Unix socket.
//!
//! Split along its seams: [`protocol`] (the frames on the socket),
//! [`server`] (the store, the connection threads and [`Manager`]),
//! [`client`] (one authenticated connection) and [`proxies`]
//! ([`SharedMap`], [`SharedList`]).

mod client;
mod protocol;
mod proxies;
mod server;

pub use proxies::{SharedList, SharedMap};
pub use server::Manager;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a [`Manager`] listens and the secret that opens it. Serializable: it
/// is what a child needs to reach the manager, and every shared map or list
/// carries one.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManagerAddress {
    path: PathBuf,
    token: [u8; 32],
}

impl std::fmt::Debug for ManagerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ManagerAddress")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ManagerAddress {
    /// The path of the manager's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An address from its parts: the path of a manager's socket and the
    /// token to present. This is how to reach a manager whose address came
    /// some other way than a serialized proxy (a configuration file, another
    /// protocol). A token that is not the manager's is refused: the first
    /// call fails with [`IpcError::AuthFailed`](crate::ipc::IpcError::AuthFailed), at once (never a hang).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{IpcError, Manager, ManagerAddress, SharedMap};
    ///
    /// let manager = Manager::start().unwrap();
    /// let forged = ManagerAddress::from_parts(manager.address().path(), [0u8; 32]);
    /// let err = SharedMap::<String, i32>::open(&forged, "d").unwrap_err();
    /// assert!(matches!(err, IpcError::AuthFailed(_)), "{err}");
    /// ```
    pub fn from_parts(path: impl Into<PathBuf>, token: [u8; 32]) -> ManagerAddress {
        ManagerAddress {
            path: path.into(),
            token,
        }
    }
}
