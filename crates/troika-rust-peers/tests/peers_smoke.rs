//! The peers binary at small sizes: every workload on every peer prints one
//! JSON line per (workload, mode[, size]) with sane numbers.

use std::collections::BTreeSet;
use std::process::Command;

fn peers(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_troika-rust-peers"))
        .args(args)
        .output()
        .expect("the peers binary runs");
    (
        out.status,
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_workload_on_every_peer() {
    let (status, stdout, stderr) = peers(&[
        "--tasks",
        "4",
        "--workers",
        "2",
        "--payload-sizes",
        "8,65536,1048576",
        "--deadline-s",
        "120",
    ]);
    assert!(status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for row in &rows {
        assert!(row.get("hung").is_none(), "a peer hung: {row}");
        assert!(row["wall_s"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["tasks"], 4, "{row}");
    }
    let modes_of = |workload: &str| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r["workload"] == workload)
            .map(|r| r["mode"].as_str().unwrap().to_owned())
            .collect()
    };
    for workload in ["cpu", "io", "overhead", "payload"] {
        let modes = modes_of(workload);
        for mode in [
            "rayon::spawn",
            "tokio::spawn",
            "tokio::spawn_blocking",
            "threadpool",
            "procspawn::Pool",
        ] {
            assert!(modes.contains(mode), "{workload} lacks {mode}: {stdout}");
        }
    }
    assert!(modes_of("cpu").contains("rayon::par_iter"), "{stdout}");
    for row in rows.iter().filter(|r| r["workload"] == "overhead") {
        assert!(row["tasks_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["p99_us"].as_f64().unwrap() >= row["p50_us"].as_f64().unwrap());
    }
    let payload: Vec<_> = rows.iter().filter(|r| r["workload"] == "payload").collect();
    assert_eq!(payload.len(), 5 * 3, "5 peers × 3 sizes: {stdout}");
    for row in payload {
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["payload_bytes"].as_u64().unwrap() >= 8, "{row}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for args in [
        &["--workload", "nope"][..],
        &["--tasks", "0"],
        &["--workers", "x"],
        &["--payload-sizes", "0"],
        &["--deadline-s", "-1"],
        &["--frobnicate"],
    ] {
        let (status, _, stderr) = peers(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("troika-rust-peers: "),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
