//! Value and Array in shared memory across processes; a holder killed inside
//! the lock; nothing left in /dev/shm after SIGKILL of a child or of the
//! process that created the segments.

mod ipc_support;

use ipc_support::{LONG, guarded, join_ok, kill, role, shm_entries, spawn};
use std::time::Duration;
use troika::ipc::{Array, Event, Lock, Pipe, Queue, Semaphore, Value};

#[test]
fn children_update_a_shared_value_and_array() {
    if let Some(r) = role() {
        let (v, a): (Value<i64>, Array<u32>) = ipc_support::arg();
        let i: usize = r.parse().unwrap();
        for _ in 0..200 {
            *v.lock() += 1;
            a.lock()[i] += 1;
        }
        a.set(3, 99).unwrap();
        assert!(a.get(4).is_err());
        return;
    }
    let v = Value::new(-100i64).unwrap();
    let a = Array::new(4, 0u32).unwrap();
    let children: Vec<_> = (0..3)
        .map(|i| {
            spawn(
                "children_update_a_shared_value_and_array",
                &i.to_string(),
                &(&v, &a),
            )
        })
        .collect();
    children.into_iter().for_each(join_ok);
    assert_eq!(v.get(), 500);
    assert_eq!(a.to_vec(), vec![200, 200, 200, 99]);
}

#[test]
fn a_holder_killed_inside_the_lock_is_reported_to_the_next() {
    if let Some(_r) = role() {
        let (a, ready): (Array<u64>, Event) = ipc_support::arg();
        let mut g = a.lock();
        g[0] = 1; // half of an update that keeps g[0] == g[1]...
        ready.set();
        loop {
            std::thread::park(); // ...killed before the other half
        }
    }
    let a = Array::new(2, 0u64).unwrap();
    let ready = Event::new().unwrap();
    let child = spawn(
        "a_holder_killed_inside_the_lock_is_reported_to_the_next",
        "c",
        &(&a, &ready),
    );
    assert!(ready.wait_timeout(LONG));
    kill(child);
    let mut g = a.lock_timeout(LONG).unwrap();
    assert!(g.holder_died());
    assert_ne!(g[0], g[1], "the torn update is visible, and we were told");
    g[1] = g[0];
}

#[test]
fn value_handles_check_their_type() {
    let v = Value::new(1u32).unwrap();
    let json = serde_json::to_string(&v).unwrap();
    assert!(serde_json::from_str::<Value<i32>>(&json).is_err());
    assert!(serde_json::from_str::<Array<u32>>(&json).is_err());
    let same: Value<u32> = serde_json::from_str(&json).unwrap();
    same.set(2);
    assert_eq!(v.get(), 2);
}

#[test]
fn nothing_is_left_in_dev_shm_after_sigkill_of_the_creator_or_a_child() {
    if let Some(r) = role() {
        let (back, ready): (Queue<String>, Event) = ipc_support::arg();
        if r == "creator" {
            // Create objects of every kind and hand them to the parent.
            let v = Value::new(7u64).unwrap();
            let l = Lock::new().unwrap();
            let s = Semaphore::new(1).unwrap();
            let q = Queue::<u8>::new(1).unwrap();
            back.put(&serde_json::to_string(&(&v, &l, &s, &q)).unwrap())
                .unwrap();
        }
        ready.set();
        loop {
            std::thread::park();
        }
    }
    let before = shm_entries();
    let back = Queue::<String>::new(2).unwrap();
    let ready = Event::new().unwrap();
    let test = "nothing_is_left_in_dev_shm_after_sigkill_of_the_creator_or_a_child";
    let creator = spawn(test, "creator", &(&back, &ready));
    let json = back.get_timeout(LONG).unwrap();
    let (v, l, s, q): (Value<u64>, Lock, Semaphore, Queue<u8>) =
        serde_json::from_str(&json).unwrap();
    assert!(ready.wait_timeout(LONG));
    kill(creator);
    // The creator is gone; our mappings keep the segments, and they work.
    assert_eq!(v.get(), 7);
    drop(l.lock());
    s.acquire();
    q.put(&1).unwrap();
    assert_eq!(shm_entries(), before);
    // A child holding our objects, killed.
    ready.clear();
    let child = spawn(test, "holder", &(&back, &ready));
    assert!(ready.wait_timeout(LONG));
    kill(child);
    assert_eq!(shm_entries(), before);
    drop((v, l, s, q));
    assert_eq!(shm_entries(), before);
}

/// Open descriptors of this process, and its mappings of troika segments.
fn resources() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:troika"))
        .count();
    (fds, maps)
}

/// Every descriptor and mapping that queues, pipes, values and arrays make
/// is released with their last handle, also after handles were serialized
/// and reopened (the export registry lets go once the receivers opened
/// them) and after a send that failed took its export back.
#[test]
fn every_descriptor_and_mapping_is_released_with_the_last_handle() {
    guarded(
        "every_descriptor_and_mapping_is_released_with_the_last_handle",
        Duration::from_secs(60),
        || {
            let before = resources();
            {
                let q = Queue::<String>::with_capacity(0, 4099).unwrap();
                let (a, b) = Pipe::<u8, u8>::pair().unwrap();
                let v = Value::new(1u64).unwrap();
                let arr = Array::new(10, 0u8).unwrap();
                let during = resources();
                assert_eq!(during.1, before.1 + 4, "one mapping each");
                // Round trips through serialization, as to another process.
                let wire = serde_json::to_string(&(&q, &b, &v, &arr)).unwrap();
                drop(b);
                let (q2, b2, v2, arr2): (Queue<String>, Pipe<u8, u8>, Value<u64>, Array<u8>) =
                    serde_json::from_str(&wire).unwrap();
                q2.put(&"x".into()).unwrap();
                assert_eq!(q.get().unwrap(), "x");
                b2.send(&1).unwrap();
                assert_eq!(a.recv().unwrap(), 1);
                v2.set(2);
                arr2.set(0, 1).unwrap();
                // An item with a queue handle whose put fails: the export is
                // taken back, it keeps nothing mapped.
                let qq = Queue::<(Queue<String>, Vec<u8>)>::with_capacity(0, 64).unwrap();
                assert!(qq.put(&(q.clone(), vec![0; 100])).is_err());
                q.close();
            }
            assert_eq!(resources(), before);
        },
    );
}
