//! `troika bench --workload payload` and `--compare-rust` end to end.

use std::process::{Command, Output};

fn troika(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troika"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the troika binary runs")
}

/// The JSON rows of `troika bench --workload payload --tasks 4 --workers 2
/// --json` with `more` arguments, which must succeed.
fn payload_rows(more: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "bench",
        "--workload",
        "payload",
        "--tasks",
        "4",
        "--workers",
        "2",
        "--json",
    ];
    args.extend_from_slice(more);
    let out = troika(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn payload_reports_mb_per_s_for_each_size_and_the_memcpy_limit() {
    let rows = payload_rows(&["--modes", "threads,async"]);
    for mode in ["threads", "async"] {
        let mut sizes: Vec<u64> = rows
            .iter()
            .filter(|r| r["mode"] == mode)
            .map(|r| r["payload_bytes"].as_u64().unwrap())
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [8, 64 << 10, 1 << 20, 64 << 20], "{mode}: {rows:?}");
    }
    for row in &rows {
        assert_eq!(row["workload"], "payload", "{row}");
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
        if row["mode"] != "memcpy" {
            assert_eq!(row["tasks"], 4, "{row}");
            assert!(row["p50_us"].as_f64().unwrap() > 0.0, "{row}");
            assert!(row["p99_us"].as_f64().unwrap() >= row["p50_us"].as_f64().unwrap());
        }
    }
    assert_eq!(
        rows.iter().filter(|r| r["mode"] == "memcpy").count(),
        1,
        "one memcpy row: {rows:?}"
    );
}

#[test]
fn payload_crosses_to_worker_processes() {
    let rows = payload_rows(&["--modes", "processes", "--payload-sizes", "8,65536"]);
    let processes: Vec<_> = rows.iter().filter(|r| r["mode"] == "processes").collect();
    assert_eq!(processes.len(), 2, "{rows:?}");
    for row in processes {
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
    }
}

#[test]
fn bad_payload_options_are_refused() {
    for args in [
        &["bench", "--workload", "payload", "--payload-sizes", "0"][..],
        &["bench", "--workload", "payload", "--curve-max", "10"],
        &["bench", "--workload", "nope"],
    ] {
        let out = troika(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn compare_rust_without_the_peers_binary_says_how_to_build_it() {
    let out = troika(
        &[
            "bench",
            "--workload",
            "overhead",
            "--tasks",
            "4",
            "--modes",
            "threads",
            "--compare-rust",
        ],
        &[("TROIKA_RUST_PEERS", "/nonexistent/troika-rust-peers")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--compare-rust skipped")
            && stderr.contains("cargo build --release -p troika-rust-peers"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("threads"),
        "the table is still printed: {stdout}"
    );
}
