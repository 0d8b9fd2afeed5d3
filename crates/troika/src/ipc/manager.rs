//! `Manager`: a server thread holding shared maps and lists, reached by other
//! processes over a Unix socket.

use super::error::{IpcError, Result};
use super::shm::{process_alive, random_u64, type_tag};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest frame before authentication (the hello).
const HELLO_LIMIT: u32 = 1024;
/// Largest frame after it.
const FRAME_LIMIT: u32 = 1 << 30;
/// How long a client waits for an answer (or to hand over a request) before
/// it gives up (a live but stuck manager; a dead one is noticed at once, by
/// end-of-file).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server waits for a new connection's hello before it drops
/// the connection (and its thread).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// call fails with [`IpcError::AuthFailed`], at once (never a hang).
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

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Hello { token: [u8; 32] },
    Map { name: String, tag: u64, op: MapOp },
    List { name: String, tag: u64, op: ListOp },
}

#[derive(Serialize, Deserialize, Debug)]
enum MapOp {
    Create,
    Insert(Vec<u8>, Vec<u8>),
    Get(Vec<u8>),
    Remove(Vec<u8>),
    Contains(Vec<u8>),
    Len,
    Items,
    Clear,
}

#[derive(Serialize, Deserialize, Debug)]
enum ListOp {
    Create,
    Push(Vec<u8>),
    Extend(Vec<Vec<u8>>),
    Pop,
    Get(u64),
    Set(u64, Vec<u8>),
    Len,
    Items,
    Clear,
}

#[derive(Serialize, Deserialize, Debug)]
enum Response {
    Done,
    Value(Option<Vec<u8>>),
    Len(u64),
    Bool(bool),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Items(Vec<Vec<u8>>),
    Refused(String),
    NoSuch { list: bool, name: String },
    WrongType { name: String },
    Index { index: u64, len: u64 },
}

fn write_frame(s: &mut UnixStream, msg: &impl Serialize) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&bytes);
    s.write_all(&buf)
}

fn read_frame<T: DeserializeOwned>(s: &mut UnixStream, limit: u32) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > limit {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes over the limit"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    postcard::from_bytes(&buf).map_err(std::io::Error::other)
}

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

    /// The manager's address (with its secret token).
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

/// One client connection, opened lazily and dropped after any error.
struct Client {
    addr: ManagerAddress,
    conn: Mutex<Option<UnixStream>>,
}

fn gone(e: impl std::fmt::Display) -> IpcError {
    IpcError::ManagerGone(e.to_string())
}

impl Client {
    fn new(addr: ManagerAddress) -> Client {
        Client {
            addr,
            conn: Mutex::new(None),
        }
    }

    fn connect(&self) -> Result<UnixStream> {
        let mut s = UnixStream::connect(&self.addr.path).map_err(gone)?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(gone)?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(gone)?;
        let uid = rustix::process::geteuid().as_raw();
        match rustix::net::sockopt::socket_peercred(&s) {
            Ok(c) if c.uid.as_raw() == uid => {}
            _ => {
                return Err(IpcError::AuthFailed(
                    "the manager runs as another user".into(),
                ));
            }
        }
        write_frame(
            &mut s,
            &Request::Hello {
                token: self.addr.token,
            },
        )
        .map_err(gone)?;
        match read_frame::<Response>(&mut s, FRAME_LIMIT).map_err(gone)? {
            Response::Done => Ok(s),
            Response::Refused(why) => Err(IpcError::AuthFailed(why)),
            other => Err(gone(format!("unexpected answer {other:?}"))),
        }
    }

    fn call(&self, req: &Request) -> Result<Response> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let Some(s) = guard.as_mut() else {
            return Err(gone("no connection"));
        };
        let res = write_frame(s, req).and_then(|()| read_frame::<Response>(s, FRAME_LIMIT));
        match res {
            Ok(Response::Refused(why)) => {
                *guard = None;
                Err(IpcError::AuthFailed(why))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                *guard = None;
                Err(gone(e))
            }
        }
    }
}

fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| IpcError::Serialization(e.to_string()))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| IpcError::Serialization(e.to_string()))
}

fn unexpected(r: Response, kind: &'static str) -> IpcError {
    match r {
        Response::NoSuch { name, .. } => IpcError::NoSuchObject { kind, name },
        Response::WrongType { name } => {
            IpcError::InvalidHandle(format!("the {kind} {name:?} holds other types"))
        }
        Response::Index { index, len } => IpcError::IndexOutOfRange {
            index: index as usize,
            len: len as usize,
        },
        other => IpcError::ManagerGone(format!("unexpected answer {other:?}")),
    }
}

/// Marks a map's key and value types without owning them.
type MapTypes<K, V> = fn(K, V) -> (K, V);

/// A proxy to a map held by a [`Manager`] (Python's `manager.dict()`).
///
/// Every call is one request to the manager, atomic there. Keys are compared
/// by their serialized bytes, and [`items`](Self::items) lists entries in the
/// order of those bytes. Serialize the proxy to hand it to another process;
/// it carries the manager's address and token. Clones share nothing but the
/// address (each opens its own connection on first use).
pub struct SharedMap<K, V> {
    client: Client,
    name: String,
    _t: PhantomData<MapTypes<K, V>>,
}

impl<K, V> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap")
            .field("name", &self.name)
            .field("addr", &self.client.addr)
            .finish()
    }
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            client: Client::new(self.client.addr.clone()),
            name: self.name.clone(),
            _t: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> SharedMap<K, V> {
    /// Connects to the map `name` of the manager at `addr`, creating it if
    /// needed.
    pub fn open(addr: &ManagerAddress, name: &str) -> Result<Self> {
        let m = SharedMap {
            client: Client::new(addr.clone()),
            name: name.to_string(),
            _t: PhantomData,
        };
        m.call(MapOp::Create)?;
        Ok(m)
    }

    fn call(&self, op: MapOp) -> Result<Response> {
        let req = Request::Map {
            name: self.name.clone(),
            tag: type_tag::<(K, V)>(),
            op,
        };
        match self.client.call(&req)? {
            r @ (Response::NoSuch { .. } | Response::WrongType { .. } | Response::Index { .. }) => {
                Err(unexpected(r, "map"))
            }
            r => Ok(r),
        }
    }

    fn value(&self, op: MapOp) -> Result<Option<V>> {
        match self.call(op)? {
            Response::Value(v) => v.map(|b| dec(&b)).transpose(),
            r => Err(unexpected(r, "map")),
        }
    }

    /// Inserts `value` under `key`; returns the previous value.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.value(MapOp::Insert(enc(key)?, enc(value)?))
    }

    /// A copy of the value under `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.value(MapOp::Get(enc(key)?))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        self.value(MapOp::Remove(enc(key)?))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        match self.call(MapOp::Contains(enc(key)?))? {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected(r, "map")),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        match self.call(MapOp::Len)? {
            Response::Len(n) => Ok(n as usize),
            r => Err(unexpected(r, "map")),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every entry.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.call(MapOp::Items)? {
            Response::Pairs(ps) => ps.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            r => Err(unexpected(r, "map")),
        }
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.call(MapOp::Clear).map(drop)
    }
}

/// A proxy to a list held by a [`Manager`] (Python's `manager.list()`).
///
/// Every call is one request to the manager, atomic there. Serialize the
/// proxy to hand it to another process.
pub struct SharedList<T> {
    client: Client,
    name: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedList")
            .field("name", &self.name)
            .field("addr", &self.client.addr)
            .finish()
    }
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList {
            client: Client::new(self.client.addr.clone()),
            name: self.name.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> SharedList<T> {
    /// Connects to the list `name` of the manager at `addr`, creating it if
    /// needed.
    pub fn open(addr: &ManagerAddress, name: &str) -> Result<Self> {
        let l = SharedList {
            client: Client::new(addr.clone()),
            name: name.to_string(),
            _t: PhantomData,
        };
        l.call(ListOp::Create)?;
        Ok(l)
    }

    fn call(&self, op: ListOp) -> Result<Response> {
        let req = Request::List {
            name: self.name.clone(),
            tag: type_tag::<T>(),
            op,
        };
        match self.client.call(&req)? {
            r @ (Response::NoSuch { .. } | Response::WrongType { .. } | Response::Index { .. }) => {
                Err(unexpected(r, "list"))
            }
            r => Ok(r),
        }
    }

    /// Appends `value`.
    pub fn push(&self, value: &T) -> Result<()> {
        self.call(ListOp::Push(enc(value)?)).map(drop)
    }

    /// Appends every value, in one request.
    pub fn extend(&self, values: &[T]) -> Result<()> {
        let vs = values.iter().map(enc).collect::<Result<Vec<_>>>()?;
        self.call(ListOp::Extend(vs)).map(drop)
    }

    /// Removes and returns the last value.
    pub fn pop(&self) -> Result<Option<T>> {
        match self.call(ListOp::Pop)? {
            Response::Value(v) => v.map(|b| dec(&b)).transpose(),
            r => Err(unexpected(r, "list")),
        }
    }

    /// A copy of element `index`.
    pub fn get(&self, index: usize) -> Result<T> {
        match self.call(ListOp::Get(index as u64))? {
            Response::Value(Some(b)) => dec(&b),
            r => Err(unexpected(r, "list")),
        }
    }

    /// Replaces element `index`.
    pub fn set(&self, index: usize, value: &T) -> Result<()> {
        self.call(ListOp::Set(index as u64, enc(value)?)).map(drop)
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        match self.call(ListOp::Len)? {
            Response::Len(n) => Ok(n as usize),
            r => Err(unexpected(r, "list")),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        match self.call(ListOp::Items)? {
            Response::Items(vs) => vs.iter().map(|b| dec(b)).collect(),
            r => Err(unexpected(r, "list")),
        }
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.call(ListOp::Clear).map(drop)
    }
}

#[derive(Serialize, Deserialize)]
struct ProxyRef {
    addr: ManagerAddress,
    name: String,
}

impl<K, V> Serialize for SharedMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ProxyRef {
            addr: self.client.addr.clone(),
            name: self.name.clone(),
        }
        .serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for SharedMap<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ProxyRef::deserialize(d)?;
        Ok(SharedMap {
            client: Client::new(r.addr),
            name: r.name,
            _t: PhantomData,
        })
    }
}

impl<T> Serialize for SharedList<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ProxyRef {
            addr: self.client.addr.clone(),
            name: self.name.clone(),
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ProxyRef::deserialize(d)?;
        Ok(SharedList {
            client: Client::new(r.addr),
            name: r.name,
            _t: PhantomData,
        })
    }
}
