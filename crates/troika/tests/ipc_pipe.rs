//! Pipe: a conversation with a child, end-of-file when the peer closes, an
//! error (never a hang) when the peer is killed.

mod ipc_support;

use ipc_support::{LONG, join_ok, kill, role, spawn};
use std::time::Duration;
use troika::ipc::{
    GetError, GetTimeoutError, IpcError, Pipe, PutError, PutTimeoutError, TryGetError,
};

type Msg = (u32, Option<u32>, String);

#[test]
fn a_conversation_with_a_child() {
    if let Some(_r) = role() {
        let conn: Pipe<Msg, String> = ipc_support::arg();
        conn.send(&(42, None, "hello".into())).unwrap();
        assert_eq!(conn.recv_timeout(LONG).unwrap(), "test");
        for i in 0..100 {
            let s = conn.recv_timeout(LONG).unwrap();
            conn.send(&(i, Some(s.len() as u32), s)).unwrap();
        }
        return;
    }
    let (parent, child_end) = Pipe::<String, Msg>::pair().unwrap();
    let child = spawn("a_conversation_with_a_child", "c", &child_end);
    drop(child_end); // moved to the child: dropping our copy does not close it
    assert_eq!(
        parent.recv_timeout(LONG).unwrap(),
        (42, None, "hello".to_string())
    );
    parent.send(&"test".to_string()).unwrap();
    for i in 0..100u32 {
        let s = "y".repeat(i as usize);
        parent.send(&s).unwrap();
        assert_eq!(parent.recv_timeout(LONG).unwrap(), (i, Some(i), s));
    }
    join_ok(child);
    assert_eq!(
        parent.peer_pid().map(|p| p != std::process::id()),
        Some(true)
    );
    // The child exited normally and dropped its end: end-of-file.
    assert!(matches!(
        parent.recv_timeout(LONG),
        Err(GetTimeoutError::Disconnected)
    ));
    assert!(matches!(
        parent.send(&"late".into()),
        Err(PutError::Disconnected)
    ));
}

#[test]
fn buffered_messages_are_read_before_end_of_file() {
    if let Some(_r) = role() {
        let conn: Pipe<u64, ()> = ipc_support::arg();
        for i in 0..1000 {
            conn.send(&i).unwrap();
        }
        return;
    }
    let (parent, child_end) = Pipe::<(), u64>::pair().unwrap();
    let child = spawn(
        "buffered_messages_are_read_before_end_of_file",
        "c",
        &child_end,
    );
    let mut sum = 0;
    loop {
        match parent.recv_timeout(LONG) {
            Ok(x) => sum += x,
            Err(GetTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sum, 999 * 1000 / 2);
    join_ok(child);
}

#[test]
fn a_killed_peer_is_an_error_not_a_hang() {
    if let Some(_r) = role() {
        let conn: Pipe<String, String> = ipc_support::arg();
        conn.send(&"ready".into()).unwrap();
        // Wait for a message that never comes, until killed.
        let _ = conn.recv();
        unreachable!("the parent never sends");
    }
    let (parent, child_end) = Pipe::<String, String>::pair().unwrap();
    let child = spawn("a_killed_peer_is_an_error_not_a_hang", "c", &child_end);
    assert_eq!(parent.recv_timeout(LONG).unwrap(), "ready");
    let pid = child.id();
    // A receiver already blocked when the peer dies.
    std::thread::scope(|s| {
        let t = s.spawn(|| parent.recv_timeout(LONG));
        kill(child);
        match t.join().unwrap() {
            Err(GetTimeoutError::Failed(IpcError::PeerDied { pid: p })) => assert_eq!(p, pid),
            other => panic!("expected PeerDied, got {other:?}"),
        }
    });
    assert!(parent.recv().unwrap_err().is_disconnected());
}

#[test]
fn a_sender_blocked_on_a_full_pipe_sees_the_peer_die() {
    if let Some(_r) = role() {
        let conn: Pipe<(), Vec<u8>> = ipc_support::arg();
        conn.send(&()).unwrap();
        let _ = conn.recv(); // never reads more than one message
        loop {
            std::thread::park();
        }
    }
    let (parent, child_end) = Pipe::<Vec<u8>, ()>::pair_with_capacity(1024).unwrap();
    let child = spawn(
        "a_sender_blocked_on_a_full_pipe_sees_the_peer_die",
        "c",
        &child_end,
    );
    parent.recv_timeout(LONG).unwrap();
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            loop {
                if let Err(e) = parent.send_timeout(&vec![0u8; 300], LONG) {
                    return e;
                }
            }
        });
        // The thread fills the buffer and blocks; the child never reads.
        kill(child);
        let e = t.join().unwrap();
        assert!(
            matches!(e, PutTimeoutError::Failed(IpcError::PeerDied { .. })),
            "{e}"
        );
    });
}

#[test]
fn timeouts_and_try_recv() {
    let (a, b) = Pipe::<u8, u8>::pair().unwrap();
    assert!(matches!(a.try_recv(), Err(TryGetError::Empty)));
    assert!(
        a.recv_timeout(Duration::from_millis(5))
            .unwrap_err()
            .is_timeout()
    );
    b.send(&1).unwrap();
    assert_eq!(a.try_recv().unwrap(), 1);
    let big = Pipe::<Vec<u8>, ()>::pair_with_capacity(128).unwrap();
    assert!(matches!(
        big.0.send(&vec![0; 500]),
        Err(PutError::Failed(IpcError::TooLarge { .. }))
    ));
}

#[test]
fn a_sent_end_is_inert_here() {
    let (a, b) = Pipe::<u8, u8>::pair().unwrap();
    let json = serde_json::to_string(&b).unwrap();
    assert!(matches!(
        b.send(&1),
        Err(PutError::Failed(IpcError::InvalidHandle(_)))
    ));
    drop(b); // does not close: the end now belongs to whoever opens `json`
    let b2: Pipe<u8, u8> = serde_json::from_str(&json).unwrap();
    b2.send(&5).unwrap();
    assert_eq!(a.recv().unwrap(), 5);
    // A pipe end of other types is refused.
    let (_c, d) = Pipe::<u8, u8>::pair().unwrap();
    let json = serde_json::to_string(&d).unwrap();
    assert!(serde_json::from_str::<Pipe<u16, u8>>(&json).is_err());
}

#[test]
fn an_end_sent_once_cannot_be_serialized_again() {
    let (_a, b) = Pipe::<u8, u8>::pair().unwrap();
    serde_json::to_string(&b).unwrap();
    assert!(serde_json::to_string(&b).is_err());
}

/// An end inside a message whose send failed stays here and usable.
#[test]
fn a_pipe_end_in_a_message_that_was_not_sent_stays_here() {
    let (a, b) = Pipe::<(Pipe<u8, u8>, Vec<u8>), ()>::pair_with_capacity(256).unwrap();
    let (c, d) = Pipe::<u8, u8>::pair().unwrap();
    let msg = (d, vec![0u8; 1024]);
    assert!(matches!(
        a.send(&msg),
        Err(PutError::Failed(IpcError::TooLarge { .. }))
    ));
    msg.0.send(&3).unwrap();
    assert_eq!(c.recv().unwrap(), 3);
    drop(msg);
    assert!(matches!(c.recv(), Err(GetError::Disconnected)));
    drop(b);
}
