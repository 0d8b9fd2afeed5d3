//! Waiting threads read their worker's replies themselves.
//!
//! A round trip used to keep three threads busy: the waiter spinning on its
//! handle, the worker running the call, and the slot's I/O thread spinning
//! on the reply ring to settle the handle. On a 2-core machine the three
//! took turns through `sched_yield`, and the round trip cost that (issue
//! 16). Now a thread that waits on a handle of the pool takes the reply
//! reader of a worker while it spins, settles whatever replies it finds
//! there, and the I/O thread, which does not spin while a waiter helps,
//! sleeps on the doorbell. A round trip then keeps two threads busy: the
//! waiter and the worker.
//!
//! The reader (`Reading`, behind `SlotReader::reading`) belongs to whoever
//! holds its lock. The I/O thread reads and settles every kind of frame,
//! and sleeps *without* the lock (in `poll` on the doorbell, the worker's
//! pidfd and a wake-up `eventfd`), having asked the ring for its doorbell
//! and noted `io_asleep`. A helper only ever `try_lock`s (it never waits for
//! the I/O thread, nor for another helper), and serves only plain replies
//! whose bytes are all in the ring ([`FrameReader::peek_frame`]); anything
//! else (a ready message, a body in shared memory, a reply out of order, a
//! corrupted ring, the end of the stream) it leaves where it is for the
//! I/O thread, which it wakes.
//!
//! User code (`Deserialize`, done-callbacks, `Drop`) runs with no reader
//! held: a helper claims the small replies already whole in the ring under
//! the reader, together and in the worker's order (`Shared::serve_replies`,
//! one lock of the pool's state for up to 64; a reply over 1 KiB alone),
//! copies their bodies into a thread-local store, lets go, then settles
//! them in order; a wait on the
//! same pool (a done-callback's) settles what is left of that store first,
//! so a callback may wait on a task whose reply was claimed with its own
//! (test `a_done_callback_run_by_a_waiter_may_wait_on_a_reply_claimed_with_its_own`).
//! As for the I/O thread's claims, a callback must not wait for another
//! callback of such a batch by any other means than the task's handle. The
//! I/O thread does the same for replies up to 64 KiB, and decodes a larger
//! one under the reader but publishes it after letting go (`Sink::decode`);
//! and a done-callback run by the I/O thread that waits, standing in for
//! that thread, also reads the replies in shared memory that helpers leave
//! to it (`Shared::serve_large_standing_in`). So a done-callback
//! may wait on another task of the pool, even of the same worker (test
//! `process_help::a_done_callback_may_wait_on_another_task_of_the_same_pool`,
//! which deadlocked when the settling thread held the reader).
//!
//! The doorbell. While the I/O thread sleeps, a helper that holds the
//! reader withdraws the doorbell request (the helper watches the ring, so
//! the worker need not make a system call per reply), and asks for it
//! again before it lets go — the same steps as the I/O thread's own
//! sleep, so a reply published after that rings — and if bytes came in
//! between, or it left a frame for the I/O thread, it wakes the I/O thread
//! through the `eventfd`. A reply is thus always either read by a helper
//! or announced to the I/O thread.
//!
//! Worker death is the I/O thread's alone: the pidfd and the doorbell's
//! end of file wake it whatever the helpers do, and it takes the reader
//! (waiting at most for a helper's bounded spin) to read what the worker
//! published before it died, as before.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};

use super::Shared;
use crate::process::channel::{Dir, Rings};
use crate::process::task::Job;
use crate::process::wire::{self, FrameReader, Header, Peek};

/// Set in a process pool's owner id (see `futures::pair`): a waiter on its
/// handles helps it through [`help_while`].
pub(crate) const PROCESS_OWNER: usize = 1 << (usize::BITS - 1);

/// The pools whose handles' waiters help, by owner id.
static POOLS: RwLock<Vec<(usize, Weak<Shared>)>> = RwLock::new(Vec::new());

/// The next owner id.
static NEXT_OWNER: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The pool and slot this thread last sent a call to: where a waiter
    /// looks first.
    static LAST_SLOT: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
    /// The pool and slot this thread is the I/O thread of (owner 0: none).
    static IO_SLOT: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// A waiter claims at most this many replies of one worker at a time (so
/// at most 64 KiB of bodies, with `HELP_CLAIM_BODY_MAX`).
const HELP_CLAIM_MAX: usize = 64;
/// A reply whose body is longer is claimed alone and copied once (a claim
/// together copies each body twice: into the store, then out of it).
const HELP_CLAIM_BODY_MAX: usize = 1 << 10;

/// What [`Shared::serve_replies`] claimed.
enum Served {
    /// Small replies, into this thread's [`Helped`] store.
    Together,
    /// One large reply, its body copied into the caller's buffer.
    One(Option<Job>, Header),
    /// None.
    Nothing,
}

/// Replies a waiting thread claimed together and has not settled yet, of
/// any pool, in the order claimed (see [`Shared::settle_helped`]).
#[derive(Default)]
struct Helped {
    /// The pool (its owner id), the call claimed, its reply's header and
    /// where its body is in `bytes`.
    entries: std::collections::VecDeque<(usize, Option<Job>, Header, std::ops::Range<usize>)>,
    /// The bodies, back to back; emptied when `entries` is.
    bytes: Vec<u8>,
}

thread_local! {
    static HELPED: std::cell::RefCell<Helped> = std::cell::RefCell::default();
}

/// This thread is the I/O thread of slot `index` of pool `owner`.
pub(super) fn mark_io_thread(owner: usize, index: usize) {
    IO_SLOT.with(|io| io.set((owner, index)));
}

/// A new owner id for a pool, registered so that waiters find it.
pub(super) fn register(shared: &Arc<Shared>) {
    POOLS.write().push((shared.owner, Arc::downgrade(shared)));
}

/// Forget the pool of `owner` (it is being dropped).
pub(super) fn unregister(owner: usize) {
    POOLS.write().retain(|(id, _)| *id != owner);
}

/// A fresh owner id.
pub(super) fn next_owner() -> usize {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed) | PROCESS_OWNER
}

/// Note that this thread sent a call to slot `index` of pool `owner`.
pub(super) fn note_sent(owner: usize, index: usize) {
    LAST_SLOT.with(|last| last.set((owner, index)));
}

/// While `done()` is false and neither `spin_end` nor `deadline` has
/// passed, read and settle the replies of the pool `owner`'s workers; a
/// done-callback run by one of the pool's I/O threads, standing in for it,
/// goes on past `spin_end` until `deadline` (see [`Shared::help`]).
/// Returns `done()`.
pub(crate) fn help_while(
    owner: usize,
    done: &dyn Fn() -> bool,
    spin_end: Instant,
    deadline: Option<Instant>,
) -> bool {
    match pool_of(owner) {
        Some(shared) => shared.help(done, spin_end, deadline),
        None => done(),
    }
}

/// `cancel()` decided a running task of the pool `owner`, whose promise is
/// `task`: kill the worker that runs it.
pub(crate) fn kill_running(owner: usize, task: *const ()) {
    if let Some(shared) = pool_of(owner) {
        shared.kill_running(task);
    }
}

/// The pool of `owner`, while it lives.
fn pool_of(owner: usize) -> Option<Arc<Shared>> {
    let pools = POOLS.read();
    pools
        .iter()
        .find(|(id, _)| *id == owner)
        .and_then(|(_, shared)| shared.upgrade())
}

/// One worker's reply reader, shared by its slot's I/O thread and the
/// threads that wait on its tasks.
pub(super) struct SlotReader {
    reading: Mutex<Reading>,
    /// The worker's rings, to see without the lock whether replies wait.
    rings: Option<Arc<Rings>>,
    /// Wakes the I/O thread from its sleep (see the module's comment).
    bell: OwnedFd,
    /// The reader's descriptors, for the I/O thread's `poll` outside the
    /// lock: the doorbell and the worker's pidfd.
    doorbell: OwnedFd,
    pidfd: Option<OwnedFd>,
}

struct Reading {
    reader: FrameReader,
    /// The I/O thread sleeps (outside the lock) with the doorbell asked for.
    io_asleep: bool,
    /// The I/O thread is done with this worker's stream (which may hold
    /// replies it did not read: after a protocol fault, say): no helper
    /// reads it any more, or it might settle a task that went back to the
    /// queue with a dead worker's reply.
    retired: bool,
}

impl SlotReader {
    pub(super) fn new(
        reader: FrameReader,
        rings: Option<Arc<Rings>>,
    ) -> std::io::Result<SlotReader> {
        use rustix::event::{EventfdFlags, eventfd};
        let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let doorbell = reader.fd().try_clone_to_owned()?;
        let pidfd = reader
            .watched()
            .map(|fd| fd.try_clone_to_owned())
            .transpose()?;
        Ok(SlotReader {
            reading: Mutex::new(Reading {
                reader,
                io_asleep: false,
                retired: false,
            }),
            rings,
            bell,
            doorbell,
            pidfd,
        })
    }

    /// The reader, for the I/O thread (which may wait for a helper's spin).
    pub(super) fn lock(&self) -> MappedReader<'_> {
        MappedReader(self.reading.lock())
    }

    /// The I/O thread is done with this worker's stream: helpers leave it.
    pub(super) fn retire(&self) {
        self.reading.lock().retired = true;
    }

    /// Whether replies may wait in the ring (without the lock: a hint).
    fn has_unread(&self) -> bool {
        self.rings
            .as_ref()
            .is_some_and(|r| r.has_unread(Dir::Replies))
    }

    /// The I/O thread found nothing to read: spin while no thread helps and
    /// `spin_end` (set on the first call) has not passed, then sleep until
    /// the doorbell rings, a helper wakes it, the worker exits or arenas are
    /// due for release. An error ends the stream, as one from
    /// [`FrameReader::next_frame`].
    pub(super) fn wait(
        &self,
        helpers: &AtomicUsize,
        spin: Duration,
        spin_end: &mut Option<Instant>,
    ) -> std::io::Result<()> {
        use rustix::event::{PollFd, PollFlags, poll};
        if self.rings.is_none() {
            // No ring (a worker started without one): block on the pipe,
            // holding the reader; no helper reads such a worker.
            return self.reading.lock().reader.wait_input();
        }
        let end = *spin_end.get_or_insert_with(|| Instant::now() + spin);
        while helpers.load(Ordering::Relaxed) == 0 && Instant::now() < end {
            for _ in 0..64 {
                std::hint::spin_loop();
                if self.has_unread() {
                    return Ok(());
                }
            }
            // Let a thread that shares this core run (on a busy machine,
            // maybe the very worker).
            std::thread::yield_now();
        }
        *spin_end = None;
        let timeout = {
            let mut reading = self.reading.lock();
            match reading.reader.sleep_prepare()? {
                Some(timeout) => {
                    reading.io_asleep = true;
                    timeout
                }
                None => return Ok(()),
            }
        };
        let (doorbell, exited, timed_out) = loop {
            let mut fds = [
                PollFd::new(&self.doorbell, PollFlags::IN),
                PollFd::new(&self.bell, PollFlags::IN),
                PollFd::new(&self.bell, PollFlags::IN),
            ];
            let polled = match &self.pidfd {
                Some(pidfd) => {
                    fds[2] = PollFd::new(pidfd, PollFlags::IN);
                    3
                }
                None => 2,
            };
            match poll(&mut fds[..polled], timeout.as_ref()) {
                Ok(0) => break (false, false, timeout.is_some()),
                Ok(_) => {
                    let ready = |i: usize| i < polled && !fds[i].revents().is_empty();
                    break (ready(0), ready(2), false);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.reading.lock().io_asleep = false;
                    return Err(e.into());
                }
            }
        };
        let mut reading = self.reading.lock();
        reading.io_asleep = false;
        // Take the helpers' wake-up, if any.
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.bell, &mut count);
        reading.reader.sleep_finish(doorbell, exited, timed_out)
    }

    /// The CPU this thread runs on, if the worker spins there waiting for
    /// calls.
    fn shared_cpu(&self) -> Option<usize> {
        let theirs = self.rings.as_ref().and_then(|r| r.reader_cpu(Dir::Calls))?;
        (Some(theirs) == wire::current_cpu()).then_some(theirs)
    }

    /// Wake the I/O thread from its sleep.
    fn ring_bell(&self) {
        let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
    }
}

/// The reader, locked.
pub(super) struct MappedReader<'a>(MutexGuard<'a, Reading>);

impl MappedReader<'_> {
    /// The I/O thread stops reading here (see [`SlotReader::retire`]).
    pub(super) fn retire(&mut self) {
        self.0.retired = true;
    }

    /// Whether the stream is retired (by a done-callback of the I/O thread
    /// standing in for it, which met a fault).
    pub(super) fn is_retired(&self) -> bool {
        self.0.retired
    }
}

impl std::ops::Deref for MappedReader<'_> {
    type Target = FrameReader;

    fn deref(&self) -> &FrameReader {
        &self.0.reader
    }
}

impl std::ops::DerefMut for MappedReader<'_> {
    fn deref_mut(&mut self) -> &mut FrameReader {
        &mut self.0.reader
    }
}

/// A helper's hold on one slot's reader.
struct Held<'a> {
    slot: &'a SlotReader,
    reading: MutexGuard<'a, Reading>,
    /// It left a frame for the I/O thread.
    handed_over: bool,
}

impl<'a> Held<'a> {
    /// Take the reader if nobody holds it; stand in for a sleeping I/O
    /// thread (its doorbell request is withdrawn while we watch).
    fn try_take(slot: &'a SlotReader) -> Option<Held<'a>> {
        // No ring: the I/O thread sleeps in `poll` on the pipe holding the
        // reader, and a frame a helper left in the buffer between its
        // reads would wait there unseen. No helper reads such a worker.
        slot.rings.as_ref()?;
        let reading = slot.reading.try_lock()?;
        if reading.retired {
            return None;
        }
        if reading.io_asleep {
            reading.reader.stop_doorbell();
        }
        Some(Held {
            slot,
            reading,
            handed_over: false,
        })
    }
}

impl Drop for Held<'_> {
    /// Let go: ask for the doorbell again for a sleeping I/O thread, and
    /// wake it if bytes came meanwhile or a frame is left for it.
    fn drop(&mut self) {
        if !self.reading.io_asleep {
            // Awake (blocked on the lock, or about to take it): it reads.
            return;
        }
        let came = self.reading.reader.ask_doorbell().unwrap_or(true);
        if came || self.handed_over || self.reading.reader.has_buffered() {
            self.slot.ring_bell();
        }
    }
}

impl Shared {
    /// Slot `index`'s reader, while its I/O thread serves a worker.
    fn slot_reader(&self, index: usize) -> Option<Arc<SlotReader>> {
        self.readers[index].lock().clone()
    }

    /// See [`help_while`].
    fn help(
        self: &Arc<Self>,
        done: &dyn Fn() -> bool,
        spin_end: Instant,
        deadline: Option<Instant>,
    ) -> bool {
        let until = deadline.map_or(spin_end, |d| d.min(spin_end));
        let slots = self.readers.len();
        let (owner, last) = LAST_SLOT.with(std::cell::Cell::get);
        // A done-callback that waits, run by one of this pool's I/O threads
        // (which settled its reply): nobody else reads that slot while the
        // callback runs, so this wait stands in for its I/O thread and does
        // not give up (no budget, no sleep) until the task is done or the
        // caller's deadline (`result_timeout`) has passed.
        let (io_owner, io_index) = IO_SLOT.with(std::cell::Cell::get);
        let stand_in = io_owner == self.owner;
        let first = if stand_in {
            io_index % slots
        } else if owner == self.owner {
            last % slots
        } else {
            0
        };
        let readers: Vec<Option<Arc<SlotReader>>> = (0..slots)
            .map(|k| self.slot_reader((first + k) % slots))
            .collect();
        self.helpers.fetch_add(1, Ordering::SeqCst);
        let mut held: Option<Held<'_>> = None;
        let mut handed_over = false;
        // The body of a reply claimed, copied out of the reader.
        let mut body = Vec::new();
        let mut rounds = 0u32;
        // Whether this wait moved its thread off the worker's CPU.
        let mut moved = false;
        // Replies of this pool that this thread claimed together (in an
        // outer wait, whose done-callback waits now) go first: the task
        // waited for may be one of them. Only an outer wait leaves any, and
        // this wait settles its own claims at once, so once is enough.
        self.settle_helped();
        let ok = loop {
            if done() {
                break true;
            }
            // Standing in: the replies this I/O thread claimed together
            // with the one whose callback waits are settled first (the
            // awaited task may be one of them).
            if stand_in && self.settle_unsettled() {
                continue;
            }
            rounds += 1;
            // A helper gives up at the end of its spin (the I/O thread
            // reads on); a stand-in only at its caller's deadline (nobody
            // else reads the slot), after which its caller's wait returns.
            let give_up = if stand_in { deadline } else { Some(until) };
            if rounds.is_multiple_of(16) && give_up.is_some_and(|t| Instant::now() >= t) {
                break done();
            }
            for (k, reader) in readers.iter().enumerate() {
                let Some(reader) = reader else { continue };
                let index = (first + k) % slots;
                let claimed = if k == 0 {
                    // The slot this thread sent to last: keep its reader
                    // while we wait, so that its worker need not ring, until
                    // it holds something for the I/O thread.
                    if held.is_none() && !handed_over {
                        held = Held::try_take(reader);
                    }
                    let mut claimed = None;
                    if let Some(hold) = &mut held {
                        if stand_in {
                            claimed = self.serve_reply(index, hold, &mut body);
                        } else {
                            match self.serve_replies(index, hold, &mut body) {
                                Served::Together => {
                                    // Every small reply already here,
                                    // claimed together: settled with the
                                    // reader let go.
                                    held = None;
                                    self.settle_helped();
                                    continue;
                                }
                                Served::One(job, header) => claimed = Some((job, header)),
                                Served::Nothing => {}
                            }
                        }
                    }
                    if let Some(hold) = &mut held
                        && hold.handed_over
                    {
                        if stand_in && self.serve_large_standing_in(index, &mut held) {
                            // Read as its I/O thread would: go on.
                            continue;
                        }
                        handed_over = true;
                        held = None;
                    }
                    claimed
                } else if reader.has_unread()
                    && let Some(mut hold) = Held::try_take(reader)
                {
                    if stand_in {
                        self.serve_reply(index, &mut hold, &mut body)
                    } else {
                        match self.serve_replies(index, &mut hold, &mut body) {
                            Served::Together => {
                                drop(hold);
                                self.settle_helped();
                                None
                            }
                            Served::One(job, header) => Some((job, header)),
                            Served::Nothing => None,
                        }
                    }
                } else {
                    None
                };
                if let Some((job, header)) = claimed {
                    // User code (`Deserialize`, done-callbacks, `Drop`) runs
                    // with no reader held: a callback may wait on another
                    // task of this pool, whose reply needs a reader.
                    held = None;
                    self.settle_reply(job, &header, &body);
                }
            }
            if rounds.is_multiple_of(64) {
                if !stand_in
                    && let Some(cpu) = held.as_ref().and_then(|hold| hold.slot.shared_cpu())
                {
                    // The worker spins on this very CPU: spinning here only
                    // takes turns with it. Move to another CPU once per
                    // wait and spin on there; failing that, sleep (the I/O
                    // thread settles the reply). Sleeping alone was meant
                    // to let the scheduler part the two, but it often
                    // did not: the two wake-ups of the I/O thread and of
                    // this thread made every round trip 30-50 µs for
                    // thousands of round trips (`BENCHMARKS.md`,
                    // 2026-12-03 13:00).
                    if !moved {
                        moved = true;
                        if move_off(cpu) {
                            continue;
                        }
                    }
                    break done();
                }
                // Let a thread that shares this core run: on a busy machine
                // it may be the very worker this thread waits for.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        drop(held);
        self.helpers.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    /// Standing in for the I/O thread of slot `index` (a done-callback it
    /// runs waits), holding its reader: if the next frame is a task's reply
    /// whose body is in shared memory — which helpers leave to the I/O
    /// thread, that is to this very thread — take it, decode it, let go of
    /// the reader and publish it, as `serve` does. False, having consumed
    /// nothing, for anything else (the initializer's reply, a ready
    /// message, the end of the stream: a callback that waits on those
    /// still waits for ever). A fault in the frame is reported, the
    /// stream retired (the I/O thread stops reading it once the callback
    /// returns), and true returned.
    fn serve_large_standing_in(
        self: &Arc<Self>,
        index: usize,
        held: &mut Option<Held<'_>>,
    ) -> bool {
        let Some(hold) = held.as_mut() else {
            return false;
        };
        let reading = &mut *hold.reading;
        let reader = &mut reading.reader;
        let Some(next) = reader.peek_header() else {
            return false;
        };
        let in_memfd = next.kind & wire::IN_MEMFD != 0;
        let kind = next.kind & !(wire::IN_MEMFD | wire::IN_ARENA);
        if !in_memfd || kind != wire::REPLY || next.id == super::INIT_ID {
            return false;
        }
        // The frame is consumed from here on: `serve` would now read it.
        let frame = match reader.poll_frame() {
            Ok(wire::Fill::Ready) => reader.take_frame_released_by(),
            Ok(_) => return false,
            Err(e) => Err(e),
        };
        let (header, body, release) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let refused = reader.refused();
                reading.retired = true;
                *held = None;
                self.read_failed(index, refused, &e);
                return true;
            }
        };
        let Some(job) = self.claim_reply(index, &header) else {
            release.now();
            reading.retired = true;
            *held = None;
            self.protocol_error(index, super::slot::Fault::Unexpected);
            return true;
        };
        let decoded = job
            .as_ref()
            .map(|job| super::slot::decode_reply(job, &header, body));
        release.now();
        reader.shrink();
        // User code runs with no reader held.
        *held = None;
        if let (Some(job), Some(decoded)) = (&job, decoded) {
            self.publish_reply(job, decoded);
        }
        super::slot::drop_job(job);
        true
    }

    /// Claim the next plain reply waiting in the held reader of slot
    /// `index`, copy its body into `body` and consume it: the caller lets
    /// go of the reader, then settles it. Anything else is left to the I/O
    /// thread.
    fn serve_reply(
        self: &Arc<Self>,
        index: usize,
        hold: &mut Held<'_>,
        body: &mut Vec<u8>,
    ) -> Option<(Option<Job>, Header)> {
        let reader = &mut hold.reading.reader;
        match reader.peek_frame(wire::REPLY) {
            Peek::Frame(header, bytes) => {
                // Not for a helper: the initializer's reply, or one out of
                // order (the I/O thread settles it, or finds the fault).
                let claimed = if header.id == super::INIT_ID {
                    None
                } else {
                    self.claim_reply(index, &header)
                };
                let Some(job) = claimed else {
                    hold.handed_over = true;
                    return None;
                };
                body.clear();
                body.extend_from_slice(bytes);
                reader.skip_frame();
                reader.shrink();
                Some((job, header))
            }
            Peek::NotYet => None,
            Peek::Other => {
                hold.handed_over = true;
                None
            }
        }
    }
}

impl Shared {
    /// Claim the plain replies already whole in slot `index`'s ring, the
    /// first of which must be the reply of the call its worker runs, up to
    /// [`HELP_CLAIM_MAX`] of them, under one lock of the pool's state (as
    /// the I/O thread does), copying their bodies into this thread's
    /// [`Helped`] store; the caller lets go of the reader, then settles
    /// them ([`settle_helped`](Self::settle_helped)). Before, a waiter
    /// claimed one reply at a time, taking the state's lock and handing the
    /// reader back (often with a wake-up of the sleeping I/O thread) for
    /// each: in the wait after a burst that had outrun the workers, that
    /// made the waiter the bottleneck. A reply whose body is over
    /// [`HELP_CLAIM_BODY_MAX`] ends the claim, and one that comes first is
    /// claimed alone as [`serve_reply`](Self::serve_reply) does (its body
    /// copied once, into `body`). Nothing is claimed, and the frame is left
    /// for the I/O thread (`handed_over`), if the first is not a reply a
    /// helper may take.
    fn serve_replies(
        self: &Arc<Self>,
        index: usize,
        hold: &mut Held<'_>,
        body: &mut Vec<u8>,
    ) -> Served {
        let reader = &mut hold.reading.reader;
        match reader.peek_frame(wire::REPLY) {
            Peek::NotYet => return Served::Nothing,
            Peek::Frame(header, bytes) if header.id != super::INIT_ID => {
                if bytes.len() > HELP_CLAIM_BODY_MAX {
                    // Copied once, into `body`, and settled alone.
                    return match self.serve_reply(index, hold, body) {
                        Some((job, header)) => Served::One(job, header),
                        None => Served::Nothing,
                    };
                }
            }
            Peek::Frame(..) | Peek::Other => {
                hold.handed_over = true;
                return Served::Nothing;
            }
        }
        let owner = self.owner;
        let claimed = HELPED.with(|helped| {
            let mut count = 0;
            self.claim_replies_while(
                index,
                |front| {
                    let mut helped = helped.borrow_mut();
                    let Helped { entries, bytes } = &mut *helped;
                    if count >= HELP_CLAIM_MAX {
                        return None;
                    }
                    let Peek::Frame(header, body) = reader.peek_frame(wire::REPLY) else {
                        return None;
                    };
                    if header.id != front
                        || header.id == super::INIT_ID
                        || body.len() > HELP_CLAIM_BODY_MAX
                    {
                        return None;
                    }
                    let at = bytes.len();
                    bytes.extend_from_slice(body);
                    // Its job is filled in by `take`, which follows.
                    entries.push_back((owner, None, header, at..bytes.len()));
                    reader.skip_frame();
                    count += 1;
                    Some(header)
                },
                |job| {
                    if let Some(entry) = helped.borrow_mut().entries.back_mut() {
                        entry.1 = job;
                    }
                },
            )
        });
        hold.reading.reader.shrink();
        if claimed == 0 {
            // Not the reply of the call that runs: a fault the I/O thread
            // finds and reports.
            hold.handed_over = true;
            return Served::Nothing;
        }
        Served::Together
    }

    /// Settle, in the order claimed, the replies of this pool that this
    /// thread claimed together ([`serve_replies`](Self::serve_replies)),
    /// those of other pools staying for their own waits. User code runs
    /// with no reader held, and may wait again: a wait on this pool
    /// settles the rest when it begins (see `help`), so a done-callback may
    /// wait on a task whose reply was claimed with its own.
    fn settle_helped(&self) {
        thread_local! {
            /// The buffer a body is copied into to be settled, kept for
            /// this thread's next one (a wait nested in a callback takes
            /// an empty one).
            static BODY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        if HELPED.with(|helped| helped.borrow().entries.is_empty()) {
            return;
        }
        let mut body = BODY.with(std::cell::Cell::take);
        loop {
            let next = HELPED.with(|helped| {
                let mut helped = helped.borrow_mut();
                let at = helped.entries.iter().position(|e| e.0 == self.owner)?;
                let (_, job, header, range) = helped.entries.remove(at)?;
                body.clear();
                body.extend_from_slice(&helped.bytes[range]);
                if helped.entries.is_empty() {
                    helped.bytes.clear();
                }
                Some((job, header))
            });
            let Some((job, header)) = next else {
                break;
            };
            self.settle_reply(job, &header, &body);
        }
        body.clear();
        BODY.with(|kept| kept.set(body));
    }
}

/// Move this thread off `cpu`, where the worker it waits for spins: the
/// thread's allowed CPUs are set for a moment to its own set without
/// `cpu` (the kernel moves it at once), then back to its own set, so
/// that it ends where it may always run and with the set it had. False
/// if it may run on `cpu` alone, or the system calls fail.
fn move_off(cpu: usize) -> bool {
    use rustix::thread::{sched_getaffinity, sched_setaffinity};
    let Ok(allowed) = sched_getaffinity(None) else {
        return false;
    };
    if !allowed.is_set(cpu) || allowed.count() < 2 {
        return false;
    }
    let mut elsewhere = allowed;
    elsewhere.unset(cpu);
    if sched_setaffinity(None, &elsewhere).is_err() {
        return false;
    }
    // The set as it was (restoring a set the thread had a moment ago
    // fails only if those CPUs went offline meanwhile).
    let _ = sched_setaffinity(None, &allowed);
    true
}

#[cfg(test)]
mod tests {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

    use super::move_off;
    use crate::process::wire::current_cpu;

    /// A set of the given CPUs.
    fn set_of(cpus: &[usize]) -> CpuSet {
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu);
        }
        set
    }

    /// In a thread of its own (whose allowed CPUs the test changes): moved
    /// off its CPU, a waiter runs elsewhere and keeps the set it had; one
    /// allowed a single CPU stays there, with its set untouched.
    #[test]
    fn a_waiter_moved_off_its_workers_cpu_keeps_its_allowed_cpus() {
        let allowed = sched_getaffinity(None).unwrap();
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        if cpus.len() < 2 {
            return; // nowhere to move to
        }
        std::thread::spawn(move || {
            let both = set_of(&cpus[..2]);
            // Put the thread on the first CPU, then allow both.
            sched_setaffinity(None, &set_of(&cpus[..1])).unwrap();
            assert_eq!(current_cpu(), Some(cpus[0]));
            sched_setaffinity(None, &both).unwrap();
            // The scheduler may move it back at any time after, but not
            // before the move returns: look at once, a few times over.
            let moved = (0..3).any(|_| {
                let from = current_cpu().unwrap();
                move_off(from) && current_cpu() != Some(from)
            });
            assert!(moved, "the thread never ran elsewhere after a move");
            assert_eq!(sched_getaffinity(None).unwrap(), both, "the set as before");
            // Allowed one CPU: no move, and the set is as before.
            sched_setaffinity(None, &set_of(&cpus[1..2])).unwrap();
            assert!(!move_off(cpus[1]));
            assert_eq!(sched_getaffinity(None).unwrap(), set_of(&cpus[1..2]));
            // A CPU the thread may not run on is not its to leave.
            assert!(!move_off(cpus[0]));
        })
        .join()
        .unwrap();
    }
}
