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

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

pub(crate) const HEADER: usize = 24;

pub(crate) const CALL: u16 = 1;
pub(crate) const CALL_CHUNK: u16 = 2;
pub(crate) const REPLY: u16 = 3;
pub(crate) const READY: u16 = 4;

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
}

impl FrameReader {
    /// Wrap the read end of a pipe; it is switched to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd, spin: Duration) -> io::Result<FrameReader> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(FrameReader {
            file: std::fs::File::from(fd),
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
            spin,
            max_body: DEFAULT_MAX_BODY,
            refused: None,
            watch: None,
        })
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

    /// The next frame, or `None` at end of file. A stream that ends inside a
    /// frame is an `UnexpectedEof` error; a header announcing a body over the
    /// limit is an `InvalidData` error (and [`refused`](Self::refused) tells
    /// which), detected before the body is allocated or read.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<(Header, &[u8])>> {
        if !self.fill(HEADER)? {
            return if self.end == self.start {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let mut raw = [0u8; HEADER];
        raw.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
        let header = Header::decode(&raw);
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
        if !self.fill(total)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let body = self.start + HEADER..self.start + total;
        self.start += total;
        Ok(Some((header, &self.buf[body])))
    }

    /// Make at least `need` bytes available from `start`. False at end of file.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
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
        let mut spin_end: Option<Instant> = None;
        while self.end - self.start < need {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    spin_end = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    let end = *spin_end.get_or_insert(now + self.spin);
                    if now < end {
                        std::thread::yield_now();
                    } else {
                        self.wait_readable()?;
                        spin_end = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn wait_readable(&self) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, poll};
        let Some(watch) = &self.watch else {
            let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
            loop {
                match poll(&mut fds, None) {
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
            match poll(&mut fds, None) {
                // Data (or end of file) first: a reply written before the
                // exit is still read.
                Ok(_) if !fds[0].revents().is_empty() => return Ok(()),
                Ok(_) if !fds[1].revents().is_empty() => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the writing process exited; its pipe is held open by a process it started",
                    ));
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Release memory held for a huge frame once it has been consumed.
    pub(crate) fn shrink(&mut self) {
        const KEEP: usize = 1 << 20;
        if self.buf.len() > KEEP && self.end - self.start <= KEEP {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(KEEP);
            self.buf.shrink_to_fit();
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
    write_all_with(bytes, |chunk| rustix::io::write(fd, chunk))
}

/// Send all of `bytes` on a blocking stream socket without ever raising
/// `SIGPIPE`: a closed peer is an `EPIPE` error.
pub(crate) fn send_all(fd: &impl AsFd, bytes: &[u8]) -> io::Result<()> {
    write_all_with(bytes, |chunk| {
        rustix::net::send(fd, chunk, rustix::net::SendFlags::NOSIGNAL)
    })
}

fn write_all_with(
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
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
}
