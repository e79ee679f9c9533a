//! A limiter: one algorithm, one store, one clock. Checks one or several (key, rates) limits at once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use crate::algorithm::{
    Algorithm, Concurrency, FixedWindow, Gcra, LeakyBucket, Lease, Leases, SlidingLog, SlidingWindow, TokenBucket,
};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::rate::Rate;
use crate::store::memory::{Check, KeyHash, MemoryStore, OnFull};

/// The algorithms by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgorithmKind {
    Gcra,
    TokenBucket,
    LeakyBucket,
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
}

impl AlgorithmKind {
    pub const NAMES: &'static str =
        "'gcra', 'token_bucket', 'leaky_bucket', 'fixed_window', 'sliding_window_counter', 'sliding_window_log'";

    /// Parses a name; `-`, spaces and case are ignored (`"Token-Bucket"` is `token_bucket`).
    pub fn parse(name: &str) -> Option<AlgorithmKind> {
        let normal: String = name
            .trim()
            .chars()
            .map(|c| {
                if c == '-' || c == ' ' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        Some(match normal.as_str() {
            "gcra" => AlgorithmKind::Gcra,
            "token_bucket" => AlgorithmKind::TokenBucket,
            "leaky_bucket" => AlgorithmKind::LeakyBucket,
            "fixed_window" => AlgorithmKind::FixedWindow,
            "sliding_window_counter" => AlgorithmKind::SlidingWindowCounter,
            "sliding_window_log" | "moving_window" => AlgorithmKind::SlidingWindowLog,
            _ => return None,
        })
    }

    /// Why this algorithm cannot enforce `rate` as written (on Redis when `on_redis`), if it cannot.
    ///
    /// - `sliding_window_log` keeps one timestamp per unit taken: a limit above `MAX_LOG_LIMIT` would let one
    ///   key (or one request's cost) take unbounded memory.
    /// - On Redis, the scripts count time in whole microseconds, so the emission-based algorithms round the
    ///   time per unit (`period / limit`) down to a whole microsecond and admit a little faster than the rate
    ///   (\"1500/s\": 1501.5 a second). Up to 1% faster, or less than one unit per period, is let be; a rate
    ///   the rounding would speed up more (\"600000/s\" into 1,000,000/s) is refused rather than enforced
    ///   differently from the memory store, which counts nanoseconds.
    pub fn unusable(self, rate: Rate, on_redis: bool) -> Option<String> {
        if self == AlgorithmKind::SlidingWindowLog && rate.limit() > MAX_LOG_LIMIT {
            return Some(format!(
                "the sliding_window_log algorithm keeps one timestamp per unit taken, so its limits are at most \
                 {MAX_LOG_LIMIT} per period, and {rate:?} is more; use 'sliding_window_counter' (two counters per key) \
                 or 'gcra' for a limit this large",
                rate = rate.to_string()
            ));
        }
        let emission_based = matches!(
            self,
            AlgorithmKind::Gcra | AlgorithmKind::TokenBucket | AlgorithmKind::LeakyBucket
        );
        if !on_redis || !emission_based {
            return None;
        }
        let emission_ns = rate.emission_ns();
        let redis_emission_ns = (rate.period_ns() / NANOS_PER_MICRO / rate.limit()) * NANOS_PER_MICRO;
        let cut_ns = emission_ns - redis_emission_ns.min(emission_ns);
        let lost_ns = u128::from(cut_ns) * u128::from(rate.limit());
        if redis_emission_ns > 0 && (lost_ns < u128::from(emission_ns) || cut_ns * 100 <= emission_ns) {
            return None;
        }
        Some(format!(
            "on Redis, {name} counts time in whole microseconds: {rate:?} leaves {emission_ns} ns per unit, which \
             would be cut to {redis_us} µs and let more than 1% through beyond the rate; use a limit that divides the \
             period into whole microseconds (such as \"1000/s\" or \"1000000/s\"), or memory storage",
            name = self.name(),
            rate = rate.to_string(),
            redis_us = redis_emission_ns / NANOS_PER_MICRO,
        ))
    }

    pub fn name(self) -> &'static str {
        match self {
            AlgorithmKind::Gcra => "gcra",
            AlgorithmKind::TokenBucket => "token_bucket",
            AlgorithmKind::LeakyBucket => "leaky_bucket",
            AlgorithmKind::FixedWindow => "fixed_window",
            AlgorithmKind::SlidingWindowCounter => "sliding_window_counter",
            AlgorithmKind::SlidingWindowLog => "sliding_window_log",
        }
    }
}

/// The largest limit `sliding_window_log` takes (one timestamp per unit: 800 kB a key in memory at most).
pub const MAX_LOG_LIMIT: u64 = 100_000;

const NANOS_PER_MICRO: u64 = 1_000;

/// What a cost is measured against: a rate, or a number of concurrency slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    Rate(Rate),
    Slots(u64),
}

impl Capacity {
    /// The most one request can take.
    pub fn units(self) -> u64 {
        match self {
            Capacity::Rate(rate) => rate.limit(),
            Capacity::Slots(slots) => slots,
        }
    }
}

impl fmt::Display for Capacity {
    /// `10 per 1 minute`, `3 concurrent slots`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Rate(rate) => write!(f, "{rate}"),
            Capacity::Slots(1) => f.write_str("1 concurrent slot"),
            Capacity::Slots(slots) => write!(f, "{slots} concurrent slots"),
        }
    }
}

/// A request that no state of the limit could ever admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostExceedsLimit {
    pub cost: u64,
    pub limit: Capacity,
}

impl CostExceedsLimit {
    pub fn of_rate(cost: u64, rate: Rate) -> Self {
        CostExceedsLimit {
            cost,
            limit: Capacity::Rate(rate),
        }
    }

    /// The message for a cost shown as `cost`, which may be a number too large for a `u64`.
    pub fn describe(cost: &dyn fmt::Display, limit: Capacity) -> String {
        format!(
            "a cost of {cost} can never pass a limit of {limit}: the most one request can take is {}",
            limit.units()
        )
    }
}

impl fmt::Display for CostExceedsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::describe(&self.cost, self.limit))
    }
}

impl std::error::Error for CostExceedsLimit {}

/// One limit of a decision: a key, its rates, and the units a request takes from each of those rates.
pub type CostedLimit<'a> = (&'a str, &'a [Rate], u64);

/// Refuses a decision in which some limit's cost exceeds one of its rates: no state could ever admit it.
pub fn check_costs(limits: &[CostedLimit<'_>]) -> Result<(), CostExceedsLimit> {
    for &(_, rates, cost) in limits {
        if let Some(&rate) = rates.iter().find(|rate| rate.limit() < cost) {
            return Err(CostExceedsLimit::of_rate(cost, rate));
        }
    }
    Ok(())
}

/// Counts of what a limiter decided.
#[derive(Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
}

pub struct Limiter<A: Algorithm> {
    store: MemoryStore<A::State>,
    clock: Clock,
    counters: Counters,
}

impl<A: Algorithm> Limiter<A> {
    pub fn new(clock: Clock, max_keys: usize, on_full: OnFull) -> Self {
        Limiter {
            store: MemoryStore::new(max_keys, on_full),
            clock,
            counters: Counters::default(),
        }
    }

    /// One check per distinct (key, rate): the same counter named twice is charged once, at the largest cost
    /// named for it, and reported as the first limit that named it. Held inline for up to four: a decision
    /// allocates nothing on the heap.
    fn checks<'l>(&self, limits: impl IntoIterator<Item = CostedLimit<'l>>) -> SmallVec<[Check<A>; 4]> {
        let mut checks: SmallVec<[Check<A>; 4]> = SmallVec::new();
        for (index, (key, rates, cost)) in limits.into_iter().enumerate() {
            for &rate in rates {
                let key = self.store.key_hash(key, rate);
                if let Some(check) = checks.iter_mut().find(|check| check.key == key) {
                    check.cost = check.cost.max(cost);
                } else {
                    checks.push(Check {
                        key,
                        algorithm: A::new(rate),
                        cost,
                        index,
                    });
                }
            }
        }
        checks
    }

    /// Checks all limits, each at its own cost, and commits the request only if every one passes. Returns
    /// the decision and the clock reading it was made at.
    pub fn hit(&self, limits: &[CostedLimit<'_>]) -> Result<(Decision, u64), CostExceedsLimit> {
        self.decide(limits, true)
    }

    /// What a request of these costs would get now, changing nothing.
    pub fn test(&self, limits: &[CostedLimit<'_>]) -> Result<(Decision, u64), CostExceedsLimit> {
        self.decide(limits, false)
    }

    fn decide(&self, limits: &[CostedLimit<'_>], commit: bool) -> Result<(Decision, u64), CostExceedsLimit> {
        check_costs(limits)?;
        let checks = self.checks(limits.iter().copied());
        let now = self.clock.now_ns();
        let decision = self.store.decide(&checks, now, commit);
        if commit {
            let counter = if decision.allowed {
                &self.counters.allowed
            } else {
                &self.counters.denied
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok((decision, now))
    }

    /// The standing of the tightest limit now: units left and time to full reset, and whether (and when) a
    /// request of cost 1 could pass.
    pub fn peek(&self, limits: &[(&str, &[Rate])]) -> (Decision, u64) {
        let now = self.clock.now_ns();
        let checks = self.checks(limits.iter().map(|&(key, rates)| (key, rates, 1)));
        let decision =
            Decision::tightest(checks.iter().map(|check| self.store.inspect(check, now))).expect("peek needs a limit");
        (decision, now)
    }

    pub fn reset(&self, key: &str, rates: &[Rate]) {
        for &rate in rates {
            self.store.remove(self.store.key_hash(key, rate));
        }
    }

    pub fn sweep(&self, rates: &[Rate]) -> usize {
        let now = self.clock.now_ns();
        rates.iter().map(|&rate| self.store.sweep(&A::new(rate), now)).sum()
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn max_keys(&self) -> usize {
        self.store.max_keys()
    }

    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.allowed.load(Ordering::Relaxed),
            self.counters.denied.load(Ordering::Relaxed),
            self.store.overflows(),
        )
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
}

/// A limiter of any algorithm.
pub enum AnyLimiter {
    Gcra(Limiter<Gcra>),
    TokenBucket(Limiter<TokenBucket>),
    LeakyBucket(Limiter<LeakyBucket>),
    FixedWindow(Limiter<FixedWindow>),
    SlidingWindowCounter(Limiter<SlidingWindow>),
    SlidingWindowLog(Limiter<SlidingLog>),
}

macro_rules! dispatch {
    ($self:expr, $limiter:ident => $body:expr) => {
        match $self {
            AnyLimiter::Gcra($limiter) => $body,
            AnyLimiter::TokenBucket($limiter) => $body,
            AnyLimiter::LeakyBucket($limiter) => $body,
            AnyLimiter::FixedWindow($limiter) => $body,
            AnyLimiter::SlidingWindowCounter($limiter) => $body,
            AnyLimiter::SlidingWindowLog($limiter) => $body,
        }
    };
}

impl AnyLimiter {
    pub fn new(kind: AlgorithmKind, clock: Clock, max_keys: usize, on_full: OnFull) -> AnyLimiter {
        match kind {
            AlgorithmKind::Gcra => AnyLimiter::Gcra(Limiter::new(clock, max_keys, on_full)),
            AlgorithmKind::TokenBucket => AnyLimiter::TokenBucket(Limiter::new(clock, max_keys, on_full)),
            AlgorithmKind::LeakyBucket => AnyLimiter::LeakyBucket(Limiter::new(clock, max_keys, on_full)),
            AlgorithmKind::FixedWindow => AnyLimiter::FixedWindow(Limiter::new(clock, max_keys, on_full)),
            AlgorithmKind::SlidingWindowCounter => {
                AnyLimiter::SlidingWindowCounter(Limiter::new(clock, max_keys, on_full))
            }
            AlgorithmKind::SlidingWindowLog => AnyLimiter::SlidingWindowLog(Limiter::new(clock, max_keys, on_full)),
        }
    }

    pub fn kind(&self) -> AlgorithmKind {
        match self {
            AnyLimiter::Gcra(_) => AlgorithmKind::Gcra,
            AnyLimiter::TokenBucket(_) => AlgorithmKind::TokenBucket,
            AnyLimiter::LeakyBucket(_) => AlgorithmKind::LeakyBucket,
            AnyLimiter::FixedWindow(_) => AlgorithmKind::FixedWindow,
            AnyLimiter::SlidingWindowCounter(_) => AlgorithmKind::SlidingWindowCounter,
            AnyLimiter::SlidingWindowLog(_) => AlgorithmKind::SlidingWindowLog,
        }
    }

    pub fn hit(&self, limits: &[CostedLimit<'_>]) -> Result<(Decision, u64), CostExceedsLimit> {
        dispatch!(self, limiter => limiter.hit(limits))
    }

    pub fn test(&self, limits: &[CostedLimit<'_>]) -> Result<(Decision, u64), CostExceedsLimit> {
        dispatch!(self, limiter => limiter.test(limits))
    }

    pub fn peek(&self, limits: &[(&str, &[Rate])]) -> (Decision, u64) {
        dispatch!(self, limiter => limiter.peek(limits))
    }

    pub fn reset(&self, key: &str, rates: &[Rate]) {
        dispatch!(self, limiter => limiter.reset(key, rates));
    }

    pub fn sweep(&self, rates: &[Rate]) -> usize {
        dispatch!(self, limiter => limiter.sweep(rates))
    }

    pub fn len(&self) -> usize {
        dispatch!(self, limiter => limiter.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_keys(&self) -> usize {
        dispatch!(self, limiter => limiter.max_keys())
    }

    /// (allowed, denied, new keys that found the store full)
    pub fn counts(&self) -> (u64, u64, u64) {
        dispatch!(self, limiter => limiter.counts())
    }

    pub fn now_ns(&self) -> u64 {
        dispatch!(self, limiter => limiter.now_ns())
    }
}

/// Units of one leased acquisition: a decision and, when allowed, the id of its lease.
#[derive(Clone, Copy, Debug)]
pub struct Acquired {
    pub decision: Decision,
    pub now_ns: u64,
    pub lease: Option<u64>,
}

/// A concurrency limiter in memory whose units are held by leases (see `algorithm::Leases`): a release
/// frees exactly its own lease, and with a lease duration, a lease never released frees its units when it
/// expires.
pub struct LeaseLimiter {
    store: MemoryStore<Leases>,
    clock: Clock,
    algorithm: Concurrency,
    /// `None`: held until released.
    lease_ns: Option<u64>,
    next_id: AtomicU64,
    counters: Counters,
}

impl LeaseLimiter {
    /// At most `algorithm.slots()` units in flight per key; `algorithm.retry_after_ns()` is the wait suggested
    /// when full.
    pub fn new(algorithm: Concurrency, lease_ns: Option<u64>, clock: Clock, max_keys: usize) -> Self {
        LeaseLimiter {
            store: MemoryStore::new(max_keys, OnFull::Deny),
            clock,
            algorithm,
            lease_ns,
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    pub fn algorithm(&self) -> Concurrency {
        self.algorithm
    }

    pub fn slots(&self) -> u64 {
        self.algorithm.slots()
    }

    pub fn lease_ns(&self) -> Option<u64> {
        self.lease_ns
    }

    /// The decision of a key with every unit taken.
    pub fn full(&self, cost: u64) -> Decision {
        self.algorithm.check(self.slots(), cost)
    }

    /// Whether `cost` could ever pass.
    pub fn check_cost(&self, cost: u64) -> Result<(), CostExceedsLimit> {
        if cost > self.slots() {
            return Err(CostExceedsLimit {
                cost,
                limit: Capacity::Slots(self.slots()),
            });
        }
        Ok(())
    }

    fn hash(&self, key: &str) -> KeyHash {
        self.store.key_digest(key, self.slots(), 0)
    }

    /// Takes `cost` units of `key` under a new lease if they are free.
    pub fn acquire(&self, key: &str, cost: u64) -> Result<Acquired, CostExceedsLimit> {
        self.check_cost(cost)?;
        let now = self.clock.now_ns();
        let lease = Lease {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            cost,
            expires_ns: self.lease_ns.map_or(u64::MAX, |lease_ns| now.saturating_add(lease_ns)),
        };
        let hash = self.hash(key);
        let decision = self.store.change(
            hash,
            now,
            true,
            |state| state.is_idle(now),
            |state| match state {
                Some(state) => state.acquire(&self.algorithm, now, cost, lease),
                None => self.full(cost),
            },
        );
        let counter = if decision.allowed {
            &self.counters.allowed
        } else {
            &self.counters.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(Acquired {
            decision,
            now_ns: now,
            lease: decision.allowed.then_some(lease.id),
        })
    }

    /// Gives back up to `units` of lease `id` on `key`; returns the units freed (0 for a lease released
    /// already or expired).
    pub fn release(&self, key: &str, id: u64, units: u64) -> u64 {
        self.change_existing(key, |state| state.release(id, units))
    }

    fn change_existing(&self, key: &str, change: impl FnOnce(&mut Leases) -> u64) -> u64 {
        let now = self.clock.now_ns();
        let hash = self.hash(key);
        self.store.change(
            hash,
            now,
            false,
            |state| state.is_idle(now),
            |state| {
                let state = state.expect("an existing key or a fresh state");
                state.purge(now);
                change(state)
            },
        )
    }

    /// Units free and in use on `key` now, and whether one more would pass.
    pub fn peek(&self, key: &str) -> (Decision, u64) {
        let now = self.clock.now_ns();
        let hash = self.hash(key);
        let in_flight = self.store.change(
            hash,
            now,
            false,
            |state| state.is_idle(now),
            |state| {
                let state = state.expect("an existing key or a fresh state");
                state.purge(now);
                state.in_flight()
            },
        );
        (self.algorithm.inspect(in_flight), now)
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn max_keys(&self) -> usize {
        self.store.max_keys()
    }

    /// (allowed, denied, new keys that found the store full)
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.allowed.load(Ordering::Relaxed),
            self.counters.denied.load(Ordering::Relaxed),
            self.store.overflows(),
        )
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const SECOND: u64 = 1_000_000_000;

    fn usable(kind: AlgorithmKind, rate: &str, on_redis: bool) -> Result<(), String> {
        kind.unusable(crate::rate::parse_rates(rate).unwrap()[0], on_redis)
            .map_or(Ok(()), Err)
    }

    #[test]
    fn the_log_takes_limits_up_to_its_maximum_anywhere() {
        assert_eq!(usable(AlgorithmKind::SlidingWindowLog, "100000/day", true), Ok(()));
        let error = usable(AlgorithmKind::SlidingWindowLog, "100001/day", false).unwrap_err();
        assert!(
            error.contains("at most 100000 per period, and \"100001 per 1 day\" is more"),
            "{error}"
        );
        assert!(error.contains("'sliding_window_counter'"), "{error}");
        assert_eq!(
            usable(AlgorithmKind::SlidingWindowCounter, "1000000000/day", true),
            Ok(())
        );
    }

    #[test]
    fn redis_refuses_rates_its_microseconds_cannot_hold() {
        for kind in [
            AlgorithmKind::Gcra,
            AlgorithmKind::TokenBucket,
            AlgorithmKind::LeakyBucket,
        ] {
            for fine in [
                "1000000/s",
                "500000/s",
                "1000/s",
                "3/s",
                "7/13s",
                "10/min",
                "1000000/day",
                "1500/s",         // 666 µs a unit: 0.1% faster, let be
                "1000000000/day", // 86 µs a unit: 0.47% faster
            ] {
                assert_eq!(usable(kind, fine, true), Ok(()), "{fine}");
            }
            for (coarse, says) in [
                ("2000000/s", "leaves 500 ns per unit, which would be cut to 0 µs"),
                ("600000/s", "leaves 1666 ns per unit, which would be cut to 1 µs"),
                ("1000000000/hour", "leaves 3600 ns per unit, which would be cut to 3 µs"),
                ("700000/s", "leaves 1428 ns per unit, which would be cut to 1 µs"),
            ] {
                assert_eq!(usable(kind, coarse, false), Ok(()), "memory counts nanoseconds");
                let error = usable(kind, coarse, true).unwrap_err();
                assert!(error.contains(says), "{error}");
                assert!(
                    error.starts_with(&format!("on Redis, {} counts", kind.name())),
                    "{error}"
                );
            }
        }
        for kind in [AlgorithmKind::FixedWindow, AlgorithmKind::SlidingWindowCounter] {
            assert_eq!(usable(kind, "2000000/s", true), Ok(()), "windows have no time per unit");
        }
    }

    #[test]
    fn a_decision_names_the_position_of_its_limit() {
        let limiter: Limiter<Gcra> = Limiter::new(Clock::Fake(FakeClock::new(SECOND)), 100, OnFull::Allow);
        let rates = crate::rate::parse_rates("3/min").unwrap();
        let index = |limits: &[CostedLimit<'_>]| limiter.hit(limits).unwrap().0.index;
        assert_eq!(index(&[("spent", &rates, 3)]), 0);
        assert_eq!(
            index(&[("a", &rates, 1), ("b", &rates, 1)]),
            0,
            "equally tight: the first"
        );
        assert_eq!(index(&[("a", &rates, 1), ("spent", &rates, 1), ("b", &rates, 1)]), 1);
        assert_eq!(
            index(&[("c", &rates, 1), ("d", &rates, 1), ("c", &rates, 2)]),
            0,
            "a counter named twice is reported at its first position"
        );
        assert_eq!(limiter.peek(&[("a", &rates), ("spent", &rates)]).0.index, 1);
    }

    #[test]
    fn lease_limiter_releases_exactly_its_leases_and_expires_them() {
        let clock = FakeClock::new(1_000 * SECOND);
        let limiter = LeaseLimiter::new(
            Concurrency::new(2, SECOND),
            Some(10 * SECOND),
            Clock::Fake(clock.clone()),
            100,
        );
        let first = limiter.acquire("k", 1).unwrap();
        let second = limiter.acquire("k", 1).unwrap();
        assert!(first.decision.allowed && second.decision.allowed);
        assert_eq!(second.decision.remaining, 0);
        let denied = limiter.acquire("k", 1).unwrap();
        assert!(!denied.decision.allowed && denied.lease.is_none());
        let Err(too_large) = limiter.acquire("k", 3) else {
            panic!("a cost above the slots was taken");
        };
        assert_eq!(
            too_large.to_string(),
            "a cost of 3 can never pass a limit of 2 concurrent slots: the most one request can take is 2"
        );

        assert_eq!(limiter.release("k", first.lease.unwrap(), u64::MAX), 1);
        assert_eq!(limiter.release("k", first.lease.unwrap(), u64::MAX), 0);
        assert_eq!(
            limiter.peek("k").0.remaining,
            1,
            "the second release freed nobody else's unit"
        );

        clock.advance_ns(10 * SECOND);
        assert_eq!(limiter.peek("k").0.remaining, 2, "the unreleased lease expired");
        assert_eq!(limiter.release("k", second.lease.unwrap(), u64::MAX), 0);
        assert!(limiter.is_empty(), "a key without live leases is forgotten");
        assert_eq!(limiter.counts(), (2, 1, 0));
    }

    #[test]
    fn without_a_lease_duration_units_are_held_until_released() {
        let clock = FakeClock::new(SECOND);
        let limiter = LeaseLimiter::new(Concurrency::new(1, SECOND), None, Clock::Fake(clock.clone()), 1);
        assert!(limiter.acquire("a", 1).unwrap().decision.allowed);
        clock.advance_ns(3_600 * SECOND);
        assert!(!limiter.acquire("a", 1).unwrap().decision.allowed);
        let full = limiter.acquire("b", 1).unwrap();
        assert!(!full.decision.allowed, "a full store refuses new keys");
        assert_eq!(limiter.counts().2, 1);
        let held = limiter.peek("a").0;
        assert_eq!(held.remaining, 0);
        assert_eq!(limiter.release("a", 1, u64::MAX), 1, "ids start at 1");
        assert!(limiter.acquire("b", 1).unwrap().decision.allowed);
    }
}
