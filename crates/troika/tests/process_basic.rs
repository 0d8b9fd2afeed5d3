//! The process pool and `Process` in the simplest cases: values come back,
//! panics are reported, unknown functions are clear errors.

use std::time::Duration;

use troika::{ErrorKind, Process, ProcessPool, RemoteFn};

troika::remote! {
    fn add(a: u64, b: u64) -> u64 {
        a + b
    }

    fn nothing() -> u32 {
        7
    }

    fn boom(msg: String) -> u32 {
        panic!("{msg}")
    }

    fn worker_pid() -> u32 {
        std::process::id()
    }
}

#[test]
fn submit_returns_the_value() {
    let pool = ProcessPool::new(2).unwrap();
    assert_eq!(pool.submit(add, (2, 3)).result().unwrap(), 5);
    assert_eq!(pool.submit(nothing, ()).result().unwrap(), 7);
    assert_eq!(add::call(1, 1), 2);
    assert!(<add as RemoteFn>::NAME.ends_with("process_basic::add"));
}

#[test]
fn tasks_run_in_other_processes() {
    let pool = ProcessPool::new(2).unwrap();
    let pid = pool.submit(worker_pid, ()).result().unwrap();
    assert_ne!(pid, std::process::id());
    assert!(pool.worker_pids().contains(&pid));
}

#[test]
fn panic_is_reported_and_worker_survives() {
    let pool = ProcessPool::new(1).unwrap();
    let before = pool.submit(worker_pid, ()).result().unwrap();
    let err = pool.submit(boom, "kaputt".into()).result().unwrap_err();
    assert_eq!(err.panic_message(), Some("kaputt"));
    let after = pool.submit(worker_pid, ()).result().unwrap();
    assert_eq!(before, after, "a panic does not cost the worker");
    assert_eq!(pool.stats().restarts, 0);
}

#[test]
fn map_keeps_order() {
    let pool = ProcessPool::new(2).unwrap();
    let sums: Vec<u64> = pool
        .map(add, (0..1000u64).map(|i| (i, i)))
        .map(Result::unwrap)
        .collect();
    assert_eq!(sums, (0..1000u64).map(|i| 2 * i).collect::<Vec<_>>());
}

#[test]
fn process_spawn_and_join() {
    let p = Process::builder()
        .name("adder")
        .spawn(add, (40, 2))
        .unwrap();
    assert_eq!(p.name(), "adder");
    assert!(p.pid() > 0);
    assert!(p.join_timeout(Duration::from_secs(30)));
    assert!(!p.is_alive());
    assert_eq!(p.exit_status(), Some(troika::Exit::Code(0)));
    assert_eq!(p.join().unwrap(), 42);
    let p = Process::spawn(boom, "in a process".into()).unwrap();
    let err = p.join().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Panicked(m) if m == "in a process"));
}

troika::remote! {
    /// A task that runs a process pool of its own, inside a worker.
    fn nested(n: u64) -> u64 {
        let pool = ProcessPool::new(1).unwrap();
        pool.submit(add, (n, 1)).result().unwrap()
    }

    /// Prints without a newline: the text must not be lost.
    fn partial_line() -> u32 {
        print!("[partial line from a worker]");
        1
    }
}

#[test]
fn a_task_can_use_a_pool_of_its_own() {
    let pool = ProcessPool::new(1).unwrap();
    assert_eq!(pool.submit(nested, 41).result().unwrap(), 42);
}

#[test]
fn worker_output_is_flushed_after_each_task() {
    let pool = ProcessPool::new(1).unwrap();
    assert_eq!(pool.submit(partial_line, ()).result().unwrap(), 1);
}

#[test]
fn executor_trait_and_pool_style_calls() {
    use troika::{Call, Executor, WaitMode, as_completed, wait};
    let pool = ProcessPool::new(2).unwrap();
    let via_trait: Vec<u64> = pool
        .map_tasks((0..10).map(|i| Call::new(add, (i, i))), 4)
        .map(Result::unwrap)
        .collect();
    assert_eq!(via_trait, (0..10).map(|i| 2 * i).collect::<Vec<_>>());
    let handles: Vec<_> = (0..5).map(|i| pool.apply_async(add, (i, 0))).collect();
    assert!(wait(&handles, WaitMode::All, None).pending.is_empty());
    let total: u64 = as_completed(handles)
        .map(|(_, h)| h.result().unwrap())
        .sum();
    assert_eq!(total, 10);
    assert_eq!(pool.apply(add, (1, 2)).unwrap(), 3);
    assert_eq!(pool.starmap(add, [(1, 1), (2, 2)], 1).unwrap(), [2, 4]);
    assert_eq!(
        pool.map_all(add, (0..100).map(|i| (i, 0)), 7)
            .unwrap()
            .len(),
        100
    );
    let mut unordered: Vec<(usize, u64)> = pool
        .imap_unordered(add, (0..50).map(|i| (i, 1)), 5)
        .unwrap()
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    unordered.sort();
    assert_eq!(
        unordered,
        (0..50).map(|i| (i as usize, i + 1)).collect::<Vec<_>>()
    );
    let mapped: Vec<(usize, u64)> = pool
        .map_unordered(add, (0..20).map(|i| (i, 0)))
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_eq!(mapped.len(), 20);
    pool.close();
    assert!(
        pool.submit(add, (1, 1))
            .result()
            .unwrap_err()
            .is_shut_down()
    );
    pool.join();
}

static GREETING: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

troika::remote! {
    fn set_greeting(text: String) -> () {
        *GREETING.lock().unwrap() = text;
    }

    fn greeting() -> String {
        GREETING.lock().unwrap().clone()
    }

    fn die_now() -> u32 {
        std::process::abort()
    }
}

#[test]
fn initializer_runs_in_every_worker_before_tasks() {
    let pool = ProcessPool::builder()
        .workers(1)
        .initializer(set_greeting, "ready".to_string())
        .build()
        .unwrap();
    assert_eq!(pool.submit(greeting, ()).result().unwrap(), "ready");
    // The replacement of a dead worker is initialized too.
    assert!(
        pool.submit(die_now, ())
            .result()
            .unwrap_err()
            .is_worker_died()
    );
    assert_eq!(pool.submit(greeting, ()).result().unwrap(), "ready");
    // A panicking initializer breaks the pool: tasks fail with its message.
    let pool = ProcessPool::builder()
        .workers(1)
        .initializer(boom, "init failed".to_string())
        .build()
        .unwrap();
    let err = pool.submit(add, (1, 2)).result().unwrap_err();
    assert!(
        matches!(err.kind(), troika::ErrorKind::InitializerFailed(m) if m.contains("init failed")),
        "{err:?}"
    );
}

troika::remote! {
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

#[test]
fn process_kill_and_terminate_report_the_signal() {
    let p = Process::spawn(nap, 600_000).unwrap();
    assert!(p.is_alive());
    assert!(!p.join_timeout(Duration::from_millis(1)));
    p.kill();
    assert!(p.join_timeout(Duration::from_secs(60)));
    assert!(!p.is_alive());
    assert_eq!(p.exit_status(), Some(troika::Exit::Signal(9)));
    assert_eq!(
        p.join().unwrap_err().kind(),
        &ErrorKind::WorkerDied(troika::Exit::Signal(9))
    );
    let p = Process::spawn(nap, 600_000).unwrap();
    p.terminate();
    assert_eq!(
        p.join().unwrap_err().kind(),
        &ErrorKind::WorkerDied(troika::Exit::Signal(15))
    );
}

#[test]
fn processes_join_in_any_order() {
    let slow = Process::spawn(nap, 300).unwrap();
    let fast = Process::spawn(nap, 1).unwrap();
    assert_ne!(slow.pid(), fast.pid());
    assert_eq!(fast.join().unwrap(), 1);
    assert_eq!(slow.join().unwrap(), 300);
}

#[test]
fn process_argument_that_cannot_be_encoded() {
    #[derive(Debug, serde::Deserialize)]
    struct Never;
    impl serde::Serialize for Never {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("never"))
        }
    }
    troika::remote! {
        fn take(x: Never) -> u32 {
            let _ = x;
            0
        }
    }
    let err = Process::spawn(take, Never).unwrap_err();
    assert!(err.is_serialization(), "{err}");
}
