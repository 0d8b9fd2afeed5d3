//! [`Barrier`]: a meeting point for a fixed number of threads (Python's
//! `threading.Barrier`).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex, MutexGuard};

use super::BarrierError;
use crate::futures::ConfigError;

/// How one round ("generation") of the barrier ended; stored as a `u8` in
/// the round's [`Outcome`] cell.
const OPEN: u8 = 0;
const TRIPPED: u8 = 1;
const BROKEN: u8 = 2;

/// The outcome of one round, shared by the round's waiters. Each waiter keeps
/// its own round's cell, so it learns how *its* round ended even if later
/// rounds have ended since (tripped or broken) before it woke up. Only read
/// and written under the barrier's state mutex, which orders the accesses;
/// the atomic is there only to make the cell `Sync`.
#[derive(Debug, Default)]
struct Outcome(AtomicU8);

impl Outcome {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct State {
    /// Parties waiting in the current round.
    arrived: usize,
    /// The current round's outcome cell (always `OPEN`).
    round: Arc<Outcome>,
    /// Whether the barrier is broken (until `reset`).
    broken: bool,
    /// The last party of a round is running the action (outside the mutex);
    /// new arrivals wait until it is done.
    busy: bool,
}

type Action = Box<dyn Fn() + Send + Sync>;

/// Makes a fixed number of threads wait for each other, then lets them all
/// go on together; reusable round after round (Python's `threading.Barrier`).
///
/// [`wait`](Barrier::wait) blocks until `parties` threads have called it,
/// then returns a distinct index in `0..parties` to each, in order of
/// arrival (the first gets 0, as in Python). If anything goes wrong
/// — a waiter times out, someone calls [`abort`](Barrier::abort) or
/// [`reset`](Barrier::reset), or the action panics — the barrier is
/// **broken**: every waiter gets [`BarrierError::Broken`] (the one that timed
/// out gets [`BarrierError::Timeout`]), and later waits fail at once until
/// [`reset`](Barrier::reset). This is Python's `BrokenBarrierError`, typed.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use troika::sync::{Barrier, Thread};
///
/// let start_line = Arc::new(Barrier::new(3).unwrap());
/// let runners: Vec<_> = (0..3)
///     .map(|i| {
///         let start_line = Arc::clone(&start_line);
///         Thread::spawn(format!("runner-{i}"), move || {
///             start_line.wait_timeout(Duration::from_secs(10))
///         })
///         .unwrap()
///     })
///     .collect();
/// let mut indices: Vec<usize> = runners.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
/// indices.sort();
/// assert_eq!(indices, [0, 1, 2]);
///
/// // Zero parties is refused up front.
/// assert!(Barrier::new(0).is_err());
/// ```
pub struct Barrier {
    parties: usize,
    state: Mutex<State>,
    changed: Condvar,
    action: Option<Action>,
}

impl Barrier {
    /// A barrier for `parties` threads.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `parties` is zero.
    pub fn new(parties: usize) -> Result<Barrier, ConfigError> {
        if parties == 0 {
            return Err(ConfigError("a barrier needs at least one party".to_owned()));
        }
        Ok(Barrier {
            parties,
            state: Mutex::new(State {
                arrived: 0,
                round: Arc::new(Outcome::default()),
                broken: false,
                busy: false,
            }),
            changed: Condvar::new(),
            action: None,
        })
    }

    /// A barrier whose last arriving thread runs `action` before anyone is
    /// released (Python's `Barrier(parties, action=…)`). If `action` panics,
    /// the barrier breaks, the other waiters get [`BarrierError::Broken`], and
    /// the panic continues in the thread that ran it. The action runs without
    /// the barrier's internal lock held, so it may call the barrier's own
    /// methods; if it calls [`abort`](Barrier::abort), every party of the
    /// round, the runner included, gets [`BarrierError::Broken`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `parties` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use troika::sync::{Barrier, Thread};
    ///
    /// let rounds = Arc::new(AtomicUsize::new(0));
    /// let barrier = {
    ///     let rounds = Arc::clone(&rounds);
    ///     Arc::new(Barrier::with_action(2, move || {
    ///         rounds.fetch_add(1, Ordering::SeqCst);
    ///     }).unwrap())
    /// };
    /// let other = {
    ///     let barrier = Arc::clone(&barrier);
    ///     Thread::spawn("other", move || barrier.wait()).unwrap()
    /// };
    /// barrier.wait().unwrap();
    /// other.join().unwrap().unwrap();
    /// // The action ran once, before either party was released.
    /// assert_eq!(rounds.load(Ordering::SeqCst), 1);
    /// ```
    pub fn with_action(
        parties: usize,
        action: impl Fn() + Send + Sync + 'static,
    ) -> Result<Barrier, ConfigError> {
        let mut barrier = Barrier::new(parties)?;
        barrier.action = Some(Box::new(action));
        Ok(barrier)
    }

    /// How many threads must call [`wait`](Barrier::wait) to trip it.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many threads are waiting in the current round.
    pub fn n_waiting(&self) -> usize {
        self.state.lock().arrived
    }

    /// Whether the barrier is broken (Python's `broken`).
    pub fn is_broken(&self) -> bool {
        self.state.lock().broken
    }

    /// Waits until every party has arrived; returns this thread's arrival
    /// index in `0..parties`.
    ///
    /// # Errors
    ///
    /// [`BarrierError::Broken`] if the barrier is or becomes broken.
    pub fn wait(&self) -> Result<usize, BarrierError> {
        self.wait_until(None)
    }

    /// Like [`wait`](Barrier::wait), but if the round has not tripped after
    /// `timeout` this thread breaks the barrier and leaves.
    ///
    /// # Errors
    ///
    /// [`BarrierError::Timeout`] for this thread if it timed out (the others
    /// then get [`BarrierError::Broken`]); [`BarrierError::Broken`] if the
    /// barrier is or becomes broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::sync::{Barrier, BarrierError};
    ///
    /// let barrier = Barrier::new(2).unwrap();
    /// // The second party never comes: this one times out and breaks it.
    /// assert_eq!(barrier.wait_timeout(Duration::from_millis(5)), Err(BarrierError::Timeout));
    /// assert_eq!(barrier.wait(), Err(BarrierError::Broken));
    /// barrier.reset();
    /// assert!(!barrier.is_broken());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BarrierError> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Waits on `changed` until notified or `deadline`; `false` if the
    /// deadline passed.
    fn wait_changed(&self, state: &mut MutexGuard<'_, State>, deadline: Option<Instant>) -> bool {
        match deadline {
            None => {
                self.changed.wait(state);
                true
            }
            Some(deadline) => !self.changed.wait_until(state, deadline).timed_out(),
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<usize, BarrierError> {
        let mut state = self.state.lock();
        // The previous round's action may still be running: its round is
        // full, so wait to join the next one.
        while state.busy && !state.broken {
            if !self.wait_changed(&mut state, deadline) && state.busy && !state.broken {
                self.finish_round(&mut state, BROKEN);
                return Err(BarrierError::Timeout);
            }
        }
        if state.broken {
            return Err(BarrierError::Broken);
        }
        let index = state.arrived;
        state.arrived += 1;
        let my_round = Arc::clone(&state.round);
        if state.arrived == self.parties {
            let Some(action) = &self.action else {
                self.finish_round(&mut state, TRIPPED);
                return Ok(index);
            };
            // Run the action without holding the mutex, so it may call this
            // barrier's methods (even `abort`) without deadlocking.
            state.busy = true;
            drop(state);
            let outcome = catch_unwind(AssertUnwindSafe(action));
            let mut state = self.state.lock();
            state.busy = false;
            self.changed.notify_all();
            let aborted = my_round.get() != OPEN;
            return match outcome {
                Ok(()) if aborted => Err(BarrierError::Broken),
                Ok(()) => {
                    self.finish_round(&mut state, TRIPPED);
                    Ok(index)
                }
                Err(payload) => {
                    if !aborted {
                        self.finish_round(&mut state, BROKEN);
                    }
                    drop(state);
                    resume_unwind(payload)
                }
            };
        }
        while my_round.get() == OPEN {
            if !self.wait_changed(&mut state, deadline) && my_round.get() == OPEN {
                // Our round is still the current one: break it.
                self.finish_round(&mut state, BROKEN);
                return Err(BarrierError::Timeout);
            }
        }
        if my_round.get() == TRIPPED {
            Ok(index)
        } else {
            Err(BarrierError::Broken)
        }
    }

    /// Ends the current round with `outcome` and wakes its waiters.
    fn finish_round(&self, state: &mut State, outcome: u8) {
        state.round.0.store(outcome, Ordering::Relaxed);
        state.round = Arc::new(Outcome::default());
        state.arrived = 0;
        if outcome == BROKEN {
            state.broken = true;
        }
        self.changed.notify_all();
    }

    /// Breaks the barrier: current waiters get [`BarrierError::Broken`], and
    /// so do later waits until [`reset`](Barrier::reset) (Python's `abort()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use troika::sync::{Barrier, BarrierError, Thread};
    ///
    /// let barrier = Arc::new(Barrier::new(2).unwrap());
    /// let waiter = {
    ///     let barrier = Arc::clone(&barrier);
    ///     Thread::spawn("waiter", move || barrier.wait()).unwrap()
    /// };
    /// barrier.abort(); // the waiter (asleep or not yet arrived) is let go
    /// assert_eq!(waiter.join().unwrap(), Err(BarrierError::Broken));
    /// barrier.reset();
    /// assert!(!barrier.is_broken());
    /// ```
    pub fn abort(&self) {
        let mut state = self.state.lock();
        self.finish_round(&mut state, BROKEN);
    }

    /// Returns the barrier to its empty, unbroken state; threads waiting in
    /// the current round get [`BarrierError::Broken`] (Python's `reset()`).
    pub fn reset(&self) {
        let mut state = self.state.lock();
        if state.arrived > 0 {
            self.finish_round(&mut state, BROKEN);
        }
        state.broken = false;
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("n_waiting", &state.arrived)
            .field("broken", &state.broken)
            .field("has_action", &self.action.is_some())
            .finish()
    }
}
