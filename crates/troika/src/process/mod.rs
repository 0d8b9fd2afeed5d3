//! Processes: run functions in child processes, and the `ProcessPool` executor.
