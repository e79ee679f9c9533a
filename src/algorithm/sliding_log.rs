//! Sliding window log: the exact timestamps of the units taken in the last period. Exact, and the
//! heaviest: a key holds up to `limit` timestamps.

use std::collections::VecDeque;

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct SlidingLog {
    rate: Rate,
}

impl SlidingLog {
    /// How many of the oldest entries have left the period ending at `now`.
    fn expired(&self, log: &VecDeque<u64>, now: u64) -> usize {
        let period = self.rate.period_ns();
        log.partition_point(|&at| at + period <= now)
    }
}

impl Algorithm for SlidingLog {
    /// Timestamps, oldest first; a request of cost `n` adds `n` entries.
    type State = VecDeque<u64>;

    fn new(rate: Rate) -> Self {
        SlidingLog { rate }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, log: &VecDeque<u64>, now: u64, cost: u64) -> Decision {
        let expired = self.expired(log, now);
        let live = (log.len() - expired) as u64;
        let limit = self.rate.limit();
        let period = self.rate.period_ns();
        if live + cost <= limit {
            return decision(self.rate, true, limit - live - cost, period, 0);
        }
        let must_expire = (live + cost - limit) as usize;
        let retry_after_ns = log[expired + must_expire - 1] + period - now;
        let (remaining, reset_after_ns) = self.standing(log, now);
        decision(self.rate, false, remaining, reset_after_ns, retry_after_ns)
    }

    fn apply(&self, log: &mut VecDeque<u64>, now: u64, cost: u64) {
        let expired = self.expired(log, now);
        log.drain(..expired);
        log.extend(std::iter::repeat_n(now, cost as usize));
        if log.capacity() > 2 * log.len().max(4) {
            log.shrink_to_fit();
        }
    }

    fn standing(&self, log: &VecDeque<u64>, now: u64) -> (u64, u64) {
        let live = (log.len() - self.expired(log, now)) as u64;
        let reset_after_ns = log
            .back()
            .map_or(0, |&newest| (newest + self.rate.period_ns()).saturating_sub(now));
        (self.rate.limit() - live, reset_after_ns)
    }

    fn is_idle(&self, log: &VecDeque<u64>, now: u64) -> bool {
        self.expired(log, now) == log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<SlidingLog>();
    }

    #[test]
    fn frees_units_exactly_when_each_leaves_the_period() {
        let mut key = Key::<SlidingLog>::new("3/min");
        assert!(key.hit(1).allowed);
        key.advance(10 * SECOND);
        assert!(key.hit(2).allowed);
        let denied = key.hit(2);
        assert_eq!(
            denied.retry_after_ns,
            60 * SECOND,
            "both the first and one of the second pair must leave"
        );
        assert_eq!(key.hit(1).retry_after_ns, 50 * SECOND);
        key.advance(50 * SECOND);
        let allowed = key.hit(1);
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 0);
        assert_eq!(key.state.len(), 3, "expired entries are dropped");
    }
}
