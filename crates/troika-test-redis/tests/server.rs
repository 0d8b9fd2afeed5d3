//! The test Redis itself: start, PING, INFO, password, Unix socket,
//! kill/restart, persistence across a crash, and the child's clean-up.

use troika_test_redis::{Connection, RedisServer, Reply};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn pid_alive(pid: u32) -> bool {
    // A reaped child's /proc entry is gone.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn start_ping_info() {
    let server = RedisServer::start();
    let addr = server.addr().expect("a TCP server has an address");
    assert!(addr.ip().is_loopback());
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}/", addr.port()));
    assert!(server.socket_path().is_none());
    assert_eq!(
        server.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    let info = server.command(&["INFO", "server"]).unwrap();
    assert!(
        info.as_str()
            .unwrap()
            .contains(&format!("tcp_port:{}", addr.port()))
    );
    assert!(server.used_memory() > 0);
    // No persistence by default.
    let save = server.command(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(save, Reply::Array(Some(vec![bulk("save"), bulk("")])));
    let aof = server.command(&["CONFIG", "GET", "appendonly"]).unwrap();
    assert_eq!(
        aof,
        Reply::Array(Some(vec![bulk("appendonly"), bulk("no")]))
    );
}

#[test]
fn two_servers_get_two_ports() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.addr(), b.addr());
    a.command(&["SET", "k", "a"]).unwrap();
    assert_eq!(b.command(&["GET", "k"]).unwrap(), Reply::Bulk(None));
}

#[test]
fn used_memory_grows_with_data() {
    let server = RedisServer::start();
    let before = server.used_memory();
    let value = "x".repeat(1 << 20);
    server.command(&["SET", "big", &value]).unwrap();
    assert!(server.used_memory() >= before + (1 << 20));
}

#[test]
fn password_is_required_and_a_wrong_one_is_an_error_reply() {
    let server = RedisServer::builder().password("s3cr:t @x").start();
    let addr = server.addr().unwrap();
    assert_eq!(
        server.url(),
        format!("redis://:s3cr%3At%20%40x@127.0.0.1:{}/", addr.port())
    );
    // Through the server's own helper, which authenticates.
    assert_eq!(
        server.command(&["SET", "k", "v"]).unwrap(),
        Reply::Simple("OK".into())
    );

    let mut conn = Connection::tcp(addr).unwrap();
    match conn.command(&["GET", "k"]).unwrap() {
        Reply::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("GET without AUTH: {other:?}"),
    }
    match conn.command(&["AUTH", "wrong"]).unwrap() {
        Reply::Error(e) => assert!(e.starts_with("WRONGPASS"), "{e}"),
        other => panic!("AUTH with a wrong password: {other:?}"),
    }
    assert_eq!(
        conn.command(&["AUTH", "s3cr:t @x"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(conn.command(&["GET", "k"]).unwrap(), bulk("v"));
}

#[test]
fn unix_socket() {
    let server = RedisServer::builder().unix_socket(true).start();
    assert!(server.addr().is_none());
    let path = server.socket_path().unwrap().to_owned();
    assert!(path.ends_with("redis.sock"));
    assert_eq!(server.url(), format!("redis+unix://{}", path.display()));
    assert_eq!(
        server.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    let mut conn = Connection::unix(&path).unwrap();
    assert_eq!(conn.command(&["INCR", "n"]).unwrap(), Reply::Integer(1));
    let info = server.command(&["INFO", "server"]).unwrap();
    assert!(info.as_str().unwrap().contains("tcp_port:0"));
}

#[test]
fn unix_socket_with_password() {
    let server = RedisServer::builder()
        .unix_socket(true)
        .password("pw&1")
        .start();
    assert!(
        server.url().ends_with("/redis.sock?pass=pw%261"),
        "{}",
        server.url()
    );
    assert_eq!(
        server.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    let mut conn = Connection::unix(server.socket_path().unwrap()).unwrap();
    assert!(conn.command(&["PING"]).unwrap().is_error());
}

#[test]
fn kill_then_restart_on_the_same_port() {
    let mut server = RedisServer::start();
    let url = server.url();
    let pid = server.pid();
    server.command(&["SET", "k", "v"]).unwrap();
    server.kill();
    assert!(!pid_alive(pid), "redis-server {pid} survived kill");
    assert!(server.command(&["PING"]).is_err());
    server.kill(); // idempotent

    server.restart();
    assert_ne!(server.pid(), pid);
    assert_eq!(server.url(), url);
    assert_eq!(
        server.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    // Without persistence the data is gone.
    assert_eq!(server.command(&["GET", "k"]).unwrap(), Reply::Bulk(None));
}

#[test]
fn restart_of_a_running_server_stops_it_first() {
    let mut server = RedisServer::builder().unix_socket(true).start();
    let pid = server.pid();
    server.restart();
    assert!(!pid_alive(pid));
    assert_eq!(
        server.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
}

#[test]
fn appendonly_data_survives_a_crash() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .password("pw")
        .start();
    let aof = server.command(&["CONFIG", "GET", "appendfsync"]).unwrap();
    assert_eq!(
        aof,
        Reply::Array(Some(vec![bulk("appendfsync"), bulk("always")]))
    );
    server.command(&["SET", "k", "v"]).unwrap();
    server.command(&["XADD", "s", "*", "f", "1"]).unwrap();
    server.kill();
    server.restart();
    assert_eq!(server.command(&["GET", "k"]).unwrap(), bulk("v"));
    assert_eq!(server.command(&["XLEN", "s"]).unwrap(), Reply::Integer(1));
}

#[test]
fn appendonly_data_survives_a_clean_stop() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .unix_socket(true)
        .start();
    server.command(&["SET", "k", "v"]).unwrap();
    let pid = server.pid();
    server.stop();
    assert!(!pid_alive(pid));
    assert!(server.command(&["PING"]).is_err());
    server.restart();
    assert_eq!(server.command(&["GET", "k"]).unwrap(), bulk("v"));
}

#[test]
fn drop_kills_the_server_and_removes_its_dir() {
    let server = RedisServer::builder()
        .unix_socket(true)
        .appendonly(true)
        .start();
    let pid = server.pid();
    let dir = server.socket_path().unwrap().parent().unwrap().to_owned();
    assert!(dir.is_dir());
    drop(server);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn a_panicking_test_still_kills_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let server = RedisServer::start();
        tx.send(server.pid()).unwrap();
        panic!("the test fails");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!pid_alive(pid));
}
