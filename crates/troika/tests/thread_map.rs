//! map, as_completed, wait, the Pool-style calls, scopes and a stress test.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use troika::{ThreadPool, WaitMode, as_completed, wait};

const GENEROUS: Duration = Duration::from_secs(30);

#[test]
fn map_keeps_input_order() {
    let pool = ThreadPool::new(3).unwrap();
    // Earlier items take longer, so completion order differs from input order.
    let out: Vec<u64> = pool
        .map(
            |x: u64| {
                std::thread::sleep(Duration::from_micros(200 * (20 - x)));
                x * 2
            },
            0..20,
        )
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, (0..20).map(|x| x * 2).collect::<Vec<_>>());
}

#[test]
fn map_is_lazy_and_bounds_the_tasks_in_flight() {
    let pool = ThreadPool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    // An endless input: only a bounded window may be drawn from it.
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let first: Vec<u64> = pool
        .map(|x| x + 1, endless)
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);
    let window = troika::default_window(2);
    let drawn = pulled.load(Ordering::SeqCst);
    assert!(
        drawn <= 5 + window,
        "drew {drawn} items for 5 results (window {window})"
    );
}

#[test]
fn map_reports_each_failure_in_place() {
    let pool = ThreadPool::new(2).unwrap();
    let out: Vec<_> = pool
        .map(
            |x: i32| {
                assert!(x != 2, "two is bad");
                x
            },
            0..4,
        )
        .collect();
    assert_eq!(out.len(), 4);
    assert!(out[2].as_ref().unwrap_err().is_panic());
    assert_eq!(*out[3].as_ref().unwrap(), 3);
}

#[test]
fn map_unordered_yields_every_item_once_with_its_position() {
    let pool = ThreadPool::new(2).unwrap();
    let mut seen: Vec<(usize, u32)> = pool
        .map_unordered(|x: u32| x * 3, 0..100)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..100).map(|x| (x as usize, x * 3)).collect::<Vec<_>>()
    );
}

#[test]
fn as_completed_yields_in_completion_order() {
    let pool = ThreadPool::new(2).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let slow = pool.submit(move || {
        gate.recv_timeout(GENEROUS).unwrap();
        "slow"
    });
    let fast = pool.submit(|| "fast");
    let mut order = as_completed(vec![slow, fast]);
    let (position, first) = order.next().unwrap();
    assert_eq!((position, first.result().unwrap()), (1, "fast"));
    assert!(order.next_timeout(Duration::from_millis(1)).is_none());
    release.send(()).unwrap();
    let (position, second) = order.next().unwrap();
    assert_eq!((position, second.result().unwrap()), (0, "slow"));
    assert!(order.next().is_none());
}

#[test]
fn wait_all_first_completed_and_first_error() {
    let pool = ThreadPool::new(2).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let handles = vec![
        pool.submit(move || {
            gate.recv_timeout(GENEROUS).unwrap();
            Ok(0)
        }),
        pool.submit(|| Ok(1)),
    ];
    let first = wait(&handles, WaitMode::FirstCompleted, Some(GENEROUS));
    assert_eq!(first.done, [1]);
    assert_eq!(first.pending, [0]);
    // A timeout returns with what is done so far.
    let partial = wait(&handles, WaitMode::All, Some(Duration::from_millis(5)));
    assert_eq!(partial.pending, [0]);
    release.send(()).unwrap();
    let all = wait(&handles, WaitMode::All, None);
    assert_eq!(all.done, [0, 1]);
    assert!(all.pending.is_empty());
    let _: Vec<Result<i32, ()>> = handles.into_iter().map(|h| h.result().unwrap()).collect();

    let (release, gate) = mpsc::channel::<()>();
    let handles = vec![
        pool.submit(move || gate.recv_timeout(GENEROUS).is_ok()),
        pool.submit(|| -> bool { panic!("fails first") }),
    ];
    let outcome = wait(&handles, WaitMode::FirstError, Some(GENEROUS));
    assert_eq!(outcome.done, [1]);
    release.send(()).unwrap();
    assert!(
        wait(&[] as &[troika::Handle<()>], WaitMode::FirstCompleted, None)
            .done
            .is_empty()
    );
}

#[test]
fn pool_style_apply_starmap_and_imap() {
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(pool.apply(|| 5).unwrap(), 5);
    assert_eq!(pool.apply_async(|| 6).result().unwrap(), 6);
    let products: Vec<i64> = pool
        .starmap(|a: i64, b: i64| a * b, vec![(2, 3), (4, 5)])
        .map(Result::unwrap)
        .collect();
    assert_eq!(products, [6, 20]);
    let triples: Vec<u32> = pool
        .starmap(|a: u32, b: u32, c: u32| a + b + c, [(1, 2, 3)])
        .map(Result::unwrap)
        .collect();
    assert_eq!(triples, [6]);

    for chunksize in [1, 7, 100, 1000] {
        let out: Vec<u32> = pool
            .imap(|x: u32| x + 1, 0..250, chunksize)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(out, (1..=250).collect::<Vec<_>>(), "chunksize {chunksize}");
        let mut unordered: Vec<(usize, u32)> = pool
            .imap_unordered(|x: u32| x + 1, 0..250, chunksize)
            .unwrap()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        unordered.sort_unstable();
        assert_eq!(
            unordered,
            (0..250).map(|x| (x as usize, x + 1)).collect::<Vec<_>>()
        );
    }
    // One panicking item fails alone inside its chunk.
    let out: Vec<_> = pool
        .imap(
            |x: u32| {
                assert!(x != 5, "five");
                x
            },
            0..10,
            4,
        )
        .unwrap()
        .collect();
    assert!(out[5].as_ref().unwrap_err().is_panic());
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 9);
}

#[test]
fn zero_chunksize_is_an_error() {
    let pool = ThreadPool::new(1).unwrap();
    let err = pool.imap(|x: u8| x, [1], 0).err().unwrap();
    assert!(err.to_string().contains("chunk size"), "{err}");
    assert!(pool.imap_unordered(|x: u8| x, [1], 0).is_err());
}

#[test]
fn imap_after_shutdown_yields_one_error_per_item() {
    let pool = ThreadPool::new(1).unwrap();
    pool.close();
    let out: Vec<_> = pool.imap(|x: u8| x, 0..10, 3).unwrap().collect();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|r| r.as_ref().unwrap_err().is_shut_down()));
    let out: Vec<_> = pool.imap_unordered(|x: u8| x, 0..10, 3).unwrap().collect();
    let positions: HashSet<usize> = out.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, (0..10).collect());
}

#[test]
fn close_join_and_terminate() {
    let pool = ThreadPool::new(2).unwrap();
    let handles: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
    pool.close();
    assert!(pool.submit(|| 0).result().unwrap_err().is_shut_down());
    pool.join();
    let sum: i32 = handles.into_iter().map(|h| h.result().unwrap()).sum();
    assert_eq!(sum, 45);

    let pool = ThreadPool::new(1).unwrap();
    let (started_tx, started) = mpsc::channel();
    let (release, gate) = mpsc::channel::<()>();
    let running = pool.submit(move || {
        started_tx.send(()).unwrap();
        gate.recv_timeout(GENEROUS).is_ok()
    });
    started.recv_timeout(GENEROUS).unwrap();
    let queued = pool.submit(|| 1);
    pool.terminate();
    assert!(queued.result().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    assert!(running.result().unwrap());
    pool.join();
}

#[test]
fn scope_tasks_borrow_the_stack_and_are_joined() {
    let pool = ThreadPool::new(2).unwrap();
    let mut numbers = vec![1u64, 2, 3, 4];
    let total: u64 = pool.scope(|s| {
        let handles: Vec<_> = numbers.iter().map(|n| s.submit(move || n * 10)).collect();
        handles.into_iter().map(|h| h.result().unwrap()).sum()
    });
    assert_eq!(total, 100);
    // Tasks that mutate through borrowed references are done when scope returns.
    let counter = AtomicUsize::new(0);
    pool.scope(|s| {
        for n in numbers.iter_mut() {
            let counter = &counter;
            s.submit(move || {
                *n += 1;
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 4);
    assert_eq!(numbers, [2, 3, 4, 5]);
}

#[test]
fn a_panicking_scope_still_waits_for_its_tasks() {
    let pool = ThreadPool::new(1).unwrap();
    let finished = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            s.submit(|| {
                std::thread::sleep(Duration::from_millis(5));
                finished.fetch_add(1, Ordering::SeqCst);
            });
            panic!("scope body fails");
        })
    }));
    assert!(result.is_err());
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

#[test]
fn a_scope_inside_a_task_of_a_single_worker_pool_does_not_deadlock() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let inner = Arc::clone(&pool);
    let outer = pool.submit(move || {
        let data = [1, 2, 3];
        inner.scope(|s| {
            let hs: Vec<_> = data.iter().map(|x| s.submit(move || x * 2)).collect();
            hs.into_iter().map(|h| h.result().unwrap()).sum::<i32>()
        })
    });
    assert_eq!(outer.result().unwrap(), 12);
}

/// Many threads submit, map and cancel at once; every handle resolves exactly once.
#[test]
fn stress_concurrent_submit_map_and_cancel() {
    let rounds = if cfg!(debug_assertions) { 300 } else { 3000 };
    let pool = Arc::new(ThreadPool::new(3).unwrap());
    let callbacks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = Arc::clone(&pool);
            let callbacks = Arc::clone(&callbacks);
            std::thread::spawn(move || {
                let mut resolved = 0usize;
                let mut handles = Vec::new();
                for i in 0..rounds {
                    let h = pool.submit(move || i * t);
                    let callbacks = Arc::clone(&callbacks);
                    h.add_done_callback(move |_| {
                        callbacks.fetch_add(1, Ordering::SeqCst);
                    });
                    if i % 3 == 0 {
                        h.cancel();
                    }
                    handles.push(h);
                    if i % 50 == 0 {
                        let mapped: Vec<_> = pool.map(|x: usize| x + 1, 0..20).collect();
                        assert!(
                            mapped
                                .iter()
                                .enumerate()
                                .all(|(k, r)| *r.as_ref().unwrap() == k + 1)
                        );
                    }
                }
                for (i, h) in handles.into_iter().enumerate() {
                    match h.result() {
                        Ok(v) => assert_eq!(v, i * t),
                        Err(e) => assert!(e.is_cancelled(), "{e}"),
                    }
                    resolved += 1;
                }
                resolved
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 8 * rounds);
    // Each handle's callback ran exactly once.
    assert_eq!(callbacks.load(Ordering::SeqCst), 8 * rounds);
}
