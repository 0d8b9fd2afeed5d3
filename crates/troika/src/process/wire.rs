//! The framing both sides of a worker's channels speak (see `README.md`):
//! the parent writes to a socket, the worker to a pipe.
//!
//! Every message is a 24-byte header followed by `len` bytes of body:
//!
//! | bytes | field  | meaning |
//! |-------|--------|---------|
//! | 0..2  | kind   | [`CALL`], [`CALL_CHUNK`], [`REPLY`] or [`READY`] |
//! | 2..4  | status | for a reply: [`OK`], [`PANICKED`], … |
//! | 4..8  | aux    | call: length of the function name; reply: run time in µs |
//! | 8..16 | id     | the task id chosen by the parent |
//! | 16..24| len    | length of the body |
//!
//! All integers are little-endian. A call's body is the function name followed
//! by the postcard-encoded argument; a reply's body is the postcard-encoded
//! value (or, for a failure, a UTF-8 message). A chunk's call and reply carry
//! a `u32` count and then length-prefixed items (see `registry.rs`).
//!
//! A reader refuses a header whose `len` is over its limit before it
//! allocates anything for the body (see [`DEFAULT_MAX_BODY`]).
//!
//! A body of [`MEMFD_MIN`] bytes or more does not travel in the stream: the
//! sender writes it into a sealed `memfd` and sends the header alone, its
//! kind marked [`IN_MEMFD`]. On the call socket the memfd's descriptor is
//! attached to the header (`SCM_RIGHTS`); a reply's header goes on the
//! reply pipe, which cannot carry descriptors, so the worker first sends
//! the descriptor with one byte on the call socket (which works both ways),
//! and the parent's reader takes it from there ([`recv_fd`]). The reader maps the memfd
//! read-only and hands out the mapping as the body; the descriptor is the
//! memfd's only name, so the kernel frees it with its last descriptor, even
//! if either side dies mid-transfer.
//!
//! A body encoded in place (a call's argument, a worker's result: see
//! `framebuf.rs`) travels in an *arena*, a memfd reused from one message to
//! the next, its kind marked [`IN_ARENA`] too: the reader keeps the arena
//! mapped between messages and tells the sender when it is done with the
//! body (see `arena.rs`).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::arena::{self, Views};
use super::channel::RingReader;
use super::framebuf::{self, Sealed};

pub(crate) const HEADER: usize = 24;

pub(crate) const CALL: u16 = 1;
pub(crate) const CALL_CHUNK: u16 = 2;
pub(crate) const REPLY: u16 = 3;
pub(crate) const READY: u16 = 4;

/// Set in a header's kind when the body travels in a memfd attached to the
/// header instead of following it in the stream.
pub(crate) const IN_MEMFD: u16 = 0x8000;

/// Set with [`IN_MEMFD`] when the memfd is an arena (see `arena.rs`): the
/// body starts after the arena's header page, and the memfd is used again.
pub(crate) const IN_ARENA: u16 = 0x4000;

/// Bodies of at least this many bytes travel in a memfd (see the module
/// note): below it, the socket's copies cost less than the memfd's system
/// calls and page faults. Measured with the `payload_roundtrip` example
/// (troika-workloads), round trips of N bytes each way: at 256 KiB the
/// socket took half the memfd's time, at 512 KiB they were even, at 1 MiB
/// and 4 MiB the memfd took half the socket's.
pub(crate) const MEMFD_MIN: usize = 512 << 10;

/// At most this many received descriptors wait for their frames; a peer that
/// sends more is broken.
const MAX_PENDING_FDS: usize = 16;

pub(crate) const OK: u16 = 0;
pub(crate) const PANICKED: u16 = 1;
pub(crate) const ARG_DECODE: u16 = 2;
pub(crate) const RESULT_ENCODE: u16 = 3;
pub(crate) const UNKNOWN_FN: u16 = 4;
pub(crate) const BAD_FRAME: u16 = 5;
/// The call's frame was over the worker's limit; the body is the announced
/// length and the limit, two little-endian `u64`s (see [`encode_too_large`]).
pub(crate) const TOO_LARGE: u16 = 6;

/// The default limit on a frame's body, both ways: 1 GiB. A header that
/// announces more is refused before anything is allocated for it (a corrupt
/// stream or a hostile peer must not make the reader allocate 60 GiB and
/// abort). A pool's limit is set with
/// [`ProcessPoolBuilder::max_frame_bytes`](crate::ProcessPoolBuilder::max_frame_bytes).
pub(crate) const DEFAULT_MAX_BODY: u64 = 1 << 30;

/// The largest limit a pool may be configured with (8 GiB), and the limit a
/// worker applies to the frames it reads from its parent (the parent never
/// sends more than its own, lower or equal, limit).
pub(crate) const HARD_MAX_BODY: u64 = 1 << 33;

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: u16,
    pub(crate) status: u16,
    pub(crate) aux: u32,
    pub(crate) id: u64,
    pub(crate) len: u64,
}

impl Header {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.aux.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn decode(bytes: &[u8; HEADER]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let mut b4 = [0u8; 4];
        b4.copy_from_slice(&bytes[4..8]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[16..24]);
        Header {
            kind: u16_at(0),
            status: u16_at(2),
            aux: u32::from_le_bytes(b4),
            id: u64::from_le_bytes(id),
            len: u64::from_le_bytes(len),
        }
    }
}

/// Start a frame in `out`: a header whose `len` is patched by [`finish_frame`].
/// Returns the offset of the header.
pub(crate) fn begin_frame(out: &mut Vec<u8>, kind: u16, status: u16, aux: u32, id: u64) -> usize {
    let at = out.len();
    Header {
        kind,
        status,
        aux,
        id,
        len: 0,
    }
    .encode(out);
    at
}

/// Patch the body length of the frame begun at `at`.
pub(crate) fn finish_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - HEADER) as u64;
    out[at + 16..at + 24].copy_from_slice(&len.to_le_bytes());
}

/// Patch the status and aux fields of the frame begun at `at`.
pub(crate) fn patch_status(out: &mut [u8], at: usize, status: u16, aux: u32) {
    out[at + 2..at + 4].copy_from_slice(&status.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&aux.to_le_bytes());
}

/// Reads frames from a pipe, spinning briefly on an empty pipe before it
/// blocks in `poll` (a kernel wake-up costs tens of microseconds on an idle
/// core; see COSTS.md).
pub(crate) struct FrameReader {
    file: std::fs::File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    spin: Duration,
    /// Bodies longer than this are refused (see [`DEFAULT_MAX_BODY`]).
    max_body: u64,
    /// The header of a frame refused for its length.
    refused: Option<Header>,
    /// A pidfd: waiting for data ends when this process exits, even if
    /// the pipe stays open (held by a process it forked).
    watch: Option<OwnedFd>,
    /// The channel is a socket: read with `recvmsg`, which also receives the
    /// descriptors of [`IN_MEMFD`] frames.
    socket: bool,
    /// Descriptors received and not yet claimed by their frame's header.
    fds: VecDeque<OwnedFd>,
    /// The mapped body of the last [`IN_MEMFD`] frame.
    mapped: Option<Mapped>,
    /// The arenas of [`IN_ARENA`] frames, kept mapped between messages.
    views: Views,
    /// Where the descriptor of an [`IN_MEMFD`] frame comes from when it did
    /// not come with the bytes (on a pipe): see [`recv_fd`].
    fd_source: Option<FdSource>,
    /// The ring the bytes come through, if the channel has one: `file` is
    /// then only its doorbell (see `channel.rs`).
    ring: Option<RingReader>,
    /// The doorbell reported end of file: once the ring is empty, so is the
    /// stream.
    eof: bool,
}

type FdSource = Box<dyn FnMut() -> io::Result<OwnedFd> + Send>;

/// What [`FrameReader::peek_frame`] found.
pub(crate) enum Peek<'a> {
    /// A whole frame of the kind asked for, left in place.
    Frame(Header, &'a [u8]),
    /// Nothing whole yet.
    NotYet,
    /// Something that is not for the caller.
    Other,
}

/// What a reader that does not wait found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Enough bytes (a whole frame) are here.
    Ready,
    /// Not yet.
    Short,
    /// The stream ended.
    Eof,
}

impl FrameReader {
    /// Wrap the read end of a pipe; it is switched to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd, spin: Duration) -> io::Result<FrameReader> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        let mode = rustix::fs::fstat(&fd)?.st_mode;
        let socket = rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::Socket;
        Ok(FrameReader {
            socket,
            fds: VecDeque::new(),
            mapped: None,
            views: Views::default(),
            fd_source: None,
            file: std::fs::File::from(fd),
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
            spin,
            max_body: DEFAULT_MAX_BODY,
            refused: None,
            watch: None,
            ring: None,
            eof: false,
        })
    }

    /// Read the bytes from `ring`; the descriptor becomes its doorbell (a
    /// byte or end of file there wakes a reader sleeping on the ring).
    pub(crate) fn use_ring(&mut self, ring: RingReader) {
        self.ring = Some(ring);
    }

    /// Refuse frames whose body is longer than `max_body` bytes (the default
    /// is [`DEFAULT_MAX_BODY`]).
    pub(crate) fn set_max_body(&mut self, max_body: u64) {
        self.max_body = max_body;
    }

    /// The header of the frame that made [`next_frame`](Self::next_frame)
    /// fail because its body was over the limit. The stream cannot be read
    /// further after that.
    pub(crate) fn refused(&self) -> Option<Header> {
        self.refused
    }

    /// Also watch `pidfd` (the writer's process): once that process has
    /// exited and the pipe is empty, reading fails with `BrokenPipe`
    /// instead of waiting for an end of file that a process it forked can
    /// hold off for ever. Costs nothing until the reader would block.
    pub(crate) fn watch_exit(&mut self, pidfd: OwnedFd) {
        self.watch = Some(pidfd);
    }

    /// Take the descriptors of [`IN_MEMFD`] frames from `source` (a pipe
    /// cannot carry them: the writer sends each on a socket, see
    /// [`send_reply`], before its header).
    pub(crate) fn fds_from(
        &mut self,
        source: impl FnMut() -> io::Result<OwnedFd> + Send + 'static,
    ) {
        self.fd_source = Some(Box::new(source));
    }

    /// The channel's descriptor (a worker sends its replies' memfds on it).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The next frame, or `None` at end of file. A stream that ends inside a
    /// frame is an `UnexpectedEof` error; a header announcing a body over the
    /// limit is an `InvalidData` error (and [`refused`](Self::refused) tells
    /// which), detected before the body is allocated or read.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<(Header, &[u8])>> {
        self.next_frame_noting_wait(&mut false)
    }

    /// [`next_frame`](Self::next_frame), setting `waited` if it found
    /// nothing to read at first (a worker times back-to-back calls from
    /// the end of the one before).
    pub(crate) fn next_frame_noting_wait(
        &mut self,
        waited: &mut bool,
    ) -> io::Result<Option<(Header, &[u8])>> {
        let mut spin_end: Option<Instant> = None;
        loop {
            let before = self.end;
            match self.poll_frame()? {
                Fill::Ready => return self.take_frame().map(Some),
                Fill::Eof => return Ok(None),
                Fill::Short => {
                    if self.end != before {
                        // Bytes came: spin afresh.
                        spin_end = None;
                    }
                    *waited = true;
                    self.wait_step(&mut spin_end)?;
                }
            }
        }
    }

    /// Whether a whole frame can be taken now ([`take_frame`](Self::take_frame)),
    /// without waiting: `Short` if its bytes are not all here yet, `Eof` at
    /// a clean end of the stream. Errors as [`next_frame`](Self::next_frame).
    pub(crate) fn poll_frame(&mut self) -> io::Result<Fill> {
        // The last frame's body is no longer borrowed.
        self.views.release();
        match self.fill_now(HEADER)? {
            Fill::Ready => {}
            Fill::Short => return Ok(Fill::Short),
            Fill::Eof if self.end == self.start => return Ok(Fill::Eof),
            Fill::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
        let header = self.buffered_header();
        let total = match usize::try_from(header.len) {
            Ok(len) if header.len <= self.max_body => HEADER + len,
            _ => {
                self.refused = Some(header);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    too_large(header.len, self.max_body),
                ));
            }
        };
        if header.kind & IN_MEMFD != 0 {
            // The body is in a memfd: the header alone is the frame here.
            return Ok(Fill::Ready);
        }
        match self.fill_now(total)? {
            Fill::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
            fill => Ok(fill),
        }
    }

    /// The frame [`poll_frame`](Self::poll_frame) found ready.
    pub(crate) fn take_frame(&mut self) -> io::Result<(Header, &[u8])> {
        let (header, body, _) = self.take_frame_as(false)?;
        Ok((header, body))
    }

    /// [`take_frame`](Self::take_frame), but a body in an arena is released
    /// to its sender through the returned [`Release`] (see
    /// [`Views::open_released_by`]) rather than by this reader's next read:
    /// a reader that settles a reply releases it as soon as the reply is
    /// decoded, before the task's handle is settled, so that whoever waits
    /// on the handle finds the sender's arena free.
    pub(crate) fn take_frame_released_by(
        &mut self,
    ) -> io::Result<(Header, &[u8], arena::Release<'_>)> {
        let (header, body, release) = self.take_frame_as(true)?;
        Ok((header, body, release.unwrap_or_default()))
    }

    fn take_frame_as(
        &mut self,
        detached: bool,
    ) -> io::Result<(Header, &[u8], Option<arena::Release<'_>>)> {
        let mut header = self.buffered_header();
        if header.kind & IN_MEMFD != 0 {
            // The body is in the memfd that came with the header (the
            // length was checked, before anything is mapped).
            self.start += HEADER;
            let in_arena = header.kind & IN_ARENA != 0;
            header.kind &= !(IN_MEMFD | IN_ARENA);
            self.mapped = None;
            if self.fds.is_empty() && self.ring.is_some() && self.socket {
                // Sent before the header was published: it is in the
                // socket's queue behind whatever doorbell bytes came first.
                self.drain_doorbell()?;
            }
            let fd = match (self.fds.pop_front(), &mut self.fd_source) {
                (Some(fd), _) => fd,
                (None, Some(source)) => source()?,
                (None, None) => return Err(no_descriptor()),
            };
            if in_arena {
                if detached {
                    let (body, release) = self.views.open_released_by(fd, header.len)?;
                    return Ok((header, body, Some(release)));
                }
                return Ok((header, self.views.open(fd, header.len)?, None));
            }
            let mapped = self.mapped.insert(Mapped::new(fd, header.len)?);
            return Ok((header, mapped.bytes(), None));
        }
        // `poll_frame` checked the length against the buffered bytes.
        let body = self.start + HEADER..self.start + HEADER + header.len as usize;
        self.start = body.end;
        Ok((header, &self.buf[body], None))
    }

    /// A plain frame of kind `kind` whose bytes are all here (reading what
    /// the ring holds, never waiting), left in place: for a reader that
    /// serves only some frames and leaves the rest to the stream's owner
    /// ([`skip_frame`](Self::skip_frame) consumes it). `Other` for a frame
    /// of another kind, with its body in shared memory or over the limit,
    /// and for a stream in error or at its end (the owner meets the error
    /// when it reads).
    pub(crate) fn peek_frame(&mut self, kind: u16) -> Peek<'_> {
        self.views.release();
        match self.fill_now(HEADER) {
            Ok(Fill::Ready) => {}
            Ok(Fill::Short) => return Peek::NotYet,
            Ok(Fill::Eof) | Err(_) => return Peek::Other,
        }
        let header = self.buffered_header();
        let Ok(len) = usize::try_from(header.len) else {
            return Peek::Other;
        };
        if header.kind != kind || header.len > self.max_body {
            return Peek::Other;
        }
        match self.fill_now(HEADER + len) {
            Ok(Fill::Ready) => {}
            Ok(Fill::Short) => return Peek::NotYet,
            Ok(Fill::Eof) | Err(_) => return Peek::Other,
        }
        let body = self.start + HEADER..self.start + HEADER + len;
        Peek::Frame(header, &self.buf[body])
    }

    /// The header of the next frame if it is in, without consuming it or
    /// waiting.
    pub(crate) fn peek_header(&mut self) -> Option<Header> {
        self.views.release();
        matches!(self.fill_now(HEADER), Ok(Fill::Ready)).then(|| self.buffered_header())
    }

    /// Consume the frame [`peek_frame`](Self::peek_frame) returned.
    pub(crate) fn skip_frame(&mut self) {
        let len = self.buffered_header().len as usize;
        self.start += HEADER + len;
    }

    /// Whether bytes of a frame not yet taken are buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        self.end != self.start
    }

    /// Whether the buffer holds what [`poll_frame`](Self::poll_frame)
    /// would act on: a header, and its body unless that is in shared
    /// memory or over the limit (an error to report).
    fn whole_frame_buffered(&self) -> bool {
        let held = self.end - self.start;
        if held < HEADER {
            return false;
        }
        let header = self.buffered_header();
        header.kind & IN_MEMFD != 0
            || header.len > self.max_body
            || usize::try_from(header.len).is_ok_and(|len| held - HEADER >= len)
    }

    /// The header at the front of the buffer (which holds one).
    fn buffered_header(&self) -> Header {
        let mut raw = [0u8; HEADER];
        raw.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
        Header::decode(&raw)
    }

    /// Read what is available until at least `need` bytes are buffered from
    /// `start`, without waiting.
    fn fill_now(&mut self, need: usize) -> io::Result<Fill> {
        if self.end - self.start >= need {
            return Ok(Fill::Ready);
        }
        if self.start + need > self.buf.len() {
            // Move the partial frame to the front, and grow for big frames.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        } else if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        while self.end - self.start < need {
            match self.read_some() {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::Short),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Ready)
    }

    /// Nothing to read: spin a while (`spin_end`, set on the first call),
    /// then sleep until there may be.
    fn wait_step(&mut self, spin_end: &mut Option<Instant>) -> io::Result<()> {
        let now = Instant::now();
        let end = *spin_end.get_or_insert(now + self.spin);
        if now >= end {
            *spin_end = None;
            if let Some(ring) = &self.ring {
                ring.note_spinning(None);
            }
            return self.wait_readable();
        }
        // A ring is checked with a load: spin on it a while before letting
        // a thread that shares this core run (on a busy machine, maybe the
        // very writer).
        if let Some(ring) = &self.ring {
            ring.note_spinning(current_cpu());
            for _ in 0..64 {
                std::hint::spin_loop();
                if !ring.is_empty()? {
                    return Ok(());
                }
            }
        }
        std::thread::yield_now();
        Ok(())
    }

    /// One read into the free end of the buffer; on a socket, also collect
    /// the descriptors that came with the bytes.
    fn read_some(&mut self) -> io::Result<usize> {
        if let Some(ring) = &mut self.ring {
            return match ring.read(&mut self.buf[self.end..])? {
                0 if self.eof => Ok(0),
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            };
        }
        self.read_fd(self.end)
    }

    /// One read from the descriptor into the buffer at `at`.
    fn read_fd(&mut self, at: usize) -> io::Result<usize> {
        use rustix::net::{
            RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg,
        };
        if !self.socket {
            return self.file.read(&mut self.buf[at..]);
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut self.buf[at..])];
        let msg = recvmsg(&self.file, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                self.fds.extend(fds);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) || self.fds.len() > MAX_PENDING_FDS {
            return Err(invalid("the peer sent more descriptors than frames"));
        }
        Ok(msg.bytes)
    }

    /// Read and drop the doorbell's bytes (keeping the descriptors that
    /// came with them) until it has no more; notes end of file.
    fn drain_doorbell(&mut self) -> io::Result<()> {
        // The bytes go to the free end of the buffer, which holds nothing.
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() + 64, 0);
        }
        loop {
            match self.read_fd(self.end) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleep until the ring has bytes, the doorbell reports end of file or
    /// the watched process exits (with the ring empty).
    fn wait_ring(&mut self) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, poll};
        let Some(ring) = &self.ring else {
            return Ok(());
        };
        if self.eof || ring.sleep_begin()? {
            return Ok(());
        }
        let mut timeout = idle_timeout(&mut self.views);
        let result = loop {
            let mut fds = [
                PollFd::new(&self.file, PollFlags::IN),
                PollFd::new(&self.file, PollFlags::IN),
            ];
            let watched = match &self.watch {
                Some(watch) => {
                    fds[1] = PollFd::new(watch, PollFlags::IN);
                    2
                }
                None => 1,
            };
            match poll(&mut fds[..watched], timeout.as_ref()) {
                Ok(0) if timeout.is_some() => {
                    idle(&mut self.views);
                    timeout = None;
                }
                Ok(_) if !fds[0].revents().is_empty() => break self.drain_doorbell(),
                // Data first: what the process published before it exited
                // is still read.
                Ok(_) if watched == 2 && !fds[1].revents().is_empty() => {
                    if ring.is_empty()? {
                        break Err(exited_error());
                    }
                    break Ok(());
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => break Err(e.into()),
            }
        };
        if let Some(ring) = &self.ring {
            ring.sleep_end();
        }
        result
    }

    /// For a reader whose owner sleeps outside it (the pool's I/O thread,
    /// which shares the reader with waiting threads, see `pool/slot.rs`):
    /// about to sleep, ask the ring for its doorbell. `None` if there is no
    /// need to sleep (bytes arrived meanwhile, or end of file: read again);
    /// else how long a `poll` may sleep before [`sleep_finish`] should be
    /// told it timed out (arenas kept are then released).
    ///
    /// [`sleep_finish`]: Self::sleep_finish
    pub(crate) fn sleep_prepare(&mut self) -> io::Result<Option<Option<rustix::event::Timespec>>> {
        let Some(ring) = &self.ring else {
            return Ok(None);
        };
        // A whole frame may wait in the buffer: another thread that shares
        // this reader copied it out of the ring and left it.
        if self.eof || self.whole_frame_buffered() || ring.sleep_begin()? {
            return Ok(None);
        }
        Ok(Some(idle_timeout(&mut self.views)))
    }

    /// Awake after [`sleep_prepare`](Self::sleep_prepare): `doorbell` if the
    /// doorbell was readable, `exited` if the watched process has exited,
    /// `timed_out` if the `poll` slept its whole timeout. An exited writer
    /// whose ring is empty is an error, as in [`next_frame`](Self::next_frame).
    pub(crate) fn sleep_finish(
        &mut self,
        doorbell: bool,
        exited: bool,
        timed_out: bool,
    ) -> io::Result<()> {
        if timed_out {
            idle(&mut self.views);
        }
        let result = if doorbell {
            self.drain_doorbell()
        } else if exited
            && !self.whole_frame_buffered()
            && self
                .ring
                .as_ref()
                .is_some_and(|r| r.is_empty().unwrap_or(true))
        {
            // Data first: a frame a helper left in the buffer is still read.
            Err(exited_error())
        } else {
            Ok(())
        };
        if let Some(ring) = &self.ring {
            ring.sleep_end();
        }
        result
    }

    /// For a reader that stands in for its sleeping owner: withdraw the
    /// ring's doorbell request (the stand-in watches the ring, so writers
    /// need not ring).
    pub(crate) fn stop_doorbell(&self) {
        if let Some(ring) = &self.ring {
            ring.sleep_end();
        }
    }

    /// The stand-in lets go: ask for the doorbell again, and say whether
    /// bytes came meanwhile (then the request is withdrawn, and the owner
    /// must be woken some other way).
    pub(crate) fn ask_doorbell(&self) -> io::Result<bool> {
        match &self.ring {
            Some(ring) => ring.sleep_begin(),
            None => Ok(false),
        }
    }

    /// Whether the watched process (see [`watch_exit`](Self::watch_exit))
    /// is the descriptor to poll besides the doorbell.
    pub(crate) fn watched(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(AsFd::as_fd)
    }

    /// Block until the descriptor may have something (a reader without a
    /// ring; see [`sleep_prepare`](Self::sleep_prepare) for one with).
    pub(crate) fn wait_input(&mut self) -> io::Result<()> {
        self.wait_readable()
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, poll};
        if self.ring.is_some() {
            return self.wait_ring();
        }
        let mut timeout = idle_timeout(&mut self.views);
        let Some(watch) = &self.watch else {
            let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
            loop {
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(0) if timeout.is_some() => {
                        idle(&mut self.views);
                        timeout = None;
                    }
                    Ok(_) => return Ok(()),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut fds = [
            PollFd::new(&self.file, PollFlags::IN),
            PollFd::new(watch, PollFlags::IN),
        ];
        loop {
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) if timeout.is_some() => {
                    idle(&mut self.views);
                    timeout = None;
                }
                // Data (or end of file) first: a reply written before the
                // exit is still read.
                Ok(_) if !fds[0].revents().is_empty() => return Ok(()),
                Ok(_) if !fds[1].revents().is_empty() => return Err(exited_error()),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Tell the sender of the last frame's body in an arena that it is no
    /// longer read (the body must not be borrowed any more): the sender may
    /// write its next message there. [`next_frame`](Self::next_frame) and
    /// [`shrink`](Self::shrink) do it too; a worker does it before it
    /// answers, so that its parent finds the arena free for the next call.
    pub(crate) fn release(&mut self) {
        self.views.release();
    }

    /// Release memory held for a huge frame once it has been consumed (and
    /// the mapping of a frame's shared memory; an arena stays mapped, for
    /// the next message, and is released to its sender).
    pub(crate) fn shrink(&mut self) {
        const KEEP: usize = 1 << 20;
        self.mapped = None;
        self.views.release();
        if self.buf.len() > KEEP && self.end - self.start <= KEEP {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(KEEP);
            self.buf.shrink_to_fit();
        }
    }
}

/// How long a `poll` may sleep before arenas kept mapped (in `views`) or
/// free (in this process) are due for release: `None` if there are none.
fn idle_timeout(views: &mut Views) -> Option<rustix::event::Timespec> {
    let kept = views.trim(false) | arena::trim_free();
    kept.then(|| rustix::event::Timespec {
        tv_sec: arena::IDLE.as_secs() as _,
        tv_nsec: arena::IDLE.subsec_nanos() as _,
    })
}

/// A `poll` slept [`idle_timeout`] without input: release the arenas kept.
fn idle(views: &mut Views) {
    views.trim(true);
    arena::trim_free();
}

/// The CPU this thread runs on (glibc reads it from the thread's `rseq`
/// area: no system call).
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of
    // ours; it returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The writer exited, leaving nothing more to read, though its pipe is open.
fn exited_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the writing process exited; its pipe is held open by a process it started",
    )
}

fn no_descriptor() -> io::Error {
    invalid("a frame announced a body in shared memory but carried no descriptor")
}

/// Receive one descriptor sent with [`send_reply`] on `socket`, without
/// waiting: the sender sent it before the frame's header, so it is there,
/// or the peer is broken.
pub(crate) fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
    let msg = loop {
        match recvmsg(socket, &mut iov, &mut control, flags) {
            Ok(msg) => break msg,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Err(no_descriptor()),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.bytes != 1 || msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() != 1 {
        return Err(no_descriptor());
    }
    Ok(fds.remove(0))
}

/// Write a worker's reply frame to its pipe. A body in a sealed memfd
/// (`sealed`, from [`FrameBuf::seal`]) has its descriptor sent first on
/// `socket` (the call socket, which carries descriptors both ways) with one
/// byte, then its header on the pipe; so does a body in `frame` of
/// [`MEMFD_MIN`] bytes or more, copied to a memfd first.
pub(crate) fn send_reply(
    pipe: &impl AsFd,
    socket: BorrowedFd<'_>,
    frame: &[u8],
    sealed: Option<Sealed>,
) -> io::Result<()> {
    if let Some(sealed) = sealed {
        send_with_fd(&socket, &[0], sealed.memfd.as_fd())?;
        drop(sealed.memfd);
        return write_all(pipe, &sealed.header);
    }
    if frame.len() < HEADER + MEMFD_MIN {
        return write_all(pipe, frame);
    }
    let memfd = body_memfd(&frame[HEADER..])?;
    send_with_fd(&socket, &[0], memfd.as_fd())?;
    drop(memfd);
    write_all(pipe, &memfd_header(frame))
}

/// The header of `frame`, marked [`IN_MEMFD`].
pub(crate) fn memfd_header(frame: &[u8]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header.copy_from_slice(&frame[..HEADER]);
    let kind = u16::from_le_bytes([header[0], header[1]]) | IN_MEMFD;
    header[..2].copy_from_slice(&kind.to_le_bytes());
    header
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A memfd's contents mapped read-only: the body of an [`IN_MEMFD`] frame.
struct Mapped {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone and only read (it is
// `PROT_READ`, of a memfd sealed against writes), so it may move to another
// thread.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Map `fd`, which must be a memfd of exactly `len` bytes sealed against
    /// shrinking and writing: a peer's memfd that could shrink would make a
    /// read of the mapping raise `SIGBUS`, and one still writable could
    /// change under the decoder. The descriptor is closed on return.
    fn new(fd: OwnedFd, len: u64) -> io::Result<Mapped> {
        use rustix::fs::{FileType, SealFlags};
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(invalid("the descriptor of a frame's body is not a memfd"));
        }
        if u64::try_from(stat.st_size).ok() != Some(len) {
            return Err(invalid(format!(
                "a frame's shared memory holds {} bytes where its header announced {len}",
                stat.st_size
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|_| invalid("the descriptor of a frame's body is not a memfd"))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE) {
            return Err(invalid("a frame's shared memory is not sealed"));
        }
        let len = usize::try_from(len).map_err(|_| invalid("a frame's body is too large"))?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address given)
        // overlaps nothing of ours; it is of a memfd of exactly `len` bytes
        // sealed against shrinking (so no page of it can vanish: no SIGBUS)
        // and against writes (so its bytes cannot change while borrowed).
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED | MapFlags::POPULATE,
                &fd,
                0,
            )
        }?;
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is a live read-only mapping of `len` bytes, owned by
        // `self` (unmapped only in `drop`), whose contents cannot change
        // (the memfd is sealed against writes).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len` is the mapping made in `new`, unmapped only
            // here; no borrow of it outlives `self`.
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }
}

/// Send one complete frame (header and body) on a stream socket: a body of
/// [`MEMFD_MIN`] bytes or more goes in a sealed memfd attached to the header.
pub(crate) fn send_frame(fd: &impl AsFd, frame: &[u8]) -> io::Result<()> {
    if frame.len() < HEADER + MEMFD_MIN {
        return send_all(fd, frame);
    }
    let memfd = body_memfd(&frame[HEADER..])?;
    send_with_fd(fd, &memfd_header(frame), memfd.as_fd())
}

/// A memfd holding `body`, sealed against every change.
pub(crate) fn body_memfd(body: &[u8]) -> io::Result<OwnedFd> {
    use rustix::fs::SealFlags;
    let fd = framebuf::new_memfd()?;
    framebuf::write_at(&fd, body, 0)?;
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// Send `bytes` with `attached` in an `SCM_RIGHTS` message, never raising
/// `SIGPIPE`.
pub(crate) fn send_with_fd(
    socket: &impl AsFd,
    bytes: &[u8],
    attached: BorrowedFd<'_>,
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [attached];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for a descriptor"));
    }
    loop {
        match sendmsg(
            socket,
            &[io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            // The descriptor went with the first byte; the rest follows.
            Ok(n) => return send_all(socket, &bytes[n..]),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => wait_writable(socket.as_fd())?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The body of a [`TOO_LARGE`] reply.
pub(crate) fn encode_too_large(out: &mut Vec<u8>, len: u64, limit: u64) {
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&limit.to_le_bytes());
}

/// The announced length and the limit of a [`TOO_LARGE`] reply's body.
pub(crate) fn decode_too_large(body: &[u8]) -> Option<(u64, u64)> {
    let len = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let limit = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((len, limit))
}

/// The message of a frame refused for its length.
pub(crate) fn too_large(len: u64, limit: u64) -> String {
    format!("a message of {len} bytes exceeds the frame limit of {limit} bytes")
}

/// Write all of `bytes` to a blocking pipe, at most 1 MiB per system call (so
/// progress is visible to the other side and to `/proc/PID/io`).
pub(crate) fn write_all(fd: &impl AsFd, bytes: &[u8]) -> io::Result<()> {
    write_all_with(fd.as_fd(), bytes, |chunk| rustix::io::write(fd, chunk))
}

/// Send all of `bytes` on a blocking stream socket without ever raising
/// `SIGPIPE`: a closed peer is an `EPIPE` error.
pub(crate) fn send_all(fd: &impl AsFd, bytes: &[u8]) -> io::Result<()> {
    write_all_with(fd.as_fd(), bytes, |chunk| {
        rustix::net::send(fd, chunk, rustix::net::SendFlags::NOSIGNAL)
    })
}

/// Write all of `bytes` through `write`, which writes to `fd`. A descriptor
/// whose open file is non-blocking (the worker's socket is: its reader set
/// `O_NONBLOCK`, which every user of that file shares) answers `EAGAIN` when
/// the peer's buffer is full; that waits for room, as a blocking write would.
fn write_all_with(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> rustix::io::Result<usize>,
) -> io::Result<()> {
    const STEP: usize = 1 << 20;
    let mut rest = bytes;
    while !rest.is_empty() {
        let step = rest.len().min(STEP);
        match write(&rest[..step]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => wait_writable(fd)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Wait until `fd` can take more bytes, or has an error or hang-up for the
/// next write to report.
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header announcing 60 GiB is refused before anything is allocated
    /// for its body (the body never comes: reading it would hang, and
    /// allocating it would abort).
    #[test]
    fn a_huge_announced_body_is_refused_before_allocation() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let mut frame = Vec::new();
        Header {
            kind: CALL,
            status: 0,
            aux: 0,
            id: 42,
            len: 60 << 30,
        }
        .encode(&mut frame);
        write_all(&write, &frame).unwrap();
        let mut reader = FrameReader::new(read, Duration::ZERO).unwrap();
        reader.set_max_body(HARD_MAX_BODY);
        let err = reader.next_frame().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains(&(60u64 << 30).to_string()),
            "{err}"
        );
        let refused = reader.refused().unwrap();
        assert_eq!((refused.id, refused.len), (42, 60 << 30));
        assert!(reader.buf.len() < 1 << 20, "nothing was allocated for it");
    }

    #[test]
    fn a_body_at_the_limit_is_read() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let mut frame = Vec::new();
        let at = begin_frame(&mut frame, REPLY, OK, 0, 7);
        frame.extend_from_slice(&[5; 100]);
        finish_frame(&mut frame, at);
        write_all(&write, &frame).unwrap();
        let mut reader = FrameReader::new(read, Duration::ZERO).unwrap();
        reader.set_max_body(100);
        let (header, body) = reader.next_frame().unwrap().unwrap();
        assert_eq!((header.id, body.len()), (7, 100));
    }

    /// A send on a socket whose open file is non-blocking (the worker's, once
    /// its reader set `O_NONBLOCK`) waits for room instead of failing with
    /// `EAGAIN` when the peer reads slower than it is written to (a review
    /// finding: the worker exited and its tasks failed as `WorkerDied`).
    #[test]
    fn sends_on_a_non_blocking_socket_wait_for_room() {
        let (ours, theirs) = socket_pair();
        rustix::fs::fcntl_setfl(&ours, rustix::fs::OFlags::NONBLOCK).unwrap();
        // Far more than a socket buffer holds, so the sender meets a full one.
        let payload: Vec<u8> = (0..8u32 << 20).map(|i| i as u8).collect();
        let sender = std::thread::spawn({
            let payload = payload.clone();
            move || {
                let plain = send_all(&ours, &payload);
                let with_fd = send_with_fd(&ours, &payload, ours.as_fd());
                (plain, with_fd)
            }
        });
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while received.len() < 2 * payload.len() {
            let n = rustix::io::read(&theirs, &mut buf).unwrap();
            assert!(n > 0, "the sender gave up after {} bytes", received.len());
            received.extend_from_slice(&buf[..n]);
        }
        let (plain, with_fd) = sender.join().unwrap();
        plain.unwrap();
        with_fd.unwrap();
        assert!(received[..payload.len()] == payload[..]);
        assert!(received[payload.len()..] == payload[..]);
    }

    fn socket_pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    fn frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        let at = begin_frame(&mut frame, REPLY, OK, 9, id);
        frame.extend_from_slice(body);
        finish_frame(&mut frame, at);
        frame
    }

    /// Small and large frames interleaved on one socket: the large ones
    /// travel in memfds, and every body arrives whole and in order.
    #[test]
    fn large_bodies_cross_in_memfds_in_order() {
        let (read, write) = socket_pair();
        let sizes = [10, MEMFD_MIN, 3, MEMFD_MIN * 3 + 7, 0];
        let writer = std::thread::spawn(move || {
            for (i, len) in sizes.into_iter().enumerate() {
                let body: Vec<u8> = (0..len).map(|b| (b % 253) as u8 ^ i as u8).collect();
                send_frame(&write, &frame(i as u64, &body)).unwrap();
            }
        });
        let mut reader = FrameReader::new(read, Duration::ZERO).unwrap();
        for (i, len) in sizes.into_iter().enumerate() {
            let (header, body) = reader.next_frame().unwrap().unwrap();
            assert_eq!((header.kind, header.id, header.aux), (REPLY, i as u64, 9));
            assert_eq!(body.len(), len);
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(b, v)| *v == (b % 253) as u8 ^ i as u8)
            );
            assert_eq!(reader.mapped.is_some(), len >= MEMFD_MIN);
            reader.shrink();
        }
        writer.join().unwrap();
        assert!(reader.next_frame().unwrap().is_none());
        assert!(reader.fds.is_empty());
    }

    /// A header marked as in shared memory whose descriptor is missing, of
    /// the wrong size or not sealed is an `InvalidData` error, not a panic.
    #[test]
    fn a_forged_memfd_frame_is_refused() {
        use rustix::fs::{MemfdFlags, SealFlags};
        let header = |len: u64| {
            let mut raw = Vec::new();
            Header {
                kind: REPLY | IN_MEMFD,
                status: OK,
                aux: 0,
                id: 1,
                len,
            }
            .encode(&mut raw);
            raw
        };
        let memfd = |size: u64, seals: SealFlags| {
            let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
            rustix::fs::ftruncate(&fd, size).unwrap();
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
            fd
        };
        let all = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
        let cases: Vec<(Option<OwnedFd>, &str)> = vec![
            (None, "no descriptor"),
            (Some(memfd(10, all)), "holds 10 bytes"),
            (Some(memfd(4096, SealFlags::GROW)), "not sealed"),
        ];
        for (fd, expected) in cases {
            let (read, write) = socket_pair();
            match &fd {
                Some(fd) => send_with_fd(&write, &header(4096), fd.as_fd()).unwrap(),
                None => send_all(&write, &header(4096)).unwrap(),
            }
            let mut reader = FrameReader::new(read, Duration::ZERO).unwrap();
            let err = reader.next_frame().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
