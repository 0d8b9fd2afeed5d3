//! Request logs, buffered: a log line costs its formatting and a copy, not a
//! system call or a thread wake-up.
//!
//! `tracing-appender`'s non-blocking writer hands every line to its writer
//! thread through a channel, and under a steady trickle of requests that
//! thread wakes up (and writes) once per line: at 10,000 requests/s that was
//! a twentieth of the machine. Here lines are appended to a shared buffer on
//! the request's own thread. The buffer goes out in one `write` when it
//! passes [`FLUSH_BYTES`], and a flusher thread writes whatever is there every
//! [`FLUSH_EVERY`], so a quiet server's last lines appear promptly. Lines are
//! never dropped; dropping the [`LogGuard`] (at exit) writes the rest.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Write the buffer out once it holds this much.
const FLUSH_BYTES: usize = 64 * 1024;

/// The longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The buffer between the request threads and the output.
struct Shared<W> {
    pending: Mutex<Vec<u8>>,
    /// Held while writing, so buffers go out in the order they were filled.
    out: Mutex<W>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl<W: Write> Shared<W> {
    /// Write out what is pending. The output lock is taken before the
    /// buffer is released, so two flushes cannot overtake each other.
    fn flush(&self, mut pending: parking_lot::MutexGuard<'_, Vec<u8>>) {
        if pending.is_empty() {
            return;
        }
        let lines = std::mem::replace(&mut *pending, Vec::with_capacity(FLUSH_BYTES));
        let mut out = self.out.lock();
        drop(pending);
        // Nowhere to report a failed write of the log itself.
        let _ = out.write_all(&lines);
        let _ = out.flush();
    }
}

/// The [`MakeWriter`] the fmt layer writes each formatted line through.
pub(crate) struct BufferedLog<W> {
    shared: Arc<Shared<W>>,
}

/// Stops the flusher and writes what is left when dropped.
pub(crate) struct LogGuard<W: Write> {
    shared: Arc<Shared<W>>,
    flusher: Option<JoinHandle<()>>,
}

/// A buffered log over `out`, with its flusher thread running.
pub(crate) fn buffered<W>(out: W) -> std::io::Result<(BufferedLog<W>, LogGuard<W>)>
where
    W: Write + Send + 'static,
{
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
        out: Mutex::new(out),
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let flusher_shared = Arc::clone(&shared);
    let flusher = std::thread::Builder::new()
        .name("serve-log".into())
        .spawn(move || {
            let shared = flusher_shared;
            let mut stop = shared.stop.lock();
            while !*stop {
                shared.wake.wait_for(&mut stop, FLUSH_EVERY);
                shared.flush(shared.pending.lock());
            }
        })?;
    Ok((
        BufferedLog {
            shared: Arc::clone(&shared),
        },
        LogGuard {
            shared,
            flusher: Some(flusher),
        },
    ))
}

impl<W: Write> Drop for LogGuard<W> {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.shared.flush(self.shared.pending.lock());
    }
}

/// One line on its way into the buffer.
pub(crate) struct LineWriter<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.pending.lock();
        pending.extend_from_slice(bytes);
        if pending.len() >= FLUSH_BYTES {
            self.shared.flush(pending);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BufferedLog<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// An output that sends each write it gets to the test.
    struct Recorder(mpsc::Sender<Vec<u8>>);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_batched_kept_in_order_and_flushed_at_drop() {
        let (tx, writes) = mpsc::channel();
        let (log, guard) = buffered(Recorder(tx)).unwrap();
        let line = |i: usize| format!("line {i:06} {}\n", "x".repeat(100));
        let lines = 2_000; // about 230 KB: several size-triggered flushes
        for i in 0..lines {
            log.make_writer().write_all(line(i).as_bytes()).unwrap();
        }
        drop(guard);
        let writes: Vec<Vec<u8>> = writes.try_iter().collect();
        assert!(
            writes.len() < lines / 100,
            "{} writes for {lines} lines: not batched",
            writes.len()
        );
        let all = String::from_utf8(writes.concat()).unwrap();
        let expected: String = (0..lines).map(line).collect();
        assert_eq!(all, expected, "every line, once, in order");
    }

    #[test]
    fn a_quiet_log_is_written_by_the_flusher() {
        let (tx, writes) = mpsc::channel();
        let (log, _guard) = buffered(Recorder(tx)).unwrap();
        log.make_writer().write_all(b"one line\n").unwrap();
        // The flusher writes it within FLUSH_EVERY; the bound here is a
        // failure path only.
        let first = writes.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(first, b"one line\n");
    }
}
