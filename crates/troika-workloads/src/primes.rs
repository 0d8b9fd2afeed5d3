//! Primality tests, the CPU-bound workload of Python's concurrency tutorials.
//!
//! The tutorials time `is_prime(112272535095293)` by trial division on threads
//! and processes; [`is_prime_trial`] is that function, op for op.
//! [`is_prime_miller_rabin`] answers the same question for any `u64` in about a
//! microsecond, and [`parse_number`] reads a number strictly, naming the bad
//! token when it cannot.
//!
//! # Examples
//!
//! ```
//! use troika_workloads::primes::{Algorithm, TUTORIAL_NUMBER, is_prime_miller_rabin, is_prime_trial, parse_number};
//!
//! assert!(is_prime_trial(TUTORIAL_NUMBER));
//! assert!(is_prime_miller_rabin(18_446_744_073_709_551_557));
//! assert_eq!(Algorithm::Trial.check(561).factor, Some(3));
//! assert_eq!(parse_number("007"), Ok(7));
//! assert!(parse_number("-5").is_err());
//! ```

/// The number Python's `concurrent.futures` tutorials test:
/// `is_prime(112272535095293)`.
pub const TUTORIAL_NUMBER: u64 = 112_272_535_095_293;

/// Which test to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// The tutorials' trial division: slow (seconds near 2^64), finds the smallest factor.
    Trial,
    /// Deterministic Miller–Rabin: microseconds for any u64, finds no factor.
    #[default]
    MillerRabin,
}

/// A number's verdict; `factor` is its smallest prime factor when the test finds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The number tested.
    pub n: u64,
    /// Whether it is prime.
    pub prime: bool,
    /// Its smallest prime factor, when the algorithm finds one (trial division).
    pub factor: Option<u64>,
}

impl Algorithm {
    /// Test `n` with this algorithm.
    pub fn check(self, n: u64) -> Verdict {
        match self {
            Algorithm::Trial => {
                let factor = smallest_factor_trial(n);
                Verdict {
                    n,
                    prime: n >= 2 && factor.is_none(),
                    factor,
                }
            }
            Algorithm::MillerRabin => Verdict {
                n,
                prime: is_prime_miller_rabin(n),
                factor: None,
            },
        }
    }
}

/// The tutorials' trial division, exactly as in their Python `is_prime`: reject even
/// numbers, then try every odd divisor up to `floor(sqrt(n))`.
#[allow(
    clippy::manual_is_multiple_of,
    reason = "the Python original's `n % i == 0`, op for op"
)]
pub fn is_prime_trial(n: u64) -> bool {
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

/// The tutorials' trial division, reporting the divisor it stops at: the
/// smallest prime factor of a composite `n`, `None` for a prime (or n < 2).
#[allow(
    clippy::manual_is_multiple_of,
    reason = "the Python original's `n % i == 0`, op for op"
)]
pub fn smallest_factor_trial(n: u64) -> Option<u64> {
    if n < 4 {
        return None;
    }
    if n % 2 == 0 {
        return Some(2);
    }
    let limit = n.isqrt();
    let mut divisor = 3;
    while divisor <= limit {
        if n % divisor == 0 {
            return Some(divisor);
        }
        divisor += 2;
    }
    None
}

troika::remote! {
    /// Check a batch of numbers with `algorithm`, in a worker process: how
    /// the process pool serves `troika primes` and `troika serve`.
    pub fn check_numbers(algorithm: Algorithm, numbers: Vec<u64>) -> Vec<Verdict> {
        numbers.into_iter().map(|n| algorithm.check(n)).collect()
    }
}

/// Bases that make Miller–Rabin deterministic for every n < 3.3 · 10^24,
/// which covers all of u64 (Sorenson and Webster, 2015).
const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

/// Deterministic Miller–Rabin for any `u64`, in Montgomery arithmetic (no
/// 128-bit division in the inner loop).
#[allow(
    clippy::manual_is_multiple_of,
    reason = "a hot loop; `%` by a nonzero constant"
)]
pub fn is_prime_miller_rabin(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n == p {
            return true;
        }
        if n % p == 0 {
            return false;
        }
    }
    if n < 37 * 37 {
        return true;
    }
    let m = Montgomery::new(n);
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    let one = m.one;
    let minus_one = n - one; // -1 in Montgomery form
    'bases: for base in BASES {
        let mut x = m.pow(m.to_mont(base), d);
        if x == one || x == minus_one {
            continue;
        }
        for _ in 1..s {
            x = m.mul(x, x);
            if x == minus_one {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// Montgomery arithmetic modulo an odd `n`, with R = 2^64.
struct Montgomery {
    n: u64,
    /// n⁻¹ mod 2^64.
    n_inv: u64,
    /// R² mod n, to enter Montgomery form.
    r2: u64,
    /// R mod n: 1 in Montgomery form.
    one: u64,
}

impl Montgomery {
    fn new(n: u64) -> Montgomery {
        // Newton's iteration doubles the correct low bits each step: 5 steps
        // from the 3 bits that n·n ≡ 1 (mod 8) gives, to 96 ≥ 64.
        let mut n_inv = n;
        for _ in 0..5 {
            n_inv = n_inv.wrapping_mul(2u64.wrapping_sub(n.wrapping_mul(n_inv)));
        }
        let r = ((1u128 << 64) % n as u128) as u64;
        let r2 = ((r as u128 * r as u128) % n as u128) as u64;
        Montgomery {
            n,
            n_inv,
            r2,
            one: r,
        }
    }

    /// a · b · R⁻¹ mod n.
    #[inline]
    fn mul(&self, a: u64, b: u64) -> u64 {
        let t = a as u128 * b as u128;
        let m = (t as u64).wrapping_mul(self.n_inv);
        let mn = m as u128 * self.n as u128;
        // t ≡ mn (mod 2^64), so the low halves cancel exactly.
        let (hi, borrow) = ((t >> 64) as u64).overflowing_sub((mn >> 64) as u64);
        if borrow { hi.wrapping_add(self.n) } else { hi }
    }

    fn to_mont(&self, a: u64) -> u64 {
        self.mul(a % self.n, self.r2)
    }

    fn pow(&self, mut base: u64, mut exp: u64) -> u64 {
        let mut acc = self.one;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            exp >>= 1;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_division_agrees_with_known_values() {
        let primes = [2u64, 3, 5, 7, 97, 7919, 1_000_000_007, TUTORIAL_NUMBER];
        let composites = [0u64, 1, 4, 9, 561, 1_000_000_008, 1_099_726_899_285_419];
        assert!(primes.iter().all(|&n| is_prime_trial(n)));
        assert!(composites.iter().all(|&n| !is_prime_trial(n)));
    }

    #[test]
    fn miller_rabin_matches_trial_division_below_200k_and_on_a_sample() {
        for n in 0..200_000u64 {
            assert_eq!(is_prime_miller_rabin(n), is_prime_trial(n), "n = {n}");
        }
        // A cheap deterministic walk through larger numbers.
        let mut n = 1_000_000_000_000u64;
        for _ in 0..2_000 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                % 10_000_000_000_000;
            assert_eq!(is_prime_miller_rabin(n), is_prime_trial(n), "n = {n}");
        }
    }

    #[test]
    fn miller_rabin_is_right_on_hard_cases() {
        // Carmichael numbers and strong pseudoprimes to several bases.
        let composites = [
            561u64,
            1105,
            1729,
            2_047,
            3_215_031_751,
            3_825_123_056_546_413_051,
            u64::MAX,
            u64::MAX - 1,
            4_294_967_297, // 2^32 + 1 = 641 · 6700417
            1_099_726_899_285_419,
        ];
        for n in composites {
            assert!(!is_prime_miller_rabin(n), "{n} is composite");
        }
        let primes = [
            TUTORIAL_NUMBER,
            18_446_744_073_709_551_557, // the largest u64 prime
            4_294_967_291,              // the largest u32 prime
            1_000_000_000_000_000_003,
            115_797_848_077_099,
        ];
        for n in primes {
            assert!(is_prime_miller_rabin(n), "{n} is prime");
        }
    }

    #[test]
    fn trial_reports_the_smallest_factor() {
        assert_eq!(Algorithm::Trial.check(561).factor, Some(3));
        assert_eq!(Algorithm::Trial.check(4).factor, Some(2));
        assert_eq!(Algorithm::Trial.check(1).factor, None);
        assert!(!Algorithm::Trial.check(1).prime);
        assert_eq!(
            Algorithm::Trial.check(7919),
            Verdict {
                n: 7919,
                prime: true,
                factor: None
            }
        );
        assert_eq!(
            Algorithm::MillerRabin.check(561),
            Verdict {
                n: 561,
                prime: false,
                factor: None
            }
        );
    }
}

/// Why a token is not a number troika can test.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Nothing at all.
    #[error("empty input: expected a number")]
    Empty,
    /// A leading minus sign.
    #[error("'{0}' is negative: only numbers from 0 to 18446744073709551615 can be tested")]
    Negative(String),
    /// Larger than u64::MAX (or more than 20 digits).
    #[error("'{0}' is past u64::MAX (18446744073709551615)")]
    TooLarge(String),
    /// Anything but ASCII digits.
    #[error("'{0}' is not a number (expected 1 to 20 ASCII digits)")]
    NotANumber(String),
}

/// Parse a token strictly: 1 to 20 ASCII digits (leading zeros allowed)
/// worth at most `u64::MAX`. Signs, spaces, exponents, hex and non-ASCII
/// digits are refused, each with a message that names the token.
pub fn parse_number(token: &str) -> Result<u64, NumberError> {
    if token.is_empty() {
        return Err(NumberError::Empty);
    }
    let shown = || token.chars().take(64).collect::<String>();
    if let Some(rest) = token.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NumberError::Negative(shown()));
        }
        return Err(NumberError::NotANumber(shown()));
    }
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::NotANumber(shown()));
    }
    if token.len() > 20 {
        return Err(NumberError::TooLarge(shown()));
    }
    token
        .parse::<u64>()
        .map_err(|_| NumberError::TooLarge(shown()))
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parse_accepts_digits_and_refuses_the_rest() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("007"), Ok(7));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_number(""), Err(NumberError::Empty));
        assert!(matches!(parse_number("-5"), Err(NumberError::Negative(_))));
        assert!(matches!(
            parse_number("18446744073709551616"),
            Err(NumberError::TooLarge(_))
        ));
        assert!(matches!(
            parse_number("000000000000000000001"),
            Err(NumberError::TooLarge(_))
        ));
        for bad in [
            "abc", "+5", "1e5", "0x10", " 5", "5 ", "١٢", "1.0", "-", "--5",
        ] {
            assert!(
                matches!(parse_number(bad), Err(NumberError::NotANumber(_))),
                "{bad}"
            );
        }
        let message = parse_number("abc").unwrap_err().to_string();
        assert!(message.contains("'abc'"), "{message}");
    }
}
