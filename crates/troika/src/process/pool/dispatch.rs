//! Dispatch and batching: queue a task, and hand queued calls to an idle
//! worker, several small ones in one write; pipeline the next batch of short
//! calls to a worker that still has calls in flight.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use rustix::process::Signal;

use super::slot::KillReason;
use super::{Shared, State};
use crate::futures::{ErrorKind, SubmitErrorReason, TaskError};
use crate::ipc::Transfer;
use crate::process::channel::CallSender;
use crate::process::framebuf::Frame;
use crate::process::task::{Job, Outgoing};
use crate::process::wire;

/// A thread takes this many call ids at a time (see `Shared::next_id`).
const ID_BLOCK: u64 = 1024;

/// Several small calls are sent to an idle worker in one write, up to this
/// many bytes (well under the socket's send buffer, so the write never
/// blocks).
const BATCH_BYTES: usize = 32 << 10;
/// At most this many calls in one batch.
const BATCH_MAX: usize = 64;
/// A worker that runs short calls (batches of at least this many) is sent
/// its next batch while it still has calls in flight (see `take_batch_for`).
const PIPELINE_MIN_BATCH: usize = 4;
/// The most bytes of calls in flight to a worker after a pipelined batch:
/// well under the call ring's size, so that writing it never waits for room.
const PIPELINE_BYTES: usize = 2 * BATCH_BYTES;
const _: () = assert!(PIPELINE_BYTES <= crate::process::channel::RING_BYTES as usize / 2);
/// A batch aims at this much work (by the measured run time of recent tasks),
/// so that long tasks go one at a time and spread over the workers.
const BATCH_WORK_US: f64 = 50.0;

/// Calls to write to one worker, taken from the queue under the lock and
/// written after it is released.
///
/// Small calls in memory are copied into the batch under the lock (a few
/// dozen bytes each), so that the write needs nothing of theirs: the batch
/// holds no reference to a task, and taking and writing it costs no atomic
/// operation per call on the task's state (a task's allocation was made on
/// the submitting thread's core; each such operation waited for its line).
pub(super) struct Batch {
    pub(super) writer: Arc<Mutex<CallSender>>,
    /// The small calls' frames, back to back, written first.
    copied: Vec<u8>,
    /// Then these: from the first call that is not copied (large, or in
    /// shared memory) on, in order.
    then: Vec<Arc<dyn Outgoing>>,
}

/// Frames up to this length are copied into their batch (see [`Batch`]).
const COPY_MAX: usize = 4 << 10;

thread_local! {
    /// The bytes of this thread's last batch, kept for its next one: a
    /// batch of one call (every round trip) allocates nothing.
    static COPY_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl Batch {
    /// An empty batch for `writer`.
    pub(super) fn new(writer: Arc<Mutex<CallSender>>) -> Batch {
        Batch {
            writer,
            copied: COPY_BUF.try_with(Cell::take).unwrap_or_default(),
            then: Vec::new(),
        }
    }

    /// Add a call after those in the batch: its `frame`, copied if it is
    /// small, else the task that holds it (`task` is called only then).
    pub(super) fn push(&mut self, frame: &Frame, task: impl FnOnce() -> Arc<dyn Outgoing>) {
        if self.then.is_empty()
            && let Some(bytes) = frame.in_memory()
            && bytes.len() <= COPY_MAX
        {
            self.copied.extend_from_slice(bytes);
        } else {
            self.then.push(task());
        }
    }

    pub(super) fn write(self) {
        let mut writer = self.writer.lock();
        // A failed write means the worker is dead or dying: its I/O thread
        // sees end of file and deals with the tasks it had. (A worker that
        // corrupted its call ring is killed by the sender.)
        let _ = writer.send_frames_after(&self.copied, self.then.iter().map(|f| f.frame()));
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let mut copied = std::mem::take(&mut self.copied);
        // Copies fill at most `PIPELINE_BYTES` (the bound of a batch that
        // copies only calls under `COPY_MAX`); a buffer grown larger than
        // that is let go.
        if copied.capacity() <= PIPELINE_BYTES {
            copied.clear();
            let _ = COPY_BUF.try_with(|buf| buf.set(copied));
        }
    }
}

/// The pool (its `owner`, unique for the life of the process) whose ids a
/// thread holds, the next of them and the end of its block.
type IdBlock = (usize, u64, u64);

/// The next id of pool `owner`, whose counter is `counter`, from this
/// thread's `block` (see [`Shared::next_id`]).
fn next_id_from(block: &Cell<IdBlock>, owner: usize, counter: &AtomicU64) -> u64 {
    let (held, next, end) = block.get();
    if held == owner && next < end {
        block.set((owner, next + 1, end));
        return next;
    }
    let start = counter.fetch_add(ID_BLOCK, Ordering::Relaxed);
    block.set((owner, start + 1, start + ID_BLOCK));
    start
}

impl Shared {
    pub(super) fn batch_target(&self, state: &State) -> usize {
        // Under a task timeout, batching is exact enough: a task's clock
        // starts when its predecessor's reply arrives, which is when the
        // worker starts it, give or take the parent's read.
        let target = BATCH_WORK_US / (state.avg_run_us + 1.0);
        (target as usize).clamp(1, BATCH_MAX)
    }

    /// Take calls for the idle worker in `index`, if it is idle and ready.
    pub(super) fn take_batch(&self, state: &mut State, index: usize) -> Option<Batch> {
        self.take_batch_for(state, index, false)
    }

    /// Take calls for the worker in `index`: if it is idle, or, with
    /// `pipeline`, if it runs short calls and has used up half of what it
    /// was sent (see "Pipelining" in `README.md`). Only the slot's own I/O
    /// thread pipelines, right after it read a reply: the batch before was
    /// then published whole, so batches reach the worker in the order they
    /// were taken (the order of `in_flight`).
    pub(super) fn take_batch_for(
        &self,
        state: &mut State,
        index: usize,
        pipeline: bool,
    ) -> Option<Batch> {
        let target = self.batch_target(state);
        let State { queue, slots, .. } = state;
        let slot = &mut slots[index];
        let worker = slot.worker.as_ref()?;
        if !worker.takes_calls() {
            return None;
        }
        let busy = !slot.in_flight.is_empty();
        // In flight, a pipelined batch and what is unread of the calls
        // before it stay within `PIPELINE_BYTES`, under the ring's size: its
        // write never waits for the worker.
        let mut bytes = 0;
        if busy {
            // A worker due for recycling is checked when it is idle
            // (`after_idle`): it must become idle, so it is not pipelined
            // beyond its last task, and not at all under a memory cap
            // (checked only then).
            let due = self.max_rss.is_some()
                || self
                    .max_tasks
                    .is_some_and(|max| slot.tasks_done + slot.in_flight.len() + target > max);
            if !pipeline
                || due
                || target < PIPELINE_MIN_BATCH
                || slot.in_flight.len() > target / 2
                || queue.front().is_none_or(|job| job.started)
            {
                return None;
            }
            bytes = slot.in_flight.iter().map(|job| job.len).sum();
        }
        let limit = if busy { PIPELINE_BYTES } else { BATCH_BYTES };
        let mut batch = Batch::new(Arc::clone(worker.writer.as_ref()?));
        let mut taken = 0;
        while let Some(job) = queue.front() {
            // A call sent again after its worker died goes first in a batch
            // to an idle worker: it is still marked killable from its old
            // worker (below), so it must run at the front.
            let full = taken >= target || bytes + job.len > limit || job.started;
            if (taken > 0 || busy) && full {
                break;
            }
            let Some(mut job) = queue.pop_front() else {
                break;
            };
            if !job.started {
                if !job.sink().start() {
                    continue; // cancelled while queued
                }
                job.started = true;
            } else if job.sink().is_done() {
                continue; // sent again after a death, and cancelled meanwhile
            }
            // Only the first call of a batch can be cancelled now (by killing
            // the worker); the ones behind it become killable when they
            // reach the front (see `claim_replies`). Until then `cancel()`
            // returns false for them: they are claimed and will run, like
            // the calls Python's pool has moved to its call queue.
            bytes += job.len;
            // Behind calls in flight, the first call is not the one that
            // runs: it becomes killable when it reaches the front.
            if taken == 0 && !busy {
                Self::arm_cancel(&job);
            }
            batch.push(job.task.frame(), || {
                Arc::clone(&job.task) as Arc<dyn Outgoing>
            });
            taken += 1;
            slot.in_flight.push_back(job);
        }
        if taken == 0 {
            return None;
        }
        if !busy {
            // (A pipelined batch leaves the running call's clock alone.)
            slot.running_since = Some(Instant::now());
        }
        if self.capacity.is_some() {
            self.space.notify_all();
        }
        self.wake_idle_watchdog(state);
        Some(batch)
    }

    /// A worker runs `job` now (it is at the front of that worker's
    /// `in_flight`): its `cancel()` kills that worker (see
    /// [`kill_running`](Self::kill_running)).
    pub(super) fn arm_cancel(job: &Job) {
        job.sink().mark_killable();
    }

    /// Tell a watchdog that waits with no deadline that a task started.
    pub(super) fn wake_idle_watchdog(&self, state: &mut State) {
        if self.timeout.is_some() && state.watchdog_idle {
            state.watchdog_idle = false;
            self.watch.notify_one();
        }
    }

    /// A batch for any idle worker.
    pub(super) fn take_any_batch(&self, state: &mut State) -> Option<Batch> {
        if state.queue.is_empty() {
            return None;
        }
        let (index, batch) =
            (0..state.slots.len()).find_map(|i| self.take_batch(state, i).map(|b| (i, b)))?;
        // A thread that waits for this call looks at that worker first.
        super::help::note_sent(self.owner, index);
        Some(batch)
    }

    /// `cancel()` decided the task whose promise is `task` (see
    /// [`Sink::id`](crate::process::task::Sink::id)): kill the worker that
    /// runs it, if one does. A call whose reply was claimed meanwhile, or
    /// that went back to the queue after its worker died, is at no worker's
    /// front: its reply (if any) is dropped and a queued copy is skipped.
    pub(super) fn kill_running(&self, task: *const ()) {
        let mut state = self.lock();
        for slot in &mut state.slots {
            let Some(front) = slot.in_flight.front() else {
                continue;
            };
            if front.sink().id() != task {
                continue;
            }
            if slot.kill_reason.is_none() {
                slot.kill_reason = Some((front.id, KillReason::Cancelled));
            }
            if let Some(worker) = &slot.worker {
                worker.child.signal(Signal::KILL);
            }
            return;
        }
    }

    /// Queue a job and hand it to an idle worker if there is one.
    ///
    /// `transfer` holds the ipc handles (pipe ends, queues) serialized into
    /// the job's argument: they count as sent only once the job is queued;
    /// on every other outcome the transfer is dropped and they stay ours.
    pub(super) fn enqueue(
        self: &Arc<Self>,
        job: Job,
        block: bool,
        transfer: Transfer,
    ) -> Result<(), (Job, SubmitErrorReason)> {
        // No idle worker (the common case in a burst): the call waits in
        // `incoming` for the next holder of the lock (see `lock.rs`).
        let job = match self.push_incoming(job) {
            Ok(dispatch) => {
                transfer.commit();
                if dispatch {
                    self.dispatch_incoming();
                }
                return Ok(());
            }
            Err(job) => job,
        };
        let mut state = self.lock();
        if let Some(message) = &state.broken {
            // A broken pool runs nothing: the task fails with the reason.
            let err = TaskError::new(ErrorKind::InitializerFailed(message.clone()));
            drop(state);
            self.note_outcome(false);
            job.sink().fail(err);
            return Ok(());
        }
        loop {
            if state.closed {
                return Err((job, SubmitErrorReason::ShutDown));
            }
            match self.capacity {
                Some(cap) if state.queue.len() >= cap => {
                    if !block {
                        return Err((job, SubmitErrorReason::Full));
                    }
                    state.wait(&self.space);
                }
                _ => break,
            }
        }
        state.queue.push_back(job);
        let batch = self.take_any_batch(&mut state);
        drop(state);
        transfer.commit();
        if let Some(batch) = batch {
            batch.write();
        }
        Ok(())
    }

    /// The frame, if its body is within the pool's frame limit.
    pub(super) fn fits(&self, frame: Frame) -> Result<Frame, TaskError> {
        let size = (frame.len() - wire::HEADER) as u64;
        if size > self.max_frame {
            return Err(TaskError::new(ErrorKind::FrameTooLarge {
                size,
                limit: self.max_frame,
            }));
        }
        Ok(frame)
    }

    /// A call id unique in this pool. A thread takes ids from the pool's
    /// counter [`ID_BLOCK`] at a time and hands them out from a block of
    /// its own: a burst's submits cost no atomic operation for their ids
    /// (one such operation was measured at 10 ns of a submit's 170 here).
    /// Ids grow in each thread's submission order; nothing needs more than
    /// that they differ.
    pub(super) fn next_id(&self) -> u64 {
        thread_local! {
            static BLOCK: Cell<IdBlock> = const { Cell::new((0, 0, 0)) };
        }
        BLOCK
            .try_with(|block| next_id_from(block, self.owner, &self.next_id))
            .unwrap_or_else(|_| self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn note_outcome(&self, ok: bool) {
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Threads taking ids of two pools in turn, and a pool dropped and
    /// replaced (its successor's counter starts again from 1): every id
    /// is unique within its pool, and each thread's ids of one pool grow.
    /// (Fails with the block used whatever pool it came from: planted.)
    #[test]
    fn ids_are_unique_per_pool_across_threads_and_pools() {
        let pools: Arc<[AtomicU64; 3]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(1)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let pools = Arc::clone(&pools);
                std::thread::spawn(move || {
                    let block = Cell::new((0, 0, 0));
                    let mut got = vec![Vec::new(); 3];
                    for i in 0..5_000usize {
                        // Pools 1 and 2 alternate in runs of varying length;
                        // pool 3 ("owner" 3) stands for pool 1 dropped and
                        // replaced halfway.
                        let pool = if (i / (1 + t)) % 2 == 0 { 0 } else { 1 };
                        let pool = if pool == 0 && i >= 2_500 { 2 } else { pool };
                        let id = next_id_from(&block, pool + 1, &pools[pool]);
                        got[pool].push(id);
                    }
                    got
                })
            })
            .collect();
        let mut seen = vec![HashSet::new(); 3];
        for thread in threads {
            for (pool, ids) in thread.join().unwrap().into_iter().enumerate() {
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "a thread's ids grow");
                for id in ids {
                    assert!(id >= 1, "0 is the initializer's id");
                    assert!(seen[pool].insert(id), "id {id} given twice in pool {pool}");
                }
            }
        }
    }
}
