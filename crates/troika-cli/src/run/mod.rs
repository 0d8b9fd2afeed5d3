//! `troika run`: run a command once per input, in parallel — GNU parallel's
//! job — on troika's process layer ([`troika::process::GroupChild`]): each job
//! in its own process group, its output captured whole, a timeout that kills
//! the whole group, every child reaped.
//!
//! Exit codes follow GNU parallel's manual: 0 when every job succeeded; the
//! number of failed jobs (at most 101) otherwise; with `--halt …,fail=N` the
//! status of the job that triggered the halt; 255 for bad usage. `--retries N`
//! means N more attempts after the first (GNU parallel counts the first).

mod joblog;
mod template;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use troika::process::{CommandOutput, GroupChild, GroupKiller};
use troika::{Exit, ThreadPool};

use joblog::{Entry, JobLog};

/// The exit code of bad usage (not 2, which would read as two failed jobs).
pub(crate) const USAGE_EXIT: u8 = 255;

/// The exit value logged for a command that could not be started, as a shell
/// reports a missing command.
const CANNOT_START: i32 = 127;

/// Options of `troika run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Jobs to run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Print each job's output in input order (still whole per job).
    #[arg(long)]
    keep_order: bool,
    /// Kill a job (its whole process group) after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Run a failed job up to N more times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Stop after failures: `never`, `now,fail=N` (kill running jobs) or
    /// `soon,fail=N` (start no new jobs, let running ones finish).
    #[arg(long, value_name = "WHEN,fail=N")]
    halt: Option<String>,
    /// Log every finished job here, in GNU parallel's columns.
    #[arg(long, value_name = "FILE")]
    joblog: Option<PathBuf>,
    /// Skip the jobs the job log records as run.
    #[arg(long, requires = "joblog", conflicts_with = "resume_failed")]
    resume: bool,
    /// Skip the jobs the job log records as succeeded; run failed and new ones.
    #[arg(long, requires = "joblog")]
    resume_failed: bool,
    /// Print the commands instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Read inputs from this file, one per line (default: stdin, or the list after `:::`).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Run the command through `sh -c` (inputs are shell-quoted).
    #[arg(long)]
    shell: bool,
    /// The command and its arguments, then optionally `::: INPUT…`.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// When to stop after failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    Never,
    /// Kill running jobs and stop at the Nth failure.
    Now(u64),
    /// Start no new job after the Nth failure; running jobs finish.
    Soon(u64),
}

fn parse_halt(text: &str) -> anyhow::Result<Halt> {
    if text == "never" {
        return Ok(Halt::Never);
    }
    let bad =
        || anyhow::anyhow!("--halt '{text}': expected never, now,fail=N or soon,fail=N (N ≥ 1)");
    let (when, rest) = text.split_once(',').ok_or_else(bad)?;
    let count: u64 = rest
        .strip_prefix("fail=")
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(bad)?;
    match when {
        "now" => Ok(Halt::Now(count)),
        "soon" => Ok(Halt::Soon(count)),
        _ => Err(bad()),
    }
}

/// Everything a job needs, built before it runs.
#[derive(Clone, Debug)]
struct JobSpec {
    seq: u64,
    argv: Vec<String>,
}

impl JobSpec {
    fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// What running a job (with its retries) gave.
#[derive(Debug)]
struct Finished {
    spec: JobSpec,
    start: SystemTime,
    runtime: Duration,
    outcome: Result<CommandOutput, String>,
    /// This job's failure was the one that reached `--halt`'s count.
    halted: bool,
}

impl Finished {
    fn failed(&self) -> bool {
        !matches!(&self.outcome, Ok(out) if out.success())
    }

    /// (Exitval, Signal) as the job log writes them.
    fn status(&self) -> (i32, i32) {
        match &self.outcome {
            Err(_) => (CANNOT_START, 0),
            Ok(out) => match out.exit {
                Exit::Code(code) => (code, 0),
                Exit::Signal(sig) => (-1, sig),
                _ => (-1, 0),
            },
        }
    }

    /// The status to exit with when this job triggers a halt.
    fn exit_code(&self) -> u8 {
        match self.status() {
            (_, sig) if sig != 0 => u8::try_from(128 + sig).unwrap_or(255),
            (code, _) => u8::try_from(code.clamp(1, 255)).unwrap_or(255),
        }
    }
}

/// Running jobs' process groups, so a halt or Ctrl-C can kill them.
#[derive(Default)]
struct Running {
    groups: Mutex<HashMap<u64, GroupKiller>>,
    stop: AtomicBool,
}

impl Running {
    fn kill_all(&self) {
        for killer in self.groups.lock().values() {
            killer.kill();
        }
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let jobs = match args.jobs {
        Some(0) => bail!("-j must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let timeout = match args.timeout {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            bail!("--timeout must be a positive number of seconds")
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let halt = args
        .halt
        .as_deref()
        .map(parse_halt)
        .transpose()?
        .unwrap_or(Halt::Never);
    let (template, listed) = match args.command.iter().position(|a| a == ":::") {
        Some(at) => (
            args.command[..at].to_vec(),
            Some(args.command[at + 1..].to_vec()),
        ),
        None => (args.command.clone(), None),
    };
    if template.is_empty() {
        bail!("no command given before ':::'");
    }
    if listed.is_some() && args.input.is_some() {
        bail!("give inputs either after ':::' or with --input, not both");
    }
    let previous = match (&args.joblog, args.resume || args.resume_failed) {
        (Some(path), true) => joblog::read(path)?,
        _ => HashMap::new(),
    };
    let mut log = match &args.joblog {
        Some(path) if !args.dry_run => Some(JobLog::open(path, args.resume || args.resume_failed)?),
        _ => None,
    };
    let inputs: Box<dyn Iterator<Item = std::io::Result<String>>> = match (listed, &args.input) {
        (Some(list), _) => Box::new(list.into_iter().map(Ok)),
        (None, Some(path)) => {
            let file = File::open(path)
                .with_context(|| format!("cannot read --input {}", path.display()))?;
            Box::new(BufReader::new(file).lines())
        }
        (None, None) => Box::new(std::io::stdin().lock().lines()),
    };
    let build = Builder {
        template,
        shell: args.shell,
    };
    let skip = move |seq: u64| match previous.get(&seq) {
        Some(entry) => args.resume || entry.succeeded(),
        None => false,
    };
    let specs = inputs
        .enumerate()
        .map(move |(i, line)| line.map(|line| build.spec(i as u64 + 1, &line)))
        .filter(move |spec| spec.as_ref().map_or(true, |s| !skip(s.seq)));

    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for spec in specs {
            writeln!(
                out,
                "{}",
                spec.context("reading the inputs failed")?.display()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let running = Arc::new(Running::default());
    watch_signals(&running)?;
    let progress =
        crate::progress::stderr_bar(None, "", "{spinner} {pos} jobs done, {per_sec}, {elapsed}");
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let record_error = Arc::clone(&read_error);
    let stop_input = Arc::clone(&running);
    let specs = specs.map_while(move |spec| {
        if stop_input.stop.load(Ordering::Acquire) {
            return None;
        }
        spec.map_err(|e| *record_error.lock() = Some(e)).ok()
    });
    let pool = ThreadPool::builder()
        .workers(jobs)
        .thread_name("troika-run")
        .build()?;
    let runner = Runner {
        running: Arc::clone(&running),
        timeout,
        retries: args.retries,
        halt,
        failures: AtomicU64::new(0),
    };
    let task = move |spec: JobSpec| runner.run(spec);
    let finished: Box<dyn Iterator<Item = Result<Option<Finished>, troika::TaskError>>> =
        if args.keep_order {
            Box::new(pool.map(task, specs))
        } else {
            Box::new(pool.map_unordered(task, specs).map(|(_, r)| r))
        };

    let mut failed = 0u64;
    let mut halted: Option<u8> = None;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for outcome in finished {
        let Some(done) = outcome.context("a job's supervisor failed")? else {
            continue; // not started: a halt or Ctrl-C came first
        };
        progress.inc(1);
        if let Err(message) = &done.outcome {
            progress.suspend(|| writeln!(stderr, "troika: job {}: {message}", done.spec.seq))?;
        }
        if let Ok(out) = &done.outcome {
            progress.suspend(|| -> std::io::Result<()> {
                stdout.write_all(&out.stdout)?;
                stdout.flush()?;
                stderr.write_all(&out.stderr)?;
                if out.timed_out {
                    writeln!(
                        stderr,
                        "troika: job {} timed out: {}",
                        done.spec.seq,
                        done.spec.display()
                    )?;
                }
                Ok(())
            })?;
        }
        if let Some(log) = &mut log {
            let (exitval, signal) = done.status();
            log.record(&Entry {
                seq: done.spec.seq,
                start: done
                    .start
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                runtime: done.runtime.as_secs_f64(),
                received: done.outcome.as_ref().map_or(0, |o| o.stdout.len() as u64),
                exitval,
                signal,
                command: done.spec.display(),
            })?;
        }
        if done.failed() {
            failed += 1;
        }
        if done.halted {
            halted = Some(done.exit_code());
        }
    }
    drop(pool);
    progress.finish_and_clear();
    if let Some(e) = read_error.lock().take() {
        return Err(e).context("reading the inputs failed");
    }
    if running.stop.load(Ordering::Acquire) && halted.is_none() {
        // Stopped by SIGINT or SIGTERM.
        return Ok(ExitCode::from(130));
    }
    Ok(match halted {
        Some(code) => ExitCode::from(code),
        None => ExitCode::from(u8::try_from(failed.min(101)).unwrap_or(101)),
    })
}

/// Turns an input line into the job's argv.
struct Builder {
    template: Vec<String>,
    shell: bool,
}

impl Builder {
    fn spec(&self, seq: u64, input: &str) -> JobSpec {
        let input = input.strip_suffix('\r').unwrap_or(input);
        let argv = if self.shell {
            let quoted = template::shell_quote(input);
            let mut line: Vec<String> = self
                .template
                .iter()
                .map(|a| template::expand(a, &quoted, seq))
                .collect();
            if !template::mentions_input(&self.template) {
                line.push(quoted);
            }
            vec!["sh".to_owned(), "-c".to_owned(), line.join(" ")]
        } else {
            let mut argv: Vec<String> = self
                .template
                .iter()
                .map(|a| template::expand(a, input, seq))
                .collect();
            if !template::mentions_input(&self.template) {
                argv.push(input.to_owned());
            }
            argv
        };
        JobSpec { seq, argv }
    }
}

/// Runs one job, with retries, on a pool thread.
struct Runner {
    running: Arc<Running>,
    timeout: Option<Duration>,
    retries: u32,
    halt: Halt,
    /// Failed jobs so far, counted where they fail, so a halt takes effect
    /// before the worker that saw the failure can start another job.
    failures: AtomicU64,
}

impl Runner {
    /// `None` if the run was stopped before this job started.
    fn run(&self, spec: JobSpec) -> Option<Finished> {
        let mut attempt = 0;
        loop {
            if self.running.stop.load(Ordering::Acquire) {
                return None;
            }
            let mut finished = self.attempt(&spec);
            if !finished.failed()
                || attempt >= self.retries
                || self.running.stop.load(Ordering::Acquire)
            {
                if finished.failed() {
                    finished.halted = self.count_failure();
                }
                return Some(finished);
            }
            attempt += 1;
        }
    }

    /// Count a failed job; true if it is the one that reaches the halt count
    /// (then nothing new starts, and under `now` every running job is killed).
    fn count_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let (Halt::Now(limit) | Halt::Soon(limit)) = self.halt else {
            return false;
        };
        if failures != limit {
            return false;
        }
        self.running.stop.store(true, Ordering::Release);
        if matches!(self.halt, Halt::Now(_)) {
            self.running.kill_all();
        }
        true
    }

    fn attempt(&self, spec: &JobSpec) -> Finished {
        let start = SystemTime::now();
        let clock = Instant::now();
        let mut command = Command::new(&spec.argv[0]);
        command.args(&spec.argv[1..]);
        let outcome = match GroupChild::spawn(&mut command) {
            Err(e) => Err(format!("cannot run '{}': {e}", spec.argv[0])),
            Ok(child) => {
                self.running.groups.lock().insert(spec.seq, child.killer());
                // A stop that raced with the spawn must still kill this job.
                if self.running.stop.load(Ordering::Acquire) {
                    child.killer().kill();
                }
                let output = child.communicate(self.timeout);
                self.running.groups.lock().remove(&spec.seq);
                output.map_err(|e| format!("lost track of '{}': {e}", spec.argv[0]))
            }
        };
        Finished {
            spec: spec.clone(),
            start,
            runtime: clock.elapsed(),
            outcome,
            halted: false,
        }
    }
}

/// On SIGINT or SIGTERM: start nothing more and kill every running job.
fn watch_signals(running: &Arc<Running>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot watch for Ctrl-C")?;
    let running = Arc::clone(running);
    std::thread::Builder::new()
        .name("troika-run-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                running.stop.store(true, Ordering::Release);
                running.kill_all();
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_parses_gnu_parallel_forms() {
        assert_eq!(parse_halt("never").unwrap(), Halt::Never);
        assert_eq!(parse_halt("now,fail=1").unwrap(), Halt::Now(1));
        assert_eq!(parse_halt("soon,fail=3").unwrap(), Halt::Soon(3));
        for bad in [
            "now",
            "later,fail=1",
            "now,fail=0",
            "soon,fail=x",
            "now,success=1",
        ] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inputs_are_appended_without_a_placeholder_and_quoted_for_the_shell() {
        let direct = Builder {
            template: vec!["echo".into(), "-n".into()],
            shell: false,
        };
        assert_eq!(direct.spec(1, "a b\r").argv, ["echo", "-n", "a b"]);
        let placed = Builder {
            template: vec!["cp".into(), "{}".into(), "{.}.bak".into()],
            shell: false,
        };
        assert_eq!(placed.spec(2, "x.txt").argv, ["cp", "x.txt", "x.bak"]);
        let shell = Builder {
            template: vec![
                "echo".into(),
                "{}".into(),
                "|".into(),
                "wc".into(),
                "-c".into(),
            ],
            shell: true,
        };
        assert_eq!(
            shell.spec(3, "it's").argv,
            ["sh", "-c", r"echo 'it'\''s' | wc -c"]
        );
    }
}
