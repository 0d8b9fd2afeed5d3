//! `troika run` end to end: ordering, big outputs, timeouts that kill whole
//! process groups, retries, halting, the job log, resuming, bad input, Ctrl-C.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{alive, scratch, text, wait_for_exit, wait_until};

fn troika_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    common::run_troika(args, Some(stdin))
}

fn troika(args: &[&str]) -> Output {
    troika_with_stdin(args, b"")
}

#[test]
fn keep_order_prints_in_input_order_and_every_job_once_without_it() {
    // Later inputs finish first.
    let args = [
        "run",
        "-j",
        "4",
        "--keep-order",
        "--",
        "sh",
        "-c",
        "sleep 0.$1; echo $1",
        "_",
        ":::",
        "4",
        "3",
        "2",
        "1",
    ];
    let out = troika(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "4\n3\n2\n1\n");
    let out = troika(&[
        "run",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "sleep 0.$1; echo $1",
        "_",
        ":::",
        "4",
        "3",
        "2",
        "1",
    ]);
    assert!(out.status.success());
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("1"),
        "completion order"
    );
    lines.sort();
    assert_eq!(lines, ["1", "2", "3", "4"]);
}

#[test]
fn keep_order_with_hundreds_of_jobs_behind_a_slow_one_fits_in_few_open_files() {
    // Job 0 blocks on a FIFO until the last job opens it: every other job
    // finishes and waits for job 0 to be printed, so the waiting jobs must
    // not hold a file descriptor each. `ulimit -n 80` is the least that lets
    // troika run two jobs at once (64 handles of its own and 8 a job); under
    // it, a run that gave each waiting job its own spool file stopped with
    // "cannot spool a job's output".
    const LAST: u32 = 500;
    let dir = scratch("fd-limit");
    let fifo = dir.join("go");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let script = format!(
        "case $1 in 0) read word < {f}; echo \"0 $word\";; {LAST}) echo {LAST}; echo go > {f};; *) echo $1;; esac",
        f = fifo.display()
    );
    let inputs: String = (0..=LAST).map(|i| format!("{i}\n")).collect();
    let out = common::run_troika_with_open_files(
        80,
        &[
            "run",
            "-k",
            "-j",
            "2",
            "--timeout",
            "120",
            "--",
            "sh",
            "-c",
            &script,
            "_",
        ],
        Some(inputs.as_bytes()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut expected = String::from("0 go\n");
    expected.extend((1..=LAST).map(|i| format!("{i}\n")));
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn each_jobs_output_is_whole_even_past_a_pipe_buffer() {
    // 1.5 MiB per job, two at a time: never interleaved mid-line, never stuck.
    let script = "yes \"job $1 $(printf '%0100d' 0)\" | head -c 1572864";
    let out = troika(&[
        "run", "-j", "2", "--", "sh", "-c", script, "_", ":::", "a", "b", "c",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.len(), 3 * 1_572_864);
    // Each job's bytes are contiguous: the job label changes exactly twice.
    let labels: Vec<&str> = stdout.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    let changes = labels.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 2, "outputs interleaved");
}

#[test]
fn input_comes_from_stdin_or_a_file_and_placeholders_expand() {
    let out = troika_with_stdin(
        &[
            "run", "-j", "1", "--", "echo", "{#}", "{}", "{.}", "{/}", "{//}", "{/.}",
        ],
        b"dir/a.txt\nb.tar.gz\n",
    );
    assert_eq!(
        text(&out.stdout),
        "1 dir/a.txt dir/a a.txt dir a\n2 b.tar.gz b.tar b.tar.gz . b.tar\n"
    );
    let dir = scratch("input");
    let file = dir.join("inputs");
    std::fs::write(&file, "x\ny\n").unwrap();
    let out = troika(&[
        "run",
        "-j",
        "1",
        "--input",
        file.to_str().unwrap(),
        "--",
        "echo",
        "in",
    ]);
    assert_eq!(text(&out.stdout), "in x\nin y\n");
    let out = troika(&[
        "run",
        "--shell",
        "-j",
        "1",
        "--",
        "echo {} | tr a-z A-Z",
        ":::",
        "it's",
    ]);
    assert_eq!(text(&out.stdout), "IT'S\n");
}

#[test]
fn a_timeout_kills_the_jobs_children_and_grandchildren() {
    let dir = scratch("timeout");
    let pids = dir.join("pids");
    // The job starts a child that starts a grandchild; all sleep, all record their pid.
    let script = format!(
        "sh -c 'sleep 60 & echo $! >> {p}; wait' & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let out = troika(&[
        "run",
        "--timeout",
        "0.5",
        "--",
        "sh",
        "-c",
        &script,
        ":::",
        "1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one failed job: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("timed out"));
    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 3, "job, child and grandchild");
    for pid in recorded {
        wait_until(&format!("process {pid} to die"), || !alive(pid));
    }
}

#[test]
fn retries_run_a_failing_job_again() {
    let dir = scratch("retries");
    let counter = dir.join("count");
    // Fails on the first two attempts, succeeds on the third.
    let script = format!(
        "echo x >> {c}; [ $(wc -l < {c}) -ge 3 ]",
        c = counter.display()
    );
    let out = troika(&[
        "run",
        "--retries",
        "2",
        "--",
        "sh",
        "-c",
        &script,
        ":::",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        3
    );
    // Without enough retries it fails.
    std::fs::remove_file(&counter).unwrap();
    let out = troika(&[
        "run",
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        &script,
        ":::",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
}

#[test]
fn exit_code_counts_failures_up_to_101() {
    let inputs: Vec<String> = (0..105).map(|i| i.to_string()).collect();
    let mut args = vec!["run", "-j", "4", "--", "false", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    assert_eq!(troika(&args).status.code(), Some(101));
    assert_eq!(
        troika(&[
            "run", "--", "sh", "-c", "exit $1", "_", ":::", "0", "3", "0", "1"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        troika(&["run", "--", "true", ":::", "a", "b"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn halt_now_kills_running_jobs_and_returns_the_failing_status() {
    let dir = scratch("halt-now");
    let started = dir.join("started");
    // Job 1 fails with 7 at once; job 2 would sleep a minute.
    let script = format!(
        "echo $1 >> {s}; if [ $1 = fail ]; then exit 7; fi; sleep 60",
        s = started.display()
    );
    let begin = Instant::now();
    let out = troika(&[
        "run",
        "-j",
        "2",
        "--halt",
        "now,fail=1",
        "--",
        "sh",
        "-c",
        &script,
        "_",
        ":::",
        "slow",
        "fail",
        "never",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        begin.elapsed() < Duration::from_secs(50),
        "the sleeping job was killed"
    );
    let ran = std::fs::read_to_string(&started).unwrap();
    assert!(
        !ran.contains("never"),
        "no job starts after the halt: {ran}"
    );
}

#[test]
fn halt_soon_lets_running_jobs_finish_but_starts_no_new_one() {
    let dir = scratch("halt-soon");
    let log = dir.join("finished");
    let started = dir.join("beside-started");
    // The failing job fails once the second one is running beside it; that
    // one then finishes, and nothing after it starts.
    let script = format!(
        "if [ $1 = fail ]; then while [ ! -e {s} ]; do sleep 0.01; done; exit 4; fi; \
         touch {s}; sleep 0.3; echo $1 >> {l}",
        s = started.display(),
        l = log.display()
    );
    let out = troika(&[
        "run",
        "-j",
        "2",
        "--halt",
        "soon,fail=1",
        "--",
        "sh",
        "-c",
        &script,
        "_",
        ":::",
        "fail",
        "beside",
        "later1",
        "later2",
        "later3",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let finished = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        finished.contains("beside"),
        "the running job finished: {finished:?}"
    );
    assert!(
        !finished.contains("later3"),
        "no new jobs after the halt: {finished:?}"
    );
}

fn joblog_lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_job_log_has_gnu_parallels_columns() {
    let dir = scratch("joblog");
    let log = dir.join("log");
    let out = troika(&[
        "run",
        "-j",
        "1",
        "--joblog",
        log.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "printf abc; exit $1",
        "_",
        ":::",
        "0",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = joblog_lines(&log);
    assert_eq!(
        lines[0],
        [
            "Seq",
            "Host",
            "Starttime",
            "JobRuntime",
            "Send",
            "Receive",
            "Exitval",
            "Signal",
            "Command"
        ]
    );
    assert_eq!(lines.len(), 3);
    for line in &lines[1..] {
        assert_eq!(line.len(), 9);
        assert_eq!(line[1], ":");
        assert!(line[2].parse::<f64>().unwrap() > 1.6e9, "epoch seconds");
        assert_eq!(line[3].len(), 10, "padded as GNU parallel's %10.3f");
        assert!(line[3].trim_start().parse::<f64>().unwrap() >= 0.0);
        assert_eq!(line[4], "0");
        assert_eq!(line[5], "3", "bytes received");
        assert_eq!(line[7], "0");
    }
    assert_eq!((lines[1][0].as_str(), lines[1][6].as_str()), ("1", "0"));
    assert_eq!((lines[2][0].as_str(), lines[2][6].as_str()), ("2", "3"));
    assert_eq!(
        lines[2][8], "sh -c 'printf abc; exit $1' _ 3",
        "shell-quoted"
    );

    // A job killed by its timeout logs the signal.
    let out = troika(&[
        "run",
        "--timeout",
        "0.2",
        "--joblog",
        log.to_str().unwrap(),
        "--",
        "sleep",
        ":::",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines = joblog_lines(&log);
    assert_eq!(lines[1][7], "15", "SIGTERM");
}

#[test]
fn resume_skips_logged_jobs_and_resume_failed_reruns_only_failures() {
    let dir = scratch("resume");
    let log = dir.join("log");
    let runs = dir.join("runs");
    let script = format!("echo $1 >> {r}; [ $1 != b ]", r = runs.display());
    let base = ["run", "-j", "1", "--joblog", log.to_str().unwrap()];
    let with = |extra: &[&str], inputs: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", script.as_str(), "_", ":::"]);
        args.extend_from_slice(inputs);
        troika(&args)
    };
    assert_eq!(with(&[], &["a", "b"]).status.code(), Some(1));
    // --resume: a and b are logged; only the new c runs.
    assert_eq!(with(&["--resume"], &["a", "b", "c"]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "a\nb\nc\n");
    // --resume-failed: only b (failed) runs again.
    assert_eq!(
        with(&["--resume-failed"], &["a", "b", "c"]).status.code(),
        Some(1)
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "a\nb\nc\nb\n");
}

#[test]
fn a_missing_command_fails_its_job_not_the_run() {
    let out = troika(&["run", "--", "troika-no-such-command", ":::", "1", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot run 'troika-no-such-command'"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("cannot run").count(), 2);
}

#[test]
fn empty_input_runs_nothing_and_succeeds() {
    let out = troika_with_stdin(&["run", "--", "echo"], b"");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = troika(&["run", "--", "echo", ":::"]);
    assert!(out.status.success());
}

#[test]
fn dry_run_prints_commands_without_running_them() {
    let out = troika(&["run", "--dry-run", "--", "rm", "{}.tmp", ":::", "x", "y"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "rm x.tmp\nrm y.tmp\n");
}

#[test]
fn bad_usage_exits_255_with_a_message() {
    for (args, message) in [
        (&["run", "-j", "x", "--", "true"][..], "-j 'x'"),
        (
            &["run", "--timeout", "-1", "--", "true"],
            "unexpected argument '-1'",
        ),
        (
            &["run", "--timeout", "0", "--", "true"],
            "--timeout '0': expected a positive number",
        ),
        (&["run", "--timeout", "abc", "--", "true"], "--timeout"),
        (
            &["run", "--halt", "sometimes", "--", "true"],
            "--halt 'sometimes'",
        ),
        (&["run", "--resume", "--", "true"], "--joblog"),
        (&["run"], "COMMAND"),
        (&["run", "--", ":::", "a"], "no command"),
        (
            &["run", "--input", "/nonexistent/troika", "--", "true"],
            "cannot read the inputs in /nonexistent/troika",
        ),
    ] {
        let out = troika(args);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn sigint_stops_the_run_and_kills_its_jobs() {
    let dir = scratch("sigint");
    let pids = dir.join("pids");
    let script = format!("echo $$ >> {p}; sleep 60", p = pids.display());
    let mut child: Child = Command::new(common::binary())
        .args([
            "run", "-j", "2", "--", "sh", "-c", &script, ":::", "1", "2", "3", "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read_pids = || -> Vec<i32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    wait_until("both jobs to start", || read_pids().len() == 2);
    let troika_pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(troika_pid, rustix::process::Signal::INT).unwrap();
    let status = wait_for_exit(&mut child, "troika to stop on SIGINT");
    assert_eq!(status.code(), Some(130));
    let started = read_pids();
    assert_eq!(started.len(), 2, "no new job after Ctrl-C");
    for pid in started {
        wait_until(&format!("job {pid} to die"), || !alive(pid));
    }
}

/// A job retried with `-j 1` (where output streams straight through) prints
/// the output of its last attempt only, as it does when spooled.
#[test]
fn retried_jobs_print_their_last_attempt_only() {
    for jobs in ["1", "2"] {
        let out = troika(&[
            "run",
            "-j",
            jobs,
            "--retries",
            "2",
            "--",
            "sh",
            "-c",
            "echo try; exit 1",
            ":::",
            "x",
        ]);
        assert_eq!(out.status.code(), Some(1), "-j {jobs}");
        assert_eq!(text(&out.stdout), "try\n", "-j {jobs}");
    }
}

/// Under `--halt soon` nothing is killed: a job that fails on its own after
/// the halt finished, so it has its joblog line (and `--resume` skips it).
#[test]
fn halt_soon_logs_a_job_that_fails_on_its_own_after_the_halt() {
    let dir = scratch("halt-soon-log");
    let joblog = dir.join("log");
    let first_done = dir.join("first-done");
    let script = format!(
        "if [ $1 = first ]; then touch {d}; exit 1; fi; \
         while [ ! -e {d} ]; do sleep 0.01; done; sleep 0.3; exit 5",
        d = first_done.display()
    );
    let out = troika(&[
        "run",
        "-j",
        "2",
        "--halt",
        "soon,fail=1",
        "--joblog",
        joblog.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
        "_",
        ":::",
        "first",
        "second",
    ]);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(&joblog).unwrap();
    let exits: Vec<&str> = log
        .lines()
        .skip(1)
        .filter_map(|line| line.split('\t').nth(6))
        .collect();
    assert_eq!(exits.len(), 2, "both jobs are in the joblog:\n{log}");
    assert!(exits.contains(&"1") && exits.contains(&"5"), "{log}");
}
