//! `troika primes`; the algorithms live in [`troika::primes`].

pub(crate) mod command;
