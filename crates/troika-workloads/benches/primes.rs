//! Miller–Rabin on random 64-bit numbers (target: ≥ 1,000,000 checks per
//! second per core), and the trial division of Python's tutorials on
//! their number.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troika_workloads::primes::{TUTORIAL_NUMBER, is_prime_miller_rabin, is_prime_trial};

/// A fixed stream of random-looking u64s (splitmix64), so runs are comparable.
fn random_numbers(count: usize) -> Vec<u64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

fn miller_rabin(c: &mut Criterion) {
    let numbers = random_numbers(10_000);
    let mut group = c.benchmark_group("primes");
    group.throughput(Throughput::Elements(numbers.len() as u64));
    group.bench_function("miller_rabin_random_u64", |b| {
        b.iter(|| {
            numbers
                .iter()
                .filter(|&&n| is_prime_miller_rabin(black_box(n)))
                .count()
        })
    });
    group.finish();
}

fn trial(c: &mut Criterion) {
    c.bench_function("primes/trial_tutorial_number", |b| {
        b.iter(|| is_prime_trial(black_box(TUTORIAL_NUMBER)))
    });
}

criterion_group!(benches, miller_rabin, trial);
criterion_main!(benches);
