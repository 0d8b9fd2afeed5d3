//! The cross-process Queue: many producer and consumer processes, a producer
//! killed mid-operation, serialization failures, bounds and timeouts; a
//! stopped lock holder, close, and producers that all died.

mod ipc_support;

use ipc_support::{LONG, Unserializable, guarded, join_ok, kill, role, spawn};
use std::process::Child;
use std::time::{Duration, Instant};
use troika::ipc::{Event, GetError, IpcError, Pipe, PutError, Queue};

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

#[test]
fn an_unserializable_value_is_an_error_to_the_caller_of_put() {
    let q = Queue::<Unserializable>::new(4).unwrap();
    let err = q.put(&Unserializable).unwrap_err();
    assert!(
        matches!(err, PutError::Failed(IpcError::Serialization(_))),
        "{err}"
    );
    assert!(q.is_empty(), "nothing half-put");
}

#[test]
fn an_item_larger_than_the_buffer_is_refused() {
    let q = Queue::<Vec<u8>>::with_capacity(4, 1024).unwrap();
    let err = q.put(&vec![0u8; 4096]).unwrap_err();
    assert!(
        matches!(
            err,
            PutError::Failed(IpcError::TooLarge { capacity: 1024, .. })
        ),
        "{err}"
    );
    q.put(&vec![1u8; 100]).unwrap();
    assert_eq!(q.get().unwrap(), vec![1u8; 100]);
}

#[test]
fn bounds_and_timeouts() {
    let q = Queue::<u32>::new(2).unwrap();
    assert_eq!(q.maxsize(), 2);
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

/// Kills (SIGKILL, which also ends a stopped process) and reaps a child when
/// dropped, so a failing test leaves no stopped process behind.
struct Reaper(Option<Child>);

impl Reaper {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }
    fn kill(&mut self) {
        if let Some(c) = self.0.take() {
            kill(c);
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until process `pid` shows as stopped in /proc.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + LONG;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        if state == "T" {
            return;
        }
        assert!(Instant::now() < deadline, "child {pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops the calling process (SIGSTOP) until it is continued or killed.
fn stop_myself() -> ! {
    let me = rustix::process::getpid();
    rustix::process::kill_process(me, rustix::process::Signal::STOP).unwrap();
    loop {
        std::thread::park();
    }
}

fn assert_quick(what: &str, started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}, more than {limit:?}");
}

/// Regression: `try_get` and `get_timeout` waited without bound for the
/// queue's internal lock while a process stopped in the middle of a put held
/// it. Every call with a deadline counts the lock wait against it.
#[test]
fn try_and_timed_calls_keep_their_deadline_while_a_stopped_process_holds_the_lock() {
    const NAME: &str =
        "try_and_timed_calls_keep_their_deadline_while_a_stopped_process_holds_the_lock";
    if let Some(_r) = role() {
        let (q, held): (Queue<Vec<u8>>, Event) = ipc_support::arg();
        q.__hold_internal_lock().unwrap();
        held.set();
        stop_myself();
    }
    guarded(NAME, Duration::from_secs(120), || {
        let q = Queue::<Vec<u8>>::new(4).unwrap();
        q.put(&vec![1]).unwrap();
        let held = Event::new().unwrap();
        let mut child = Reaper(Some(spawn(NAME, "holder", &(&q, &held))));
        assert!(held.wait_timeout(LONG));
        wait_stopped(child.pid());

        let t = Instant::now();
        assert!(q.try_get().unwrap_err().is_empty());
        assert!(q.try_put(&vec![2]).unwrap_err().is_full());
        assert_quick("try_get and try_put", t, Duration::from_secs(2));

        let wait = Duration::from_millis(200);
        let t = Instant::now();
        assert!(q.get_timeout(wait).unwrap_err().is_timeout());
        assert!(t.elapsed() >= wait);
        assert_quick("get_timeout(200 ms)", t, Duration::from_secs(5));
        let t = Instant::now();
        assert!(q.put_timeout(&vec![2], wait).unwrap_err().is_timeout());
        assert!(t.elapsed() >= wait);
        assert_quick("put_timeout(200 ms)", t, Duration::from_secs(5));
        // What needs no lock still answers.
        assert_eq!(q.len(), 1);

        // The holder dies: the lock is taken over, even by a call that only
        // tries, and nothing was lost.
        child.kill();
        assert_eq!(q.try_get().unwrap(), vec![1]);
        q.put(&vec![3]).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), vec![3]);
    });
}

/// The same for a pipe: its peer stopped while it holds the lock of the
/// ring both ends use in one direction.
#[test]
fn pipe_timeouts_keep_their_deadline_while_a_stopped_peer_holds_the_lock() {
    const NAME: &str = "pipe_timeouts_keep_their_deadline_while_a_stopped_peer_holds_the_lock";
    if let Some(_r) = role() {
        let (end, held): (Pipe<u32, u32>, Event) = ipc_support::arg();
        end.send(&1).unwrap();
        end.__hold_internal_lock().unwrap();
        held.set();
        stop_myself();
    }
    guarded(NAME, Duration::from_secs(120), || {
        let (here, there) = Pipe::<u32, u32>::pair().unwrap();
        let held = Event::new().unwrap();
        let child = Reaper(Some(spawn(NAME, "holder", &(&there, &held))));
        drop(there);
        assert!(held.wait_timeout(LONG));
        wait_stopped(child.pid());
        let t = Instant::now();
        assert!(here.try_recv().unwrap_err().is_empty());
        assert_quick("try_recv", t, Duration::from_secs(2));
        let t = Instant::now();
        assert!(
            here.recv_timeout(Duration::from_millis(200))
                .unwrap_err()
                .is_timeout()
        );
        assert_quick("recv_timeout(200 ms)", t, Duration::from_secs(5));
        // The other direction has its own lock.
        here.send_timeout(&2, LONG).unwrap();
        drop(child);
    });
}

#[test]
fn close_fails_puts_at_once_and_lets_getters_drain() {
    let q = Queue::<u32>::new(0).unwrap();
    for i in 0..3 {
        q.put(&i).unwrap();
    }
    assert!(!q.is_closed());
    q.close();
    assert!(q.is_closed());
    assert!(q.put(&9).unwrap_err().is_closed());
    assert!(q.try_put(&9).unwrap_err().is_closed());
    assert!(q.put_timeout(&9, LONG).unwrap_err().is_closed());
    assert_eq!(q.get().unwrap(), 0);
    assert_eq!(q.try_get().unwrap(), 1);
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert!(q.get().unwrap_err().is_closed());
    assert!(q.try_get().unwrap_err().is_closed());
    assert!(q.get_timeout(LONG).unwrap_err().is_closed());
    assert_eq!(q.iter().count(), 0);
    q.close(); // twice is harmless
    // Every handle sees it, reopened ones too.
    let again: Queue<u32> = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
    assert!(again.is_closed());
}

#[test]
fn close_wakes_sleeping_getters_and_putters() {
    guarded(
        "close_wakes_sleeping_getters_and_putters",
        Duration::from_secs(60),
        || {
            let empty = Queue::<u32>::new(0).unwrap();
            let full = Queue::<u32>::new(1).unwrap();
            full.put(&1).unwrap();
            let started = Event::new().unwrap();
            std::thread::scope(|s| {
                let getters: Vec<_> = (0..2)
                    .map(|_| {
                        let q = empty.clone();
                        s.spawn(move || q.get())
                    })
                    .collect();
                let putter = {
                    let q = full.clone();
                    let started = started.clone();
                    s.spawn(move || {
                        started.set();
                        q.put(&2)
                    })
                };
                assert!(started.wait_timeout(LONG));
                empty.close();
                full.close();
                for g in getters {
                    assert!(g.join().unwrap().unwrap_err().is_closed());
                }
                assert!(putter.join().unwrap().unwrap_err().is_closed());
            });
            // The item put before the close is still there.
            assert_eq!(full.get().unwrap(), 1);
        },
    );
}

#[test]
fn a_consumer_process_iterates_until_the_queue_is_closed() {
    const NAME: &str = "a_consumer_process_iterates_until_the_queue_is_closed";
    if let Some(_r) = role() {
        let (work, sums): (Queue<u64>, Queue<u64>) = ipc_support::arg();
        let sum: u64 = work.iter().map(Result::unwrap).sum();
        sums.put(&sum).unwrap();
        return;
    }
    guarded(NAME, Duration::from_secs(60), || {
        let work = Queue::<u64>::new(8).unwrap();
        let sums = Queue::<u64>::new(0).unwrap();
        let children: Vec<_> = (0..2).map(|_| spawn(NAME, "c", &(&work, &sums))).collect();
        for i in 1..=1000 {
            work.put(&i).unwrap();
        }
        work.close();
        let total = sums.get_timeout(LONG).unwrap() + sums.get_timeout(LONG).unwrap();
        assert_eq!(total, 1000 * 1001 / 2);
        children.into_iter().for_each(join_ok);
    });
}

/// A `get` on an empty queue whose only producer was SIGKILLed returns
/// `PeerDied` instead of sleeping for ever; one blocked before the kill
/// wakes up with it.
#[test]
fn a_get_whose_only_producer_was_killed_fails_instead_of_hanging() {
    const NAME: &str = "a_get_whose_only_producer_was_killed_fails_instead_of_hanging";
    if let Some(_r) = role() {
        let q: Queue<u32> = ipc_support::arg();
        q.put(&1).unwrap();
        loop {
            std::thread::park(); // until killed
        }
    }
    guarded(NAME, Duration::from_secs(60), || {
        let q = Queue::<u32>::new(0).unwrap();
        let mut child = Reaper(Some(spawn(NAME, "producer", &q)));
        let pid = child.pid();
        // The child opened the queue (its item is here) and still lives:
        // an empty queue is only a timeout.
        assert_eq!(q.get_timeout(LONG).unwrap(), 1);
        assert!(
            q.get_timeout(Duration::from_millis(100))
                .unwrap_err()
                .is_timeout()
        );
        std::thread::scope(|s| {
            let blocked = s.spawn(|| q.get());
            child.kill();
            match blocked.join().unwrap() {
                Err(GetError::Failed(IpcError::PeerDied { pid: p })) => assert_eq!(p, pid),
                other => panic!("expected PeerDied, got {other:?}"),
            }
        });
        assert!(q.get().unwrap_err().is_disconnected());
        assert_eq!(q.iter().count(), 0);
        // A second handle in this process could still put: no error then.
        let q2 = q.clone();
        assert!(
            q.get_timeout(Duration::from_millis(100))
                .unwrap_err()
                .is_timeout()
        );
        q2.put(&5).unwrap();
        assert_eq!(q.get().unwrap(), 5);
    });
}

/// A producer that exits normally lets go of the queue: once its items are
/// drained, `get` says `Disconnected`.
#[test]
fn a_get_after_every_producer_exited_is_disconnected() {
    const NAME: &str = "a_get_after_every_producer_exited_is_disconnected";
    if let Some(_r) = role() {
        let q: Queue<u32> = ipc_support::arg();
        for i in 0..3 {
            q.put(&i).unwrap();
        }
        return;
    }
    guarded(NAME, Duration::from_secs(60), || {
        let q = Queue::<u32>::new(0).unwrap();
        let children: Vec<_> = (0..2).map(|_| spawn(NAME, "producer", &q)).collect();
        let mut got: Vec<u32> = q.iter().map(Result::unwrap).collect();
        children.into_iter().for_each(join_ok);
        got.sort_unstable();
        assert_eq!(got, vec![0, 0, 1, 1, 2, 2]);
        assert!(matches!(q.get(), Err(GetError::Disconnected)));
    });
}

/// A queue that never left this process is never given up on: another
/// thread may still put through a clone.
#[test]
fn a_queue_never_shared_with_another_process_waits_as_before() {
    let q = Queue::<u32>::new(0).unwrap();
    assert!(
        q.get_timeout(Duration::from_millis(60))
            .unwrap_err()
            .is_timeout()
    );
    std::thread::scope(|s| {
        let t = s.spawn(|| q.get_timeout(LONG));
        let q2 = q.clone();
        std::thread::sleep(Duration::from_millis(50));
        q2.put(&4).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), 4);
    });
}

/// Regression: a Pipe end put into a queue stayed marked as sent when the
/// put failed, so dropping it no longer closed the pipe.
#[test]
fn a_pipe_end_in_an_item_whose_put_failed_still_closes_its_pipe() {
    guarded(
        "a_pipe_end_in_an_item_whose_put_failed_still_closes_its_pipe",
        Duration::from_secs(60),
        || {
            let q = Queue::<(Pipe<u32, ()>, Vec<u8>)>::with_capacity(0, 1024).unwrap();
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            let item = (there, vec![0u8; 4096]);
            assert!(matches!(
                q.put(&item),
                Err(PutError::Failed(IpcError::TooLarge { .. }))
            ));
            // Still ours, and usable.
            item.0.send(&7).unwrap();
            assert_eq!(here.recv().unwrap(), 7);
            drop(item);
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));

            // A put that succeeds sends the end: the item's copy is inert,
            // and the end comes back out of the queue.
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            let item = (there, vec![1u8; 8]);
            q.put(&item).unwrap();
            assert!(item.0.send(&1).is_err());
            drop(item);
            let (end, _) = q.get().unwrap();
            end.send(&8).unwrap();
            assert_eq!(here.recv().unwrap(), 8);
            drop(end);
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));
        },
    );
}
