//! The `troika` command: `bench` measures the seeds' experiment across every
//! concurrency model; `primes` tests numbers in any mode; `crawl` fetches
//! many URLs at once; `run` runs a command per input in parallel.

mod bench;
mod crawl;
mod mode;
mod primes;
mod progress;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The whole command allocates through mimalloc: a task submitted on one
/// thread is freed on another, and glibc's malloc serialises such frees on
/// the arena lock (the overhead workload ran at 1.4–1.6 M tasks/s with it;
/// see the README for the measured difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Processes, threads and coroutines behind one futures API.
#[derive(Debug, Parser)]
#[command(name = "troika", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the seeds' CPU experiment and the overhead workload in each mode and
    /// print a table of wall time, speedup and parallel efficiency.
    Bench(bench::BenchArgs),
    /// Test numbers for primality: arguments, --input FILE or stdin, one line
    /// out per line in, in input order.
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
    /// Serve the seeds' Flask service over HTTP: /is_prime/<numbers> on a
    /// pool, / fanning out to a file, SQLite and an HTTP API, /healthz, /metrics.
    Serve(serve::ServeArgs),
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
