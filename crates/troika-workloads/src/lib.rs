//! The workloads that troika's command and benchmarks run, kept out of the
//! library itself:
//!
//! - [`primes`]: primality tests (trial division and Miller–Rabin), strict
//!   number parsing, and the batch check that serves `troika primes` and
//!   `troika serve`;
//! - [`payload`]: the payload workload (echoes of N bytes) that `troika
//!   bench` and the Rust peers' runner share;
//! - [`pool`]: the process pool's overhead measurements (round trips, submit
//!   and map throughput, the CPU-bound prime check), used by this crate's
//!   `process_pool_overhead` example and benches.
//!
//! The functions registered with [`troika::remote!`] here run in the worker
//! processes of any binary that links this crate.

pub mod payload;
pub mod pool;
pub mod primes;
