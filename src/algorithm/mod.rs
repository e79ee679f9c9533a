//! Rate-limiting algorithms. Each is a pure function of (state, now, cost): `check` decides without
//! changing anything and `apply` commits an allowed request, so several limits can be checked together
//! and committed only when all of them pass.

pub mod concurrency;
pub mod fixed_window;
pub mod gcra;
pub mod leaky_bucket;
pub mod sliding_log;
pub mod sliding_window;
pub mod token_bucket;

use crate::decision::Decision;
use crate::rate::Rate;

pub use concurrency::{Concurrency, Lease, Leases};
pub use fixed_window::FixedWindow;
pub use gcra::Gcra;
pub use leaky_bucket::LeakyBucket;
pub use sliding_log::SlidingLog;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;

pub trait Algorithm: Send + Sync + 'static {
    /// Per-key state. `Default` is the state of a key never seen.
    type State: Default + Clone + Send + 'static;

    fn new(rate: Rate) -> Self;

    fn rate(&self) -> Rate;

    /// What a request of `cost` would get now. The caller guarantees `1 <= cost <= rate.limit()`.
    fn check(&self, state: &Self::State, now: u64, cost: u64) -> Decision;

    /// Commits a request that `check` allowed at the same `now` and `cost`.
    fn apply(&self, state: &mut Self::State, now: u64, cost: u64);

    /// The current standing without a request: `remaining` and `reset_after_ns` as they are now, `allowed`
    /// and `retry_after_ns` for a request of cost 1.
    fn inspect(&self, state: &Self::State, now: u64) -> Decision {
        let probe = self.check(state, now, 1);
        let (remaining, reset_after_ns) = self.standing(state, now);
        Decision {
            remaining,
            reset_after_ns,
            ..probe
        }
    }

    /// Units left and time until fully restored, without a request.
    fn standing(&self, state: &Self::State, now: u64) -> (u64, u64);

    /// Whether the state behaves exactly as a fresh key's from `now` on, so the key can be forgotten.
    fn is_idle(&self, state: &Self::State, now: u64) -> bool;

    /// A check and, when allowed, its commit: the pure step `(state, now, cost) -> (decision, state)`.
    fn step(&self, state: &Self::State, now: u64, cost: u64) -> (Decision, Self::State) {
        let decision = self.check(state, now, cost);
        let mut next = state.clone();
        if decision.allowed {
            self.apply(&mut next, now, cost);
        }
        (decision, next)
    }
}

/// A decision skeleton for `rate`.
pub(crate) fn decision(
    rate: Rate,
    allowed: bool,
    remaining: u64,
    reset_after_ns: u64,
    retry_after_ns: u64,
) -> Decision {
    Decision {
        allowed,
        limit: rate.limit(),
        remaining,
        reset_after_ns,
        retry_after_ns,
        period_ns: rate.period_ns(),
        index: 0,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Algorithm;
    use crate::decision::Decision;
    use crate::rate::parse_rates;

    pub const SECOND: u64 = 1_000_000_000;

    /// One key of one algorithm on a fake timeline.
    pub struct Key<A: Algorithm> {
        pub algorithm: A,
        pub state: A::State,
        pub now: u64,
    }

    impl<A: Algorithm> Key<A> {
        pub fn new(rate: &str) -> Self {
            Key {
                algorithm: A::new(parse_rates(rate).unwrap()[0]),
                state: A::State::default(),
                now: 1_000 * SECOND,
            }
        }

        pub fn hit(&mut self, cost: u64) -> Decision {
            let (decision, next) = self.algorithm.step(&self.state, self.now, cost);
            self.state = next;
            decision
        }

        pub fn advance(&mut self, nanos: u64) {
            self.now += nanos;
        }

        /// Hits with cost 1 until denied; returns how many passed.
        pub fn drain(&mut self) -> u64 {
            let mut passed = 0;
            while self.hit(1).allowed {
                passed += 1;
                assert!(passed < 1_000_000, "never denied");
            }
            passed
        }
    }

    /// The contract every time-based algorithm meets: a fresh key of "10/min" passes exactly 10 requests,
    /// the 11th is denied and consumes nothing, and a request exactly `retry_after` later passes while
    /// one a nanosecond earlier does not.
    pub fn boundary_contract<A: Algorithm>() {
        let mut key = Key::<A>::new("10/min");
        for expected_remaining in (0..10).rev() {
            let decision = key.hit(1);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            assert_eq!(decision.retry_after_ns, 0);
            assert_eq!(decision.limit, 10);
        }
        let denied = key.hit(1);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert!(denied.retry_after_ns > 0);
        let before = key.state.clone();
        assert!(!key.hit(1).allowed);
        key.advance(denied.retry_after_ns - 1);
        assert!(!key.hit(1).allowed, "passed a nanosecond before retry_after");
        key.advance(1);
        assert!(key.hit(1).allowed, "denied exactly at retry_after");
        let _ = before;

        // A denied request never consumes: after any number of denials, the wait is unchanged.
        let mut key = Key::<A>::new("10/min");
        key.drain();
        let first = key.hit(1).retry_after_ns;
        for _ in 0..50 {
            assert_eq!(key.hit(1).retry_after_ns, first);
        }

        // Costs: a request of cost 4 leaves 6, a second of 7 is denied, a third of 6 passes.
        let mut key = Key::<A>::new("10/min");
        assert_eq!(key.hit(4).remaining, 6);
        let denied = key.hit(7);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 6);
        assert!(key.hit(6).allowed);
        assert!(!key.hit(1).allowed);

        // After the whole period a key is fresh again and forgettable.
        key.advance(120 * SECOND);
        assert!(key.algorithm.is_idle(&key.state, key.now));
        assert_eq!(key.drain(), 10);
        assert!(!key.algorithm.is_idle(&key.state, key.now));
        assert!(A::new(parse_rates("10/min").unwrap()[0]).is_idle(&A::State::default(), key.now));
    }
}
