//! `troika run`: run a command once per input, in parallel — GNU parallel's
//! job — on troika's process layer ([`troika::process::GroupChild`]): each job
//! in its own process group, its output captured whole, a timeout that kills
//! the whole group, every child reaped.
//!
//! Exit codes follow GNU parallel's manual: 0 when every job succeeded; the
//! number of failed jobs (at most 101) otherwise; with `--halt …,fail=N` the
//! status of the job that triggered the halt; 255 for bad usage. `--retries N`
//! means N more attempts after the first (GNU parallel counts the first).

mod inputs;
mod joblog;
mod options;
mod remote;
mod spool;
mod template;

pub(crate) use remote::{ALLOW_FLAG, guard, run_job_name};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use troika::process::{CommandStatus, GroupChild, GroupKiller};
use troika::{Exit, Handle, ThreadPool};

use inputs::{Source, Stoppers};
use joblog::{Entry, JobLog};
use options::{Cond, Halt, Threshold, When};
use spool::Spool;

/// The exit code of bad usage (not 2, which would read as two failed jobs).
pub(crate) const USAGE_EXIT: u8 = 255;

/// The exit value logged for a command that could not be started, as a shell
/// reports a missing command.
const CANNOT_START: i32 = 127;

/// Options of `troika run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Jobs to run at once: N, 0 (as many as possible), N% of the cores, +N
    /// or -N cores (default: the number of cores). At most 1024, and as many
    /// as the file-handle limit allows.
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        allow_hyphen_values = true
    )]
    jobs: Option<String>,
    /// Print each job's output in input order (still whole per job); later
    /// jobs keep starting behind a slow one.
    #[arg(short = 'k', long)]
    keep_order: bool,
    /// Kill a job (its whole process group: SIGTERM, SIGKILL 200 ms later)
    /// after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<String>,
    /// Run a failed job up to N more times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Stop early: `never`, or WHEN,COND=N with WHEN `now` (kill running
    /// jobs: SIGTERM, then SIGKILL) or `soon` (let them finish), COND `fail`,
    /// `success` or `done`, N a count or a percentage of all jobs (`fail=10%`).
    #[arg(long, value_name = "WHEN,COND=N")]
    halt: Option<String>,
    /// Log every finished job here, in GNU parallel's format.
    #[arg(long, value_name = "FILE")]
    joblog: Option<PathBuf>,
    /// Skip the jobs the job log records as finished (a job killed by its
    /// timeout, Ctrl-C or `--halt now` is not finished).
    #[arg(long, requires = "joblog", conflicts_with = "resume_failed")]
    resume: bool,
    /// Skip the jobs the job log records as succeeded; run failed and new ones.
    #[arg(long, requires = "joblog")]
    resume_failed: bool,
    /// Print the commands, shell-quoted, instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Read inputs from this file, one per line (default: stdin, or the
    /// lists after `:::` and the files after `::::`).
    #[arg(
        short = 'a',
        long = "input",
        visible_alias = "arg-file",
        value_name = "FILE"
    )]
    input: Option<PathBuf>,
    /// Run each job on the workers of a cluster (`troika worker --cluster URL
    /// --allow-run` on each machine) instead of here: redis://host[:port],
    /// rediss://… for TLS, redis+unix:///path. The job log's Host column
    /// names the worker that ran the job; `--timeout` is enforced there.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// The cluster queue to submit the jobs to.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "troika",
        requires = "cluster"
    )]
    queue: String,
    /// Inputs are separated by NUL bytes, not newlines.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Not supported (GNU parallel's column splitting): refused with a message.
    #[arg(long, value_name = "REGEX", hide = true)]
    colsep: Option<String>,
    /// Run the command through `sh -c` (inputs are shell-quoted).
    #[arg(long)]
    shell: bool,
    /// The command and its arguments, then optionally `::: INPUT…` (several
    /// give their cartesian product) and `:::: FILE…` (inputs from files).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Everything a job needs, built before it runs.
#[derive(Clone, Debug)]
struct JobSpec {
    seq: u64,
    /// Its place among the jobs this run starts (from 0).
    ord: usize,
    argv: Vec<OsString>,
    /// The command as a shell would read it (`--dry-run`, the job log).
    shown: String,
}

/// What running a job (with its retries) gave.
#[derive(Debug)]
struct Finished {
    spec: JobSpec,
    start: SystemTime,
    runtime: Duration,
    outcome: Result<Output, String>,
    /// This job was the one that reached `--halt`'s condition.
    halted: bool,
    /// Killed by a stop (Ctrl-C, `--halt now`, a closed stdout): not finished,
    /// so not logged.
    stopped: bool,
    /// The cluster worker that ran it (`None`: here).
    host: Option<String>,
}

#[derive(Debug)]
struct Output {
    /// Bytes the job wrote to stdout (also when streamed straight through).
    received: u64,
    stdout: Spool,
    stderr: Spool,
    status: CommandStatus,
}

impl Finished {
    fn failed(&self) -> bool {
        !matches!(&self.outcome, Ok(out) if out.status.success())
    }

    /// (Exitval, Signal) as GNU parallel's job log writes them: a job killed
    /// at its timeout is -1 and the signal; one that died of a signal is 0
    /// and the signal.
    fn status(&self) -> (i32, i32) {
        match &self.outcome {
            Err(_) => (CANNOT_START, 0),
            Ok(out) => match (out.status.exit, out.status.timed_out) {
                (Exit::Signal(sig), true) => (joblog::KILLED, sig),
                (_, true) => (joblog::KILLED, 15),
                (Exit::Code(code), false) => (code, 0),
                (Exit::Signal(sig), false) => (0, sig),
                _ => (joblog::KILLED, 0),
            },
        }
    }

    /// The status to exit with when this job triggers a halt.
    fn exit_code(&self) -> u8 {
        if !self.failed() {
            return 0;
        }
        match self.status() {
            (_, sig) if sig != 0 => u8::try_from(128 + sig).unwrap_or(255),
            (code, _) => u8::try_from(code.clamp(1, 255)).unwrap_or(255),
        }
    }
}

/// With -k, how many finished jobs waiting for an earlier one may keep their
/// output in memory (the rest is parked in one shared temporary file).
const KEEP_IN_MEMORY: usize = 64;

/// How long a stop's SIGTERM gets before the SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(200);

/// Running jobs' process groups, so a halt or Ctrl-C can kill them.
#[derive(Default)]
struct Running {
    groups: Mutex<HashMap<u64, GroupKiller>>,
    /// Jobs running on a cluster's workers, so a stop can cancel them there.
    remote: Mutex<HashMap<u64, Arc<RemoteHandle>>>,
    stop: Arc<AtomicBool>,
    /// The running jobs were signalled (`--halt now`, Ctrl-C, a closed
    /// stdout): one that fails now was killed, not finished.
    killing: AtomicBool,
    inputs: Stoppers,
    /// A job streaming straight through found stdout closed.
    stdout_closed: AtomicBool,
    /// Ended jobs waiting to print: no job streams while there are any.
    unprinted: AtomicUsize,
    /// With -k: the place of the job whose output comes next.
    next_to_print: AtomicUsize,
}

impl Running {
    /// Start nothing more; running jobs get SIGTERM if `kill`, and SIGKILL
    /// a grace later.
    fn stop(self: &Arc<Self>, kill: bool) {
        self.stop.store(true, Ordering::Release);
        self.inputs.stop_all();
        if !kill {
            return;
        }
        self.killing.store(true, Ordering::Release);
        for killer in self.groups.lock().values() {
            killer.terminate();
        }
        // A remote job's cancel kills it on its worker.
        for handle in self.remote.lock().values() {
            handle.cancel();
        }
        let running = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("troika-run-kill".into())
            .spawn(move || {
                std::thread::sleep(STOP_GRACE);
                for killer in running.groups.lock().values() {
                    killer.kill();
                }
            });
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Split the words after the command into the template and the sources.
fn split_sources(words: &[OsString]) -> anyhow::Result<(Vec<Vec<u8>>, Vec<Source>)> {
    let marker = |w: &OsString| matches!(w.as_bytes(), b":::" | b"::::");
    let at = words.iter().position(marker).unwrap_or(words.len());
    let template: Vec<Vec<u8>> = words[..at].iter().map(|w| w.as_bytes().to_vec()).collect();
    for word in &words[..at] {
        if matches!(word.as_bytes(), b":::+" | b"::::+") {
            bail!(
                "'{}' (linked inputs) is not supported; use ::: or :::: (cartesian product)",
                word.to_string_lossy()
            );
        }
    }
    let mut sources = Vec::new();
    let mut rest = &words[at..];
    while let Some((kind, after)) = rest.split_first() {
        let end = after.iter().position(marker).unwrap_or(after.len());
        let group = &after[..end];
        if let Some(linked) = group
            .iter()
            .find(|w| matches!(w.as_bytes(), b":::+" | b"::::+"))
        {
            bail!(
                "'{}' (linked inputs) is not supported; use ::: or :::: (cartesian product)",
                linked.to_string_lossy()
            );
        }
        if kind.as_bytes() == b":::" {
            sources.push(Source::List(
                group.iter().map(|w| w.as_bytes().to_vec()).collect(),
            ));
        } else {
            if group.is_empty() {
                bail!("'::::' needs at least one file of inputs");
            }
            sources.extend(group.iter().map(|f| Source::File(PathBuf::from(f))));
        }
        rest = &after[end..];
    }
    Ok((template, sources))
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.colsep.is_some() {
        bail!(
            "--colsep (GNU parallel's column splitting) is not supported; \
             split the inputs first, or give the columns as several ::: lists"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let requested = match &args.jobs {
        Some(text) => options::parse_jobs(text, cores)?,
        None => cores,
    };
    let timeout = args
        .timeout
        .as_deref()
        .map(options::parse_timeout)
        .transpose()?;
    let halt = match args.halt.as_deref() {
        Some(text) => options::parse_halt(text)?,
        None => None,
    };
    let (template, mut sources) = split_sources(&args.command)?;
    if template.is_empty() {
        bail!("no command given before ':::'");
    }
    if let Some(path) = &args.input {
        sources.insert(0, Source::File(path.clone()));
    }
    if sources.is_empty() {
        sources.push(Source::Stdin);
    }
    let previous = match (&args.joblog, args.resume || args.resume_failed) {
        (Some(path), true) => joblog::read(path)?,
        _ => HashMap::new(),
    };
    let running = Arc::new(Running::default());
    let separator = if args.null { b'\0' } else { b'\n' };
    let inputs = inputs::open(
        sources,
        separator,
        Arc::clone(&running.stop),
        &running.inputs,
    )?;
    let build = Builder {
        template,
        shell: args.shell,
    };
    let resume_failed = args.resume_failed;
    let skip = move |seq: u64| match previous.get(&seq) {
        Some(entry) if resume_failed => entry.succeeded(),
        Some(entry) => entry.finished(),
        None => false,
    };
    let specs = inputs
        .enumerate()
        .map(move |(i, item)| item.map(|item| build.spec(i as u64 + 1, &item)))
        .filter(move |spec| spec.as_ref().map_or(true, |s| !skip(s.seq)));

    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for spec in specs {
            writeln!(out, "{}", spec.context("reading the inputs failed")?.shown)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut log = match &args.joblog {
        Some(path) => Some(JobLog::open(path, args.resume || args.resume_failed)?),
        None => None,
    };

    // A percentage halt needs the number of jobs: read them all first.
    let percent_halt = matches!(halt, Some(h) if matches!(h.threshold, Threshold::Percent(_)));
    let mut specs: Box<dyn Iterator<Item = std::io::Result<JobSpec>>> = Box::new(specs);
    let mut total = None;
    let mut read_failure = None;
    if percent_halt {
        let mut all = Vec::new();
        for spec in specs.by_ref() {
            match spec {
                Ok(spec) => all.push(spec),
                Err(e) => {
                    read_failure = Some(e);
                    break;
                }
            }
        }
        total = Some(all.len() as u64);
        specs = Box::new(all.into_iter().map(Ok));
    }

    let limit = options::job_limit();
    let jobs = requested.min(limit);
    if jobs < requested && requested != usize::MAX {
        eprintln!(
            "troika: -j {requested}: running {jobs} jobs at once (the most troika and the file-handle limit allow)"
        );
    }
    let jobs = match total {
        Some(total) => jobs
            .min(usize::try_from(total).unwrap_or(usize::MAX))
            .max(1),
        None => jobs,
    };

    watch_signals(&running)?;
    let progress =
        crate::progress::stderr_bar(None, "", "{spinner} {pos} jobs done, {per_sec}, {elapsed}");
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(read_failure));
    let record_error = Arc::clone(&read_error);
    let stop_input = Arc::clone(&running);
    let specs = specs.enumerate().map_while(move |(ord, spec)| {
        if stop_input.stopped() {
            return None;
        }
        spec.map(|spec| JobSpec { ord, ..spec })
            .map_err(|e| *record_error.lock() = Some(e))
            .ok()
    });
    let cluster = match &args.cluster {
        Some(url) => Some(
            troika_cluster::Cluster::connect(url, &args.queue)
                .with_context(|| format!("--cluster: cannot use queue `{}`", args.queue))?,
        ),
        None => None,
    };
    let pool = ThreadPool::builder()
        .workers(jobs)
        .name("troika-run")
        .build()?;
    // Output streams straight through when order and grouping allow it:
    // with -k, the job whose output is next; with one job at a time, each.
    let streaming = (args.keep_order || jobs == 1).then(|| Arc::new(Mutex::new(())));
    let runner = Runner {
        running: Arc::clone(&running),
        timeout,
        retries: args.retries,
        halt,
        total,
        counts: Default::default(),
        triggered: AtomicBool::new(false),
        streaming: streaming.clone(),
        keep_order: args.keep_order,
        cluster,
    };
    let task = move |spec: JobSpec| runner.run(spec);

    let mut failed = 0u64;
    let mut halted: Option<u8> = None;
    let mut stdout_closed = false;
    // Ended jobs whose output waits for a job that streams straight through.
    let mut unprinted: VecDeque<Finished> = VecDeque::new();
    // Print what waits, unless a streaming job holds stdout (then, unless
    // `block`, later: the loop must go on starting jobs).
    let mut flush = |unprinted: &mut VecDeque<Finished>, block: bool| -> anyhow::Result<()> {
        let _turn = match &streaming {
            None => None,
            Some(token) if block => Some(token.lock()),
            Some(token) => match token.try_lock() {
                Some(turn) => Some(turn),
                None => {
                    running.unprinted.store(unprinted.len(), Ordering::Release);
                    return Ok(());
                }
            },
        };
        while let Some(mut done) = unprinted.pop_front() {
            let closed = stdout_closed || running.stdout_closed.load(Ordering::Acquire);
            let printed = progress.suspend(|| {
                print(
                    &mut done,
                    &mut std::io::stdout().lock(),
                    &mut std::io::stderr().lock(),
                    closed,
                )
            });
            if let Err(e) = printed {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("cannot write the output");
                }
                // A closed stdout (`troika run … | head`): stop, quietly.
                stdout_closed = true;
                running.stop(true);
            }
        }
        running.unprinted.store(0, Ordering::Release);
        Ok(())
    };
    // With --keep-order, finished jobs wait here for the ones before them;
    // later jobs keep starting meanwhile.
    let mut waiting: BTreeMap<usize, Option<Finished>> = BTreeMap::new();
    let mut park = spool::ParkFile::default();
    let mut next = 0usize;
    for (index, outcome) in pool.map_unordered(task, specs) {
        let done = outcome.context("a job's supervisor failed")?;
        let ready: Vec<Option<Finished>> = if args.keep_order {
            let mut done = done;
            if index != next
                && let Some(Finished {
                    outcome: Ok(out), ..
                }) = &mut done
                && (waiting.len() >= KEEP_IN_MEMORY || out.stdout.on_disk() || out.stderr.on_disk())
            {
                // Many jobs wait behind a slow one, or this one's output is
                // on disk: park it in the one shared file, so that waiting
                // jobs hold neither memory nor file descriptors.
                out.stdout
                    .park(&mut park)
                    .context("cannot spool a job's output")?;
                out.stderr
                    .park(&mut park)
                    .context("cannot spool a job's output")?;
            }
            waiting.insert(index, done);
            let mut ready = Vec::new();
            while let Some(done) = waiting.remove(&next) {
                ready.push(done);
                next += 1;
            }
            ready
        } else {
            vec![done]
        };
        for done in ready.into_iter().flatten() {
            progress.inc(1);
            if let Some(log) = &mut log
                && !done.stopped
            {
                let (exitval, signal) = done.status();
                log.record(&Entry {
                    seq: done.spec.seq,
                    start: done
                        .start
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                    runtime: done.runtime.as_secs_f64(),
                    received: done.outcome.as_ref().map_or(0, |o| o.received),
                    exitval,
                    signal,
                    command: done.spec.shown.clone(),
                    host: done.host.clone().unwrap_or_else(|| joblog::HERE.to_owned()),
                })?;
            }
            if done.failed() {
                failed += 1;
            }
            if done.halted {
                halted = Some(done.exit_code());
            }
            unprinted.push_back(done);
        }
        running.unprinted.store(unprinted.len(), Ordering::Release);
        running.next_to_print.store(next, Ordering::Release);
        flush(&mut unprinted, false)?;
    }
    flush(&mut unprinted, true)?;
    drop(pool);
    progress.finish_and_clear();
    if stdout_closed || running.stdout_closed.load(Ordering::Acquire) {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(e) = read_error.lock().take() {
        return Err(e).context("reading the inputs failed");
    }
    if running.stopped() && halted.is_none() {
        // Stopped by SIGINT or SIGTERM.
        return Ok(ExitCode::from(130));
    }
    Ok(match halted {
        Some(code) => ExitCode::from(code),
        None => ExitCode::from(u8::try_from(failed.min(101)).unwrap_or(101)),
    })
}

/// Print one job's output whole: its stdout, then its stderr.
fn print(
    done: &mut Finished,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    stdout_closed: bool,
) -> std::io::Result<()> {
    let seq = done.spec.seq;
    match &mut done.outcome {
        Err(_) if done.stopped => {}
        Err(message) => writeln!(stderr, "troika: job {seq}: {message}")?,
        Ok(_) if stdout_closed => {}
        Ok(out) => {
            out.stdout.copy_to(stdout)?;
            stdout.flush()?;
            out.stderr.copy_to(stderr)?;
            if out.status.timed_out {
                writeln!(
                    stderr,
                    "troika: job {} timed out: {}",
                    done.spec.seq, done.spec.shown
                )?;
            }
        }
    }
    Ok(())
}

/// Turns one job's inputs into its argv.
struct Builder {
    template: Vec<Vec<u8>>,
    shell: bool,
}

impl Builder {
    fn spec(&self, seq: u64, inputs: &[Vec<u8>]) -> JobSpec {
        let appended = !template::mentions_input(&self.template);
        if self.shell {
            let mut line: Vec<Vec<u8>> = self
                .template
                .iter()
                .map(|a| template::expand(a, inputs, seq, &template::shell_quote))
                .collect();
            if appended {
                line.extend(inputs.iter().map(|input| template::shell_quote(input)));
            }
            let line = line.join(&b' ');
            let shown = String::from_utf8_lossy(&line).into_owned();
            let argv = vec!["sh".into(), "-c".into(), OsString::from_vec(line)];
            return JobSpec {
                seq,
                ord: 0,
                argv,
                shown,
            };
        }
        let mut argv: Vec<Vec<u8>> = self
            .template
            .iter()
            .map(|a| template::expand(a, inputs, seq, &template::verbatim))
            .collect();
        if appended {
            argv.extend(inputs.iter().cloned());
        }
        let shown = argv
            .iter()
            .map(|a| String::from_utf8_lossy(&template::shell_quote(a)).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        JobSpec {
            seq,
            ord: 0,
            argv: argv.into_iter().map(OsString::from_vec).collect(),
            shown,
        }
    }
}

/// Jobs counted as they end, for `--halt`.
#[derive(Default)]
struct Counts {
    failed: AtomicU64,
    succeeded: AtomicU64,
}

/// Runs one job, with retries, on a pool thread.
struct Runner {
    running: Arc<Running>,
    timeout: Option<Duration>,
    retries: u32,
    halt: Option<Halt>,
    /// The number of jobs, when known (a percentage `--halt`).
    total: Option<u64>,
    /// Counted where jobs end, so a halt takes effect before the worker that
    /// saw it can start another job.
    counts: Counts,
    triggered: AtomicBool,
    /// When order and grouping allow it, the one job holding this streams
    /// its output straight through instead of spooling it.
    streaming: Option<Arc<Mutex<()>>>,
    keep_order: bool,
    /// Run the jobs on this cluster's workers instead of here.
    cluster: Option<troika_cluster::Cluster>,
}

/// A job on a cluster's worker: its output (or why it could not start) and
/// the worker's name.
type RemoteHandle = Handle<(Result<remote::JobOutput, String>, String)>;

impl Runner {
    /// `None` if the run was stopped before this job started.
    fn run(&self, spec: JobSpec) -> Option<Finished> {
        let mut attempt = 0;
        loop {
            if self.running.stopped() {
                return None;
            }
            let mut finished = self.attempt(&spec, attempt >= self.retries);
            if !finished.failed() || attempt >= self.retries || self.running.stopped() {
                if !finished.stopped {
                    finished.halted = self.count(finished.failed());
                }
                return Some(finished);
            }
            attempt += 1;
        }
    }

    /// Count an ended job; true if it is the one that meets `--halt`'s
    /// condition (then nothing new starts, and under `now` every running job
    /// is killed).
    fn count(&self, failed: bool) -> bool {
        let (failures, successes) = if failed {
            (
                self.counts.failed.fetch_add(1, Ordering::AcqRel) + 1,
                self.counts.succeeded.load(Ordering::Acquire),
            )
        } else {
            (
                self.counts.failed.load(Ordering::Acquire),
                self.counts.succeeded.fetch_add(1, Ordering::AcqRel) + 1,
            )
        };
        let Some(halt) = self.halt else {
            return false;
        };
        let count = match halt.cond {
            Cond::Fail if failed => failures,
            Cond::Success if !failed => successes,
            Cond::Done => failures + successes,
            _ => return false,
        };
        let met = match halt.threshold {
            Threshold::Count(n) => count >= n,
            Threshold::Percent(p) => {
                let total = self.total.unwrap_or(u64::MAX) as f64;
                count as f64 * 100.0 >= p * total
            }
        };
        if !met || self.triggered.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.running.stop(halt.when == When::Now);
        true
    }

    /// One attempt at `spec`; only the `last` one may stream its output
    /// straight through (a failed earlier attempt's output is dropped, as
    /// when it is spooled).
    fn attempt(&self, spec: &JobSpec, last: bool) -> Finished {
        if let Some(cluster) = &self.cluster {
            return self.attempt_remote(cluster, spec);
        }
        let start = SystemTime::now();
        let clock = Instant::now();
        let mut command = Command::new(&spec.argv[0]);
        command.args(&spec.argv[1..]);
        let mut stopped = false;
        let outcome = match GroupChild::spawn(&mut command) {
            Err(e) => Err(format!(
                "cannot run '{}': {e}",
                spec.argv[0].to_string_lossy()
            )),
            Ok(child) => {
                let killer = child.killer();
                self.running.groups.lock().insert(spec.seq, killer.clone());
                // A kill (`--halt now`, Ctrl-C) that raced with the spawn
                // must still kill this job; `--halt soon` lets it finish.
                // `stop` sets `killing` before it walks `groups`, and both
                // sides hold the `groups` lock, so one of them sees the other.
                if self.running.killing.load(Ordering::Acquire) {
                    killer.terminate();
                    killer.kill();
                }
                let mut stdout = Spool::default();
                let mut stderr = Spool::default();
                // With -k only the job printed next may stream, and only
                // once everything before it is printed (`next_to_print` is
                // published after `unprinted`).
                let head = last
                    && (!self.keep_order
                        || self.running.next_to_print.load(Ordering::Acquire) == spec.ord);
                let turn = self
                    .streaming
                    .as_ref()
                    .filter(|_| head && self.running.unprinted.load(Ordering::Acquire) == 0)
                    .and_then(|token| token.try_lock());
                let (status, received) = match turn {
                    Some(_turn) => {
                        let mut out = Counted::new(std::io::stdout());
                        let status = child
                            .communicate_into(self.timeout, &mut out, &mut std::io::stderr())
                            .and_then(|status| out.flush().map(|()| status));
                        (status, out.count)
                    }
                    None => {
                        let status = child.communicate_into(self.timeout, &mut stdout, &mut stderr);
                        (status, stdout.len())
                    }
                };
                self.running.groups.lock().remove(&spec.seq);
                match status {
                    Ok(status) => {
                        // Under `--halt soon` nothing is signalled: a job
                        // that fails then failed on its own and is logged.
                        stopped = !status.success() && self.running.killing.load(Ordering::Acquire);
                        Ok(Output {
                            received,
                            stdout,
                            stderr,
                            status,
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        // Streaming into a closed stdout: end the run, quietly.
                        self.running.stdout_closed.store(true, Ordering::Release);
                        self.running.stop(true);
                        stopped = true;
                        Err("stdout closed".to_owned())
                    }
                    Err(e) => Err(format!(
                        "lost track of '{}': {e}",
                        spec.argv[0].to_string_lossy()
                    )),
                }
            }
        };
        Finished {
            spec: spec.clone(),
            start,
            runtime: clock.elapsed(),
            outcome,
            halted: false,
            stopped,
            host: None,
        }
    }

    /// One attempt at `spec` on a worker of `cluster`: its output comes back
    /// whole and is spooled here as a local job's is.
    fn attempt_remote(&self, cluster: &troika_cluster::Cluster, spec: &JobSpec) -> Finished {
        let start = SystemTime::now();
        let clock = Instant::now();
        let argv: Vec<Vec<u8>> = spec.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        let timeout_ms = self.timeout.map_or(0, |d| {
            u64::try_from(d.as_millis().max(1)).unwrap_or(u64::MAX)
        });
        let handle = Arc::new(cluster.submit_traced(remote::run_job, (argv, timeout_ms)));
        {
            // As with `groups`: a stop that raced with the submit still
            // cancels this job (`stop` sets `killing` before it takes the lock).
            let mut remote = self.running.remote.lock();
            remote.insert(spec.seq, Arc::clone(&handle));
            if self.running.killing.load(Ordering::Acquire) {
                handle.cancel();
            }
        }
        handle.wait();
        self.running.remote.lock().remove(&spec.seq);
        let outcome = match Arc::try_unwrap(handle) {
            Ok(handle) => handle.result(),
            // Only `stop` clones it, under the lock just released.
            Err(_) => Err(troika::TaskError::new(troika::ErrorKind::Failed(
                "the job's handle is still shared".into(),
            ))),
        };
        let killing = self.running.killing.load(Ordering::Acquire);
        let mut stopped = false;
        let mut host = None;
        let outcome = match outcome {
            Ok((Ok(out), worker)) => {
                host = Some(worker);
                let status = out.status();
                stopped = !status.success() && killing;
                let mut stdout = Spool::default();
                let mut stderr = Spool::default();
                match stdout
                    .write_all(&out.stdout)
                    .and_then(|()| stderr.write_all(&out.stderr))
                {
                    Ok(()) => Ok(Output {
                        received: out.stdout.len() as u64,
                        stdout,
                        stderr,
                        status,
                    }),
                    Err(e) => Err(format!(
                        "cannot spool the output of a job from {worker_name}: {e}",
                        worker_name = host.as_deref().unwrap_or("?")
                    )),
                }
            }
            Ok((Err(message), worker)) => {
                host = Some(worker);
                Err(message)
            }
            Err(_) if killing => {
                stopped = true;
                Err("cancelled".to_owned())
            }
            Err(e) => Err(format!("the cluster could not run it: {e}")),
        };
        Finished {
            spec: spec.clone(),
            start,
            runtime: clock.elapsed(),
            outcome,
            halted: false,
            stopped,
            host,
        }
    }
}

/// A writer that counts what passes through.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Counted<W> {
        Counted { inner, count: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// On SIGINT or SIGTERM: start nothing more, stop reading inputs, and end
/// every running job (SIGTERM, then SIGKILL).
fn watch_signals(running: &Arc<Running>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot watch for Ctrl-C")?;
    let running = Arc::clone(running);
    std::thread::Builder::new()
        .name("troika-run-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                running.stop(true);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn inputs_are_appended_without_a_placeholder_and_quoted_for_the_shell() {
        let direct = Builder {
            template: words(&["echo", "-n"]),
            shell: false,
        };
        let spec = direct.spec(1, &words(&["a b"]));
        assert_eq!(spec.argv, ["echo", "-n", "a b"]);
        assert_eq!(spec.shown, "echo -n 'a b'");
        let placed = Builder {
            template: words(&["cp", "{}", "{.}.bak"]),
            shell: false,
        };
        assert_eq!(
            placed.spec(2, &words(&["x.txt"])).argv,
            ["cp", "x.txt", "x.bak"]
        );
        let numbered = Builder {
            template: words(&["echo", "{#}"]),
            shell: false,
        };
        assert_eq!(numbered.spec(7, &words(&["x"])).argv, ["echo", "7"]);
        let shell = Builder {
            template: words(&["echo", "{}", "|", "wc", "-c"]),
            shell: true,
        };
        assert_eq!(
            shell.spec(3, &words(&["it's"])).argv,
            ["sh", "-c", r"echo 'it'\''s' | wc -c"]
        );
    }

    #[test]
    fn sources_split_at_three_and_four_colons() {
        let words: Vec<OsString> = ["echo", ":::", "a", "b", "::::", "f", "g", ":::", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        let (template, sources) = split_sources(&words).unwrap();
        assert_eq!(template, [b"echo".to_vec()]);
        assert_eq!(sources.len(), 4);
        assert!(matches!(&sources[1], Source::File(p) if p == std::path::Path::new("f")));
        let linked: Vec<OsString> = ["echo", ":::+", "a"].iter().map(OsString::from).collect();
        assert!(split_sources(&linked).is_err());
    }
}
