//! Awaiting thread-pool tasks from async code without blocking the runtime.

use std::sync::mpsc;
use std::time::Duration;

use troika::ThreadPool;
use troika::aio::{run_in_executor, spawn_blocking_on};

#[test]
fn awaiting_a_pool_task_leaves_the_runtime_free() {
    // A one-thread runtime: if awaiting the pool task blocked it, the task
    // that unblocks the pool task could never run, and this would hang.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = ThreadPool::new(1).unwrap();
    let (tx, rx) = mpsc::channel::<u32>();
    let out = rt.block_on(async {
        let waiting = spawn_blocking_on(&pool, move || {
            rx.recv_timeout(Duration::from_secs(30)).map(|v| v + 1)
        });
        let feeder = tokio::spawn(async move { tx.send(41).unwrap() });
        let value = waiting.await;
        feeder.await.unwrap();
        value
    });
    assert_eq!(out.unwrap(), Ok(42));
}

#[test]
fn run_in_executor_reports_panics_as_values() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = ThreadPool::new(1).unwrap();
    let err = rt
        .block_on(run_in_executor(&pool, || -> u32 { panic!("in the pool") }))
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("in the pool"));
}

#[test]
fn dropping_the_future_cancels_a_queued_task() {
    let pool = ThreadPool::new(1).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    // Occupy the only worker so the next task stays queued.
    let busy = pool.submit(move || {
        started_tx.send(()).unwrap();
        release_rx.recv_timeout(Duration::from_secs(30)).ok();
    });
    started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&ran);
    let queued = run_in_executor(&pool, move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst)
    });
    let handle_view = queued.handle().map(|h| format!("{h:?}"));
    assert_eq!(
        handle_view.as_deref(),
        Some("Handle { phase: \"pending\" }")
    );
    let detached_probe = run_in_executor(&pool, || "kept").detach();
    drop(queued);
    release_tx.send(()).unwrap();
    busy.result().unwrap();
    assert_eq!(detached_probe.result(), Ok("kept"));
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "the dropped task never ran"
    );
}

#[test]
fn a_handle_is_awaited_directly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = ThreadPool::new(2).unwrap();
    let handles: Vec<_> = (0..10u64).map(|i| pool.submit(move || i * i)).collect();
    let total = rt.block_on(async {
        let mut total = 0;
        for handle in handles {
            total += handle.await.unwrap();
        }
        total
    });
    assert_eq!(total, (0..10).map(|i| i * i).sum());
}
