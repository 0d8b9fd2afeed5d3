//! `aio::map_bounded` and friends: order, the in-flight bound, endless input.

mod ipc_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use ipc_support::runtime as rt;
use troika::aio::{
    map_bounded, map_bounded_unordered, stream_map_bounded, stream_map_bounded_unordered,
};

/// Counts futures running at once and remembers the most.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    async fn visit(self: Arc<Self>, n: u64) -> u64 {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        n
    }
}

#[test]
fn ordered_results_and_at_most_limit_in_flight() {
    let gauge = Arc::new(Gauge::default());
    let g = Arc::clone(&gauge);
    let out: Vec<u64> = rt().block_on(
        map_bounded(0..200u64, 10, move |n| Arc::clone(&g).visit(n))
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(out, (0..200).collect::<Vec<_>>());
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!((1..=10).contains(&peak), "peak {peak}");
}

#[test]
fn unordered_results_carry_positions_and_respect_the_limit() {
    let gauge = Arc::new(Gauge::default());
    let g = Arc::clone(&gauge);
    let mut out: Vec<(usize, u64)> = rt().block_on(
        map_bounded_unordered((0..100u64).rev(), 4, move |n| Arc::clone(&g).visit(n))
            .map(|(i, r)| (i, r.unwrap()))
            .collect(),
    );
    out.sort();
    assert_eq!(
        out,
        (0..100).map(|i| (i, 99 - i as u64)).collect::<Vec<_>>()
    );
    assert!(gauge.peak.load(Ordering::SeqCst) <= 4);
}

#[test]
fn an_endless_iterator_is_pulled_only_as_needed() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let first: Vec<u64> = rt().block_on(
        map_bounded(endless, 5, |n| async move { n * 2 })
            .take(20)
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(first, (0..20).map(|n| n * 2).collect::<Vec<_>>());
    assert!(
        pulled.load(Ordering::SeqCst) <= 25,
        "pulled {}",
        pulled.load(Ordering::SeqCst)
    );
}

#[test]
fn streams_work_as_input_and_panics_stay_per_item() {
    let rt = rt();
    let words = futures::stream::iter(["a", "bb", "boom", "dddd"]);
    let out: Vec<_> = rt.block_on(
        stream_map_bounded(words, 2, |w| async move {
            assert_ne!(w, "boom", "bad word");
            w.len()
        })
        .collect(),
    );
    assert_eq!(out[0], Ok(1));
    assert_eq!(out[1], Ok(2));
    assert!(
        out[2]
            .as_ref()
            .unwrap_err()
            .panic_message()
            .unwrap()
            .contains("bad word")
    );
    assert_eq!(out[3], Ok(4));

    let mut out: Vec<_> = rt.block_on(
        stream_map_bounded_unordered(futures::stream::iter(1..=3u8), 8, |n| async move { n })
            .map(|(i, r)| (i, r.unwrap()))
            .collect(),
    );
    out.sort();
    assert_eq!(out, [(0, 1), (1, 2), (2, 3)]);
}

#[test]
fn dropping_the_stream_aborts_what_is_in_flight() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let rt = rt();
    rt.block_on(async {
        let d = Arc::clone(&dropped);
        let s = Arc::clone(&started);
        let mut stream = Box::pin(map_bounded(0..3, 3, move |_| {
            let flag = Flag(Arc::clone(&d));
            let s = Arc::clone(&s);
            async move {
                let _flag = flag;
                s.add_permits(1);
                std::future::pending::<()>().await
            }
        }));
        // Poll once so the three tasks are spawned, then wait until they run.
        assert!(futures::poll!(stream.next()).is_pending());
        let _all = started.acquire_many(3).await.unwrap();
        drop(stream);
        // Abort is asynchronous: wait for the three drops, a failure path only.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while dropped.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("every in-flight future was dropped");
    });
}
