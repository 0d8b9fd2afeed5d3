//! One result line per input URL, and the summary of a crawl.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Why a URL produced no (complete) page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureKind {
    /// The input line is not a URL troika can fetch.
    InvalidUrl,
    /// The input line is not valid UTF-8.
    InvalidInput,
    /// The URL (or a redirect) uses a scheme other than http or https.
    SchemeNotAllowed,
    /// More redirects than `--max-redirects`.
    RedirectLimit,
    /// The request took longer than `--timeout` (or `--connect-timeout`).
    Timeout,
    /// The connection could not be made or broke off.
    Connect,
    /// The body was longer than `--max-bytes`; it was cut off there.
    TooLarge,
    /// A body declared UTF-8 (by its charset, its `<meta>` tag or a JSON
    /// type) that is not valid UTF-8.
    InvalidUtf8,
    /// Anything else the HTTP client reported.
    Request,
}

impl FailureKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FailureKind::InvalidUrl => "invalid_url",
            FailureKind::InvalidInput => "invalid_input",
            FailureKind::SchemeNotAllowed => "scheme_not_allowed",
            FailureKind::RedirectLimit => "redirect_limit",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::TooLarge => "too_large",
            FailureKind::InvalidUtf8 => "invalid_utf8",
            FailureKind::Request => "request",
        }
    }
}

/// A failure: its kind and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The JSON line written for one input URL.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Record {
    /// The input line, trimmed (lossily decoded if it was not UTF-8).
    pub(crate) url: String,
    /// The HTTP status of the last response, if one arrived.
    pub(crate) status: Option<u16>,
    /// Body bytes received (at most `--max-bytes`).
    pub(crate) bytes: u64,
    /// Wall time from the start of the first request to the end, retries
    /// included (waiting for a concurrency slot before it is not).
    pub(crate) elapsed_ms: f64,
    /// Null, or what went wrong.
    pub(crate) error: Option<String>,
    /// Null, or a stable name for the error: `timeout`, `too_large`, …
    pub(crate) error_kind: Option<FailureKind>,
    /// Requests made for this URL (1 + retries used; 0 if none was made).
    pub(crate) attempts: u32,
    /// The URL of the last response after redirects, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) final_url: Option<String>,
    /// Something to know about a page that is not an error: a text body
    /// that is not UTF-8 and names no charset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) warning: Option<&'static str>,
}

impl Record {
    pub(crate) fn failed(url: String, failure: Failure) -> Record {
        Record {
            url,
            status: None,
            bytes: 0,
            elapsed_ms: 0.0,
            error: Some(failure.message),
            error_kind: Some(failure.kind),
            attempts: 0,
            final_url: None,
            warning: None,
        }
    }
}

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Totals for the summary line on stderr.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) urls: u64,
    pub(crate) pages: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: BTreeMap<FailureKind, u64>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) retries: u64,
    pub(crate) warnings: u64,
}

impl Summary {
    pub(crate) fn add(&mut self, record: &Record) {
        self.urls += 1;
        self.bytes += record.bytes;
        self.retries += u64::from(record.attempts.saturating_sub(1));
        self.warnings += u64::from(record.warning.is_some());
        if let Some(status) = record.status {
            *self.statuses.entry(status / 100).or_default() += 1;
        }
        match record.error_kind {
            Some(kind) => *self.errors.entry(kind).or_default() += 1,
            None => self.pages += 1,
        }
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn render(&self, wall: Duration) -> String {
        let secs = wall.as_secs_f64().max(1e-9);
        let mut out = format!(
            "crawled {} URLs in {:.2} s: {} pages ({:.1} pages/s), {} errors, {} bytes",
            self.urls,
            secs,
            self.pages,
            self.pages as f64 / secs,
            self.error_count(),
            self.bytes,
        );
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{} {n}", kind.name()))
                .collect();
            out.push_str(&format!(" [{}]", kinds.join(", ")));
        }
        if !self.statuses.is_empty() {
            let classes: Vec<String> = self
                .statuses
                .iter()
                .map(|(class, n)| format!("{class}xx {n}"))
                .collect();
            out.push_str(&format!("; status {}", classes.join(", ")));
        }
        if self.retries > 0 {
            out.push_str(&format!("; {} retries", self.retries));
        }
        if self.warnings > 0 {
            out.push_str(&format!(
                "; {} warnings (not UTF-8, no charset)",
                self.warnings
            ));
        }
        out
    }
}
