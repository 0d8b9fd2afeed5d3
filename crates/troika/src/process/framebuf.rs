//! Building a message whose body may be large: the body grows in a `Vec`
//! until it reaches [`MEMFD_MIN`] bytes, then continues in an arena (a
//! reusable memfd, see `arena.rs`), so that a big value is encoded straight
//! into the shared memory that carries it instead of into a `Vec` that is
//! then copied there.
//!
//! Writes after the switch go straight into the arena's mapping, which is
//! allocated and mapped already when the arena is reused: a 64 MiB body
//! costs one copy. The arena grows if the body outgrows it.
//!
//! The finished frame holds the arena ([`Sealed`]) until the frame is
//! dropped: it is the body of a [`Frame`] that may be sent again (to a new
//! worker, after its first one died), and nothing writes it meanwhile (the
//! arena is back on the free list only when the frame is dropped, and
//! written again only once its last receiver released it).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::arena::{self, Lease};
use super::wire::{self, HEADER, IN_ARENA, IN_MEMFD, MEMFD_MIN};

/// A message being built: an optional frame header, then the body. The body
/// moves to an arena once it reaches [`MEMFD_MIN`] bytes (if the buffer was
/// made with [`FrameBuf::frame`]).
#[derive(Debug)]
pub(crate) struct FrameBuf {
    /// The header and the body's first bytes (all of the body until it
    /// spills; after that, the bytes it had then, also copied to the arena).
    bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    body_at: usize,
    /// Spill once the body would reach this many bytes (`usize::MAX`: never).
    spill_min: usize,
    /// The rest of the body, once it spilled.
    spill: Option<Spill>,
    /// Why the last write to the arena failed (postcard's error cannot say).
    failed: Option<io::Error>,
}

#[derive(Debug)]
struct Spill {
    arena: Lease,
    /// Bytes of the body written to the arena so far.
    written: usize,
}

impl FrameBuf {
    /// A buffer for one frame, whose header is written next (with
    /// [`wire::begin_frame`] on [`bytes_mut`](Self::bytes_mut)). Its body
    /// moves to a memfd once it reaches [`MEMFD_MIN`] bytes.
    pub(crate) fn frame(capacity: usize) -> FrameBuf {
        FrameBuf {
            bytes: Vec::with_capacity(capacity.min(MEMFD_MIN) + HEADER),
            body_at: HEADER,
            spill_min: MEMFD_MIN,
            spill: None,
            failed: None,
        }
    }

    /// A plain buffer of bytes that never spills.
    pub(crate) fn plain() -> FrameBuf {
        FrameBuf {
            bytes: Vec::new(),
            body_at: 0,
            spill_min: usize::MAX,
            spill: None,
            failed: None,
        }
    }

    /// A frame buffer whose body spills once it reaches `spill_min` bytes
    /// (tests use small thresholds).
    #[cfg(test)]
    pub(crate) fn frame_spilling_at(spill_min: usize) -> FrameBuf {
        FrameBuf {
            spill_min,
            ..FrameBuf::frame(0)
        }
    }

    /// The bytes in memory, for writing that never needs to spill (a header,
    /// a message, a chunk). Once the body spilled, only the header may be
    /// changed here: bytes appended would not reach the memfd.
    pub(crate) fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The whole message, if it did not spill.
    pub(crate) fn in_memory(&self) -> Option<&[u8]> {
        self.spill.is_none().then_some(&self.bytes[..])
    }

    /// Take the bytes of a buffer that never spills.
    pub(crate) fn into_plain(self) -> Vec<u8> {
        debug_assert!(self.spill.is_none());
        self.bytes
    }

    /// The length of the body (in memory and in the memfd).
    pub(crate) fn body_len(&self) -> u64 {
        match &self.spill {
            None => self.bytes.len().saturating_sub(self.body_at) as u64,
            Some(spill) => spill.written as u64,
        }
    }

    /// The length the buffer has now, to [`truncate`](Self::truncate) to
    /// later. Taken before a value is encoded (and so before it spills).
    pub(crate) fn mark(&self) -> usize {
        debug_assert!(self.spill.is_none(), "a mark after a spill");
        self.bytes.len()
    }

    /// Drop everything written after `mark` (which was taken before the
    /// body spilled); the arena goes back to the free list.
    pub(crate) fn truncate(&mut self, mark: usize) {
        self.spill = None;
        self.failed = None;
        self.bytes.truncate(mark);
    }

    /// Empty the buffer for the next message (giving back its arena).
    pub(crate) fn clear(&mut self) {
        self.truncate(0);
        if self.bytes.capacity() > 1 << 20 {
            self.bytes = Vec::new();
        }
    }

    /// Why the last write failed, if it was a write to the arena.
    pub(crate) fn take_failure(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    /// Append `data` to the body: in memory while the body is small, to the
    /// arena after.
    #[inline(always)]
    pub(crate) fn extend(&mut self, data: &[u8]) -> io::Result<()> {
        let body = self.bytes.len().saturating_sub(self.body_at);
        if self.spill.is_none() && body + data.len() < self.spill_min {
            // postcard hands over every varint as a short slice. A copy of a
            // known size compiles to a few moves; a call to `memcpy` for a
            // handful of bytes dominated the encoding of a chunk of integers.
            match *data {
                [a] => self.bytes.push(a),
                [a, b] => self.bytes.extend_from_slice(&[a, b]),
                [a, b, c] => self.bytes.extend_from_slice(&[a, b, c]),
                [a, b, c, d] => self.bytes.extend_from_slice(&[a, b, c, d]),
                _ if data.len() <= 16 => {
                    for &byte in data {
                        self.bytes.push(byte);
                    }
                }
                _ => self.bytes.extend_from_slice(data),
            }
            return Ok(());
        }
        self.extend_spilled(data)
    }

    #[inline(never)]
    fn extend_spilled(&mut self, data: &[u8]) -> io::Result<()> {
        let result = self.try_extend_spilled(data);
        if let Err(e) = &result {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        }
        result
    }

    fn try_extend_spilled(&mut self, data: &[u8]) -> io::Result<()> {
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => {
                // The body so far goes first; `bytes` keeps it too, for a
                // `truncate` to a mark in it. The arena is taken with room
                // for this write too: a long slice (a `Vec<u8>`'s bytes)
                // is most of the body.
                let prefix = self.bytes.get(self.body_at..).unwrap_or_default();
                let mut arena = arena::acquire(prefix.len().saturating_add(data.len()))?;
                arena.write(0, prefix)?;
                self.spill.insert(Spill {
                    arena,
                    written: prefix.len(),
                })
            }
        };
        spill.arena.write(spill.written, data)?;
        spill.written += data.len();
        Ok(())
    }

    /// Patch the header's body length (the frame starts at 0).
    pub(crate) fn finish_frame(&mut self) {
        let len = self.body_len();
        self.bytes[16..24].copy_from_slice(&len.to_le_bytes());
    }

    /// The finished frame: sealed, if its body spilled. Call after
    /// [`finish_frame`](Self::finish_frame).
    pub(crate) fn into_frame(mut self) -> io::Result<Frame> {
        match self.seal()? {
            None => Ok(Frame::Inline(self.bytes)),
            Some(sealed) => Ok(Frame::Shared(sealed)),
        }
    }

    /// If the body spilled: the buffer gives up its arena (with its
    /// header, marked [`IN_MEMFD`] and [`IN_ARENA`]) and keeps only what is
    /// in memory. Call after [`finish_frame`](Self::finish_frame).
    pub(crate) fn seal(&mut self) -> io::Result<Option<Sealed>> {
        let Some(spill) = self.spill.take() else {
            return Ok(None);
        };
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.bytes[..HEADER]);
        let kind = u16::from_le_bytes([header[0], header[1]]) | IN_MEMFD | IN_ARENA;
        header[..2].copy_from_slice(&kind.to_le_bytes());
        Ok(Some(Sealed {
            header,
            body_len: spill.written as u64,
            memfd: spill.arena,
        }))
    }
}

/// A frame whose body is in an arena: its header (marked [`IN_MEMFD`] and
/// [`IN_ARENA`]) and the arena, which goes back to the free list when this
/// is dropped. `memfd.as_fd()` is the descriptor to send (and marks the
/// arena handed over, see `arena.rs`).
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) header: [u8; HEADER],
    pub(crate) body_len: u64,
    pub(crate) memfd: Lease,
}

/// A fresh memfd that can be sealed.
pub(crate) fn new_memfd() -> io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    Ok(rustix::fs::memfd_create(
        "troika-frame",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// Write all of `bytes` at `offset` of `fd`.
pub(crate) fn write_at(fd: &impl AsFd, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::pwrite(fd, &bytes[done..], offset + done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A finished call frame, kept until its task is done so that it can be sent
/// again: in memory, or its header with the sealed memfd holding its body.
#[derive(Debug)]
pub(crate) enum Frame {
    Inline(Vec<u8>),
    Shared(Sealed),
}

impl Frame {
    /// The frame's length, header and body.
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Inline(bytes) => bytes.len(),
            Frame::Shared(sealed) => HEADER + sealed.body_len as usize,
        }
    }

    /// The worker this frame was sent to died before releasing its body
    /// (see [`Lease::abandon`](super::arena::Lease::abandon)).
    pub(crate) fn abandon(&self) {
        if let Frame::Shared(sealed) = self {
            sealed.memfd.abandon();
        }
    }

    /// The whole frame, if it is in memory.
    pub(crate) fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Frame::Inline(bytes) => Some(bytes),
            Frame::Shared(_) => None,
        }
    }

    /// Send it on a stream socket (see [`wire::send_frame`]).
    pub(crate) fn send(&self, socket: &impl AsFd) -> io::Result<()> {
        match self {
            Frame::Inline(bytes) => wire::send_frame(socket, bytes),
            Frame::Shared(sealed) => {
                wire::send_with_fd(socket, &sealed.header, sealed.memfd.as_fd())
            }
        }
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Frame {
        Frame::Inline(bytes)
    }
}

/// A postcard output that appends to a [`FrameBuf`].
pub(crate) struct Encoder<'a>(pub(crate) &'a mut FrameBuf);

impl postcard::ser_flavors::Flavor for Encoder<'_> {
    type Output = ();

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0
            .extend(data)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A size of write that postcard never makes in one piece but a byte
    /// vector does.
    const STAGE: usize = 128 << 10;

    /// The body in an arena.
    fn read_body(fd: &impl AsFd, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        let mut done = 0;
        while done < out.len() {
            let at = (arena::BODY_AT + done) as u64;
            let n = rustix::io::pread(fd, &mut out[done..], at).unwrap();
            assert!(n > 0, "the arena is shorter than its frame says");
            done += n;
        }
        out
    }

    /// A frame with the header of a call and `body` written in `pieces`.
    fn build(spill_min: usize, pieces: &[&[u8]]) -> FrameBuf {
        let mut buf = FrameBuf::frame_spilling_at(spill_min);
        wire::begin_frame(buf.bytes_mut(), wire::CALL, 0, 3, 42);
        for piece in pieces {
            buf.extend(piece).unwrap();
        }
        buf.finish_frame();
        buf
    }

    /// Written in pieces of every size (one byte, a few, more than the
    /// staging buffer), a body arrives in the memfd whole and in order,
    /// under a header that says its length and that it is in a memfd.
    #[test]
    fn a_spilled_body_is_the_bytes_written_in_order() {
        let _serial = arena::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let long: Vec<u8> = (0..STAGE * 3 + 5).map(|i| (i % 241) as u8).collect();
        let mid: Vec<u8> = (0..STAGE - 3).map(|i| (i % 239) as u8).collect();
        let pieces: Vec<&[u8]> = vec![b"name", &[1], &[2, 3], &mid, &long, &[4; 7], &mid, &[5]];
        let expected: Vec<u8> = pieces.concat();
        for spill_min in [1, 5, 100, STAGE, expected.len()] {
            let buf = build(spill_min, &pieces);
            assert_eq!(buf.body_len(), expected.len() as u64);
            let Frame::Shared(sealed) = buf.into_frame().unwrap() else {
                panic!(
                    "a body of {} bytes did not spill at {spill_min}",
                    expected.len()
                );
            };
            assert_eq!(sealed.body_len, expected.len() as u64);
            let kind = u16::from_le_bytes([sealed.header[0], sealed.header[1]]);
            assert_eq!(kind, wire::CALL | IN_MEMFD | IN_ARENA);
            let len = u64::from_le_bytes(sealed.header[16..24].try_into().unwrap());
            assert_eq!(len, expected.len() as u64);
            assert!(read_body(&sealed.memfd, sealed.body_len) == expected);
            let seals = rustix::fs::fcntl_get_seals(&sealed.memfd).unwrap();
            assert!(seals.contains(rustix::fs::SealFlags::SHRINK));
            assert!(
                rustix::fs::fstat(&sealed.memfd).unwrap().st_size as usize
                    >= arena::BODY_AT + expected.len()
            );
        }
    }

    /// A body under the threshold stays in memory, as it was.
    #[test]
    fn a_small_body_stays_in_memory() {
        let buf = build(100, &[b"abc", &[9; 96]]);
        let Frame::Inline(bytes) = buf.into_frame().unwrap() else {
            panic!("99 bytes spilled at 100");
        };
        assert_eq!(bytes.len(), HEADER + 99);
        assert_eq!(&bytes[HEADER..HEADER + 3], b"abc");
        let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        assert_eq!(len, 99);
    }

    /// Truncating to a mark taken before the spill gives back the arena and
    /// leaves the bytes before the mark; the buffer is usable again.
    #[test]
    fn truncating_after_a_spill_drops_the_memfd() {
        let _serial = arena::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = FrameBuf::frame_spilling_at(10);
        wire::begin_frame(buf.bytes_mut(), wire::REPLY, 0, 0, 1);
        buf.extend(b"abc").unwrap();
        let mark = buf.mark();
        buf.extend(&[7; 1000]).unwrap();
        assert!(buf.in_memory().is_none());
        buf.truncate(mark);
        assert_eq!(buf.body_len(), 3);
        buf.bytes_mut().extend_from_slice(b"failed");
        buf.finish_frame();
        let frame = buf.into_frame().unwrap();
        assert_eq!(&frame.in_memory().unwrap()[HEADER..], b"abcfailed");
    }

    /// A plain buffer never spills, however much is written.
    #[test]
    fn a_plain_buffer_never_spills() {
        let mut buf = FrameBuf::plain();
        buf.extend(&vec![1; MEMFD_MIN * 2]).unwrap();
        buf.extend(&[2]).unwrap();
        assert_eq!(buf.body_len(), MEMFD_MIN as u64 * 2 + 1);
        assert_eq!(buf.into_plain().len(), MEMFD_MIN * 2 + 1);
    }

    /// A frame in an arena can be sent twice (to a worker that died, then
    /// to its replacement): each reader maps the same body.
    #[test]
    fn a_sealed_frame_is_sent_again_whole() {
        let _serial = arena::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let body: Vec<u8> = (0..MEMFD_MIN + 99).map(|i| (i % 233) as u8).collect();
        let mut buf = FrameBuf::frame(0);
        wire::begin_frame(buf.bytes_mut(), wire::REPLY, 0, 5, 77);
        buf.extend(&body).unwrap();
        buf.finish_frame();
        let frame = buf.into_frame().unwrap();
        assert!(frame.in_memory().is_none());
        assert_eq!(frame.len(), HEADER + body.len());
        for _ in 0..2 {
            let (read, write) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            frame.send(&write).unwrap();
            let mut reader = wire::FrameReader::new(read, std::time::Duration::ZERO).unwrap();
            let (header, got) = reader.next_frame().unwrap().unwrap();
            assert_eq!((header.kind, header.id, header.aux), (wire::REPLY, 77, 5));
            assert!(got == &body[..]);
        }
    }
}
