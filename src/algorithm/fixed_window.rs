//! Fixed window: a counter per window of one period, windows aligned to multiples of the period since the
//! Unix epoch (so "10/min" windows start on the minute).

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct FixedWindow {
    rate: Rate,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub count: u64,
}

impl FixedWindow {
    fn current(&self, window: &Window, now: u64) -> (u64, u64) {
        let start = now - now % self.rate.period_ns();
        let count = if window.start == start { window.count } else { 0 };
        (start, count)
    }
}

impl Algorithm for FixedWindow {
    type State = Window;

    fn new(rate: Rate) -> Self {
        FixedWindow { rate }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, window: &Window, now: u64, cost: u64) -> Decision {
        let (start, count) = self.current(window, now);
        let until_next = start + self.rate.period_ns() - now;
        let limit = self.rate.limit();
        if count + cost <= limit {
            decision(self.rate, true, limit - count - cost, until_next, 0)
        } else {
            decision(self.rate, false, limit - count, until_next, until_next)
        }
    }

    fn apply(&self, window: &mut Window, now: u64, cost: u64) {
        let (start, count) = self.current(window, now);
        *window = Window {
            start,
            count: count + cost,
        };
    }

    fn standing(&self, window: &Window, now: u64) -> (u64, u64) {
        let (start, count) = self.current(window, now);
        let reset_after_ns = if count == 0 {
            0
        } else {
            start + self.rate.period_ns() - now
        };
        (self.rate.limit() - count, reset_after_ns)
    }

    fn is_idle(&self, window: &Window, now: u64) -> bool {
        self.current(window, now).1 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<FixedWindow>();
    }

    #[test]
    fn resets_on_the_window_boundary() {
        let mut key = Key::<FixedWindow>::new("10/min");
        key.now = 1_020 * SECOND - 1;
        assert_eq!(key.drain(), 10);
        assert_eq!(key.hit(1).retry_after_ns, 1);
        key.advance(1);
        assert_eq!(
            key.drain(),
            10,
            "a new minute is a new window: the burst at the edge the algorithm allows"
        );
    }
}
