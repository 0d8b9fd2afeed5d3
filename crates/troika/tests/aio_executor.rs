//! `AsyncExecutor`: the common futures API on a tokio runtime.

mod ipc_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use troika::aio::{AsyncExecutor, AsyncTask};
use troika::{ErrorKind, Executor, WaitMode, as_completed, wait};

#[test]
fn submit_returns_a_handle_for_sync_and_async_callers() {
    let executor = AsyncExecutor::builder().workers(2).build().unwrap();
    assert_eq!(executor.submit(async { 6 * 7 }).result(), Ok(42));
    let handle = executor.submit(async { "awaited" });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(handle), Ok("awaited"));
}

#[test]
fn panics_timeouts_and_cancellation_are_typed() {
    let executor = AsyncExecutor::builder()
        .workers(2)
        .task_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let err = executor
        .submit(async { panic!("coroutine failed") })
        .result()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Panicked("coroutine failed".into()));

    let err = executor
        .submit(std::future::pending::<()>())
        .result()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::TimedOut(Duration::from_millis(20)));
    assert_eq!(
        executor.submit(async { "still serving" }).result(),
        Ok("still serving")
    );
}

#[test]
fn cancel_stops_a_running_future() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let executor = AsyncExecutor::builder().workers(1).build().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let flag = Flag(Arc::clone(&dropped));
    let handle = executor.submit(async move {
        let _flag = flag;
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await
    });
    started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(handle.is_running());
    assert!(handle.cancel(), "a running future can be cancelled");
    assert!(handle.result().unwrap_err().is_cancelled());
    drop(executor); // waits for the aborted task to be dropped
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn the_concurrency_limit_holds_and_pending_tasks_can_be_cancelled() {
    let executor = AsyncExecutor::builder()
        .workers(2)
        .concurrency_limit(3)
        .build()
        .unwrap();
    assert_eq!(executor.concurrency_limit(), Some(3));
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
            executor.submit(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for handle in handles {
        handle.result().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);

    // Fill the three slots with futures that never end; the fourth waits.
    let blockers: Vec<_> = (0..3)
        .map(|_| executor.submit(std::future::pending::<()>()))
        .collect();
    // The blockers hold their slots before the fourth is submitted (they
    // take them on the runtime's threads, which may run late).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !blockers.iter().all(|b| b.is_running()) {
        assert!(
            std::time::Instant::now() < deadline,
            "blockers never started"
        );
        std::thread::yield_now();
    }
    let queued = executor.submit(async { "never" });
    assert!(
        queued.cancel(),
        "a task waiting for a slot is cancelled at once"
    );
    assert!(queued.result().unwrap_err().is_cancelled());
    let more = executor.submit(async { 1 });
    executor.shutdown(false, true);
    assert!(
        more.result().unwrap_err().is_cancelled(),
        "pending tasks are cancelled by shutdown"
    );
    assert!(
        executor
            .submit(async { 2 })
            .result()
            .unwrap_err()
            .is_shut_down()
    );
    for blocker in &blockers {
        blocker.cancel();
    }
}

#[test]
fn the_executor_trait_map_and_free_functions_work() {
    let executor = AsyncExecutor::new().unwrap();
    assert_eq!(Executor::<AsyncTask<u32>>::parallelism(&executor), 256);
    let doubled: Vec<u32> = executor
        .map_tasks((0..20u32).map(|n| AsyncTask::new(async move { n * 2 })), 4)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(doubled, (0..20).map(|n| n * 2).collect::<Vec<_>>());

    let squares: Vec<u64> = executor
        .map(|n: u64| async move { n * n }, 0..10)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..10).map(|n| n * n).collect::<Vec<_>>());

    let mut unordered: Vec<(usize, u8)> = executor
        .map_unordered(|n: u8| async move { n }, [5u8, 6, 7])
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    unordered.sort();
    assert_eq!(unordered, [(0, 5), (1, 6), (2, 7)]);

    let handles: Vec<_> = (0..5).map(|i| executor.submit(async move { i })).collect();
    assert!(wait(&handles, WaitMode::All, None).pending.is_empty());
    let mut seen: Vec<i32> = as_completed(handles)
        .map(|(_, h)| h.result().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3, 4]);

    let task = AsyncTask::new(async { 9 });
    assert_eq!(executor.try_submit(task).unwrap().result(), Ok(9));
    executor.shutdown(true, false);
    let refused = executor
        .try_submit(AsyncTask::new(async { 10 }))
        .unwrap_err();
    assert_eq!(refused.reason, troika::SubmitErrorReason::ShutDown);
}

#[test]
fn blocking_work_block_on_and_runtime_sharing() {
    let executor = AsyncExecutor::builder().workers(1).build().unwrap();
    assert_eq!(executor.spawn_blocking(|| 5 + 5).result(), Ok(10));
    assert_eq!(
        executor.block_on(async { "sync caller" }),
        Ok("sync caller")
    );
    // From async code block_on refuses instead of panicking.
    let nested = executor
        .submit({
            let handle = executor.runtime_handle().clone();
            async move {
                let inner = AsyncExecutor::builder().on_runtime(handle).build().unwrap();
                inner.block_on(async { 1 })
            }
        })
        .result()
        .unwrap();
    assert!(nested.is_err());

    // An executor on a borrowed runtime, dropped inside async code, does not panic.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let value = rt.block_on(async {
        let shared = AsyncExecutor::builder()
            .on_runtime(tokio::runtime::Handle::current())
            .build()
            .unwrap();
        let handle = shared.submit(async { 3 });
        let value = handle.await;
        drop(shared);
        value
    });
    assert_eq!(value, Ok(3));
    // An executor with its own runtime, dropped inside async code, does not panic either.
    rt.block_on(async {
        let owned = AsyncExecutor::builder().workers(1).build().unwrap();
        assert_eq!(owned.submit(async { 4 }).await, Ok(4));
        drop(owned);
    });
}

#[test]
fn bad_configuration_is_an_error() {
    assert!(AsyncExecutor::builder().workers(0).build().is_err());
    assert!(
        AsyncExecutor::builder()
            .concurrency_limit(0)
            .build()
            .is_err()
    );
    assert!(
        AsyncExecutor::builder()
            .task_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
}

#[test]
fn dropping_an_executor_with_a_task_that_never_finishes_returns() {
    ipc_support::guarded(
        "dropping_an_executor_with_a_task_that_never_finishes_returns",
        Duration::from_secs(60),
        || {
            // The default drop timeout (10 s) bounds the drop.
            let executor = AsyncExecutor::builder().workers(1).build().unwrap();
            let stuck = executor.submit(std::future::pending::<()>());
            drop(executor);
            assert!(stuck.result().unwrap_err().is_shut_down());
        },
    );
}

/// An executor's tasks borrow its shared state (issue 16 item 4): a
/// runtime thread still stuck in a task after the executor's drop gave up
/// on it goes on using that state when the task ends, so the state must
/// outlive the drop. The handle settles with the task's value.
#[test]
fn a_thread_stuck_in_a_task_past_the_executors_drop_settles_the_handle() {
    ipc_support::guarded(
        "a_thread_stuck_in_a_task_past_the_executors_drop_settles_the_handle",
        Duration::from_secs(120),
        || {
            let executor = AsyncExecutor::builder()
                .workers(1)
                .drop_timeout(Duration::from_millis(10))
                .build()
                .unwrap();
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            // Blocks its runtime thread (no `.await`): the runtime cannot
            // drop it, and its thread outlives the runtime's stop.
            let stuck = executor.submit(async move {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                7
            });
            started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
            // Returns after the drop timeout and the runtime's stop (1 s),
            // with the task still running.
            drop(executor);
            assert!(!stuck.is_done());
            release_tx.send(()).unwrap();
            assert_eq!(stuck.result(), Ok(7));
        },
    );
}

/// Dropped inside async code, an executor cannot wait for its runtime to
/// stop: a thread of its own stops it, and the tasks left are settled.
#[test]
fn an_executor_dropped_inside_async_code_settles_its_pending_tasks() {
    ipc_support::guarded(
        "an_executor_dropped_inside_async_code_settles_its_pending_tasks",
        Duration::from_secs(60),
        || {
            let outer = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let executor = AsyncExecutor::builder()
                .workers(1)
                .drop_timeout(Duration::ZERO)
                .build()
                .unwrap();
            let pending = executor.submit(std::future::pending::<()>());
            let done = executor.submit(async { 5 });
            assert_eq!(done.result(), Ok(5));
            outer.block_on(async move { drop(executor) });
            assert!(pending.result().unwrap_err().is_shut_down());
        },
    );
}

#[test]
fn a_panic_unwinds_past_an_executor_with_a_stuck_task() {
    ipc_support::guarded(
        "a_panic_unwinds_past_an_executor_with_a_stuck_task",
        Duration::from_secs(60),
        || {
            let (tx, rx) = std::sync::mpsc::channel();
            let unwound = std::panic::catch_unwind(move || {
                let executor = AsyncExecutor::builder().workers(1).build().unwrap();
                tx.send(executor.submit(std::future::pending::<()>()))
                    .unwrap();
                panic!("the caller failed");
            });
            assert!(unwound.is_err());
            let stuck = rx.recv().unwrap();
            assert!(stuck.result().unwrap_err().is_shut_down());
        },
    );
}

#[test]
fn shutdown_timeout_gives_up_on_stuck_tasks_only() {
    ipc_support::guarded(
        "shutdown_timeout_gives_up_on_stuck_tasks_only",
        Duration::from_secs(60),
        || {
            let executor = AsyncExecutor::builder().workers(2).build().unwrap();
            let quick = executor.submit(async { 7 });
            assert_eq!(quick.result().unwrap(), 7);
            let stuck = executor.submit(std::future::pending::<()>());
            assert!(!executor.shutdown_timeout(Duration::from_millis(50)));
            assert!(stuck.result().unwrap_err().is_shut_down());

            // Nothing stuck: every task finishes, and the call says so.
            let executor = AsyncExecutor::builder().workers(2).build().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let waiting = executor.submit(async move { rx.await.unwrap() });
            tx.send(5).unwrap();
            assert!(executor.shutdown_timeout(Duration::from_secs(30)));
            assert_eq!(waiting.result().unwrap(), 5);

            // The drop timeout is configurable.
            let executor = AsyncExecutor::builder()
                .workers(1)
                .drop_timeout(Duration::from_millis(20))
                .build()
                .unwrap();
            let stuck = executor.submit(std::future::pending::<()>());
            drop(executor);
            assert!(stuck.result().unwrap_err().is_shut_down());
        },
    );
}

/// `terminate` cancels the tasks waiting for a slot and stops the running
/// ones; the stats count what happened.
#[test]
fn terminate_cancels_the_queued_and_stops_the_running() {
    let executor = AsyncExecutor::builder()
        .workers(1)
        .concurrency_limit(1)
        .build()
        .unwrap();
    assert_eq!(executor.submit(async { 1 }).result(), Ok(1));
    let (started_tx, started) = std::sync::mpsc::channel();
    let running = executor.submit(async move {
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await
    });
    let queued = executor.submit(async { 2 });
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    let stats = executor.stats();
    assert_eq!((stats.busy, stats.queued), (1, 1), "{stats:?}");
    executor.terminate();
    assert!(running.result().unwrap_err().is_shut_down());
    assert!(queued.result().unwrap_err().is_cancelled());
    assert!(
        executor
            .submit(async { 3 })
            .result()
            .unwrap_err()
            .is_shut_down()
    );
    let stats = executor.stats();
    assert_eq!(
        (stats.succeeded, stats.failed, stats.busy),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// The executor's settings are checked at build: a zero limit is a
/// configuration error, not an I/O error.
#[test]
fn a_zero_limit_is_a_config_error() {
    let err = AsyncExecutor::builder()
        .concurrency_limit(0)
        .build()
        .unwrap_err();
    assert!(err.is_config());
    assert!(err.io_error().is_none());
    assert!(err.to_string().contains("concurrency limit"), "{err}");
}

/// The in-flight count is kept without a lock, and only a waiting
/// `shutdown` is woken: it must still return once every task has ended,
/// with every handle settled and the counters adding up.
#[test]
fn shutdown_waits_for_every_task_of_a_burst() {
    let executor = AsyncExecutor::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..2_000u64)
        .map(|i| {
            executor.submit(async move {
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                i
            })
        })
        .collect();
    executor.shutdown(true, false);
    assert_eq!(executor.in_flight(), 0);
    assert!(handles.iter().all(|h| h.is_done()));
    let stats = executor.stats();
    assert_eq!(
        (stats.succeeded, stats.failed, stats.busy, stats.queued),
        (2_000, 0, 0, 0)
    );
    let sum: u64 = handles.into_iter().map(|h| h.result().unwrap()).sum();
    assert_eq!(sum, 1_999 * 2_000 / 2);
}

/// A cancel that lands while the future is inside its first poll (before it
/// ever waited) still stops it: the future ends as soon as it would wait.
#[test]
fn cancel_during_the_first_poll_stops_the_future() {
    struct Flag(std::sync::mpsc::Sender<()>);
    impl Drop for Flag {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let executor = AsyncExecutor::builder().workers(1).build().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (cancelled_tx, cancelled_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let flag = Flag(dropped_tx);
    let handle = executor.submit(async move {
        let _flag = flag;
        started_tx.send(()).unwrap();
        // Still inside the first poll when the cancel arrives.
        cancelled_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        std::future::pending::<()>().await;
    });
    started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(handle.is_running());
    assert!(handle.cancel(), "a running future can be cancelled");
    cancelled_tx.send(()).unwrap();
    dropped_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the cancelled future is dropped");
    assert!(handle.result().unwrap_err().is_cancelled());
    // The task is counted once it has ended, which a shutdown waits for.
    executor.shutdown(true, false);
    let stats = executor.stats();
    assert_eq!((stats.failed, stats.busy), (1, 0));
}

/// Sends on its channel when dropped.
struct DropSignal(std::sync::mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Regression (issue 16): a panic while the executor drops an unfinished
/// future (here at its time limit) settled its task as shut down (the panic
/// escaped into tokio, which dropped the task) instead of panicked.
#[test]
fn a_panic_while_dropping_the_future_settles_it_as_panicked() {
    /// Panics when dropped.
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("boom in drop");
        }
    }
    let executor = AsyncExecutor::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let handle = executor.submit(async {
        let _bomb = PanicsOnDrop;
        std::future::pending::<()>().await;
    });
    let err = handle.result().unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert!(err.to_string().contains("boom in drop"), "{err}");
    executor.shutdown(true, false);
    let stats = executor.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.busy), (0, 1, 0));
}

/// Regression (issue 16): a task cancelled while it waited for a
/// concurrency slot stayed queued (its future alive) until it got one.
#[test]
fn a_task_cancelled_while_waiting_for_a_slot_leaves_at_once() {
    let executor = AsyncExecutor::builder()
        .workers(1)
        .concurrency_limit(1)
        .build()
        .unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let blocker = executor.submit(async move { released.await.is_ok() });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !blocker.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the blocker never started"
        );
        std::thread::yield_now();
    }
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let signal = DropSignal(dropped_tx);
    let queued = executor.submit(async move {
        let _signal = signal;
        "never"
    });
    assert!(queued.cancel());
    dropped_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the cancelled task's future is dropped while the slot is still taken");
    assert!(!blocker.is_done(), "the slot was never given up");
    assert!(queued.result().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    assert!(blocker.result().unwrap());
    executor.shutdown(true, false);
    let stats = executor.stats();
    assert_eq!(
        (stats.succeeded, stats.failed, stats.queued, stats.busy),
        (1, 0, 0, 0)
    );
}

/// Completion racing cancellation, many times over: every task settles
/// once, and the counters agree with what the handles say.
#[test]
fn cancels_racing_completions_are_counted_as_the_handles_say() {
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    let executor = AsyncExecutor::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..rounds)
        .map(|i: u64| {
            executor.submit(async move {
                if i.is_multiple_of(3) {
                    tokio::task::yield_now().await;
                }
                std::hint::black_box(i)
            })
        })
        .collect();
    let mut cancelled = 0;
    for (i, handle) in handles.iter().enumerate() {
        if i.is_multiple_of(2) && handle.cancel() {
            cancelled += 1;
        }
    }
    let mut succeeded = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.result() {
            Ok(v) => {
                assert_eq!(v, i as u64);
                succeeded += 1;
            }
            Err(e) => assert!(e.is_cancelled(), "{e}"),
        }
    }
    assert_eq!(succeeded + cancelled, rounds as usize);
    executor.shutdown(true, false);
    let stats = executor.stats();
    assert_eq!(stats.succeeded, succeeded, "{stats:?}");
    assert_eq!((stats.queued, stats.busy), (0, 0), "{stats:?}");
}

/// Each task ends counted once, whether it ran (succeeded or failed) or
/// left without starting (cancelled while waiting for its slot): the
/// in-flight count comes back to zero, and a thread blocked in a waiting
/// shutdown is woken by the last end, whichever kind it is.
#[test]
fn tasks_that_never_start_leave_the_in_flight_count() {
    let executor = Arc::new(
        AsyncExecutor::builder()
            .workers(2)
            .concurrency_limit(1)
            .build()
            .unwrap(),
    );
    let (release, wait_release) = tokio::sync::oneshot::channel::<()>();
    let blocker = executor.submit(async move { wait_release.await.is_ok() });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !blocker.is_running() {
        assert!(std::time::Instant::now() < deadline, "never started");
        std::thread::yield_now();
    }
    let queued: Vec<_> = (0..3).map(|i| executor.submit(async move { i })).collect();
    let last = executor.submit(async { "ran" });
    assert_eq!(executor.in_flight(), 5);
    for handle in &queued {
        assert!(handle.cancel());
    }
    for handle in queued {
        assert!(handle.result().unwrap_err().is_cancelled());
    }
    let (done, shut) = std::sync::mpsc::channel();
    let waiter = {
        let executor = Arc::clone(&executor);
        std::thread::spawn(move || {
            executor.shutdown(true, false);
            done.send(executor.in_flight()).unwrap();
        })
    };
    release.send(()).unwrap();
    let left = shut
        .recv_timeout(Duration::from_secs(30))
        .expect("the waiting shutdown returned");
    assert_eq!(left, 0);
    waiter.join().unwrap();
    assert_eq!(blocker.result(), Ok(true));
    assert_eq!(last.result(), Ok("ran"));
    let stats = executor.stats();
    assert_eq!((stats.succeeded, stats.failed), (2, 0), "{stats:?}");
    assert_eq!((stats.queued, stats.busy), (0, 0), "{stats:?}");
}

/// A task's handle keeps tokio's `JoinHandle` (issue 16 item 4: the task's
/// memory is then freed by the thread that drops the handle). Whoever goes
/// last — a handle dropped before its task ran, one dropped after, one kept
/// past the executor's drop, the task of a dropped handle cancelled by the
/// runtime's stop — every task ends exactly once and every handle settles.
#[test]
fn handles_dropped_early_late_or_after_the_executor_settle_every_task_once() {
    ipc_support::guarded(
        "handles_dropped_early_late_or_after_the_executor_settle_every_task_once",
        Duration::from_secs(120),
        || {
            let executor = AsyncExecutor::builder()
                .workers(2)
                .drop_timeout(Duration::from_millis(50))
                .build()
                .unwrap();
            let (ran_tx, ran_rx) = std::sync::mpsc::channel::<()>();
            let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
            // Dropped at once, before (most of) their tasks run.
            for _ in 0..1000 {
                let ran = ran_tx.clone();
                drop(executor.submit(async move {
                    ran.send(()).unwrap();
                }));
            }
            // Kept, waited, then dropped.
            let kept: Vec<_> = (0..1000u64)
                .map(|i| executor.submit(async move { i }))
                .collect();
            let sum: u64 = kept.into_iter().map(|h| h.result().unwrap()).sum();
            assert_eq!(sum, 999 * 1000 / 2);
            // Parked until the gate opens: some with handles dropped, some kept
            // past the executor, which stops them.
            for _ in 0..100 {
                let mut gate = gate_rx.clone();
                drop(executor.submit(async move {
                    let _ = gate.wait_for(|open| *open).await;
                }));
            }
            let parked: Vec<_> = (0..100)
                .map(|_| {
                    let mut gate = gate_rx.clone();
                    executor.submit(async move {
                        let _ = gate.wait_for(|open| *open).await;
                    })
                })
                .collect();
            for _ in 0..1000 {
                ran_rx.recv_timeout(Duration::from_secs(60)).unwrap();
            }
            drop(executor);
            drop(gate_tx);
            for handle in parked {
                assert_eq!(
                    handle.result().unwrap_err().kind(),
                    &ErrorKind::ShutDown,
                    "a task stopped by the executor's drop fails as shut down"
                );
            }
        },
    );
}
