//! A real Redis for troika's tests: no mocks.
//!
//! [`RedisServer`] runs `redis-server` (Debian's `redis-server` package;
//! `.ci/run` installs it) as a child in a temp dir of its own, on a free port
//! of 127.0.0.1 or on a Unix socket, and kills it and removes the dir when
//! dropped. [`TcpProxy`] sits between a client and the server so that a test
//! can cut the network and restore it. [`Connection`] speaks just enough RESP
//! for a test to look inside the server (`XLEN`, `INFO`, garbage `XADD`s)
//! without a Redis client crate.
//!
//! # A server
//!
//! ```
//! use troika_test_redis::{RedisServer, Reply};
//!
//! let mut server = RedisServer::builder().appendonly(true).start();
//! server.command(&["SET", "greeting", "hello"]).unwrap();
//! server.kill(); // a crash: SIGKILL
//! server.restart(); // same port, same dir: the append-only file is reloaded
//! assert_eq!(
//!     server.command(&["GET", "greeting"]).unwrap(),
//!     Reply::Bulk(Some(b"hello".to_vec()))
//! );
//! ```
//!
//! Hand [`RedisServer::url`] to the code under test; it is what the `redis`
//! crate expects, password and Unix socket included.
//!
//! # A network partition
//!
//! ```
//! use troika_test_redis::{Connection, RedisServer, TcpProxy};
//!
//! let server = RedisServer::start();
//! let proxy = TcpProxy::start(server.addr().unwrap());
//! // The code under test connects to proxy.url() instead of server.url().
//! let mut conn = Connection::tcp(proxy.addr()).unwrap();
//! assert!(conn.command(&["PING"]).is_ok());
//! proxy.cut();
//! assert!(conn.command(&["PING"]).is_err());
//! proxy.restore();
//! ```
//!
//! # Waiting
//!
//! Start-up waits for the server's first `PONG` (an append-only file being
//! loaded answers `-LOADING` and counts as not yet up), with an outer
//! deadline of 30 s that panics with the server's log. Nothing here sleeps a
//! fixed time.

mod proxy;
mod resp;
mod server;

use std::path::PathBuf;

pub use proxy::TcpProxy;
pub use resp::{Connection, Reply};
pub use server::{RedisServer, RedisServerBuilder};

/// The `redis-server` found on `PATH`.
///
/// # Panics
///
/// With "redis-server not found: apt-get install redis-server (.ci/run
/// installs it)" when there is none.
///
/// # Examples
///
/// ```
/// let binary = troika_test_redis::redis_server_binary();
/// assert!(binary.ends_with("redis-server"));
/// ```
pub fn redis_server_binary() -> PathBuf {
    find_on_path("redis-server").unwrap_or_else(|| {
        panic!("redis-server not found: apt-get install redis-server (.ci/run installs it)")
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
