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
