//! `troika primes`: test numbers from arguments, a file or stdin, in any mode,
//! one output line per input line, in input order.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use std::collections::VecDeque;

use troika::aio::AsyncExecutor;
use troika::{ProcessPool, ThreadPool};
use troika_workloads::primes::check_numbers;

use crate::mode::Mode;
use troika_workloads::primes::{Algorithm, Verdict, parse_number};

/// Options of `troika primes`.
#[derive(Debug, Args)]
pub(crate) struct PrimesArgs {
    /// Numbers to test; without them (and without --input) stdin is read,
    /// one number per line.
    #[arg(allow_negative_numbers = true)]
    numbers: Vec<String>,
    /// Read numbers from this file, one per line.
    #[arg(long, conflicts_with = "numbers")]
    input: Option<PathBuf>,
    /// The test to run: trial division, or deterministic Miller–Rabin.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::MillerRabin)]
    algorithm: AlgorithmArg,
    /// How to run the tests: serial, threads, processes or async.
    #[arg(long, default_value = "threads")]
    mode: String,
    /// Workers of the pool (default: the available parallelism).
    #[arg(long)]
    workers: Option<usize>,
    /// One JSON object per line instead of `n prime|composite`.
    #[arg(long)]
    json: bool,
    /// Run the tests on the workers of a cluster instead (`troika worker
    /// --cluster URL` on each machine): redis://host[:port], rediss://…,
    /// or redis+unix:///path/to/redis.sock.
    #[arg(long, value_name = "URL", conflicts_with_all = ["mode", "workers"])]
    cluster: Option<String>,
    /// The cluster queue to submit to.
    #[arg(long, default_value = "troika", requires = "cluster")]
    queue: String,
}

/// `--algorithm` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AlgorithmArg {
    /// Trial division by every odd number up to the square root (finds the
    /// smallest factor; seconds near 2^64).
    Trial,
    /// Deterministic Miller–Rabin (about a microsecond for any u64).
    MillerRabin,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Algorithm {
        match arg {
            AlgorithmArg::Trial => Algorithm::Trial,
            AlgorithmArg::MillerRabin => Algorithm::MillerRabin,
        }
    }
}

/// What one input line gave.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outcome {
    Checked(Verdict),
    Bad { input: String, error: String },
}

/// An input line and what it parsed to.
struct Parsed {
    input: String,
    number: Result<u64, String>,
}

impl Parsed {
    fn number(&self) -> Result<u64, String> {
        self.number.clone()
    }
}

/// Parse one input line (surrounding ASCII white space is ignored).
fn parse_line(line: String) -> Parsed {
    let token = line.trim_matches(|c: char| c.is_ascii_whitespace());
    let number = parse_number(token).map_err(|e| e.to_string());
    Parsed {
        input: line,
        number,
    }
}

/// Test one input line.
fn check_line(algorithm: Algorithm, line: &str) -> Outcome {
    let parsed = parse_line(line.to_owned());
    match parsed.number {
        Ok(n) => Outcome::Checked(algorithm.check(n)),
        Err(error) => Outcome::Bad {
            input: parsed.input,
            error,
        },
    }
}

/// Numbers per task: trial division can take seconds per number, so one per
/// task keeps the workers evenly loaded; Miller–Rabin takes about a
/// microsecond, so chunks amortise the hand-off.
fn chunksize(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Trial => 1,
        Algorithm::MillerRabin => 512,
    }
}

/// Lines in batches of `size`, lazily.
fn chunks(lines: impl Iterator<Item = String>, size: usize) -> impl Iterator<Item = Vec<String>> {
    let mut lines = lines.peekable();
    std::iter::from_fn(move || {
        lines.peek()?;
        Some(lines.by_ref().take(size).collect())
    })
}

pub(crate) fn run(args: &PrimesArgs) -> anyhow::Result<ExitCode> {
    // A cluster runs the process pool's tasks on its workers.
    let mode = match args.cluster {
        Some(_) => Mode::Processes,
        None => Mode::parse(&args.mode)?,
    };
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let (lines, known_len): (
        Box<dyn Iterator<Item = std::io::Result<String>>>,
        Option<u64>,
    ) = match (&args.input, args.numbers.is_empty()) {
        (Some(path), _) => {
            let file = File::open(path)
                .with_context(|| format!("cannot read --input {}", path.display()))?;
            (Box::new(lines_of(BufReader::new(file))), None)
        }
        (None, false) => (
            Box::new(args.numbers.clone().into_iter().map(Ok)),
            Some(args.numbers.len() as u64),
        ),
        (None, true) => (Box::new(lines_of(std::io::stdin().lock())), None),
    };
    let progress = crate::progress::stderr_bar(
        known_len,
        "{bar:40} {pos}/{len} numbers, {per_sec}, eta {eta}",
        "{spinner} {pos} numbers, {per_sec}",
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut bad = 0u64;
    // A read error ends the input; it is reported after the lines before it.
    let read_error = Rc::new(RefCell::new(None));
    let record = Rc::clone(&read_error);
    let lines = lines.map_while(move |line| match line {
        Ok(line) => Some(line),
        Err(e) => {
            *record.borrow_mut() = Some(e);
            None
        }
    });
    let algorithm = Algorithm::from(args.algorithm);
    let mut emit = |outcome: Outcome| -> anyhow::Result<()> {
        bad += u64::from(matches!(outcome, Outcome::Bad { .. }));
        write_outcome(&mut out, &outcome, args.json)?;
        progress.inc(1);
        Ok(())
    };
    match mode {
        Mode::Serial => {
            for line in lines {
                emit(check_line(algorithm, &line))?;
            }
        }
        Mode::Threads => {
            let mut builder = ThreadPool::builder().name("primes");
            if let Some(workers) = args.workers {
                builder = builder.workers(workers);
            }
            let pool = builder.build()?;
            let chunksize = chunksize(algorithm);
            for outcome in pool.imap(
                move |line: String| check_line(algorithm, &line),
                lines,
                chunksize,
            )? {
                emit(outcome.map_err(|e| anyhow::anyhow!("a check failed: {e}"))?)?;
            }
        }
        Mode::Processes => {
            let mut builder = ProcessPool::builder().name("primes");
            if let Some(workers) = args.workers {
                builder = builder.workers(workers);
            }
            let (pool, cluster);
            // Lines are parsed here; only the valid numbers of each chunk
            // travel to a worker, and the answers are put back in line order.
            let parsed: Rc<RefCell<VecDeque<Vec<Parsed>>>> = Rc::default();
            let keep = Rc::clone(&parsed);
            let batches = chunks(lines, chunksize(algorithm)).map(move |chunk| {
                let lines: Vec<Parsed> = chunk.into_iter().map(parse_line).collect();
                let numbers = lines.iter().filter_map(|p| p.number().ok()).collect();
                keep.borrow_mut().push_back(lines);
                (algorithm, numbers)
            });
            type Verdicts = Result<Vec<Verdict>, troika::TaskError>;
            let answers: Box<dyn Iterator<Item = Verdicts>> = match &args.cluster {
                Some(url) => {
                    cluster = troika_cluster::Cluster::connect(url, &args.queue)?;
                    let calls = batches.map(|batch| troika::Call::new(check_numbers, batch));
                    Box::new(troika::Executor::map_tasks(&cluster, calls, 64))
                }
                None => {
                    pool = builder.build()?;
                    Box::new(pool.map(check_numbers, batches))
                }
            };
            for verdicts in answers {
                let verdicts = verdicts.map_err(|e| anyhow::anyhow!("a check failed: {e}"))?;
                let lines = parsed.borrow_mut().pop_front().unwrap_or_default();
                let mut verdicts = verdicts.into_iter();
                for line in lines {
                    let outcome = match line.number() {
                        Ok(_) => match verdicts.next() {
                            Some(v) => Outcome::Checked(v),
                            None => {
                                anyhow::bail!("a worker answered fewer numbers than it was sent")
                            }
                        },
                        Err(error) => Outcome::Bad {
                            input: line.input,
                            error,
                        },
                    };
                    emit(outcome)?;
                }
            }
        }
        Mode::Async => {
            let mut builder = AsyncExecutor::builder().name("primes");
            if let Some(workers) = args.workers {
                builder = builder.workers(workers);
            }
            let executor = builder.build()?;
            let batches = chunks(lines, chunksize(algorithm));
            for outcomes in executor.map(
                move |chunk: Vec<String>| async move {
                    chunk
                        .iter()
                        .map(|line| check_line(algorithm, line))
                        .collect::<Vec<_>>()
                },
                batches,
            ) {
                for outcome in outcomes.map_err(|e| anyhow::anyhow!("a check failed: {e}"))? {
                    emit(outcome)?;
                }
            }
        }
    }
    out.flush()?;
    progress.finish_and_clear();
    if let Some(e) = read_error.take() {
        return Err(e).context("reading the input failed");
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Lines of a reader, split on `\n` with a trailing `\r` dropped; bytes that
/// are not UTF-8 are kept visible (replaced) so the line still gets its error.
fn lines_of(reader: impl BufRead) -> impl Iterator<Item = std::io::Result<String>> {
    reader.split(b'\n').map(|line| {
        line.map(|mut bytes| {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    })
}

fn write_outcome(out: &mut impl Write, outcome: &Outcome, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, outcome)?;
        return writeln!(out);
    }
    match outcome {
        Outcome::Checked(v) => writeln!(
            out,
            "{} {}",
            v.n,
            if v.prime { "prime" } else { "composite" }
        ),
        Outcome::Bad { input, error } => writeln!(out, "{input} error: {error}"),
    }
}
