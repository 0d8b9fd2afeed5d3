//! Processes: run functions in child processes, and the `ProcessPool` executor.
//!
//! [`GroupChild`] runs an external command in a process group of its own,
//! captures its output, kills the whole group at a deadline and always reaps
//! it: the supervision that `troika run` is built on.

mod command;

pub use command::{CommandOutput, GroupChild, GroupKiller};
