//! Process-shared `Lock`, `Semaphore`, `BoundedSemaphore`, `Event` and
//! `Barrier`, each a few futex words in a shared-memory segment.

use super::error::{BarrierError, IpcError, ReleaseError, Result};
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

/// Takes a lock word if it is free (or its holder is dead), without
/// waiting, with the real OS environment.
pub(crate) fn try_lock_word(w: &AtomicU32) -> Option<Acquired> {
    raw::try_lock(w, &OsEnv)
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

    /// Blocks until the lock is held by this process; the guard releases
    /// it on drop.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Lock, Value};
    ///
    /// let (lock, total) = (Lock::new().unwrap(), Value::new(0u32).unwrap());
    /// let workers: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let (lock, total) = (lock.clone(), total.clone());
    ///         // A child process would receive these serialized; threads
    ///         // share them the same way.
    ///         std::thread::spawn(move || {
    ///             let _held = lock.lock();
    ///             total.set(total.get() + 1); // read-modify-write under the lock
    ///         })
    ///     })
    ///     .collect();
    /// workers.into_iter().for_each(|t| t.join().unwrap());
    /// assert_eq!(total.get(), 4);
    /// ```
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

    /// Waits at most `timeout` for the lock; `None` if it stayed held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Lock;
    ///
    /// let lock = Lock::new().unwrap();
    /// let held = lock.lock();
    /// assert!(lock.lock_timeout(Duration::from_millis(5)).is_none());
    /// drop(held);
    /// assert!(lock.lock_timeout(Duration::from_secs(1)).is_some());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockGuard<'_>> {
        let w = self.word();
        lock_word(w, Some(timeout)).map(|a| LockGuard {
            word: w,
            died: a == Acquired::HolderDied,
        })
    }

    /// Takes the lock if it is free (or its holder is dead), without
    /// waiting; `None` if it is held.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        let w = self.word();
        try_lock_word(w).map(|a| LockGuard {
            word: w,
            died: a == Acquired::HolderDied,
        })
    }

    /// The pid of the process holding the lock, if any (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Lock;
    ///
    /// let lock = Lock::new().unwrap();
    /// assert_eq!(lock.holder(), None);
    /// let _held = lock.lock();
    /// assert_eq!(lock.holder(), Some(std::process::id()));
    /// ```
    pub fn holder(&self) -> Option<u32> {
        match self.word().load(Ordering::Relaxed) & !raw::WAITERS {
            0 => None,
            pid => Some(pid),
        }
    }
}

serde_via_segment!(Lock, Kind::Lock, LockState);

/// The one implementation of [`Semaphore`] and [`BoundedSemaphore`]: a
/// count word and a ceiling in a shared segment.
#[derive(Clone, Debug)]
struct Sem {
    seg: Segment,
}

impl Sem {
    fn create(value: u32, max: u32) -> Result<Sem> {
        let seg = Segment::create(Kind::Semaphore, 0, std::mem::size_of::<SemState>())?;
        let st = state::<SemState>(&seg);
        st.word.store(value.min(raw::SEM_MAX), Ordering::Relaxed);
        st.max.store(max, Ordering::Release);
        Ok(Sem { seg })
    }

    fn st(&self) -> &SemState {
        state(&self.seg)
    }

    fn acquire(&self, deadline: Option<std::time::Instant>) -> bool {
        raw::sem_acquire(&self.st().word, deadline)
    }

    fn try_acquire(&self) -> bool {
        raw::sem_try_acquire(&self.st().word)
    }

    /// The ceiling a release may not pass.
    fn max(&self) -> u32 {
        self.st().max.load(Ordering::Relaxed).min(raw::SEM_MAX)
    }

    fn release(&self, bounded: bool) -> std::result::Result<(), ReleaseError> {
        let max = self.max();
        if raw::sem_release(&self.st().word, max) {
            Ok(())
        } else if bounded {
            Err(ReleaseError::AboveBound {
                bound: max as usize,
            })
        } else {
            Err(ReleaseError::Overflow)
        }
    }

    fn value(&self) -> u32 {
        raw::sem_value(&self.st().word)
    }
}

/// One unit of an [`ipc::Semaphore`](Semaphore) or
/// [`ipc::BoundedSemaphore`](BoundedSemaphore), given back on drop.
///
/// A process that dies holding a guard does not give its unit back
/// (semaphores have no owner); use the `*_timeout` calls where that matters.
#[must_use = "the unit is given back as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    sem: &'a Sem,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Only refused if someone released by hand up to the ceiling
        // meanwhile; the count is then already at its limit.
        let _ = self.sem.release(false);
    }
}

/// The methods both semaphores share, written once over [`Sem`] (as
/// `sync`'s semaphores share theirs).
macro_rules! semaphore_common {
    ($ty:ident, $bounded:expr) => {
        impl $ty {
            /// Takes one unit, waiting as long as it takes.
            pub fn acquire(&self) {
                self.sem.acquire(None);
            }

            /// Takes one unit, waiting at most `timeout`; returns whether it
            /// did (Python's `acquire(timeout=…)`).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use troika::ipc::", stringify!($ty), ";")]
            /// use std::time::Duration;
            ///
            #[doc = concat!("let sem = ", stringify!($ty), "::new(1).unwrap();")]
            /// assert!(sem.acquire_timeout(Duration::from_secs(1)));
            /// assert!(!sem.acquire_timeout(Duration::from_millis(5))); // none left
            /// ```
            #[must_use = "false means nothing was acquired"]
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.sem.acquire(deadline_after(timeout))
            }

            /// Takes one unit if one is free now; returns whether it did
            /// (Python's `acquire(blocking=False)`).
            #[must_use = "false means nothing was acquired"]
            pub fn try_acquire(&self) -> bool {
                self.sem.try_acquire()
            }

            /// Takes one unit and returns a guard that gives it back on drop
            /// (Python's `with sem:`).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use troika::ipc::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let slots = ", stringify!($ty), "::new(2).unwrap();")]
            /// {
            ///     let _slot = slots.access();
            ///     assert_eq!(slots.value(), 1);
            /// }
            /// assert_eq!(slots.value(), 2);
            /// ```
            pub fn access(&self) -> SemaphoreGuard<'_> {
                self.sem.acquire(None);
                SemaphoreGuard { sem: &self.sem }
            }

            /// Like [`access`](Self::access) but only if a unit is free now.
            pub fn try_access(&self) -> Option<SemaphoreGuard<'_>> {
                // Build the guard only on success: dropping one gives a
                // unit back.
                if self.sem.try_acquire() {
                    Some(SemaphoreGuard { sem: &self.sem })
                } else {
                    None
                }
            }

            /// Like [`access`](Self::access) but gives up after `timeout`.
            pub fn access_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
                if self.sem.acquire(deadline_after(timeout)) {
                    Some(SemaphoreGuard { sem: &self.sem })
                } else {
                    None
                }
            }

            /// Gives one unit back, waking the sleepers if there are any.
            ///
            /// # Errors
            ///
            /// [`ReleaseError::AboveBound`] for a [`BoundedSemaphore`] at its
            /// bound; [`ReleaseError::Overflow`] for a [`Semaphore`] at the
            /// largest count a shared word holds (2³¹ − 1). The count is
            /// left unchanged.
            pub fn release(&self) -> std::result::Result<(), ReleaseError> {
                self.sem.release($bounded)
            }

            /// The current count (a snapshot: other processes may change it).
            pub fn value(&self) -> u32 {
                self.sem.value()
            }
        }
    };
}

/// A counting semaphore shared between processes (Python's
/// `multiprocessing.Semaphore`).
///
/// `acquire` takes one unit, waiting while the count is zero; `release`
/// returns one. The calls and their results are those of
/// [`sync::Semaphore`](crate::sync::Semaphore). A semaphore has no owner, so
/// the death of a process that held units is not detected: use
/// [`acquire_timeout`](Self::acquire_timeout) where that matters.
///
/// # Examples
///
/// ```
/// use troika::ipc::Semaphore;
///
/// let sem = Semaphore::new(1).unwrap();
/// sem.acquire();
/// assert!(!sem.try_acquire());
/// sem.release().unwrap();
/// assert!(sem.try_acquire());
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    sem: Sem,
}

impl Semaphore {
    /// A semaphore with `value` units (at most 2³¹ − 1; more is clamped).
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            sem: Sem::create(value, raw::SEM_MAX)?,
        })
    }
}

serde_via_segment!(Sem, Kind::Semaphore, SemState);

semaphore_common!(Semaphore, false);

/// A semaphore that refuses to be released past its initial value
/// (Python's `multiprocessing.BoundedSemaphore`): a refill of a full tray
/// is an error, not a silent overfill.
///
/// # Examples
///
/// ```
/// use troika::ipc::{BoundedSemaphore, ReleaseError};
///
/// let tray = BoundedSemaphore::new(2).unwrap();
/// assert_eq!(tray.release(), Err(ReleaseError::AboveBound { bound: 2 })); // already full
/// tray.acquire();
/// tray.release().unwrap();
/// assert_eq!(tray.bound(), 2);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    sem: Sem,
}

impl BoundedSemaphore {
    /// A semaphore with `value` units, which is also its bound (at most
    /// 2³¹ − 1; more is clamped).
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        let value = value.min(raw::SEM_MAX);
        Ok(BoundedSemaphore {
            sem: Sem::create(value, value)?,
        })
    }

    /// The bound: the initial count, which releases may not pass.
    pub fn bound(&self) -> u32 {
        self.sem.max()
    }
}

semaphore_common!(BoundedSemaphore, true);

/// A flag that processes can wait for (Python's `multiprocessing.Event`;
/// the calls and results of [`sync::Event`](crate::sync::Event)).
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
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Event;
    ///
    /// let ready = Event::new().unwrap();
    /// let worker = {
    ///     let ready = ready.clone();
    ///     std::thread::spawn(move || {
    ///         ready.wait(); // sleeps until the other side says go
    ///         "started"
    ///     })
    /// };
    /// ready.set();
    /// assert_eq!(worker.join().unwrap(), "started");
    /// ```
    pub fn wait(&self) {
        raw::event_wait(self.flag(), None);
    }

    /// Waits at most `timeout`; returns true if the flag was set at some
    /// point during the wait (even if cleared again since), false on
    /// timeout (Python's `Event.wait(timeout)`).
    #[must_use = "false means the wait timed out"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        raw::event_wait(self.flag(), deadline_after(timeout))
    }
}

serde_via_segment!(Event, Kind::Event, EventState);

/// A barrier for a fixed number of parties in any processes (Python's
/// `multiprocessing.Barrier`).
///
/// Each party calls [`wait`](Self::wait); all return once the last arrives,
/// each with its arrival index in `0..parties` — the same shape as
/// [`sync::Barrier`](crate::sync::Barrier), with the same
/// [`BarrierError`]. A party whose [`wait_timeout`](Self::wait_timeout)
/// runs out breaks the barrier (as Python's `Barrier` does): it gets
/// [`BarrierError::Timeout`], every other waiter [`BarrierError::Broken`],
/// until [`reset`](Self::reset).
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
/// assert_eq!(me + other, 1); // indices 0 and 1; index 1 arrived last
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

    fn wait_until(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> std::result::Result<usize, BarrierError> {
        let st = self.st();
        let parties = st.parties.load(Ordering::Relaxed).max(1);
        match raw::barrier_wait(&st.word, parties, deadline) {
            Ok(index) => Ok(index as usize),
            Err(BarrierFail::TimedOut) => Err(BarrierError::Timeout),
            Err(BarrierFail::Broken) => Err(BarrierError::Broken),
        }
    }

    /// Waits for every party; returns this party's arrival index in
    /// `0..parties` (the last to arrive gets `parties - 1`).
    ///
    /// # Errors
    ///
    /// [`BarrierError::Broken`] if the barrier is or becomes broken.
    pub fn wait(&self) -> std::result::Result<usize, BarrierError> {
        self.wait_until(None)
    }

    /// As [`wait`](Self::wait), at most `timeout`; running out breaks the
    /// barrier.
    ///
    /// # Errors
    ///
    /// [`BarrierError::Timeout`] for the party that timed out (the others
    /// get [`BarrierError::Broken`]); [`BarrierError::Broken`] if the
    /// barrier is or becomes broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::{Barrier, BarrierError};
    ///
    /// let b = Barrier::new(2).unwrap();
    /// // The second party never comes: this one times out and breaks it.
    /// assert_eq!(b.wait_timeout(Duration::from_millis(5)), Err(BarrierError::Timeout));
    /// assert_eq!(b.wait(), Err(BarrierError::Broken));
    /// b.reset();
    /// assert!(!b.is_broken());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<usize, BarrierError> {
        self.wait_until(deadline_after(timeout))
    }

    /// Breaks the barrier: current and future waiters fail with
    /// [`BarrierError::Broken`] until [`reset`](Self::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::{Barrier, BarrierError};
    ///
    /// let b = Barrier::new(2).unwrap();
    /// let waiter = {
    ///     let b = b.clone();
    ///     std::thread::spawn(move || b.wait())
    /// };
    /// b.abort(); // the waiter (asleep or not yet arrived) is let go
    /// assert_eq!(waiter.join().unwrap(), Err(BarrierError::Broken));
    /// b.reset();
    /// assert!(!b.is_broken());
    /// ```
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
