//! The TCP proxy: it forwards, a cut breaks open connections and refuses new
//! ones, a restore forwards again.

use std::io::ErrorKind;

use troika_test_redis::{Connection, RedisServer, Reply, TcpProxy};

fn pong() -> Reply {
    Reply::Simple("PONG".into())
}

/// PING on a new connection through `proxy`.
fn ping_anew(proxy: &TcpProxy) -> std::io::Result<Reply> {
    Connection::tcp(proxy.addr()).and_then(|mut c| c.command(&["PING"]))
}

#[test]
fn forwards_commands_and_large_values() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr().unwrap());
    assert_eq!(
        proxy.url(),
        format!("redis://127.0.0.1:{}/", proxy.addr().port())
    );
    let mut conn = Connection::tcp(proxy.addr()).unwrap();
    assert_eq!(conn.command(&["PING"]).unwrap(), pong());
    // Larger than the pump's buffer, in both directions.
    let value = "v".repeat(1 << 20);
    assert_eq!(
        conn.command(&["SET", "k", &value]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        conn.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(Some(value.into_bytes()))
    );
    // Several clients at once.
    let mut others: Vec<Connection> = (0..5)
        .map(|_| Connection::tcp(proxy.addr()).unwrap())
        .collect();
    for (i, c) in others.iter_mut().enumerate() {
        assert_eq!(
            c.command(&["INCR", "n"]).unwrap(),
            Reply::Integer(i as i64 + 1)
        );
    }
    let clients = server.command(&["CLIENT", "LIST"]).unwrap();
    // 6 through the proxy, 1 for CLIENT LIST itself.
    assert_eq!(clients.as_str().unwrap().lines().count(), 7);
}

#[test]
fn cut_breaks_open_connections_and_refuses_new_ones() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr().unwrap());
    let mut open: Vec<Connection> = (0..3)
        .map(|_| Connection::tcp(proxy.addr()).unwrap())
        .collect();
    for c in &mut open {
        assert_eq!(c.command(&["PING"]).unwrap(), pong());
    }

    proxy.cut();
    for c in &mut open {
        let err = c.command(&["PING"]).unwrap_err();
        assert_ne!(
            err.kind(),
            ErrorKind::WouldBlock,
            "a cut must not look like a slow server"
        );
        assert_ne!(err.kind(), ErrorKind::TimedOut);
    }
    for _ in 0..3 {
        let err = ping_anew(&proxy).unwrap_err();
        assert_ne!(err.kind(), ErrorKind::WouldBlock);
        assert_ne!(err.kind(), ErrorKind::TimedOut);
    }
    // The server's side of the cut connections is closed too: only this
    // command's own connection is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let clients = server.command(&["CLIENT", "LIST"]).unwrap();
        if clients.as_str().unwrap().lines().count() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server kept {clients:?}"
        );
        std::thread::yield_now();
    }
    // The server itself is fine.
    assert_eq!(server.command(&["PING"]).unwrap(), pong());
}

#[test]
fn restore_forwards_again() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr().unwrap());
    let mut before = Connection::tcp(proxy.addr()).unwrap();
    before.command(&["SET", "k", "v"]).unwrap();
    proxy.cut();
    proxy.restore();
    // A connection broken by the cut stays broken...
    assert!(before.command(&["PING"]).is_err());
    // ... a new one works.
    let mut after = Connection::tcp(proxy.addr()).unwrap();
    assert_eq!(
        after.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );
    // And again: cut, restore, cut.
    proxy.cut();
    assert!(after.command(&["PING"]).is_err());
    proxy.restore();
    assert_eq!(ping_anew(&proxy).unwrap(), pong());
}

#[test]
fn a_dead_target_closes_the_client() {
    let mut server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr().unwrap());
    let mut conn = Connection::tcp(proxy.addr()).unwrap();
    assert_eq!(conn.command(&["PING"]).unwrap(), pong());
    server.kill();
    assert!(conn.command(&["PING"]).is_err());
    assert!(ping_anew(&proxy).is_err());
    server.restart();
    assert_eq!(ping_anew(&proxy).unwrap(), pong());
}

#[test]
fn drop_closes_open_connections() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr().unwrap());
    let addr = proxy.addr();
    let mut conn = Connection::tcp(addr).unwrap();
    assert_eq!(conn.command(&["PING"]).unwrap(), pong());
    drop(proxy);
    assert!(conn.command(&["PING"]).is_err());
    assert!(Connection::tcp(addr).is_err());
}
