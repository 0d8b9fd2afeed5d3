//! Issue 13, item 10: every command's help speaks to someone who has never
//! seen troika's sources — it says what the experiment is instead of naming
//! "the seeds" — and the defaults it shows are the real ones.

mod common;

use serde_json::Value;

const COMMANDS: &[&str] = &["bench", "primes", "run", "crawl", "serve"];

/// The output of `troika ARGS…`, which must succeed.
fn troika(args: &[&str]) -> String {
    let out = common::run_troika(args, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "troika {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

#[test]
fn no_help_text_speaks_of_seeds() {
    let mut helps = vec![("troika --help".to_owned(), troika(&["--help"]))];
    for command in COMMANDS {
        for flag in ["-h", "--help"] {
            helps.push((format!("troika {command} {flag}"), troika(&[command, flag])));
        }
    }
    for (what, help) in helps {
        assert!(!help.trim().is_empty(), "{what} printed nothing");
        assert!(
            !help.to_lowercase().contains("seed"),
            "{what} speaks of seeds:\n{help}"
        );
    }
}

#[test]
fn the_help_names_the_experiment() {
    let top = troika(&["--help"]);
    for command in COMMANDS {
        assert!(top.contains(command), "{command} missing:\n{top}");
    }
    let bench = troika(&["bench", "--help"]);
    for fact in ["112272535095293", "trial division", "50 ms", "100,000"] {
        assert!(
            bench.contains(fact),
            "bench --help lacks {fact:?}:\n{bench}"
        );
    }
    let primes = troika(&["primes", "--help"]);
    assert!(primes.contains("Miller–Rabin") && primes.contains("square root"));
}

/// One `--json` row of `troika bench` run with `args`.
fn bench_row(args: &[&str]) -> Value {
    let out = troika(&[&["bench", "--json", "--modes", "serial"][..], args].concat());
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    rows.into_iter().next().unwrap()
}

#[test]
fn bench_task_counts_in_the_help_are_the_real_defaults() {
    let help = troika(&["bench", "--help"]);
    assert!(
        help.contains("default: 100 for cpu, 200 for io, 100000 for overhead"),
        "{help}"
    );
    // io's 200 × 50 ms serial run would take 10 s; cpu and overhead are quick.
    assert_eq!(bench_row(&["--workload", "cpu"])["tasks"], 100);
    assert_eq!(bench_row(&["--workload", "overhead"])["tasks"], 100_000);
}

/// The `key = value` lines of the `[server]` table in `serve --help`'s
/// example config, comments cut off.
fn example_server_keys(help: &str) -> Vec<(String, String)> {
    help.lines()
        .map(str::trim)
        .skip_while(|l| *l != "[server]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let value = value.split('#').next().unwrap_or_default().trim();
            Some((key.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

#[test]
fn serve_example_config_shows_the_real_defaults() {
    let help = troika(&["serve", "--help"]);
    let keys = example_server_keys(&help);
    assert!(!keys.is_empty(), "no [server] example in:\n{help}");
    let value = |key: &str| {
        keys.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in the example:\n{help}"))
    };
    // The pool the example shows is the one --pool says is the default.
    let pool_default = help
        .lines()
        .skip_while(|l| !l.contains("--pool"))
        .find_map(|l| l.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .expect("--pool shows its default");
    assert_eq!(value("pool"), format!("\"{pool_default}\""), "{help}");
    // The workers default depends on the machine: the example must not
    // show a fixed number as if it were the default.
    let workers = value("workers");
    assert!(
        workers.parse::<u64>().is_err(),
        "workers = {workers} is not the default (the available parallelism)"
    );
}
