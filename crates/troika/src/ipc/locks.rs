//! Process-shared `Lock`, `Semaphore`, `BoundedSemaphore`, `Event` and
//! `Barrier`, each a few futex words in a shared-memory segment.

use super::error::{IpcError, Result};
use super::futex::{OsEnv, deadline_after};
use super::raw::{self, Acquired, BarrierFail};
use super::shm::{self, Kind, Segment, ShmState};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[repr(C)]
pub(crate) struct LockState {
    pub(crate) word: AtomicU32,
}
// SAFETY: repr(C), one atomic, valid for any bits.
unsafe impl ShmState for LockState {}

#[repr(C)]
struct SemState {
    /// Count in bits 0..31, "maybe sleepers" in bit 31.
    word: AtomicU32,
    max: AtomicU32,
}
// SAFETY: repr(C), atomics only, valid for any bits.
unsafe impl ShmState for SemState {}

#[repr(C)]
struct EventState {
    /// The flag in bit 0, the count of sets above it.
    flag: AtomicU32,
}
// SAFETY: repr(C), one atomic, valid for any bits.
unsafe impl ShmState for EventState {}

#[repr(C)]
struct BarrierState {
    /// Round, arrivals and the broken bit in one futex word (see
    /// [`raw::barrier_wait`]).
    word: AtomicU32,
    parties: AtomicU32,
}
// SAFETY: repr(C), atomics only, valid for any bits.
unsafe impl ShmState for BarrierState {}

fn state<S: ShmState>(seg: &Segment) -> &S {
    match seg.state::<S>(0) {
        Some(s) => s,
        // Every constructor and `open` checked the size; reaching this
        // would be a bug in this module, not something a peer can cause.
        None => unreachable!("segment smaller than its state struct"),
    }
}

fn open_checked<S: ShmState>(seg: Segment) -> Result<Segment> {
    if seg.state::<S>(0).is_none() {
        return Err(IpcError::InvalidHandle("segment too small".into()));
    }
    Ok(seg)
}

macro_rules! serde_via_segment {
    ($ty:ident, $kind:expr, $st:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                shm::serialize_segment(&self.seg, s)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let seg = shm::deserialize_segment(d, $kind, 0)?;
                let seg = open_checked::<$st>(seg).map_err(serde::de::Error::custom)?;
                Ok($ty { seg })
            }
        }
    };
}

/// Takes a lock word with the real OS environment.
pub(crate) fn lock_word(w: &AtomicU32, timeout: Option<Duration>) -> Option<Acquired> {
    raw::lock(w, &OsEnv, timeout.and_then(deadline_after))
}

/// Releases a lock word with the real OS environment.
pub(crate) fn unlock_word(w: &AtomicU32) {
    raw::unlock(w, &OsEnv);
}

/// A mutual-exclusion lock shared between processes, which survives the death
/// of its holder.
///
/// The lock word holds the holder's pid. A waiter sleeps on the word in
/// slices of 20 ms; when a slice runs out it checks whether the holder's
/// process is still running (`pidfd_open` + poll, so a zombie counts as dead).
/// If not, exactly one waiter takes the lock over, and its guard's
/// [`holder_died`](LockGuard::holder_died) is true: the data the lock
/// protects may be half-updated, and the new holder should check or repair
/// it (like `EOWNERDEAD` of a robust pthread mutex).
///
/// The lock is not reentrant, and threads of one process count as one
/// holder: it excludes processes from each other and threads from each
/// other, but a thread that dies holding it is not detected while its process
/// lives (a panicking thread releases it anyway, as the guard drops).
///
/// Clone it to share it between threads; serialize it (serde) to hand it to
/// another process, which reopens the same lock.
///
/// # Examples
///
/// ```
/// use troika::ipc::Lock;
///
/// let lock = Lock::new().unwrap();
/// {
///     let guard = lock.lock();
///     assert!(!guard.holder_died());
///     assert!(lock.try_lock().is_none());
/// }
/// assert!(lock.try_lock().is_some());
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    seg: Segment,
}

/// Proof that this process holds a [`Lock`]; releases it on drop.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    word: &'a AtomicU32,
    died: bool,
}

impl LockGuard<'_> {
    /// True if the previous holder died holding the lock, and this guard was
    /// obtained by taking it over.
    pub fn holder_died(&self) -> bool {
        self.died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        unlock_word(self.word);
    }
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Lock> {
        let seg = Segment::create(Kind::Lock, 0, std::mem::size_of::<LockState>())?;
        Ok(Lock { seg })
    }

    fn word(&self) -> &AtomicU32 {
        &state::<LockState>(&self.seg).word
    }

    /// Blocks until the lock is held by this process.
    pub fn lock(&self) -> LockGuard<'_> {
        let w = self.word();
        loop {
            if let Some(a) = lock_word(w, None) {
                return LockGuard {
                    word: w,
                    died: a == Acquired::HolderDied,
                };
            }
        }
    }

    /// Waits at most `timeout` for the lock; [`IpcError::TimedOut`] otherwise.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        let w = self.word();
        match lock_word(w, Some(timeout)) {
            Some(a) => Ok(LockGuard {
                word: w,
                died: a == Acquired::HolderDied,
            }),
            None => Err(IpcError::TimedOut),
        }
    }

    /// Takes the lock if it is free (or its holder is dead), without waiting.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        let w = self.word();
        raw::try_lock(w, &OsEnv).map(|a| LockGuard {
            word: w,
            died: a == Acquired::HolderDied,
        })
    }

    /// The pid of the process holding the lock, if any (a snapshot).
    pub fn holder(&self) -> Option<u32> {
        match self.word().load(Ordering::Relaxed) & !raw::WAITERS {
            0 => None,
            pid => Some(pid),
        }
    }
}

serde_via_segment!(Lock, Kind::Lock, LockState);

/// A counting semaphore shared between processes.
///
/// `acquire` takes one unit, waiting while the count is zero; `release`
/// returns one. A semaphore has no owner, so the death of a process that held
/// units is not detected: use [`acquire_timeout`](Self::acquire_timeout)
/// where that matters.
///
/// # Examples
///
/// ```
/// use troika::ipc::Semaphore;
/// use std::time::Duration;
///
/// let sem = Semaphore::new(1).unwrap();
/// sem.acquire();
/// assert!(sem.acquire_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// sem.release();
/// assert!(sem.try_acquire());
/// ```
#[derive(Clone, Debug)]
pub struct Semaphore {
    seg: Segment,
}

fn new_sem(value: u32, max: u32) -> Result<Segment> {
    let seg = Segment::create(Kind::Semaphore, 0, std::mem::size_of::<SemState>())?;
    let st = state::<SemState>(&seg);
    st.word.store(value.min(raw::SEM_MAX), Ordering::Relaxed);
    st.max.store(max, Ordering::Release);
    Ok(seg)
}

impl Semaphore {
    /// A semaphore with `value` units.
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            seg: new_sem(value, u32::MAX)?,
        })
    }

    fn st(&self) -> &SemState {
        state(&self.seg)
    }

    /// Takes one unit, waiting as long as it takes.
    pub fn acquire(&self) {
        raw::sem_acquire(&self.st().word, None);
    }

    /// Takes one unit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        if raw::sem_acquire(&self.st().word, deadline_after(timeout)) {
            Ok(())
        } else {
            Err(IpcError::TimedOut)
        }
    }

    /// Takes one unit if one is free now.
    pub fn try_acquire(&self) -> bool {
        raw::sem_try_acquire(&self.st().word)
    }

    /// Returns one unit, waking the sleepers if there are any.
    pub fn release(&self) {
        let st = self.st();
        raw::sem_release(&st.word, st.max.load(Ordering::Relaxed));
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        raw::sem_value(&self.st().word)
    }
}

serde_via_segment!(Semaphore, Kind::Semaphore, SemState);

/// A semaphore that refuses to be released past its initial value — the
/// seeds' candy machine, where a refill of a full tray is an error.
///
/// # Examples
///
/// ```
/// use troika::ipc::BoundedSemaphore;
///
/// let tray = BoundedSemaphore::new(2).unwrap();
/// assert!(tray.release().is_err()); // already full
/// tray.acquire();
/// tray.release().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct BoundedSemaphore {
    seg: Segment,
}

impl BoundedSemaphore {
    /// A semaphore with `value` units, which is also its maximum.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            seg: new_sem(value, value)?,
        })
    }

    fn st(&self) -> &SemState {
        state(&self.seg)
    }

    /// Takes one unit, waiting as long as it takes.
    pub fn acquire(&self) {
        raw::sem_acquire(&self.st().word, None);
    }

    /// Takes one unit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        if raw::sem_acquire(&self.st().word, deadline_after(timeout)) {
            Ok(())
        } else {
            Err(IpcError::TimedOut)
        }
    }

    /// Takes one unit if one is free now.
    pub fn try_acquire(&self) -> bool {
        raw::sem_try_acquire(&self.st().word)
    }

    /// Returns one unit; [`IpcError::SemaphoreOverflow`] if the count is
    /// already at its maximum.
    pub fn release(&self) -> Result<()> {
        let st = self.st();
        let max = st.max.load(Ordering::Relaxed);
        if raw::sem_release(&st.word, max) {
            Ok(())
        } else {
            Err(IpcError::SemaphoreOverflow { max })
        }
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        raw::sem_value(&self.st().word)
    }

    /// The maximum (initial) count.
    pub fn max(&self) -> u32 {
        self.st().max.load(Ordering::Relaxed)
    }
}

serde_via_segment!(BoundedSemaphore, Kind::Semaphore, SemState);

/// A flag that processes can wait for.
///
/// # Examples
///
/// ```
/// use troika::ipc::Event;
/// use std::time::Duration;
///
/// let ev = Event::new().unwrap();
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// ev.wait();
/// assert!(ev.is_set());
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    seg: Segment,
}

impl Event {
    /// A new, cleared event.
    pub fn new() -> Result<Event> {
        Ok(Event {
            seg: Segment::create(Kind::Event, 0, std::mem::size_of::<EventState>())?,
        })
    }

    fn flag(&self) -> &AtomicU32 {
        &state::<EventState>(&self.seg).flag
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        raw::event_set(self.flag());
    }

    /// Clears the flag.
    pub fn clear(&self) {
        raw::event_clear(self.flag());
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        raw::event_is_set(self.flag())
    }

    /// Waits until the flag is set. A waiter asleep when [`set`](Self::set)
    /// is called always returns, even if the flag is cleared again before it
    /// runs.
    pub fn wait(&self) {
        raw::event_wait(self.flag(), None);
    }

    /// Waits at most `timeout`; returns true if the flag was set at some
    /// point during the wait (even if cleared again since), false on
    /// timeout (Python's `Event.wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        raw::event_wait(self.flag(), deadline_after(timeout))
    }
}

serde_via_segment!(Event, Kind::Event, EventState);

/// A barrier for a fixed number of parties in any processes.
///
/// Each party calls [`wait`](Self::wait); all return once the last arrives,
/// and exactly one of them is told it is the leader. A party whose
/// [`wait_timeout`](Self::wait_timeout) runs out breaks the barrier (as
/// Python's `Barrier` does): it gets [`IpcError::TimedOut`], every other
/// waiter [`IpcError::BrokenBarrier`], until [`reset`](Self::reset).
///
/// # Examples
///
/// ```
/// use troika::ipc::Barrier;
///
/// let b = Barrier::new(2).unwrap();
/// let b2 = b.clone();
/// let t = std::thread::spawn(move || b2.wait().unwrap());
/// let me = b.wait().unwrap();
/// let other = t.join().unwrap();
/// assert!(me ^ other); // exactly one leader
/// ```
#[derive(Clone, Debug)]
pub struct Barrier {
    seg: Segment,
}

impl Barrier {
    /// A barrier for `parties` parties, from 1 to 65 535
    /// ([`IpcError::InvalidArgument`] otherwise).
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 || parties > raw::MAX_PARTIES {
            return Err(IpcError::InvalidArgument(format!(
                "a barrier needs 1 to {} parties, not {parties}",
                raw::MAX_PARTIES
            )));
        }
        let seg = Segment::create(Kind::Barrier, 0, std::mem::size_of::<BarrierState>())?;
        state::<BarrierState>(&seg)
            .parties
            .store(parties, Ordering::Release);
        Ok(Barrier { seg })
    }

    fn st(&self) -> &BarrierState {
        state(&self.seg)
    }

    fn wait_until(&self, deadline: Option<std::time::Instant>) -> Result<bool> {
        let st = self.st();
        let parties = st.parties.load(Ordering::Relaxed).max(1);
        raw::barrier_wait(&st.word, parties, deadline).map_err(|e| match e {
            BarrierFail::TimedOut => IpcError::TimedOut,
            BarrierFail::Broken => IpcError::BrokenBarrier,
        })
    }

    /// Waits for every party; returns `Ok(true)` in exactly one of them (the
    /// last to arrive).
    pub fn wait(&self) -> Result<bool> {
        self.wait_until(None)
    }

    /// As [`wait`](Self::wait), at most `timeout`; running out breaks the
    /// barrier.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(deadline_after(timeout))
    }

    /// Breaks the barrier: current and future waiters fail with
    /// [`IpcError::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        raw::barrier_abort(&self.st().word);
    }

    /// Mends the barrier. Call it when no party is waiting.
    pub fn reset(&self) {
        raw::barrier_reset(&self.st().word);
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        raw::barrier_is_broken(&self.st().word)
    }

    /// The number of parties waiting in the current round (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        raw::barrier_waiting(&self.st().word)
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.st().parties.load(Ordering::Relaxed)
    }
}

serde_via_segment!(Barrier, Kind::Barrier, BarrierState);
