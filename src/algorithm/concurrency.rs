//! Concurrency limit: at most `limit` units in flight per key. A request takes units when it starts
//! (`check` + `apply`) and gives them back when it ends (`release`). The rate's period is the wait
//! suggested to a denied caller, since when a slot frees up is not known in advance.
//!
//! `Concurrency` counts units; `Leases` is the state of a key whose units are held by leases: each
//! acquisition has an id, a cost and an expiry, so a holder that never releases (a crashed worker, a
//! forgotten `release`) gives its units back when its lease runs out, and a release frees exactly its own
//! lease.

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

/// One acquisition: `cost` units held until released or until `expires_ns` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub cost: u64,
    pub expires_ns: u64,
}

/// The leases held on one key, and the units they hold. At most `limit` leases are ever live (each holds at
/// least one unit), so the linear scans stay short.
#[derive(Clone, Debug, Default)]
pub struct Leases {
    held: Vec<Lease>,
    in_flight: u64,
}

impl Leases {
    /// Drops the leases that expired at `now`; returns the units they held.
    pub fn purge(&mut self, now: u64) -> u64 {
        let before = self.in_flight;
        if self.held.iter().any(|lease| lease.expires_ns <= now) {
            self.held.retain(|lease| lease.expires_ns > now);
            self.in_flight = self.held.iter().map(|lease| lease.cost).sum();
        }
        before - self.in_flight
    }

    /// Units held by leases live at the last `purge`.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Live leases at the last `purge`, oldest first.
    pub fn held(&self) -> &[Lease] {
        &self.held
    }

    /// Purges, then takes `cost` units under a new lease if they fit `algorithm`'s limit.
    pub fn acquire(&mut self, algorithm: &Concurrency, now: u64, cost: u64, lease: Lease) -> Decision {
        self.purge(now);
        let decision = algorithm.check(&self.in_flight, now, cost);
        if decision.allowed {
            self.in_flight += lease.cost;
            self.held.push(lease);
        }
        decision
    }

    /// Gives back up to `units` of lease `id` (all of it when `units >= cost`); returns the units freed.
    /// An unknown id (released already, or expired and purged) frees nothing.
    pub fn release(&mut self, id: u64, units: u64) -> u64 {
        let Some(index) = self.held.iter().position(|lease| lease.id == id) else {
            return 0;
        };
        let freed = units.min(self.held[index].cost);
        self.held[index].cost -= freed;
        if self.held[index].cost == 0 {
            self.held.remove(index);
        }
        self.in_flight -= freed;
        freed
    }

    /// Whether no lease is live at `now`: the key behaves as a fresh one and can be forgotten.
    pub fn is_idle(&self, now: u64) -> bool {
        self.held.iter().all(|lease| lease.expires_ns <= now)
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

    fn lease(id: u64, cost: u64, expires_ns: u64) -> Lease {
        Lease { id, cost, expires_ns }
    }

    #[test]
    fn leases_hold_units_until_released_or_expired() {
        let algorithm = Concurrency::new(crate::rate::parse_rates("3/s").unwrap()[0]);
        let mut leases = Leases::default();
        let now = 1_000 * SECOND;
        assert_eq!(
            leases
                .acquire(&algorithm, now, 2, lease(1, 2, now + 10 * SECOND))
                .remaining,
            1
        );
        assert!(
            leases
                .acquire(&algorithm, now, 1, lease(2, 1, now + 5 * SECOND))
                .allowed
        );
        let denied = leases.acquire(&algorithm, now, 1, lease(3, 1, now + 5 * SECOND));
        assert!(!denied.allowed && denied.remaining == 0 && denied.retry_after_ns == SECOND);
        assert_eq!(leases.held().len(), 2, "a denied request holds nothing");
        assert_eq!(leases.release(3, u64::MAX), 0, "an id never granted frees nothing");

        // Lease 2 runs out at exactly its expiry, freeing its unit and nothing else.
        assert!(
            !leases
                .acquire(&algorithm, now + 5 * SECOND - 1, 1, lease(4, 1, now + 9 * SECOND))
                .allowed
        );
        assert!(
            leases
                .acquire(&algorithm, now + 5 * SECOND, 1, lease(5, 1, now + 9 * SECOND))
                .allowed
        );
        assert_eq!(leases.in_flight(), 3);
        assert_eq!(
            leases.release(2, u64::MAX),
            0,
            "releasing an expired lease frees nobody else's units"
        );
        assert_eq!(leases.in_flight(), 3);

        assert_eq!(leases.release(1, u64::MAX), 2);
        assert_eq!(leases.release(1, u64::MAX), 0, "a second release is harmless");
        assert_eq!(leases.in_flight(), 1);
        assert!(!leases.is_idle(now + 9 * SECOND - 1));
        assert!(leases.is_idle(now + 9 * SECOND));
        assert_eq!(leases.purge(now + 9 * SECOND), 1);
        assert_eq!(leases.in_flight(), 0);

        // A partial release shrinks a lease; the rest is held until released or expired.
        assert!(leases.acquire(&algorithm, now, 3, lease(6, 3, u64::MAX)).allowed);
        assert_eq!(leases.release(6, 2), 2);
        assert_eq!(leases.held(), &[lease(6, 1, u64::MAX)]);
        assert_eq!(leases.release(6, 5), 1, "never more than the lease holds");
        assert!(leases.held().is_empty() && leases.in_flight() == 0);
    }
}
