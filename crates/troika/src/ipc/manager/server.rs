//! The manager's server: the store of maps and lists, the accept loop and
//! one thread per client connection, and [`Manager`] itself.

use super::super::error::{IpcError, Result};
use super::super::shm::{process_alive, random_u64};
use super::protocol::{
    FRAME_LIMIT, HELLO_LIMIT, ListOp, MapOp, Request, Response, read_frame, write_frame,
};
use super::{ManagerAddress, SharedList, SharedMap};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the server waits for a new connection's hello before it drops
/// the connection (and its thread).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// An encoded key or value.
type Bytes = Vec<u8>;

#[derive(Default)]
struct Store {
    maps: HashMap<String, (u64, BTreeMap<Bytes, Bytes>)>,
    lists: HashMap<String, (u64, Vec<Vec<u8>>)>,
}

impl Store {
    fn map_op(&mut self, name: String, tag: u64, op: MapOp) -> Response {
        if let MapOp::Create = op {
            let entry = self
                .maps
                .entry(name.clone())
                .or_insert_with(|| (tag, BTreeMap::new()));
            return if entry.0 == tag {
                Response::Done
            } else {
                Response::WrongType { name }
            };
        }
        let Some((t, m)) = self.maps.get_mut(&name) else {
            return Response::NoSuch { list: false, name };
        };
        if *t != tag {
            return Response::WrongType { name };
        }
        match op {
            MapOp::Create => Response::Done,
            MapOp::Insert(k, v) => Response::Value(m.insert(k, v)),
            MapOp::Get(k) => Response::Value(m.get(&k).cloned()),
            MapOp::Remove(k) => Response::Value(m.remove(&k)),
            MapOp::Contains(k) => Response::Bool(m.contains_key(&k)),
            MapOp::Len => Response::Len(m.len() as u64),
            MapOp::Items => {
                Response::Pairs(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            MapOp::Clear => {
                m.clear();
                Response::Done
            }
        }
    }

    fn list_op(&mut self, name: String, tag: u64, op: ListOp) -> Response {
        if let ListOp::Create = op {
            let entry = self
                .lists
                .entry(name.clone())
                .or_insert_with(|| (tag, Vec::new()));
            return if entry.0 == tag {
                Response::Done
            } else {
                Response::WrongType { name }
            };
        }
        let Some((t, l)) = self.lists.get_mut(&name) else {
            return Response::NoSuch { list: true, name };
        };
        if *t != tag {
            return Response::WrongType { name };
        }
        let len = l.len() as u64;
        match op {
            ListOp::Create => Response::Done,
            ListOp::Push(v) => {
                l.push(v);
                Response::Done
            }
            ListOp::Extend(vs) => {
                l.extend(vs);
                Response::Done
            }
            ListOp::Pop => Response::Value(l.pop()),
            ListOp::Get(i) => match usize::try_from(i).ok().and_then(|i| l.get(i)) {
                Some(v) => Response::Value(Some(v.clone())),
                None => Response::Index { index: i, len },
            },
            ListOp::Set(i, v) => match usize::try_from(i).ok().and_then(|i| l.get_mut(i)) {
                Some(slot) => {
                    *slot = v;
                    Response::Done
                }
                None => Response::Index { index: i, len },
            },
            ListOp::Len => Response::Len(len),
            ListOp::Items => Response::Items(l.clone()),
            ListOp::Clear => {
                l.clear();
                Response::Done
            }
        }
    }
}

struct Shared {
    store: Mutex<Store>,
    stop: AtomicBool,
    /// Every live connection, from accept on: a clone of its stream (to shut
    /// it down on stop) and its thread. A connection's thread removes its
    /// own entry when it ends (dropping the join handle detaches the ending
    /// thread); [`Manager::stop`] shuts down and joins those still there.
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: std::sync::atomic::AtomicU64,
    token: [u8; 32],
    uid: u32,
}

struct Conn {
    stream: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

fn same_token(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serve(shared: &Shared, mut s: UnixStream) {
    // 1. The peer must run as our user (checked by the kernel, not claimed).
    match rustix::net::sockopt::socket_peercred(&s) {
        Ok(cred) if cred.uid.as_raw() == shared.uid => {}
        _ => {
            let _ = write_frame(
                &mut s,
                &Response::Refused("peer runs as another user".into()),
            );
            return;
        }
    }
    // 2. It must know the secret token, and say so promptly: a peer that
    // connects and says nothing does not keep a thread for ever.
    if s.set_read_timeout(Some(HELLO_TIMEOUT)).is_err() {
        return;
    }
    match read_frame::<Request>(&mut s, HELLO_LIMIT) {
        Ok(Request::Hello { token }) if same_token(&token, &shared.token) => {
            if write_frame(&mut s, &Response::Done).is_err() {
                return;
            }
        }
        _ => {
            let _ = write_frame(&mut s, &Response::Refused("wrong token".into()));
            return;
        }
    }
    if s.set_read_timeout(None).is_err() {
        return;
    }
    serve_requests(shared, &mut s);
}

/// Runs connection `id` on its own thread, registered in `shared.conns`
/// until it ends.
fn spawn_conn(shared: &Arc<Shared>, conn: UnixStream) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let stream = conn.try_clone().ok();
    // Register under the lock that the thread's own removal takes, so the
    // removal always finds the entry.
    let mut conns = shared.conns.lock();
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name("troika-manager-conn".into())
        .spawn(move || {
            serve(&sh, conn);
            // Drops our stream clone and our join handle (detaching this
            // ending thread), unless stop took them to join us.
            let me = sh.conns.lock().remove(&id);
            drop(me);
        });
    if let Ok(thread) = thread {
        conns.insert(
            id,
            Conn {
                stream,
                thread: Some(thread),
            },
        );
    }
}

fn serve_requests(shared: &Shared, s: &mut UnixStream) {
    while let Ok(req) = read_frame::<Request>(s, FRAME_LIMIT) {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let resp = {
            let mut store = shared.store.lock();
            match req {
                Request::Hello { .. } => Response::Done,
                Request::Map { name, tag, op } => store.map_op(name, tag, op),
                Request::List { name, tag, op } => store.list_op(name, tag, op),
            }
        };
        if write_frame(s, &resp).is_err() {
            break;
        }
    }
}

/// A server of shared maps and lists for other processes (Python's
/// `multiprocessing.Manager()`).
///
/// [`Manager::start`] starts a server thread in the calling process, listening
/// on a Unix socket in a fresh directory that only this user can enter
/// (mode 0700, under `$XDG_RUNTIME_DIR` or the temporary directory). A client
/// is served only if the kernel reports (`SO_PEERCRED`) that it runs as the
/// same user **and** it presents the manager's 256-bit secret token, which
/// travels inside every serialized [`SharedMap`] or [`SharedList`] (so, as
/// with Python's `authkey`, the processes you hand a proxy to are the ones
/// that can use the manager). Nothing listens on the network.
///
/// Values are stored serialized (postcard); each proxy call is one round trip
/// over the socket, atomic on the server. When the manager is dropped (or its
/// process dies, even by SIGKILL) every client call fails with
/// [`IpcError::ManagerGone`] — the kernel closes the sockets, so no client
/// hangs. Dropping it (or [`shutdown`](Manager::shutdown)) stops the
/// server, ends and joins every server thread — also those of clients that
/// connected and went silent — closes every server descriptor and removes
/// its socket directory before it returns; a directory left by a killed
/// manager is removed by the next manager that starts. A client's
/// connection (and its server thread) ends as soon as the client drops its
/// proxy, and a client that connects but does not present the token within
/// 10 s is dropped.
///
/// To reach a manager from an address obtained some other way than a
/// serialized proxy, build it with [`ManagerAddress::from_parts`]; a wrong
/// token is refused with [`IpcError::AuthFailed`].
///
/// # Examples
///
/// ```
/// use troika::ipc::Manager;
///
/// let manager = Manager::start().unwrap();
/// let d = manager.map::<String, i32>("d").unwrap();
/// let l = manager.list::<String>("l").unwrap();
/// d.insert(&"1".into(), &1).unwrap();
/// l.push(&"test".into()).unwrap();
/// assert_eq!(d.get(&"1".into()).unwrap(), Some(1));
/// assert_eq!(l.pop().unwrap(), Some("test".to_string()));
/// ```
pub struct Manager {
    shared: Arc<Shared>,
    addr: ManagerAddress,
    dir: PathBuf,
    accept: Option<JoinHandle<()>>,
    /// A second descriptor of the listening socket: shutting it down wakes
    /// the accept loop on stop.
    waker: Option<UnixListener>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn base_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(p) if p.is_dir() => p,
        _ => std::env::temp_dir(),
    }
}

/// Removes manager directories of this user whose process has died.
fn sweep_stale(base: &Path, uid: u32) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("troika-mgr-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let mine = e.metadata().map(|m| m.uid() == uid).unwrap_or(false);
        if mine && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Manager {
    /// Starts a manager serving from a thread of this process.
    ///
    /// # Errors
    ///
    /// [`IpcError::Io`] if its directory, socket or thread cannot be made.
    pub fn start() -> Result<Manager> {
        let uid = rustix::process::geteuid().as_raw();
        let base = base_dir();
        sweep_stale(&base, uid);
        let dir = base.join(format!(
            "troika-mgr-{}-{:016x}",
            std::process::id(),
            random_u64()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| IpcError::io("creating the manager's directory", e))?;
        let path = dir.join("sock");
        let listener = UnixListener::bind(&path)
            .map_err(|e| IpcError::io("binding the manager's socket", e))?;
        let waker = listener
            .try_clone()
            .map_err(|e| IpcError::io("cloning the manager's socket", e))?;
        let mut token = [0u8; 32];
        for chunk in token.chunks_mut(8) {
            chunk.copy_from_slice(&random_u64().to_ne_bytes());
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(0),
            token,
            uid,
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("troika-manager".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if sh.stop.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        spawn_conn(&sh, conn);
                    }
                }
            })
            .map_err(|e| IpcError::io("starting the manager thread", e))?;
        Ok(Manager {
            shared,
            addr: ManagerAddress { path, token },
            dir,
            accept: Some(accept),
            waker: Some(waker),
        })
    }

    /// The manager's address (with its secret token): what
    /// [`SharedMap::open`] and [`SharedList::open`] need. It is serializable,
    /// so a child can receive it instead of a proxy.
    pub fn address(&self) -> &ManagerAddress {
        &self.addr
    }

    /// A proxy to the shared map `name`, created empty if it does not exist.
    /// Keys and values are stored serialized; the same name with other types
    /// is refused.
    pub fn map<K, V>(&self, name: &str) -> Result<SharedMap<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        SharedMap::open(&self.addr, name)
    }

    /// A proxy to the shared list `name`, created empty if it does not exist.
    pub fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<SharedList<T>> {
        SharedList::open(&self.addr, name)
    }

    /// Stops serving: every client's next call fails with
    /// [`IpcError::ManagerGone`]. Also done on drop.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{IpcError, Manager};
    ///
    /// let manager = Manager::start().unwrap();
    /// let counts = manager.map::<String, u64>("counts").unwrap();
    /// counts.insert(&"a".into(), &1).unwrap();
    /// manager.shutdown(); // returns once every server thread has ended
    /// let err = counts.get(&"a".into()).unwrap_err();
    /// assert!(matches!(err, IpcError::ManagerGone(_)), "{err}");
    /// ```
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the accept loop: shutting the listening socket down makes a
        // blocked accept(2) fail at once on Linux; a connection of our own
        // is the fallback.
        if let Some(l) = self.waker.take()
            && rustix::net::shutdown(&l, rustix::net::Shutdown::Both).is_err()
        {
            let _ = UnixStream::connect(&self.addr.path);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // No connection is registered after the accept loop ended. Shut
        // every one down (its thread then sees end-of-file) and join them,
        // so that when this returns, no thread or descriptor of the manager
        // is left.
        let conns: Vec<Conn> = self.shared.conns.lock().drain().map(|(_, c)| c).collect();
        for c in &conns {
            if let Some(s) = &c.stream {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        for mut c in conns {
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop();
    }
}
