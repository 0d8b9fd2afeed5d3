//! The small-message transport between the parent and one worker: two
//! single-producer, single-consumer byte rings in one shared mapping (see
//! "Rings" in `README.md`).
//!
//! The rings carry the same byte stream the socket and the pipe carried
//! before them (the frames of `wire.rs`); the descriptors stay, for what a
//! ring cannot do:
//!
//! - **the doorbell**: a reader that found its ring empty for a while sets
//!   its `sleeping` flag and sleeps in `poll` on its old descriptor (the
//!   worker on its socket, the parent on the reply pipe, beside the
//!   worker's pidfd); a writer that finds the flag set after publishing
//!   clears it and writes one byte there. So a writer pays a system call
//!   only when the reader sleeps, and a sleeping reader still wakes on end
//!   of file (the parent closed the socket, the worker died) and on the
//!   worker's exit;
//! - **descriptors**: a body of `wire::MEMFD_MIN` bytes or more travels in a
//!   sealed memfd sent on the socket (with one byte) before its header is put
//!   in the ring, as a reply's did before.
//!
//! # Positions
//!
//! Each side keeps its own position privately (the writer its tail, the
//! reader its head) and publishes it in the shared control block; it never
//! reads its own position back from there. Positions are free-running `u32`s
//! and the capacity is a power of two, so `tail - head` (wrapping) is the
//! number of bytes in use at every wrap, and `pos & (cap - 1)` the offset.
//!
//! # A hostile or dying peer
//!
//! The other side's position is validated on every read: bytes in use above
//! the capacity is an `InvalidData` error (the parent then kills the worker
//! as for any protocol fault). Bytes are copied out of the ring before they
//! are parsed, so a peer scribbling over the ring cannot change a frame under
//! the parser, and the parser's own checks (frame kinds, lengths, limits)
//! apply to whatever it copied. A peer that dies mid-write leaves a partial
//! frame, which the reader treats as a stream cut short once the doorbell
//! reports end of file or the pidfd the exit.
//!
//! # Waiting for room
//!
//! A writer whose frame does not fit (a reply larger than the ring) publishes
//! what it wrote, sets `room_wanted` and sleeps on the futex of the reader's
//! head; the reader wakes it after advancing its head when the flag is set.
//! The sleep is sliced (10 ms): between slices the writer asks whether its
//! peer is gone (the socket or pipe hung up), so a writer never waits for a
//! dead reader.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use super::framebuf::{Frame, Sealed};
use super::{handshake, wire};

/// Data bytes of each ring (a power of two): a multi-call batch (at most
/// 32 KiB) always fits an empty ring, and the rings stay cache-sized.
pub(crate) const RING_BYTES: u32 = 128 << 10;
/// Bytes of the control block before the rings' data.
const CONTROL: usize = 4096;
/// Bytes of one ring's control words (five cache lines).
const RING_CONTROL: usize = 320;
/// Size of the whole mapping: the control block and both rings.
const MAPPING: usize = CONTROL + 2 * RING_BYTES as usize;
/// A writer waiting for room checks this often whether its peer is gone.
const ROOM_SLICE: Duration = Duration::from_millis(10);

/// Which ring of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Parent → worker.
    Calls = 0,
    /// Worker → parent.
    Replies = 1,
}

/// One ring's control words, each on its own cache line: the tail is
/// written by the writer, the head by the reader.
#[repr(C, align(64))]
struct Line(AtomicU32);

#[repr(C)]
struct RingControl {
    /// The writer's position: bytes below it are published.
    tail: Line,
    /// The reader's position: bytes below it are consumed. Also the futex
    /// a writer waiting for room sleeps on.
    head: Line,
    /// Set by the reader before it sleeps in `poll`; swapped to 0 by the
    /// writer that rings the doorbell.
    sleeping: Line,
    /// Set by a writer waiting for room; the reader wakes it.
    room_wanted: Line,
    /// The CPU the reader spins on, plus one (0 while it does not spin): a
    /// thread that waits for the reader's answer and finds itself on the
    /// same CPU stops spinning (see `pool/help.rs`).
    reader_cpu: Line,
}
const _: () = assert!(std::mem::size_of::<RingControl>() == RING_CONTROL);
const _: () = assert!(2 * RING_CONTROL <= CONTROL);
const _: () = assert!(RING_BYTES.is_power_of_two());

/// The shared mapping of one worker's two rings.
pub(crate) struct Rings {
    base: NonNull<u8>,
}

// SAFETY: the mapping lives as long as the value (unmapped in `drop`); the
// control words are atomics, and each ring's data is written only by its one
// writer in bytes the reader does not read until published (see `RingWriter`
// and `RingReader`, of which there is one each per ring and process).
unsafe impl Send for Rings {}
// SAFETY: as above.
unsafe impl Sync for Rings {}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings").finish_non_exhaustive()
    }
}

impl Rings {
    /// A fresh pair of rings in a memfd, and the memfd (close-on-exec) to
    /// hand to the worker. The memfd has no name in any file system: the
    /// kernel frees it with its last descriptor and mapping.
    pub(crate) fn create() -> io::Result<(Arc<Rings>, OwnedFd)> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create(
            "troika-rings",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, MAPPING as u64)?;
        // Its size is fixed: neither side can shrink it under the other's
        // mapping (a read past the end would raise SIGBUS).
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let rings = Rings::map(&fd)?;
        Ok((Arc::new(rings), fd))
    }

    /// Map the rings the parent created (in the worker). The descriptor must
    /// be a memfd of the right size sealed against shrinking.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Arc<Rings>> {
        use rustix::fs::{FileType, SealFlags};
        let stat = rustix::fs::fstat(&fd)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
            || u64::try_from(stat.st_size).ok() != Some(MAPPING as u64)
        {
            return Err(bad(
                "the rings' descriptor is not a memfd of the right size",
            ));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| bad("not a memfd"))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(bad("the rings' memfd is not sealed against shrinking"));
        }
        Ok(Arc::new(Rings::map(&fd)?))
    }

    fn map(fd: &OwnedFd) -> io::Result<Rings> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a fresh mapping chosen by the kernel (no address given)
        // overlaps nothing of ours; the memfd is `MAPPING` bytes and sealed
        // against shrinking, so every page of the mapping stays backed.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                MAPPING,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Rings { base })
    }

    fn control(&self, dir: Dir) -> &RingControl {
        // SAFETY: the control block is inside the mapping (checked by the
        // const assertions), page-aligned plus a multiple of 64 bytes, and
        // `RingControl` is atomics only, valid for any bit pattern.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(dir as usize * RING_CONTROL)
                .cast::<RingControl>()
        }
    }

    fn data(&self, dir: Dir) -> *mut u8 {
        // SAFETY: both rings' data lie inside the mapping of `MAPPING` bytes.
        unsafe {
            self.base
                .as_ptr()
                .add(CONTROL + dir as usize * RING_BYTES as usize)
        }
    }
}

impl Rings {
    /// The CPU the reader of ring `dir` spins on, if it spins (a hint: the
    /// peer writes it).
    pub(crate) fn reader_cpu(&self, dir: Dir) -> Option<usize> {
        let cpu = self.control(dir).reader_cpu.0.load(Relaxed);
        (cpu != 0).then(|| cpu as usize - 1)
    }

    /// Whether ring `dir` holds bytes its reader has not consumed (by the
    /// published positions: a hint for a thread that may take the reader).
    pub(crate) fn has_unread(&self, dir: Dir) -> bool {
        let control = self.control(dir);
        control.tail.0.load(Acquire) != control.head.0.load(Relaxed)
    }

    /// Test hook (see `worker::forge_reply_for_test`): publish a tail the
    /// ring `dir` cannot have.
    pub(crate) fn corrupt_for_test(&self, dir: Dir) {
        let tail = &self.control(dir).tail.0;
        tail.store(
            tail.load(Relaxed).wrapping_add(RING_BYTES + 12_345),
            Release,
        );
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped only here; every
        // reference into it borrows `self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), MAPPING) };
    }
}

fn corrupt(what: &str, theirs: u32, ours: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the worker's ring is corrupted: {what} {theirs} is {} bytes from ours \
             ({ours}), in a ring of {RING_BYTES}",
            theirs.wrapping_sub(ours)
        ),
    )
}

/// The writing end of one ring.
pub(crate) struct RingWriter {
    rings: Arc<Rings>,
    dir: Dir,
    /// Our position (the shared copy is only published, never read back).
    tail: u32,
    /// Bytes written and not yet published.
    pending: u32,
}

impl RingWriter {
    pub(crate) fn new(rings: Arc<Rings>, dir: Dir) -> RingWriter {
        let tail = rings.control(dir).tail.0.load(Relaxed);
        RingWriter {
            rings,
            dir,
            tail,
            pending: 0,
        }
    }

    /// Room left, from the reader's published head (validated).
    fn room(&self) -> io::Result<u32> {
        self.room_after(self.rings.control(self.dir).head.0.load(Acquire))
    }

    /// Room left if the reader's head is `head` (validated).
    fn room_after(&self, head: u32) -> io::Result<u32> {
        let used = self.tail.wrapping_sub(head);
        if used > RING_BYTES {
            return Err(corrupt("the reader's position", head, self.tail));
        }
        Ok(RING_BYTES - used)
    }

    /// Copy `bytes` in behind what is pending, without publishing; waits for
    /// room as needed (publishing first, and ringing through `doorbell`).
    /// `gone` says whether the reader is gone (then `BrokenPipe`).
    pub(crate) fn append(
        &mut self,
        mut bytes: &[u8],
        doorbell: &dyn Fn(),
        gone: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.room()?;
            if room == 0 {
                self.publish(doorbell);
                self.wait_for_room(gone)?;
                continue;
            }
            let n = bytes.len().min(room as usize);
            self.copy_in(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Copy `src` (fits the room) at the end of the pending bytes.
    fn copy_in(&mut self, src: &[u8]) {
        let cap = RING_BYTES as usize;
        let at = (self.tail as usize) & (cap - 1);
        let first = src.len().min(cap - at);
        let data = self.rings.data(self.dir);
        // SAFETY: `at < cap`, `first <= cap - at` and `src.len() - first <
        // cap`: inside the ring's data. The bytes are free (checked by the
        // caller against the reader's head), so the reader does not read
        // them until the tail is published; the source is a private slice.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, src.len() - first);
        }
        self.tail = self.tail.wrapping_add(src.len() as u32);
        self.pending += src.len() as u32;
    }

    /// Publish the pending bytes, and ring the doorbell if the reader sleeps.
    pub(crate) fn publish(&mut self, doorbell: &dyn Fn()) {
        if self.pending == 0 {
            return;
        }
        self.pending = 0;
        let control = self.rings.control(self.dir);
        if handshake::publish(&control.tail.0, &control.sleeping.0, self.tail) {
            doorbell();
        }
    }

    /// Sleep until the reader frees some room, or fail if it is gone.
    fn wait_for_room(&self, gone: &dyn Fn() -> bool) -> io::Result<()> {
        let control = self.rings.control(self.dir);
        loop {
            if gone() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let (before, now) = handshake::ask_for_room(&control.head.0, &control.room_wanted.0);
            if self.room_after(now)? > 0 {
                handshake::room_found(&control.room_wanted.0);
                return Ok(());
            }
            handshake::sleep_for_room(&control.head.0, before, Some(ROOM_SLICE));
        }
    }
}

/// The reading end of one ring.
pub(crate) struct RingReader {
    rings: Arc<Rings>,
    dir: Dir,
    /// Our position (the shared copy is only published, never read back).
    head: u32,
}

impl RingReader {
    pub(crate) fn new(rings: Arc<Rings>, dir: Dir) -> RingReader {
        let head = rings.control(dir).head.0.load(Relaxed);
        RingReader { rings, dir, head }
    }

    /// Bytes published and not read yet (validated).
    fn used(&self) -> io::Result<u32> {
        self.used_until(self.rings.control(self.dir).tail.0.load(Acquire))
    }

    /// Bytes not read yet if the writer's tail is `tail` (validated).
    fn used_until(&self, tail: u32) -> io::Result<u32> {
        let used = tail.wrapping_sub(self.head);
        if used > RING_BYTES {
            return Err(corrupt("the writer's position", tail, self.head));
        }
        Ok(used)
    }

    /// Whether nothing is waiting to be read.
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        Ok(self.used()? == 0)
    }

    /// Copy up to `dst.len()` published bytes out; 0 if there are none.
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let used = self.used()?;
        let n = dst.len().min(used as usize);
        if n == 0 {
            return Ok(0);
        }
        let cap = RING_BYTES as usize;
        let at = (self.head as usize) & (cap - 1);
        let first = n.min(cap - at);
        let data = self.rings.data(self.dir);
        // SAFETY: `at < cap`, `first <= cap - at`, `n - first < cap`: inside
        // the ring's data; the `n <= used` bytes from the head are
        // published and the writer does not touch them until we advance
        // the head. A hostile or broken writer could write them while we
        // copy: the ring is only ever reached through raw pointers into a
        // shared mapping (never a Rust reference, so no aliasing promise is
        // broken), and such a race can only yield some byte values in the
        // copy, which is private from then on and which the frame parser
        // checks like any other bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), n - first);
        }
        self.head = self.head.wrapping_add(n as u32);
        let control = self.rings.control(self.dir);
        handshake::advance_head(&control.head.0, &control.room_wanted.0, self.head);
        Ok(n)
    }

    /// About to sleep: ask for the doorbell. True if bytes arrived
    /// meanwhile (then do not sleep; the request is withdrawn).
    pub(crate) fn sleep_begin(&self) -> io::Result<bool> {
        let control = self.rings.control(self.dir);
        let tail = handshake::sleep_begin(&control.sleeping.0, &control.tail.0);
        // A corrupted tail is an error here too (the flag stays set: the
        // caller gives up on this ring).
        if self.used_until(tail)? == 0 {
            return Ok(false);
        }
        handshake::sleep_end(&control.sleeping.0);
        Ok(true)
    }

    /// The reader spins on this CPU (`Some`), or stops spinning (`None`).
    pub(crate) fn note_spinning(&self, cpu: Option<usize>) {
        let word = cpu.map_or(0, |cpu| (cpu as u32).wrapping_add(1));
        self.rings
            .control(self.dir)
            .reader_cpu
            .0
            .store(word, Relaxed);
    }

    /// Awake again: withdraw the request for the doorbell.
    pub(crate) fn sleep_end(&self) {
        handshake::sleep_end(&self.rings.control(self.dir).sleeping.0);
    }
}

/// Whether the peer of `fd` (a socket or either end of a pipe) hung up.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => false,
    }
}

/// One doorbell byte on `fd`; a peer that is gone is not an error here (its
/// reader sees end of file or its exit).
fn ring_doorbell(fd: BorrowedFd<'_>, socket: bool) {
    loop {
        let sent = if socket {
            rustix::net::send(
                fd,
                &[1],
                rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
            )
        } else {
            rustix::io::write(fd, &[1])
        };
        match sent {
            Err(rustix::io::Errno::INTR) => {}
            // A full buffer holds doorbell bytes enough: the reader is
            // awake or about to be.
            _ => return,
        }
    }
}

/// What a [`CallSender`] calls with the error of a failed send.
type OnFault = Box<dyn Fn(&io::Error) + Send>;

/// The parent's end of the call channel: the socket to the worker, and the
/// call ring when the worker has one.
pub(crate) struct CallSender {
    socket: OwnedFd,
    ring: Option<RingWriter>,
    /// Called with the error of a failed send.
    on_fault: Option<OnFault>,
    /// Set by the first failed send: the stream may end in part of a frame
    /// (published before the sender waited for room, or written to the
    /// socket), so nothing may follow it.
    broken: bool,
}

impl CallSender {
    pub(crate) fn new(socket: OwnedFd, rings: Option<&Arc<Rings>>) -> CallSender {
        CallSender {
            socket,
            ring: rings.map(|r| RingWriter::new(Arc::clone(r), Dir::Calls)),
            on_fault: None,
            broken: false,
        }
    }

    /// Call `fault` with the error of the send that broke the channel: the
    /// call ring corrupted by the worker (`InvalidData`), the worker gone
    /// (`BrokenPipe`), or a failure of this side (no memory for a large
    /// body's memfd, say) that leaves a live worker waiting for the rest of
    /// a frame, which the caller must treat as fatal for the worker.
    pub(crate) fn on_fault(&mut self, fault: impl Fn(&io::Error) + Send + 'static) {
        self.on_fault = Some(Box::new(fault));
    }

    /// Send complete frames, in order, waking the worker once. After a
    /// failed send every send fails at once: the stream may end in part of
    /// a frame, and a frame appended to it would be read as garbage.
    pub(crate) fn send_frames<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = &'a Frame>,
    ) -> io::Result<()> {
        self.send_frames_after(&[], frames)
    }

    /// [`send_frames`](Self::send_frames), after `copied`: whole small
    /// frames in memory, back to back.
    pub(crate) fn send_frames_after<'a>(
        &mut self,
        copied: &[u8],
        frames: impl ExactSizeIterator<Item = &'a Frame>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier send to this worker failed part-way",
            ));
        }
        let result = self.send_frames_inner(copied, frames);
        if let Err(e) = &result {
            self.broken = true;
            if let Some(fault) = &self.on_fault {
                fault(e);
            }
        }
        result
    }

    fn send_frames_inner<'a>(
        &mut self,
        copied: &[u8],
        mut frames: impl ExactSizeIterator<Item = &'a Frame>,
    ) -> io::Result<()> {
        let Some(ring) = &mut self.ring else {
            // On the socket: small frames in one write.
            if frames.len() == 0 {
                return wire::send_all(&self.socket, copied);
            }
            if copied.is_empty() && frames.len() == 1 {
                return frames.try_for_each(|frame| frame.send(&self.socket));
            }
            let frames: Vec<&Frame> = frames.collect();
            if frames
                .iter()
                .any(|f| f.len() >= wire::MEMFD_MIN || f.in_memory().is_none())
            {
                wire::send_all(&self.socket, copied)?;
                return frames
                    .into_iter()
                    .try_for_each(|frame| frame.send(&self.socket));
            }
            let mut all =
                Vec::with_capacity(copied.len() + frames.iter().map(|f| f.len()).sum::<usize>());
            all.extend_from_slice(copied);
            for frame in frames.iter().filter_map(|f| f.in_memory()) {
                all.extend_from_slice(frame);
            }
            return wire::send_all(&self.socket, &all);
        };
        let socket = self.socket.as_fd();
        let doorbell = || ring_doorbell(socket, true);
        let gone = || hung_up(socket);
        ring.append(copied, &doorbell, &gone)?;
        for frame in frames {
            match frame {
                Frame::Inline(frame) if frame.len() < wire::HEADER + wire::MEMFD_MIN => {
                    ring.append(frame, &doorbell, &gone)?;
                }
                Frame::Inline(frame) => {
                    // The descriptor goes first, on the socket: it is there
                    // when the worker reads the header from the ring.
                    let memfd = wire::body_memfd(&frame[wire::HEADER..])?;
                    wire::send_with_fd(&socket, &[0], memfd.as_fd())?;
                    drop(memfd);
                    ring.append(&wire::memfd_header(frame), &doorbell, &gone)?;
                }
                Frame::Shared(sealed) => {
                    wire::send_with_fd(&socket, &[0], sealed.memfd.as_fd())?;
                    ring.append(&sealed.header, &doorbell, &gone)?;
                }
            }
        }
        ring.publish(&doorbell);
        Ok(())
    }
}

impl AsFd for CallSender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The worker's end of the reply channel: the pipe to the parent, and the
/// reply ring when it has one.
pub(crate) struct ReplySender {
    pipe: OwnedFd,
    ring: Option<RingWriter>,
}

impl ReplySender {
    pub(crate) fn new(pipe: OwnedFd, rings: Option<&Arc<Rings>>) -> ReplySender {
        ReplySender {
            pipe,
            ring: rings.map(|r| RingWriter::new(Arc::clone(r), Dir::Replies)),
        }
    }

    /// Test hook: send `bytes` as they are, as part of the stream.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(ring) = &mut self.ring else {
            return wire::write_all(&self.pipe, bytes);
        };
        let pipe = self.pipe.as_fd();
        ring.append(bytes, &|| ring_doorbell(pipe, false), &|| hung_up(pipe))?;
        ring.publish(&|| ring_doorbell(pipe, false));
        Ok(())
    }

    /// Test hook: ring the doorbell (after a forged change of the ring).
    pub(crate) fn wake_for_test(&self) {
        ring_doorbell(self.pipe.as_fd(), false);
    }

    /// Send one reply frame; a large body's memfd goes on `socket` first:
    /// `sealed`, a body already in a sealed memfd (see `FrameBuf::seal`),
    /// or a body in `frame` of `wire::MEMFD_MIN` bytes or more, copied to
    /// one.
    pub(crate) fn send_reply(
        &mut self,
        socket: BorrowedFd<'_>,
        frame: &[u8],
        sealed: Option<Sealed>,
    ) -> io::Result<()> {
        let Some(ring) = &mut self.ring else {
            return wire::send_reply(&self.pipe, socket, frame, sealed);
        };
        let pipe = self.pipe.as_fd();
        let doorbell = || ring_doorbell(pipe, false);
        let gone = || hung_up(pipe);
        if let Some(sealed) = sealed {
            wire::send_with_fd(&socket, &[0], sealed.memfd.as_fd())?;
            drop(sealed.memfd);
            ring.append(&sealed.header, &doorbell, &gone)?;
        } else if frame.len() < wire::HEADER + wire::MEMFD_MIN {
            ring.append(frame, &doorbell, &gone)?;
        } else {
            let memfd = wire::body_memfd(&frame[wire::HEADER..])?;
            wire::send_with_fd(&socket, &[0], memfd.as_fd())?;
            drop(memfd);
            ring.append(&wire::memfd_header(frame), &doorbell, &gone)?;
        }
        ring.publish(&doorbell);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer and a reader of one ring in this process, both started at
    /// `start` (as if that many bytes had already passed).
    fn pair_at(start: u32) -> (RingWriter, RingReader) {
        let (rings, _fd) = Rings::create().unwrap();
        let control = rings.control(Dir::Calls);
        control.tail.0.store(start, Relaxed);
        control.head.0.store(start, Relaxed);
        (
            RingWriter::new(Arc::clone(&rings), Dir::Calls),
            RingReader::new(rings, Dir::Calls),
        )
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Writes and reads of any sizes, with the positions started near
        /// their 2^32 wrap, deliver the same bytes as a plain queue.
        #[test]
        fn positions_near_the_wrap_deliver_every_byte(
            back in 0u32..(3 * RING_BYTES),
            ops in proptest::collection::vec((any::<bool>(), 0usize..(RING_BYTES as usize + 100)), 1..60),
        ) {
            let (mut writer, mut reader) = pair_at(0u32.wrapping_sub(back));
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u8;
            let never = || false;
            for (write, size) in ops {
                if write {
                    let room = writer.room().unwrap() as usize;
                    let size = size.min(room);
                    let bytes: Vec<u8> = (0..size).map(|_| { next = next.wrapping_add(7); next }).collect();
                    writer.append(&bytes, &|| {}, &never).unwrap();
                    writer.publish(&|| {});
                    model.extend(bytes);
                } else {
                    let mut buf = vec![0u8; size];
                    let n = reader.read(&mut buf).unwrap();
                    prop_assert_eq!(n, size.min(model.len()));
                    let expected: Vec<u8> = model.drain(..n).collect();
                    prop_assert_eq!(&buf[..n], &expected[..]);
                }
                prop_assert_eq!(reader.is_empty().unwrap(), model.is_empty());
            }
        }
    }

    /// A message larger than the ring crosses it while the reader drains it
    /// in another thread (the writer sleeps for room and is woken).
    #[test]
    fn a_message_larger_than_the_ring_crosses_it() {
        let (mut writer, mut reader) = pair_at(u32::MAX - 1000);
        let total = 5 * RING_BYTES as usize + 123;
        let message: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = message.clone();
        let drain = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 10_000];
            while got.len() < total {
                let n = reader.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                if n == 0 {
                    std::thread::yield_now();
                }
            }
            got
        });
        writer.append(&message, &|| {}, &|| false).unwrap();
        writer.publish(&|| {});
        assert!(drain.join().unwrap() == expected);
    }

    /// A writer waiting for room in a full ring whose reader is gone fails
    /// instead of waiting for ever.
    #[test]
    fn a_writer_does_not_wait_for_a_reader_that_is_gone() {
        let (mut writer, _reader) = pair_at(0);
        let full = vec![0u8; RING_BYTES as usize];
        writer.append(&full, &|| {}, &|| false).unwrap();
        let err = writer.append(&[1], &|| {}, &|| true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A position the peer corrupted is an `InvalidData` error on either
    /// side, never a read outside the ring.
    #[test]
    fn corrupted_positions_are_refused() {
        let (mut writer, mut reader) = pair_at(5);
        let control = writer.rings.control(Dir::Calls);
        control.tail.0.store(5 + RING_BYTES + 1, Relaxed);
        let err = reader.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("corrupted"), "{err}");
        // A head ahead of the tail: "read" bytes never written.
        control.head.0.store(5 + 7, Relaxed);
        let err = writer.append(&[1, 2, 3], &|| {}, &|| false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// A send that failed part-way (the worker went away while the sender
    /// waited for room, after part of the frame was published) breaks the
    /// sender: the next send fails at once instead of appending a frame to
    /// the half-sent one, and the fault is reported once, with the error.
    #[test]
    fn a_send_that_failed_part_way_breaks_the_sender() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (rings, _fd) = Rings::create().unwrap();
        let mut reader = RingReader::new(Arc::clone(&rings), Dir::Calls);
        let mut sender = CallSender::new(ours, Some(&rings));
        let faults = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&faults);
        sender.on_fault(move |e| seen.lock().unwrap().push(e.kind()));
        // The worker is gone: its end of the socket is closed.
        drop(theirs);
        let big = Frame::Inline(vec![7; RING_BYTES as usize + 1000]);
        let err = sender.send_frames([&big].into_iter()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        // What fitted was published; the reader takes it, making room.
        let mut buf = vec![0u8; RING_BYTES as usize];
        assert_eq!(reader.read(&mut buf).unwrap(), RING_BYTES as usize);
        let small = Frame::Inline(vec![1; 64]);
        let err = sender.send_frames([&small].into_iter()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(
            reader.is_empty().unwrap(),
            "nothing follows the half-sent frame"
        );
        assert_eq!(*faults.lock().unwrap(), [io::ErrorKind::BrokenPipe]);
    }

    /// The doorbell rings exactly when the reader said it sleeps, once.
    #[test]
    fn the_doorbell_rings_only_for_a_sleeper() {
        let (mut writer, reader) = pair_at(0);
        let rung = std::cell::Cell::new(0);
        let doorbell = || rung.set(rung.get() + 1);
        writer.append(b"abc", &doorbell, &|| false).unwrap();
        writer.publish(&doorbell);
        assert_eq!(rung.get(), 0, "the reader was awake");
        assert!(reader.sleep_begin().unwrap(), "bytes are waiting: no sleep");
        let mut reader = reader;
        reader.read(&mut [0u8; 3]).unwrap();
        assert!(!reader.sleep_begin().unwrap());
        writer.append(b"d", &doorbell, &|| false).unwrap();
        writer.publish(&doorbell);
        writer.append(b"e", &doorbell, &|| false).unwrap();
        writer.publish(&doorbell);
        assert_eq!(rung.get(), 1);
        reader.sleep_end();
    }
}
