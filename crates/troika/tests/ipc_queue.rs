//! The cross-process Queue: many producer and consumer processes, a producer
//! killed mid-operation, serialization failures, bounds and timeouts.

mod ipc_support;

use ipc_support::{LONG, join_ok, kill, role, spawn};
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;
use troika::ipc::{Event, IpcError, Queue};

#[test]
fn many_producers_and_consumers_deliver_every_item_exactly_once() {
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 2;
    const PER: u64 = 2000;
    if let Some(r) = role() {
        let (work, results): (Queue<Option<u64>>, Queue<Vec<u64>>) = ipc_support::arg();
        match r.as_str() {
            p if p.starts_with("producer") => {
                let id: u64 = p["producer".len()..].parse().unwrap();
                for i in 0..PER {
                    work.put_timeout(&Some(id * PER + i), LONG).unwrap();
                }
            }
            _ => {
                let mut got = Vec::new();
                while let Some(x) = work.get_timeout(LONG).unwrap() {
                    got.push(x);
                }
                results.put_timeout(&got, LONG).unwrap();
            }
        }
        return;
    }
    // A small bound makes producers wait for room and consumers for items.
    let work = Queue::<Option<u64>>::new(16).unwrap();
    let results = Queue::<Vec<u64>>::with_capacity(0, 1 << 20).unwrap();
    let test = "many_producers_and_consumers_deliver_every_item_exactly_once";
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| spawn(test, "consumer", &(&work, &results)))
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| spawn(test, &format!("producer{i}"), &(&work, &results)))
        .collect();
    producers.into_iter().for_each(join_ok);
    for _ in 0..CONSUMERS {
        work.put_timeout(&None, LONG).unwrap();
    }
    let mut all = Vec::new();
    for _ in 0..CONSUMERS {
        all.extend(results.get_timeout(LONG).unwrap());
    }
    consumers.into_iter().for_each(join_ok);
    all.sort_unstable();
    assert_eq!(all, (0..PRODUCERS * PER).collect::<Vec<_>>());
    assert!(work.is_empty());
}

#[test]
fn a_producer_killed_mid_put_leaves_the_queue_consistent() {
    if let Some(_r) = role() {
        let (q, started): (Queue<Vec<u64>>, Event) = ipc_support::arg();
        started.set();
        // Frames of varying size, so a kill can land inside a copy that wraps.
        for i in 0u64.. {
            let item: Vec<u64> = (i..i + 1 + i % 37).collect();
            q.put(&item).unwrap();
        }
        unreachable!();
    }
    let q = Queue::<Vec<u64>>::with_capacity(8, 4096).unwrap();
    let started = Event::new().unwrap();
    let child = spawn(
        "a_producer_killed_mid_put_leaves_the_queue_consistent",
        "p",
        &(&q, &started),
    );
    assert!(started.wait_timeout(LONG));
    // Consume while the child produces, then kill it in the middle of its loop.
    let mut next = 0u64;
    for _ in 0..200 {
        let item = q.get_timeout(LONG).unwrap();
        assert_eq!(item, (next..next + 1 + next % 37).collect::<Vec<_>>());
        next += 1;
    }
    kill(child);
    // Whatever the child committed is whole and in order; nothing is torn.
    while let Ok(item) = q.try_get() {
        assert_eq!(item, (next..next + 1 + next % 37).collect::<Vec<_>>());
        next += 1;
    }
    q.put(&vec![7]).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![7]);
}

/// A value whose serialization always fails.
#[derive(Debug, Deserialize)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

#[test]
fn an_unserializable_value_is_an_error_to_the_caller_of_put() {
    let q = Queue::<Unserializable>::new(4).unwrap();
    let err = q.put(&Unserializable).unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(q.is_empty(), "nothing half-put");
}

#[test]
fn an_item_larger_than_the_buffer_is_refused() {
    let q = Queue::<Vec<u8>>::with_capacity(4, 1024).unwrap();
    let err = q.put(&vec![0u8; 4096]).unwrap_err();
    assert!(
        matches!(err, IpcError::TooLarge { capacity: 1024, .. }),
        "{err}"
    );
    q.put(&vec![1u8; 100]).unwrap();
    assert_eq!(q.get().unwrap(), vec![1u8; 100]);
}

#[test]
fn bounds_and_timeouts() {
    let q = Queue::<u32>::new(2).unwrap();
    assert_eq!(q.max_items(), 2);
    assert!(q.try_get().unwrap_err().is_empty());
    assert!(
        q.get_timeout(Duration::from_millis(5))
            .unwrap_err()
            .is_timeout()
    );
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    assert!(q.try_put(&3).unwrap_err().is_full());
    assert!(
        q.put_timeout(&3, Duration::from_millis(5))
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(q.len(), 2);
    // A blocked put proceeds as soon as a get makes room.
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.put_timeout(&3, LONG));
    assert_eq!(q.get().unwrap(), 1);
    t.join().unwrap().unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 3);
}

#[test]
fn fifo_order_across_wrap_around() {
    let q = Queue::<String>::with_capacity(0, 256).unwrap();
    for round in 0..50 {
        for i in 0..5 {
            q.put(&format!("{round}-{i}-{}", "x".repeat(i * 3)))
                .unwrap();
        }
        for i in 0..5 {
            assert_eq!(
                q.get().unwrap(),
                format!("{round}-{i}-{}", "x".repeat(i * 3))
            );
        }
    }
}

#[test]
fn a_handle_of_another_element_type_is_refused() {
    let q = Queue::<u32>::new(2).unwrap();
    let json = serde_json::to_string(&q).unwrap();
    assert!(serde_json::from_str::<Queue<String>>(&json).is_err());
    let same: Queue<u32> = serde_json::from_str(&json).unwrap();
    same.put(&9).unwrap();
    assert_eq!(q.get().unwrap(), 9);
}

#[test]
fn dev_shm_stays_clean() {
    let before = ipc_support::shm_entries();
    {
        let q = Queue::<u8>::new(1).unwrap();
        q.put(&1).unwrap();
        // The segment is an anonymous memfd: mapped, but never in /dev/shm.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.contains("/memfd:troika-queue"), "{maps}");
        assert_eq!(ipc_support::shm_entries(), before);
    }
    assert_eq!(ipc_support::shm_entries(), before);
}

#[test]
fn a_child_opens_a_queue_its_parent_already_dropped() {
    if let Some(_r) = role() {
        let (q, done): (Queue<u32>, Event) = ipc_support::arg();
        q.put(&1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        done.set();
        return;
    }
    let done = Event::new().unwrap();
    let child = {
        let q = Queue::<u32>::new(1).unwrap();
        spawn(
            "a_child_opens_a_queue_its_parent_already_dropped",
            "c",
            &(&q, &done),
        )
        // `q` is dropped here, before the child can have opened it: this
        // process keeps the exported segment until the child has.
    };
    assert!(done.wait_timeout(LONG));
    join_ok(child);
}
