//! [`Semaphore`] and [`BoundedSemaphore`] (Python's `threading.Semaphore` and
//! `threading.BoundedSemaphore`).

use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex};

use super::ReleaseError;

/// The counter both semaphores share: a count under a mutex, a condition
/// variable for waiters, and an optional ceiling.
#[derive(Debug)]
struct Counter {
    value: Mutex<usize>,
    available: Condvar,
    bound: Option<usize>,
}

impl Counter {
    fn new(value: usize, bound: Option<usize>) -> Counter {
        Counter {
            value: Mutex::new(value),
            available: Condvar::new(),
            bound,
        }
    }

    fn acquire(&self, deadline: Option<Instant>) -> bool {
        let mut value = self.value.lock();
        while *value == 0 {
            match deadline {
                None => self.available.wait(&mut value),
                Some(deadline) => {
                    if self.available.wait_until(&mut value, deadline).timed_out() && *value == 0 {
                        return false;
                    }
                }
            }
        }
        *value -= 1;
        true
    }

    fn try_acquire(&self) -> bool {
        let mut value = self.value.lock();
        if *value == 0 {
            false
        } else {
            *value -= 1;
            true
        }
    }

    fn release(&self, n: usize) -> Result<(), ReleaseError> {
        let mut value = self.value.lock();
        let raised = value.checked_add(n).ok_or(ReleaseError::Overflow)?;
        if let Some(bound) = self.bound
            && raised > bound
        {
            return Err(ReleaseError::AboveBound { bound });
        }
        *value = raised;
        drop(value);
        for _ in 0..n {
            if !self.available.notify_one() {
                break;
            }
        }
        Ok(())
    }

    fn value(&self) -> usize {
        *self.value.lock()
    }
}

macro_rules! semaphore_common {
    ($ty:ident) => {
        impl $ty {
            /// Takes one unit, blocking while the counter is zero.
            pub fn acquire(&self) {
                self.counter.acquire(None);
            }

            /// Takes one unit if the counter is above zero (Python's
            /// `acquire(blocking=False)`); returns whether it did.
            #[must_use = "false means nothing was acquired"]
            pub fn try_acquire(&self) -> bool {
                self.counter.try_acquire()
            }

            /// Takes one unit, waiting at most `timeout` (Python's
            /// `acquire(timeout=…)`); returns whether it did.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use troika::sync::", stringify!($ty), ";")]
            /// use std::time::Duration;
            ///
            #[doc = concat!("let sem = ", stringify!($ty), "::new(1);")]
            /// assert!(sem.acquire_timeout(Duration::from_secs(1)));
            /// assert!(!sem.acquire_timeout(Duration::from_millis(5))); // none left
            /// ```
            #[must_use = "false means nothing was acquired"]
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.counter.acquire(Instant::now().checked_add(timeout))
            }

            /// Takes one unit and returns a guard that gives it back on drop
            /// (Python's `with sem:`).
            pub fn access(&self) -> SemaphoreGuard<'_> {
                self.counter.acquire(None);
                SemaphoreGuard {
                    counter: &self.counter,
                }
            }

            /// Like [`access`](Self::access) but only if a unit is free now.
            pub fn try_access(&self) -> Option<SemaphoreGuard<'_>> {
                // Build the guard only on success: dropping one gives a unit
                // back.
                if self.counter.try_acquire() {
                    Some(SemaphoreGuard {
                        counter: &self.counter,
                    })
                } else {
                    None
                }
            }

            /// Like [`access`](Self::access) but gives up after `timeout`;
            /// `None` if no unit came free in time.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use troika::sync::", stringify!($ty), ";")]
            /// use std::time::Duration;
            ///
            #[doc = concat!("let slots = ", stringify!($ty), "::new(1);")]
            /// let first = slots.access_timeout(Duration::from_secs(1)).unwrap();
            /// assert!(slots.access_timeout(Duration::from_millis(5)).is_none());
            /// drop(first); // gives the unit back
            /// assert_eq!(slots.value(), 1);
            /// ```
            pub fn access_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
                if self.counter.acquire(Instant::now().checked_add(timeout)) {
                    Some(SemaphoreGuard {
                        counter: &self.counter,
                    })
                } else {
                    None
                }
            }

            /// Gives one unit back and wakes one waiter.
            ///
            /// # Errors
            ///
            /// See [`release_n`](Self::release_n).
            pub fn release(&self) -> Result<(), ReleaseError> {
                self.counter.release(1)
            }

            /// The counter's current value: how many units can be taken
            /// without blocking.
            pub fn value(&self) -> usize {
                self.counter.value()
            }
        }
    };
}

/// A counter of free units; taking one blocks while none is free (Python's
/// `threading.Semaphore`).
///
/// Use it to bound how many threads do something at once — a crawler that
/// keeps at most 10 downloads in flight is `Semaphore::new(10)`.
/// [`access`](Semaphore::access) returns a guard that gives the unit back on
/// drop (Python's `with sem:`); [`acquire`](Semaphore::acquire) /
/// [`release`](Semaphore::release) are Python's calls of the same names. A plain semaphore can be
/// released any number of times (it grows); use [`BoundedSemaphore`] to make
/// a release past the starting value an error.
///
/// Built on a `parking_lot` mutex and condition variable.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use troika::sync::{Semaphore, Thread};
///
/// let slots = Arc::new(Semaphore::new(2));
/// let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
/// let threads: Vec<_> = (0..6)
///     .map(|i| {
///         let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
///         Thread::spawn(format!("crawler-{i}"), move || {
///             let _slot = slots.access();
///             let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
///             most.fetch_max(now, Ordering::SeqCst);
///             inside.fetch_sub(1, Ordering::SeqCst);
///         })
///         .unwrap()
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap();
/// }
/// assert!(most.load(Ordering::SeqCst) <= 2);
/// assert_eq!(slots.value(), 2);
/// ```
#[derive(Debug)]
pub struct Semaphore {
    counter: Counter,
}

impl Semaphore {
    /// A semaphore with `value` free units (Python's `Semaphore(value)`).
    pub fn new(value: usize) -> Semaphore {
        Semaphore {
            counter: Counter::new(value, None),
        }
    }

    /// Gives `n` units back and wakes up to `n` waiters (Python 3.9's
    /// `release(n)`).
    ///
    /// # Errors
    ///
    /// [`ReleaseError::Overflow`] if the counter would pass `usize::MAX`;
    /// the counter is left unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(0);
    /// sem.release_n(3).unwrap(); // a plain semaphore grows
    /// assert_eq!(sem.value(), 3);
    /// assert!(sem.release_n(usize::MAX).is_err());
    /// ```
    pub fn release_n(&self, n: usize) -> Result<(), ReleaseError> {
        self.counter.release(n)
    }
}

impl Default for Semaphore {
    /// One unit, as Python's `Semaphore()`.
    fn default() -> Semaphore {
        Semaphore::new(1)
    }
}

semaphore_common!(Semaphore);

/// A [`Semaphore`] that refuses to be released past its starting value
/// (Python's `threading.BoundedSemaphore`): a candy machine whose tray holds
/// `n` bars, where refilling a full tray is an error, not a silent
/// overfill.
///
/// # Examples
///
/// ```
/// use troika::sync::{BoundedSemaphore, ReleaseError};
///
/// let tray = BoundedSemaphore::new(2); // full with 2 bars
/// assert!(tray.try_acquire()); // buy one
/// tray.release().unwrap(); // refill: back to 2
/// assert_eq!(tray.release(), Err(ReleaseError::AboveBound { bound: 2 })); // full, skipping
/// assert!(tray.try_acquire() && tray.try_acquire());
/// assert!(!tray.try_acquire()); // empty, skipping
/// ```
#[derive(Debug)]
pub struct BoundedSemaphore {
    counter: Counter,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free units; `value` is also the most
    /// it can ever hold.
    pub fn new(value: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            counter: Counter::new(value, Some(value)),
        }
    }

    /// The starting value, which releases may not exceed.
    pub fn bound(&self) -> usize {
        self.counter.bound.unwrap_or(usize::MAX)
    }

    /// Gives `n` units back and wakes up to `n` waiters; all or nothing.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::AboveBound`] if the counter would pass the starting
    /// value (Python's `ValueError: Semaphore released too many times`); the
    /// counter is left unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::sync::{BoundedSemaphore, ReleaseError};
    ///
    /// let tray = BoundedSemaphore::new(3);
    /// assert!(tray.try_acquire() && tray.try_acquire());
    /// assert_eq!(tray.release_n(3), Err(ReleaseError::AboveBound { bound: 3 }));
    /// assert_eq!(tray.value(), 1); // all or nothing
    /// tray.release_n(2).unwrap();
    /// ```
    pub fn release_n(&self, n: usize) -> Result<(), ReleaseError> {
        self.counter.release(n)
    }
}

semaphore_common!(BoundedSemaphore);

/// One unit of a [`Semaphore`] or [`BoundedSemaphore`], given back on drop.
///
/// If a [`BoundedSemaphore`] was already refilled to its bound by hand while
/// this guard was alive, the guard's release is dropped rather than exceed
/// the bound.
#[must_use = "the unit is given back as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    counter: &'a Counter,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Only fails if someone released by hand past the bound or to
        // usize::MAX meanwhile; the counter is then already at its limit.
        let _ = self.counter.release(1);
    }
}
