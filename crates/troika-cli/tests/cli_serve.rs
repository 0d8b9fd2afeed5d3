//! `troika serve` end to end: the real binary on 127.0.0.1, port 0, driven by
//! a raw HTTP/1.1 client. Every endpoint, every bad input, the limits
//! (including the head limit and the header read timeout), backends that hang, fail or
//! reset, a failing pool worker, load shedding, the request deadline, and a
//! graceful shutdown with a request in flight. Nothing leaves loopback.
//! Hostile clients: `serve_limits.rs`; shutdown and abandoned checks:
//! `serve_shutdown.rs`; backends that hang: `serve_backends.rs`.

mod common;
mod serve_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use serde_json::{Value, json};
use serve_support::{
    ApiMode, GENEROUS, Server, TinyApi, error_of, request, request_raw, wait_for_exit, wait_until,
};

fn get(server: &Server, target: &str) -> serve_support::Reply {
    request(server.addr, "GET", target, None)
}

#[test]
fn is_prime_answers_an_object_keyed_by_number_and_a_list_in_input_order() {
    let server = Server::start("", "");
    let reply = get(&server, "/is_prime/2,3,4,3,007,1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"2": true, "3": true, "4": false, "7": true, "1": false})
    );
    let reply = get(&server, "/is_prime/2,3,4,3?format=list");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!([
            {"n": 2, "prime": true},
            {"n": 3, "prime": true},
            {"n": 4, "prime": false},
            {"n": 3, "prime": true}
        ])
    );
    // 112272535095293 by trial division, and u64::MAX's neighbours.
    let reply = get(&server, "/is_prime/112272535095293,561?algorithm=trial");
    assert_eq!(reply.json(), json!({"112272535095293": true, "561": false}));
    let reply = get(
        &server,
        "/is_prime/18446744073709551615,18446744073709551557?algorithm=miller-rabin",
    );
    assert_eq!(
        reply.json(),
        json!({"18446744073709551615": false, "18446744073709551557": true})
    );
    // A long list is a few pool tasks and still in order.
    let list: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
    let reply = get(
        &server,
        &format!("/is_prime/{}?format=list", list.join(",")),
    );
    assert_eq!(reply.status, 200);
    let items = reply.json();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 1000);
    assert_eq!(items[997], json!({"n": 997, "prime": true}));
    assert_eq!(items[999], json!({"n": 999, "prime": false}));
}

#[test]
fn bad_numbers_get_400_naming_the_bad_token() {
    let server = Server::start("", "");
    let cases: &[(&str, &str)] = &[
        ("/is_prime/12,abc,5", "'abc'"),
        ("/is_prime/1,,2", "empty item at position 2"),
        ("/is_prime/1,2,", "empty item at position 3"),
        ("/is_prime/-5", "'-5' is negative"),
        (
            "/is_prime/18446744073709551616",
            "'18446744073709551616' is past u64::MAX",
        ),
        ("/is_prime/1e5", "'1e5'"),
        ("/is_prime/0x10", "'0x10'"),
        ("/is_prime/+5", "'+5'"),
        ("/is_prime/%205", "' 5'"),
        // Arabic-Indic digits, percent-encoded.
        ("/is_prime/%D9%A1%D9%A2", "'١٢'"),
        ("/is_prime/%FF", "Invalid UTF-8"),
        ("/is_prime/", "empty list"),
        ("/is_prime", "empty list"),
        ("/is_prime/7?algorithm=fast", "unknown algorithm 'fast'"),
        ("/is_prime/7?format=xml", "unknown format 'xml'"),
        ("/is_prime/7?colour=red", "unknown query parameter 'colour'"),
    ];
    for (target, expected) in cases {
        let reply = get(&server, target);
        assert_eq!(reply.status, 400, "{target}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = error_of(&reply);
        assert!(error.contains(expected), "{target}: {error}");
    }
    // The server is unharmed.
    assert_eq!(get(&server, "/is_prime/7").status, 200);
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let server = Server::start("", "");
    let reply = get(&server, "/nope");
    assert_eq!(reply.status, 404);
    assert!(error_of(&reply).contains("/nope"));
    let reply = get(&server, "/is_prime/1/2");
    assert_eq!(reply.status, 404);
    let reply = request(server.addr, "DELETE", "/healthz", None);
    assert_eq!(reply.status, 405);
    assert!(error_of(&reply).contains("DELETE"));
}

#[test]
fn post_takes_a_json_array_of_numbers_or_digit_strings() {
    let server = Server::start("", "[limits]\nmax_post_numbers = 50\n");
    let post = |body: &str| request(server.addr, "POST", "/is_prime", Some(body.as_bytes()));
    let reply = post(r#"[2, "3", 4, 2, "18446744073709551557"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"2": true, "3": true, "4": false, "18446744073709551557": true})
    );
    let reply = request(
        server.addr,
        "POST",
        "/is_prime?format=list&algorithm=trial",
        Some(b"[9, 9]"),
    );
    assert_eq!(
        reply.json(),
        json!([{"n": 9, "prime": false}, {"n": 9, "prime": false}])
    );
    for (body, expected) in [
        ("[1, -5]", "item 2: '-5' is negative"),
        ("[1.5]", "'1.5'"),
        ("[1e3]", "'1e3'"),
        ("[18446744073709551616]", "past u64::MAX"),
        (r#"["12a"]"#, "'12a'"),
        (r#"[""]"#, "empty item at position 1"),
        ("[null]", "'null'"),
        ("[]", "empty list"),
        ("{\"n\": 1}", "JSON array"),
        ("not json", "JSON array"),
    ] {
        let reply = post(body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(
            error_of(&reply).contains(expected),
            "{body}: {}",
            reply.body
        );
    }
    let many: Vec<String> = (0..51).map(|n| n.to_string()).collect();
    let reply = post(&format!("[{}]", many.join(",")));
    assert_eq!(reply.status, 400);
    assert!(error_of(&reply).contains("too many numbers: 51"));
    // Past the body limit (numbers × 32 bytes + 4 KiB): 413, still JSON.
    let huge = format!("[{}]", "1,".repeat(4000) + "1");
    let reply = post(&huge);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(error_of(&reply).contains("larger than"));
}

#[test]
fn get_count_limit_is_checked_before_parsing() {
    let server = Server::start("", "[limits]\nmax_get_numbers = 10\n");
    let eleven = ["x"; 11].join(",");
    let reply = get(&server, &format!("/is_prime/{eleven}"));
    assert_eq!(reply.status, 400);
    assert!(error_of(&reply).contains("too many numbers: 11"));
    let ten = ["5"; 10].join(",");
    assert_eq!(get(&server, &format!("/is_prime/{ten}")).status, 200);
}

#[test]
fn a_uri_past_the_head_limit_gets_431_as_json() {
    let server = Server::start("", "");
    let target = format!("/is_prime/{}", "1,".repeat(40_000));
    let reply = get(&server, &target);
    assert_eq!(reply.status, 431);
    assert!(error_of(&reply).contains("larger than 32768 bytes"));
    assert_eq!(get(&server, "/healthz").status, 200);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_dropped() {
    let server = Server::start("", "[limits]\nheader_read_timeout_secs = 0.3\n");
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The server closes the connection: read returns end-of-file (or a
    // reset), not a timeout.
    let mut buf = Vec::new();
    let outcome = stream.read_to_end(&mut buf);
    if let Err(e) = &outcome {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server kept a slowloris connection open: {e}"
        );
    }
    assert_eq!(get(&server, "/healthz").status, 200);
}

#[test]
fn healthz_and_metrics() {
    let server = Server::start("", "");
    let reply = get(&server, "/healthz");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert_eq!(get(&server, "/is_prime/7").status, 200);
    assert_eq!(get(&server, "/is_prime/x").status, 400);
    let reply = get(&server, "/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.body;
    for line in [
        "troika_serve_requests_total{route=\"/is_prime/{numbers}\",status=\"200\"} 1",
        "troika_serve_requests_total{route=\"/is_prime/{numbers}\",status=\"400\"} 1",
        "troika_serve_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "troika_serve_request_duration_seconds_count{route=\"/is_prime/{numbers}\"} 2",
        "# TYPE troika_serve_request_duration_seconds histogram",
        "troika_serve_pool_queue_depth{pool=\"threads\"} 0",
        "troika_serve_pool_workers{pool=\"threads\"} 2",
        "troika_serve_pool_worker_restarts_total{pool=\"threads\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("troika_serve_pool_busy_workers{pool=\"threads\"}"));
}

#[test]
fn index_fans_out_to_the_demo_file_database_and_api() {
    let server = Server::start("", "");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"result_file": "file result", "result_db": "db result", "result_api": "api result"})
    );
    // The demo database is a real SQLite file made on first start.
    let db = server.dir.join("demo.sqlite3");
    let header = std::fs::read(&db).unwrap();
    assert!(header.starts_with(b"SQLite format 3\0"));
}

#[test]
fn configured_backends_are_read_for_real() {
    let tiny = TinyApi::start(ApiMode::Json(r#"{"answer": 42}"#));
    let scratch = serve_support::scratch("real-backends");
    let file = scratch.join("greeting.txt");
    std::fs::write(&file, "hello from a file\n").unwrap();
    let rest = format!(
        "[backends.file]\npath = {file:?}\ndelay_secs = 0\n\
         [backends.db]\nquery = \"SELECT 6 * 7\"\ndelay_secs = 0\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"result_file": "hello from a file", "result_db": 42, "result_api": {"answer": 42}})
    );
}

fn with_api(mode: ApiMode, timeout: &str) -> (TinyApi, Server) {
    let tiny = TinyApi::start(mode);
    let rest = format!(
        "[backends.file]\ndelay_secs = 0\n[backends.db]\ndelay_secs = 0\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\ntimeout_secs = {timeout}\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    (tiny, server)
}

#[test]
fn the_api_backend_follows_up_to_five_redirects() {
    let (_tiny, server) = with_api(ApiMode::Redirects(5, r#""moved""#), "5");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result_api"], "moved", "{}", reply.body);

    let (_tiny, server) = with_api(ApiMode::Redirects(6, r#""moved""#), "5");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_api"], Value::Null, "{body}");
    let error = body["errors"]["api"].as_str().unwrap_or_default();
    assert!(error.contains("more than 5 redirects"), "{body}");
}

#[test]
fn an_api_that_hangs_times_out_and_the_rest_still_answers() {
    let (_tiny, server) = with_api(ApiMode::Hang, "0.3");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_api"], Value::Null);
    assert_eq!(body["result_file"], "file result");
    assert_eq!(body["result_db"], "db result");
    assert_eq!(body["errors"], json!({"api": "timed out after 0.3 s"}));
}

#[test]
fn an_api_that_fails_with_500_is_reported() {
    let (_tiny, server) = with_api(ApiMode::Status500, "5");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_api"], Value::Null);
    let error = body["errors"]["api"].as_str().unwrap();
    assert!(error.contains("500"), "{error}");
}

#[test]
fn an_api_that_resets_the_connection_is_reported() {
    let (_tiny, server) = with_api(ApiMode::Reset, "5");
    let reply = get(&server, "/");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["result_api"], Value::Null);
    let error = body["errors"]["api"].as_str().unwrap();
    assert!(error.contains("request failed"), "{error}");
    assert_eq!(body["result_file"], "file result");
}

#[test]
fn all_backends_timing_out_is_504_and_all_failing_is_502() {
    let tiny = TinyApi::start(ApiMode::Hang);
    let rest = format!(
        "[backends.file]\ndelay_secs = 30\ntimeout_secs = 0.2\n\
         [backends.db]\ndelay_secs = 30\ntimeout_secs = 0.2\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\ntimeout_secs = 0.2\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    let reply = get(&server, "/");
    assert_eq!(reply.status, 504, "{}", reply.body);
    let body = reply.json();
    for name in ["file", "db", "api"] {
        assert_eq!(body["errors"][name], "timed out after 0.2 s", "{body}");
    }
    drop(server);

    let tiny = TinyApi::start(ApiMode::Status500);
    let rest = format!(
        "[backends.file]\npath = \"/nonexistent/troika/file\"\ndelay_secs = 0\n\
         [backends.db]\nquery = \"SELECT nope FROM nowhere\"\ndelay_secs = 0\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\n",
        tiny.url()
    );
    let server = Server::start("", &rest);
    let reply = get(&server, "/");
    assert_eq!(reply.status, 502, "{}", reply.body);
    let body = reply.json();
    assert!(
        body["errors"]["file"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/troika/file")
    );
    assert!(body["errors"]["db"].as_str().unwrap().contains("nowhere"));
    assert!(body["errors"]["api"].as_str().unwrap().contains("500"));
    assert_eq!(body["result_file"], Value::Null);
}

#[test]
fn a_failing_pool_worker_gives_503_and_the_next_request_succeeds() {
    let server = Server::start("", "[faults]\ncrash_on = [4242]\n");
    let reply = get(&server, "/is_prime/7,4242");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(error_of(&reply).contains("retry"));
    let reply = get(&server, "/is_prime/7");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"7": true}));
}

#[test]
fn the_process_pool_answers_and_survives_a_worker_that_really_dies() {
    let server = Server::start("pool = \"processes\"", "[faults]\ncrash_on = [4242]\n");
    let reply = get(&server, "/is_prime/2,561,112272535095293?algorithm=trial");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"2": true, "561": false, "112272535095293": true})
    );
    // The worker aborts (a real crash): this request fails alone with 503...
    let reply = get(&server, "/is_prime/7,4242");
    assert_eq!(reply.status, 503, "{}", reply.body);
    // ...and the replaced worker serves the next one.
    let reply = get(&server, "/is_prime/7");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"7": true}));
    let metrics = get(&server, "/metrics").body;
    assert!(metrics.contains("restarts"), "{metrics}");
}

/// Primes above 2^44: trial division needs about 2 million divisions each.
fn slow_primes(count: usize) -> Vec<String> {
    let mut n = 1u64 << 44;
    let mut found = Vec::new();
    while found.len() < count {
        n += 1;
        if troika_workloads::primes::is_prime_miller_rabin(n) {
            found.push(n.to_string());
        }
    }
    found
}

#[test]
fn a_request_past_its_deadline_gets_504_and_the_pool_keeps_serving() {
    let server = Server::start("", "[limits]\nrequest_deadline_secs = 0.1\n");
    // About 1000 × 2 M divisions: far more than 0.1 s on two workers.
    let list = slow_primes(1000).join(",");
    let reply = get(&server, &format!("/is_prime/{list}?algorithm=trial"));
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(error_of(&reply).contains("deadline"));
    // Queued chunks were cancelled, running ones stopped: the pool answers.
    let reply = get(&server, "/is_prime/7");
    assert_eq!(reply.status, 200);
    wait_until("the pool to go idle", || {
        get(&server, "/metrics")
            .body
            .contains("troika_serve_pool_busy_workers{pool=\"threads\"} 0")
    });
}

#[test]
fn a_full_pool_queue_sheds_load_with_503() {
    // One worker and room for two queued tasks. With one worker a request
    // is two chunks: the first request's first chunk runs, its second waits;
    // the second request's first chunk fills the queue and its second is refused.
    let server = Server::start(
        "workers = 1\n",
        "[limits]\npool_queue_capacity = 2\nrequest_deadline_secs = 60\n",
    );
    let addr = server.addr;
    let slow = slow_primes(400);
    let first = slow[..200].join(",");
    let second = slow[200..].join(",");
    let metric = |name: &str| -> u64 {
        let text = request(addr, "GET", "/metrics", None).body;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let busy = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            &format!("/is_prime/{first}?algorithm=trial"),
            None,
        )
    });
    wait_until("the worker to be busy", || {
        metric("troika_serve_pool_busy_workers") == 1
            && metric("troika_serve_pool_queue_depth") == 1
    });
    let reply = request(
        addr,
        "GET",
        &format!("/is_prime/{second}?algorithm=trial"),
        None,
    );
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(error_of(&reply).contains("queue is full"));
    assert!(metric("troika_serve_shed_requests_total") >= 1);
    drop(server);
    let _ = busy.join();
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits() {
    let tiny = TinyApi::start(ApiMode::Held);
    let rest = format!(
        "[backends.file]\ndelay_secs = 0\n[backends.db]\ndelay_secs = 0\n\
         [backends.api]\nurl = \"{}\"\ndelay_secs = 0\ntimeout_secs = 60\n",
        tiny.url()
    );
    let mut server = Server::start("shutdown_grace_secs = 30\n", &rest);
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || request(addr, "GET", "/", None));
    // The API backend got the call: the request is in flight.
    tiny.wait_for_request();
    server.signal(rustix::process::Signal::TERM);
    server.wait_for_line("shutting down (SIGTERM)");
    // No new connections are accepted.
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
    tiny.release();
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result_api"], "late api result");
    let status = wait_for_exit(&mut server.child);
    assert!(status.success(), "exit status {status}");
    server.wait_for_line("stopped");
}

#[test]
fn sigint_stops_an_idle_server() {
    let mut server = Server::start("", "");
    server.signal(rustix::process::Signal::INT);
    let status = wait_for_exit(&mut server.child);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn startup_errors_are_clear_and_exit_non_zero() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = serve_support::troika(&["serve", "--port", &port]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot listen on 127.0.0.1"),
        "{}",
        out.stderr
    );

    let scratch = serve_support::scratch("bad-config");
    for (text, expected) in [
        ("[limits]\nmax_get_numbers = 0\n", "max_get_numbers"),
        ("[limits]\nmistyped = 1\n", "mistyped"),
        ("[backends.api]\nurl = \"ftp://x\"\n", "only http and https"),
        ("this is not toml", "bad --config"),
        ("[backends.file]\ntimeout_secs = -1\n", "timeout_secs"),
        (
            "[backends.api]\ntimeout_secs = 1e19\n",
            "timeout_secs must be a number of seconds above 0 and at most 1e9",
        ),
        (
            "[limits]\nrequest_deadline_secs = 1e300\n",
            "request_deadline_secs must be a number of seconds above 0 and at most 1e9",
        ),
        (
            "[limits]\nmax_head_bytes = 10\n",
            "limits.max_head_bytes must be between 1024 and 1048576 (got 10)",
        ),
        (
            "[limits]\nbody_budget_bytes = 1000\n",
            "limits.body_budget_bytes (1000) must hold at least one body",
        ),
        (
            "[backends.db]\nmax_concurrent = 0\n",
            "backends.db.max_concurrent must be at least 1",
        ),
    ] {
        let path = scratch.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out =
            serve_support::troika(&["serve", "--port", "0", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        assert!(out.stderr.contains(expected), "{text}: {}", out.stderr);
    }
    let out = serve_support::troika(&["serve", "--config", "/nonexistent/troika.toml"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot read --config"),
        "{}",
        out.stderr
    );

    for (args, expected) in [
        (
            &["serve", "--workers", "0"][..],
            "--workers must be at least 1",
        ),
        (&["serve", "--port", "http"][..], "--port"),
        (&["serve", "--port", "70000"][..], "--port"),
        (&["serve", "--pool", "fibers"][..], "fibers"),
    ] {
        let out = serve_support::troika(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn request_raw_handles_pipelined_garbage_without_harm() {
    let server = Server::start("", "");
    let reply = request_raw(server.addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(get(&server, "/healthz").status, 200);
}
