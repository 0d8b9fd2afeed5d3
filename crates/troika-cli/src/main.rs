//! The `troika` command: `bench` times one experiment (trial division of
//! 112272535095293, waits, trivial tasks) on every concurrency model;
//! `primes` tests numbers in any mode; `run` runs a command per input in
//! parallel; `crawl` fetches many URLs at once; `serve` answers primality
//! checks over HTTP.
//!
//! Help texts speak to someone who has never seen the sources (issue 13,
//! item 10): they say what each experiment is, never "the seeds'", and
//! `tests/cli_help.rs` keeps them so.

mod bench;
mod crawl;
mod http;
mod mode;
mod primes;
mod progress;
mod run;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The whole command allocates through mimalloc: a task submitted on one
/// thread is freed on another, and glibc's malloc serialises such frees on
/// the arena lock (the overhead workload ran at 1.4–1.6 M tasks/s with it;
/// see the README for the measured difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads, processes and coroutines behind one futures API, and what they
/// are for: time a CPU-bound and an I/O-bound experiment on each, test
/// numbers for primality, run commands in parallel, fetch URLs, serve HTTP.
#[derive(Debug, Parser)]
#[command(name = "troika", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time the same work on each concurrency model (serial, threads,
    /// processes, async) and print wall time, speedup and parallel efficiency.
    ///
    /// Three workloads: cpu tests whether 112272535095293 is prime by trial
    /// division (every odd divisor up to its square root, about 5.3 million
    /// of them) once per task, 100 tasks; io has 200 tasks that each wait
    /// 50 ms; overhead runs 100,000 trivial tasks, the executor's own cost
    /// per task, then times 10,000 one-at-a-time round trips for p50/p99
    /// latency. Wall time includes starting and stopping the pool. Speedup
    /// is over the serial run of the same workload; efficiency is speedup
    /// divided by the workers.
    Bench(bench::BenchArgs),
    /// Test numbers for primality: arguments, --input FILE or stdin, one line
    /// out per line in, in input order.
    ///
    /// Deterministic Miller–Rabin by default (about a microsecond for any
    /// 64-bit number); --algorithm trial divides by every odd number up to
    /// the square root instead (slow, but it reports the smallest factor).
    /// A line that is not a number from 0 to 18446744073709551615 gets an
    /// error line of its own and makes the exit status 1; the other lines
    /// are still answered.
    Primes(primes::command::PrimesArgs),
    /// Run a command once per input, in parallel (GNU parallel's job):
    /// `troika run [OPTIONS] -- COMMAND [ARGS…] [::: INPUT…]`.
    Run(run::RunArgs),
    /// Fetch many URLs at once under a concurrency limit: one JSON line per URL.
    ///
    /// HTTP/1.1 and https (rustls); redirects are followed up to --max-redirects.
    /// Connections are made directly: proxy variables (HTTPS_PROXY, …) are not read.
    #[command(
        after_help = "Exit status: 0 if no line has an error, 1 if one has, 2 for bad usage \
(--help says which outcomes are errors).",
        after_long_help = crawl::AFTER_LONG_HELP
    )]
    Crawl(crawl::CrawlArgs),
    /// Answer primality checks over HTTP: GET /is_prime/<n,n,…> runs them on
    /// a process pool; GET / asks a file, a SQLite database and an HTTP API at
    /// once and answers with all three; /healthz and /metrics.
    Serve(serve::ServeArgs),
    /// Serve a cluster queue: run the tasks that clients on any machine put
    /// in Redis (`troika primes --cluster`, `troika bench --modes cluster`,
    /// or a program using troika-cluster) on N local processes, until SIGTERM.
    Worker(worker::WorkerArgs),
    /// Internal: end process group PGID once stdin closes (the guard of a
    /// `troika run --cluster` job on a worker).
    #[command(hide = true)]
    RunGuard {
        /// The job's process group.
        pgid: i32,
    },
}

fn main() -> ExitCode {
    // A process-pool worker is this binary started again: it works here and
    // never returns.
    troika::init();
    // `troika run` reports bad usage as 255, as GNU parallel does (2 would
    // read as two failed jobs); the other commands use 2.
    let usage_exit = if std::env::args().nth(1).as_deref() == Some("run") {
        run::USAGE_EXIT
    } else {
        2
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { usage_exit } else { 0 });
        }
    };
    let outcome = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Primes(args) => primes::command::run(&args),
        Command::Run(args) => run::run(args),
        Command::Crawl(args) => crawl::run(&args),
        Command::Serve(args) => serve::run(args),
        Command::Worker(args) => worker::run(&args),
        Command::RunGuard { pgid } => run::guard(pgid),
    };
    match outcome {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troika: {e:#}");
            ExitCode::from(usage_exit)
        }
    }
}

/// A closed stdout (`troika bench | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
