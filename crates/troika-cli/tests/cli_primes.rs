//! `troika primes` end to end: inputs, output formats, order, bad tokens.

mod common;

use std::process::Output;

fn troika(args: &[&str], stdin: &[u8]) -> Output {
    common::run_troika(args, Some(stdin))
}

fn stdout(out: &Output) -> String {
    common::text(&out.stdout)
}

#[test]
fn arguments_in_every_mode_and_algorithm_give_lines_in_input_order() {
    for mode in ["serial", "threads", "processes", "async"] {
        for algorithm in ["trial", "miller-rabin"] {
            let out = troika(
                &[
                    "primes",
                    "--mode",
                    mode,
                    "--algorithm",
                    algorithm,
                    "97",
                    "561",
                    "2",
                    "1",
                    "112272535095293",
                ],
                b"",
            );
            assert!(
                out.status.success(),
                "{mode}/{algorithm}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                stdout(&out),
                "97 prime\n561 composite\n2 prime\n1 composite\n112272535095293 prime\n",
                "{mode}/{algorithm}"
            );
        }
    }
}

#[test]
fn json_reports_the_factor_under_trial_and_null_under_miller_rabin() {
    let out = troika(
        &["primes", "--json", "--algorithm", "trial", "561", "7"],
        b"",
    );
    assert_eq!(
        stdout(&out),
        "{\"n\":561,\"prime\":false,\"factor\":3}\n{\"n\":7,\"prime\":true,\"factor\":null}\n"
    );
    let out = troika(&["primes", "--json", "561"], b"");
    assert_eq!(
        stdout(&out),
        "{\"n\":561,\"prime\":false,\"factor\":null}\n"
    );
}

#[test]
fn bad_tokens_get_their_own_error_line_and_a_nonzero_exit() {
    let input = "5\nabc\n-3\n18446744073709551616\n\n6\n\u{0661}\n\u{ff}\n";
    for mode in ["processes", "async", "serial"] {
        let other = troika(&["primes", "--json", "--mode", mode], input.as_bytes());
        let threads = troika(&["primes", "--json"], input.as_bytes());
        assert_eq!(stdout(&other), stdout(&threads), "{mode}");
    }
    let out = troika(&["primes", "--json"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "one line per input line");
    assert_eq!(lines[0]["n"], 5);
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("'abc' is not a number")
    );
    assert!(lines[2]["error"].as_str().unwrap().contains("negative"));
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .contains("past u64::MAX")
    );
    assert!(lines[4]["error"].as_str().unwrap().contains("empty"));
    assert_eq!(lines[5]["prime"], false);
    assert!(lines[6]["error"].as_str().unwrap().contains("not a number"));
    assert_eq!(lines[6]["input"], "\u{0661}");
    assert!(lines[7]["error"].is_string());
}

#[test]
fn a_file_and_a_long_stdin_are_answered_in_order() {
    let dir = std::env::temp_dir().join(format!("troika-primes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("numbers.txt");
    let numbers: Vec<u64> = (1_000_000u64..1_020_000).collect();
    let text: String = numbers.iter().map(|n| format!("{n}\r\n")).collect();
    std::fs::write(&path, &text).unwrap();
    let from_file = troika(&["primes", "--input", path.to_str().unwrap()], b"");
    let from_stdin = troika(&["primes", "--workers", "3"], text.as_bytes());
    let from_processes = troika(&["primes", "--mode", "processes"], text.as_bytes());
    let from_async = troika(&["primes", "--mode", "async"], text.as_bytes());
    assert_eq!(stdout(&from_file), stdout(&from_processes));
    assert_eq!(stdout(&from_file), stdout(&from_async));
    assert!(from_file.status.success());
    assert_eq!(stdout(&from_file), stdout(&from_stdin));
    let lines: Vec<String> = stdout(&from_file).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), numbers.len());
    for (n, line) in numbers.iter().zip(&lines) {
        assert!(line.starts_with(&format!("{n} ")), "{line}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" prime")).count(),
        1_472,
        "primes in [1e6, 1.02e6)"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["primes", "--mode", "nonsense", "5"][..],
        &["primes", "--workers", "0", "5"],
        &["primes", "--algorithm", "guess", "5"],
        &["primes", "--input", "/nonexistent/troika", "5"],
        &["primes", "--input", "/nonexistent/troika"],
    ] {
        let out = troika(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
