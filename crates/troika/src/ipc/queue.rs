//! `Queue<T>`: a bounded multi-producer, multi-consumer queue between processes.

use super::error::{IpcError, Result};
use super::futex::deadline_after;
use super::ring::{self, Ring};
use super::shm::{self, Kind, Segment};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Default byte capacity of a queue's buffer (1 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

/// A bounded FIFO queue shared by any number of producer and consumer
/// processes (and threads).
///
/// Items are serialized with postcard into a ring buffer in shared memory.
/// The queue is bounded twice: by `max_items` items and by the byte size of
/// its buffer ([`DEFAULT_QUEUE_BYTES`] unless set with
/// [`with_capacity`](Self::with_capacity)). `put` waits while either bound
/// is reached; an item whose encoding alone exceeds the buffer is refused
/// with [`IpcError::TooLarge`], and an item that cannot be serialized with
/// [`IpcError::Serialization`] — both to the caller of `put`, never a silent
/// drop. `put` takes the item by reference: it is only serialized, so there
/// is nothing to hand back on failure.
///
/// Clone it to share it between threads; serialize it (serde) to hand it to
/// another process. A process killed in the middle of a `put` or `get` leaves
/// the queue consistent (the item is in it wholly or not at all).
///
/// # Examples
///
/// ```
/// use troika::ipc::Queue;
///
/// let q: Queue<Vec<String>> = Queue::new(8).unwrap();
/// q.put(&vec!["hello".to_string()]).unwrap();
/// assert_eq!(q.len(), 1);
/// assert_eq!(q.get().unwrap(), vec!["hello".to_string()]);
/// assert!(q.try_get().unwrap_err().is_empty());
/// ```
pub struct Queue<T> {
    seg: Segment,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("seg", &self.seg).finish()
    }
}

impl IpcError {
    /// True if a non-blocking get found nothing.
    pub fn is_empty(&self) -> bool {
        matches!(self, IpcError::Empty)
    }
    /// True if a non-blocking put found no room.
    pub fn is_full(&self) -> bool {
        matches!(self, IpcError::Full)
    }
}

fn ok(_: bool) -> Result<()> {
    Ok(())
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue of at most `max_items` items (0 means no item limit: only the
    /// byte capacity bounds it) in a buffer of [`DEFAULT_QUEUE_BYTES`].
    pub fn new(max_items: usize) -> Result<Queue<T>> {
        Self::with_capacity(max_items, DEFAULT_QUEUE_BYTES)
    }

    /// A queue of at most `max_items` items (0: no item limit) in a buffer of
    /// `bytes` bytes (at least 64, at most 2 GiB). Each item takes its
    /// postcard encoding plus 4 bytes.
    pub fn with_capacity(max_items: usize, bytes: usize) -> Result<Queue<T>> {
        let bytes = bytes.clamp(64, ring::MAX_CAPACITY);
        let max = if max_items == 0 {
            u32::MAX
        } else {
            u32::try_from(max_items).unwrap_or(u32::MAX)
        };
        let seg = Segment::create(Kind::Queue, shm::type_tag::<T>(), ring::STATE_LEN + bytes)?;
        ring::init(&seg, 0, bytes as u32, max)?;
        Ring::at(&seg, 0)?;
        Ok(Queue {
            seg,
            _t: PhantomData,
        })
    }

    fn ring(&self) -> Result<Ring<'_>> {
        Ring::at(&self.seg, 0)
    }

    fn encode(value: &T) -> Result<Vec<u8>> {
        postcard::to_allocvec(value).map_err(|e| IpcError::Serialization(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<T> {
        postcard::from_bytes(bytes).map_err(|e| IpcError::Serialization(e.to_string()))
    }

    fn put_until(&self, value: &T, deadline: Option<Instant>) -> Result<()> {
        let bytes = Self::encode(value)?;
        self.ring()?.put(&bytes, deadline, None, &ok)
    }

    /// Appends `value`, waiting while the queue is full.
    pub fn put(&self, value: &T) -> Result<()> {
        self.put_until(value, None)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.put_until(value, deadline_after(timeout))
    }

    /// Appends `value` if there is room now; [`IpcError::Full`] otherwise.
    pub fn try_put(&self, value: &T) -> Result<()> {
        match self.put_until(value, Some(Instant::now())) {
            Err(IpcError::TimedOut) => Err(IpcError::Full),
            other => other,
        }
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        let bytes = self.ring()?.get(deadline, None, &ok)?;
        Self::decode(&bytes)
    }

    /// Removes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Removes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(deadline_after(timeout))
    }

    /// Removes the oldest item if there is one; [`IpcError::Empty`] otherwise.
    pub fn try_get(&self) -> Result<T> {
        match self.get_until(Some(Instant::now())) {
            Err(IpcError::TimedOut) => Err(IpcError::Empty),
            other => other,
        }
    }
}

impl<T> Queue<T> {
    /// Items in the queue (a snapshot: other processes may change it).
    pub fn len(&self) -> usize {
        Ring::at(&self.seg, 0).map(|r| r.len()).unwrap_or(0)
    }

    /// Whether the queue is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        Ring::at(&self.seg, 0).map(|r| r.capacity()).unwrap_or(0)
    }

    /// The item limit (`u32::MAX` when there is none).
    pub fn max_items(&self) -> usize {
        Ring::at(&self.seg, 0)
            .map(|r| r.max_items() as usize)
            .unwrap_or(0)
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        shm::serialize_segment(&self.seg, s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let seg = shm::deserialize_segment(d, Kind::Queue, shm::type_tag::<T>())?;
        Ring::at(&seg, 0).map_err(serde::de::Error::custom)?;
        Ok(Queue {
            seg,
            _t: PhantomData,
        })
    }
}
