//! The per-worker I/O slot: one thread per slot starts a worker, reads its
//! replies, and when it exits settles its tasks and starts the next.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::process::Signal;

use super::dispatch::Batch;
use super::help::SlotReader;
use super::{INIT_ID, Shared, State};
use crate::futures::{ErrorKind, Exit, TaskError};
use crate::process::channel::{CallSender, Dir, RingReader, Rings};
use crate::process::spawn::{self, ChildProc};
use crate::process::task::{Decoded, Job, Outgoing};
use crate::process::wire::{self, Fill, FrameReader, Header};

/// How long the parent's reader keeps polling a worker's pipe before it blocks.
const READER_SPIN: Duration = Duration::from_micros(25);

/// Replies up to this long are copied out of the reader, so that the I/O
/// thread settles them (running user code) without holding it; longer ones
/// are settled from the reader's buffer or shared memory, under its lock.
const SETTLE_COPY_MAX: usize = 64 << 10;

/// At most this many replies already read are claimed together.
const CLAIM_MAX: usize = 64;

thread_local! {
    /// The replies this I/O thread claimed together and has not settled
    /// yet (see `serve`).
    static UNSETTLED: Unsettled = Unsettled::default();
}

/// A claimed reply's job, header and body (as a range of
/// [`Unsettled::bytes`]).
type Claimed = (Option<Job>, Header, std::ops::Range<usize>);

/// Replies claimed together, settled one by one. A done-callback run while
/// settling one of them may wait on a task whose reply is further in the
/// batch: claimed, so no longer in the ring for a waiting thread to read.
/// Its wait stands in for this I/O thread (`help.rs`) and settles the rest
/// of the batch first ([`Shared::settle_unsettled`]).
#[derive(Default)]
struct Unsettled {
    /// Each claimed job, its reply's header and where its body is in
    /// `bytes`, in the worker's order.
    entries: std::cell::RefCell<VecDeque<Claimed>>,
    /// The bodies, copied out of the reader. Refilled only when `entries`
    /// is empty, by `serve` (never while a settle is under way).
    bytes: std::cell::RefCell<Vec<u8>>,
}

/// Why the pool killed a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KillReason {
    TimedOut(Duration),
    Cancelled,
    Terminated,
    /// The worker broke the protocol while running the task.
    Protocol(Fault),
}

/// How a worker broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// It announced a reply whose body is this long, over the pool's limit.
    TooLarge(u64),
    /// It sent a reply for a call that is not the one running, or a frame of
    /// an unknown kind.
    Unexpected,
    /// Sending it calls failed part-way, with this error (its kind and,
    /// for a system call's failure, the errno).
    Send(std::io::ErrorKind, Option<i32>),
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) worker: Option<Worker>,
    /// Tasks sent to the worker and not answered yet; the front one runs.
    pub(super) in_flight: VecDeque<Job>,
    /// When the front task started (its predecessor's reply arrived).
    pub(super) running_since: Option<Instant>,
    pub(super) tasks_done: usize,
    pub(super) kill_reason: Option<(u64, KillReason)>,
    /// Bumped for every new worker in the slot.
    pub(super) generation: u64,
    /// The worker is running the initializer (it is not ready before).
    pub(super) initializing: bool,
}

pub(super) struct Worker {
    pub(super) child: Arc<ChildProc>,
    /// `None` once the pool closed its end of the socket (the worker then
    /// reads end of file and exits).
    pub(super) writer: Option<Arc<Mutex<CallSender>>>,
    /// The writer's socket (weakly, with its descriptor number), to shut it
    /// down when the worker is dead: a write blocked on it (the worker's end
    /// held open by a process a task forked) then fails instead of waiting
    /// for ever.
    pub(super) socket: (std::sync::Weak<Mutex<CallSender>>, std::os::fd::RawFd),
    pub(super) ready: bool,
    pub(super) retiring: bool,
}

impl Worker {
    /// It may be sent calls: ready (its initializer answered), not being
    /// retired, its socket not closed. (Whether it is idle is its slot's
    /// `in_flight`.)
    pub(super) fn takes_calls(&self) -> bool {
        self.ready && !self.retiring && self.writer.is_some()
    }
}

/// A worker placed in its slot, handed to the slot's I/O thread.
pub(super) struct Installed {
    pub(super) child: Arc<ChildProc>,
    pub(super) from_child: OwnedFd,
    pub(super) rings: Option<Arc<Rings>>,
    pub(super) generation: u64,
}

impl Shared {
    /// The life of one worker slot: start a worker, serve it, and when it
    /// exits settle its tasks and start the next, until the pool shuts down.
    pub(super) fn slot_thread(self: Arc<Self>, index: usize, mut first: Option<Installed>) {
        super::help::mark_io_thread(self.owner, index);
        loop {
            let installed = match first.take() {
                Some(installed) => installed,
                None => match spawn::spawn_worker(self.spawn.clone()) {
                    Ok(spawned) => self.install(index, spawned),
                    Err(e) => {
                        if self.spawn_failed(&format!("could not start a worker: {e}"), false) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let Installed {
                child,
                from_child,
                rings,
                generation,
            } = installed;
            let got_ready = match FrameReader::new(from_child, READER_SPIN) {
                Ok(mut reader) => {
                    // Replies come through the ring; the pipe is its doorbell.
                    if let Some(rings) = &rings {
                        reader.use_ring(RingReader::new(Arc::clone(rings), Dir::Replies));
                    }
                    // A process the task forked may hold the pipe open after
                    // the worker died: the reader also wakes on its exit.
                    if let Ok(pidfd) = child.pidfd().try_clone_to_owned() {
                        reader.watch_exit(pidfd);
                    }
                    // Large replies' memfds come on the call socket.
                    let socket = self.lock().slots[index]
                        .worker
                        .as_ref()
                        .map(|w| w.socket.clone());
                    if let Some((writer, raw)) = socket {
                        reader.fds_from(move || {
                            let Some(_writer) = writer.upgrade() else {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    "a reply in shared memory came after the socket closed",
                                ));
                            };
                            // SAFETY: `raw` is the descriptor owned by the
                            // writer, which `_writer` keeps open meanwhile.
                            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
                            wire::recv_fd(fd)
                        });
                    }
                    match SlotReader::new(reader, rings) {
                        Ok(reader) => {
                            let reader = Arc::new(reader);
                            *self.readers[index].lock() = Some(Arc::clone(&reader));
                            let ready = self.serve(index, &reader);
                            // (`serve` retires the stream on every way out,
                            // holding the reader: a helper must not read on
                            // past where the I/O thread stopped.)
                            reader.retire();
                            *self.readers[index].lock() = None;
                            ready
                        }
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            // The pipe is closed or the worker exited (or is about to). Give
            // it a moment to finish exiting so its status is the real one.
            let exit = child
                .wait_exit(Some(Duration::from_secs(2)))
                .unwrap_or_else(|| child.kill_and_reap());
            let writer = self.lock().slots[index]
                .worker
                .as_ref()
                .map(|w| (w.socket.0.upgrade(), w.socket.1));
            if let Some((Some(_writer), raw)) = writer {
                // SAFETY: `raw` is the descriptor owned by the writer, which
                // `_writer` keeps alive (so open, and not reused) meanwhile.
                let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
                // Wake a write still blocked on the dead worker's socket.
                let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
            }
            if self.settle(index, generation, exit, got_ready) {
                return;
            }
        }
    }

    /// Put a freshly started worker into slot `index`.
    pub(super) fn install(self: &Arc<Self>, index: usize, spawned: spawn::Spawned) -> Installed {
        let child = Arc::new(spawned.child);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&spawned.to_child);
        let mut sender = CallSender::new(spawned.to_child, spawned.rings.as_ref());
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        slot.generation += 1;
        // A send that failed part-way ends this worker's call stream.
        let (shared, generation) = (Arc::downgrade(self), slot.generation);
        sender.on_fault(move |error| {
            if let Some(shared) = shared.upgrade() {
                shared.send_failed(index, generation, error);
            }
        });
        let writer = Arc::new(Mutex::new(sender));
        let socket = (Arc::downgrade(&writer), raw);
        slot.worker = Some(Worker {
            child: Arc::clone(&child),
            writer: Some(writer),
            socket,
            ready: false,
            retiring: false,
        });
        slot.tasks_done = 0;
        slot.kill_reason = None;
        slot.initializing = false;
        Installed {
            child,
            from_child: spawned.from_child,
            rings: spawned.rings,
            generation: slot.generation,
        }
    }

    /// Back off after a failed start (a worker that could not be started,
    /// or died before it was ready, `in_initializer` if it died running the
    /// initializer); true if the thread should end.
    pub(super) fn spawn_failed(&self, message: &str, in_initializer: bool) -> bool {
        let (failures, stop) = {
            let mut state = self.lock();
            state.startup_failures += 1;
            let stop = state.terminating
                || (state.closed && state.queue.is_empty())
                || state.broken.is_some();
            if stop {
                state.exited += 1;
                self.watch.notify_all();
                self.space.notify_all();
            }
            (state.startup_failures, stop)
        };
        if stop {
            return true;
        }
        if failures >= 3 {
            let ready = {
                let state = self.lock();
                state
                    .slots
                    .iter()
                    .any(|s| s.worker.as_ref().is_some_and(|w| w.ready))
            };
            if !ready && in_initializer {
                // The initializer kills every worker: the pool is broken.
                self.break_pool(format!(
                    "it killed {failures} workers in a row (last: {message})"
                ));
                return self.spawn_failed_stop();
            }
            if !ready {
                // Workers cannot start at all: fail what waits instead of
                // hanging.
                let jobs: Vec<Job> = self.lock().queue.drain(..).collect();
                for job in jobs {
                    self.note_outcome(false);
                    job.sink()
                        .fail(TaskError::new(ErrorKind::Failed(message.to_owned())));
                }
                self.space.notify_all();
            }
        }
        // Exponential back-off (20 ms, 40 ms, ... 1.28 s), so that workers
        // that cannot start do not make the pool spin.
        let pause = Duration::from_millis(10 << failures.min(7));
        let until = Instant::now() + pause;
        let mut state = self.lock();
        loop {
            let stopping = state.terminating
                || state.broken.is_some()
                || (state.closed && state.queue.is_empty());
            if stopping || state.wait_until(&self.space, until) {
                break;
            }
        }
        if state.broken.is_some() {
            // Broken meanwhile (by another slot): start nothing.
            drop(state);
            return self.spawn_failed_stop();
        }
        false
    }

    /// The slot thread of a broken pool ends.
    pub(super) fn spawn_failed_stop(&self) -> bool {
        let mut state = self.lock();
        state.exited += 1;
        self.watch.notify_all();
        self.space.notify_all();
        true
    }

    /// The initializer failed: fail every queued task, and every later one,
    /// with `message`, and close the workers (a busy one finishes its task
    /// first). No worker is started again.
    pub(super) fn break_pool(&self, message: String) {
        let jobs: Vec<Job> = {
            let mut state = self.lock();
            if state.broken.is_none() {
                state.broken = Some(message);
            }
            self.shut_incoming(&mut state);
            // Idle workers are closed now; a busy one when its reply has
            // come (`after_idle`): a large reply's memfd comes on the socket.
            for slot in &mut state.slots {
                if let Some(worker) = &mut slot.worker
                    && slot.in_flight.is_empty()
                {
                    worker.writer = None;
                }
            }
            state.queue.drain(..).collect()
        };
        self.space.notify_all();
        self.watch.notify_all();
        for job in jobs {
            self.note_outcome(false);
            job.sink().fail(self.broken_error());
        }
    }

    /// The error of every task of a broken pool.
    pub(super) fn broken_error(&self) -> TaskError {
        let message = self.lock().broken.clone().unwrap_or_default();
        TaskError::new(ErrorKind::InitializerFailed(message))
    }

    /// The worker in `index` is ready for tasks (and its initializer, if
    /// any, has returned): hand it work.
    pub(super) fn mark_ready(self: &Arc<Self>, index: usize) {
        let batch = {
            let mut state = self.lock();
            state.startup_failures = 0;
            let broken = state.broken.is_some();
            let slot = &mut state.slots[index];
            slot.initializing = false;
            if let Some(worker) = &mut slot.worker {
                worker.ready = true;
                if broken {
                    worker.writer = None;
                }
            }
            if broken {
                None
            } else {
                self.after_idle(&mut state, index)
            }
        };
        if let Some(batch) = batch {
            batch.write();
        }
    }

    /// Read the worker's messages until its pipe closes. Returns whether it
    /// ever reported ready. Threads waiting on the worker's tasks may read
    /// its replies meanwhile (see `help.rs`).
    pub(super) fn serve(self: &Arc<Self>, index: usize, slot: &SlotReader) -> bool {
        slot.lock().set_max_body(self.max_frame);
        let mut ready = false;
        let mut spin_end = None;
        // The headers of small replies claimed together, and where each
        // body is in `UNSETTLED`'s bytes.
        let mut headers: Vec<(Header, std::ops::Range<usize>)> = Vec::new();
        loop {
            let mut reader = slot.lock();
            if reader.is_retired() {
                // A done-callback standing in for this thread met a fault
                // in the stream (see `help.rs`) and reported it.
                return ready;
            }
            let polled = match reader.poll_frame() {
                Ok(Fill::Ready) => reader.take_frame_released_by().map(Some),
                Ok(Fill::Eof) => {
                    reader.retire();
                    return ready;
                }
                Ok(Fill::Short) => Ok(None),
                Err(e) => Err(e),
            };
            let (header, body, release) = match polled {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    drop(reader);
                    match slot.wait(&self.helpers, READER_SPIN, &mut spin_end) {
                        Ok(()) => continue,
                        Err(e) => {
                            slot.retire();
                            self.read_failed(index, None, &e);
                            return ready;
                        }
                    }
                }
                Err(e) => {
                    let refused = reader.refused();
                    reader.retire();
                    drop(reader);
                    self.read_failed(index, refused, &e);
                    return ready;
                }
            };
            spin_end = None;
            // `release` hands a body's arena back to the worker: every arm
            // calls it once it has read the body (a body in an arena is
            // only expected in a task's large reply).
            match header.kind {
                wire::READY => {
                    release.now();
                    if let Some(init) = &self.initializer {
                        // The worker gets no task before its initializer
                        // has answered (see the INIT_ID reply below).
                        let writer = {
                            let mut state = self.lock();
                            let slot = &mut state.slots[index];
                            slot.initializing = true;
                            slot.worker.as_ref().and_then(|w| w.writer.clone())
                        };
                        if let Some(writer) = writer {
                            let mut batch = Batch::new(writer);
                            batch.push(init.frame(), || Arc::clone(init) as Arc<dyn Outgoing>);
                            batch.write();
                        }
                        continue;
                    }
                    ready = true;
                    self.mark_ready(index);
                }
                wire::REPLY if header.id == INIT_ID => {
                    if header.status != wire::OK {
                        let pid = self.lock().slots[index]
                            .worker
                            .as_ref()
                            .map_or(0, |w| w.child.pid());
                        let message = format!("in worker {pid}: {}", String::from_utf8_lossy(body));
                        release.now();
                        self.break_pool(message);
                        reader.retire();
                        return ready;
                    }
                    release.now();
                    ready = true;
                    self.mark_ready(index);
                }
                wire::REPLY if body.len() <= SETTLE_COPY_MAX => {
                    // User code runs with the reader free (as on a waiting
                    // thread, see `help.rs`): a done-callback may wait on
                    // another task of this worker, whose reply a waiting
                    // thread then reads. The small replies already here
                    // are claimed together (one lock of the pool's state,
                    // one look at the clock: a burst's replies arrive
                    // faster than one at a time).
                    headers.clear();
                    UNSETTLED.with(|unsettled| {
                        let mut bytes = unsettled.bytes.borrow_mut();
                        bytes.clear();
                        bytes.extend_from_slice(body);
                        headers.push((header, 0..bytes.len()));
                    });
                    release.now();
                    let claimed = UNSETTLED.with(|unsettled| {
                        let mut bytes = unsettled.bytes.borrow_mut();
                        while headers.len() < CLAIM_MAX {
                            let wire::Peek::Frame(next, more) = reader.peek_frame(wire::REPLY)
                            else {
                                break;
                            };
                            if next.id == INIT_ID || more.len() > SETTLE_COPY_MAX {
                                break;
                            }
                            let start = bytes.len();
                            bytes.extend_from_slice(more);
                            headers.push((next, start..bytes.len()));
                            reader.skip_frame();
                        }
                        let mut entries = unsettled.entries.borrow_mut();
                        let mut bodies = headers.iter();
                        self.claim_replies(index, headers.iter().map(|(h, _)| h), |job| {
                            if let Some((header, body)) = bodies.next() {
                                entries.push_back((job, *header, body.clone()));
                            }
                        })
                    });
                    if claimed < headers.len() {
                        reader.retire();
                    }
                    reader.shrink();
                    drop(reader);
                    self.settle_unsettled();
                    if claimed < headers.len() {
                        self.protocol_error(index, Fault::Unexpected);
                        return ready;
                    }
                }
                wire::REPLY => {
                    let Some(job) = self.claim_reply(index, &header) else {
                        release.now();
                        reader.retire();
                        drop(reader);
                        self.protocol_error(index, Fault::Unexpected);
                        return ready;
                    };
                    // A large body is borrowed from the reader (maybe from
                    // its shared memory): decoded under the lock; then its
                    // arena goes back to the worker and the reader is let
                    // go before the outcome is published, so that user code
                    // (done-callbacks) runs with the reader free, as for
                    // small replies: a callback may wait on another task of
                    // this worker, whose reply a waiting thread then reads.
                    let decoded = job.as_ref().map(|job| decode_reply(job, &header, body));
                    release.now();
                    reader.shrink();
                    drop(reader);
                    if let (Some(job), Some(decoded)) = (&job, decoded) {
                        self.publish_reply(job, decoded);
                    }
                    drop_job(job);
                }
                _ => {
                    release.now();
                    reader.retire();
                    self.protocol_error(index, Fault::Unexpected);
                    return ready;
                }
            }
        }
    }

    /// A reply `header` read from the worker in slot `index` (by its I/O
    /// thread or a waiting thread), while the reader is held, so that
    /// replies are claimed in the worker's order: take the call it answers
    /// out of the slot and send the worker more work if it is due; the
    /// caller then settles it ([`settle_reply`](Self::settle_reply)).
    /// `None`, having changed nothing, if it is not the reply of the call
    /// that runs (a protocol fault). No user code runs here.
    pub(super) fn claim_reply(
        self: &Arc<Self>,
        index: usize,
        header: &Header,
    ) -> Option<Option<Job>> {
        let mut job = None;
        let claimed = self.claim_replies(index, std::iter::once(header), |j| job = j);
        (claimed == 1).then_some(job)
    }

    /// [`claim_reply`](Self::claim_reply) for several replies of slot
    /// `index` in the worker's order, under one lock: each job claimed goes
    /// to `take`. Returns how many were claimed: all of
    /// them, or up to the first that is not the reply of the call that
    /// runs (a protocol fault).
    pub(super) fn claim_replies<'h>(
        self: &Arc<Self>,
        index: usize,
        headers: impl Iterator<Item = &'h Header>,
        take: impl FnMut(Option<Job>),
    ) -> usize {
        let mut headers = headers.peekable();
        self.claim_replies_while(
            index,
            |front| headers.next_if(|h| h.id == front).copied(),
            take,
        )
    }

    /// [`claim_replies`](Self::claim_replies), the replies read as they
    /// are claimed: `next` is given the id of the call at the front of the
    /// worker's `in_flight` and returns the header of the next reply if it
    /// is that call's (having consumed it), `None` to stop.
    pub(super) fn claim_replies_while(
        self: &Arc<Self>,
        index: usize,
        mut next: impl FnMut(u64) -> Option<Header>,
        mut take: impl FnMut(Option<Job>),
    ) -> usize {
        let (claimed, batch) = {
            let mut state = self.lock();
            let mut claimed = 0;
            let mut avg_run_us = state.avg_run_us;
            let slot = &mut state.slots[index];
            while let Some(front) = slot.in_flight.front().map(|j| j.id) {
                let Some(header) = next(front) else {
                    break;
                };
                debug_assert_eq!(header.id, front, "a reply claimed for another call");
                take(slot.in_flight.pop_front());
                avg_run_us = 0.9 * avg_run_us + 0.1 * f64::from(header.aux);
                claimed += 1;
            }
            if claimed == 0 {
                return 0;
            }
            slot.tasks_done += claimed;
            // The worker starts the next call now: it can be cancelled from
            // here on, and its deadline is later than the one the watchdog
            // waits for.
            if let Some(next) = slot.in_flight.front() {
                Self::arm_cancel(next);
            }
            slot.running_since = Some(Instant::now());
            let idle = slot.in_flight.is_empty();
            state.avg_run_us = avg_run_us;
            let batch = if idle {
                self.after_idle(&mut state, index)
            } else {
                // Short calls: the next batch goes before the worker runs
                // dry.
                self.take_batch_for(&mut state, index, true)
            };
            (claimed, batch)
        };
        if let Some(batch) = batch {
            batch.write();
        }
        claimed
    }

    /// Settle the replies this thread (a slot's I/O thread) claimed
    /// together and has not settled yet, in the worker's order (see
    /// [`Unsettled`]). Returns whether there were any.
    pub(super) fn settle_unsettled(&self) -> bool {
        UNSETTLED.with(|unsettled| {
            let mut any = false;
            loop {
                let next = unsettled.entries.borrow_mut().pop_front();
                let Some((job, header, body)) = next else {
                    return any;
                };
                // Shared: a callback that waits settles the rest of the
                // batch from the same bytes (nested, through `help`).
                let bytes = unsettled.bytes.borrow();
                self.settle_reply(job, &header, &bytes[body]);
                any = true;
            }
        })
    }

    /// After [`claim_reply`](Self::claim_reply): settle `job` with
    /// the reply `header`/`body`. User code runs here (a waiting thread
    /// that read the reply calls it after letting go of the reader, so that
    /// a done-callback may wait on another task of the pool).
    pub(super) fn settle_reply(&self, job: Option<Job>, header: &Header, body: &[u8]) {
        if let Some(job) = &job {
            // User code runs here (`Deserialize`, done-callbacks): `finish`
            // catches its panics; one that still escapes must not end this
            // thread.
            use std::panic::{AssertUnwindSafe, catch_unwind};
            // Counted before the handle is settled (a panic in
            // the decoding counts it as failed below).
            let counted = std::cell::Cell::new(false);
            let count = |ok| {
                counted.set(true);
                self.note_outcome(ok);
            };
            let finish = || job.sink().finish(header.status, body, &count);
            let ok = catch_unwind(AssertUnwindSafe(finish)).unwrap_or(false);
            if !counted.get() {
                self.note_outcome(ok);
            }
        }
        drop_job(job);
    }

    /// Count and publish a reply [`decode_reply`] decoded (user code runs:
    /// done-callbacks).
    pub(super) fn publish_reply(&self, job: &Job, decoded: Result<Decoded<'_>, TaskError>) {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        match decoded {
            Ok(decoded) => {
                // Counted before the handle is settled.
                self.note_outcome(decoded.ok);
                let _ = catch_unwind(AssertUnwindSafe(move || decoded.publish()));
            }
            Err(err) => {
                self.note_outcome(false);
                let _ = catch_unwind(AssertUnwindSafe(|| job.sink().fail(err)));
            }
        }
    }

    /// Reading the worker's stream in slot `index` failed with `error`
    /// (`refused`: the header of a reply refused for its length).
    pub(super) fn read_failed(
        &self,
        index: usize,
        refused: Option<Header>,
        error: &std::io::Error,
    ) {
        // A reply announced over the limit was refused unread, or one in
        // shared memory did not match its header: the worker is broken or
        // hostile. (Any other error is a stream cut short: the worker died.)
        if let Some(refused) = refused {
            self.protocol_error(index, Fault::TooLarge(refused.len));
        } else if error.kind() == std::io::ErrorKind::InvalidData {
            self.protocol_error(index, Fault::Unexpected);
        }
    }

    /// A worker has nothing in flight: recycle it, close it at shutdown, or
    /// give it more work.
    pub(super) fn after_idle(self: &Arc<Self>, state: &mut State, index: usize) -> Option<Batch> {
        let slot = &mut state.slots[index];
        slot.running_since = None;
        let Some(worker) = &mut slot.worker else {
            return None;
        };
        let worn_out = self.max_tasks.is_some_and(|max| slot.tasks_done >= max)
            || self
                .max_rss
                .is_some_and(|max| rss_bytes(worker.child.pid()).is_some_and(|rss| rss > max));
        if worn_out {
            // Closing the socket makes the worker exit; its I/O thread then
            // starts a fresh one.
            worker.retiring = true;
            worker.writer = None;
            return None;
        }
        if (state.closed || state.broken.is_some()) && state.queue.is_empty() {
            worker.writer = None;
            return None;
        }
        self.take_batch(state, index)
    }

    /// A send of calls to the worker of `generation` in slot `index` failed
    /// with `error`: if the worker corrupted its call ring it broke the
    /// protocol; if it is gone its I/O thread settles its tasks; any other
    /// failure (of this side: no memory for a large body, say) leaves the
    /// worker waiting for the rest of a frame that will never come, so it
    /// is killed, and the task it was to run fails saying why.
    pub(super) fn send_failed(&self, index: usize, generation: u64, error: &std::io::Error) {
        if self.lock().slots[index].generation != generation {
            return;
        }
        match error.kind() {
            std::io::ErrorKind::InvalidData => self.protocol_error(index, Fault::Unexpected),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {}
            kind => self.protocol_error(index, Fault::Send(kind, error.raw_os_error())),
        }
    }

    /// The worker sent something that makes no sense: kill it. The call it
    /// was running fails with an error that says what happened.
    pub(super) fn protocol_error(&self, index: usize, fault: Fault) {
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        if let (Some(job), None) = (slot.in_flight.front(), slot.kill_reason) {
            slot.kill_reason = Some((job.id, KillReason::Protocol(fault)));
        }
        if let Some(worker) = &slot.worker {
            worker.child.signal(Signal::KILL);
        }
    }

    /// The worker in slot `index` has exited with `exit`: settle its tasks and
    /// decide whether to start another. Returns true if the slot is done.
    pub(super) fn settle(
        self: &Arc<Self>,
        index: usize,
        generation: u64,
        exit: Exit,
        got_ready: bool,
    ) -> bool {
        let mut failed = Vec::new();
        let (stop, batches, in_initializer) = {
            let mut state = self.lock();
            let slot = &mut state.slots[index];
            debug_assert_eq!(slot.generation, generation);
            slot.worker = None;
            let in_initializer = std::mem::take(&mut slot.initializing);
            slot.running_since = None;
            let kill_reason = slot.kill_reason.take();
            let mut in_flight = std::mem::take(&mut slot.in_flight);
            // The front task was running: it fails, unless the pool killed the
            // worker for another task that answered just before it died. The
            // tasks behind it never started: they go back to the queue's head.
            let mut requeue = Vec::new();
            if let Some(job) = in_flight.pop_front() {
                let err = match kill_reason {
                    Some((_, KillReason::Terminated)) => Some(TaskError::shut_down()),
                    Some((id, KillReason::TimedOut(limit))) if id == job.id => {
                        Some(TaskError::new(ErrorKind::TimedOut(limit)))
                    }
                    Some((id, KillReason::Cancelled)) if id == job.id => {
                        Some(TaskError::cancelled())
                    }
                    Some((id, KillReason::Protocol(fault))) if id == job.id => {
                        Some(TaskError::new(match fault {
                            Fault::TooLarge(size) => ErrorKind::FrameTooLarge {
                                size,
                                limit: self.max_frame,
                            },
                            Fault::Unexpected => ErrorKind::Failed(format!(
                                "the worker broke the protocol and was replaced ({exit})"
                            )),
                            Fault::Send(kind, errno) => ErrorKind::Failed(format!(
                                "sending the task to its worker failed part-way ({}); \
                                 the worker was replaced",
                                errno.map_or_else(
                                    || std::io::Error::from(kind),
                                    std::io::Error::from_raw_os_error
                                )
                            )),
                        }))
                    }
                    Some(_) => None,
                    None => Some(TaskError::new(ErrorKind::WorkerDied(exit))),
                };
                match err {
                    Some(err) => failed.push((job, err)),
                    None => requeue.push(job),
                }
            }
            requeue.extend(in_flight);
            if state.terminating {
                failed.extend(requeue.into_iter().map(|j| (j, TaskError::shut_down())));
            } else if let Some(message) = &state.broken {
                let err = TaskError::new(ErrorKind::InitializerFailed(message.clone()));
                failed.extend(requeue.into_iter().map(|j| (j, err.clone())));
            } else {
                for job in requeue.into_iter().rev() {
                    state.queue.push_front(job);
                }
            }
            let stop = state.terminating
                || (state.closed && state.queue.is_empty())
                || state.broken.is_some();
            if !stop {
                self.restarts.fetch_add(1, Ordering::Relaxed);
            } else {
                state.exited += 1;
                self.watch.notify_all();
            }
            // Requeued tasks may go to another idle worker at once.
            let mut batches = Vec::new();
            while let Some(batch) = self.take_any_batch(&mut state) {
                batches.push(batch);
            }
            (stop, batches, in_initializer)
        };
        self.space.notify_all();
        for batch in batches {
            batch.write();
        }
        for (job, err) in failed {
            // Its worker is dead: an argument it was reading from shared
            // memory is never released, so its arena goes with the job.
            job.task.frame().abandon();
            self.note_outcome(false);
            job.sink().fail(err);
        }
        let message = if in_initializer {
            format!("the initializer ended its worker with {exit}")
        } else {
            format!("worker processes exit before they are ready (last: {exit})")
        };
        if !stop && !got_ready && self.spawn_failed(&message, in_initializer) {
            return true;
        }
        stop
    }
}

/// A process's resident set size, from `/proc/PID/statm`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = rustix::param::page_size() as u64;
    Some(pages * page)
}

/// Decode a large reply for `job` (user code: `Deserialize`, whose panics
/// the decoding catches; one that still escapes fails the task).
pub(super) fn decode_reply<'j>(
    job: &'j Job,
    header: &Header,
    body: &[u8],
) -> Result<Decoded<'j>, TaskError> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    catch_unwind(AssertUnwindSafe(|| job.sink().decode(header.status, body)))
        .map_err(|payload| TaskError::panicked(&*payload))
}

/// Drop a settled job: its value's `Drop` (user code, when the handle is
/// gone) may panic, which must not end the settling thread.
pub(super) fn drop_job(job: Option<Job>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
}
