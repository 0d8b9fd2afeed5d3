//! `troika serve` under hostile clients (issue 13, item 6): request heads
//! have a limit a person would set, declared bodies past the limit are
//! refused at once, bodies in flight share one memory budget, hyper's own
//! answers (400, 414, 431) are JSON and counted, and `POST /is_prime` wants
//! `application/json`. The real binary on 127.0.0.1, port 0.

mod common;
mod serve_support;

use std::io::Write;

use serve_support::{
    Server, connect, error_of, read_reply_head, request, request_raw, request_with_head, wait_until,
};

/// The default head limit (`[limits] max_head_bytes`).
const HEAD_LIMIT: usize = 32 * 1024;

/// The default body limit: `max_post_numbers` (100,000) × 32 + 4 KiB.
const BODY_LIMIT: usize = 100_000 * 32 + 4096;

#[test]
fn a_head_past_the_limit_gets_431_as_json_and_shows_in_metrics() {
    let server = Server::start("", "");
    // 40 KB of headers: past the limit, far under hyper's own 400 KB.
    let filler = "x".repeat(40_000);
    let reply = request_with_head(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}"),
        b"",
    );
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let error = error_of(&reply);
    assert!(error.contains(&HEAD_LIMIT.to_string()), "{error}");
    // A request line past the limit is the same.
    let target = format!("/is_prime/{}", "1,".repeat(40_000));
    let reply = request(server.addr, "GET", &target, None);
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert!(error_of(&reply).contains("head"), "{}", reply.body);
    // Garbage gets hyper's 400, as JSON too.
    let raw = request_raw(server.addr, b"NOT HTTP AT ALL\r\n\r\n");
    let reply = serve_support::parse(raw.as_bytes()).expect("an answer");
    assert_eq!(reply.status, 400, "{raw}");
    assert!(error_of(&reply).contains("HTTP"), "{raw}");
    let metrics = request(server.addr, "GET", "/metrics", None).body;
    for line in [
        "troika_serve_requests_total{route=\"unparsed\",status=\"431\"} 2",
        "troika_serve_requests_total{route=\"unparsed\",status=\"400\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    // A head just under the limit is served.
    let filler = "x".repeat(HEAD_LIMIT - 1024);
    let reply = request_with_head(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}"),
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn slow_header_connections_are_bounded_and_healthz_still_answers() {
    let server = Server::start("", "");
    // Connections holding unfinished heads just under the limit.
    let partial = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}",
        "x".repeat(HEAD_LIMIT - 2048)
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut stream = connect(server.addr);
        stream.write_all(partial.as_bytes()).unwrap();
        held.push(stream);
    }
    let reply = request(server.addr, "GET", "/healthz", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // One that goes past the limit without ever finishing its head is
    // answered at once, not left until the header read timeout.
    let mut stream = connect(server.addr);
    stream.write_all(partial.as_bytes()).unwrap();
    stream.write_all(&[b'x'; 4096]).unwrap();
    let head = read_reply_head(&mut stream);
    assert_eq!(head.map(|h| h.0), Some(431));
    drop(held);
    assert_eq!(request(server.addr, "GET", "/healthz", None).status, 200);
}

#[test]
fn a_declared_body_past_the_limit_gets_413_at_once() {
    let server = Server::start("", "");
    // The body never comes: the answer must not wait for it (or for the
    // request deadline).
    let mut stream = connect(server.addr);
    stream
        .write_all(
            b"POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000000000\r\n\r\n[1",
        )
        .unwrap();
    let (status, head) = read_reply_head(&mut stream).expect("an answer");
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
}

#[test]
fn bodies_in_flight_share_a_memory_budget() {
    // Defaults: bodies up to 3.2 MB, 64 MiB of bodies at once: 20 such
    // bodies fit, the 21st is refused at once with 503.
    let server = Server::start("", "");
    let budget: usize = 64 * 1024 * 1024;
    let fit = budget / BODY_LIMIT;
    let head = format!(
        "POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {BODY_LIMIT}\r\n\r\n"
    );
    let mut held = Vec::new();
    for i in 0..fit {
        let mut stream = connect(server.addr);
        stream.write_all(head.as_bytes()).unwrap();
        // The server asks for the body once it has room for it.
        let (status, text) = read_reply_head(&mut stream).expect("an answer");
        assert_eq!(status, 100, "body {i}: {text}");
        held.push(stream);
    }
    let mut stream = connect(server.addr);
    stream.write_all(head.as_bytes()).unwrap();
    let (status, text) = read_reply_head(&mut stream).expect("an answer");
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after"), "{text}");
    // Once the held bodies are gone, their room is free again.
    drop(held);
    wait_until("the budget to be released", || {
        request(server.addr, "POST", "/is_prime", Some(b"[7]")).status == 200
    });
}

#[test]
fn post_is_prime_insists_on_application_json() {
    let server = Server::start("", "");
    let post = |content_type: Option<&str>| {
        let mut head = "POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Length: 3".to_owned();
        if let Some(value) = content_type {
            head.push_str(&format!("\r\nContent-Type: {value}"));
        }
        request_with_head(server.addr, &head, b"[7]")
    };
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let reply = post(content_type);
        assert_eq!(reply.status, 415, "{content_type:?}: {}", reply.body);
        assert!(
            error_of(&reply).contains("application/json"),
            "{}",
            reply.body
        );
    }
    for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
        let reply = post(Some(content_type));
        assert_eq!(reply.status, 200, "{content_type}: {}", reply.body);
    }
}

#[test]
fn a_chunked_body_past_the_limit_gets_413() {
    // Bodies up to 10 × 32 + 4096 = 4416 bytes; this one has no declared
    // length and goes past it chunk by chunk.
    let server = Server::start("", "[limits]\nmax_post_numbers = 10\n");
    let chunk = format!("[{}1]", "1,".repeat(1000));
    let mut body = Vec::new();
    for _ in 0..3 {
        let part = &chunk[..2000];
        body.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let reply = request_with_head(
        server.addr,
        "POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked",
        &body,
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(error_of(&reply).contains("4416"), "{}", reply.body);
    // A small chunked body is read and answered.
    let reply = request_with_head(
        server.addr,
        "POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked",
        b"3\r\n[7,\r\n3\r\n 9]\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"7": true, "9": false}));
}

/// A body that stops arriving is the client's fault: when the request
/// deadline passes while it is read, the answer is 408 (JSON), not the 504
/// that a backend past the deadline gets.
#[test]
fn a_body_that_stalls_past_the_deadline_gets_408() {
    let server = Server::start("", "[limits]\nrequest_deadline_secs = 0.5\n");
    let mut stream = connect(server.addr);
    stream
        .write_all(
            b"POST /is_prime HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n[1, 2",
        )
        .unwrap();
    let (status, head) = read_reply_head(&mut stream).expect("an answer");
    assert_eq!(status, 408, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
}
