//! The `troika` command: `bench` measures the seeds' experiment across every
//! concurrency model.

mod bench;
mod crawl;
mod primes;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Fetch many URLs at once under a concurrency limit: one JSON line per URL.
    Crawl(crawl::CrawlArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let outcome = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Crawl(args) => crawl::run(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troika: {e:#}");
            ExitCode::from(2)
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
