//! Concurrency limit: at most `limit` units in flight per key. A request takes units when it starts
//! (`check` + `apply`) and gives them back when it ends (`release`). The rate's period is the wait
//! suggested to a denied caller, since when a slot frees up is not known in advance.

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct Concurrency {
    rate: Rate,
}

impl Concurrency {
    /// Gives back `cost` units; never below zero.
    pub fn release(in_flight: &mut u64, cost: u64) {
        *in_flight = in_flight.saturating_sub(cost);
    }
}

impl Algorithm for Concurrency {
    /// Units in flight.
    type State = u64;

    fn new(rate: Rate) -> Self {
        Concurrency { rate }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, in_flight: &u64, _now: u64, cost: u64) -> Decision {
        let limit = self.rate.limit();
        if in_flight + cost <= limit {
            decision(self.rate, true, limit - in_flight - cost, 0, 0)
        } else {
            decision(
                self.rate,
                false,
                limit.saturating_sub(*in_flight),
                0,
                self.rate.period_ns(),
            )
        }
    }

    fn apply(&self, in_flight: &mut u64, _now: u64, cost: u64) {
        *in_flight += cost;
    }

    fn standing(&self, in_flight: &u64, _now: u64) -> (u64, u64) {
        (self.rate.limit().saturating_sub(*in_flight), 0)
    }

    fn is_idle(&self, in_flight: &u64, _now: u64) -> bool {
        *in_flight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{Key, SECOND};

    #[test]
    fn admits_up_to_the_limit_in_flight_and_frees_on_release() {
        let mut key = Key::<Concurrency>::new("2/s");
        assert_eq!(key.hit(1).remaining, 1);
        assert_eq!(key.hit(1).remaining, 0);
        let denied = key.hit(1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_ns, SECOND);
        key.advance(3_600 * SECOND);
        assert!(!key.hit(1).allowed, "time alone frees nothing");
        Concurrency::release(&mut key.state, 1);
        assert!(key.hit(1).allowed);
        Concurrency::release(&mut key.state, 5);
        assert_eq!(key.state, 0);
        assert!(key.algorithm.is_idle(&key.state, key.now));
    }
}
