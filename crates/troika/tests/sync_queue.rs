//! `troika::sync::Queue`: order, bounds, the three ways to wait, task
//! tracking, and many producers with many consumers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use troika::sync::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, Queue, QueueKind, TaskDoneError, Thread,
    TryGetError, TryPutError,
};

/// Generous limit for waits that should succeed; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(10);
/// Short limit for waits that are meant to time out.
const SHORT: Duration = Duration::from_millis(20);

fn drain<T>(q: &Queue<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(item) = q.try_get() {
        out.push(item);
    }
    out
}

#[test]
fn fifo_hands_items_out_in_put_order() {
    let q = Queue::new(0);
    for i in 0..5 {
        q.put(i).unwrap();
    }
    assert_eq!(q.kind(), QueueKind::Fifo);
    assert_eq!(drain(&q), [0, 1, 2, 3, 4]);
}

#[test]
fn lifo_hands_items_out_last_first() {
    let q = Queue::lifo(0);
    for i in 0..5 {
        q.put(i).unwrap();
    }
    assert_eq!(q.kind(), QueueKind::Lifo);
    assert_eq!(drain(&q), [4, 3, 2, 1, 0]);
}

#[test]
fn priority_hands_out_smallest_first_and_ties_in_put_order() {
    let q = Queue::priority(0);
    for job in [(3, 'a'), (1, 'b'), (2, 'c'), (1, 'a'), (0, 'z')] {
        q.put(job).unwrap();
    }
    assert_eq!(q.kind(), QueueKind::Priority);
    assert_eq!(
        drain(&q),
        [(0, 'z'), (1, 'a'), (1, 'b'), (2, 'c'), (3, 'a')]
    );

    // Equal items keep put order: tag each with its put index and compare
    // only the priority.
    #[derive(Debug, PartialEq, Eq)]
    struct Job(u8, usize);
    impl PartialOrd for Job {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Job {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.cmp(&other.0)
        }
    }
    let q = Queue::priority(0);
    for (i, p) in [2u8, 1, 2, 1, 1, 2].into_iter().enumerate() {
        q.put(Job(p, i)).unwrap();
    }
    let order: Vec<usize> = drain(&q).into_iter().map(|j| j.1).collect();
    assert_eq!(order, [1, 3, 4, 0, 2, 5]);
}

#[test]
fn priority_matches_a_sort_on_random_input() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % 1000
    };
    for round in 0..50 {
        let q = Queue::priority(0);
        let mut expected = Vec::new();
        for _ in 0..round * 7 {
            let v = next();
            q.put(v).unwrap();
            expected.push(v);
            // Interleave some gets so the heap is exercised mid-way.
            if v % 5 == 0 {
                expected.sort_unstable();
                let got = q.try_get().unwrap();
                assert_eq!(got, expected.remove(0));
            }
        }
        expected.sort_unstable();
        assert_eq!(drain(&q), expected);
    }
}

#[test]
fn bounded_queue_refuses_nonblocking_put_and_hands_the_item_back() {
    let q = Queue::new(2);
    assert_eq!(q.maxsize(), 2);
    assert!(q.is_empty() && !q.is_full());
    q.try_put("a").unwrap();
    q.try_put("b").unwrap();
    assert!(q.is_full());
    assert_eq!(q.len(), 2);
    let err = q.try_put("c").unwrap_err();
    assert!(err.is_full() && !err.is_closed());
    assert_eq!(err, TryPutError::Full("c"));
    assert_eq!(err.to_string(), "the queue is full");
    assert!(format!("{err:?}").contains("Full"));
    assert_eq!(err.into_inner(), "c");
    assert_eq!(q.len(), 2);
}

#[test]
fn unbounded_queue_is_never_full() {
    let q = Queue::unbounded();
    for i in 0..10_000 {
        q.try_put(i).unwrap();
    }
    assert!(!q.is_full());
    assert_eq!(q.len(), 10_000);
    let d: Queue<u8> = Queue::default();
    assert_eq!((d.maxsize(), d.kind()), (0, QueueKind::Fifo));
}

#[test]
fn nonblocking_get_on_empty_queue_is_empty_error() {
    let q: Queue<u8> = Queue::new(0);
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
    assert_eq!(TryGetError::Empty.to_string(), "the queue is empty");
}

#[test]
fn get_timeout_times_out_on_an_empty_queue() {
    let q: Queue<u8> = Queue::new(0);
    assert_eq!(q.get_timeout(SHORT), Err(GetTimeoutError::Timeout));
}

#[test]
fn put_timeout_times_out_on_a_full_queue() {
    let q = Queue::new(1);
    q.put(1).unwrap();
    let err = q.put_timeout(2, SHORT).unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err, PutTimeoutError::Timeout(2));
    assert_eq!(err.into_inner(), 2);
}

#[test]
fn blocked_get_is_woken_by_a_put() {
    let q = Arc::new(Queue::new(0));
    let consumer = {
        let q = Arc::clone(&q);
        Thread::spawn("consumer", move || q.get()).unwrap()
    };
    q.put(42).unwrap();
    assert_eq!(consumer.join_timeout(PATIENCE).unwrap(), Ok(42));

    let consumer = {
        let q = Arc::clone(&q);
        Thread::spawn("consumer", move || q.get_timeout(PATIENCE)).unwrap()
    };
    q.put(43).unwrap();
    assert_eq!(consumer.join_timeout(PATIENCE).unwrap(), Ok(43));
}

#[test]
fn blocked_put_is_woken_by_a_get() {
    let q = Arc::new(Queue::new(1));
    q.put(1).unwrap();
    let producer = {
        let q = Arc::clone(&q);
        Thread::spawn("producer", move || {
            q.put(2).unwrap();
            q.put_timeout(3, PATIENCE).is_ok()
        })
        .unwrap()
    };
    assert_eq!(q.get_timeout(PATIENCE), Ok(1));
    assert_eq!(q.get_timeout(PATIENCE), Ok(2));
    assert_eq!(q.get_timeout(PATIENCE), Ok(3));
    assert!(producer.join_timeout(PATIENCE).unwrap());
}

#[test]
fn task_done_too_often_is_an_error_not_a_panic() {
    let q = Queue::new(0);
    assert_eq!(q.task_done(), Err(TaskDoneError));
    q.put(1).unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    q.try_get().unwrap();
    assert_eq!(q.unfinished_tasks(), 1, "get does not finish a task");
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(q.task_done(), Err(TaskDoneError));
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(TaskDoneError.to_string().contains("task_done"));
}

#[test]
fn join_returns_at_once_with_no_unfinished_tasks() {
    let q: Queue<u8> = Queue::new(0);
    q.join();
    assert!(q.join_timeout(SHORT));
}

#[test]
fn join_timeout_times_out_while_tasks_are_unfinished() {
    let q = Queue::new(0);
    q.put(1).unwrap();
    q.try_get().unwrap();
    assert!(!q.join_timeout(SHORT));
}

#[test]
fn join_waits_until_consumers_mark_every_item_done() {
    let q = Arc::new(Queue::new(3));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|i| {
            let (q, done) = (Arc::clone(&q), Arc::clone(&done));
            Thread::spawn(format!("consumer-{i}"), move || {
                while let Ok(Some(_n)) = q.get() {
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    q.task_done().unwrap();
                }
                q.task_done().unwrap();
            })
            .unwrap()
        })
        .collect();
    for n in 0..50 {
        q.put(Some(n)).unwrap();
    }
    assert!(q.join_timeout(PATIENCE));
    // join returned only after every item was processed, not merely taken.
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 50);
    for _ in &consumers {
        q.put(None).unwrap();
    }
    for c in consumers {
        c.join_timeout(PATIENCE).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn many_producers_many_consumers_deliver_every_item_exactly_once() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    let per_producer: usize = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    for q in [Queue::new(8), Queue::lifo(8), Queue::priority(0)] {
        let q = Arc::new(q);
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let q = Arc::clone(&q);
                Thread::spawn(format!("consumer-{c}"), move || {
                    let mut got = Vec::new();
                    loop {
                        match q.get_timeout(PATIENCE) {
                            Ok(Some(item)) => got.push(item),
                            Ok(None) => return got,
                            Err(e) => panic!("consumer starved: {e}"),
                        }
                        q.task_done().unwrap();
                    }
                })
                .unwrap()
            })
            .collect();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = Arc::clone(&q);
                Thread::spawn(format!("producer-{p}"), move || {
                    for i in 0..per_producer {
                        // Mix the three ways of putting.
                        let item = Some(p * per_producer + i);
                        match i % 3 {
                            0 => q.put(item).unwrap(),
                            1 => q.put_timeout(item, PATIENCE).unwrap(),
                            _ => {
                                let mut item = item;
                                while let Err(e) = q.try_put(item) {
                                    item = e.into_inner();
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                })
                .unwrap()
            })
            .collect();
        for p in producers {
            p.join_timeout(PATIENCE).unwrap();
        }
        assert!(q.join_timeout(PATIENCE));
        for _ in 0..CONSUMERS {
            q.put(None).unwrap();
        }
        let mut seen = HashSet::new();
        let mut count = 0;
        for c in consumers {
            for item in c.join_timeout(PATIENCE).unwrap() {
                assert!(seen.insert(item), "item {item} delivered twice");
                count += 1;
            }
        }
        assert_eq!(count, PRODUCERS * per_producer);
        assert_eq!(seen.len(), PRODUCERS * per_producer);
        assert!(q.is_empty());
    }
}

#[test]
fn fifo_order_is_kept_per_producer_under_contention() {
    let q = Arc::new(Queue::new(4));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let q = Arc::clone(&q);
            Thread::spawn(format!("producer-{p}"), move || {
                for i in 0..2_000 {
                    q.put((p, i)).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    let mut last = [None::<i32>; 3];
    for _ in 0..6_000 {
        let (p, i) = q.get_timeout(PATIENCE).unwrap();
        let slot = &mut last[p as usize];
        assert!(
            slot.is_none_or(|prev| prev < i),
            "producer {p} out of order"
        );
        *slot = Some(i);
    }
    for p in producers {
        p.join_timeout(PATIENCE).unwrap();
    }
}

#[test]
fn debug_shows_kind_and_sizes() {
    let q = Queue::lifo(3);
    q.put(1).unwrap();
    let text = format!("{q:?}");
    assert!(text.contains("Lifo") && text.contains("qsize: 1"), "{text}");
}

#[test]
fn close_fails_puts_drains_gets_and_wakes_every_waiter() {
    let q: Arc<Queue<u8>> = Arc::new(Queue::new(1));
    // A getter blocked on an empty queue wakes up to `GetError`.
    let getter = {
        let q = Arc::clone(&q);
        Thread::spawn("getter", move || q.get()).unwrap()
    };
    // The close may come before or after the getter falls asleep; either
    // way it must end with `GetError`, never a hang.
    q.close();
    assert_eq!(getter.join_timeout(PATIENCE).unwrap(), Err(GetError));
    assert!(q.is_closed());

    let q = Arc::new(Queue::new(1));
    q.put(1).unwrap();
    // A putter blocked on a full queue (or not yet) ends with `PutError`,
    // the item handed back.
    let putter = {
        let q = Arc::clone(&q);
        Thread::spawn("putter", move || q.put(2)).unwrap()
    };
    q.close();
    assert_eq!(putter.join_timeout(PATIENCE).unwrap(), Err(PutError(2)));
    assert_eq!(q.try_put(3), Err(TryPutError::Closed(3)));
    assert_eq!(q.put_timeout(4, SHORT), Err(PutTimeoutError::Closed(4)));
    // What was put before the close is still handed out, then `Closed`.
    assert_eq!(q.get_timeout(SHORT), Ok(1));
    assert_eq!(q.get_timeout(SHORT), Err(GetTimeoutError::Closed));
    assert_eq!(q.try_get(), Err(TryGetError::Closed));
    assert_eq!(q.get(), Err(GetError));
    q.close(); // twice is harmless
    assert!(format!("{q:?}").contains("closed: true"));
}
