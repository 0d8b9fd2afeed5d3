//! Primality tests: the seeds' trial division.

/// The number the seeds test: `is_prime(112272535095293)`.
pub(crate) const SEED_NUMBER: u64 = 112_272_535_095_293;

/// The seeds' trial division, exactly as in their `is_prime`: reject even
/// numbers, then try every odd divisor up to `floor(sqrt(n))`.
#[allow(
    clippy::manual_is_multiple_of,
    reason = "the seed's own `n % i == 0`, op for op"
)]
pub(crate) fn is_prime_trial(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n % 2 == 0 {
        return false;
    }
    let limit = n.isqrt();
    let mut divisor = 3;
    while divisor <= limit {
        if n % divisor == 0 {
            return false;
        }
        divisor += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_division_agrees_with_known_values() {
        let primes = [2u64, 3, 5, 7, 97, 7919, 1_000_000_007, SEED_NUMBER];
        let composites = [0u64, 1, 4, 9, 561, 1_000_000_008, 1_099_726_899_285_419];
        assert!(primes.iter().all(|&n| is_prime_trial(n)));
        assert!(composites.iter().all(|&n| !is_prime_trial(n)));
    }
}
