//! troika's futures API past one machine: a [`Cluster`] client is an
//! [`Executor`](troika::Executor) for registered (`remote!`) functions whose
//! tasks run on [`Worker`]s anywhere that reach the same Redis.
//!
//! # Hello, cluster
//!
//! The same program is client and worker: it defines its functions with
//! `remote!`, calls `troika::init()` first, and then either serves the queue
//! ([`Worker::builder`]`(..).run()`) or submits to it ([`Cluster::connect`]).
//!
//! # Guarantees
//!
//! - **At-least-once execution.** A task is acknowledged only after its
//!   outcome is stored. A task whose worker dies (or is cut off longer than
//!   the lease) is taken over by another worker, so it may run more than
//!   once; a live worker renews its leases, so a slow task is not.
//! - **Exactly-once settlement.** A handle settles once: a second outcome
//!   of a task that ran twice is ignored.
//! - **Bounded retries.** A task delivered more than `max_deliveries` times
//!   fails with [`ErrorKind::DeadLettered`](troika::ErrorKind::DeadLettered)
//!   and its entry goes to the stream `troika:QUEUE:dead` with the reason.
//! - **Nothing left behind.** Acknowledged entries are deleted, results are
//!   deleted once read, and a client's result stream expires when the
//!   client is gone (see [`ClusterBuilder::result_ttl`]).
//!
//! Not promised: that a task runs at most once; that tasks queued in a
//! Redis without persistence survive its restart (with `appendonly yes`
//! they do); an order between tasks.

mod client;
mod conn;
mod error;
mod exec;
mod wire;
mod worker;

pub use client::{Cluster, ClusterBuilder};
pub use error::ClusterError;
pub use worker::{Worker, WorkerBuilder, WorkerInfo};
