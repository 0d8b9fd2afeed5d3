//! `troika crawl`: fetch many URLs at once under a concurrency limit, one
//! JSON line per input URL (the job of Python's aiohttp and ThreadPoolExecutor crawlers).
//!
//! Input lines come from the arguments, `--input FILE` or stdin, read by a
//! thread into a bounded channel, so an endless input is crawled in bounded
//! memory. In `async` mode (the default) `--concurrency` long-lived tasks
//! (slots) on a tokio runtime each fetch one URL after another, taking the
//! next line as soon as they have handed their last record to the writer
//! task (with `--keep-order`, each URL is a task spawned through
//! `troika::aio::stream_map_bounded`, so lines come out in input order); the
//! runtime has one thread unless `--io-threads` says more. In `threads`
//! mode (Python's `ThreadPoolExecutor` crawler) a troika thread pool with
//! one thread per concurrent request blocks on each fetch. Both share the
//! fetch logic in [`fetch`], so they differ only in how requests are
//! scheduled.

mod fetch;
mod pool;
mod record;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::{FutureExt, StreamExt};
use hyper::Method;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use fetch::{FetchOptions, Fetcher};
use record::{Failure, FailureKind, Record, Summary};

/// The end of `troika crawl --help`: the output, what counts as an error,
/// and the exit status.
pub(crate) const AFTER_LONG_HELP: &str = "\
Output: one JSON line per input URL, with \"url\", \"status\" (null if no response \
arrived), \"bytes\" (body bytes received), \"elapsed_ms\", \"error\" and \"error_kind\" \
(null, or what went wrong), \"attempts\", and when they apply \"final_url\" (after \
redirects) and \"warning\".

Errors (a line whose \"error\" is not null), by \"error_kind\":
  invalid_url         the line is not a URL, or has no host
  invalid_input       the line is not valid UTF-8
  scheme_not_allowed  the URL or a redirect is not http or https
  redirect_limit      more than --max-redirects redirects
  timeout             --connect-timeout or --timeout passed; a response that had
                      started keeps its \"status\" and the \"bytes\" received
  connect             the connection failed or broke off (also mid-body)
  too_large           the body passed --max-bytes (it is cut off there)
  invalid_utf8        a body declared UTF-8 (a charset=utf-8 header, a <meta> tag
                      naming UTF-8, or JSON) that is not valid UTF-8
  request             anything else the HTTP client reported
Not errors: every HTTP status, 404 and 500 included (filter on \"status\"; 5xx \
answers are retried under --retries), and a text page that is not UTF-8 and names \
no charset: a browser shows it (as windows-1252), so it is a page with a \"warning\".

Exit status:
  0  no line has an error (also when stdout is closed early, as by `| head`)
  1  at least one line has an error
  2  bad usage (an invalid option or header, an --input that cannot be opened, an
     --output that cannot be created: nothing is fetched), or an input that could
     not be read to its end";

/// Options of `troika crawl`.
#[derive(Debug, Args)]
pub(crate) struct CrawlArgs {
    /// URLs to fetch. Without any, URLs are read from --input or stdin, one per line.
    urls: Vec<String>,
    /// Read URLs from this file, one per line (blank lines are skipped).
    #[arg(short, long, value_name = "FILE", conflicts_with = "urls")]
    input: Option<PathBuf>,
    /// Write the JSON lines here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write lines in input order (default: in completion order).
    #[arg(long)]
    keep_order: bool,
    /// HTTP method (default: GET, or POST with --data).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// A request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A request body, such as '{"PageIndex":1}' (sent as given; add -H 'Content-Type: …').
    #[arg(short, long)]
    data: Option<String>,
    /// Requests in flight at once.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Requests in flight at once to one host (host:port).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    per_host: Option<u32>,
    /// Requests started per second to one host (host:port).
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate_per_host: Option<f64>,
    /// Total time for one request, body included, in seconds.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    timeout: Duration,
    /// Time to establish a connection, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// Extra attempts after the first, for connection errors, time-outs and 5xx answers (never 4xx).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// The first retry's delay in milliseconds; it doubles with each retry (with jitter).
    #[arg(long, value_name = "MS", default_value_t = 250)]
    backoff_ms: u64,
    /// Cut bodies off after this many bytes and report "too large" (K, M, G suffixes are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "10MiB", value_parser = parse_size)]
    max_bytes: u64,
    /// Redirects followed before giving up.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_redirects: usize,
    /// The User-Agent header.
    #[arg(long, default_value = concat!("troika-crawl/", env!("CARGO_PKG_VERSION")))]
    user_agent: String,
    /// Coroutines on tokio (async), or a thread pool with one thread per request in flight (threads).
    #[arg(long, value_enum, default_value_t = CrawlMode::Async)]
    mode: CrawlMode,
    /// Threads that run the fetches in async mode (1: one thread does all the
    /// I/O, with no hand-offs between threads; more for a TLS-heavy crawl on
    /// many cores).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    io_threads: u32,
    /// No progress bar and no summary on stderr.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CrawlMode {
    Async,
    Threads,
}

/// One non-blank input line, trimmed; `Err` holds a lossy decoding of a
/// line that is not UTF-8.
type Line = Result<String, String>;

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("must be more than 0".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if rate.is_nan() || rate <= 0.0 || rate.is_infinite() {
        return Err("must be a positive number".into());
    }
    Ok(rate)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 1048576, 512K or 10MiB"))?;
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size suffix '{other}'")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_header(raw: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = raw
        .split_once(':')
        .with_context(|| format!("--header '{raw}' is not 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("--header '{raw}': bad header name"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("--header '{raw}': bad header value"))?;
    Ok((name, value))
}

impl CrawlArgs {
    fn fetch_options(&self) -> anyhow::Result<FetchOptions> {
        let method = match (&self.method, &self.data) {
            (Some(m), _) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .with_context(|| format!("--method '{m}' is not an HTTP method"))?,
            (None, Some(_)) => Method::POST,
            (None, None) => Method::GET,
        };
        let mut headers = HeaderMap::new();
        for raw in &self.headers {
            let (name, value) = parse_header(raw)?;
            headers.append(name, value);
        }
        let concurrency = self.concurrency as usize;
        Ok(FetchOptions {
            method,
            headers,
            body: self.data.clone(),
            user_agent: self.user_agent.clone(),
            concurrency,
            per_host: self.per_host.map(|n| n as usize),
            rate_per_host: self.rate_per_host,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            retries: self.retries,
            backoff: Duration::from_millis(self.backoff_ms),
            max_bytes: self.max_bytes,
            max_redirects: self.max_redirects,
        })
    }
}

/// Run `troika crawl`. Exit code 0 when every line has a null error, 1 when
/// some have one; bad usage is an `Err` (exit 2). [`AFTER_LONG_HELP`] says
/// so to users: keep the two in step.
pub(crate) fn run(args: &CrawlArgs) -> anyhow::Result<ExitCode> {
    let options = args.fetch_options()?;
    let fetcher = Arc::new(Fetcher::new(options).context("could not build the HTTP client")?);
    let (source, known_len): (Box<dyn Read + Send>, Option<u64>) = if !args.urls.is_empty() {
        let joined = args.urls.join("\n");
        (
            Box::new(std::io::Cursor::new(joined.into_bytes())),
            Some(args.urls.len() as u64),
        )
    } else if let Some(path) = &args.input {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        (Box::new(file), None)
    } else {
        (Box::new(std::io::stdin()), None)
    };
    // Buffered: lines are flushed in batches, whenever no other line is ready.
    let out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout())),
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let sink = Sink::new(out, show, known_len);

    let (tx, rx) = mpsc::channel::<Vec<Line>>(LINE_BATCHES);
    let reader = std::thread::Builder::new()
        .name("troika-crawl-input".into())
        .spawn(move || read_lines(source, &tx))
        .context("could not start the input thread")?;

    let started = Instant::now();
    let window = fetcher.window();
    let mut sink = match args.mode {
        CrawlMode::Async => crawl_async(
            &fetcher,
            rx,
            window,
            args.io_threads as usize,
            args.keep_order,
            sink,
        ),
        CrawlMode::Threads => crawl_threads(&fetcher, rx, window, args.keep_order, sink),
    }?;
    let wall = started.elapsed();
    sink.finish()?;
    // The reader has finished: the channel was drained to its end.
    match reader.join() {
        Ok(result) => result.context("reading the input failed")?,
        Err(_) => bail!("the input thread panicked"),
    }
    if !args.quiet {
        let mut summary = sink.summary.render(wall);
        if let Some(peak) = peak_rss() {
            summary.push_str(&format!(
                "; peak RSS {:.1} MiB",
                peak as f64 / f64::from(1 << 20)
            ));
        }
        eprintln!("troika crawl: {summary}");
    }
    Ok(if sink.summary.error_count() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// This process's peak resident set so far (`VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Lines travel from the input thread in batches of at most this many, so
/// a crawl does not wake that thread for every URL it takes.
const LINE_BATCH: usize = 256;

/// Batches the input channel holds.
const LINE_BATCHES: usize = 4;

/// Send every non-blank line, trimmed, in input order. A batch goes out when
/// it is full or when the next line is not read yet (a pipe or terminal that
/// has no more for now), so a slow producer's URLs are not held back.
fn read_lines(source: Box<dyn Read + Send>, tx: &mpsc::Sender<Vec<Line>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(source);
    let mut buf = Vec::new();
    let mut batch = Vec::with_capacity(LINE_BATCH);
    loop {
        buf.clear();
        let end = reader.read_until(b'\n', &mut buf)? == 0;
        if !end {
            let text = match std::str::from_utf8(&buf) {
                Ok(s) => Ok(s.trim().to_owned()),
                Err(_) => Err(String::from_utf8_lossy(&buf).trim().to_owned()),
            };
            if !text.as_ref().is_ok_and(String::is_empty) {
                batch.push(text);
            }
        }
        let send = end || batch.len() == LINE_BATCH || reader.buffer().is_empty();
        if send && !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(LINE_BATCH));
            if tx.blocking_send(full).is_err() {
                return Ok(()); // the crawl stopped early (say, stdout closed)
            }
        }
        if end {
            return Ok(());
        }
    }
}

/// Fetch one line; a panic in the fetch becomes an error line too.
async fn process(fetcher: Arc<Fetcher>, line: Line) -> Record {
    let text = match line {
        Ok(text) => text,
        Err(lossy) => {
            return Record::failed(
                lossy,
                Failure::new(FailureKind::InvalidInput, "input line is not valid UTF-8"),
            );
        }
    };
    match AssertUnwindSafe(fetcher.fetch(&text)).catch_unwind().await {
        Ok(record) => record,
        Err(_) => Record::failed(
            text,
            Failure::new(FailureKind::Request, "internal error: the fetch panicked"),
        ),
    }
}

/// A record for a task that ended without one (it cannot happen: `process`
/// catches panics and nothing aborts the tasks); keeps the one-line rule.
fn lost(index: usize, err: &troika::TaskError) -> Record {
    Record::failed(
        format!("<input line {}>", index + 1),
        Failure::new(FailureKind::Request, format!("internal error: {err}")),
    )
}

fn crawl_async(
    fetcher: &Arc<Fetcher>,
    rx: mpsc::Receiver<Vec<Line>>,
    window: usize,
    threads: usize,
    keep_order: bool,
    sink: Sink,
) -> anyhow::Result<Sink> {
    // One thread by default: this thread (in `block_on`) runs every task
    // and polls the sockets, so a response wakes its fetch with no
    // cross-thread wake-up. On 2 cores this took a quarter less CPU a page
    // than two workers did (BENCHMARKS.md, 2026-12-02, crawl vs wrk).
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads).thread_name("troika-crawl");
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    // The writer runs as a task on the runtime too, so a finished fetch wakes
    // it without a cross-thread hand-off to the main thread; lines that are
    // ready together are written with one flush.
    let writer = if keep_order {
        runtime.spawn(write_in_order(Arc::clone(fetcher), rx, window, sink))
    } else {
        let (records, finished) = mpsc::channel(window.max(1));
        let lines = Arc::new(tokio::sync::Mutex::new(Lines::new(rx)));
        for _ in 0..window.max(1) {
            runtime.spawn(slot(
                Arc::clone(fetcher),
                Arc::clone(&lines),
                records.clone(),
            ));
        }
        drop(records);
        runtime.spawn(write_as_finished(finished, sink))
    };
    let result = match runtime.block_on(writer) {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("the crawl stopped: {e}")),
    };
    // Tasks of an early exit may still hold connections: do not wait for them.
    runtime.shutdown_background();
    result
}

/// `--keep-order`: a task per line, at most `window` at a time, each line
/// written once every line before it has been.
async fn write_in_order(
    fetcher: Arc<Fetcher>,
    rx: mpsc::Receiver<Vec<Line>>,
    window: usize,
    mut sink: Sink,
) -> anyhow::Result<Sink> {
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|batch| (futures::stream::iter(batch), rx))
    })
    .flatten();
    let fetch = move |line| process(Arc::clone(&fetcher), line);
    let mut index = 0;
    let records = troika::aio::stream_map_bounded(lines, window, fetch);
    let mut batches = std::pin::pin!(records.ready_chunks(BATCH));
    while let Some(batch) = batches.next().await {
        for outcome in batch {
            sink.write(outcome.unwrap_or_else(|e| lost(index, &e)))?;
            index += 1;
        }
        sink.flush()?;
    }
    Ok(sink)
}

/// The input lines, one at a time, for the slots to share.
struct Lines {
    rx: mpsc::Receiver<Vec<Line>>,
    batch: std::vec::IntoIter<Line>,
}

impl Lines {
    fn new(rx: mpsc::Receiver<Vec<Line>>) -> Lines {
        Lines {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    /// The next line; `None` once the input has ended.
    async fn next(&mut self) -> Option<Line> {
        loop {
            if let Some(line) = self.batch.next() {
                return Some(line);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }
}

/// One request in flight at a time, for as long as there are lines: the
/// default order (as finished). A slot takes its next line as soon as it
/// has handed its last record to the writer, so a connection's next
/// request goes out from the task that read its last response (as wrk
/// writes its next request), with no task to spawn and no wait for the
/// writer in between.
async fn slot(
    fetcher: Arc<Fetcher>,
    lines: Arc<tokio::sync::Mutex<Lines>>,
    records: mpsc::Sender<Record>,
) {
    loop {
        // Not held while fetching: only while taking a line.
        let Some(line) = lines.lock().await.next().await else {
            return;
        };
        let record = process(Arc::clone(&fetcher), line).await;
        if records.send(record).await.is_err() {
            return; // the writer stopped (say, stdout closed)
        }
    }
}

/// Write records as the slots finish them, in batches of those ready
/// together, until every slot has ended.
async fn write_as_finished(
    mut finished: mpsc::Receiver<Record>,
    mut sink: Sink,
) -> anyhow::Result<Sink> {
    let mut batch = Vec::with_capacity(BATCH);
    while finished.recv_many(&mut batch, BATCH).await > 0 {
        for record in batch.drain(..) {
            sink.write(record)?;
        }
        sink.flush()?;
    }
    Ok(sink)
}

/// The most lines written between two flushes.
const BATCH: usize = 1024;

fn crawl_threads(
    fetcher: &Arc<Fetcher>,
    mut rx: mpsc::Receiver<Vec<Line>>,
    threads: usize,
    keep_order: bool,
    mut sink: Sink,
) -> anyhow::Result<Sink> {
    // The pool's threads block on their requests; one runtime thread drives
    // the sockets for all of them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("troika-crawl-io")
        .build()
        .context("could not start the I/O runtime")?;
    let pool = troika::ThreadPool::builder()
        .workers(threads)
        .name("troika-crawl")
        .build()?;
    let handle = runtime.handle().clone();
    let fetcher = Arc::clone(fetcher);
    let fetch = move |line: Line| handle.block_on(process(Arc::clone(&fetcher), line));
    let lines = std::iter::from_fn(move || rx.blocking_recv()).flatten();
    let result = (|| {
        if keep_order {
            for (index, outcome) in pool.map(fetch, lines).enumerate() {
                sink.write(outcome.unwrap_or_else(|e| lost(index, &e)))?;
                sink.flush()?;
            }
        } else {
            for (index, outcome) in pool.map_unordered(fetch, lines) {
                sink.write(outcome.unwrap_or_else(|e| lost(index, &e)))?;
                sink.flush()?;
            }
        }
        anyhow::Ok(())
    })();
    pool.shutdown(false, true);
    drop(pool);
    runtime.shutdown_background();
    result.map(|()| sink)
}

/// Where records go: the JSON lines, the progress bar and the summary.
struct Sink {
    out: Box<dyn Write + Send>,
    bar: Option<ProgressBar>,
    summary: Summary,
}

impl Sink {
    fn new(out: Box<dyn Write + Send>, show_progress: bool, len: Option<u64>) -> Sink {
        let bar = show_progress.then(|| {
            let bar = crate::progress::stderr_bar(
                len,
                "{elapsed_precise} [{wide_bar}] {pos}/{len} URLs, {per_sec} {msg}",
                "{elapsed_precise} {spinner} {pos} URLs, {per_sec} {msg}",
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Sink {
            out,
            bar,
            summary: Summary::default(),
        }
    }

    fn write(&mut self, record: Record) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")?;
        self.summary.add(&record);
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let errors = self.summary.error_count();
            if errors > 0 {
                bar.set_message(format!("{errors} errors"));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("inf").is_err());
    }

    #[test]
    fn headers_need_a_colon() {
        assert!(parse_header("Accept: text/html").is_ok());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
