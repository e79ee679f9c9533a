//! `cargo bench --bench core`: nanoseconds per decision in the Rust core alone (no Python), for one hot key
//! and for 100,000 keys in turn. Uses only std timing, best of several rounds.

use std::hint::black_box;
use std::time::Instant;

use _core::clock::Clock;
use _core::limiter::{AlgorithmKind, AnyLimiter};
use _core::rate::parse_rates;
use _core::store::memory::OnFull;

const ROUNDS: usize = 5;
const CALLS: usize = 1_000_000;

fn best_ns(limiter: &AnyLimiter, keys: &[String]) -> f64 {
    let rates = parse_rates("1000000000/day").unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for index in 0..CALLS {
            let key = keys[index % keys.len()].as_str();
            black_box(limiter.hit(&[(key, rates.as_slice(), 1)]).unwrap());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    best
}

fn main() {
    let hot = vec!["203.0.113.7".to_owned()];
    let spread: Vec<String> = (0..100_000).map(|index| format!("user:{index}")).collect();
    println!(
        "{:<24} {:>10} {:>10}",
        "ns per hit (Rust only)", "1 hot key", "100k keys"
    );
    for name in [
        "gcra",
        "token_bucket",
        "leaky_bucket",
        "fixed_window",
        "sliding_window_counter",
        "sliding_window_log",
    ] {
        let kind = AlgorithmKind::parse(name).unwrap();
        let limiter = AnyLimiter::new(kind, Clock::monotonic(), 1_000_000, OnFull::Allow);
        println!(
            "{name:<24} {:>10.0} {:>10.0}",
            best_ns(&limiter, &hot),
            best_ns(&limiter, &spread)
        );
    }
}
