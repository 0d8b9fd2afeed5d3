//! The proxies: [`SharedMap`] and [`SharedList`], each a name and a client
//! connection to the manager that holds the data.

use super::super::error::Result;
use super::super::shm::type_tag;
use super::ManagerAddress;
use super::client::{Client, unexpected};
use super::protocol::{ListOp, MapOp, Request, Response, dec, enc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// Marks a map's key and value types without owning them.
type MapTypes<K, V> = fn(K, V) -> (K, V);

/// A proxy to a map held by a [`Manager`](super::Manager) (Python's `manager.dict()`).
///
/// Every call is one request to the manager, atomic there. Keys are compared
/// by their serialized bytes, and [`items`](Self::items) lists entries in the
/// order of those bytes. Serialize the proxy to hand it to another process;
/// it carries the manager's address and token. Clones share nothing but the
/// address (each opens its own connection on first use).
///
/// # Examples
///
/// ```
/// use troika::ipc::{Manager, SharedMap};
///
/// let manager = Manager::start().unwrap();
/// let scores = manager.map::<String, u32>("scores").unwrap();
/// // What a child process would receive: the proxy, serialized.
/// let wire = serde_json::to_string(&scores).unwrap();
/// let child_side: SharedMap<String, u32> = serde_json::from_str(&wire).unwrap();
/// child_side.insert(&"ada".into(), &3).unwrap();
///
/// assert_eq!(scores.insert(&"ada".into(), &5).unwrap(), Some(3)); // the old value
/// assert!(scores.contains_key(&"ada".into()).unwrap());
/// assert_eq!(scores.items().unwrap(), vec![("ada".to_string(), 5)]);
/// assert_eq!(scores.remove(&"ada".into()).unwrap(), Some(5));
/// assert!(scores.is_empty().unwrap());
/// ```
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
    ///
    /// # Errors
    ///
    /// [`IpcError::ManagerGone`](crate::ipc::IpcError::ManagerGone) if the
    /// manager cannot be reached, [`IpcError::AuthFailed`](crate::ipc::IpcError::AuthFailed)
    /// if it refuses the token, [`IpcError::InvalidHandle`](crate::ipc::IpcError::InvalidHandle)
    /// if `name` holds a map of other types.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Manager, SharedMap};
    ///
    /// let manager = Manager::start().unwrap();
    /// let addr = manager.address().clone(); // serializable: send it anywhere
    /// let a = SharedMap::<u8, String>::open(&addr, "names").unwrap();
    /// a.insert(&1, &"one".into()).unwrap();
    /// let b = SharedMap::<u8, String>::open(&addr, "names").unwrap(); // the same map
    /// assert_eq!(b.get(&1).unwrap().as_deref(), Some("one"));
    /// assert!(SharedMap::<String, String>::open(&addr, "names").is_err()); // other types
    /// ```
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

/// A proxy to a list held by a [`Manager`](super::Manager) (Python's `manager.list()`).
///
/// Every call is one request to the manager, atomic there. Serialize the
/// proxy to hand it to another process.
///
/// # Examples
///
/// ```
/// use troika::ipc::{IpcError, Manager};
///
/// let manager = Manager::start().unwrap();
/// let log = manager.list::<String>("log").unwrap();
/// log.push(&"start".into()).unwrap();
/// log.extend(&["step 1".into(), "step 2".into()]).unwrap(); // one request
/// log.set(0, &"begin".into()).unwrap();
/// assert_eq!(log.get(2).unwrap(), "step 2");
/// assert_eq!(log.pop().unwrap().as_deref(), Some("step 2"));
/// assert_eq!(log.to_vec().unwrap(), ["begin", "step 1"]);
/// assert!(matches!(log.get(9), Err(IpcError::IndexOutOfRange { index: 9, len: 2 })));
/// ```
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

    /// A copy of element `index`; [`IpcError::IndexOutOfRange`](crate::ipc::IpcError::IndexOutOfRange)
    /// past the end.
    pub fn get(&self, index: usize) -> Result<T> {
        match self.call(ListOp::Get(index as u64))? {
            Response::Value(Some(b)) => dec(&b),
            r => Err(unexpected(r, "list")),
        }
    }

    /// Replaces element `index`; [`IpcError::IndexOutOfRange`](crate::ipc::IpcError::IndexOutOfRange)
    /// past the end.
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
