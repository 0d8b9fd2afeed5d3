//! `troika::sync::Thread`: names, results, panics, timed joins and the
//! `Runnable` "subclass" form.

use std::error::Error as _;
use std::sync::mpsc;
use std::time::Duration;

use troika::sync::{JoinTimeoutError, Runnable, Thread, ThreadBuilder, current_thread_name};

const PATIENCE: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(20);

#[test]
fn spawn_names_the_thread_and_join_returns_the_value() {
    let t = Thread::spawn("loop0", || {
        (current_thread_name(), std::thread::current().id())
    })
    .unwrap();
    assert_eq!(t.name(), "loop0");
    let id = t.id();
    let (name, seen_id) = t.join().unwrap();
    assert_eq!(name, "loop0");
    assert_eq!(seen_id, id);
}

#[test]
fn unnamed_threads_are_numbered() {
    let a = Thread::builder().spawn(current_thread_name).unwrap();
    let b = ThreadBuilder::new().spawn(current_thread_name).unwrap();
    let (na, nb) = (a.name().to_owned(), b.name().to_owned());
    assert!(na.starts_with("Thread-") && nb.starts_with("Thread-"));
    assert_ne!(na, nb);
    assert_eq!(a.join().unwrap(), na);
    assert_eq!(b.join().unwrap(), nb);
}

#[test]
fn a_panic_becomes_a_task_error() {
    let t = Thread::spawn("boom", || -> u8 { panic!("kaboom {}", 7) }).unwrap();
    let err = t.join().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("kaboom 7"));
}

#[test]
fn join_timeout_hands_a_running_thread_back() {
    let (tx, rx) = mpsc::channel::<u32>();
    let t = Thread::spawn("slow", move || rx.recv().unwrap() * 2).unwrap();
    assert!(t.is_alive());
    assert!(!t.wait_timeout(SHORT));
    let err = t.join_timeout(SHORT).unwrap_err();
    assert!(err.is_still_running());
    assert_eq!(err.to_string(), "thread \"slow\" is still running");
    assert!(err.source().is_none());
    assert!(format!("{err:?}").starts_with("StillRunning(Thread"));
    let t = err.into_thread().expect("handed back");
    assert!(t.is_alive());
    tx.send(21).unwrap();
    assert_eq!(t.join_timeout(PATIENCE).unwrap(), 42);
}

#[test]
fn join_timeout_reports_a_panic() {
    let t = Thread::spawn("boom", || panic!("late boom")).unwrap();
    match t.join_timeout(PATIENCE) {
        Err(JoinTimeoutError::Failed(e)) => {
            assert_eq!(e.panic_message(), Some("late boom"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let t = Thread::spawn("boom", || panic!("again")).unwrap();
    let err = t.join_timeout(PATIENCE).unwrap_err();
    assert!(!err.is_still_running());
    assert!(err.to_string().contains("again"));
    assert!(err.source().is_some());
    assert!(format!("{err:?}").starts_with("Failed("));
    assert!(err.into_thread().is_none());
}

#[test]
fn is_alive_turns_false_when_the_closure_returns() {
    let (tx, rx) = mpsc::channel::<()>();
    let t = Thread::spawn("gate", move || rx.recv().is_ok()).unwrap();
    assert!(t.is_alive());
    assert!(format!("{t:?}").contains("alive: true"));
    tx.send(()).unwrap();
    t.wait();
    assert!(!t.is_alive());
    assert!(t.wait_timeout(SHORT));
    assert!(format!("{t:?}").contains("alive: false"));
    assert!(t.join().unwrap());
}

#[test]
fn a_panicking_thread_is_not_alive() {
    let t = Thread::spawn("boom", || panic!("x")).unwrap();
    assert!(
        t.wait_timeout(PATIENCE),
        "completion is signalled on unwind too"
    );
    assert!(!t.is_alive());
    assert!(t.join().is_err());
}

struct MyThread {
    name: String,
    nloop: u32,
    nsec: u64,
    result: Option<String>,
}

impl Runnable for MyThread {
    fn run(&mut self) {
        std::thread::sleep(Duration::from_millis(self.nsec));
        self.result = Some(format!(
            "loop {} done on {}",
            self.nloop,
            current_thread_name()
        ));
    }

    fn name(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

#[test]
fn runnable_runs_on_its_own_named_thread_and_comes_back() {
    let threads: Vec<_> = [(0, 4), (1, 2)]
        .into_iter()
        .map(|(nloop, nsec)| {
            Thread::start(MyThread {
                name: format!("loop{nloop}"),
                nloop,
                nsec,
                result: None,
            })
            .unwrap()
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.name(), format!("loop{i}"));
        let done = t.join_timeout(PATIENCE).unwrap();
        assert_eq!(
            done.result.as_deref(),
            Some(&*format!("loop {i} done on loop{i}"))
        );
    }
}

struct Anonymous(u32);

impl Runnable for Anonymous {
    fn run(&mut self) {
        self.0 += 1;
    }
}

#[test]
fn runnable_names_default_and_builder_overrides() {
    let t = Thread::start(Anonymous(1)).unwrap();
    assert!(t.name().starts_with("Thread-"));
    assert_eq!(t.join().unwrap().0, 2);

    let t = ThreadBuilder::new()
        .name("chosen")
        .start(MyThread {
            name: "ignored".into(),
            nloop: 9,
            nsec: 0,
            result: None,
        })
        .unwrap();
    assert_eq!(t.name(), "chosen");
    assert_eq!(
        t.join().unwrap().result.as_deref(),
        Some("loop 9 done on chosen")
    );
}

#[test]
fn builder_sets_stack_size() {
    let t = Thread::builder()
        .name("deep")
        .stack_size(16 << 20)
        .spawn(|| {
            // 4 MiB on the stack: fine with 16 MiB.
            let big = [1u8; 4 << 20];
            std::hint::black_box(&big)
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>()
        })
        .unwrap();
    assert_eq!(t.join().unwrap(), 4 << 20);
    assert!(format!("{:?}", ThreadBuilder::new().name("x")).contains("\"x\""));
}

#[test]
fn a_name_with_nul_is_an_error_not_a_panic() {
    let err = Thread::spawn("bad\0name", || ()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn many_threads_each_join_their_own_value() {
    let threads: Vec<_> = (0..32u64)
        .map(|i| Thread::spawn(format!("t{i}"), move || i * i).unwrap())
        .collect();
    let squares: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join_timeout(PATIENCE).unwrap())
        .collect();
    assert_eq!(squares, (0..32u64).map(|i| i * i).collect::<Vec<_>>());
}
