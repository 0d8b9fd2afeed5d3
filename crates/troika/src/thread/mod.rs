//! Threads: the [`ThreadPool`] executor and its scoped variant.

mod handoff;
mod job;
mod pool;
mod pool_api;
mod scope;
mod watchdog;

pub(crate) use pool::help_while;
pub use pool::{ThreadPool, ThreadPoolBuilder};
pub use pool_api::StarFn;
pub use scope::Scope;
