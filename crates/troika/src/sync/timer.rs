//! [`Timer`]: run a closure after a delay on its own thread, unless
//! cancelled first (Python's `threading.Timer`).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loom::{Condvar, Mutex};

use super::{Thread, ThreadBuilder};
use crate::futures::TaskError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting,
    Cancelled,
    Fired,
}

#[derive(Debug)]
struct Shared {
    phase: Mutex<Phase>,
    cancelled: Condvar,
}

/// Runs a closure once after a delay, on a thread of its own, unless
/// [`cancel`](Timer::cancel)led first (Python's `threading.Timer`).
///
/// The timer's thread sleeps on a condition variable until the deadline, so
/// cancelling wakes it at once; a cancelled timer's thread exits without
/// running the closure.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use troika::sync::Timer;
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let timer = Timer::start(Duration::from_millis(10), move || tx.send("ding").unwrap()).unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("ding"));
/// assert_eq!(timer.join().unwrap(), true); // it fired
///
/// let never = Timer::start(Duration::from_secs(3600), || unreachable!()).unwrap();
/// assert!(never.cancel());
/// assert_eq!(never.join().unwrap(), false); // cancelled: the closure never ran
/// ```
pub struct Timer {
    shared: Arc<Shared>,
    thread: Thread<bool>,
    delay: Duration,
}

impl Timer {
    /// Starts a timer that calls `f` after `delay`, on a thread named
    /// `Thread-N`.
    ///
    /// # Errors
    ///
    /// The operating system refused to create the thread.
    pub fn start<F>(delay: Duration, f: F) -> io::Result<Timer>
    where
        F: FnOnce() + Send + 'static,
    {
        Timer::start_with(ThreadBuilder::new(), delay, f)
    }

    /// Like [`start`](Timer::start) but names the timer's thread.
    ///
    /// # Errors
    ///
    /// The operating system refused to create the thread, or `name` contains
    /// a NUL byte.
    pub fn start_named<F>(name: impl Into<String>, delay: Duration, f: F) -> io::Result<Timer>
    where
        F: FnOnce() + Send + 'static,
    {
        Timer::start_with(ThreadBuilder::new().name(name), delay, f)
    }

    fn start_with<F>(builder: ThreadBuilder, delay: Duration, f: F) -> io::Result<Timer>
    where
        F: FnOnce() + Send + 'static,
    {
        let shared = Arc::new(Shared {
            phase: Mutex::new(Phase::Waiting),
            cancelled: Condvar::new(),
        });
        let deadline = Instant::now().checked_add(delay);
        let thread = {
            let shared = Arc::clone(&shared);
            builder.spawn(move || {
                let mut phase = shared.phase.lock();
                while *phase == Phase::Waiting {
                    match deadline {
                        None => shared.cancelled.wait(&mut phase),
                        Some(deadline) => {
                            if shared
                                .cancelled
                                .wait_until(&mut phase, deadline)
                                .timed_out()
                            {
                                break;
                            }
                        }
                    }
                }
                if *phase == Phase::Cancelled {
                    return false;
                }
                *phase = Phase::Fired;
                drop(phase);
                f();
                true
            })?
        };
        Ok(Timer {
            shared,
            thread,
            delay,
        })
    }

    /// Stops the timer if it is still waiting; returns `true` if it was
    /// stopped in time (the closure will never run), `false` if the closure
    /// has already started or the timer was already cancelled.
    pub fn cancel(&self) -> bool {
        let mut phase = self.shared.phase.lock();
        if *phase == Phase::Waiting {
            *phase = Phase::Cancelled;
            self.shared.cancelled.notify_all();
            true
        } else {
            false
        }
    }

    /// The delay the timer was started with.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The timer thread's name.
    pub fn name(&self) -> &str {
        self.thread.name()
    }

    /// Whether the timer's thread is still waiting or running the closure.
    pub fn is_alive(&self) -> bool {
        self.thread.is_alive()
    }

    /// Waits at most `timeout` for the timer's thread to finish; returns
    /// whether it did.
    #[must_use = "false means the timer is still waiting or running"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.thread.wait_timeout(timeout)
    }

    /// Waits for the timer's thread to finish. Returns `true` if the closure
    /// ran, `false` if the timer was cancelled first.
    ///
    /// # Errors
    ///
    /// A [`TaskError`] with [`is_panic`](TaskError::is_panic) true if the
    /// closure panicked.
    pub fn join(self) -> Result<bool, TaskError> {
        self.thread.join()
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("name", &self.thread.name())
            .field("delay", &self.delay)
            .field("phase", &*self.shared.phase.lock())
            .finish()
    }
}
