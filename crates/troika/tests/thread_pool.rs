//! The thread pool through the futures API: submit, results, errors, map,
//! the Pool-style calls, shutdown and drop.

mod ipc_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use troika::{ErrorKind, Executor, Handle, SubmitErrorReason, ThreadPool};

/// A failure path only: tests wait on events, and this bounds a broken wait.
const GENEROUS: Duration = Duration::from_secs(30);

/// Occupy a pool's worker with a task that returns once `release` sends
/// (true) or after GENEROUS (false); returns when the task has started.
fn occupy(pool: &ThreadPool) -> (Handle<bool>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (release, gate) = mpsc::channel::<()>();
    let busy = pool.submit(move || {
        started_tx.send(()).unwrap();
        gate.recv_timeout(GENEROUS).is_ok()
    });
    started.recv_timeout(GENEROUS).unwrap();
    (busy, release)
}

#[test]
fn submit_returns_the_value() {
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(pool.submit(|| 40 + 2).result().unwrap(), 42);
    assert_eq!(pool.workers(), 2);
}

#[test]
fn zero_workers_is_a_config_error() {
    let err = ThreadPool::new(0).unwrap_err();
    assert!(err.to_string().contains("at least one worker"), "{err}");
    let err = ThreadPool::builder().queue_capacity(0).build().unwrap_err();
    assert!(err.to_string().contains("queue capacity"), "{err}");
    let err = ThreadPool::builder()
        .task_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn default_worker_count_is_the_available_parallelism() {
    let pool = ThreadPool::builder().build().unwrap();
    let expected = std::thread::available_parallelism().unwrap().get();
    assert_eq!(pool.workers(), expected);
}

#[test]
fn a_panic_fails_only_its_task_and_keeps_the_worker() {
    let pool = ThreadPool::new(1).unwrap();
    let err = pool
        .submit(|| -> u8 { panic!("bad input {}", 7) })
        .result()
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("bad input 7"));
    assert!(err.to_string().contains("bad input 7"));
    // The single worker survived the panic.
    assert_eq!(pool.submit(|| 1).result().unwrap(), 1);
}

#[test]
fn result_timeout_hands_the_handle_back() {
    let pool = ThreadPool::new(1).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let handle = pool.submit(move || gate.recv_timeout(GENEROUS).is_ok());
    let handle = handle.result_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(!handle.is_done());
    assert!(!handle.wait_timeout(Duration::from_millis(1)));
    release.send(()).unwrap();
    assert!(handle.result_timeout(GENEROUS).unwrap().unwrap());
}

#[test]
fn cancel_removes_a_pending_task_but_not_a_running_or_finished_one() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = occupy(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = Arc::clone(&ran);
    let pending = pool.submit(move || ran2.fetch_add(1, Ordering::SeqCst));
    assert!(pending.cancel(), "a pending task is cancelled");
    assert!(pending.is_done());
    assert!(!running.cancel(), "a running thread cannot be cancelled");
    release.send(()).unwrap();
    assert!(running.result().unwrap());
    assert!(pending.result().unwrap_err().is_cancelled());
    // The cancelled task never ran.
    pool.join();
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    let pool = ThreadPool::new(1).unwrap();
    let done = pool.submit(|| 5);
    done.wait();
    assert!(!done.cancel(), "cancel of a finished task is a no-op");
    assert_eq!(done.result().unwrap(), 5);
}

#[test]
fn a_tasks_captures_are_dropped_once_it_ran_or_was_cancelled_while_handles_live() {
    // A task's closure shares one allocation with its handle: the closure's
    // captures must still go as soon as the task ran, was cancelled in the
    // queue, or was cancelled by shutdown, not when the handle is dropped.
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = occupy(&pool);
    let captured = Arc::new(());
    let ran = {
        let c = Arc::clone(&captured);
        pool.submit(move || Arc::strong_count(&c))
    };
    let cancelled = {
        let c = Arc::clone(&captured);
        pool.submit(move || drop(c))
    };
    assert!(cancelled.cancel());
    release.send(()).unwrap();
    assert!(blocker.result().unwrap());
    assert_eq!(ran.result().unwrap(), 3, "the task saw both captures");
    pool.submit(|| ()).result().unwrap(); // the cancelled job has left the queue
    assert_eq!(Arc::strong_count(&captured), 1);
    assert!(cancelled.is_done());

    let (blocker, release) = occupy(&pool);
    let queued = {
        let c = Arc::clone(&captured);
        pool.submit(move || drop(c))
    };
    pool.shutdown(false, true);
    assert_eq!(
        Arc::strong_count(&captured),
        1,
        "shutdown dropped the queued task"
    );
    assert!(queued.result().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    assert!(blocker.result().unwrap());
}

#[test]
fn done_callbacks_run_before_and_after_completion_and_a_panicking_one_is_ignored() {
    let pool = ThreadPool::new(1).unwrap();
    let (tx, rx) = mpsc::channel();
    let (release, gate) = mpsc::channel::<()>();
    let handle = pool.submit(move || {
        gate.recv_timeout(GENEROUS).unwrap();
        7
    });
    let tx1 = tx.clone();
    handle.add_done_callback(|_| panic!("callback bug"));
    handle.add_done_callback(move |outcome| tx1.send(*outcome.unwrap()).unwrap());
    release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(GENEROUS).unwrap(), 7);
    handle.wait();
    // Added after completion: runs at once on this thread.
    handle.add_done_callback(move |outcome| tx.send(outcome.unwrap() + 1).unwrap());
    assert_eq!(rx.try_recv().unwrap(), 8);
    assert_eq!(handle.result().unwrap(), 7);
    // The worker survived the panicking callback.
    assert_eq!(pool.submit(|| 1).result().unwrap(), 1);
}

#[test]
fn submit_after_shutdown_fails_with_shut_down() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    let err = pool.submit(|| 1).result().unwrap_err();
    assert!(err.is_shut_down(), "{err}");
    let refused = pool.try_submit(|| 2).unwrap_err();
    assert_eq!(refused.reason, SubmitErrorReason::ShutDown);
    assert_eq!((refused.task)(), 2, "the task is handed back");
    pool.shutdown(true, false); // a second shutdown is a no-op
}

#[test]
fn shutdown_without_cancel_runs_queued_tasks_and_with_cancel_cancels_them() {
    for cancel_pending in [false, true] {
        let pool = ThreadPool::new(1).unwrap();
        let (first, release) = occupy(&pool);
        let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i)).collect();
        pool.shutdown(false, cancel_pending);
        release.send(()).unwrap();
        assert!(first.result().unwrap());
        for (i, handle) in queued.into_iter().enumerate() {
            match handle.result() {
                Ok(v) => {
                    assert!(!cancel_pending);
                    assert_eq!(v, i);
                }
                Err(e) => {
                    assert!(cancel_pending);
                    assert!(e.is_cancelled(), "{e}");
                }
            }
        }
    }
}

#[test]
fn dropping_the_pool_runs_queued_tasks_and_joins() {
    let counter = Arc::new(AtomicUsize::new(0));
    {
        let pool = ThreadPool::new(2).unwrap();
        for _ in 0..100 {
            let counter = Arc::clone(&counter);
            pool.submit(move || counter.fetch_add(1, Ordering::SeqCst));
        }
    }
    assert_eq!(counter.load(Ordering::SeqCst), 100);
}

#[test]
fn bounded_queue_refuses_with_full() {
    let pool = ThreadPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (busy, release) = occupy(&pool);
    let queued = pool.try_submit(|| 1).unwrap();
    let refused = pool.try_submit(|| 2).unwrap_err();
    assert_eq!(refused.reason, SubmitErrorReason::Full);
    assert_eq!(pool.stats().queued, 1);
    release.send(()).unwrap();
    assert!(busy.result().unwrap());
    assert_eq!(queued.result().unwrap(), 1);
}

#[test]
fn timeout_fails_the_handle_at_once_and_the_pool_keeps_its_size() {
    let pool = ThreadPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let stuck = pool.submit(move || gate.recv_timeout(GENEROUS).is_ok());
    let err = stuck.result().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.kind(), &ErrorKind::TimedOut(Duration::from_millis(20)));
    // The stuck thread was retired and replaced: the pool still runs tasks.
    assert_eq!(pool.submit(|| 3).result().unwrap(), 3);
    assert_eq!(pool.stats().restarts, 1);
    release.send(()).unwrap();
}

#[test]
fn a_cancel_token_stops_a_running_task_cooperatively() {
    let pool = ThreadPool::new(1).unwrap();
    let (started_tx, started) = mpsc::channel();
    let handle = pool.submit_with_token(move |token| {
        started_tx.send(()).unwrap();
        while !token.is_cancelled() {
            std::thread::yield_now();
        }
        "stopped"
    });
    started.recv_timeout(GENEROUS).unwrap();
    assert!(!handle.cancel());
    assert_eq!(handle.result().unwrap(), "stopped");

    let token = troika::CancelToken::new();
    assert!(!token.is_cancelled());
    token.clone().cancel();
    assert!(token.is_cancelled());
}

#[test]
fn initializer_runs_on_every_worker() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let pool = ThreadPool::builder()
        .workers(3)
        .name("init-test")
        .initializer(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let name = pool
        .submit(|| std::thread::current().name().map(str::to_owned))
        .result()
        .unwrap()
        .unwrap();
    assert!(name.starts_with("init-test-"), "{name}");
    pool.join();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn a_panicking_initializer_breaks_the_pool() {
    let pool = ThreadPool::builder()
        .workers(1)
        .initializer(|_| panic!("init failed"))
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = pool.submit(|| 9).result().unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InitializerFailed(m) if m.contains("init failed")),
            "{err:?}"
        );
        assert!(err.to_string().contains("initializer"), "{err}");
    }
}

#[test]
fn stats_count_completed_tasks() {
    let pool = ThreadPool::new(2).unwrap();
    let handles: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
    for h in handles {
        h.result().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.succeeded, 10);
    assert_eq!(stats.workers, 2);
    assert_eq!(stats.busy, 0);
}

#[test]
fn the_executor_trait_is_usable_generically() {
    fn total<E: Executor<Box<dyn FnOnce() -> u64 + Send>>>(executor: &E) -> u64 {
        let tasks = (1..=10u64).map(|i| Box::new(move || i * i) as Box<dyn FnOnce() -> u64 + Send>);
        executor.map_tasks(tasks, 4).map(Result::unwrap).sum()
    }
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(total(&pool), 385);
}

#[test]
fn a_handle_can_be_awaited() {
    let pool = ThreadPool::new(1).unwrap();
    let handle = pool.submit(|| 11);
    assert_eq!(block_on(handle).unwrap(), 11);
}

/// A minimal executor for one future: park until woken.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park_timeout(GENEROUS);
    }
}

#[test]
fn waiting_on_own_pool_from_a_single_worker_does_not_deadlock() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let inner = Arc::clone(&pool);
    let outer = pool.submit(move || {
        let children: Vec<_> = (0..4).map(|i| inner.submit(move || i * 10)).collect();
        children
            .into_iter()
            .map(|h| h.result().unwrap())
            .sum::<i32>()
    });
    assert_eq!(outer.result().unwrap(), 60);
}

#[test]
fn idle_workers_sleep_in_the_kernel() {
    let pool = ThreadPool::builder()
        .workers(2)
        .name("idle-check")
        .build()
        .unwrap();
    pool.submit(|| ()).result().unwrap();
    // Wait for the event "every worker is parked" by reading thread states.
    let deadline = std::time::Instant::now() + GENEROUS;
    loop {
        let states = worker_states("idle-check");
        if states.len() == 2 && states.iter().all(|&s| s == 'S') {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers never parked: {states:?}"
        );
        std::thread::yield_now();
    }
}

/// The scheduler state letter of every thread of this process whose name starts with `prefix`.
fn worker_states(prefix: &str) -> Vec<char> {
    let mut states = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        if let Some(state) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next())
        {
            states.push(state);
        }
    }
    states
}

#[test]
fn dropping_a_pool_with_a_task_that_never_finishes_returns() {
    ipc_support::guarded(
        "dropping_a_pool_with_a_task_that_never_finishes_returns",
        Duration::from_secs(60),
        || {
            // The default drop timeout (10 s) bounds the drop.
            let pool = ThreadPool::new(1).unwrap();
            let (started_tx, started) = mpsc::channel();
            let (_never_tx, never) = mpsc::channel::<()>();
            let stuck = pool.submit(move || {
                started_tx.send(()).unwrap();
                never.recv().is_ok()
            });
            started.recv_timeout(GENEROUS).unwrap();
            drop(pool);
            assert!(stuck.is_running());
        },
    );
}

#[test]
fn a_panic_unwinds_past_a_thread_pool_with_a_stuck_task() {
    ipc_support::guarded(
        "a_panic_unwinds_past_a_thread_pool_with_a_stuck_task",
        Duration::from_secs(60),
        || {
            let (never_tx, never) = mpsc::channel::<()>();
            let unwound = std::panic::catch_unwind(move || {
                let pool = ThreadPool::new(1).unwrap();
                let _stuck = pool.submit(move || never.recv().is_ok());
                panic!("the caller failed");
            });
            assert!(unwound.is_err());
            drop(never_tx);
        },
    );
}

#[test]
fn shutdown_timeout_detaches_stuck_workers_and_queued_tasks_still_run() {
    ipc_support::guarded(
        "shutdown_timeout_detaches_stuck_workers_and_queued_tasks_still_run",
        Duration::from_secs(60),
        || {
            let pool = ThreadPool::new(1).unwrap();
            let (release_tx, release) = mpsc::channel::<()>();
            let stuck = pool.submit(move || release.recv().is_ok());
            let queued = pool.submit(|| 42);
            assert!(!pool.shutdown_timeout(Duration::from_millis(50)));
            assert!(pool.submit(|| 1).result().unwrap_err().is_shut_down());
            // The detached worker goes on with its task and the queue.
            release_tx.send(()).unwrap();
            assert!(stuck.result_timeout(GENEROUS).unwrap().unwrap());
            assert_eq!(queued.result_timeout(GENEROUS).unwrap().unwrap(), 42);

            // Quick tasks: every worker is joined in time.
            let pool = ThreadPool::new(2).unwrap();
            let quick = pool.submit(|| 7);
            assert!(pool.shutdown_timeout(GENEROUS));
            assert_eq!(quick.result().unwrap(), 7);

            // The drop timeout is configurable.
            let pool = ThreadPool::builder()
                .workers(1)
                .drop_timeout(Duration::from_millis(20))
                .build()
                .unwrap();
            let (_never_tx, never) = mpsc::channel::<()>();
            let stuck = pool.submit(move || never.recv().is_ok());
            drop(pool);
            assert!(!stuck.is_done());
        },
    );
}

/// A drop that gave up on a stuck task leaves its workers running the queue:
/// their task timeouts must still fire (the watchdog stays while they run),
/// or a handle of the stuck task would wait for ever.
#[test]
fn task_timeouts_still_fire_after_a_drop_that_timed_out() {
    ipc_support::guarded(
        "task_timeouts_still_fire_after_a_drop_that_timed_out",
        Duration::from_secs(60),
        || {
            let pool = ThreadPool::builder()
                .workers(1)
                .task_timeout(Duration::from_millis(500))
                .drop_timeout(Duration::from_millis(10))
                .build()
                .unwrap();
            let (started_tx, started) = mpsc::channel();
            let (_never_tx, never) = mpsc::channel::<()>();
            let stuck = pool.submit(move || {
                started_tx.send(()).unwrap();
                never.recv().is_ok()
            });
            let queued = pool.submit(|| 7);
            started.recv_timeout(GENEROUS).unwrap();
            drop(pool);
            let err = stuck.result().unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::TimedOut(_)), "{err}");
            assert_eq!(queued.result().unwrap(), 7);
        },
    );
}

/// `terminate` sets the cancel token of the running `submit_with_token`
/// tasks, cancels the queued ones and does not wait; a task without a token
/// runs to its end.
#[test]
fn terminate_sets_the_tokens_of_running_tasks() {
    let pool = ThreadPool::new(2).unwrap();
    let (started_tx, started) = mpsc::channel();
    let watcher = pool.submit_with_token(move |token| {
        started_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + GENEROUS;
        while !token.is_cancelled() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        token.is_cancelled()
    });
    started.recv_timeout(GENEROUS).unwrap();
    let (plain, release) = occupy(&pool);
    let queued = pool.submit(|| 3);
    pool.terminate();
    assert!(watcher.result().unwrap(), "the running task saw its token");
    assert!(queued.result().unwrap_err().is_cancelled());
    assert!(!plain.is_done(), "a task without a token is not stopped");
    release.send(()).unwrap();
    assert!(plain.result().unwrap());
    pool.join();
    assert!(pool.submit(|| 4).result().unwrap_err().is_shut_down());
    let stats = pool.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.busy), (2, 0, 0));
}

/// A task's token is its handle's even when the task starts at once: a
/// cancel of the handle reaches the running task.
#[test]
fn submit_with_token_hands_the_task_its_handles_token() {
    let pool = ThreadPool::new(1).unwrap();
    for _ in 0..50 {
        let (started_tx, started) = mpsc::channel();
        let handle = pool.submit_with_token(move |token| {
            started_tx.send(()).unwrap();
            let deadline = std::time::Instant::now() + GENEROUS;
            while !token.is_cancelled() && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            token.is_cancelled()
        });
        started.recv_timeout(GENEROUS).unwrap();
        assert!(!handle.cancel(), "a running thread is not stopped");
        assert!(handle.result().unwrap());
    }
}

/// The stats count a task that failed (panicked or timed out) apart from
/// one that produced a value, and a worker replaced after a timeout.
#[test]
fn stats_count_failures_and_restarts() {
    let pool = ThreadPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    pool.submit(|| 1).result().unwrap();
    pool.submit(|| -> u32 { panic!("no") })
        .result()
        .unwrap_err();
    let (release, gate) = mpsc::channel::<()>();
    let slow = pool.submit(move || gate.recv_timeout(GENEROUS).is_ok());
    assert!(slow.result().unwrap_err().is_timeout());
    release.send(()).unwrap();
    // The watchdog counts the replacement just after it failed the handle.
    let deadline = std::time::Instant::now() + GENEROUS;
    while pool.stats().restarts == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let stats = pool.stats();
    assert_eq!(stats.succeeded, 1);
    assert!(stats.failed >= 1, "{stats:?}");
    assert_eq!(stats.restarts, 1);
}
