//! Sliding window counter: the count of the current fixed window plus the previous window's count
//! weighted by how much of it still overlaps the sliding period.

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct SlidingWindow {
    rate: Rate,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub start: u64,
    pub current: u64,
    pub previous: u64,
}

impl SlidingWindow {
    /// The counters shifted to the window holding `now`.
    fn shifted(&self, counters: &Counters, now: u64) -> Counters {
        let period = self.rate.period_ns();
        let start = now - now % period;
        if counters.start == start {
            *counters
        } else if counters.start + period == start {
            Counters {
                start,
                current: 0,
                previous: counters.current,
            }
        } else {
            Counters {
                start,
                current: 0,
                previous: 0,
            }
        }
    }

    /// `previous * (period - elapsed)`: the previous window's weight, scaled by the period.
    fn carried(&self, counters: &Counters, now: u64) -> u128 {
        let period = self.rate.period_ns();
        u128::from(counters.previous) * u128::from(period - (now - counters.start))
    }

    /// Units a request could take now on top of `counters.current`.
    fn room(&self, counters: &Counters, now: u64) -> u64 {
        let period = u128::from(self.rate.period_ns());
        let capacity = u128::from(self.rate.limit()) * period;
        let free = capacity.saturating_sub(self.carried(counters, now)) / period;
        (free as u64).saturating_sub(counters.current)
    }

    /// Nanoseconds after `counters.start` at which `previous * (period - t) <= budget * period`.
    fn earliest_in_window(period: u64, previous: u64, budget: u64) -> u64 {
        if previous == 0 {
            return 0;
        }
        let allowance = u128::from(budget) * u128::from(period) / u128::from(previous);
        period.saturating_sub(allowance.min(u128::from(period)) as u64)
    }

    fn time_until_clear(&self, counters: &Counters, now: u64) -> u64 {
        let period = self.rate.period_ns();
        if counters.current > 0 {
            counters.start + 2 * period - now
        } else if counters.previous > 0 {
            counters.start + period - now
        } else {
            0
        }
    }
}

impl Algorithm for SlidingWindow {
    type State = Counters;

    fn new(rate: Rate) -> Self {
        SlidingWindow { rate }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, counters: &Counters, now: u64, cost: u64) -> Decision {
        let counters = self.shifted(counters, now);
        let room = self.room(&counters, now);
        if cost <= room {
            let after = Counters {
                current: counters.current + cost,
                ..counters
            };
            return decision(self.rate, true, room - cost, self.time_until_clear(&after, now), 0);
        }
        let period = self.rate.period_ns();
        let limit = self.rate.limit();
        let this_window = limit
            .checked_sub(counters.current + cost)
            .map(|budget| Self::earliest_in_window(period, counters.previous, budget))
            .filter(|&offset| offset < period);
        let retry_at = this_window.map_or_else(
            || counters.start + period + Self::earliest_in_window(period, counters.current, limit - cost),
            |offset| counters.start + offset,
        );
        decision(
            self.rate,
            false,
            room,
            self.time_until_clear(&counters, now),
            retry_at.max(now + 1) - now,
        )
    }

    fn apply(&self, counters: &mut Counters, now: u64, cost: u64) {
        let shifted = self.shifted(counters, now);
        *counters = Counters {
            current: shifted.current + cost,
            ..shifted
        };
    }

    fn standing(&self, counters: &Counters, now: u64) -> (u64, u64) {
        let counters = self.shifted(counters, now);
        (self.room(&counters, now), self.time_until_clear(&counters, now))
    }

    fn is_idle(&self, counters: &Counters, now: u64) -> bool {
        let counters = self.shifted(counters, now);
        counters.current == 0 && counters.previous == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<SlidingWindow>();
    }

    #[test]
    fn weighs_the_previous_window_by_its_overlap() {
        let mut key = Key::<SlidingWindow>::new("10/min");
        key.now = 960 * SECOND;
        assert_eq!(key.drain(), 10);
        // 15 s into the next window, 3/4 of the previous 10 still count: 7.5, so 2 more pass.
        key.now = 1_035 * SECOND;
        assert_eq!(key.drain(), 2);
        // previous 10 weigh 7.5 + current 2 = 9.5: one more fits when the weight drops to 8 (at 48 s).
        let denied = key.hit(1);
        assert_eq!(denied.retry_after_ns, 3 * SECOND);
        key.advance(3 * SECOND - 1);
        assert!(!key.hit(1).allowed);
        key.advance(1);
        assert!(key.hit(1).allowed);
    }

    #[test]
    fn a_full_current_window_waits_into_the_next_one() {
        let mut key = Key::<SlidingWindow>::new("10/min");
        key.now = 1_000 * SECOND; // 40 s into the window starting at 960 s
        assert_eq!(key.drain(), 10);
        // At 1,020 + t the previous 10 weigh 10 * (60 - t) / 60 <= 9 from t = 6 s.
        assert_eq!(key.hit(1).retry_after_ns, 26 * SECOND);
        assert_eq!(key.hit(10).retry_after_ns, 80 * SECOND);
    }
}
