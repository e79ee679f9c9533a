//! Clocks give nanoseconds since the Unix epoch that never go backwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall time read once at creation, advanced by a monotonic timer.
    Monotonic { origin_unix_ns: u64, origin: Instant },
    /// Time moves only when told to.
    Fake(FakeClock),
}

impl Clock {
    pub fn monotonic() -> Clock {
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock::Monotonic {
            origin_unix_ns,
            origin: Instant::now(),
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Monotonic { origin_unix_ns, origin } => origin_unix_ns + origin.elapsed().as_nanos() as u64,
            Clock::Fake(fake) => fake.now_ns(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::monotonic()
    }
}

/// A shared, manually advanced clock for tests.
#[derive(Clone, Debug, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    pub fn new(start_ns: u64) -> FakeClock {
        FakeClock(Arc::new(AtomicU64::new(start_ns)))
    }

    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance_ns(&self, nanos: u64) {
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Sets the time; a value earlier than the current time is refused, as a real clock never goes back.
    pub fn set_ns(&self, nanos: u64) -> bool {
        self.0.fetch_max(nanos, Ordering::SeqCst) <= nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_forward_and_is_shared() {
        let clock = FakeClock::new(5);
        let shared = Clock::Fake(clock.clone());
        clock.advance_ns(10);
        assert_eq!(shared.now_ns(), 15);
        assert!(!clock.set_ns(3));
        assert_eq!(clock.now_ns(), 15);
        assert!(clock.set_ns(100));
        assert_eq!(shared.now_ns(), 100);
    }

    #[test]
    fn monotonic_clock_is_near_wall_time_and_never_decreases() {
        let clock = Clock::monotonic();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let first = clock.now_ns();
        assert!(first.abs_diff(wall) < 5_000_000_000);
        assert!(clock.now_ns() >= first);
    }
}
