//! `GET /`'s backends do not poison each other (issue 13, item 8): a file
//! backend that blocks forever leaves the database its threads; the
//! service's calls to its own demo API do not count against the clients'
//! `max_in_flight`; a request deadline shorter than a backend's timeout
//! still returns the backends that answered. The real binary on 127.0.0.1,
//! port 0.

mod common;
mod serve_support;

use serde_json::json;
use serve_support::{ApiMode, Server, TinyApi, request};

#[test]
fn a_file_backend_that_blocks_does_not_starve_the_database() {
    let scratch = serve_support::scratch("fifo");
    let fifo = scratch.join("never-written");
    // Opening a FIFO for reading blocks until a writer comes: none will.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let tiny = TinyApi::start(ApiMode::Json(r#""api""#));
    let rest = format!(
        "[backends.file]\npath = {fifo:?}\ndelay_secs = 0\ntimeout_secs = 0.2\n\
         [backends.db]\ndelay_secs = 0\ntimeout_secs = 5\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    let addr = server.addr;
    // More requests than tokio's blocking pool has threads (512): each one
    // leaves a thread stuck in open(2) on the FIFO.
    let clients: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let reply = request(addr, "GET", "/", None);
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    assert_eq!(reply.json()["result_file"], serde_json::Value::Null);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let reply = request(addr, "GET", "/", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_db"], "db result", "{body}");
    assert_eq!(body["result_api"], "api", "{body}");
    assert_eq!(body["result_file"], serde_json::Value::Null, "{body}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_demo_api_call_does_not_count_against_max_in_flight() {
    let server = Server::start(
        "",
        "[limits]\nmax_in_flight = 1\n\
         [backends.file]\ndelay_secs = 0\n[backends.db]\ndelay_secs = 0\n\
         [backends.api]\ndelay_secs = 0\n",
    );
    let reply = request(server.addr, "GET", "/", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"result_file": "file result", "result_db": "db result", "result_api": "api result"})
    );
}

#[test]
fn a_deadline_shorter_than_a_backend_timeout_keeps_the_answers() {
    let tiny = TinyApi::start(ApiMode::Hang);
    let rest = format!(
        "[limits]\nrequest_deadline_secs = 0.5\n\
         [backends.file]\ndelay_secs = 0\n[backends.db]\ndelay_secs = 0\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\ntimeout_secs = 60\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    let reply = request(server.addr, "GET", "/", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_file"], "file result", "{body}");
    assert_eq!(body["result_db"], "db result", "{body}");
    assert_eq!(body["result_api"], serde_json::Value::Null, "{body}");
    let error = body["errors"]["api"].as_str().unwrap_or_default();
    assert!(error.contains("deadline"), "{body}");
}
