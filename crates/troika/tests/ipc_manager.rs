//! Manager: shared map and list used by child processes; authentication by
//! token and peer credentials; a dead manager is an error, not a hang.

mod ipc_support;

use ipc_support::{LONG, join_ok, kill, role, settled, spawn};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use troika::ipc::{Event, IpcError, Manager, ManagerAddress, Queue, SharedList, SharedMap};

#[test]
fn children_fill_a_shared_map_and_list() {
    if let Some(r) = role() {
        let (d, l): (SharedMap<String, u32>, SharedList<String>) = ipc_support::arg();
        let id: u32 = r.parse().unwrap();
        for i in 0..50 {
            d.insert(&format!("{id}-{i}"), &(id * 100 + i)).unwrap();
        }
        l.push(&format!("child {id}")).unwrap();
        return;
    }
    let manager = Manager::start().unwrap();
    let d = manager.map::<String, u32>("d").unwrap();
    let l = manager.list::<String>("l").unwrap();
    let children: Vec<_> = (0..3)
        .map(|i| {
            spawn(
                "children_fill_a_shared_map_and_list",
                &i.to_string(),
                &(&d, &l),
            )
        })
        .collect();
    children.into_iter().for_each(join_ok);
    assert_eq!(d.len().unwrap(), 150);
    assert_eq!(d.get(&"2-49".into()).unwrap(), Some(249));
    let mut items = l.to_vec().unwrap();
    items.sort();
    assert_eq!(items, vec!["child 0", "child 1", "child 2"]);
    assert_eq!(d.remove(&"0-0".into()).unwrap(), Some(0));
    assert!(!d.contains_key(&"0-0".into()).unwrap());
    assert_eq!(d.items().unwrap().len(), 149);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
}

#[test]
fn list_operations_and_errors() {
    let manager = Manager::start().unwrap();
    let l = manager.list::<i64>("nums").unwrap();
    l.extend(&[1, 2, 3]).unwrap();
    l.set(0, &10).unwrap();
    assert_eq!(l.get(0).unwrap(), 10);
    assert!(matches!(
        l.get(5),
        Err(IpcError::IndexOutOfRange { index: 5, len: 3 })
    ));
    assert!(matches!(
        l.set(9, &0),
        Err(IpcError::IndexOutOfRange { .. })
    ));
    assert_eq!(l.pop().unwrap(), Some(3));
    assert_eq!(l.len().unwrap(), 2);
    // The same name with another element type is refused.
    assert!(manager.list::<String>("nums").is_err());
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);
}

#[test]
fn a_wrong_token_is_refused_and_the_socket_is_private() {
    ipc_support::guarded(
        "a_wrong_token_is_refused_and_the_socket_is_private",
        Duration::from_secs(30),
        || {
            let manager = Manager::start().unwrap();
            let addr = manager.address().clone();
            let dir = addr.path().parent().unwrap().to_path_buf();
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
            // The public way to name a manager: its socket and a token.
            let forged = ManagerAddress::from_parts(addr.path(), [0u8; 32]);
            match SharedMap::<u8, u8>::open(&forged, "m") {
                Err(IpcError::AuthFailed(why)) => assert!(why.contains("token"), "{why}"),
                other => panic!("expected AuthFailed, got {other:?}"),
            }
            match SharedList::<u8>::open(&forged, "l") {
                Err(IpcError::AuthFailed(_)) => {}
                other => panic!("expected AuthFailed, got {other:?}"),
            }
            // The right token still works, also rebuilt from its parts, and
            // the Debug output hides it.
            SharedMap::<u8, u8>::open(&addr, "m").unwrap();
            let token: [u8; 32] =
                serde_json::from_value(serde_json::to_value(&addr).unwrap()["token"].clone())
                    .unwrap();
            let rebuilt = ManagerAddress::from_parts(addr.path(), token);
            assert_eq!(rebuilt, addr);
            SharedMap::<u8, u8>::open(&rebuilt, "m").unwrap();
            assert!(!format!("{addr:?}").contains("token: ["));
            drop(manager);
            assert!(!dir.exists(), "dropping the manager removes its directory");
        },
    );
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Descriptors and threads of this process.
fn fds_and_tasks() -> (usize, usize) {
    (
        count_entries("/proc/self/fd"),
        count_entries("/proc/self/task"),
    )
}

/// Waits (the guarded test's deadline is the failure path) until this
/// process is back to `want` descriptors and threads: a connection thread
/// that sees its client go ends on its own, shortly after.
fn wait_back_to(want: (usize, usize)) {
    while fds_and_tasks() != want {
        std::thread::yield_now();
    }
}

#[test]
fn a_manager_releases_its_threads_and_descriptors() {
    ipc_support::guarded(
        "a_manager_releases_its_threads_and_descriptors",
        Duration::from_secs(60),
        || {
            let before = fds_and_tasks();
            let manager = Manager::start().unwrap();
            let started = fds_and_tasks();
            // A client's connection (a descriptor here, two in the server
            // (the stream and the clone kept to shut it down), and a server
            // thread) ends when the client is dropped.
            let d = manager.map::<u32, u32>("d").unwrap();
            d.insert(&1, &2).unwrap();
            assert_eq!(fds_and_tasks(), (started.0 + 3, started.1 + 1));
            drop(d);
            wait_back_to(started);
            // Clients still connected, one of them silent (it never says
            // hello) and one stalled in the middle of a frame, when the
            // manager is dropped: the drop ends and joins every server
            // thread and closes every server descriptor before it returns.
            let l = manager.list::<u32>("l").unwrap();
            l.push(&1).unwrap();
            let silent = UnixStream::connect(manager.address().path()).unwrap();
            let mut stalled = UnixStream::connect(manager.address().path()).unwrap();
            stalled.write_all(&100u32.to_le_bytes()).unwrap();
            // The manager still serves others meanwhile.
            let d = manager.map::<u32, u32>("d").unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(2));
            drop(manager);
            // Left: our own three client descriptors (l, silent, stalled)
            // and d's, no server thread, no listener.
            assert_eq!(
                settled((before.0 + 4, before.1), fds_and_tasks),
                (before.0 + 4, before.1)
            );
            assert!(l.push(&2).unwrap_err().is_disconnected());
            assert!(d.len().unwrap_err().is_disconnected());
            drop((l, d, silent, stalled));
            assert_eq!(settled(before, fds_and_tasks), before);
        },
    );
}

#[test]
fn a_stalled_client_does_not_hold_up_others() {
    ipc_support::guarded(
        "a_stalled_client_does_not_hold_up_others",
        Duration::from_secs(30),
        || {
            let manager = Manager::start().unwrap();
            let d = manager.map::<u32, u32>("d").unwrap();
            // Half a hello, then nothing (a client SIGSTOPped mid-write).
            let mut stalled = UnixStream::connect(manager.address().path()).unwrap();
            stalled.write_all(&[8, 0]).unwrap();
            for i in 0..100 {
                d.insert(&i, &i).unwrap();
            }
            assert_eq!(d.len().unwrap(), 100);
            drop(manager);
            drop(stalled);
        },
    );
}

#[test]
fn a_dropped_manager_is_an_error_to_its_clients() {
    let manager = Manager::start().unwrap();
    let d = manager.map::<u32, u32>("d").unwrap();
    d.insert(&1, &1).unwrap();
    manager.shutdown();
    assert!(matches!(d.get(&1), Err(IpcError::ManagerGone(_))));
    assert!(d.get(&1).unwrap_err().is_disconnected());
}

#[test]
fn a_killed_manager_is_an_error_not_a_hang() {
    if let Some(_r) = role() {
        let (back, ready): (Queue<String>, Event) = ipc_support::arg();
        let manager = Manager::start().unwrap();
        let d = manager.map::<String, String>("d").unwrap();
        back.put(&serde_json::to_string(&d).unwrap()).unwrap();
        ready.set();
        loop {
            std::thread::park();
        }
    }
    let back = Queue::<String>::new(1).unwrap();
    let ready = Event::new().unwrap();
    let child = spawn(
        "a_killed_manager_is_an_error_not_a_hang",
        "m",
        &(&back, &ready),
    );
    let d: SharedMap<String, String> =
        serde_json::from_str(&back.get_timeout(LONG).unwrap()).unwrap();
    assert!(ready.wait_timeout(LONG));
    d.insert(&"k".into(), &"v".into()).unwrap();
    let dir = d_path(&d);
    // An idle connection, and then a fresh one, both see the death.
    kill(child);
    assert!(matches!(d.get(&"k".into()), Err(IpcError::ManagerGone(_))));
    assert!(matches!(d.get(&"k".into()), Err(IpcError::ManagerGone(_))));
    // The next manager removes the directory the killed one left (another
    // test's manager may already have).
    let _m = Manager::start().unwrap();
    assert!(!dir.exists());
}

fn d_path<K, V>(d: &SharedMap<K, V>) -> std::path::PathBuf {
    let v: serde_json::Value = serde_json::to_value(d).unwrap();
    let p = v["addr"]["path"].as_str().unwrap();
    std::path::Path::new(p).parent().unwrap().to_path_buf()
}
