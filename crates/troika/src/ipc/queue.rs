//! `Queue<T>`: a bounded multi-producer, multi-consumer queue between processes.

use super::error::{
    GetError, GetTimeoutError, IpcError, PutError, PutTimeoutError, Result, TryGetError,
    TryPutError,
};
use super::futex::deadline_after;
use super::raw::SLICE;
use super::ring::{self, Ring};
use super::shm::{self, Kind, Segment, SegmentRef, ShmState, process_alive};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Default byte capacity of a queue's buffer (1 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

/// Slots of the attach table: processes that hold the queue at once before
/// the dead-producer check gives up (see [`Queue`], "A producer that died").
const SLOTS: usize = 64;

/// The queue's own state, before its ring: who holds it.
#[repr(C)]
struct Holders {
    /// [`SHARED`] and [`UNTRACKED`].
    flags: AtomicU32,
    _pad: [AtomicU32; 15],
    /// One word per process that holds the queue: [`slot`] packs its pid,
    /// how many handles it holds, and how many handles it serialized that
    /// no one has opened yet. 0: free.
    slots: [AtomicU64; SLOTS],
}
// SAFETY: repr(C), atomics only, valid for any bit pattern.
unsafe impl ShmState for Holders {}

/// Where the ring starts in a queue's segment.
const RING_OFFSET: usize = 64 + 8 * SLOTS;
const _: () = assert!(std::mem::size_of::<Holders>() <= RING_OFFSET);
const _: () = assert!(RING_OFFSET.is_multiple_of(64));

/// Flag: a process other than the sender opened a handle to the queue.
const SHARED: u32 = 1;
/// Flag: the table could not count every handle (full, or a counter
/// saturated): the dead-producer check is off for good.
const UNTRACKED: u32 = 2;

/// Packing of a slot word: pid in bits 0..24 (Linux pids are below 2^22),
/// handles in 24..44, unopened exports in 44..64.
mod slot {
    pub(super) const PID_LIMIT: u32 = 1 << 24;
    pub(super) const MAX: u64 = (1 << 20) - 1;

    pub(super) fn pack(pid: u32, handles: u64, pending: u64) -> u64 {
        u64::from(pid) | (handles << 24) | (pending << 44)
    }
    pub(super) fn unpack(w: u64) -> (u32, u64, u64) {
        (
            (w & u64::from(PID_LIMIT - 1)) as u32,
            (w >> 24) & MAX,
            (w >> 44) & MAX,
        )
    }
}

/// A bounded FIFO queue shared by any number of producer and consumer
/// processes (and threads) (Python's `multiprocessing.Queue`).
///
/// Its calls and their results are those of
/// [`sync::Queue`](crate::sync::Queue): `put` / `try_put` / `put_timeout`,
/// `get` / `try_get` / `get_timeout`, `close`, `iter`, `len`, `maxsize`,
/// each returning the error type of its operation ([`PutError`],
/// [`TryPutError`], ... — see the [module docs](super#one-shape-per-operation)).
///
/// Items are serialized with postcard into a ring buffer in shared memory.
/// The queue is bounded twice: by `max_items` items and by the byte size of
/// its buffer ([`DEFAULT_QUEUE_BYTES`] unless set with
/// [`with_capacity`](Self::with_capacity)). `put` waits while either bound
/// is reached; an item whose encoding alone exceeds the buffer is refused
/// with [`IpcError::TooLarge`], and an item that cannot be serialized with
/// [`IpcError::Serialization`] (both inside [`PutError::Failed`]) — to the
/// caller of `put`, never a silent drop. `put` takes the item by reference: it is only serialized, so there
/// is nothing to hand back on failure (a [`Pipe`](super::Pipe) end inside
/// an item whose put failed stays this process's).
///
/// Clone it to share it between threads; serialize it (serde) to hand it to
/// another process. A process killed in the middle of a `put` or `get` leaves
/// the queue consistent (the item is in it wholly or not at all).
///
/// # Timeouts
///
/// `try_put`/`try_get` wait for nothing, and `put_timeout`/`get_timeout`
/// wait until their deadline at most — counting the wait for the queue's
/// internal lock, so a process stopped (SIGSTOP) in the middle of a put
/// cannot hang them: a `try_*` call that finds the lock taken reports
/// [`TryPutError::Full`] / [`TryGetError::Empty`], as Python's
/// `put_nowait`/`get_nowait` do.
///
/// # Closing
///
/// [`close`](Self::close) closes the queue for every process: `put` fails
/// with [`PutError::Closed`] at once, getters receive what is still buffered
/// and then [`GetError::Closed`] (never a hang), and every sleeping getter and putter is
/// woken. [`iter`](Self::iter) ends there. This is Python's `Queue.close()`
/// plus the end of iteration that `Queue` lacks; a close cannot be undone.
///
/// # A producer that died
///
/// A `get` that waits on an empty queue checks every 20 ms whether anyone
/// could still put into it, and fails instead of sleeping for ever when no
/// one can: when
/// - another process has opened the queue at some point (a queue that never
///   left this process is never given up on),
/// - every other process that holds it has exited or died
///   ([`GetError::Failed`] with [`IpcError::PeerDied`] names one that died
///   holding it; [`GetError::Disconnected`] if they all let go of it),
/// - this process holds no other handle than the one waiting (a clone held
///   by another thread could still put), and
/// - no handle serialized by a living process is still waiting to be opened.
///
/// Each process's handles are counted in a small table in the queue's shared
/// memory, with the handles it serialized that no one has opened yet. The
/// limits, documented rather than hidden: threads that share *one* handle by
/// reference count as one (clone it for each thread that produces); a
/// handle serialized by hand (say with `serde_json`) counts as a possible
/// producer as long as the serializing process lives, even if the bytes are
/// never used (a child spawned with [`Process`](crate::Process) that dies
/// before it opened its argument is the same case); a recycled pid looks
/// alive; beyond 64 processes at once the check is off for good. A consumer
/// cannot tell a producer from another consumer: any process that holds the
/// queue counts as a possible producer.
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
///
/// q.put(&vec!["last".to_string()]).unwrap();
/// q.close();
/// assert!(q.put(&vec![]).unwrap_err().is_closed());
/// let rest: Vec<_> = q.iter().collect::<Result<_, _>>().unwrap();
/// assert_eq!(rest, vec![vec!["last".to_string()]]);
/// ```
pub struct Queue<T> {
    seg: Segment,
    /// The slot of the holders table that counts this handle (`None`: not
    /// counted, and the table says so with [`UNTRACKED`]).
    slot: Option<usize>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            seg: self.seg.clone(),
            slot: self.holders().and_then(attach),
            _t: PhantomData,
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        if let (Some(h), Some(i)) = (self.holders(), self.slot) {
            detach(h, i);
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("seg", &self.seg).finish()
    }
}

fn ok(_: bool) -> Result<()> {
    Ok(())
}

/// Counts one more handle of this process in the table; the slot used, or
/// `None` (and the table marked untracked) if there is no room.
fn attach(h: &Holders) -> Option<usize> {
    let me = std::process::id();
    if me == 0 || me >= slot::PID_LIMIT {
        h.flags.fetch_or(UNTRACKED, SeqCst);
        return None;
    }
    // A slot this process has already.
    for (i, s) in h.slots.iter().enumerate() {
        let mut cur = s.load(Acquire);
        loop {
            let (pid, handles, pending) = slot::unpack(cur);
            if pid != me || handles == slot::MAX {
                break;
            }
            match s.compare_exchange(cur, slot::pack(me, handles + 1, pending), AcqRel, Acquire) {
                Ok(_) => return Some(i),
                Err(now) => cur = now,
            }
        }
    }
    let fresh = slot::pack(me, 1, 0);
    for (i, s) in h.slots.iter().enumerate() {
        if s.compare_exchange(0, fresh, AcqRel, Acquire).is_ok() {
            return Some(i);
        }
    }
    // Full: take over the slot of a process that is gone.
    for (i, s) in h.slots.iter().enumerate() {
        let cur = s.load(Acquire);
        let (pid, _, _) = slot::unpack(cur);
        if pid != me
            && !process_alive(pid)
            && s.compare_exchange(cur, fresh, AcqRel, Acquire).is_ok()
        {
            return Some(i);
        }
    }
    h.flags.fetch_or(UNTRACKED, SeqCst);
    None
}

/// Changes the counts of `pid`'s slot `i` by `f`; frees the slot when both
/// reach zero. False if the slot is not `pid`'s or `f` refuses.
fn update(h: &Holders, i: usize, pid: u32, f: impl Fn(u64, u64) -> Option<(u64, u64)>) -> bool {
    let Some(s) = h.slots.get(i) else {
        return false;
    };
    let mut cur = s.load(Acquire);
    loop {
        let (p, handles, pending) = slot::unpack(cur);
        if p != pid || cur == 0 {
            return false;
        }
        let Some((handles, pending)) = f(handles, pending) else {
            return false;
        };
        let new = if handles == 0 && pending == 0 {
            0
        } else {
            slot::pack(pid, handles, pending)
        };
        match s.compare_exchange(cur, new, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Counts one handle of this process less.
fn detach(h: &Holders, i: usize) {
    update(h, i, std::process::id(), |handles, pending| {
        Some((handles.checked_sub(1)?, pending))
    });
}

/// Counts one more unopened export in this process's slot `i`.
fn pend(h: &Holders, i: usize) {
    let counted = update(h, i, std::process::id(), |handles, pending| {
        (pending < slot::MAX).then_some((handles, pending + 1))
    });
    if !counted {
        h.flags.fetch_or(UNTRACKED, SeqCst);
    }
}

/// One export of `pid` was opened (or its send failed): one pending less.
fn unpend(h: &Holders, pid: u32) {
    for i in 0..SLOTS {
        if update(h, i, pid, |handles, pending| {
            Some((handles, pending.checked_sub(1)?))
        }) {
            return;
        }
    }
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
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Queue;
    ///
    /// // No item limit, 4 KiB of buffer: the bytes are the only bound.
    /// let q: Queue<String> = Queue::with_capacity(0, 4096).unwrap();
    /// assert_eq!((q.maxsize(), q.capacity_bytes()), (0, 4096));
    /// let small: Queue<u8> = Queue::with_capacity(1, 10).unwrap();
    /// assert_eq!(small.capacity_bytes(), 64); // raised to the minimum
    /// ```
    pub fn with_capacity(max_items: usize, bytes: usize) -> Result<Queue<T>> {
        let bytes = bytes.clamp(64, ring::MAX_CAPACITY);
        let max = if max_items == 0 {
            u32::MAX
        } else {
            u32::try_from(max_items).unwrap_or(u32::MAX)
        };
        let seg = Segment::create(
            Kind::Queue,
            shm::type_tag::<T>(),
            RING_OFFSET + ring::STATE_LEN + bytes,
        )?;
        ring::init(&seg, RING_OFFSET, bytes as u32, max)?;
        Self::attached(seg)
    }

    /// A handle on `seg`, after checking its layout, counted in the table.
    fn attached(seg: Segment) -> Result<Queue<T>> {
        Ring::at(&seg, RING_OFFSET)?;
        let holders = seg
            .state::<Holders>(0)
            .ok_or_else(|| IpcError::InvalidHandle("queue segment too small".into()))?;
        let slot = attach(holders);
        Ok(Queue {
            seg,
            slot,
            _t: PhantomData,
        })
    }

    fn encode(value: &T) -> Result<Vec<u8>> {
        postcard::to_allocvec(value).map_err(|e| IpcError::Serialization(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<T> {
        postcard::from_bytes(bytes).map_err(|e| IpcError::Serialization(e.to_string()))
    }

    fn put_until(&self, value: &T, deadline: Option<Instant>) -> Result<()> {
        // Handles inside the item are sent only if the put succeeds.
        let (bytes, transfer) = shm::capture(|| Self::encode(value));
        self.ring()?.put(&bytes?, deadline, None, &ok)?;
        transfer.commit();
        Ok(())
    }

    /// Appends `value`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] if the queue is or becomes closed;
    /// [`PutError::Failed`] if the value does not serialize
    /// ([`IpcError::Serialization`]) or does not fit in the buffer at all
    /// ([`IpcError::TooLarge`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{IpcError, PutError, Queue};
    ///
    /// let q: Queue<String> = Queue::with_capacity(0, 64).unwrap();
    /// q.put(&"fits".to_string()).unwrap();
    /// let err = q.put(&"x".repeat(100)).unwrap_err();
    /// assert!(matches!(err, PutError::Failed(IpcError::TooLarge { .. })));
    /// ```
    pub fn put(&self, value: &T) -> Result<(), PutError> {
        self.put_until(value, None).map_err(PutError::from_ipc)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PutTimeoutError::Timeout`] if the queue stayed full; otherwise as
    /// [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Queue;
    ///
    /// let q: Queue<u8> = Queue::new(1).unwrap();
    /// q.put_timeout(&1, Duration::from_secs(1)).unwrap();
    /// let err = q.put_timeout(&2, Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout());
    /// ```
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<(), PutTimeoutError> {
        self.put_until(value, deadline_after(timeout))
            .map_err(PutTimeoutError::from_ipc)
    }

    /// Appends `value` if there is room now (and no other process is in the
    /// middle of an operation), as Python's `put_nowait`.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if there is no room now; otherwise as
    /// [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Queue, TryPutError};
    ///
    /// let q: Queue<u8> = Queue::new(1).unwrap();
    /// q.try_put(&1).unwrap();
    /// assert!(matches!(q.try_put(&2), Err(TryPutError::Full)));
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, value: &T) -> Result<(), TryPutError> {
        self.put_until(value, Some(Instant::now()))
            .map_err(TryPutError::from_ipc)
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        let bytes = self
            .ring()?
            .get(deadline, Some(SLICE), &|slept| match slept {
                true => self.producers_gone(),
                false => Ok(()),
            })?;
        Self::decode(&bytes)
    }

    /// Removes the oldest item, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] on a closed and drained queue;
    /// [`GetError::Disconnected`], or [`GetError::Failed`] with
    /// [`IpcError::PeerDied`], when no one is left who could put (see "A
    /// producer that died" above); [`GetError::Failed`] with
    /// [`IpcError::Serialization`] if the item does not decode as a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Queue;
    ///
    /// let q: Queue<String> = Queue::new(0).unwrap();
    /// let producer = {
    ///     let q = q.clone();
    ///     std::thread::spawn(move || q.put(&"work".to_string()).unwrap())
    /// };
    /// assert_eq!(q.get().unwrap(), "work"); // waits for the producer
    /// producer.join().unwrap();
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        loop {
            match self.get_until(None) {
                // Without a deadline there is no timeout; not reached.
                Err(IpcError::Timeout) => {}
                other => return other.map_err(GetError::from_ipc),
            }
        }
    }

    /// Removes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`] if nothing arrived in time; otherwise
    /// as [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Queue;
    ///
    /// let q: Queue<u8> = Queue::new(0).unwrap();
    /// assert!(q.get_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// q.put(&3).unwrap();
    /// assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 3);
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_until(deadline_after(timeout))
            .map_err(GetTimeoutError::from_ipc)
    }

    /// Removes the oldest item if there is one (and no other process is in
    /// the middle of an operation), as Python's `get_nowait`.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`] if nothing is there now; otherwise as
    /// [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Queue, TryGetError};
    ///
    /// let q: Queue<u8> = Queue::new(0).unwrap();
    /// assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    /// q.put(&1).unwrap();
    /// q.close();
    /// assert_eq!(q.try_get().unwrap(), 1); // a closed queue drains first
    /// assert!(matches!(q.try_get(), Err(TryGetError::Closed)));
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_until(Some(Instant::now()))
            .map_err(TryGetError::from_ipc)
    }

    /// A blocking iterator over the items: each `next` is a [`get`](Self::get).
    /// It ends when the queue is closed and drained, or when no producer is
    /// left; an item that fails to decode is yielded as an error (the next
    /// item follows), any other error is yielded once and ends it.
    ///
    /// ```
    /// use troika::ipc::Queue;
    ///
    /// let q: Queue<u32> = Queue::new(0).unwrap();
    /// let producer = {
    ///     let q = q.clone();
    ///     std::thread::spawn(move || {
    ///         (1..=3).for_each(|i| q.put(&i).unwrap());
    ///         q.close();
    ///     })
    /// };
    /// let sum: u32 = q.iter().map(Result::unwrap).sum();
    /// producer.join().unwrap();
    /// assert_eq!(sum, 6);
    /// ```
    pub fn iter(&self) -> QueueIter<'_, T> {
        QueueIter {
            queue: self,
            done: false,
        }
    }
}

impl<T> Queue<T> {
    fn ring(&self) -> Result<Ring<'_>> {
        Ring::at(&self.seg, RING_OFFSET)
    }

    fn holders(&self) -> Option<&Holders> {
        self.seg.state::<Holders>(0)
    }

    /// `Err` if no one but this waiting handle could put into the queue any
    /// more (the rule is in the type's docs). Asks the OS about each other
    /// holder, so it runs only after a sleep slice ran out.
    fn producers_gone(&self) -> Result<()> {
        let Some(h) = self.holders() else {
            return Ok(());
        };
        let flags = h.flags.load(SeqCst);
        if flags & SHARED == 0 || flags & UNTRACKED != 0 || self.slot.is_none() {
            return Ok(());
        }
        let me = std::process::id();
        let mut mine = 0;
        let mut dead = None;
        for s in &h.slots {
            let w = s.load(Acquire);
            if w == 0 {
                continue;
            }
            let (pid, handles, pending) = slot::unpack(w);
            if pid == me {
                if pending > 0 {
                    return Ok(());
                }
                mine += handles;
            } else if process_alive(pid) {
                return Ok(());
            } else {
                dead = Some(pid);
            }
        }
        if mine > 1 {
            return Ok(());
        }
        Err(match dead {
            Some(pid) => IpcError::PeerDied { pid },
            None => IpcError::Disconnected,
        })
    }

    /// Closes the queue, for every process that holds it: from now on `put`
    /// fails with [`PutError::Closed`] at once; `get` returns the items
    /// still buffered and then `Closed`; sleeping getters and putters wake
    /// up to find it so, and [`iter`](Self::iter) ends. Closing twice is
    /// harmless.
    pub fn close(&self) {
        if let Ok(r) = self.ring() {
            r.close();
        }
    }

    /// Whether the queue was [closed](Self::close).
    pub fn is_closed(&self) -> bool {
        self.ring().map(|r| r.is_closed()).unwrap_or(true)
    }

    /// Test hook, not API: takes the queue's internal lock and keeps it
    /// until this process dies, as a process stopped in the middle of a
    /// put would.
    #[doc(hidden)]
    pub fn __hold_internal_lock(&self) -> Result<()> {
        self.ring()?.hold_lock_for_test()
    }

    /// Items in the queue (a snapshot: other processes may change it;
    /// Python's `qsize()`).
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.ring().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether the queue is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.ring().map(|r| r.capacity()).unwrap_or(0)
    }

    /// The item limit given to [`new`](Self::new); `0` means there is none
    /// (only the byte capacity bounds the queue), as for
    /// [`sync::Queue::maxsize`](crate::sync::Queue::maxsize).
    pub fn maxsize(&self) -> usize {
        match self.ring().map(|r| r.max_items()) {
            Ok(u32::MAX) | Err(_) => 0,
            Ok(n) => n as usize,
        }
    }
}

/// The blocking iterator of [`Queue::iter`].
#[derive(Debug)]
pub struct QueueIter<'a, T> {
    queue: &'a Queue<T>,
    done: bool,
}

impl<T: Serialize + DeserializeOwned> Iterator for QueueIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.queue.get() {
            Ok(item) => Some(Ok(item)),
            Err(
                GetError::Closed
                | GetError::Disconnected
                | GetError::Failed(IpcError::PeerDied { .. }),
            ) => {
                self.done = true;
                None
            }
            Err(GetError::Failed(e @ IpcError::Serialization(_))) => Some(Err(e)),
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;

    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The export counts as a possible producer until someone opens it,
        // or the send it is part of fails (then it is taken back).
        if let (Some(h), Some(i)) = (self.holders(), self.slot) {
            pend(h, i);
        }
        let undo = {
            let seg = self.seg.clone();
            move || {
                if let Some(h) = seg.state::<Holders>(0) {
                    unpend(h, std::process::id());
                }
            }
        };
        match shm::serialize_segment(&self.seg, s) {
            Ok(ok) => {
                shm::on_send(move |sent| {
                    if !sent {
                        undo();
                    }
                });
                Ok(ok)
            }
            Err(e) => {
                undo();
                Err(e)
            }
        }
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = SegmentRef::deserialize(d)?;
        let seg = Segment::open(&r, Kind::Queue, shm::type_tag::<T>())
            .map_err(serde::de::Error::custom)?;
        Ring::at(&seg, RING_OFFSET).map_err(serde::de::Error::custom)?;
        let holders = seg
            .state::<Holders>(0)
            .ok_or_else(|| serde::de::Error::custom("queue segment too small"))?;
        // Count this handle before the export stops counting.
        let slot = attach(holders);
        if r.pid() != std::process::id() {
            holders.flags.fetch_or(SHARED, SeqCst);
        }
        unpend(holders, r.pid());
        Ok(Queue {
            seg,
            slot,
            _t: PhantomData,
        })
    }
}
