//! `troika worker`: serve a cluster queue with this binary's registered
//! functions (the primality checks of `troika primes` and the benchmark's
//! workloads).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Options of `troika worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The Redis to serve: redis://[user:password@]host[:port][/db],
    /// rediss://… for TLS, or redis+unix:///path/to/redis.sock[?pass=…].
    #[arg(long, value_name = "URL")]
    cluster: String,
    /// The queue's name (clients submit to the same name).
    #[arg(long, default_value = "troika")]
    queue: String,
    /// Tasks run at once, each in a process of its own (default: the
    /// available parallelism).
    #[arg(long)]
    processes: Option<usize>,
    /// This worker's name in the queue (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// Seconds a task may go without this worker renewing it before other
    /// workers take it over (it renews every third of this while it lives).
    #[arg(long, default_value_t = 30.0)]
    lease_secs: f64,
    /// After SIGTERM, seconds running tasks may take to finish before they
    /// are killed and handed back.
    #[arg(long, default_value_t = 60.0)]
    grace_secs: f64,
    /// At most this many tasks held at once, running or waiting here
    /// (default: 16 per process). Within it the worker holds about 2 ms of
    /// work beyond the running tasks, so slow tasks spread over the workers
    /// by themselves.
    #[arg(long, value_name = "N")]
    prefetch: Option<usize>,
    /// Run commands for `troika run --cluster` (any argv a client sends, as
    /// this worker's user). Without it such jobs fail with an error naming
    /// this flag.
    #[arg(long)]
    allow_run: bool,
}

pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    // Colours only on a terminal: a log file gets plain lines.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds, not {s}"))
    };
    let mut builder = troika_cluster::Worker::builder(&args.cluster, &args.queue)
        .lease(secs(args.lease_secs, "lease-secs")?)
        .grace(secs(args.grace_secs, "grace-secs")?);
    if let Some(n) = args.processes {
        builder = builder.processes(n);
    }
    if let Some(n) = args.prefetch {
        builder = builder.prefetch(n);
    }
    if !args.allow_run {
        builder = builder.refuse(
            crate::run::run_job_name(),
            format!(
                "it runs no commands for `troika run --cluster` unless started with \
                 `troika worker {}`",
                crate::run::ALLOW_FLAG
            ),
        );
    }
    if let Some(name) = &args.name {
        builder = builder.name(name.clone());
    }
    builder.run()?;
    Ok(ExitCode::SUCCESS)
}
