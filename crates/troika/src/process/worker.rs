//! The worker side: how a re-executed binary becomes a worker, and the loop
//! that runs calls.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::channel::{Dir, ReplySender, RingReader, Rings};
use super::framebuf::{self, FrameBuf};
use super::registry;
use super::spawn::MARKER;
use super::wire::{self, FrameReader};

/// How long an idle worker keeps polling its pipe before it blocks. Long
/// enough to bridge the gaps of a burst on a busy machine: a worker that
/// fell asleep costs the parent a wake-up per call (at 25 µs a 2-core
/// burst of trivial calls ran at 0.9-1.3 M calls/s, at 100 µs 1.35-1.4 M,
/// alternated in one window); an idle pool still sleeps after it.
const WORKER_SPIN: Duration = Duration::from_micros(100);

/// Turn this process into a worker if it was started as one; otherwise return
/// at once.
///
/// Call it as the first line of `main` in every binary that uses
/// [`Process`](crate::Process) or [`ProcessPool`](crate::ProcessPool):
///
/// ```no_run
/// fn main() {
///     troika::init();
///     // ... the program, which may start process pools ...
/// }
/// ```
///
/// A worker is this same binary, re-executed with a marker in its
/// environment. In a worker, `init` serves calls from the parent until the
/// parent closes the pipe, then exits the process: it never returns there.
///
/// troika also registers a constructor (an `.init_array` entry, run by the
/// loader before `main`) that does the same check, so test binaries
/// (`cargo test`), criterion benches and doctests, whose `main` you do not
/// write, work as workers without this line. Calling `init` anyway keeps the
/// entry point visible and costs one environment lookup.
pub fn init() {
    if let Some((read_fd, write_fd, rings)) = take_marker() {
        run(read_fd, write_fd, rings);
    }
}

/// Whether this process carries a worker marker addressed to it (its parent
/// is the pid in the marker).
pub(crate) fn marked_for_me() -> bool {
    parse_marker().is_some()
}

/// The marker's descriptors: read, write, and the rings' memfd if any.
fn parse_marker() -> Option<(i32, i32, Option<i32>)> {
    let marker = std::env::var_os(MARKER)?;
    let marker = marker.to_str()?;
    let mut parts = marker.split(':');
    let parent: i32 = parts.next()?.parse().ok()?;
    let read_fd: i32 = parts.next()?.parse().ok()?;
    let write_fd: i32 = parts.next()?.parse().ok()?;
    let rings_fd: Option<i32> = match parts.next() {
        Some(fd) => Some(fd.parse().ok()?),
        None => None,
    };
    if rings_fd.is_some_and(|fd| fd <= 2 || fd == read_fd || fd == write_fd) {
        return None;
    }
    // A marker inherited by a grandchild (a program the task started) names a
    // parent that is not ours: ignore it.
    let ppid = rustix::process::getppid()?;
    (ppid.as_raw_nonzero().get() == parent && read_fd > 2 && write_fd > 2 && read_fd != write_fd)
        .then_some((read_fd, write_fd, rings_fd))
}

/// Whether this process is serving as a worker (a task in a worker may start
/// pools of its own).
pub(crate) fn is_worker() -> bool {
    TAKEN.load(std::sync::atomic::Ordering::SeqCst)
}

static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn take_marker() -> Option<(OwnedFd, OwnedFd, Option<OwnedFd>)> {
    let (read_fd, write_fd, rings_fd) = parse_marker()?;
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    // Both descriptors must be open pipes or sockets, or the marker is stale.
    for fd in [read_fd, write_fd] {
        // SAFETY: only borrowed for the check; `fstat` on any number is sound.
        let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        let stat = rustix::fs::fstat(borrowed).ok()?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if kind != rustix::fs::FileType::Fifo && kind != rustix::fs::FileType::Socket {
            return None;
        }
        // Close-on-exec again, so that programs a task starts do not hold
        // the pipes open (the parent detects a worker's death by end of file).
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).ok()?;
    }
    let rings = match rings_fd {
        Some(fd) => {
            // SAFETY: only borrowed for the check, as above.
            let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
            let stat = rustix::fs::fstat(borrowed).ok()?;
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                != rustix::fs::FileType::RegularFile
            {
                return None;
            }
            rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).ok()?;
            // SAFETY: the rings' memfd handed over through the marker
            // (checked above to be open and a regular file); nothing else in
            // this process owns it, and `TAKEN` makes sure it is claimed once.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        None => None,
    };
    // SAFETY: the parent handed us these two pipe ends through the marker
    // (checked above to be open pipes and addressed to this process); nothing
    // else in this process owns them, and `TAKEN` makes sure they are claimed
    // only once.
    unsafe {
        Some((
            OwnedFd::from_raw_fd(read_fd),
            OwnedFd::from_raw_fd(write_fd),
            rings,
        ))
    }
}

/// The `.init_array` entry: become a worker before `main` runs.
extern "C" fn constructor() {
    init();
}

/// Placed in `.init_array`, which the dynamic loader runs before `main`.
#[used]
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` run once at
// start-up; `constructor` has exactly that type, and it only reads the
// environment (and, in a worker, never returns).
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = constructor;

/// Reference the constructor from the spawning code, so that the linker keeps
/// it in every binary that can start workers (and so is a worker's binary).
pub(crate) fn link_constructor() {
    std::hint::black_box(&CONSTRUCTOR);
}

/// Serve calls until the parent closes the pipe, then exit.
fn run(read_fd: OwnedFd, write_fd: OwnedFd, rings: Option<OwnedFd>) -> ! {
    // Rings that cannot be mapped are a parent that is not ours.
    let rings = match rings.map(Rings::open) {
        Some(Ok(rings)) => Some(rings),
        Some(Err(_)) => std::process::exit(70),
        None => None,
    };
    let code = serve(read_fd, write_fd, rings);
    std::process::exit(code)
}

fn serve(read_fd: OwnedFd, write_fd: OwnedFd, rings: Option<Arc<Rings>>) -> i32 {
    let mut out = Vec::with_capacity(1 << 12);
    let pid = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    let at = wire::begin_frame(&mut out, wire::READY, 0, pid, 0);
    wire::finish_frame(&mut out, at);
    let Ok(mut reader) = FrameReader::new(read_fd, WORKER_SPIN) else {
        return 70;
    };
    if let Some(rings) = &rings {
        reader.use_ring(RingReader::new(Arc::clone(rings), Dir::Calls));
    }
    *REPLIES.lock() = Some((ReplySender::new(write_fd, rings.as_ref()), rings));
    if send(reader.fd(), &out, None).is_err() {
        return 0;
    }
    // The parent never sends more than its own limit, which is at most this.
    reader.set_max_body(wire::HARD_MAX_BODY);
    let mut out = FrameBuf::frame(1 << 12);
    // The function the last call ran: a burst of calls to one function
    // looks its name up once.
    let mut last_fn = None;
    // When the last call ended: a call that was already there when it did
    // (a batch) is timed from then, so a burst reads the clock once per
    // call instead of twice.
    let mut last_end: Option<Instant> = None;
    loop {
        out.clear();
        let mut waited = false;
        let (header, body) = match reader.next_frame_noting_wait(&mut waited) {
            Ok(Some(frame)) => frame,
            // End of file: the parent closed the pipe (shutdown) or died.
            Ok(None) => return 0,
            Err(_) => {
                // A frame over the limit was refused before it was read: say
                // so to the parent for that call, then exit (the stream
                // cannot be followed past a body that was not read).
                if let Some(refused) = reader.refused() {
                    let out = out.bytes_mut();
                    let at = wire::begin_frame(out, wire::REPLY, wire::TOO_LARGE, 0, refused.id);
                    wire::encode_too_large(out, refused.len, wire::HARD_MAX_BODY);
                    wire::finish_frame(out, at);
                    let _ = send(reader.fd(), out, None);
                }
                return 71;
            }
        };
        let started = match last_end {
            Some(end) if !waited => end,
            _ => Instant::now(),
        };
        last_end = Some(handle(header, body, &mut out, &mut last_fn, started));
        // The call's body is read: its arena (if it came in one) is free
        // for the parent's next call before the parent sees this reply.
        reader.release();
        // Output a task printed without a newline reaches the terminal now,
        // not whenever the buffer next fills (or never, if the worker dies).
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let sealed = seal_reply(&mut out);
        let frame = out.in_memory().unwrap_or_default();
        if send(reader.fd(), frame, sealed).is_err() {
            return 0;
        }
        reader.shrink();
    }
}

/// Send a reply frame through this worker's reply channel (see
/// `ReplySender::send_reply`).
fn send(
    socket: std::os::fd::BorrowedFd<'_>,
    out: &[u8],
    sealed: Option<framebuf::Sealed>,
) -> std::io::Result<()> {
    match &mut *REPLIES.lock() {
        Some((replies, _)) => replies.send_reply(socket, out, sealed),
        None => Err(std::io::ErrorKind::BrokenPipe.into()),
    }
}

/// Seal the memfd of a reply whose body spilled into one. If that fails
/// (the last staged bytes could not be written: out of memory), the reply
/// becomes a failure saying so, and the worker lives on.
fn seal_reply(out: &mut FrameBuf) -> Option<framebuf::Sealed> {
    match out.seal() {
        Ok(sealed) => sealed,
        Err(e) => {
            out.truncate(wire::HEADER);
            let msg = format!("encoding the result in the worker: writing to shared memory: {e}");
            out.bytes_mut().extend_from_slice(msg.as_bytes());
            wire::patch_status(out.bytes_mut(), 0, wire::RESULT_ENCODE, 0);
            out.finish_frame();
            None
        }
    }
}

/// Run one call and build its reply frame in `out` (empty): a large result
/// is encoded straight into a memfd (see [`FrameBuf`]).
fn handle(
    header: wire::Header,
    body: &[u8],
    out: &mut FrameBuf,
    last_fn: &mut Option<(&'static str, registry::Trampoline)>,
    started: Instant,
) -> Instant {
    wire::begin_frame(out.bytes_mut(), wire::REPLY, wire::OK, 0, header.id);
    let status = match header.kind {
        wire::CALL | wire::CALL_CHUNK => {
            let name_len = header.aux as usize;
            match (body.get(..name_len), body.get(name_len..)) {
                (Some(name), Some(input)) => match last_fn
                    .filter(|(known, _)| known.as_bytes() == name)
                    .or_else(|| registry::lookup_entry(std::str::from_utf8(name).ok()?))
                {
                    Some(entry @ (_, run)) => {
                        *last_fn = Some(entry);
                        run(input, header.kind == wire::CALL_CHUNK, out)
                    }
                    None => {
                        let name = String::from_utf8_lossy(name);
                        out.bytes_mut().extend_from_slice(
                            format!(
                                "no function named `{name}` is registered in the worker \
                                 (define it with troika::remote!)"
                            )
                            .as_bytes(),
                        );
                        wire::UNKNOWN_FN
                    }
                },
                _ => {
                    out.bytes_mut().extend_from_slice(b"malformed call frame");
                    wire::BAD_FRAME
                }
            }
        }
        _ => {
            out.bytes_mut().extend_from_slice(b"unexpected frame kind");
            wire::BAD_FRAME
        }
    };
    let ended = Instant::now();
    let micros = u32::try_from((ended - started).as_micros()).unwrap_or(u32::MAX);
    wire::patch_status(out.bytes_mut(), 0, status, micros);
    out.finish_frame();
    ended
}

/// The worker's reply channel (and its rings), in a static so that the test
/// hook below writes through the same writer as the worker's replies.
static REPLIES: parking_lot::Mutex<Option<(ReplySender, Option<Arc<Rings>>)>> =
    parking_lot::Mutex::new(None);

/// Test hook, not public API: put `bytes` into this worker's reply stream
/// as a corrupted or hostile worker could, or with `None`, publish a
/// position its reply ring cannot have. Returns false outside a worker, or
/// for `None` in a worker without rings.
#[doc(hidden)]
pub fn forge_reply_for_test(bytes: Option<&[u8]>) -> bool {
    let mut replies = REPLIES.lock();
    let Some((sender, rings)) = &mut *replies else {
        return false;
    };
    match (bytes, rings) {
        (Some(bytes), _) => sender.send_raw(bytes).is_ok(),
        (None, Some(rings)) => {
            rings.corrupt_for_test(Dir::Replies);
            sender.wake_for_test();
            true
        }
        (None, None) => false,
    }
}
