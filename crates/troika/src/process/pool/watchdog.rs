//! The per-task timeout: a thread that kills the worker whose task passed
//! its deadline.

use std::sync::Arc;
use std::time::Instant;

use rustix::process::Signal;

use super::Shared;
use super::slot::KillReason;

impl Shared {
    /// The per-task timeout: kill a worker whose task passed its deadline.
    pub(super) fn watchdog(self: Arc<Self>) {
        let Some(timeout) = self.timeout else {
            return;
        };
        let mut state = self.lock();
        loop {
            if state.exited >= self.workers {
                return;
            }
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            for slot in &mut state.slots {
                let (Some(since), Some(job), Some(worker)) =
                    (slot.running_since, slot.in_flight.front(), &slot.worker)
                else {
                    continue;
                };
                if slot.kill_reason.is_some() {
                    continue;
                }
                let deadline = since + timeout;
                if deadline <= now {
                    slot.kill_reason = Some((job.id, KillReason::TimedOut(timeout)));
                    worker.child.signal(Signal::KILL);
                } else if earliest.is_none_or(|e| deadline < e) {
                    earliest = Some(deadline);
                }
            }
            match earliest {
                Some(deadline) => {
                    state.wait_until(&self.watch, deadline);
                }
                None => {
                    state.watchdog_idle = true;
                    state.wait(&self.watch);
                    state.watchdog_idle = false;
                }
            }
        }
    }
}
