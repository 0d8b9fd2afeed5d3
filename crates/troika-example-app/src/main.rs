//! A stand-alone program that uses troika's process pool (seed 000/001's
//! `is_prime` on processes): the one line `troika::init()` at the top of `main`
//! is all a binary needs for its workers.

troika::remote! {
    /// Trial division by odd numbers.
    fn is_prime(n: u64) -> bool {
        if n < 2 {
            return false;
        }
        if n.is_multiple_of(2) {
            return n == 2;
        }
        let mut d = 3;
        while d * d <= n {
            if n.is_multiple_of(d) {
                return false;
            }
            d += 2;
        }
        true
    }

    /// Runs in a worker: says which process it is.
    fn whoami(tag: String) -> (String, u32) {
        println!("worker {} says hello to {tag}", std::process::id());
        (tag, std::process::id())
    }
}

fn main() {
    troika::init();
    let pool = match troika::ProcessPool::new(2) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("troika-example-app: {e}");
            std::process::exit(1);
        }
    };
    let numbers = [2u64, 15, 97, 7919, 1_000_003, 112_272_535_095_293];
    for (n, prime) in numbers.iter().zip(pool.map(is_prime, numbers)) {
        match prime {
            Ok(prime) => println!("{n} is prime: {prime}"),
            Err(e) => eprintln!("{n}: {e}"),
        }
    }
    match pool.apply(whoami, "main".to_string()) {
        Ok((tag, pid)) => {
            assert_ne!(pid, std::process::id(), "the call ran in a child process");
            println!("{tag} got an answer from worker {pid}");
        }
        Err(e) => eprintln!("whoami: {e}"),
    }
}
