//! A TCP proxy whose link the test can cut and restore: a network partition.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Forwards TCP connections from `127.0.0.1:PORT` to a target, until the
/// test calls [`cut`](TcpProxy::cut): then every open connection is dropped
/// at once and new ones are accepted and closed at once, until
/// [`restore`](TcpProxy::restore).
///
/// Each forwarded connection uses two threads. Dropping the proxy closes
/// every connection and joins every thread.
///
/// # Examples
///
/// ```
/// use troika_test_redis::{Connection, RedisServer, Reply, TcpProxy};
///
/// let server = RedisServer::start();
/// let proxy = TcpProxy::start(server.addr().unwrap());
/// let mut conn = Connection::tcp(proxy.addr()).unwrap();
/// assert_eq!(conn.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
///
/// proxy.cut();
/// assert!(conn.command(&["PING"]).is_err());
/// proxy.restore();
/// let mut conn = Connection::tcp(proxy.addr()).unwrap();
/// assert_eq!(conn.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    closing: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    next_id: u64,
    /// Both sockets of every open forwarded connection.
    links: Vec<(u64, TcpStream, TcpStream)>,
    pumps: Vec<JoinHandle<()>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A pump that panicked holds no invariant we rely on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn close_all(&mut self) {
        for (_, a, b) in self.links.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl TcpProxy {
    /// Starts forwarding from a free port of 127.0.0.1 to `target`.
    ///
    /// # Panics
    ///
    /// When no port of 127.0.0.1 can be bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{RedisServer, TcpProxy};
    ///
    /// let server = RedisServer::start();
    /// let proxy = TcpProxy::start(server.addr().unwrap());
    /// assert_ne!(proxy.addr(), server.addr().unwrap());
    /// ```
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("TcpProxy: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("TcpProxy: local_addr: {e}"));
        let shared = Arc::new(Shared {
            target,
            closing: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("troika-test-redis proxy".into())
                .spawn(move || accept_loop(&listener, &shared))
                .unwrap_or_else(|e| panic!("TcpProxy: spawn: {e}"))
        };
        TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{RedisServer, TcpProxy};
    ///
    /// let server = RedisServer::start();
    /// assert!(TcpProxy::start(server.addr().unwrap()).addr().ip().is_loopback());
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT/` for this proxy (no password: add one yourself).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{RedisServer, TcpProxy};
    ///
    /// let server = RedisServer::start();
    /// let proxy = TcpProxy::start(server.addr().unwrap());
    /// assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.addr().port()));
    /// ```
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.addr.port())
    }

    /// Drops every open connection at once (both sides see the connection
    /// closed) and closes new ones as soon as they are accepted, until
    /// [`restore`](Self::restore).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer, TcpProxy};
    ///
    /// let server = RedisServer::start();
    /// let proxy = TcpProxy::start(server.addr().unwrap());
    /// proxy.cut();
    /// // The connect itself may succeed; the first command fails.
    /// let failed = Connection::tcp(proxy.addr()).and_then(|mut c| c.command(&["PING"]));
    /// assert!(failed.is_err());
    /// ```
    pub fn cut(&self) {
        let mut state = self.shared.state();
        state.cut = true;
        state.close_all();
    }

    /// Accepts and forwards again after [`cut`](Self::cut). Connections
    /// dropped by the cut stay dropped: clients must reconnect.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer, TcpProxy};
    ///
    /// let server = RedisServer::start();
    /// let proxy = TcpProxy::start(server.addr().unwrap());
    /// proxy.cut();
    /// proxy.restore();
    /// assert!(Connection::tcp(proxy.addr()).unwrap().command(&["PING"]).is_ok());
    /// ```
    pub fn restore(&self) {
        self.shared.state().cut = false;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wakes the acceptor's blocking accept; it sees `closing` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let pumps = {
            let mut state = self.shared.state();
            state.close_all();
            std::mem::take(&mut state.pumps)
        };
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            // E.g. EMFILE or ECONNABORTED: the client sees its connect fail.
            Err(_) if !shared.closing.load(Ordering::SeqCst) => continue,
            Err(_) => return,
        };
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        if shared.state().cut {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(5))
        else {
            // The target is down: so is the link, as it would be without a proxy.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let mut state = shared.state();
        // Checked again under the lock: a cut during the connect wins.
        if state.cut {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            continue;
        }
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            continue;
        };
        let id = state.next_id;
        state.next_id += 1;
        state.links.push((id, c3, u3));
        state.pumps.retain(|p| !p.is_finished());
        for (from, to) in [(client, u2), (upstream, c2)] {
            let shared = Arc::clone(shared);
            match std::thread::Builder::new()
                .name("troika-test-redis pump".into())
                .spawn(move || pump(from, to, id, &shared))
            {
                Ok(handle) => state.pumps.push(handle),
                Err(_) => state.links.retain(|(i, a, b)| {
                    if *i == id {
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    }
                    *i != id
                }),
            }
        }
    }
}

/// Copies `from` to `to` until either side closes or fails, then closes the
/// whole link so its other pump ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    let _: io::Result<()> = (|| loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    })();
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.state().links.retain(|(i, _, _)| *i != id);
}
