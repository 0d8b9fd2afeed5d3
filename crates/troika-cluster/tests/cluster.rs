//! The cluster executor against a real redis-server, with workers that are
//! real processes (this binary started again). Each test runs in a child
//! of its own with an outer deadline (see `support::run_all`).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Redis, WorkerProc, lines, wait_for};
use troika::{Call, Executor, WaitMode, as_completed, wait};
use troika_cluster::Cluster;

troika::remote! {
    fn add(a: u64, b: u64) -> u64 { a + b }

    fn boom(msg: String) -> u64 { panic!("{msg}") }

    /// Append `tag` to the file at `path`, sleep `ms`, return `tag`.
    fn mark_and_sleep(path: String, tag: u64, ms: u64) -> u64 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        // One write per line: processes append to the same file at once.
        f.write_all(format!("{tag}\n").as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(ms));
        tag
    }

    /// Kill the process that runs it.
    fn crash(_x: u64) -> u64 {
        std::process::abort()
    }
}

const LONG: Duration = Duration::from_secs(60);

fn temp_file(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("troika-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn xlen(redis: &Redis, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis.conn())
        .unwrap()
}

fn pending_of(redis: &Redis, queue: &str) -> u64 {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(format!("troika:{queue}:tasks"))
        .arg("workers")
        .query(&mut redis.conn())
        .unwrap();
    match reply {
        redis::Value::Array(v) => match v.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// submit, map (ordered), as_completed, wait, await, panics, try_submit.
fn futures_api() {
    let redis = Redis::start();
    let _w = WorkerProc::start(&redis.url(), "q", "2,2000,8");
    let cluster = Cluster::connect(&redis.url(), "q").unwrap();
    assert_eq!(cluster.submit(add, (2, 3)).result().unwrap(), 5);
    let sums: Vec<u64> = cluster
        .map_tasks((0..200u64).map(|i| Call::new(add, (i, i))), 32)
        .map(Result::unwrap)
        .collect();
    assert_eq!(sums, (0..200u64).map(|i| 2 * i).collect::<Vec<_>>());
    let handles: Vec<_> = (0..20u64).map(|i| cluster.submit(add, (i, 1))).collect();
    let outcome = wait(&handles, WaitMode::All, Some(LONG));
    assert_eq!(outcome.done.len(), 20);
    let mut total = 0;
    for (_, h) in as_completed(handles) {
        total += h.result().unwrap();
    }
    assert_eq!(total, (1..=20).sum::<u64>());
    let awaited = futures::executor::block_on(cluster.submit(add, (40, 2))).unwrap();
    assert_eq!(awaited, 42);
    let err = cluster.submit(boom, "kaput".into()).result().unwrap_err();
    assert_eq!(err.panic_message(), Some("kaput"), "{err}");
    let traced = cluster.submit_traced(add, (1, 1)).result().unwrap();
    assert_eq!(traced.0, 2);
    assert!(!traced.1.is_empty());
    let h = Executor::try_submit(&cluster, Call::new(add, (1, 2))).unwrap();
    assert_eq!(h.result().unwrap(), 3);
    wait_for("the worker's heartbeat", LONG, || {
        cluster.live_workers() == 1
    });
    cluster.shutdown(true, false);
    assert!(
        cluster
            .submit(add, (1, 1))
            .result()
            .unwrap_err()
            .is_shut_down()
    );
}

/// Many tasks from 2 clients over 4 worker processes: every handle settles
/// once with the right value, and Redis keeps nothing of them.
fn many(count: u64) {
    let redis = Redis::start();
    let before = redis.used_memory();
    let workers: Vec<_> = (0..4)
        .map(|_| WorkerProc::start(&redis.url(), "many", "1,5000,256"))
        .collect();
    let url = redis.url();
    let clients: Vec<_> = (0..2u64)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let cluster = Cluster::connect(&url, "many").unwrap();
                let mut seen = 0u64;
                for (i, r) in cluster
                    .map_tasks((0..count / 2).map(|i| Call::new(add, (i, c))), 4096)
                    .enumerate()
                {
                    assert_eq!(r.unwrap(), i as u64 + c);
                    seen += 1;
                }
                assert_eq!(cluster.in_flight(), 0);
                seen
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, count / 2 * 2);
    wait_for("the task stream to empty", LONG, || {
        xlen(&redis, "troika:many:tasks") == 0 && pending_of(&redis, "many") == 0
    });
    drop(workers);
    // Nothing of the tasks stays in Redis (the clients' result streams are
    // trimmed as read and expire once the clients are gone).
    let after = redis.used_memory();
    println!("used_memory before {before} after {after} bytes ({count} tasks)");
    assert!(
        after < before + 2_000_000,
        "used_memory {before} -> {after}"
    );
}

fn many_tasks() {
    // 100,000 tasks take about a minute on 2 cores with debug builds; the
    // default suite runs 20,000 and `ignored_many_tasks_full` the full count.
    many(20_000);
}

fn ignored_many_tasks_full() {
    many(100_000);
}

/// A worker SIGKILLed with tasks in hand: they complete on another worker
/// after the lease.
fn killed_worker() {
    let redis = Redis::start();
    let marks = temp_file("killed");
    let mut a = WorkerProc::start(&redis.url(), "k", "2,800,8,,a");
    let cluster = Cluster::connect(&redis.url(), "k").unwrap();
    let path = marks.display().to_string();
    let handles: Vec<_> = (0..6u64)
        .map(|i| cluster.submit(mark_and_sleep, (path.clone(), i, 3_000)))
        .collect();
    wait_for("worker a to start tasks", LONG, || lines(&marks).len() >= 2);
    a.signal(libc::SIGKILL);
    a.wait_timeout(LONG).expect("worker a died");
    let _b = WorkerProc::start(&redis.url(), "k", "3,800,8,,b");
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.result_timeout(LONG).expect("settled").unwrap(), i as u64);
    }
}

/// A task longer than the lease on a live worker is not taken over.
fn slow_task_not_stolen() {
    let redis = Redis::start();
    let marks = temp_file("slow");
    let _a = WorkerProc::start(&redis.url(), "s", "1,300,1");
    let _b = WorkerProc::start(&redis.url(), "s", "1,300,1");
    let cluster = Cluster::connect(&redis.url(), "s").unwrap();
    let h = cluster.submit(mark_and_sleep, (marks.display().to_string(), 7, 2_000));
    assert_eq!(h.result_timeout(LONG).expect("settled").unwrap(), 7);
    assert_eq!(lines(&marks), ["7"], "the slow task ran once");
}

/// A task that kills its process every time is given up after
/// max_deliveries and dead-lettered; the worker lives on.
fn crashing_task_dead_lettered() {
    let redis = Redis::start();
    let _w = WorkerProc::start(&redis.url(), "c", "1,2000,4");
    let cluster = Cluster::builder(&redis.url(), "c")
        .max_deliveries(3)
        .build()
        .unwrap();
    let err = cluster
        .submit(crash, 1)
        .result_timeout(LONG)
        .expect("settled")
        .unwrap_err();
    assert!(err.is_dead_lettered(), "{err}");
    match err.kind() {
        troika::ErrorKind::DeadLettered { deliveries, .. } => assert_eq!(*deliveries, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(xlen(&redis, "troika:c:dead"), 1);
    assert_eq!(cluster.submit(add, (1, 1)).result().unwrap(), 2);
}

/// Garbage and oversized entries written straight into the stream are
/// dead-lettered with a reason; the worker goes on.
fn garbage_dead_lettered() {
    let redis = Redis::start();
    let _w = WorkerProc::start(&redis.url(), "g", "1,2000,4,4096");
    let cluster = Cluster::connect(&redis.url(), "g").unwrap();
    let mut conn = redis.conn();
    let tasks = "troika:g:tasks";
    let _: String = redis::cmd("XADD")
        .arg(tasks)
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query(&mut conn)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(tasks)
        .arg("*")
        .arg("m")
        .arg(&[0xffu8, 0x13, 0x37][..])
        .query(&mut conn)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(tasks)
        .arg("*")
        .arg("m")
        .arg(vec![1u8; 10_000])
        .query(&mut conn)
        .unwrap();
    wait_for("three dead letters", LONG, || {
        xlen(&redis, "troika:g:dead") == 3
    });
    let dead: Vec<redis::streams::StreamId> = redis::cmd("XRANGE")
        .arg("troika:g:dead")
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut conn)
        .unwrap()
        .ids;
    let reasons: Vec<String> = dead
        .iter()
        .map(|e| redis::from_redis_value(e.map["reason"].clone()).unwrap())
        .collect();
    assert!(reasons[0].contains("not a troika task"), "{reasons:?}");
    assert!(reasons[1].contains("cannot decode"), "{reasons:?}");
    assert!(
        reasons[2].contains("over this worker's limit"),
        "{reasons:?}"
    );
    assert_eq!(cluster.submit(add, (2, 2)).result().unwrap(), 4);
}

/// A cancelled pending task never runs; a cancelled running one is killed
/// on its worker.
fn cancel_pending_and_running() {
    let redis = Redis::start();
    let marks = temp_file("cancel");
    let path = marks.display().to_string();
    let cluster = Cluster::connect(&redis.url(), "x").unwrap();
    // No worker yet: the task is pending.
    let pending = cluster.submit(mark_and_sleep, (path.clone(), 1, 0));
    wait_for("the task to be written", LONG, || {
        xlen(&redis, "troika:x:tasks") == 1
    });
    assert!(pending.cancel());
    assert!(pending.result().unwrap_err().is_cancelled());
    wait_for("the entry to go", LONG, || {
        xlen(&redis, "troika:x:tasks") == 0
    });
    let _w = WorkerProc::start(&redis.url(), "x", "1,2000,1");
    let running = cluster.submit(mark_and_sleep, (path.clone(), 2, 60_000));
    wait_for("the task to start", LONG, || lines(&marks) == ["2"]);
    assert!(running.cancel());
    assert!(running.result().unwrap_err().is_cancelled());
    // The one process of the worker was killed: the next task runs at once.
    let started = Instant::now();
    assert_eq!(
        cluster
            .submit(add, (1, 2))
            .result_timeout(LONG)
            .expect("ran")
            .unwrap(),
        3
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(lines(&marks), ["2"], "the cancelled pending task never ran");
}

/// A task timeout is enforced on the worker (it kills the task's process).
fn task_timeout() {
    let redis = Redis::start();
    let _w = WorkerProc::start(&redis.url(), "t", "1,2000,1");
    let cluster = Cluster::builder(&redis.url(), "t")
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = cluster
        .submit(
            mark_and_sleep,
            (temp_file("timeout").display().to_string(), 1, 60_000),
        )
        .result_timeout(LONG)
        .expect("settled")
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        cluster
            .submit(add, (3, 4))
            .result_timeout(LONG)
            .expect("ran")
            .unwrap(),
        7
    );
}

/// SIGTERM to a worker with tasks in hand: it finishes the running one,
/// hands back the rest, and exits; another worker runs them.
fn sigterm_hands_back() {
    let redis = Redis::start();
    let marks = temp_file("term");
    let path = marks.display().to_string();
    let mut a = WorkerProc::start(&redis.url(), "term", "1,30000,4,,a");
    let cluster = Cluster::connect(&redis.url(), "term").unwrap();
    let handles: Vec<_> = (0..4u64)
        .map(|i| cluster.submit(mark_and_sleep, (path.clone(), i, 1_000)))
        .collect();
    wait_for("worker a to start a task", LONG, || {
        !lines(&marks).is_empty()
    });
    a.signal(libc::SIGTERM);
    let status = a.wait_timeout(LONG).expect("worker a exited");
    assert!(status.success(), "{status}");
    let _b = WorkerProc::start(&redis.url(), "term", "2,30000,4,,b");
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.result_timeout(LONG).expect("settled").unwrap(), i as u64);
    }
    // Handed back, not run twice (the lease is long: nothing was stolen).
    let mut ran = lines(&marks);
    ran.sort();
    assert_eq!(ran, ["0", "1", "2", "3"]);
}

/// A Redis that wants a password: a wrong one is a clear error, quickly.
fn wrong_password() {
    let redis = Redis::start_with(false, Some("right"));
    let started = Instant::now();
    let err = Cluster::connect(&redis.url_with_password("wrong"), "p").unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut w = WorkerProc::start(&redis.url_with_password("wrong"), "p", "1");
    let status = w.wait_timeout(LONG).expect("the worker gave up");
    assert_eq!(status.code(), Some(3));
    let cluster = Cluster::connect(&redis.url(), "p").unwrap();
    let _w = WorkerProc::start(&redis.url(), "p", "1");
    assert_eq!(cluster.submit(add, (1, 1)).result().unwrap(), 2);
}

/// With appendonly, tasks queued before a Redis restart run after it, and
/// the clients and workers reconnect by themselves.
fn redis_restart_with_persistence() {
    let mut redis = Redis::start_with(true, None);
    let cluster = Cluster::connect(&redis.url(), "r").unwrap();
    let handles: Vec<_> = (0..50u64).map(|i| cluster.submit(add, (i, 100))).collect();
    wait_for("the tasks to be written", LONG, || {
        xlen(&redis, "troika:r:tasks") == 50
    });
    redis.kill();
    redis.restart();
    let _w = WorkerProc::start(&redis.url(), "r", "2,2000,16");
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.result_timeout(LONG).expect("settled").unwrap(),
            i as u64 + 100
        );
    }
    // And new work flows through the reconnected client.
    assert_eq!(
        cluster
            .submit(add, (5, 5))
            .result_timeout(LONG)
            .expect("ran")
            .unwrap(),
        10
    );
}

/// A submit while Redis is down fails after the submit timeout with a
/// clear error; once it is back, submits work again.
fn submit_while_redis_down() {
    let mut redis = Redis::start();
    let cluster = Cluster::builder(&redis.url(), "d")
        .submit_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    redis.kill();
    let err = cluster
        .submit(add, (1, 1))
        .result_timeout(LONG)
        .expect("settled")
        .unwrap_err();
    assert!(err.is_broker_unreachable(), "{err}");
    redis.restart();
    let _w = WorkerProc::start(&redis.url(), "d", "1");
    let h = cluster.submit(add, (2, 2));
    assert_eq!(h.result_timeout(LONG).expect("settled").unwrap(), 4);
}

/// A worker cut from Redis by a network partition: its task is taken over
/// after the lease, and once the link is back the worker serves again.
fn partition() {
    let redis = Redis::start_tcp();
    let proxy = troika_test_redis::TcpProxy::start(redis.server.addr().unwrap());
    let marks = temp_file("partition");
    let path = marks.display().to_string();
    let _a = WorkerProc::start(&proxy.url(), "part", "1,1000,1,,a");
    let cluster = Cluster::connect(&redis.url(), "part").unwrap();
    let h = cluster.submit(mark_and_sleep, (path.clone(), 1, 2_000));
    wait_for("worker a to start the task", LONG, || {
        lines(&marks) == ["1"]
    });
    proxy.cut();
    let mut b = WorkerProc::start(&redis.url(), "part", "1,1000,1,,b");
    assert_eq!(h.result_timeout(LONG).expect("settled").unwrap(), 1);
    proxy.restore();
    b.signal(libc::SIGKILL);
    b.wait_timeout(LONG).expect("b died");
    // Only a is left: a task completes only if it reconnected.
    assert_eq!(
        cluster
            .submit(add, (20, 22))
            .result_timeout(LONG)
            .expect("a serves")
            .unwrap(),
        42
    );
}

/// A cancel sent while the task's worker is cut off from Redis reaches it
/// once the link is back: the announcement is lost, but the task's entry is
/// gone from the stream, and the worker stops what it no longer holds a
/// lease on.
fn cancel_during_partition() {
    let redis = Redis::start_tcp();
    let proxy = troika_test_redis::TcpProxy::start(redis.server.addr().unwrap());
    let marks = temp_file("cancel-partition");
    let path = marks.display().to_string();
    let _a = WorkerProc::start(&proxy.url(), "cp", "1,600,1,,a");
    let cluster = Cluster::connect(&redis.url(), "cp").unwrap();
    // Ten minutes: far past the test's deadline unless the cancel lands.
    let h = cluster.submit(mark_and_sleep, (path.clone(), 1, 600_000));
    wait_for("the worker to start the task", LONG, || {
        lines(&marks) == ["1"]
    });
    proxy.cut();
    assert!(h.cancel());
    assert!(h.result().unwrap_err().is_cancelled());
    wait_for("the entry to go", LONG, || {
        xlen(&redis, "troika:cp:tasks") == 0
    });
    proxy.restore();
    // The worker's one process is free again only if the cancel reached it.
    assert_eq!(
        cluster
            .submit(add, (20, 22))
            .result_timeout(LONG)
            .expect("the cancelled task was stopped and the worker serves")
            .unwrap(),
        42
    );
    assert_eq!(lines(&marks), ["1"]);
}

/// `rediss://`: client and worker reach Redis over TLS, checking its
/// certificate against the CA they are given; a client that does not trust
/// that CA gets a clear error at once, not a hang.
fn tls() {
    let redis = Redis::start_tls();
    let url = redis.server.tls_url().unwrap();
    let ca = redis.server.tls_ca_pem().unwrap();
    let ca_file = temp_file("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let _w = WorkerProc::start(&url, "tls", &format!("1,2000,8,,t,{}", ca_file.display()));
    let cluster = Cluster::builder(&url, "tls")
        .tls_root_cert(ca)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..100u64).map(|i| cluster.submit(add, (i, 1))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.result_timeout(LONG).expect("settled").unwrap(),
            i as u64 + 1
        );
    }
    let (sum, worker) = cluster
        .submit_traced(add, (2, 3))
        .result_timeout(LONG)
        .expect("settled")
        .unwrap();
    assert_eq!((sum, worker.as_str()), (5, "t"));
    let started = Instant::now();
    let err = Cluster::builder(&url, "tls")
        .connect_timeout(Duration::from_secs(20))
        .build()
        .expect_err("the system does not trust the test CA");
    let text = err.to_string();
    assert!(
        text.contains("certificate") || text.contains("Certificate") || text.contains("issuer"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused at once"
    );
    // The plain URL of the same server still works, and a root certificate
    // for it is a configuration error.
    assert!(matches!(
        Cluster::builder(&redis.url(), "tls")
            .tls_root_cert(b"x".to_vec())
            .build(),
        Err(troika_cluster::ClusterError::Config(_))
    ));
}

/// Without persistence, a Redis restart loses the queued tasks: their
/// handles fail with a clear error (the README's promise), and new work
/// flows once the workers and the client have reconnected.
fn redis_restart_without_persistence() {
    let mut redis = Redis::start();
    let cluster = Cluster::connect(&redis.url(), "np").unwrap();
    let handles: Vec<_> = (0..20u64).map(|i| cluster.submit(add, (i, 1))).collect();
    wait_for("the tasks to be written", LONG, || {
        xlen(&redis, "troika:np:tasks") == 20
    });
    redis.kill();
    redis.restart();
    for h in handles {
        let err = h.result_timeout(LONG).expect("settled").unwrap_err();
        assert!(err.is_broker_unreachable(), "{err}");
    }
    let _w = WorkerProc::start(&redis.url(), "np", "1");
    assert_eq!(
        cluster
            .submit(add, (1, 2))
            .result_timeout(LONG)
            .expect("ran")
            .unwrap(),
        3
    );
}

/// With a no-worker limit, a task that finds no live worker fails with
/// NoWorker and is taken off the queue.
fn no_worker() {
    let redis = Redis::start();
    let cluster = Cluster::builder(&redis.url(), "nw")
        .no_worker_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = cluster
        .submit(add, (1, 1))
        .result_timeout(LONG)
        .expect("settled")
        .unwrap_err();
    assert!(err.is_no_worker(), "{err}");
    wait_for("the entry to go", LONG, || {
        xlen(&redis, "troika:nw:tasks") == 0
    });
}

fn main() {
    troika::init();
    if support::maybe_serve() {
        return;
    }
    support::run_all(
        &[
            ("futures_api", futures_api),
            ("many_tasks", many_tasks),
            ("ignored_many_tasks_full", ignored_many_tasks_full),
            ("killed_worker", killed_worker),
            ("slow_task_not_stolen", slow_task_not_stolen),
            ("crashing_task_dead_lettered", crashing_task_dead_lettered),
            ("garbage_dead_lettered", garbage_dead_lettered),
            ("cancel_pending_and_running", cancel_pending_and_running),
            ("task_timeout", task_timeout),
            ("sigterm_hands_back", sigterm_hands_back),
            ("wrong_password", wrong_password),
            (
                "redis_restart_with_persistence",
                redis_restart_with_persistence,
            ),
            ("submit_while_redis_down", submit_while_redis_down),
            ("partition", partition),
            ("cancel_during_partition", cancel_during_partition),
            ("tls", tls),
            ("no_worker", no_worker),
            (
                "redis_restart_without_persistence",
                redis_restart_without_persistence,
            ),
        ],
        Duration::from_secs(180),
    );
}
