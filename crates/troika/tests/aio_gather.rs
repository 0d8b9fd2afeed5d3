//! `aio::gather`, `gather_with`, `try_gather`, `as_completed` and `timeout`.

mod ipc_support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ipc_support::runtime as rt;
use troika::TaskError;
use troika::aio::{GatherOptions, as_completed, gather, gather_with, try_gather};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[test]
fn gather_keeps_input_order_whatever_the_finish_order() {
    let outcomes = rt().block_on(async {
        // The first future waits for the last one, so they finish in reverse.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let futs: Vec<BoxFut<u32>> = vec![
            Box::pin(async move {
                rx.await.unwrap();
                1
            }),
            Box::pin(async { 2 }),
            Box::pin(async move {
                tx.send(()).unwrap();
                3
            }),
        ];
        gather(futs).await
    });
    assert_eq!(outcomes, [Ok(1), Ok(2), Ok(3)]);
}

#[test]
fn a_panic_fails_only_its_own_entry_with_its_message() {
    let outcomes = rt().block_on(gather((0..4).map(|i| async move {
        if i == 2 {
            panic!("task {i} burnt the rice");
        }
        i
    })));
    assert_eq!(outcomes[0], Ok(0));
    assert_eq!(outcomes[1], Ok(1));
    assert_eq!(
        outcomes[2].as_ref().unwrap_err().panic_message(),
        Some("task 2 burnt the rice")
    );
    assert_eq!(outcomes[3], Ok(3));
}

#[test]
fn cancel_on_error_aborts_the_siblings() {
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let guard = SetOnDrop(Arc::clone(&dropped));
    let futs: Vec<BoxFut<u32>> = vec![
        Box::pin(async { 7 }),
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<u32>().await
        }),
        Box::pin(async { panic!("boom") }),
    ];
    let outcomes = rt().block_on(gather_with(
        futs,
        GatherOptions::new().cancel_on_error(true),
    ));
    assert!(outcomes[0] == Ok(7) || outcomes[0].as_ref().unwrap_err().is_cancelled());
    assert!(outcomes[1].as_ref().unwrap_err().is_cancelled());
    assert!(outcomes[2].as_ref().unwrap_err().is_panic());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the pending sibling was dropped"
    );
}

#[test]
fn without_cancel_on_error_the_others_finish() {
    let futs: Vec<BoxFut<u32>> = vec![
        Box::pin(async { panic!("boom") }),
        Box::pin(async {
            tokio::task::yield_now().await;
            5
        }),
    ];
    let outcomes = rt().block_on(gather_with(futs, GatherOptions::new()));
    assert!(outcomes[0].as_ref().unwrap_err().is_panic());
    assert_eq!(outcomes[1], Ok(5));
}

#[test]
fn gather_timeout_fails_only_the_slow_ones() {
    let futs: Vec<BoxFut<u32>> = vec![Box::pin(async { 1 }), Box::pin(std::future::pending())];
    let outcomes = rt().block_on(gather_with(
        futs,
        GatherOptions::new().timeout(Duration::from_millis(20)),
    ));
    assert_eq!(outcomes[0], Ok(1));
    let err = outcomes[1].as_ref().unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[derive(Debug, PartialEq)]
enum PageError {
    Missing(u32),
    Task(String),
}

impl From<TaskError> for PageError {
    fn from(e: TaskError) -> Self {
        PageError::Task(e.to_string())
    }
}

async fn fail_with_panic() -> Result<u32, PageError> {
    panic!("oops")
}

#[test]
fn try_gather_returns_values_or_the_first_error() {
    let rt = rt();
    let ok = rt.block_on(try_gather(
        (0..10u32).map(|i| async move { Ok::<_, PageError>(i * i) }),
    ));
    assert_eq!(ok, Ok((0..10).map(|i| i * i).collect::<Vec<_>>()));

    let never_done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&never_done);
    let futs: Vec<BoxFut<Result<u32, PageError>>> = vec![
        Box::pin(async move {
            std::future::pending::<()>().await;
            flag.store(true, Ordering::SeqCst);
            Ok(1)
        }),
        Box::pin(async { Err(PageError::Missing(2)) }),
    ];
    assert_eq!(rt.block_on(try_gather(futs)), Err(PageError::Missing(2)));
    assert!(!never_done.load(Ordering::SeqCst));

    let panicked = rt.block_on(try_gather([fail_with_panic()]));
    assert!(matches!(panicked, Err(PageError::Task(msg)) if msg.contains("oops")));
}

#[test]
fn outside_a_runtime_every_entry_says_so() {
    let outcomes = futures::executor::block_on(gather((1..=2).map(|i| async move { i })));
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        let err = outcome.unwrap_err();
        assert!(err.to_string().contains("no tokio runtime"), "{err}");
    }
}

#[test]
fn as_completed_yields_in_completion_order_with_positions() {
    let order = rt().block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let futs: Vec<BoxFut<&str>> = vec![
            Box::pin(async move {
                rx.await.unwrap();
                "second"
            }),
            Box::pin(async move { "first" }),
        ];
        let mut stream = as_completed(futs);
        assert_eq!(stream.remaining(), 2);
        let first = stream.next().await.unwrap();
        tx.send(()).unwrap();
        let second = stream.next().await.unwrap();
        assert!(stream.next().await.is_none());
        vec![(first.0, first.1.unwrap()), (second.0, second.1.unwrap())]
    });
    assert_eq!(order, [(1, "first"), (0, "second")]);
}

#[test]
fn as_completed_awaits_pool_handles() {
    let pool = troika::ThreadPool::new(2).unwrap();
    let handles: Vec<_> = (0..8u64).map(|i| pool.submit(move || i * 3)).collect();
    let mut seen: Vec<(usize, u64)> = rt().block_on(
        as_completed(handles)
            .map(|(position, outcome)| (position, outcome.unwrap().unwrap()))
            .collect(),
    );
    seen.sort();
    assert_eq!(
        seen,
        (0..8).map(|i| (i as usize, i * 3)).collect::<Vec<_>>()
    );
}

#[test]
fn timeout_maps_to_timed_out_with_the_limit() {
    let rt = rt();
    let limit = Duration::from_millis(10);
    let err = rt
        .block_on(troika::aio::timeout(limit, std::future::pending::<()>()))
        .unwrap_err();
    assert_eq!(err.kind(), &troika::ErrorKind::TimedOut(limit));
    assert_eq!(rt.block_on(troika::aio::timeout(limit, async { 3 })), Ok(3));
}
