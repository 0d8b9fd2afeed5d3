//! Shared-memory segments: anonymous `memfd` files, mapped `MAP_SHARED`,
//! reopened by other processes through `/proc/<pid>/fd/<fd>`.
//!
//! See the module docs of [`crate::ipc`] ("Where the memory lives") for why.

use super::error::{IpcError, Result};
use parking_lot::Mutex;
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::io::Read;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x7472_6f69_6b61_0002; // "troika" + layout version 2
/// Bytes before the payload of every segment (the header, padded to a cache line).
pub(crate) const HEADER: usize = 64;

/// What a segment holds; checked when it is reopened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Lock = 1,
    Semaphore = 2,
    Event = 3,
    Barrier = 4,
    Value = 5,
    Array = 6,
    Queue = 7,
    Pipe = 8,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    token: AtomicU64,
    len: AtomicU64,
    type_tag: AtomicU64,
    kind: AtomicU32,
    /// How many times a process serialized a handle to this segment.
    exports: AtomicU32,
    /// How many times a process opened it from a serialized handle.
    claims: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// Marker for the `#[repr(C)]` structs that troika places in shared memory.
///
/// # Safety
///
/// The implementing type must be `#[repr(C)]`, made only of atomics (or
/// arrays of them), valid when all bytes are zero and for every bit pattern
/// (another process may have written anything), and aligned to at most 64.
pub(crate) unsafe trait ShmState: Sync {}

/// One mapping of a memfd; unmapped on drop.
struct Mapping {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that lives until drop; every
// access to it goes through atomics or through data guarded by a
// process-shared lock, so handing the pointer between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the pointer, never unsynchronised
// references to the bytes.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference
        // into the mapping outlives `Segment` (all borrows are tied to it).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A shared-memory segment: a header and `payload_len` bytes.
#[derive(Clone)]
pub(crate) struct Segment {
    map: Arc<Mapping>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // A handle going away is the moment to let go of exported segments
        // whose receivers have all opened them; otherwise a process that
        // sent a handle once would keep its descriptor and mapping until it
        // exits.
        prune_exported();
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("fd", &self.map.fd.as_raw_fd())
            .field("len", &self.map.len)
            .finish()
    }
}

/// What a serialized handle carries: where to find the memfd and how to
/// recognise it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SegmentRef {
    pid: u32,
    fd: i32,
    token: u64,
    len: u64,
}

impl SegmentRef {
    /// The process that serialized the handle.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

/// Segments serialized by this process and not yet opened by as many
/// processes as they were sent to: kept mapped (and their fd numbers valid)
/// so the receivers can find them even if every handle here was dropped.
static EXPORTED: Mutex<Vec<Segment>> = Mutex::new(Vec::new());

/// Whether `h`'s exports are not all claimed yet. The counters wrap at 2^32:
/// compare their distance, not their values.
fn unclaimed(h: &Header) -> bool {
    let exports = h.exports.load(Ordering::Acquire);
    let claims = h.claims.load(Ordering::Acquire);
    (exports.wrapping_sub(claims) as i32) > 0
}

/// Drops the exported segments that every receiver has opened. Skipped when
/// the registry is busy (the caller is dropping segments out of it, or
/// another thread prunes right now).
fn prune_exported() {
    let released: Vec<Segment> = {
        let Some(mut reg) = EXPORTED.try_lock() else {
            return;
        };
        if reg.is_empty() {
            return;
        }
        let (keep, done) = std::mem::take(&mut *reg)
            .into_iter()
            .partition(|s| unclaimed(s.header()));
        *reg = keep;
        done
    };
    // Unmapped here, outside the registry's lock.
    drop(released);
}

fn map(fd: &OwnedFd, len: usize) -> Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of a file we own, at an address the
    // kernel chooses; nothing else aliases it in this process yet.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| IpcError::io("mapping shared memory", e))?;
    NonNull::new(ptr.cast::<u8>())
        .ok_or_else(|| IpcError::InvalidHandle("mmap returned null".into()))
}

impl Segment {
    /// Creates a zero-filled segment with `payload_len` bytes after the header.
    pub(crate) fn create(kind: Kind, type_tag: u64, payload_len: usize) -> Result<Segment> {
        let len = HEADER.checked_add(payload_len).ok_or(IpcError::TooLarge {
            len: payload_len,
            capacity: isize::MAX as usize,
        })?;
        let name = format!("troika-{kind:?}").to_lowercase();
        let fd = rustix::fs::memfd_create(name.as_str(), MemfdFlags::CLOEXEC)
            .map_err(|e| IpcError::io("creating a memfd", e))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| IpcError::io("sizing a memfd", e))?;
        let ptr = map(&fd, len)?;
        let seg = Segment {
            map: Arc::new(Mapping { fd, ptr, len }),
        };
        let h = seg.header();
        h.token.store(random_u64(), Ordering::Relaxed);
        h.len.store(len as u64, Ordering::Relaxed);
        h.type_tag.store(type_tag, Ordering::Relaxed);
        h.kind.store(kind as u32, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Reopens a segment from a handle serialized by any process that still
    /// holds it.
    pub(crate) fn open(r: &SegmentRef, kind: Kind, type_tag: u64) -> Result<Segment> {
        let bad = |why: String| IpcError::InvalidHandle(why);
        let len = usize::try_from(r.len).map_err(|_| bad("length out of range".into()))?;
        if len < HEADER {
            return Err(bad(format!("segment of {len} bytes is too short")));
        }
        let path = format!("/proc/{}/fd/{}", r.pid, r.fd);
        let fd = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| {
                bad(format!(
                    "{path}: {e} (has the process that sent it exited?)"
                ))
            })?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| IpcError::io("fstat of a shared segment", e))?;
        if u64::try_from(st.st_size).ok() != Some(r.len) {
            return Err(bad(format!(
                "{path} is not the segment that was sent (size differs)"
            )));
        }
        let ptr = map(&fd, len)?;
        let seg = Segment {
            map: Arc::new(Mapping { fd, ptr, len }),
        };
        let h = seg.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.token.load(Ordering::Relaxed) != r.token {
            return Err(bad(format!(
                "{path} is not the segment that was sent (token differs)"
            )));
        }
        if h.len.load(Ordering::Relaxed) != r.len {
            return Err(bad("segment length differs from its header".into()));
        }
        if h.kind.load(Ordering::Relaxed) != kind as u32 {
            return Err(bad(format!("the handle is not a {kind:?}")));
        }
        if h.type_tag.load(Ordering::Relaxed) != type_tag {
            return Err(bad(format!(
                "the {kind:?} was created for another element type"
            )));
        }
        h.claims.fetch_add(1, Ordering::AcqRel);
        Ok(seg)
    }

    /// A handle that another process can [`open`](Self::open). Keeps the
    /// segment alive in this process until it has been opened.
    pub(crate) fn export(&self) -> SegmentRef {
        let h = self.header();
        h.exports.fetch_add(1, Ordering::AcqRel);
        {
            let mut reg = EXPORTED.lock();
            if !reg.iter().any(|s| Arc::ptr_eq(&s.map, &self.map)) {
                reg.push(self.clone());
            }
        }
        prune_exported();
        SegmentRef {
            pid: std::process::id(),
            fd: self.map.fd.as_fd().as_raw_fd(),
            token: h.token.load(Ordering::Relaxed),
            len: self.map.len as u64,
        }
    }

    /// Takes back one [`export`](Self::export) whose handle was never sent
    /// (its send failed): no receiver will open it, so it must not keep the
    /// segment mapped here.
    pub(crate) fn unexport(&self) {
        self.header().exports.fetch_sub(1, Ordering::AcqRel);
        prune_exported();
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER bytes (checked at create and
        // open), page-aligned, and Header is repr(C) atomics valid for any
        // bits; the borrow is tied to `self`, which keeps the mapping alive.
        unsafe { &*self.map.ptr.as_ptr().cast::<Header>() }
    }

    /// Bytes after the header.
    pub(crate) fn payload_len(&self) -> usize {
        self.map.len - HEADER
    }

    /// The shared state struct at `offset` bytes into the payload, or `None`
    /// if it would not fit or is misaligned.
    pub(crate) fn state<S: ShmState>(&self, offset: usize) -> Option<&S> {
        let end = offset.checked_add(std::mem::size_of::<S>())?;
        if end > self.payload_len() || !(HEADER + offset).is_multiple_of(std::mem::align_of::<S>())
        {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above; the mapping itself is
        // page-aligned); `S: ShmState` is valid for any bit pattern and only
        // accessed atomically; the borrow is tied to `self`.
        Some(unsafe { &*self.map.ptr.as_ptr().add(HEADER + offset).cast::<S>() })
    }

    /// A raw pointer `offset` bytes into the payload, if `len` bytes from
    /// there are inside the segment. Callers guard the bytes with a lock.
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        let end = offset.checked_add(len)?;
        if end > self.payload_len() {
            return None;
        }
        // SAFETY: HEADER + offset <= map.len (checked above), so the pointer
        // stays inside the mapping.
        NonNull::new(unsafe { self.map.ptr.as_ptr().add(HEADER + offset) })
    }
}

/// Whether process `pid` is running. A zombie (exited, not yet reaped) counts
/// as dead. A process we may not signal counts as alive.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            // A pidfd polls readable once the process has exited.
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match rustix::event::poll(&mut fds, Some(&zero)) {
                Ok(n) => n == 0,
                Err(_) => true,
            }
        }
        Err(rustix::io::Errno::SRCH) => false,
        // No pidfd (old kernel, or valgrind, which does not know the call):
        // signal 0 tells whether the pid exists, /proc whether it is a zombie.
        Err(_) => {
            !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            ) && !is_zombie(pid)
        }
    }
}

/// Whether `/proc/<pid>/stat` shows the process as a zombie (or dead).
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces and parentheses: take the last ')'.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => state == "Z" || state == "X",
        None => false,
    }
}
/// 64 random bits from the kernel (falling back to a time-and-pid mix).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            fnv1a(&[&t.to_ne_bytes()[..], &std::process::id().to_ne_bytes()[..]].concat())
        }
    }
}

/// FNV-1a, for type tags.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A tag naming the element type `T` (its name, size and alignment), so a
/// handle reopened as another type is refused.
pub(crate) fn type_tag<T>() -> u64 {
    let name = std::any::type_name::<T>();
    fnv1a(
        &[
            name.as_bytes(),
            &(std::mem::size_of::<T>() as u64).to_le_bytes(),
            &(std::mem::align_of::<T>() as u64).to_le_bytes(),
        ]
        .concat(),
    )
}

/// Serializes the export of `seg`. A send that then fails (see
/// [`capture`]) takes the export back.
pub(crate) fn serialize_segment<S: serde::Serializer>(
    seg: &Segment,
    s: S,
) -> Result<S::Ok, S::Error> {
    match seg.export().serialize(s) {
        Ok(ok) => {
            let seg = seg.clone();
            on_send(move |sent| {
                if !sent {
                    seg.unexport();
                }
            });
            Ok(ok)
        }
        Err(e) => {
            seg.unexport();
            Err(e)
        }
    }
}

/// Deserializes and opens a segment.
pub(crate) fn deserialize_segment<'de, D: serde::Deserializer<'de>>(
    d: D,
    kind: Kind,
    type_tag: u64,
) -> Result<Segment, D::Error> {
    let r = SegmentRef::deserialize(d)?;
    Segment::open(&r, kind, type_tag).map_err(serde::de::Error::custom)
}

impl AsFd for Segment {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.map.fd.as_fd()
    }
}

/// What to do once it is known whether a serialized handle was really sent:
/// called with `true` if it was, `false` if the send failed.
type SendAction = Box<dyn FnOnce(bool) + Send>;

thread_local! {
    /// How many [`capture`] scopes are open on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The actions of the open scopes, each with the depth of its scope
    /// (innermost last).
    static PENDING: RefCell<Vec<(usize, SendAction)>> = const { RefCell::new(Vec::new()) };
    /// Whether `PENDING` may hold anything (saves touching it, and its
    /// destructor registration, on every message that carries no handle).
    static ANY_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Registers what serializing a handle means once the send is decided. Inside
/// a [`capture`] scope the action waits for the scope's [`Transfer`]; with no
/// scope open the send counts as done, and the action runs at once with
/// `true` (a handle serialized by hand, say with `serde_json`, is taken to
/// be sent).
pub(crate) fn on_send(action: impl FnOnce(bool) + Send + 'static) {
    let depth = DEPTH.with(Cell::get);
    if depth == 0 {
        action(true);
    } else {
        ANY_PENDING.with(|a| a.set(true));
        PENDING.with(|p| p.borrow_mut().push((depth, Box::new(action))));
    }
}

/// Takes the actions of the scope at `depth` (and of any deeper one left
/// behind) out of this thread's list.
fn take_scope(depth: usize) -> Vec<SendAction> {
    if !ANY_PENDING.with(Cell::get) {
        return Vec::new();
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() {
            ANY_PENDING.with(|a| a.set(false));
            return Vec::new();
        }
        let from = p.iter().position(|(d, _)| *d >= depth).unwrap_or(p.len());
        p.drain(from..).map(|(_, a)| a).collect()
    })
}

/// The handles serialized inside one [`capture`] scope, whose send is not
/// decided yet. [`commit`](Self::commit) once the bytes really went out;
/// dropping it instead says the send failed, and undoes what serializing
/// did: a [`Pipe`](super::Pipe) end stays here and usable (and closes its
/// pipe when dropped), an export stops keeping its segment mapped.
#[must_use = "dropping a Transfer undoes the send: commit it once the bytes went out"]
pub(crate) struct Transfer {
    actions: Vec<SendAction>,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("handles", &self.actions.len())
            .finish()
    }
}

impl Transfer {
    /// The send happened: the handles serialized in the scope are now the
    /// receiver's.
    #[inline]
    pub(crate) fn commit(mut self) {
        if self.actions.is_empty() {
            // Nothing to run, nothing allocated: skip the drop.
            std::mem::forget(self);
            return;
        }
        for action in std::mem::take(&mut self.actions) {
            action(true);
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.actions.is_empty() {
            return;
        }
        for action in std::mem::take(&mut self.actions) {
            action(false);
        }
    }
}

/// Runs `f` (which serializes a message) with a scope open on this thread,
/// and returns its result with the [`Transfer`] of the handles it
/// serialized: the caller commits it once the message was really sent, or
/// drops it if the send failed. A panic in `f` undoes the scope.
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Transfer) {
    /// The open scope; dropped only if `f` panics (the send did not happen).
    struct Scope(usize);
    impl Scope {
        fn close(self) -> Transfer {
            let depth = self.0;
            std::mem::forget(self);
            DEPTH.with(|d| d.set(depth - 1));
            Transfer {
                actions: take_scope(depth),
            }
        }
    }
    impl Drop for Scope {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(self.0 - 1));
            drop(Transfer {
                actions: take_scope(self.0),
            });
        }
    }
    let depth = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    let scope = Scope(depth);
    let r = f();
    (r, scope.close())
}
