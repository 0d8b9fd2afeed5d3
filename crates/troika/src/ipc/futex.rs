#![cfg_attr(not(troika_loom), allow(unreachable_pub))]
//! The facade between troika's futex algorithms and the machine.
//!
//! The algorithms in [`super::raw`] are written against two small traits:
//! [`Word`], a 32-bit atomic that can also be waited on and woken (a futex),
//! and [`Env`], which names the calling process and tells whether another
//! process is alive. In the library a `Word` is an `AtomicU32` in shared
//! memory driven by the `futex(2)` system call (without `FUTEX_PRIVATE_FLAG`,
//! so waiters in different processes meet on the same word), and `Env` asks
//! the kernel. Under `cfg(troika_loom)` the same algorithms run on loom's
//! atomics and an emulated futex ([`model::LoomWord`]) that keeps a wait queue
//! the way the kernel does — a wake reaches only waiters already queued, a
//! wake with nobody queued is lost, a waiter compares and queues in one step,
//! waits may return spuriously and timed waits may time out at any point —
//! so `tests/loom_ipc.rs` model-checks exactly the state machines that the
//! library runs, against the guarantees the kernel really gives. See
//! `src/ipc/README.md` for what the models cover and what they cannot.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a wait on a [`Word`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Woken, spuriously or not, or the word did not hold the expected value.
    Woken,
    /// The timeout passed.
    TimedOut,
}

/// A 32-bit atomic word that can be waited on (a futex).
pub trait Word {
    /// Atomic load.
    fn load(&self, order: Ordering) -> u32;
    /// Atomic store.
    // Unused by the library since issue 12; the loom fixtures of the old
    // algorithms use it.
    #[cfg_attr(not(troika_loom), allow(dead_code))]
    fn store(&self, val: u32, order: Ordering);
    /// Atomic swap.
    // Unused by the library since issue 12; the loom fixtures of the old
    // algorithms use it.
    #[cfg_attr(not(troika_loom), allow(dead_code))]
    fn swap(&self, val: u32, order: Ordering) -> u32;
    /// Atomic compare-and-exchange (strong).
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    /// Atomic wrapping add; returns the previous value.
    // Unused by the library since issue 12; the loom fixtures of the old
    // algorithms use it.
    #[cfg_attr(not(troika_loom), allow(dead_code))]
    fn fetch_add(&self, val: u32, order: Ordering) -> u32;
    /// Atomic bitwise or; returns the previous value.
    fn fetch_or(&self, val: u32, order: Ordering) -> u32;
    /// Atomic bitwise and; returns the previous value.
    fn fetch_and(&self, val: u32, order: Ordering) -> u32;
    /// Sleeps while the word holds `expected`, at most `timeout` (`None`:
    /// without limit). May return early for no reason.
    fn wait(&self, expected: u32, timeout: Option<Duration>) -> Wake;
    /// Wakes at most `n` waiters.
    fn wake(&self, n: u32);
}

/// Who am I, and is that process still alive?
pub trait Env {
    /// The id of the calling process (never 0, below 2^30).
    fn pid(&self) -> u32;
    /// Whether the process `pid` is still running (a zombie counts as dead).
    fn alive(&self, pid: u32) -> bool;
    /// How many times to spin before sleeping.
    fn spins(&self) -> u32;
}

/// The time left until `deadline`, or `None` if there is no deadline.
/// `Some(ZERO)` means the deadline has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// A deadline `timeout` from now (saturating far in the future).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Some(
        Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(far_future),
    )
}

fn far_future() -> Instant {
    // About 30 years: effectively never, and representable on every platform.
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

pub(crate) use real::{OsEnv, spin_hint};

mod real {
    use super::{Env, Wake, Word};
    use rustix::io::Errno;
    use rustix::thread::futex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    impl Word for AtomicU32 {
        fn load(&self, order: Ordering) -> u32 {
            AtomicU32::load(self, order)
        }
        fn store(&self, val: u32, order: Ordering) {
            AtomicU32::store(self, val, order)
        }
        fn swap(&self, val: u32, order: Ordering) -> u32 {
            AtomicU32::swap(self, val, order)
        }
        fn compare_exchange(
            &self,
            current: u32,
            new: u32,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u32, u32> {
            AtomicU32::compare_exchange(self, current, new, success, failure)
        }
        fn fetch_add(&self, val: u32, order: Ordering) -> u32 {
            AtomicU32::fetch_add(self, val, order)
        }
        fn fetch_or(&self, val: u32, order: Ordering) -> u32 {
            AtomicU32::fetch_or(self, val, order)
        }
        fn fetch_and(&self, val: u32, order: Ordering) -> u32 {
            AtomicU32::fetch_and(self, val, order)
        }
        fn wait(&self, expected: u32, timeout: Option<Duration>) -> Wake {
            let ts = timeout.map(|d| rustix::thread::futex::Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            // Shared (not PRIVATE) futex: the word lives in a MAP_SHARED
            // mapping and the kernel keys the wait by the backing file and
            // offset, so a waker in another process finds this waiter.
            match futex::wait(self, futex::Flags::empty(), expected, ts.as_ref()) {
                Err(Errno::TIMEDOUT) => Wake::TimedOut,
                // Ok: woken. AGAIN: the value had changed. INTR: a signal.
                _ => Wake::Woken,
            }
        }
        fn wake(&self, n: u32) {
            // An error here can only mean a bad address, which the mapping's
            // lifetime rules out; there is nothing useful to do with it.
            // The kernel reads the count as a signed int: clamp, or u32::MAX
            // (-1) would wake only one waiter.
            let _ = futex::wake(self, futex::Flags::empty(), n.min(i32::MAX as u32));
        }
    }

    /// The real operating system.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct OsEnv;

    impl Env for OsEnv {
        fn pid(&self) -> u32 {
            cached_pid()
        }
        fn alive(&self, pid: u32) -> bool {
            super::super::shm::process_alive(pid)
        }
        fn spins(&self) -> u32 {
            100
        }
    }

    /// This process's id, read from the kernel once and again after a
    /// fork: every lock and unlock names its process, and `getpid` was most
    /// of an uncontended put-and-get's cost.
    pub(crate) fn cached_pid() -> u32 {
        static PID: AtomicU32 = AtomicU32::new(0);
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        extern "C" fn forget_pid() {
            PID.store(0, Ordering::Relaxed);
        }
        let pid = PID.load(Ordering::Relaxed);
        if pid != 0 {
            return pid;
        }
        // The handler is in place before the pid is cached, so a fork never
        // hands a child this process's id. (A child made by `exec` starts
        // with the static at 0.)
        AT_FORK.call_once(|| {
            // SAFETY: `forget_pid` is async-signal-safe (one atomic store)
            // and lives for the whole program.
            unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
        });
        let pid = std::process::id();
        PID.store(pid, Ordering::Relaxed);
        pid
    }

    /// A processor hint inside a spin loop.
    pub(crate) fn spin_hint() {
        std::hint::spin_loop();
    }
}

/// Loom stand-ins for the futex word and the process table.
#[cfg(troika_loom)]
pub mod model {
    use super::{Env, Wake, Word};
    use crate::loom::WaitQueue;
    use loom::sync::atomic::{AtomicBool, AtomicU32};
    use loom::sync::{Condvar, Mutex, MutexGuard};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// Which of the kernel's liberties a [`LoomWord`]'s waits take.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Liberties {
        /// A timed wait may time out at any point while it is queued (loom
        /// explores the wake arriving before and after the timeout). When
        /// false, a timed wait sleeps until it is woken (a legal reading of
        /// a long timeout), so a lost wake-up shows up as a deadlock.
        pub timeouts: bool,
        /// Every wait, timed or not, may return `Woken` at any point while
        /// it is queued without anyone waking it (a signal, `EINTR`).
        pub spurious: bool,
    }

    /// A futex emulated the way the kernel behaves, so that a model cannot
    /// pass on a property the kernel does not give:
    ///
    /// - `wait` compares the word and joins the word's wait queue in one
    ///   step (under the queue's mutex, as the kernel does under its hash
    ///   bucket lock): a `wake` after the compare finds the waiter queued;
    /// - `wake(n)` wakes at most `n` waiters **already queued** (oldest
    ///   first), and a wake with nobody queued is lost — it is not
    ///   remembered for a later waiter;
    /// - depending on [`Liberties`], a timed wait may time out at any point
    ///   and any wait may return spuriously.
    #[derive(Debug)]
    pub struct LoomWord {
        v: AtomicU32,
        q: Mutex<WaitQueue>,
        cv: Condvar,
        liberties: Liberties,
    }

    impl LoomWord {
        /// A word holding `v` with the given liberties.
        pub fn with_liberties(v: u32, liberties: Liberties) -> Self {
            LoomWord {
                v: AtomicU32::new(v),
                q: Mutex::new(WaitQueue::default()),
                cv: Condvar::new(),
                liberties,
            }
        }

        /// A word holding `v` whose timed waits may time out at any point:
        /// this drives the owner-dead path.
        pub fn new(v: u32) -> Self {
            Self::with_liberties(
                v,
                Liberties {
                    timeouts: true,
                    spurious: false,
                },
            )
        }

        /// A word holding `v` whose waits return only when woken (timed
        /// waits never time out): a lost wake-up then shows up as a
        /// deadlock, which loom reports.
        pub fn new_patient(v: u32) -> Self {
            Self::with_liberties(
                v,
                Liberties {
                    timeouts: false,
                    spurious: false,
                },
            )
        }

        /// A word holding `v` whose waits may return spuriously at any point
        /// (and timed waits time out at any point).
        pub fn new_spurious(v: u32) -> Self {
            Self::with_liberties(
                v,
                Liberties {
                    timeouts: true,
                    spurious: true,
                },
            )
        }

        /// The current value (for assertions after the threads joined).
        pub fn load_for_test(&self) -> u32 {
            self.v.load(Ordering::SeqCst)
        }

        /// How many waiters are queued on the word now.
        pub fn queued_for_test(&self) -> usize {
            self.queue().len()
        }

        fn queue(&self) -> MutexGuard<'_, WaitQueue> {
            match self.q.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            }
        }
    }

    impl Word for LoomWord {
        fn load(&self, order: Ordering) -> u32 {
            self.v.load(order)
        }
        fn store(&self, val: u32, order: Ordering) {
            self.v.store(val, order)
        }
        fn swap(&self, val: u32, order: Ordering) -> u32 {
            self.v.swap(val, order)
        }
        fn compare_exchange(
            &self,
            current: u32,
            new: u32,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u32, u32> {
            self.v.compare_exchange(current, new, success, failure)
        }
        fn fetch_add(&self, val: u32, order: Ordering) -> u32 {
            self.v.fetch_add(val, order)
        }
        fn fetch_or(&self, val: u32, order: Ordering) -> u32 {
            self.v.fetch_or(val, order)
        }
        fn fetch_and(&self, val: u32, order: Ordering) -> u32 {
            self.v.fetch_and(val, order)
        }
        fn wait(&self, expected: u32, timeout: Option<Duration>) -> Wake {
            // Compare and queue in one step, as the kernel does.
            let mut q = self.queue();
            if self.v.load(Ordering::SeqCst) != expected {
                return Wake::Woken;
            }
            let ticket = q.join();
            let may_time_out = timeout.is_some() && self.liberties.timeouts;
            if may_time_out || self.liberties.spurious {
                // Let the others run; whether a wake reached us before we
                // look again is up to loom's schedule — the timeout (or the
                // signal) may fire at any point.
                drop(q);
                loom::thread::yield_now();
                let mut q = self.queue();
                if q.take_woken(ticket) {
                    return Wake::Woken;
                }
                q.leave(ticket);
                return if may_time_out {
                    Wake::TimedOut
                } else {
                    Wake::Woken
                };
            }
            loop {
                if q.take_woken(ticket) {
                    return Wake::Woken;
                }
                q = match self.cv.wait(q) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        }
        fn wake(&self, n: u32) {
            // Nobody queued: the wake is lost.
            if self.queue().wake(n as usize) > 0 {
                self.cv.notify_all();
            }
        }
    }

    /// A process table: loom threads acting as processes `1..=n`.
    #[derive(Debug, Clone)]
    pub struct ProcessTable(std::sync::Arc<Vec<AtomicBool>>);

    impl ProcessTable {
        /// A table of `n` live processes.
        pub fn new(n: usize) -> Self {
            ProcessTable(std::sync::Arc::new(
                (0..n).map(|_| AtomicBool::new(true)).collect(),
            ))
        }
        /// The view of process `me` (1-based).
        pub fn view(&self, me: u32) -> LoomProc {
            LoomProc {
                table: self.clone(),
                me,
            }
        }
    }

    /// One process's view of the loom process table.
    #[derive(Debug, Clone)]
    pub struct LoomProc {
        table: ProcessTable,
        me: u32,
    }

    impl LoomProc {
        /// Marks this process dead (call just before the thread returns
        /// without releasing what it holds).
        pub fn die(&self) {
            self.table.0[(self.me - 1) as usize].store(false, Ordering::SeqCst);
        }
    }

    impl Env for LoomProc {
        fn pid(&self) -> u32 {
            self.me
        }
        fn alive(&self, pid: u32) -> bool {
            match self.table.0.get((pid as usize).wrapping_sub(1)) {
                Some(flag) => flag.load(Ordering::SeqCst),
                None => false,
            }
        }
        fn spins(&self) -> u32 {
            0
        }
    }
}
