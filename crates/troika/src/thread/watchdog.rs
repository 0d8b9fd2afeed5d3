//! The thread pool's per-task timeout: one thread that sleeps until the
//! earliest deadline, fails that task's handle and replaces its worker.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::pool::{Shared, WorkerSlot};

type Key = (Instant, u64);

struct Entry {
    /// Decides the task's outcome as timed out; false if it had finished.
    expire: Box<dyn FnOnce() -> bool + Send>,
    slot: Option<Arc<WorkerSlot>>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<Key, Entry>,
    next: u64,
    stopped: bool,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    cond: Condvar,
}

pub(crate) struct Watchdog {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// Removes a task's deadline when the task returns in time.
pub(crate) struct WatchGuard {
    inner: Arc<Inner>,
    key: Key,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.inner.state.lock().entries.remove(&self.key);
    }
}

impl Watchdog {
    /// Start the watchdog thread, named `{name}-watchdog`.
    pub(crate) fn start(pool: Weak<Shared>, name: &str) -> std::io::Result<Watchdog> {
        let inner = Arc::new(Inner::default());
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-watchdog"))
            .spawn(move || watch_loop(&thread_inner, &pool))?;
        Ok(Watchdog {
            inner,
            thread: Some(thread),
        })
    }

    pub(crate) fn watch(
        &self,
        timeout: Duration,
        slot: Option<Arc<WorkerSlot>>,
        expire: impl FnOnce() -> bool + Send + 'static,
    ) -> WatchGuard {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.state.lock();
        let key = (deadline, state.next);
        state.next += 1;
        let earliest = state.entries.keys().next().is_none_or(|first| key < *first);
        state.entries.insert(
            key,
            Entry {
                expire: Box::new(expire),
                slot,
            },
        );
        drop(state);
        if earliest {
            self.inner.cond.notify_one();
        }
        WatchGuard {
            inner: Arc::clone(&self.inner),
            key,
        }
    }

    pub(crate) fn stop(mut self) {
        self.inner.state.lock().stopped = true;
        self.inner.cond.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    /// A watchdog left running for detached workers (a drop that timed
    /// out) ends with the pool's last user. It may be that user itself (it
    /// holds the pool for a moment while it replaces a worker), so it is
    /// told to stop and not joined.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.inner.state.lock().stopped = true;
            self.inner.cond.notify_one();
        }
    }
}

fn watch_loop(inner: &Inner, pool: &Weak<Shared>) {
    let mut state = inner.state.lock();
    while !state.stopped {
        let Some(&key) = state.entries.keys().next() else {
            inner.cond.wait(&mut state);
            continue;
        };
        if key.0 > Instant::now() {
            inner.cond.wait_until(&mut state, key.0);
            continue;
        }
        let Some(entry) = state.entries.remove(&key) else {
            continue;
        };
        drop(state);
        if (entry.expire)()
            && let Some(slot) = entry.slot
        {
            slot.retired.store(true, Ordering::Release);
            if let Some(pool) = pool.upgrade() {
                pool.note_replaced();
                if let Err(e) = pool.spawn_worker() {
                    eprintln!("troika: could not replace a timed-out worker: {e}");
                }
            }
        }
        state = inner.state.lock();
    }
}
