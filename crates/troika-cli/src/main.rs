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

/// `mi_option_purge_delay`: its place in mimalloc's `mi_option_t` (15 in both
/// the v2 and v3 headers that libmimalloc-sys builds; the sys crate names
/// its neighbours 14 and 16 but not it; its table of defaults in v3's
/// `options.c` has it 16th). A test checks its default of 1,000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Have mimalloc give freed pages back to the system after 1 ms instead of
/// a second. A crawl at concurrency 1000 frees and reallocates its per-request
/// memory on both runtime threads all the time; with the default delay its
/// peak RSS was 2–4 MB higher (48.8–51.1 MB against 46.0–47.2 MB in
/// alternating runs, at the same pages/s).
pub(crate) fn return_freed_memory_promptly() {
    // SAFETY: `mi_option_set` stores an integer that mimalloc reads whenever
    // it decides to purge; setting it at any time, from any thread, is
    // supported by mimalloc's option API.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) };
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reading an integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000, "mimalloc's default purge delay (ms)");
        }
        return_freed_memory_promptly();
        assert_eq!(get(), 1);
    }
}
