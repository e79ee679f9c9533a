//! Generic cell rate algorithm: one timestamp per key, the theoretical arrival time (TAT) of the next
//! request. A request of cost `n` moves the TAT `n` emission intervals forward; it passes while the TAT
//! stays within one period of now.

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct Gcra {
    rate: Rate,
    emission_ns: u64,
    window_ns: u64,
}

impl Algorithm for Gcra {
    /// Theoretical arrival time in nanoseconds; 0 for a fresh key.
    type State = u64;

    fn new(rate: Rate) -> Self {
        let emission_ns = rate.emission_ns();
        Gcra {
            rate,
            emission_ns,
            window_ns: emission_ns * rate.limit(),
        }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, tat: &u64, now: u64, cost: u64) -> Decision {
        let base = (*tat).max(now);
        let new_tat = base + cost * self.emission_ns;
        if new_tat - now <= self.window_ns {
            let remaining = (self.window_ns - (new_tat - now)) / self.emission_ns;
            decision(self.rate, true, remaining, new_tat - now, 0)
        } else {
            let (remaining, reset_after_ns) = self.standing(tat, now);
            decision(
                self.rate,
                false,
                remaining,
                reset_after_ns,
                new_tat - self.window_ns - now,
            )
        }
    }

    fn apply(&self, tat: &mut u64, now: u64, cost: u64) {
        *tat = (*tat).max(now) + cost * self.emission_ns;
    }

    fn standing(&self, tat: &u64, now: u64) -> (u64, u64) {
        let busy = (*tat).max(now) - now;
        ((self.window_ns - busy) / self.emission_ns, busy)
    }

    fn is_idle(&self, tat: &u64, now: u64) -> bool {
        *tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<Gcra>();
    }

    #[test]
    fn spaces_requests_by_the_emission_interval_after_a_burst() {
        let mut key = Key::<Gcra>::new("10/min");
        assert_eq!(key.drain(), 10);
        let denied = key.hit(1);
        assert_eq!(denied.retry_after_ns, 6 * SECOND);
        assert_eq!(denied.reset_after_ns, 60 * SECOND);
        key.advance(6 * SECOND);
        let allowed = key.hit(1);
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 0);
        assert_eq!(allowed.reset_after_ns, 60 * SECOND);
        key.advance(30 * SECOND);
        assert_eq!(key.drain(), 5);
    }

    #[test]
    fn a_denied_large_cost_waits_for_enough_units() {
        let mut key = Key::<Gcra>::new("10/min");
        assert!(key.hit(10).allowed);
        assert_eq!(key.hit(3).retry_after_ns, 18 * SECOND);
    }
}
