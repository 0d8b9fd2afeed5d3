//! [`Promise::new`]: a handle and its promise for an executor outside troika.

use super::handle::{Handle, Promise, pair};

impl<T> Promise<T> {
    /// A linked pair: the executor keeps the [`Promise`] and settles it once;
    /// the caller gets the [`Handle`], with everything a handle of troika's
    /// own executors offers (`result`, callbacks, `cancel`, `.await`).
    ///
    /// The promise moves the task through its phases: [`start`](Promise::start)
    /// claims it (false if it was cancelled while pending: skip it),
    /// [`complete`](Promise::complete) decides its outcome (false if a
    /// `cancel()` decided it first: drop the value), and
    /// [`set_kill`](Promise::set_kill) registers what cancelling it does once
    /// it has started. Whoever decides first wins; the handle settles exactly
    /// once.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::Promise;
    ///
    /// let (promise, handle) = Promise::<u32>::new();
    /// let worker = std::thread::spawn(move || {
    ///     if promise.start() {
    ///         promise.complete(Ok(42));
    ///     }
    /// });
    /// assert_eq!(handle.result().unwrap(), 42);
    /// worker.join().unwrap();
    ///
    /// // A started task with a kill hook can be cancelled: the hook runs once.
    /// let (promise, handle) = Promise::<u32>::new();
    /// assert!(promise.start());
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// promise.set_kill(Box::new(move || tx.send("stop it").unwrap()));
    /// assert!(handle.cancel());
    /// assert_eq!(rx.recv().unwrap(), "stop it");
    /// assert!(!promise.complete(Ok(1)), "the cancel decided the outcome");
    /// assert!(handle.result().unwrap_err().is_cancelled());
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Promise<T>, Handle<T>) {
        pair(0)
    }
}
