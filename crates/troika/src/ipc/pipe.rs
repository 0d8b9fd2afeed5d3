//! `Pipe<S, R>`: a two-way typed connection between two processes.

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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Default buffer of each direction of a pipe (1 MiB).
pub const DEFAULT_PIPE_BYTES: usize = 1 << 20;

#[repr(C)]
struct Ends {
    /// The pid of the process holding each end.
    owner: [AtomicU32; 2],
    /// Set when an end is dropped (closed) by its process.
    closed: [AtomicU32; 2],
}
// SAFETY: repr(C), atomics only, valid for any bit pattern.
unsafe impl ShmState for Ends {}

const ENDS_LEN: usize = 64;

/// One end of a two-way connection between two processes (Python's
/// `multiprocessing.Pipe()` connection): it sends `S` and receives `R`; its
/// peer, made by the same [`Pipe::pair`] call, is a `Pipe<R, S>`.
///
/// Each direction is a ring buffer in shared memory ([`DEFAULT_PIPE_BYTES`]
/// unless set with [`Pipe::pair_with_capacity`]); a message whose encoding
/// exceeds it is refused with [`IpcError::TooLarge`] (inside
/// [`PutError::Failed`]). `send` is a queue's `put` and `recv` its `get`:
/// they return the same error types, [`PutError`], [`TryPutError`],
/// [`PutTimeoutError`], [`GetError`], [`TryGetError`] and
/// [`GetTimeoutError`].
///
/// # End-of-file and a dead peer
///
/// Dropping an end closes it: the peer's `recv` returns the messages still
/// buffered and then [`GetError::Disconnected`], and its `send` fails with
/// `Disconnected` at once. Each end records the pid of the process that holds
/// it; a `recv` or `send` that waits checks every 20 ms whether that process
/// still runs, and fails with [`IpcError::PeerDied`] (inside `Failed`) if it
/// does not — a killed peer is an error, never a hang. (A `send` that finds room does not
/// ask the OS about the peer, to stay fast: like a write into a socket
/// buffer, it succeeds and the message is lost with the peer.)
///
/// # Timeouts
///
/// [`try_recv`](Self::try_recv) / [`try_send`](Self::try_send) wait for
/// nothing and [`recv_timeout`](Self::recv_timeout) /
/// [`send_timeout`](Self::send_timeout) until their deadline at most, counting the wait for the ring's internal
/// lock: a peer stopped (SIGSTOP) in the middle of a send cannot hang them.
///
/// # Handing an end to another process
///
/// Serialize it (serde), typically as an argument of a child process or a
/// pool task. Sending *moves* the end: the receiving process becomes its
/// holder, and the copy left here becomes inert (using it fails with
/// [`IpcError::InvalidHandle`] inside `Failed`, dropping it does not close the pipe, and
/// serializing it again fails). Until the receiver has opened it, the end
/// counts as held by this process.
///
/// The move takes effect only if the send really happens. When the end
/// travels inside the argument of [`Process::spawn`](crate::Process::spawn),
/// or inside an item of a [`Queue::put`](super::Queue::put) or a
/// [`send`](Self::send), and that send fails (another part of the message
/// does not serialize, the item is too large, the child could not be
/// started), the end stays here, usable, and dropping it closes the pipe as
/// usual — the peer is not left waiting for an end that never arrived. An
/// end serialized by hand (say with `serde_json`) counts as sent at once.
///
/// # Examples
///
/// ```
/// use troika::ipc::Pipe;
///
/// let (parent, child) = Pipe::<String, Vec<i32>>::pair().unwrap();
/// child.send(&vec![42, 7]).unwrap();
/// assert_eq!(parent.recv().unwrap(), vec![42, 7]);
/// parent.send(&"test".to_string()).unwrap();
/// assert_eq!(child.recv().unwrap(), "test");
/// drop(parent);
/// assert!(child.recv().unwrap_err().is_disconnected());
/// ```
pub struct Pipe<S, R> {
    seg: Segment,
    end: usize,
    /// Set once the end was sent to another process (shared with the
    /// pending send that sets it when it commits).
    moved: Arc<AtomicBool>,
    _t: PhantomData<fn(S) -> R>,
}

impl<S, R> std::fmt::Debug for Pipe<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("end", &self.end)
            .field("seg", &self.seg)
            .finish()
    }
}

fn tag<A, B>() -> u64 {
    shm::type_tag::<(A, B)>()
}

fn ring_offset(end: usize, cap: usize) -> usize {
    ENDS_LEN + end * (ring::STATE_LEN + cap)
}

impl<S: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned> Pipe<S, R> {
    /// Two connected ends with the default buffer size.
    pub fn pair() -> Result<(Pipe<S, R>, Pipe<R, S>)> {
        Self::pair_with_capacity(DEFAULT_PIPE_BYTES)
    }

    /// Two connected ends with `bytes` of buffer in each direction (at least
    /// 64, at most 2 GiB). A message takes its postcard encoding plus 4
    /// bytes; one that cannot fit even in an empty buffer is refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{IpcError, Pipe, PutError};
    ///
    /// let (a, _b) = Pipe::<Vec<u8>, ()>::pair_with_capacity(256).unwrap();
    /// a.send(&vec![0; 200]).unwrap();
    /// let err = a.send(&vec![0; 300]).unwrap_err();
    /// assert!(matches!(err, PutError::Failed(IpcError::TooLarge { capacity: 256, .. })));
    /// ```
    pub fn pair_with_capacity(bytes: usize) -> Result<(Pipe<S, R>, Pipe<R, S>)> {
        let cap = bytes.clamp(64, ring::MAX_CAPACITY);
        let total = ENDS_LEN + 2 * (ring::STATE_LEN + cap);
        let seg = Segment::create(Kind::Pipe, tag::<S, R>(), total)?;
        for end in 0..2 {
            ring::init(&seg, ring_offset(end, cap), cap as u32, u32::MAX)?;
        }
        let ends = seg
            .state::<Ends>(0)
            .ok_or_else(|| IpcError::InvalidHandle("pipe segment too small".into()))?;
        for o in &ends.owner {
            o.store(std::process::id(), Ordering::Release);
        }
        let a = Pipe {
            seg: seg.clone(),
            end: 0,
            moved: Arc::new(AtomicBool::new(false)),
            _t: PhantomData,
        };
        let b = Pipe {
            seg,
            end: 1,
            moved: Arc::new(AtomicBool::new(false)),
            _t: PhantomData,
        };
        a.rings()?;
        Ok((a, b))
    }

    /// Sends `value`, waiting while the buffer is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Disconnected`] if the peer dropped its end;
    /// [`PutError::Failed`] if its process died while this one waited
    /// ([`IpcError::PeerDied`]), or the value does not serialize or fit.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Pipe, PutError};
    ///
    /// let (a, b) = Pipe::<u32, u32>::pair().unwrap();
    /// a.send(&1).unwrap();
    /// drop(b);
    /// assert!(matches!(a.send(&2), Err(PutError::Disconnected)));
    /// ```
    pub fn send(&self, value: &S) -> Result<(), PutError> {
        self.send_until(value, None).map_err(PutError::from_ipc)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PutTimeoutError::Timeout`] if the buffer stayed full; otherwise as
    /// [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Pipe;
    ///
    /// let (a, _b) = Pipe::<Vec<u8>, ()>::pair_with_capacity(64).unwrap();
    /// a.send_timeout(&vec![0; 40], Duration::from_secs(1)).unwrap();
    /// let err = a.send_timeout(&vec![0; 40], Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout()); // nobody reads: the buffer stays full
    /// ```
    pub fn send_timeout(&self, value: &S, timeout: Duration) -> Result<(), PutTimeoutError> {
        self.send_until(value, deadline_after(timeout))
            .map_err(PutTimeoutError::from_ipc)
    }

    /// Sends `value` if there is room now (and the peer is not in the
    /// middle of an operation on the buffer).
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if there is no room now; otherwise as
    /// [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Pipe, TryPutError};
    ///
    /// let (a, b) = Pipe::<Vec<u8>, ()>::pair_with_capacity(64).unwrap();
    /// a.try_send(&vec![0; 40]).unwrap();
    /// assert!(matches!(a.try_send(&vec![0; 40]), Err(TryPutError::Full)));
    /// drop(b);
    /// assert!(a.try_send(&vec![]).unwrap_err().is_disconnected());
    /// ```
    pub fn try_send(&self, value: &S) -> Result<(), TryPutError> {
        self.send_until(value, Some(Instant::now()))
            .map_err(TryPutError::from_ipc)
    }

    fn send_until(&self, value: &S, deadline: Option<Instant>) -> Result<()> {
        // Handles inside the message are sent only if the send succeeds.
        let (bytes, transfer) = shm::capture(|| {
            postcard::to_allocvec(value).map_err(|e| IpcError::Serialization(e.to_string()))
        });
        let bytes = bytes?;
        let (out, _) = self.rings()?;
        self.peer_gone(false)?;
        out.put(&bytes, deadline, Some(SLICE), &|slept| {
            self.peer_gone(slept)
        })?;
        transfer.commit();
        Ok(())
    }

    /// Receives the next message, waiting as long as the peer lives.
    ///
    /// # Errors
    ///
    /// [`GetError::Disconnected`] once the peer dropped its end and every
    /// message it sent was received (end-of-file); [`GetError::Failed`] with
    /// [`IpcError::PeerDied`] if the peer's process died, or with
    /// [`IpcError::Serialization`] if the message does not decode.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Pipe;
    ///
    /// let (a, b) = Pipe::<String, ()>::pair().unwrap();
    /// let t = std::thread::spawn(move || {
    ///     a.send(&"hello".to_string()).unwrap();
    ///     // `a` is dropped here: end-of-file for `b`
    /// });
    /// assert_eq!(b.recv().unwrap(), "hello");
    /// assert!(b.recv().unwrap_err().is_disconnected());
    /// t.join().unwrap();
    /// ```
    pub fn recv(&self) -> Result<R, GetError> {
        loop {
            match self.recv_until(None) {
                // Without a deadline there is no timeout; not reached.
                Err(IpcError::Timeout) => {}
                other => return other.map_err(GetError::from_ipc),
            }
        }
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`] if nothing arrived in time; otherwise
    /// as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Pipe;
    ///
    /// let (a, b) = Pipe::<u8, u8>::pair().unwrap();
    /// assert!(b.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// a.send(&9).unwrap();
    /// assert_eq!(b.recv_timeout(Duration::from_secs(1)).unwrap(), 9);
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, GetTimeoutError> {
        self.recv_until(deadline_after(timeout))
            .map_err(GetTimeoutError::from_ipc)
    }

    /// Receives a message if one is buffered (Python's `conn.poll()`
    /// followed by `conn.recv()`).
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`] if nothing is buffered now; otherwise as
    /// [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Pipe, TryGetError};
    ///
    /// let (a, b) = Pipe::<u8, u8>::pair().unwrap();
    /// assert!(matches!(b.try_recv(), Err(TryGetError::Empty)));
    /// a.send(&1).unwrap();
    /// assert_eq!(b.try_recv().unwrap(), 1);
    /// ```
    pub fn try_recv(&self) -> Result<R, TryGetError> {
        self.recv_until(Some(Instant::now()))
            .map_err(TryGetError::from_ipc)
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<R> {
        let (_, inp) = self.rings()?;
        let bytes = inp.get(deadline, Some(SLICE), &|slept| self.peer_gone(slept))?;
        postcard::from_bytes(&bytes).map_err(|e| IpcError::Serialization(e.to_string()))
    }
}

impl<S, R> Pipe<S, R> {
    fn ends(&self) -> Result<&Ends> {
        self.seg
            .state::<Ends>(0)
            .ok_or_else(|| IpcError::InvalidHandle("pipe segment too small".into()))
    }

    /// (ring this end writes, ring this end reads).
    fn rings(&self) -> Result<(Ring<'_>, Ring<'_>)> {
        if self.moved.load(Ordering::Acquire) {
            return Err(IpcError::InvalidHandle(
                "this pipe end was sent to another process".into(),
            ));
        }
        // Ring 0 starts right after the ends block; its capacity tells where
        // ring 1 starts. Both are validated against the segment size.
        let r0 = Ring::at(&self.seg, ring_offset(0, 0))?;
        let r1 = Ring::at(&self.seg, ring_offset(1, r0.capacity()))?;
        Ok(if self.end == 0 { (r0, r1) } else { (r1, r0) })
    }

    /// `Err` if the peer closed its end, or (when `ask_os`, which costs a few
    /// system calls) if its process died.
    fn peer_gone(&self, ask_os: bool) -> Result<()> {
        let ends = self.ends()?;
        let peer = 1 - self.end;
        if ends.closed[peer].load(Ordering::Acquire) != 0 {
            return Err(IpcError::Disconnected);
        }
        let pid = ends.owner[peer].load(Ordering::Acquire);
        if ask_os && pid != std::process::id() && !process_alive(pid) {
            return Err(IpcError::PeerDied { pid });
        }
        Ok(())
    }

    /// Test hook, not API: takes the internal lock of the ring this end
    /// sends on and keeps it until this process dies, as a process stopped
    /// in the middle of a send would.
    #[doc(hidden)]
    pub fn __hold_internal_lock(&self) -> Result<()> {
        self.rings()?.0.hold_lock_for_test()
    }

    /// The pid of the process that holds the other end (as far as known: an
    /// end in transit counts as its sender's until it is opened).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Pipe;
    ///
    /// let (a, _b) = Pipe::<(), ()>::pair().unwrap();
    /// assert_eq!(a.peer_pid(), Some(std::process::id())); // both ends here, for now
    /// ```
    pub fn peer_pid(&self) -> Option<u32> {
        self.ends()
            .ok()
            .map(|e| e.owner[1 - self.end].load(Ordering::Acquire))
    }
}

impl<S, R> Drop for Pipe<S, R> {
    fn drop(&mut self) {
        if self.moved.load(Ordering::Acquire) {
            return;
        }
        if let Ok(ends) = self.ends() {
            ends.closed[self.end].store(1, Ordering::Release);
        }
        if let Ok((out, inp)) = self.rings() {
            out.wake_all();
            inp.wake_all();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PipeRef {
    seg: SegmentRef,
    end: u8,
}

impl<S, R> Serialize for Pipe<S, R> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        if self.moved.load(Ordering::Acquire) {
            return Err(serde::ser::Error::custom(
                "this pipe end was already sent to another process",
            ));
        }
        let r = PipeRef {
            seg: self.seg.export(),
            end: self.end as u8,
        };
        match r.serialize(s) {
            Ok(ok) => {
                // Moved once the send is known to have happened (at once if
                // no send is being captured).
                let moved = Arc::clone(&self.moved);
                let seg = self.seg.clone();
                shm::on_send(move |sent| {
                    if sent {
                        moved.store(true, Ordering::Release);
                    } else {
                        seg.unexport();
                    }
                });
                Ok(ok)
            }
            Err(e) => {
                self.seg.unexport();
                Err(e)
            }
        }
    }
}

impl<'de, S, R> Deserialize<'de> for Pipe<S, R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = PipeRef::deserialize(d)?;
        let end = usize::from(r.end.min(1));
        // End 0's type is (S, R); end 1 is a Pipe<R, S> of the same pair.
        let want = if end == 0 {
            tag::<S, R>()
        } else {
            tag::<R, S>()
        };
        let seg = Segment::open(&r.seg, Kind::Pipe, want).map_err(serde::de::Error::custom)?;
        let p = Pipe {
            seg,
            end,
            moved: Arc::new(AtomicBool::new(false)),
            _t: PhantomData,
        };
        p.rings().map_err(serde::de::Error::custom)?;
        let ends = p.ends().map_err(serde::de::Error::custom)?;
        ends.owner[end].store(std::process::id(), Ordering::Release);
        Ok(p)
    }
}
