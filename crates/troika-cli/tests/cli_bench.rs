//! `troika bench` end to end: output formats and bad input.

mod common;

use std::process::{Command, Output};

fn troika(args: &[&str]) -> Output {
    common::run_troika(args, None)
}

fn stderr(out: &Output) -> String {
    common::text(&out.stderr)
}

#[test]
fn json_lines_carry_every_field() {
    let out = troika(&[
        "bench",
        "--workload",
        "all",
        "--tasks",
        "4",
        "--workers",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let modes: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert!(
        modes.contains("serial") && modes.contains("threads") && modes.contains("async"),
        "{stdout}"
    );
    assert_eq!(
        rows.len(),
        3 * modes.len(),
        "every workload in every mode: {stdout}"
    );
    for row in &rows {
        for field in [
            "workload",
            "mode",
            "workers",
            "tasks",
            "wall_s",
            "speedup",
            "efficiency",
        ] {
            assert!(row.get(field).is_some(), "missing {field} in {row}");
        }
        assert_eq!(row["tasks"], 4);
        assert!(row["wall_s"].as_f64().unwrap() > 0.0);
        if row["workload"] == "overhead" {
            for field in ["tasks_per_s", "p50_us", "p99_us"] {
                assert!(row[field].as_f64().unwrap() > 0.0, "{field} in {row}");
            }
        }
        let workers = match (row["mode"].as_str(), row["workload"].as_str()) {
            (Some("serial"), _) => 1,
            (Some("threads"), Some("io")) => 64,
            (Some("async"), Some("io")) => 4,
            (Some("processes"), Some("io")) => 8,
            _ => 2,
        };
        assert_eq!(row["workers"], workers, "{row}");
    }
    let serial_cpu = rows
        .iter()
        .find(|r| r["workload"] == "cpu" && r["mode"] == "serial")
        .unwrap();
    assert_eq!(serial_cpu["speedup"].as_f64().unwrap(), 1.0);
}

#[test]
fn the_table_has_a_header_and_one_line_per_run() {
    let out = troika(&[
        "bench",
        "--workload",
        "cpu",
        "--modes",
        "threads",
        "--tasks",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("speedup") && lines[0].contains("efficiency"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("cpu") && lines[2].contains("threads"),
        "{stdout}"
    );
    assert_eq!(lines[3], "", "{stdout}");
    assert!(
        lines[4].starts_with("machine: ") && lines[4].contains("cores"),
        "{stdout}"
    );
    assert!(lines[5].starts_with("best: cpu → threads"), "{stdout}");
    assert_eq!(lines.len(), 6, "{stdout}");
}

#[test]
fn bad_input_is_a_clear_usage_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--tasks", "0"], "--tasks must be at least 1"),
        (&["bench", "--workers", "0"], "--workers must be at least 1"),
        (&["bench", "--repeat", "0"], "--repeat must be at least 1"),
        (
            &["bench", "--report", "/nonexistent-dir/r.html"],
            "cannot write --report",
        ),
        (&["bench", "--modes", "nonsense"], "unknown mode 'nonsense'"),
        (&["bench", "--workload", "disk"], "invalid value 'disk'"),
        (&["bench", "--tasks", "-3"], "unexpected argument '-3'"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, message) in cases {
        let out = troika(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
}

#[test]
fn help_succeeds() {
    let out = troika(&["bench", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--workload"));
}

#[test]
fn repeat_reports_the_median_and_the_range() {
    let out = troika(&[
        "bench",
        "--workload",
        "cpu",
        "--tasks",
        "2",
        "--repeat",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["runs"], 3);
        let (min, median, max) = (
            row["wall_min_s"].as_f64().unwrap(),
            row["wall_s"].as_f64().unwrap(),
            row["wall_max_s"].as_f64().unwrap(),
        );
        assert!(min <= median && median <= max, "{row}");
    }
}

#[test]
fn report_writes_a_self_contained_html_page() {
    let path = std::env::temp_dir().join(format!("troika-report-{}.html", std::process::id()));
    let out = troika(&["bench", "--tasks", "3", "--report", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for needle in [
        "<svg",
        "Wall time per mode",
        "Which worker ran which task",
        "cpu",
        "io",
        "overhead",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    // Self-contained: nothing is fetched.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
}

#[test]
fn compare_python_adds_the_python_rows_when_python3_is_present() {
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let out = troika(&[
        "bench",
        "--workload",
        "cpu",
        "--tasks",
        "2",
        "--compare-python",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let modes: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["mode"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    if has_python {
        for mode in ["python-serial", "python-threads", "python-processes"] {
            assert!(
                modes.iter().any(|m| m == mode),
                "{mode} missing from {modes:?}"
            );
        }
    } else {
        assert!(stderr(&out).contains("python3 not found"));
    }
}
