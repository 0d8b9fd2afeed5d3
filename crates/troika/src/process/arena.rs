//! Reusable shared memory for large bodies (see `README.md`, "Large
//! bodies").
//!
//! An *arena* is a memfd that carries one large frame body at a time and is
//! used again for the next one, so that a big message costs a copy into
//! memory that is already allocated and mapped on both sides, instead of a
//! fresh memfd (whose page allocation cost more than the copy), a fresh
//! mapping and its unmapping per message.
//!
//! Layout: the first page is the arena's header — a magic number, a nonce
//! chosen when the arena is made (with the inode, it names the arena to a
//! receiver that keeps it mapped), and the *state* word — and the body
//! starts at [`BODY_AT`]. The memfd is sealed against shrinking (and against
//! further seals) when it is made, so a receiver's mapping can never lose
//! its pages under it: no `SIGBUS`, whatever the sender does later. It may
//! grow (a larger message), never shrink; it is released whole.
//!
//! **Handover.** The sender takes a free arena ([`acquire`]), writes the
//! body — through its own mapping, or with `pwrite` for a long write into
//! pages never written before (the kernel then allocates them without
//! zeroing them first) — and sends the descriptor with the frame's
//! header (marked `IN_MEMFD | IN_ARENA`). Handing the descriptor out
//! ([`Lease::as_fd`]) stores `LENT` in the state word. The receiver maps the
//! arena — or finds the mapping it kept from an earlier message of the same
//! arena — reads the body, and when it is done with it (before it answers,
//! for a worker; once the reply is decoded and before the call's handle is
//! settled, for the parent: [`Release`]) stores `FREE`.
//! The sender takes an arena again only once it reads `FREE` (acquire
//! ordering, the pair of the receiver's release store), so it never writes
//! a body that a well-behaved receiver is still reading. An arena whose
//! receiver died before releasing it stays `LENT` and is never written
//! again. When the pool fails the task that worker was running, it marks
//! the call's arena abandoned ([`Lease::abandon`]), and the arena is
//! dropped with the call's frame instead of joining the free list; any
//! other arena found `LENT` there is the first dropped.
//!
//! **Bounds.** A sending process keeps free arenas between messages: at
//! most [`KEEP_FREE`] (8), and beyond the [`KEEP_ANY`] (2) most recently
//! used — kept whatever their size — only while all of them add up to at
//! most [`KEEP_FREE_BYTES`] (512 MiB); each is at most the frame limit plus
//! a page. So the arenas of a burst of large messages in flight at once
//! (four 64 MiB arguments on their way to two workers) all wait for the
//! next burst, instead of two of them being made afresh each time — and
//! what is kept is memory the process had in use at once a moment before.
//! Arenas in use (one per large message in flight) are not counted. A
//! receiver keeps at most [`KEEP_VIEWS`] mappings. Both are released after
//! [`IDLE`] without a large message (the readers' `poll` wakes for that
//! while they hold any), and a `ProcessPool`'s drop releases the free
//! arenas at once (a pool built per job starts cold; one kept for many
//! jobs stays warm). The descriptor is the memfd's only name: when both
//! sides have dropped their mappings and descriptors (or died), the kernel
//! frees it.
//!
//! **A peer that misbehaves.** A worker is the same program, but it may be
//! broken (memory corruption, a task scribbling through `/proc/self/fd`). It
//! can write its arena, or the parent's arena it was sent, at any time. The
//! reader's bounds never depend on it: every length that bounds an access
//! (the body's, checked against the file's size before mapping, which cannot
//! shrink) lives in the reader's own memory, and the mapping lives as long
//! as any borrow of it. So a concurrent write can change the *values* the
//! decoder sees — garbage in, a decode error or a garbage value out, as a
//! garbage body on the socket would give — but never make it read outside
//! the mapping, fault, or allocate by an unchecked length (the decoders
//! check every length they read against the bytes that remain).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the body starts in an arena: the first page is its header.
pub(crate) const BODY_AT: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"troikaAR");
const MAGIC_AT: usize = 0;
const NONCE_AT: usize = 8;
const STATE_AT: usize = 16;

/// No receiver holds the body: the sender may write it.
const FREE: u32 = 0;
/// The arena was handed to a receiver that has not released it yet.
const LENT: u32 = 1;
/// The receiver died holding the arena ([`Lease::abandon`]): it will never
/// be released, so the lease's end drops it instead of keeping it.
const ABANDONED: u32 = 2;

/// Arenas grow in steps of whole huge pages.
const GRAIN: usize = 2 << 20;

/// At most this many arenas wait, free, for the next large message.
pub(crate) const KEEP_FREE: usize = 8;
/// Free arenas beyond [`KEEP_ANY`] are kept only while all the free ones
/// add up to at most this many bytes.
pub(crate) const KEEP_FREE_BYTES: usize = 512 << 20;
/// This many free arenas are kept whatever their size (a body as large as
/// the frame limit allows, sent again and again, stays warm).
pub(crate) const KEEP_ANY: usize = 2;
/// A receiver keeps at most this many arenas mapped.
pub(crate) const KEEP_VIEWS: usize = 2;
/// Arenas and mappings unused this long are released.
pub(crate) const IDLE: Duration = Duration::from_secs(2);

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// The state word of the arena mapped at `map`.
///
/// # Safety
///
/// `map` must be a live mapping of at least [`BODY_AT`] bytes that outlives
/// the returned reference.
unsafe fn state<'a>(map: *mut u8) -> &'a AtomicU32 {
    // SAFETY: the caller keeps the mapping (page-aligned, so the word at 16
    // is aligned for a u32) alive for 'a. `AtomicU32` has the layout of a
    // `u32`; the peer process accesses the word only with atomic loads and
    // stores of its own (and a broken peer's plain store of a whole aligned
    // word is still a whole word to the hardware).
    unsafe { &*map.add(STATE_AT).cast::<AtomicU32>() }
}

/// A mapping of `len` bytes of `fd`, shared; populated with `populate`.
fn map(
    fd: &OwnedFd,
    len: usize,
    prot: rustix::mm::ProtFlags,
    populate: bool,
) -> io::Result<*mut u8> {
    use rustix::mm::{MapFlags, mmap};
    let flags = if populate {
        MapFlags::SHARED | MapFlags::POPULATE
    } else {
        MapFlags::SHARED
    };
    // SAFETY: a fresh mapping at an address the kernel chooses overlaps
    // nothing of ours. Its pages exist as long as the file is at least
    // `len` bytes long, which callers check (or made so) and which the
    // shrink seal keeps true.
    let ptr = unsafe { mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) }?;
    Ok(ptr.cast())
}

/// A nonce for a new arena: unique enough to tell two arenas apart that a
/// receiver sees under the same inode number (only after the kernel's inode
/// counter wrapped).
fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x =
        time ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The sender's side of an arena: its memfd, mapped read-write.
#[derive(Debug)]
struct Arena {
    fd: OwnedFd,
    map: *mut u8,
    /// Bytes of the file, all mapped.
    size: usize,
    /// Body bytes below this were written once: their pages exist. A long
    /// write above it goes with `pwrite`, which allocates the pages without
    /// zeroing them first (a write through the mapping would fault each in
    /// zeroed, then copy: twice the work for a fresh 64 MiB).
    filled: usize,
    /// Body bytes below this have their pages in our mapping's page table
    /// (`MADV_POPULATE_WRITE` once, instead of a fault per page).
    mapped: usize,
    /// When it was last returned to the free list.
    used: Instant,
}

// SAFETY: the mapping is owned by this value alone (unmapped in `drop`);
// through `&Arena` only the state word is touched, atomically. Writing the
// body needs `&mut Arena`.
unsafe impl Send for Arena {}
// SAFETY: as above: shared references only read private fields and use the
// atomic state word.
unsafe impl Sync for Arena {}

impl Arena {
    /// A new arena with room for a body of `body` bytes, rounded up.
    fn create(body: usize) -> io::Result<Arena> {
        use rustix::fs::{MemfdFlags, SealFlags};
        use rustix::mm::ProtFlags;
        let size = room_for(body)?;
        let fd = rustix::fs::memfd_create(
            "troika-arena",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, size as u64)?;
        // Never shrinks, so no receiver's mapping can lose a page; nobody
        // (a receiver holds the descriptor too) can add seals that would
        // stop it from growing.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)?;
        let map = map(&fd, size, ProtFlags::READ | ProtFlags::WRITE, false)?;
        let arena = Arena {
            fd,
            map,
            size,
            filled: 0,
            mapped: 0,
            used: Instant::now(),
        };
        // SAFETY: the header page is inside the mapping of `size` bytes
        // (at least `BODY_AT`), which this arena owns; nobody else has the
        // descriptor yet.
        unsafe {
            arena.map.add(MAGIC_AT).cast::<u64>().write(MAGIC.to_le());
            arena.map.add(NONCE_AT).cast::<u64>().write(nonce().to_le());
        }
        arena.state().store(FREE, Ordering::Relaxed);
        Ok(arena)
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: `map` is this arena's mapping of `size >= BODY_AT` bytes,
        // alive as long as `self`.
        unsafe { state(self.map) }
    }

    fn capacity(&self) -> usize {
        self.size - BODY_AT
    }

    /// No receiver holds its body (acquire: the receiver's reads are done
    /// before the writes that follow).
    fn is_free(&self) -> bool {
        self.state().load(Ordering::Acquire) == FREE
    }

    /// Make room for a body of `body` bytes (the bytes written stay).
    fn grow(&mut self, body: usize) -> io::Result<()> {
        use rustix::mm::ProtFlags;
        if body <= self.capacity() {
            return Ok(());
        }
        let size = room_for(body.max(self.capacity().saturating_mul(2)))?;
        rustix::fs::ftruncate(&self.fd, size as u64)?;
        let map = map(&self.fd, size, ProtFlags::READ | ProtFlags::WRITE, false)?;
        // SAFETY: the old mapping is this arena's, and no borrow of it is
        // alive (`&mut self`); its contents are the file's, which the new
        // mapping shows.
        let _ = unsafe { rustix::mm::munmap(self.map.cast(), self.size) };
        self.map = map;
        self.size = size;
        self.mapped = 0;
        Ok(())
    }

    /// Put the pages of the body's first `end` bytes that exist in our
    /// page table, in one call (a kernel without `MADV_POPULATE_WRITE`
    /// faults them in one at a time instead).
    fn populate(&mut self, end: usize) {
        let end = end
            .min(self.filled)
            .next_multiple_of(4096)
            .min(self.capacity());
        if end <= self.mapped {
            return;
        }
        let from = self.mapped / 4096 * 4096;
        // SAFETY: `BODY_AT + from .. BODY_AT + end` lies inside this arena's
        // mapping (`end <= capacity()`); populating changes no contents.
        let _ = unsafe {
            rustix::mm::madvise(
                self.map.add(BODY_AT + from).cast(),
                end - from,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
        self.mapped = end;
    }

    /// Write `data` at `at` bytes into the body, growing the arena first if
    /// it must.
    fn write(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        let end = at
            .checked_add(data.len())
            .ok_or_else(|| io::Error::other("a body longer than memory"))?;
        self.grow(end)?;
        if at >= self.filled && data.len() >= 64 << 10 {
            // Fresh pages: allocated by the write itself, never zeroed.
            super::framebuf::write_at(&self.fd, data, (BODY_AT + at) as u64)?;
            self.filled = end;
            return Ok(());
        }
        self.populate(end);
        self.filled = self.filled.max(end);
        // SAFETY: `BODY_AT + at .. BODY_AT + end` lies inside the mapping of
        // `size` bytes (`grow` made `capacity() >= end`), which this arena
        // owns; `data` is ordinary memory of ours, so the two do not
        // overlap. No receiver reads this body now: the arena was taken
        // free and has not been handed out since.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.add(BODY_AT + at), data.len());
        }
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the mapping made for this arena, unmapped only here; no
        // borrow of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.map.cast(), self.size) };
    }
}

/// The file size for a body of `body` bytes: the header page and the body,
/// rounded up to whole huge pages.
fn room_for(body: usize) -> io::Result<usize> {
    body.checked_add(BODY_AT)
        .and_then(|n| n.checked_next_multiple_of(GRAIN))
        .ok_or_else(|| io::Error::other("a body longer than memory"))
}

/// The arenas waiting, free, for the next large message of this process.
static FREE_LIST: Mutex<Vec<Arena>> = Mutex::new(Vec::new());

fn free_list() -> std::sync::MutexGuard<'static, Vec<Arena>> {
    FREE_LIST.lock().unwrap_or_else(|e| e.into_inner())
}

/// An arena with room for a body of `body` bytes, to write one message's
/// body into: a free one kept from an earlier message if there is one (the
/// smallest that fits, or the largest, grown), else a new one.
pub(crate) fn acquire(body: usize) -> io::Result<Lease> {
    let kept = {
        let mut list = free_list();
        let now = Instant::now();
        list.retain(|a| now.duration_since(a.used) < IDLE);
        let fits = list
            .iter()
            .enumerate()
            .filter(|(_, a)| a.capacity() >= body && a.is_free())
            .min_by_key(|(_, a)| a.capacity())
            .map(|(i, _)| i);
        let any = || {
            list.iter()
                .enumerate()
                .filter(|(_, a)| a.is_free())
                .max_by_key(|(_, a)| a.capacity())
                .map(|(i, _)| i)
        };
        fits.or_else(any).map(|i| list.swap_remove(i))
    };
    let arena = match kept {
        Some(mut arena) => {
            arena.grow(body)?;
            arena
        }
        None => Arena::create(body)?,
    };
    Ok(Lease(Some(arena)))
}

/// Drop every free arena now (a `ProcessPool` is dropped: what it may have
/// left must not outlive it).
/// The spare buffers of large decoded bodies go too (`spare.rs`).
pub(crate) fn release_free() {
    let dropped = std::mem::take(&mut *free_list());
    drop(dropped);
    super::spare::trim(true);
}

/// Drop the free arenas (and spare buffers, `spare.rs`) unused for
/// [`IDLE`]. Whether any are left.
pub(crate) fn trim_free() -> bool {
    let spare = super::spare::trim(false);
    let mut list = free_list();
    let now = Instant::now();
    list.retain(|a| now.duration_since(a.used) < IDLE);
    spare || !list.is_empty()
}

/// Unit tests that count or expect reuse of this process's free arenas hold
/// this, so that other tests' messages do not take them meanwhile.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

/// How many arenas this process keeps free (tests).
#[cfg(test)]
pub(crate) fn free_count() -> usize {
    free_list().len()
}

/// An arena taken for one message: its body is written through
/// [`write`](Self::write); it goes back to the free list when dropped.
#[derive(Debug)]
pub(crate) struct Lease(Option<Arena>);

impl Lease {
    /// Write `data` at `at` bytes into the body (growing the arena).
    pub(crate) fn write(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            Some(arena) => arena.write(at, data),
            None => Err(io::Error::other("an arena written after its release")),
        }
    }

    /// The arena's capacity, in body bytes.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, Arena::capacity)
    }
}

impl AsFd for Lease {
    /// The descriptor, to send to the receiver: the arena counts as handed
    /// over from here until the receiver releases it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        let arena = self
            .0
            .as_ref()
            .expect("a lease holds its arena until dropped");
        arena.state().store(LENT, Ordering::Relaxed);
        arena.fd.as_fd()
    }
}

impl Lease {
    /// The receiver this arena was lent to died before releasing it (the
    /// pool fails the task it was running): the arena is never written
    /// again, so when this lease ends it is dropped, not kept among the
    /// free ones (where it would only hold memory and a descriptor until
    /// the idle trim, and count against the bounds).
    pub(crate) fn abandon(&self) {
        if let Some(arena) = &self.0 {
            let _ = arena.state().compare_exchange(
                LENT,
                ABANDONED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut arena) = self.0.take() else {
            return;
        };
        if arena.state().load(Ordering::Relaxed) == ABANDONED {
            // Unmapped and closed now.
            return;
        }
        arena.used = Instant::now();
        let mut list = free_list();
        list.push(arena);
        let mut dropped = Vec::new();
        while over_bounds(&list) {
            // Drop one: an arena a receiver never released first (it died
            // holding it), else the least recently used.
            let victim = list
                .iter()
                .position(|a| !a.is_free())
                .or_else(|| {
                    list.iter()
                        .enumerate()
                        .min_by_key(|(_, a)| a.used)
                        .map(|(i, _)| i)
                })
                .unwrap_or(0);
            dropped.push(list.swap_remove(victim));
        }
        drop(list);
        // Unmapped and closed outside the lock.
        drop(dropped);
    }
}

/// Whether the free list holds more than it may keep: more than
/// [`KEEP_FREE`] arenas, or more than [`KEEP_ANY`] whose sizes add up to
/// more than [`KEEP_FREE_BYTES`].
fn over_bounds(list: &[Arena]) -> bool {
    let bytes: usize = list.iter().map(|a| a.size).sum();
    list.len() > KEEP_FREE || (list.len() > KEEP_ANY && bytes > KEEP_FREE_BYTES)
}

/// A receiver's mapping of an arena, kept between messages.
#[derive(Debug)]
struct View {
    dev: u64,
    ino: u64,
    nonce: u64,
    map: *mut u8,
    len: usize,
    used: Instant,
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping made for this view, unmapped only here; the
        // borrows handed out by `Views::open` borrow the `Views`.
        let _ = unsafe { rustix::mm::munmap(self.map.cast(), self.len) };
    }
}

/// The release of one body lent by [`Views::open_released_by`]: tells the
/// sender, once, that the body is no longer read, when [`now`](Self::now)
/// is called — which its holder must do on every path (it has no `Drop`,
/// so that it borrows the receiver only until its last use; a body never
/// released keeps its arena from its sender for good). It borrows the
/// receiver's views, so the mapping outlives it. Empty (releasing nothing)
/// for a body that was not in an arena.
#[derive(Debug, Default)]
pub(crate) struct Release<'a> {
    state: std::cell::Cell<Option<&'a AtomicU32>>,
}

impl Release<'_> {
    /// Release the body now (release ordering: every read of it happens
    /// before the sender's next write); later calls and the drop do
    /// nothing.
    pub(crate) fn now(&self) {
        if let Some(state) = self.state.take() {
            state.store(FREE, Ordering::Release);
        }
    }
}

/// A receiver's arenas: the mappings it keeps, and the one whose body it
/// is reading now.
#[derive(Debug, Default)]
pub(crate) struct Views {
    views: Vec<View>,
    /// The view whose body was handed out last and is not released yet.
    lent: Option<usize>,
}

// SAFETY: the mappings are owned by this value alone; the bodies it lends
// borrow it.
unsafe impl Send for Views {}

impl Views {
    /// The body of `len` bytes in the arena `fd` (a descriptor received
    /// with a frame's header): checked, mapped (or found mapped), and lent
    /// until [`release`](Self::release). The descriptor is closed.
    ///
    /// Refused as `InvalidData`: not a regular file, not sealed against
    /// shrinking, shorter than its header page and the body, without the
    /// arena's magic number, or not mappable read-write (a read-only
    /// descriptor).
    pub(crate) fn open(&mut self, fd: OwnedFd, len: u64) -> io::Result<&[u8]> {
        Ok(self.open_as(fd, len, false)?.0)
    }

    /// [`open`](Self::open), but the body is released through the returned
    /// [`Release`] (as soon as its reader is done with it), not by this
    /// value's next [`release`](Self::release).
    pub(crate) fn open_released_by(
        &mut self,
        fd: OwnedFd,
        len: u64,
    ) -> io::Result<(&[u8], Release<'_>)> {
        let (body, release) = self.open_as(fd, len, true)?;
        Ok((body, release.unwrap_or_default()))
    }

    fn open_as(
        &mut self,
        fd: OwnedFd,
        len: u64,
        detached: bool,
    ) -> io::Result<(&[u8], Option<Release<'_>>)> {
        use rustix::fs::{FileType, SealFlags};
        self.release();
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(invalid("the descriptor of a frame's arena is not a memfd"));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|_| invalid("the descriptor of a frame's arena is not a memfd"))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(invalid("a frame's arena is not sealed against shrinking"));
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let need = len
            .checked_add(BODY_AT as u64)
            .filter(|&need| need <= size)
            .and_then(|need| usize::try_from(need).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "a frame's arena holds {size} bytes where its header announced a body of {len}"
                ))
            })?;
        let mut head = [0u8; 16];
        if rustix::io::pread(&fd, &mut head, 0)? != head.len() {
            return Err(invalid("a frame's arena has no header"));
        }
        let magic = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let nonce = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
        if magic != MAGIC {
            return Err(invalid("a frame's arena has no arena header"));
        }
        let (dev, ino) = (stat.st_dev, stat.st_ino);
        let found = self
            .views
            .iter()
            .position(|v| (v.dev, v.ino, v.nonce) == (dev, ino, nonce));
        let index = match found {
            Some(i) if self.views[i].len >= need => i,
            found => {
                // Map what this body needs, whole pages, within the file
                // (which is at least `need` bytes and never shrinks).
                let len = need.next_multiple_of(4096).min(size as usize).max(need);
                let map = map_view(&fd, len)?;
                let view = View {
                    dev,
                    ino,
                    nonce,
                    map,
                    len,
                    used: Instant::now(),
                };
                match found {
                    Some(i) => {
                        self.views[i] = view;
                        i
                    }
                    None => {
                        if self.views.len() >= KEEP_VIEWS
                            && let Some(oldest) =
                                (0..self.views.len()).min_by_key(|&i| self.views[i].used)
                        {
                            self.views.swap_remove(oldest);
                        }
                        self.views.push(view);
                        self.views.len() - 1
                    }
                }
            }
        };
        drop(fd);
        let view = &mut self.views[index];
        view.used = Instant::now();
        let release = if detached {
            // SAFETY: the view's mapping is at least `BODY_AT` bytes and
            // lives as long as `view`, which the returned `Release`
            // borrows (through `self`).
            let word = unsafe { state(view.map) };
            Some(Release {
                state: std::cell::Cell::new(Some(word)),
            })
        } else {
            self.lent = Some(index);
            None
        };
        let view = &self.views[index];
        let body = need - BODY_AT;
        // SAFETY: `BODY_AT .. need` lies inside the view's mapping of
        // `view.len >= need` bytes of a file that cannot shrink below its
        // size at mapping time (checked seal): every page stays readable
        // for as long as the view lives, and the returned slice borrows
        // `self`, so the view outlives it. The sender does not write the
        // body until we release it (the state word: see the module note);
        // a broken sender that does can change the bytes read, never the
        // slice's bounds or the mapping's life (module note, "A peer that
        // misbehaves").
        let body = unsafe { std::slice::from_raw_parts(view.map.add(BODY_AT), body) };
        Ok((body, release))
    }

    /// Tell the sender the body lent last is no longer read (release: every
    /// read of it happens before the sender's next write).
    pub(crate) fn release(&mut self) {
        if let Some(index) = self.lent.take()
            && let Some(view) = self.views.get(index)
        {
            // SAFETY: the view's mapping is at least `BODY_AT` bytes (it
            // holds a body after its header) and lives as long as `view`.
            unsafe { state(view.map) }.store(FREE, Ordering::Release);
        }
    }

    /// Unmap the arenas unused for [`IDLE`] (all of them with `all`).
    /// Whether any are still mapped.
    pub(crate) fn trim(&mut self, all: bool) -> bool {
        self.release();
        let now = Instant::now();
        self.views
            .retain(|v| !all && now.duration_since(v.used) < IDLE);
        !self.views.is_empty()
    }

    /// How many arenas are mapped (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.views.len()
    }
}

/// Map a received arena: readable, and its header page writable (the
/// receiver writes only the state word).
fn map_view(fd: &OwnedFd, len: usize) -> io::Result<*mut u8> {
    use rustix::mm::{MprotectFlags, ProtFlags};
    let ptr = map(fd, len, ProtFlags::READ, true)?;
    // SAFETY: the first page of the mapping just made (`len >= BODY_AT`).
    let writable = unsafe {
        rustix::mm::mprotect(
            ptr.cast(),
            BODY_AT,
            MprotectFlags::READ | MprotectFlags::WRITE,
        )
    };
    if writable.is_err() {
        // SAFETY: the mapping just made, borrowed by nothing.
        let _ = unsafe { rustix::mm::munmap(ptr.cast(), len) };
        return Err(invalid(
            "a frame's arena cannot be written (read-only descriptor)",
        ));
    }
    Ok(ptr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a receiver sees of a lease's body.
    fn receive(views: &mut Views, lease: &Lease, len: usize) -> Vec<u8> {
        let fd = lease.as_fd().try_clone_to_owned().unwrap();
        views.open(fd, len as u64).unwrap().to_vec()
    }

    /// An arena is written, read, released and reused: the second message
    /// takes the same memfd (same mapping on the receiver), and a message
    /// larger than the arena grows it, bytes checked each time.
    #[test]
    fn an_arena_is_reused_and_grows() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        release_free();
        let mut views = Views::default();
        let a: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let mut lease = acquire(a.len()).unwrap();
        lease.write(0, &a[..10]).unwrap();
        lease.write(10, &a[10..]).unwrap();
        assert!(receive(&mut views, &lease, a.len()) == a);
        let first = lease
            .0
            .as_ref()
            .unwrap()
            .fd
            .as_fd()
            .try_clone_to_owned()
            .unwrap();
        let ino = rustix::fs::fstat(&first).unwrap().st_ino;
        drop(lease);
        // Not yet released: a second message takes another arena.
        let other = acquire(10).unwrap();
        assert_ne!(
            rustix::fs::fstat(other.0.as_ref().unwrap().fd.as_fd())
                .unwrap()
                .st_ino,
            ino
        );
        drop(other);
        views.release();
        let b: Vec<u8> = (0..9 << 20).map(|i| (i % 241) as u8).collect();
        // Released: the first arena (4 MiB) is the one that fits 3 MiB.
        let mut lease = acquire(3 << 20).unwrap();
        assert_eq!(
            rustix::fs::fstat(lease.0.as_ref().unwrap().fd.as_fd())
                .unwrap()
                .st_ino,
            ino
        );
        lease.write(0, &b).unwrap();
        assert!(lease.capacity() >= b.len());
        assert!(receive(&mut views, &lease, b.len()) == b);
        assert_eq!(views.len(), 1, "the grown arena was mapped again in place");
        drop(lease);
        views.release();
        assert!(free_count() <= KEEP_FREE);
        release_free();
        assert_eq!(free_count(), 0);
    }

    /// A body opened with its own [`Release`] is released by it, once: not
    /// by the views' next `release` (so a second lending of the same arena,
    /// after the sender took it back, is never released by the first
    /// message's reader), and a second `now()` stores nothing.
    #[test]
    fn a_detached_release_frees_the_arena_once() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        release_free();
        let mut views = Views::default();
        let a: Vec<u8> = (0..1 << 20).map(|i| (i % 239) as u8).collect();
        let mut lease = acquire(a.len()).unwrap();
        lease.write(0, &a).unwrap();
        let fd = lease.as_fd().try_clone_to_owned().unwrap();
        let ino = rustix::fs::fstat(&fd).unwrap().st_ino;
        let state_word = |lease: &Lease| lease.0.as_ref().unwrap().state().load(Ordering::Acquire);
        {
            let (body, release) = views.open_released_by(fd, a.len() as u64).unwrap();
            assert!(body == a.as_slice());
            assert_eq!(state_word(&lease), LENT, "lent until released");
            release.now();
            assert_eq!(state_word(&lease), FREE);
            // The sender takes it back and lends it again...
            lease
                .0
                .as_ref()
                .unwrap()
                .state()
                .store(LENT, Ordering::Release);
            // ...and the first message's release is spent.
            release.now();
            assert_eq!(state_word(&lease), LENT, "a spent release stores nothing");
        }
        views.release();
        assert_eq!(
            state_word(&lease),
            LENT,
            "the views did not lend it: nothing to release"
        );
        lease
            .0
            .as_ref()
            .unwrap()
            .state()
            .store(FREE, Ordering::Release);
        drop(lease);
        // Released: the next message takes the same arena.
        let again = acquire(10).unwrap();
        let again_ino = rustix::fs::fstat(again.0.as_ref().unwrap().fd.as_fd())
            .unwrap()
            .st_ino;
        assert_eq!(again_ino, ino);
        drop(again);
        release_free();
    }

    /// The arenas of a burst of large messages in flight at once all wait
    /// for the next burst (a 64 MiB burst of four on 2 workers found two
    /// fresh arenas every time when only two were kept), within the bounds
    /// in count and bytes; two are kept whatever their size.
    #[test]
    fn a_burst_s_arenas_are_all_kept_within_the_bounds() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        release_free();
        let body = 64 << 20;
        let burst: Vec<Lease> = (0..4).map(|_| acquire(body).unwrap()).collect();
        drop(burst);
        assert_eq!(free_count(), 4, "every arena of the burst is kept");
        let again: Vec<Lease> = (0..4).map(|_| acquire(body).unwrap()).collect();
        assert_eq!(free_count(), 0, "the next burst takes them all");
        drop(again);
        let many: Vec<Lease> = (0..KEEP_FREE + 3).map(|_| acquire(10).unwrap()).collect();
        drop(many);
        assert_eq!(free_count(), KEEP_FREE);
        release_free();
        let huge = KEEP_FREE_BYTES / 2;
        let large: Vec<Lease> = (0..3).map(|_| acquire(huge).unwrap()).collect();
        drop(large);
        assert_eq!(free_count(), KEEP_ANY, "two of any size");
        release_free();
        assert_eq!(free_count(), 0);
    }

    /// A receiver refuses an arena whose file is shorter than the body its
    /// header announces, one not sealed against shrinking, and a memfd
    /// without the arena's header.
    #[test]
    fn a_forged_arena_is_refused() {
        use rustix::fs::{MemfdFlags, SealFlags};
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut views = Views::default();
        let lease = acquire(10).unwrap();
        let fd = lease.as_fd().try_clone_to_owned().unwrap();
        let size = rustix::fs::fstat(&fd).unwrap().st_size as u64;
        let err = views.open(fd, size).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let fd = lease.as_fd().try_clone_to_owned().unwrap();
        assert!(views.open(fd, u64::MAX).is_err());
        let plain = rustix::fs::memfd_create("x", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&plain, 1 << 20).unwrap();
        let err = views.open(plain.try_clone().unwrap(), 10).unwrap_err();
        assert!(err.to_string().contains("shrinking"), "{err}");
        rustix::fs::fcntl_add_seals(&plain, SealFlags::SHRINK).unwrap();
        let err = views.open(plain, 10).unwrap_err();
        assert!(err.to_string().contains("arena header"), "{err}");
        assert_eq!(views.len(), 0);
    }
}
