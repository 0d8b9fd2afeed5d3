//! `troika primes`; the algorithms live in [`troika_workloads::primes`].

pub(crate) mod command;
