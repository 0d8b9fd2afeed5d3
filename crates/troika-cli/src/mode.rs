//! The ways the `troika` command can run work.

use anyhow::bail;
use serde::Serialize;

/// A way of running a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// One thread, no executor.
    Serial,
    /// The thread pool.
    Threads,
    /// The process pool.
    Processes,
    /// The async executor.
    Async,
}

/// The modes this build can run.
pub(crate) const AVAILABLE: &[Mode] = &[Mode::Serial, Mode::Threads, Mode::Processes, Mode::Async];

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Threads => "threads",
            Mode::Processes => "processes",
            Mode::Async => "async",
        }
    }

    /// Parse a mode name, refusing unknown and not-yet-available modes by name.
    pub(crate) fn parse(name: &str) -> anyhow::Result<Mode> {
        let names = || {
            AVAILABLE
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mode = match name.trim() {
            "serial" => Mode::Serial,
            "threads" => Mode::Threads,
            "processes" => Mode::Processes,
            "async" => Mode::Async,
            other => bail!("unknown mode '{other}' (expected one of: {})", names()),
        };
        if !AVAILABLE.contains(&mode) {
            bail!(
                "mode '{}' is not available in this build yet (available: {})",
                mode.name(),
                names()
            );
        }
        Ok(mode)
    }
}
