//! `troika crawl` end to end, against a real HTTP server on 127.0.0.1.

mod common;
mod support;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{STALL_BYTES, Servers, closed_port, unanswered_port};

/// Run `troika crawl` with `args`, feeding `stdin` (if any); a crawl that
/// hangs is killed at the outer deadline and fails the test.
fn crawl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let args: Vec<&str> = std::iter::once("crawl")
        .chain(args.iter().copied())
        .collect();
    common::run_troika(&args, stdin)
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("stdout is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

fn stderr(out: &Output) -> String {
    common::text(&out.stderr)
}

/// The records keyed by URL (each URL appears once in these tests).
fn by_url(records: &[Value]) -> HashMap<String, Value> {
    records
        .iter()
        .map(|r| (r["url"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn pages(servers: &Servers, n: usize, delay_ms: u64) -> Vec<String> {
    (0..n)
        .map(|i| servers.url(&format!("/page/{i}?delay_ms={delay_ms}")))
        .collect()
}

/// Input lines for pages 0..n on each of two servers, alternating.
fn on_both_hosts(servers: &Servers, n: usize, query: &str) -> String {
    let mut urls = Vec::new();
    for i in 0..n {
        for host in 0..2 {
            urls.push(servers.url_on(host, &format!("/page/{i}{query}")));
        }
    }
    urls.join("\n")
}

#[test]
fn every_url_gets_exactly_one_line_with_every_field() {
    let servers = Servers::start(1);
    let mut urls = pages(&servers, 40, 5);
    urls.push(servers.url("/status/404"));
    let input = urls.join("\n") + "\n";
    let out = crawl(&["--concurrency", "8"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = lines(&out);
    assert_eq!(records.len(), urls.len());
    let mut seen: Vec<&str> = records.iter().map(|r| r["url"].as_str().unwrap()).collect();
    seen.sort();
    let mut expected: Vec<&str> = urls.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(seen, expected);
    for record in &records {
        for field in [
            "url",
            "status",
            "bytes",
            "elapsed_ms",
            "error",
            "error_kind",
            "attempts",
        ] {
            assert!(record.get(field).is_some(), "{field} missing in {record}");
        }
    }
    let records = by_url(&records);
    let page = &records[&urls[0]];
    assert_eq!(page["status"], 200);
    assert!(page["bytes"].as_u64().unwrap() > 1000);
    assert!(page["error"].is_null());
    let missing = &records[&servers.url("/status/404")];
    assert_eq!(missing["status"], 404, "a 404 is a status");
    assert!(missing["error"].is_null(), "not an error");
    assert!(
        stderr(&out).contains("crawled 41 URLs"),
        "summary: {}",
        stderr(&out)
    );
}

#[test]
fn keep_order_writes_lines_in_input_order() {
    let servers = Servers::start(1);
    // Later URLs answer sooner, so completion order is roughly reversed.
    let urls: Vec<String> = (0..12)
        .map(|i| servers.url(&format!("/page/{i}?delay_ms={}", (12 - i) * 10)))
        .collect();
    for mode in ["async", "threads"] {
        let mut args = vec!["--keep-order", "--concurrency", "12", "--mode", mode];
        args.extend(urls.iter().map(String::as_str));
        let out = crawl(&args, None);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got: Vec<String> = lines(&out)
            .iter()
            .map(|r| r["url"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, urls, "mode {mode}");
    }
}

#[test]
fn the_concurrency_limit_holds_in_both_modes() {
    for mode in [
        &["--mode", "async"][..],
        &["--mode", "async", "--io-threads", "2"],
        &["--mode", "async", "--keep-order"],
        &["--mode", "threads"],
    ] {
        let servers = Servers::start(1);
        let urls = pages(&servers, 40, 20);
        let mut args = vec!["--concurrency", "4"];
        args.extend(mode);
        args.extend(urls.iter().map(String::as_str));
        let out = crawl(&args, None);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(lines(&out).len(), 40);
        let peak = servers.seen.peak();
        assert!((1..=4).contains(&peak), "{mode:?}: peak {peak} > 4");
    }
}

/// Issue 16: the pool opened a new connection whenever a request found none
/// idle, racing one that was about to come back, so 1,000 slots opened
/// 1,068 connections. A slot keeps its connection: N slots, at most N.
#[test]
fn n_slots_open_at_most_n_connections() {
    let servers = Servers::start(1);
    let input: Vec<String> = (0..2000)
        .map(|i| servers.url(&format!("/chunked/{i}?delay_ms=2")))
        .collect();
    let input = input.join("\n");
    let out = crawl(&["--concurrency", "64"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 2000);
    let connections = servers.seen.connections();
    assert!(
        (1..=64).contains(&connections),
        "64 slots opened {connections} connections"
    );
}

/// A server that closes each connection after its response: every request
/// needs a new one, and none fails for finding its connection closed.
#[test]
fn connections_the_server_closes_are_replaced() {
    let servers = Servers::start(1);
    let input: Vec<String> = (0..50)
        .map(|i| servers.url(&format!("/close/{i}")))
        .collect();
    let out = crawl(&["--concurrency", "4"], Some(input.join("\n").as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = lines(&out);
    assert_eq!(records.len(), 50);
    assert!(
        records
            .iter()
            .all(|r| r["status"] == 200 && r["bytes"] == 7)
    );
    assert_eq!(servers.seen.connections(), 50);
}

/// A server on 127.0.0.1 that answers each request as if the connection
/// stayed open (no `Connection: close`) and then closes it; returns its
/// port and the count of connections it accepted.
fn silent_closer() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
            );
            // Dropped here: closed, though the response did not say so.
        }
    });
    (port, accepted)
}

/// An idle connection is polled by nobody: one the server closed while it
/// sat in the pool must be found closed by the next fetch to its origin,
/// which then opens a new one instead of failing.
#[test]
fn an_idle_connection_the_server_closed_silently_is_replaced() {
    let (port, accepted) = silent_closer();
    // Five requests a second to the host: each page's connection sits idle
    // in the pool, closed by the server, for 200 ms before the next page.
    let input: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{port}/p/{i}"))
        .collect();
    let out = crawl(
        &["--concurrency", "4", "--rate-per-host", "5"],
        Some(input.join("\n").as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = lines(&out);
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record["status"], 200, "{record}");
        assert!(record["error"].is_null(), "{record}");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one connection per page"
    );
}

#[test]
fn the_per_host_limit_holds() {
    let servers = Servers::start(2);
    let input = on_both_hosts(&servers, 20, "?delay_ms=20");
    let out = crawl(
        &["--concurrency", "10", "--per-host", "2"],
        Some(input.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 40);
    for &port in &servers.ports {
        let peak = servers.seen.peak_on(port);
        assert!((1..=2).contains(&peak), "port {port}: peak {peak} > 2");
    }
    assert!(servers.seen.peak() <= 4);
}

#[test]
fn redirects_are_limited_and_only_to_http() {
    let servers = Servers::start(1);
    let urls = [
        servers.url("/self-loop"),
        servers.url("/to-file"),
        servers.url("/to-ftp"),
        servers.url("/to-page"),
    ];
    let mut args = vec!["--max-redirects", "3"];
    args.extend(urls.iter().map(String::as_str));
    let out = crawl(&args, None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = by_url(&lines(&out));
    let looped = &records[&urls[0]];
    assert_eq!(looped["error_kind"], "redirect_limit", "{looped}");
    assert!(looped["error"].as_str().unwrap().contains("redirect limit"));
    assert_eq!(
        servers.seen.hits("/self-loop"),
        4,
        "the first request and 3 redirects"
    );
    for url in &urls[1..3] {
        let refused = &records[url];
        assert_eq!(refused["error_kind"], "scheme_not_allowed", "{refused}");
        assert!(refused["error"].as_str().unwrap().contains("not allowed"));
    }
    let followed = &records[&urls[3]];
    assert_eq!(followed["status"], 200);
    assert_eq!(followed["final_url"], servers.url("/page/7"));
}

#[test]
fn an_endless_body_is_cut_off_at_max_bytes() {
    let servers = Servers::start(1);
    let url = servers.url("/endless");
    let out = crawl(&["--max-bytes", "256K", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "too_large");
    assert!(record["error"].as_str().unwrap().contains("too large"));
    assert!(record["bytes"].as_u64().unwrap() <= 256 * 1024);
    assert_eq!(record["status"], 200);
}

#[test]
fn bodies_are_streamed_not_buffered() {
    // Two endless bodies read at once up to 100 MiB each: were a body held
    // in memory the crawler's peak RSS would pass 100 MiB.
    let servers = Servers::start(1);
    let url = servers.url("/endless");
    let other = format!("{url}?second");
    let out = crawl(&["--max-bytes", "100M", &url, &other], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for record in lines(&out) {
        assert_eq!(record["error_kind"], "too_large", "{record}");
        assert_eq!(record["bytes"], 100 << 20, "{record}");
    }
    let summary = stderr(&out);
    let peak: f64 = summary
        .split("peak RSS ")
        .nth(1)
        .and_then(|rest| rest.split(" MiB").next())
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the summary: {summary}"));
    assert!(peak < 64.0, "peak RSS {peak} MiB while streaming 200 MiB");
}

#[test]
fn a_server_that_never_answers_times_out_and_is_retried() {
    let servers = Servers::start(1);
    let url = servers.url("/never");
    let out = crawl(
        &[
            "--timeout",
            "0.5",
            "--retries",
            "1",
            "--backoff-ms",
            "1",
            &url,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "timeout", "{record}");
    assert!(record["error"].as_str().unwrap().contains("timed out"));
    assert_eq!(record["attempts"], 2);
    // Each attempt reached the server unless the machine was too slow to
    // deliver it within the timeout; never more than the two attempts.
    assert!(servers.seen.hits("/never") <= 2);
}

#[test]
fn a_connection_that_is_never_accepted_hits_the_connect_timeout() {
    let (_queued, _listener, port) = unanswered_port();
    let url = format!("http://127.0.0.1:{port}/");
    let out = crawl(&["--connect-timeout", "0.2", "--timeout", "60", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "timeout", "{record}");
    assert_eq!(record["error"], "connect timed out", "{record}");
}

#[test]
fn retries_happen_only_for_5xx_and_connection_errors() {
    let servers = Servers::start(1);
    let refused = format!("http://127.0.0.1:{}/", closed_port());
    let urls = [
        servers.url("/flaky/a"),
        servers.url("/status/503"),
        servers.url("/status/404"),
        servers.url("/status/400"),
        refused.clone(),
    ];
    let mut args = vec!["--retries", "2", "--backoff-ms", "1"];
    args.extend(urls.iter().map(String::as_str));
    let out = crawl(&args, None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = by_url(&lines(&out));

    let flaky = &records[&urls[0]];
    assert_eq!(flaky["status"], 200, "500 then 200: {flaky}");
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(servers.seen.hits("/flaky/a"), 2);

    let failing = &records[&urls[1]];
    assert_eq!(failing["status"], 503);
    assert_eq!(failing["attempts"], 3);
    assert_eq!(servers.seen.hits("/status/503"), 3);

    for (url, path) in [(&urls[2], "/status/404"), (&urls[3], "/status/400")] {
        assert_eq!(records[url]["attempts"], 1, "4xx is never retried");
        assert_eq!(servers.seen.hits(path), 1);
    }

    let no_server = &records[&refused];
    assert_eq!(no_server["error_kind"], "connect");
    assert_eq!(no_server["error"], "connection refused");
    assert_eq!(no_server["attempts"], 3);
}

#[test]
fn bad_input_lines_get_error_lines_and_blank_lines_none() {
    let servers = Servers::start(1);
    let good = servers.url("/page/1");
    let mut input = Vec::new();
    input.extend_from_slice(b"\n   \nnot a url\nftp://127.0.0.1/file\nhttp://\n");
    input.extend_from_slice(b"http://127.0.0.1/\xff\xfe\n");
    input.extend_from_slice(format!("  {good}  \r\n\n").as_bytes());
    let out = crawl(&[], Some(&input));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = lines(&out);
    assert_eq!(records.len(), 5, "blank lines are skipped: {records:?}");
    let kinds: HashMap<String, Value> = records
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap().to_owned(),
                r["error_kind"].clone(),
            )
        })
        .collect();
    assert_eq!(kinds["not a url"], "invalid_url");
    assert_eq!(kinds["ftp://127.0.0.1/file"], "scheme_not_allowed");
    assert_eq!(kinds["http://"], "invalid_url");
    assert_eq!(kinds[&good], Value::Null);
    let not_utf8 = records
        .iter()
        .find(|r| r["error_kind"] == "invalid_input")
        .expect("a line for the non-UTF-8 input");
    assert!(
        not_utf8["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1/")
    );
}

#[test]
fn a_page_that_is_not_utf8_and_names_no_charset_is_a_page_with_a_warning() {
    // Issue 13, item 9: a browser shows such a page (as windows-1252); it
    // is fetched, with a warning, and does not fail the exit code.
    let servers = Servers::start(1);
    let html = servers.url("/latin1");
    let plain = servers.url("/latin1-plain");
    let meta = servers.url("/latin1-meta");
    let meta_chunked = servers.url("/latin1-meta-chunked");
    let binary = servers.url("/binary");
    let out = crawl(&[&html, &plain, &meta, &meta_chunked, &binary], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = by_url(&lines(&out));
    for url in [&html, &plain] {
        let page = &records[url];
        assert_eq!(page["status"], 200, "{page}");
        assert!(page["error"].is_null(), "{page}");
        assert!(page["error_kind"].is_null(), "{page}");
        assert!(page["bytes"].as_u64().unwrap() > 0, "{page}");
        let warning = page["warning"].as_str().unwrap_or_default();
        assert!(
            warning.contains("not valid UTF-8") && warning.contains("windows-1252"),
            "{page}"
        );
    }
    // A page that names its charset in a <meta> tag is simply a page, also
    // when the tag arrives split across chunks.
    for url in [&meta, &meta_chunked] {
        assert!(records[url]["error"].is_null(), "{}", records[url]);
        assert!(records[url].get("warning").is_none(), "{}", records[url]);
    }
    assert!(records[&binary]["error"].is_null());
    assert!(records[&binary].get("warning").is_none());
    assert!(
        stderr(&out).contains("2 warnings"),
        "the summary counts them: {}",
        stderr(&out)
    );
}

#[test]
fn a_body_declared_utf8_that_is_not_is_an_error() {
    let servers = Servers::start(1);
    let url = servers.url("/latin1-declared-utf8");
    let out = crawl(&[&url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "invalid_utf8", "{record}");
    assert_eq!(record["status"], 200, "{record}");
    assert!(record["bytes"].as_u64().unwrap() > 0, "{record}");
}

#[test]
fn a_response_that_started_before_the_timeout_keeps_its_status_and_bytes() {
    // Issue 13, item 9: /stall answers 200 and its first bytes, then stalls;
    // the timeout ends the fetch, and the record still says what arrived.
    let servers = Servers::start(1);
    let stalled = servers.url("/stall");
    let redirected = format!("{}?to=/stall", servers.url("/redirect"));
    for mode in ["async", "threads"] {
        let out = crawl(
            &["--timeout", "2", "--mode", mode, &stalled, &redirected],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let records = by_url(&lines(&out));
        for url in [&stalled, &redirected] {
            let record = &records[url];
            assert_eq!(record["error_kind"], "timeout", "{mode}: {record}");
            assert_eq!(record["status"], 200, "{mode}: {record}");
            assert_eq!(record["bytes"], STALL_BYTES, "{mode}: {record}");
        }
        assert_eq!(records[&redirected]["final_url"], stalled, "{mode}");
    }
}

#[test]
fn a_timeout_before_any_response_has_no_status() {
    let servers = Servers::start(1);
    let url = servers.url("/never");
    let out = crawl(&["--timeout", "0.5", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "timeout", "{record}");
    assert!(record["status"].is_null(), "{record}");
    assert_eq!(record["bytes"], 0, "{record}");
}

#[test]
fn help_states_the_exit_codes_and_what_counts_as_an_error() {
    let out = common::run_troika(&["crawl", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Exit status"), "{help}");
    for code in ["0  ", "1  ", "2  "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(code)),
            "no line for exit status {code}in:\n{help}"
        );
    }
    for kind in [
        "invalid_url",
        "invalid_input",
        "scheme_not_allowed",
        "redirect_limit",
        "timeout",
        "connect",
        "too_large",
        "invalid_utf8",
        "request",
    ] {
        assert!(help.contains(kind), "error kind {kind} missing in:\n{help}");
    }
    assert!(help.contains("warning"), "{help}");
    assert!(help.contains("404"), "statuses are not errors:\n{help}");
}

#[test]
fn method_headers_body_and_user_agent_are_sent() {
    let servers = Servers::start(1);
    let url = servers.url("/echo");
    let out = crawl(
        &[
            "--data",
            r#"{"PageIndex":1}"#,
            "-H",
            "Content-Type: application/json; charset=UTF-8",
            "-H",
            "x-requested-with: XMLHttpRequest",
            "--user-agent",
            "seed-crawler/1.0",
            &url,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (method, headers, body) = servers.seen.echo().expect("the server saw the request");
    assert_eq!(method, "POST", "--data implies POST");
    assert_eq!(body, r#"{"PageIndex":1}"#);
    assert_eq!(headers["x-requested-with"], "XMLHttpRequest");
    assert_eq!(headers["content-type"], "application/json; charset=UTF-8");
    assert_eq!(headers["user-agent"], "seed-crawler/1.0");

    let out = crawl(&["-X", "put", &url], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(servers.seen.echo().unwrap().0, "PUT");
}

#[test]
fn redirects_change_the_method_as_browsers_do() {
    let servers = Servers::start(1);
    let via = |status: u16| format!("{}?status={status}&to=/echo", servers.url("/redirect"));
    let post = [
        "--data",
        "x=1",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
    ];

    // 303 (and 301, 302): the request goes on as a GET without its body.
    let out = crawl(&[&post[..], &[&via(303)]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (method, headers, body) = servers.seen.echo().expect("the redirect was followed");
    assert_eq!((method.as_str(), body.as_str()), ("GET", ""));
    assert!(!headers.contains_key("content-type"), "{headers:?}");
    assert!(
        lines(&out)[0]["final_url"]
            .as_str()
            .unwrap()
            .ends_with("/echo")
    );

    // 307 and 308: the same request again, body included.
    for status in [307, 308] {
        let out = crawl(&[&post[..], &[&via(status)]].concat(), None);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let (method, headers, body) = servers.seen.echo().unwrap();
        assert_eq!(
            (method.as_str(), body.as_str()),
            ("POST", "x=1"),
            "{status}"
        );
        assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    }
}

#[test]
fn credentials_go_to_their_host_only() {
    let servers = Servers::start(2);
    let with_user = |url: String| url.replacen("http://", "http://ann:p%40ss@", 1);
    let cookie = ["-H", "Cookie: session=1"];

    // Credentials in the URL become Basic auth; a same-host redirect keeps them.
    let same = format!("{}?to=/echo", servers.url_on(0, "/redirect"));
    let out = crawl(&[&cookie[..], &[&with_user(same)]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, headers, _) = servers.seen.echo().unwrap();
    assert_eq!(headers["authorization"], "Basic YW5uOnBAc3M="); // ann:p@ss
    assert_eq!(headers["cookie"], "session=1");

    // A redirect to another host:port drops them, and the cookie.
    let other = format!(
        "{}?to={}",
        servers.url_on(0, "/redirect"),
        servers.url_on(1, "/echo")
    );
    let out = crawl(&[&cookie[..], &[&with_user(other)]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, headers, _) = servers.seen.echo().unwrap();
    assert!(!headers.contains_key("authorization"), "{headers:?}");
    assert!(!headers.contains_key("cookie"), "{headers:?}");
}

#[test]
fn input_and_output_files() {
    let servers = Servers::start(1);
    let dir = std::env::temp_dir().join(format!("troika-crawl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("urls.txt");
    let output = dir.join("out.jsonl");
    std::fs::write(&input, pages(&servers, 5, 0).join("\n")).unwrap();
    let out = crawl(
        &[
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--quiet",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(out.stderr.is_empty(), "--quiet: {}", stderr(&out));
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written.lines().count(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rate_per_host_spaces_the_requests_to_each_host() {
    // 20 requests/s per host: each host's requests 50 ms apart.
    let servers = Servers::start(2);
    let n = 6;
    let input = on_both_hosts(&servers, n, "");
    let out = crawl(
        &["--rate-per-host", "20", "--concurrency", "10"],
        Some(input.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 2 * n);
    let interval = Duration::from_millis(50);
    for &port in &servers.ports {
        let arrivals = servers.seen.arrivals_on(port);
        assert_eq!(arrivals.len(), n, "port {port}");
        // Request k starts no earlier than k intervals after the first
        // turn, and arrivals are only ever later than their turns: the
        // span from the first to the last is at least (n - 1) intervals,
        // less the first one's own lateness. One interval of slack keeps
        // this a test of the spacing, not of the machine's speed (without
        // the limit the six requests arrive within milliseconds).
        let span = arrivals[n - 1] - arrivals[0];
        assert!(
            span >= interval * (n as u32 - 2),
            "port {port}: {n} requests within {span:?}, not spaced by {interval:?}"
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--concurrency", "0", "http://127.0.0.1/"][..],
        &["--header", "no colon here", "http://127.0.0.1/"],
        &["--timeout", "0", "http://127.0.0.1/"],
        &["--max-bytes", "ten", "http://127.0.0.1/"],
        &["--mode", "fibers", "http://127.0.0.1/"],
        &["--io-threads", "0", "http://127.0.0.1/"],
        &["--input", "/nonexistent/troika/urls.txt"],
    ] {
        let out = crawl(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn https_is_spoken_through_rustls() {
    // A plain-HTTP server answering a TLS client: the handshake fails, which
    // shows an https URL goes through TLS (nothing past loopback is needed).
    let servers = Servers::start(1);
    let url = format!("https://127.0.0.1:{}/page/1", servers.ports[0]);
    let out = crawl(&["--timeout", "10", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = &lines(&out)[0];
    assert_eq!(record["error_kind"], "connect", "{record}");
    assert!(record["status"].is_null());
}
