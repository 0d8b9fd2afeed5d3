//! The executor's internals at chosen instants (see `crate::test_hooks`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::AsyncExecutor;

/// A current-thread runtime, so that its tasks run on the test's thread,
/// where the hooks are set.
fn on_this_thread() -> (tokio::runtime::Runtime, AsyncExecutor) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let executor = AsyncExecutor::builder()
        .on_runtime(runtime.handle().clone())
        .build()
        .unwrap();
    (runtime, executor)
}

/// Drive `runtime` until `done` holds (at most 60 s, a failure path).
fn drive_until(runtime: &tokio::runtime::Runtime, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    runtime.block_on(async {
        while !done() {
            assert!(Instant::now() < deadline, "the task never ended");
            tokio::task::yield_now().await;
        }
    });
}

/// Regression (issue 16): a task cancelled in the instant between its
/// future's end and the decision of its outcome was counted as succeeded
/// while its handle said cancelled.
#[test]
fn a_cancel_just_before_completion_is_not_counted_as_a_success() {
    let (runtime, executor) = on_this_thread();
    let handle = Arc::new(executor.submit(async { 7 }));
    let canceller = Arc::clone(&handle);
    crate::test_hooks::set_before_complete(Some(Box::new(move || {
        assert!(canceller.cancel(), "the running task is cancelled");
    })));
    drive_until(&runtime, || handle.is_done());
    crate::test_hooks::set_before_complete(None);
    let handle = Arc::into_inner(handle).expect("the hook released its handle");
    assert!(handle.result().unwrap_err().is_cancelled());
    executor.shutdown(true, false);
    let stats = executor.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.busy), (0, 1, 0));
    drop(executor);
}
