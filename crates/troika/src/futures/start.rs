//! Starting an executor's threads and processes, with a test hook that makes
//! the n-th start fail, to check that a build failing half-way tears down
//! what it started.

/// Called before an executor starts a thread or a process while it is being
/// built. Outside unit tests it does nothing.
#[inline]
pub(crate) fn check_start() -> std::io::Result<()> {
    #[cfg(test)]
    {
        let fail = FAIL_AT.with(|at| {
            let n = at.get();
            at.set(n.saturating_sub(1));
            n == 1
        });
        if fail {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "a start failed on purpose (test hook)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Fail the n-th start made on this thread from now (0: none).
    static FAIL_AT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Make the `n`-th start on this thread from now fail (`n` counts from 1).
#[cfg(test)]
pub(crate) fn fail_nth_start(n: usize) {
    FAIL_AT.with(|at| at.set(n));
}

/// The names of this process's threads (from `/proc/self/task/*/comm`,
/// which keeps the first 15 bytes of a name).
#[cfg(test)]
pub(crate) fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// Wait (at most 10 s, a failure path) until no thread of this process has
/// a name starting with `prefix`; returns the names still there. A joined
/// thread may stay listed for a moment after its join returned.
#[cfg(test)]
pub(crate) fn threads_left(prefix: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<String> = thread_names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::yield_now();
    }
}
