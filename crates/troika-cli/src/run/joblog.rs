//! The job log, in GNU parallel's format: a header line, then one
//! tab-separated line per finished job with the columns
//! `Seq Host Starttime JobRuntime Send Receive Exitval Signal Command`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::Context;

/// The Exitval of a job troika (or GNU parallel) killed at its timeout.
pub(crate) const KILLED: i32 = -1;

/// The Host of a job run here (GNU parallel's `:`).
pub(crate) const HERE: &str = ":";

pub(crate) const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// One finished job, as logged.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// Seconds since the epoch.
    pub(crate) start: f64,
    pub(crate) runtime: f64,
    pub(crate) received: u64,
    pub(crate) exitval: i32,
    pub(crate) signal: i32,
    pub(crate) command: String,
    /// Where it ran: [`HERE`], or the cluster worker's name.
    pub(crate) host: String,
}

impl Entry {
    pub(crate) fn succeeded(&self) -> bool {
        self.exitval == 0 && self.signal == 0
    }

    /// Whether the job ran to its end. GNU parallel (and troika) log a job
    /// killed by its `--timeout` with Exitval -1: not finished, so `--resume`
    /// runs it again. Jobs killed by Ctrl-C or `--halt now` are not logged.
    pub(crate) fn finished(&self) -> bool {
        self.exitval != KILLED
    }

    fn line(&self) -> String {
        // A command with a tab or newline would break the columns.
        let command = self.command.replace(['\t', '\n'], " ");
        let host = self.host.replace(['\t', '\n'], " ");
        // GNU parallel's widths: the runtime padded as `%10.3f`.
        format!(
            "{}\t{}\t{:.3}\t{:10.3}\t0\t{}\t{}\t{}\t{}",
            self.seq,
            host,
            self.start,
            self.runtime,
            self.received,
            self.exitval,
            self.signal,
            command
        )
    }
}

/// The log being written.
#[derive(Debug)]
pub(crate) struct JobLog {
    file: File,
}

impl JobLog {
    /// Open the log: a new log is truncated and gets the header; on resume it
    /// is appended to (with the header only if the file is empty).
    pub(crate) fn open(path: &Path, resume: bool) -> anyhow::Result<JobLog> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(path)
            .with_context(|| format!("cannot write --joblog {}", path.display()))?;
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        if empty {
            writeln!(file, "{HEADER}")?;
        }
        Ok(JobLog { file })
    }

    pub(crate) fn record(&mut self, entry: &Entry) -> std::io::Result<()> {
        writeln!(self.file, "{}", entry.line())?;
        self.file.flush()
    }
}

/// What an earlier log says: the last entry of each sequence number.
pub(crate) fn read(path: &Path) -> anyhow::Result<HashMap<u64, Entry>> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Resuming without a log yet: nothing has run.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read --joblog {}", path.display()));
        }
    };
    let mut entries = HashMap::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read --joblog {}", path.display()))?;
        if number == 0 && line.starts_with("Seq\t") || line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(&line).with_context(|| {
            format!(
                "--joblog {} line {}: not a job log line: {line}",
                path.display(),
                number + 1
            )
        })?;
        entries.insert(entry.seq, entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Option<Entry> {
    // GNU parallel pads its numbers (`%10.3f`): trim before parsing.
    let mut fields = line.splitn(9, '\t');
    let mut number = || fields.next().map(str::trim);
    let seq = number()?.parse().ok()?;
    let host = number()?.to_owned();
    let start = number()?.parse().ok()?;
    let runtime = number()?.parse().ok()?;
    let _send: u64 = number()?.parse().ok()?;
    let received = number()?.parse().ok()?;
    let exitval = number()?.parse().ok()?;
    let signal = number()?.parse().ok()?;
    let command = fields.next()?.to_owned();
    Some(Entry {
        seq,
        start,
        runtime,
        received,
        exitval,
        signal,
        command,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_log() {
        let dir = std::env::temp_dir().join(format!("troika-joblog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let entry = Entry {
            seq: 3,
            start: 1_700_000_000.125,
            runtime: 0.5,
            received: 12,
            exitval: 1,
            signal: 0,
            command: "echo a\tb".into(),
            host: HERE.into(),
        };
        let mut log = JobLog::open(&path, false).unwrap();
        log.record(&entry).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER));
        assert!(text.contains("3\t:\t1700000000.125\t     0.500\t0\t12\t1\t0\techo a b\n"));
        let read = read(&path).unwrap();
        assert_eq!(read[&3].exitval, 1);
        assert!(!read[&3].succeeded());
        // Resuming appends without a second header.
        let mut log = JobLog::open(&path, true).unwrap();
        log.record(&Entry {
            seq: 4,
            exitval: 0,
            ..entry
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("Seq\t").count(), 1);
        assert!(read_is_ok(&path));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn read_is_ok(path: &Path) -> bool {
        read(path).map(|m| m.len() == 2).unwrap_or(false)
    }

    #[test]
    fn a_garbled_log_is_an_error_naming_the_line() {
        let dir = std::env::temp_dir().join(format!("troika-joblog-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(&path, format!("{HEADER}\nnot a line\n")).unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
