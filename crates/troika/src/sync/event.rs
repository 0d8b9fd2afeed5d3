//! [`Event`]: a flag that threads can wait for (Python's `threading.Event`).

use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex};

/// A boolean flag that threads can wait on, like Python's `threading.Event`.
///
/// The flag starts unset. [`set`](Event::set) raises it and wakes every
/// waiter; [`clear`](Event::clear) lowers it again; [`wait`](Event::wait) and
/// [`wait_timeout`](Event::wait_timeout) block until it is raised.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use troika::sync::{Event, Thread};
///
/// let ready = Arc::new(Event::new());
/// let waiter = {
///     let ready = Arc::clone(&ready);
///     Thread::spawn("waiter", move || ready.wait_timeout(Duration::from_secs(10))).unwrap()
/// };
/// ready.set();
/// assert!(waiter.join().unwrap());
/// assert!(ready.is_set());
/// ```
#[derive(Debug, Default)]
pub struct Event {
    flag: Mutex<Flag>,
    changed: Condvar,
}

/// The flag, and how many times it went up: a waiter that slept through a
/// `set` and a `clear` sees the count move and returns (as Python's
/// `Event.wait` does), instead of sleeping on with its wake-up lost.
#[derive(Debug, Default)]
struct Flag {
    set: bool,
    sets: u64,
}

impl Event {
    /// A new event whose flag is not set.
    pub fn new() -> Event {
        Event::default()
    }

    /// Whether the flag is set (Python's `is_set()`).
    pub fn is_set(&self) -> bool {
        self.flag.lock().set
    }

    /// Sets the flag and wakes every thread waiting for it.
    pub fn set(&self) {
        let mut flag = self.flag.lock();
        if !flag.set {
            flag.set = true;
            flag.sets = flag.sets.wrapping_add(1);
        }
        self.changed.notify_all();
    }

    /// Lowers the flag; later waiters block until the next [`set`](Event::set).
    pub fn clear(&self) {
        self.flag.lock().set = false;
    }

    /// Blocks until the flag is set. Returns at once if it already is. A
    /// waiter asleep when [`set`](Event::set) is called returns even if the
    /// flag is cleared again before it runs.
    pub fn wait(&self) {
        let mut flag = self.flag.lock();
        let start = flag.sets;
        while !flag.set && flag.sets == start {
            self.changed.wait(&mut flag);
        }
    }

    /// Blocks until the flag is set or `timeout` has passed.
    ///
    /// Returns `true` if the flag was set at some point during the wait
    /// (even if cleared again since), `false` on timeout (Python's
    /// `wait(timeout)` return value).
    #[must_use = "false means the wait timed out"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => {
                self.wait();
                true
            }
        }
    }

    /// Blocks until the flag is set or `deadline` is reached; returns
    /// whether it was set at some point during the wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use troika::sync::Event;
    ///
    /// // One deadline shared by several waits.
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// let (a, b) = (Event::new(), Event::new());
    /// b.set();
    /// assert!(!a.wait_deadline(deadline));
    /// assert!(b.wait_deadline(deadline)); // already set: true at once
    /// ```
    #[must_use = "false means the deadline passed"]
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        let mut flag = self.flag.lock();
        let start = flag.sets;
        while !flag.set && flag.sets == start {
            if self.changed.wait_until(&mut flag, deadline).timed_out() {
                return flag.set || flag.sets != start;
            }
        }
        true
    }
}
