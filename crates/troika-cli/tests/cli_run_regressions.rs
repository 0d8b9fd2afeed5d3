//! `troika run` regressions from issue 13, one test per case seen: jobs whose
//! leader is gone but whose group (or an escapee) lingers, exact resume and
//! GNU parallel's job log, output in bounded memory, the inputs GNU parallel
//! accepts, and no stalls or panics.
//!
//! Every run has a kill deadline: a hang fails the test instead of holding
//! the suite. `TROIKA_UNDER_TEST` runs the suite against another binary (to
//! see a test fail on an older build).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::{alive, scratch, text, wait_until, watchdog};

/// The deadline of every run here: a hang fails its test.
const GENEROUS: Duration = Duration::from_secs(20);

/// Run `troika ARGS` with `stdin` (then closed), killed if it outlives
/// [`GENEROUS`]; panics then, naming the hang.
fn troika_in(args: &[&str], stdin: &[u8]) -> Output {
    common::run_troika_within(args, Some(stdin), GENEROUS)
}

fn troika(args: &[&str]) -> Output {
    troika_in(args, b"")
}

/// Finish a `troika` run this test started itself, within [`GENEROUS`].
fn finish(child: &mut Child, stdin: Option<Vec<u8>>, what: &[&str]) -> Output {
    common::finish(child, stdin, GENEROUS, &format!("troika {what:?}"))
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Kill a leftover process the test started (so a failing test leaks nothing).
fn reap_leftover(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// One line of the child's stdout (waits for it: an event, not a sleep).
fn read_line(reader: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

// ---- 1. Never wait on a job that is over -------------------------------

#[test]
fn a_timeout_kills_the_group_after_its_leader_has_exited() {
    let dir = scratch("timeout-orphan");
    let pidfile = dir.join("pid");
    let script = format!("sleep 60 & echo $! > {}; exit 0", pidfile.display());
    let out = troika(&[
        "run",
        "--timeout",
        "1",
        "--",
        "sh",
        "-c",
        &script,
        ":::",
        "x",
    ]);
    let pid = pid_in(&pidfile);
    let lingering = alive(pid);
    reap_leftover(pid);
    assert!(!lingering, "the background child outlived the timeout");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn a_child_that_left_with_setsid_does_not_hold_the_run() {
    let dir = scratch("setsid");
    let pidfile = dir.join("pid");
    let script = format!(
        "setsid sleep 60 & echo $! > {}; echo done",
        pidfile.display()
    );
    let out = troika(&["run", "--", "sh", "-c", &script, ":::", "x"]);
    reap_leftover(pid_in(&pidfile));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
}

#[test]
fn halt_now_kills_a_group_whose_leader_has_exited() {
    let dir = scratch("halt-orphan");
    let pidfile = dir.join("pid");
    let lingering = format!("sleep 60 & echo $! > {}", pidfile.display());
    let failing = format!(
        "while [ ! -s {} ]; do sleep 0.01; done; exit 4",
        pidfile.display()
    );
    let out = troika(&[
        "run",
        "-j",
        "2",
        "--halt",
        "now,fail=1",
        "--",
        "sh",
        "-c",
        "{}",
        ":::",
        &lingering,
        &failing,
    ]);
    let pid = pid_in(&pidfile);
    let left = alive(pid);
    reap_leftover(pid);
    assert!(!left, "halt left the background child running");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_ends_a_run_whose_stdin_is_open_and_kills_orphaned_groups() {
    let dir = scratch("sigint-stdin");
    let pidfile = dir.join("pid");
    let script = format!(
        "sleep 60 & echo $! > {p}.tmp; mv {p}.tmp {p}; echo started >&2",
        p = pidfile.display()
    );
    let mut child = common::spawn_troika(&["run", "--", "sh", "-c", &script], Stdio::piped());
    let (done, guard) = watchdog(child.id(), GENEROUS);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"x\n").unwrap();
    stdin.flush().unwrap();
    // stdin stays open. The job's stderr line is printed only when the job
    // is over, so wait for the pid file the job writes (no event exists).
    wait_until("the job to start", || pidfile.exists());
    let troika_pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(troika_pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    let _ = done.send(());
    let hung = guard.join().unwrap();
    drop(stdin);
    let pid = pid_in(&pidfile);
    let left = alive(pid);
    reap_leftover(pid);
    assert!(!hung, "Ctrl-C did not end a run with stdin open");
    assert!(!left, "Ctrl-C left the job's background child running");
    assert_eq!(status.code(), Some(130));
}

// ---- 2. Resume is exact -----------------------------------------------

#[test]
fn resume_reruns_a_job_killed_by_its_timeout() {
    let dir = scratch("resume-timeout");
    let log = dir.join("log");
    let marker = dir.join("second");
    let script = format!("echo ran $1; [ -e {} ] || sleep $1", marker.display());
    let args = |resume: bool| {
        let mut args = vec!["run", "-j", "1", "--timeout", "1", "--joblog"];
        args.push(log.to_str().unwrap());
        if resume {
            args.push("--resume");
        }
        args.extend(["--", "sh", "-c", script.as_str(), "_", ":::", "0", "30"]);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let first: Vec<String> = args(false);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_eq!(troika(&first).status.code(), Some(1));
    std::fs::write(&marker, "").unwrap();
    let second: Vec<String> = args(true);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let out = troika(&second);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "ran 30\n",
        "only the timed-out job runs again"
    );
}

#[test]
fn resume_reruns_jobs_killed_by_halt_now() {
    let dir = scratch("resume-halt");
    let log = dir.join("log");
    let started = dir.join("slow-started");
    let marker = dir.join("second");
    let script = format!(
        "case $1 in slow) touch {s}; [ -e {m} ] || sleep 30; echo ran slow;; \
         fail) while [ ! -e {s} ]; do sleep 0.01; done; echo ran fail; exit 1;; esac",
        s = started.display(),
        m = marker.display()
    );
    let log_arg = log.to_str().unwrap();
    let base = ["run", "-j", "2", "--joblog", log_arg];
    let mut first: Vec<&str> = base.to_vec();
    first.extend([
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
    ]);
    assert_eq!(troika(&first).status.code(), Some(1));
    std::fs::write(&marker, "").unwrap();
    let mut second: Vec<&str> = base.to_vec();
    second.extend([
        "--resume", "--", "sh", "-c", &script, "_", ":::", "slow", "fail",
    ]);
    let out = troika(&second);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran slow\n");
}

const GNU_LOG: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n\
1\t:\t1796193357.191\t     0.028\t0\t2\t0\t0\techo a\n\
3\t:\t1796193357.148\t     1.914\t0\t0\t-1\t15\techo c\n";

#[test]
fn joblogs_gnu_parallel_wrote_are_read_and_ours_are_written_in_its_format() {
    let dir = scratch("gnu-joblog");
    let log = dir.join("log");
    std::fs::write(&log, GNU_LOG).unwrap();
    let out = troika(&[
        "run",
        "-j",
        "1",
        "--joblog",
        log.to_str().unwrap(),
        "--resume",
        "--",
        "echo",
        ":::",
        "a",
        "b c",
        "c",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 1 finished; 3 was killed by its timeout (Exitval -1), so it runs again.
    assert_eq!(text(&out.stdout), "b c\nc\n");
    let written = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 5, "{written}");
    let new: Vec<&str> = lines[3].split('\t').collect();
    assert_eq!(new[0], "2");
    assert_eq!(new[3].len(), 10, "runtime padded like %10.3f: {:?}", new[3]);
    assert!(new[3].trim_start().parse::<f64>().is_ok());
    assert_eq!(new[8], "echo 'b c'", "the command, shell-quoted");

    // A timed-out job: Exitval -1, Signal 15, as GNU parallel writes.
    let log2 = dir.join("log2");
    let out = troika(&[
        "run",
        "--timeout",
        "0.2",
        "--joblog",
        log2.to_str().unwrap(),
        "--",
        "sleep",
        ":::",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let written = std::fs::read_to_string(&log2).unwrap();
    let fields: Vec<&str> = written.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!((fields[6], fields[7]), ("-1", "15"), "{written}");
}

#[test]
fn dry_run_prints_shell_quoted_commands() {
    let out = troika(&[
        "run",
        "--dry-run",
        "--",
        "echo",
        ":::",
        "a b",
        "it's",
        "plain",
    ]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "echo 'a b'\necho 'it'\\''s'\necho plain\n"
    );
}

// ---- 3. Output in bounded memory --------------------------------------

/// Peak RSS of the job's parent (troika), as the job sees it when it ends.
const PEAK_OF_PARENT: &str = "grep VmHWM /proc/$PPID/status >&2";

#[test]
fn big_outputs_are_spooled_not_held_in_memory() {
    let size = 48 << 20;
    let script = format!("head -c {size} /dev/zero | tr '\\0' $1; {PEAK_OF_PARENT}");
    let out = troika(&[
        "run", "-j", "2", "--", "sh", "-c", &script, "_", ":::", "a", "b",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 2 * size);
    // Never interleaved: one job's bytes, then the other's.
    let first = out.stdout[0];
    assert!(out.stdout[..size].iter().all(|&b| b == first));
    assert!(out.stdout[size..].iter().all(|&b| b != first));
    let stderr = text(&out.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("VmHWM")) {
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(kb < 40 * 1024, "troika's peak RSS {kb} kB while spooling");
    }
    assert_eq!(stderr.matches("VmHWM").count(), 2, "{stderr}");
}

// ---- 4. The inputs GNU parallel accepts -------------------------------

#[test]
fn several_input_lists_give_their_cartesian_product() {
    let out = troika(&["run", "-k", "--", "echo", ":::", "a", "b", ":::", "1", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a 1\na 2\nb 1\nb 2\n");
    let out = troika(&[
        "run", "-k", "--", "echo", "{2}-{1}", ":::", "a", "b", ":::", "1",
    ]);
    assert_eq!(text(&out.stdout), "1-a\n1-b\n");
}

#[test]
fn four_colons_read_inputs_from_files() {
    let dir = scratch("four-colons");
    let file = dir.join("inputs");
    std::fs::write(&file, "x\ny z\n").unwrap();
    let path = file.to_str().unwrap();
    let out = troika(&["run", "-k", "--", "echo", "::::", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "x\ny z\n");
    let out = troika(&["run", "-k", "-a", path, "--", "echo"]);
    assert_eq!(text(&out.stdout), "x\ny z\n");
    let out = troika(&["run", "-k", "--", "echo", "::::", path, ":::", "1"]);
    assert_eq!(text(&out.stdout), "x 1\ny z 1\n");
    let out = troika(&["run", "--", "echo", "::::", "/troika/no/such/file"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("/troika/no/such/file"));
}

#[test]
fn non_utf8_inputs_pass_through_as_bytes() {
    let out = troika_in(&["run", "--", "echo"], b"caf\xe9\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"caf\xe9\n");
}

#[test]
fn null_separated_inputs() {
    let out = troika_in(&["run", "-k", "-0", "--", "echo"], b"a b\0c\nd\0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a b\nc\nd\n");
}

#[test]
fn jobs_take_gnu_parallels_forms() {
    for jobs in ["0", "100%", "50%", "+1", "-1", "-100", "1"] {
        let out = troika(&["run", "-j", jobs, "-k", "--", "echo", ":::", "1", "2"]);
        assert!(out.status.success(), "-j {jobs}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "1\n2\n", "-j {jobs}");
    }
    for bad in ["abc", "1.5", "%", "-x", "99999999999999999999999"] {
        let out = troika(&["run", "-j", bad, "--", "echo", ":::", "1"]);
        assert_eq!(out.status.code(), Some(255), "-j {bad}");
        assert!(
            text(&out.stderr).contains("-j"),
            "-j {bad}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_huge_jobs_count_is_capped_at_once_never_a_panic() {
    for jobs in ["100000", "18446744073709551615"] {
        let out = troika(&["run", "-j", jobs, "-k", "--", "echo", ":::", "1", "2"]);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "-j {jobs}: {stderr}");
        assert!(out.status.success(), "-j {jobs}: {stderr}");
        assert_eq!(text(&out.stdout), "1\n2\n");
    }
}

#[test]
fn a_sequence_number_only_command_gets_no_input_appended() {
    let out = troika(&["run", "-k", "--", "echo", "job", "{#}", ":::", "a", "b"]);
    assert_eq!(text(&out.stdout), "job 1\njob 2\n");
}

#[test]
fn halt_takes_percentages_success_and_done() {
    let exit_with = ["--", "sh", "-c", "echo $1; exit $1", "_", ":::"];
    let run = |halt: &str, inputs: &[&str]| {
        let mut args = vec!["run", "-j", "1", "--halt", halt];
        args.extend(exit_with);
        args.extend_from_slice(inputs);
        troika(&args)
    };
    // 50 % of 4 jobs is 2 failures.
    let out = run("soon,fail=50%", &["1", "2", "0", "0"]);
    assert_eq!(text(&out.stdout), "1\n2\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(2));
    let out = run("now,success=1", &["3", "0", "0"]);
    assert_eq!(text(&out.stdout), "3\n0\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let out = run("soon,done=2", &["0", "5", "0"]);
    assert_eq!(text(&out.stdout), "0\n5\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(5));
    for bad in [
        "now,fail=0%",
        "now,fail=101%",
        "now,done=x",
        "sometime,fail=1",
    ] {
        let out = run(bad, &["0"]);
        assert_eq!(out.status.code(), Some(255), "{bad}");
        assert!(text(&out.stderr).contains("--halt"), "{bad}");
    }
}

#[test]
fn gnu_options_troika_lacks_are_refused_by_name() {
    for (args, name) in [
        (
            &["run", "--timeout", "200%", "--", "echo", ":::", "1"][..],
            "--timeout",
        ),
        (
            &["run", "--colsep", ",", "--", "echo", ":::", "1"][..],
            "--colsep",
        ),
        (&["run", "--", "echo", ":::+", "1"][..], ":::+"),
    ] {
        let out = troika(args);
        assert_eq!(out.status.code(), Some(255), "{args:?}");
        assert!(
            text(&out.stderr).contains(name),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

// ---- 5. No stalls, no panics ------------------------------------------

#[test]
fn keep_order_keeps_starting_jobs_behind_a_slow_one() {
    let dir = scratch("keep-order");
    // Job 1 finishes only after job 60 has run: with a stall it never does.
    let script = format!(
        "[ $1 = 1 ] && while [ ! -e {d}/60 ]; do sleep 0.01; done; touch {d}/$1; echo $1",
        d = dir.display()
    );
    let inputs: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
    let mut args = vec![
        "run", "-j", "2", "-k", "--", "sh", "-c", &script, "_", ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = troika(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected: String = inputs.iter().map(|i| format!("{i}\n")).collect();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn halt_sends_sigterm_before_sigkill() {
    let dir = scratch("halt-term");
    let ready = dir.join("ready");
    let termed = dir.join("termed");
    let polite = format!(
        "trap 'echo term > {t}; exit 1' TERM; sleep 60 & touch {r}; wait",
        t = termed.display(),
        r = ready.display()
    );
    let failing = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; exit 3",
        ready.display()
    );
    let out = troika(&[
        "run",
        "-j",
        "2",
        "--halt",
        "now,fail=1",
        "--",
        "sh",
        "-c",
        "{}",
        ":::",
        &polite,
        &failing,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(termed.exists(), "the job got no SIGTERM before SIGKILL");
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let inputs: Vec<String> = (1..=5000).map(|i| i.to_string()).collect();
    let mut args = vec!["run", "-j", "2", "--", "echo"];
    args.push(":::");
    args.extend(inputs.iter().map(String::as_str));
    let mut child = common::spawn_troika(&args, Stdio::null());
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    assert!(!read_line(&mut reader).is_empty());
    drop(reader);
    let out = finish(&mut child, None, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn output_streams_straight_through_when_no_other_job_can_come_between() {
    let dir = scratch("stream");
    let go = dir.join("go");
    let script = format!(
        "echo first; while [ ! -e {g} ]; do sleep 0.01; done; echo second",
        g = go.display()
    );
    // One job at a time; or -k, where the job printed next streams.
    for (jobs, order) in [("1", "--group"), ("2", "-k")] {
        let _ = std::fs::remove_file(&go);
        let mut args = vec!["run", "-j", jobs];
        if order == "-k" {
            args.push(order);
        }
        args.extend(["--", "sh", "-c", &script, ":::", "x"]);
        let mut child = common::spawn_troika(&args, Stdio::null());
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        // The job is still running (it waits for `go`): its first line comes
        // through now, not when it ends. (A hang here is caught below.)
        let (done, guard) = watchdog(child.id(), GENEROUS);
        assert_eq!(read_line(&mut reader), "first\n", "-j {jobs} {order}");
        let _ = done.send(());
        assert!(
            !guard.join().unwrap(),
            "-j {jobs}: the output waited for the job's end"
        );
        std::fs::write(&go, "").unwrap();
        assert_eq!(read_line(&mut reader), "second\n");
        drop(reader);
        let out = finish(&mut child, None, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
fn jobs_waiting_behind_a_slow_one_under_keep_order_hold_no_memory() {
    let dir = scratch("keep-order-memory");
    // Job 1 waits for job 400; the 398 between finish first and wait, 100 KiB
    // of output each (40 MB in all); job 400 reports troika's peak RSS.
    let script = format!(
        "[ $1 = 1 ] && while [ ! -e {d}/last ]; do sleep 0.01; done; head -c 102400 /dev/zero; \
         [ $1 = 400 ] && {{ {PEAK_OF_PARENT}; touch {d}/last; }}; true",
        d = dir.display()
    );
    let inputs: Vec<String> = (1..=400).map(|i| i.to_string()).collect();
    let mut args = vec![
        "run", "-j", "2", "-k", "--", "sh", "-c", &script, "_", ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = troika(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 400 * 102_400);
    let stderr = text(&out.stderr);
    let kb: u64 = stderr
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line: {stderr}"));
    assert!(
        kb < 30 * 1024,
        "troika's peak RSS {kb} kB with 398 jobs waiting"
    );
}
