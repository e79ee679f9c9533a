//! Concurrency limit: at most `slots` units in flight per key. A request takes units when it starts
//! (`check`, then the caller adds them) and gives them back when it ends (`release`). Denied callers are
//! told to wait `retry_after_ns`, since when a slot frees up is not known in advance.
//!
//! `Concurrency` counts units; `Leases` is the state of a key whose units are held by leases: each
//! acquisition has an id, a cost and an expiry, so a holder that never releases (a crashed worker, a
//! forgotten `release`) gives its units back when its lease runs out, and a release frees exactly its own
//! lease.

use crate::decision::Decision;

/// A number of slots and the wait suggested when they are taken. Not a rate: nothing here depends on time.
#[derive(Clone, Copy, Debug)]
pub struct Concurrency {
    slots: u64,
    retry_after_ns: u64,
}

impl Concurrency {
    /// `slots` at least 1.
    pub fn new(slots: u64, retry_after_ns: u64) -> Self {
        Concurrency {
            slots: slots.max(1),
            retry_after_ns,
        }
    }

    pub fn slots(&self) -> u64 {
        self.slots
    }

    pub fn retry_after_ns(&self) -> u64 {
        self.retry_after_ns
    }

    /// Gives back `cost` units; never below zero.
    pub fn release(in_flight: &mut u64, cost: u64) {
        *in_flight = in_flight.saturating_sub(cost);
    }

    fn decision(&self, allowed: bool, remaining: u64, wait_ns: u64) -> Decision {
        Decision {
            allowed,
            limit: self.slots,
            remaining,
            reset_after_ns: wait_ns,
            retry_after_ns: wait_ns,
            period_ns: self.retry_after_ns,
            index: 0,
        }
    }

    /// What a request of `cost` gets with `in_flight` units taken. When the units come back is not known: a
    /// denial reports the suggested wait as both its retry and its reset, so the reset is never the earlier.
    pub fn check(&self, in_flight: u64, cost: u64) -> Decision {
        if in_flight.saturating_add(cost) <= self.slots {
            self.decision(true, self.slots - in_flight - cost, 0)
        } else {
            self.decision(false, self.slots.saturating_sub(in_flight), self.retry_after_ns)
        }
    }

    /// The standing without a request: units free now, and whether (and when) one more would pass.
    pub fn inspect(&self, in_flight: u64) -> Decision {
        Decision {
            remaining: self.slots.saturating_sub(in_flight),
            ..self.check(in_flight, 1)
        }
    }
}

/// One acquisition: `cost` units held until released or until `expires_ns` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub cost: u64,
    pub expires_ns: u64,
}

/// The leases held on one key, and the units they hold. At most `slots` leases are ever live (each holds at
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

    /// Purges, then takes `cost` units under a new lease if they fit `algorithm`'s slots.
    pub fn acquire(&mut self, algorithm: &Concurrency, now: u64, cost: u64, lease: Lease) -> Decision {
        self.purge(now);
        let decision = algorithm.check(self.in_flight, cost);
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

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn admits_up_to_the_limit_in_flight_and_frees_on_release() {
        let concurrency = Concurrency::new(2, SECOND / 2);
        let mut in_flight = 0;
        for remaining in [1, 0] {
            let allowed = concurrency.check(in_flight, 1);
            assert!(allowed.allowed && allowed.remaining == remaining && allowed.retry_after_ns == 0);
            in_flight += 1;
        }
        let denied = concurrency.check(in_flight, 1);
        assert!(!denied.allowed);
        assert_eq!((denied.retry_after_ns, denied.reset_after_ns), (SECOND / 2, SECOND / 2));
        Concurrency::release(&mut in_flight, 1);
        assert!(concurrency.check(in_flight, 1).allowed);
        Concurrency::release(&mut in_flight, 5);
        assert_eq!(in_flight, 0);
        assert_eq!(concurrency.inspect(in_flight).remaining, 2);
        assert_eq!(
            Concurrency::new(2_000_000, 1_000_000)
                .check(2_000_000, 1)
                .retry_after_ns,
            1_000_000,
            "the wait is what was asked for, whatever the number of slots"
        );
    }

    fn lease(id: u64, cost: u64, expires_ns: u64) -> Lease {
        Lease { id, cost, expires_ns }
    }

    #[test]
    fn leases_hold_units_until_released_or_expired() {
        let algorithm = Concurrency::new(3, SECOND);
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
