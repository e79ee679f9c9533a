//! Token bucket: `limit` tokens, one token added back every `period / limit`, whole tokens only. The
//! state is the number of tokens taken out and the instant the last token came back, so that a fresh key
//! (nothing taken) is the default state.

use super::{decision, Algorithm};
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: Rate,
    emission_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Units taken out (token bucket) or units in the bucket (leaky bucket).
    pub taken: u64,
    /// When the last unit came back; the partial unit since then carries over.
    pub since: u64,
}

/// Returns the whole units given back between `bucket.since` and `now`, one per `emission_ns`.
#[inline]
pub(crate) fn settle(bucket: Bucket, now: u64, emission_ns: u64) -> Bucket {
    if bucket.taken == 0 || now <= bucket.since {
        return bucket;
    }
    let returned = (now - bucket.since) / emission_ns;
    if returned >= bucket.taken {
        Bucket { taken: 0, since: now }
    } else {
        Bucket {
            taken: bucket.taken - returned,
            since: bucket.since + returned * emission_ns,
        }
    }
}

/// The decision for a bucket of `rate` holding `taken` units, asked for `cost` more.
#[inline]
pub(crate) fn bucket_check(rate: Rate, emission_ns: u64, bucket: Bucket, now: u64, cost: u64) -> Decision {
    let settled = settle(bucket, now, emission_ns);
    let carried = if settled.taken == 0 { 0 } else { now - settled.since };
    let limit = rate.limit();
    if settled.taken + cost <= limit {
        let taken = settled.taken + cost;
        decision(rate, true, limit - taken, taken * emission_ns - carried, 0)
    } else {
        let retry_after_ns = (settled.taken + cost - limit) * emission_ns - carried;
        decision(
            rate,
            false,
            limit - settled.taken,
            settled.taken * emission_ns - carried,
            retry_after_ns,
        )
    }
}

#[inline]
pub(crate) fn bucket_apply(bucket: &mut Bucket, now: u64, cost: u64, emission_ns: u64) {
    let settled = settle(*bucket, now, emission_ns);
    let since = if settled.taken == 0 { now } else { settled.since };
    *bucket = Bucket {
        taken: settled.taken + cost,
        since,
    };
}

#[inline]
pub(crate) fn bucket_standing(rate: Rate, emission_ns: u64, bucket: Bucket, now: u64) -> (u64, u64) {
    let settled = settle(bucket, now, emission_ns);
    let carried = if settled.taken == 0 { 0 } else { now - settled.since };
    (rate.limit() - settled.taken, settled.taken * emission_ns - carried)
}

impl Algorithm for TokenBucket {
    type State = Bucket;

    fn new(rate: Rate) -> Self {
        TokenBucket {
            rate,
            emission_ns: rate.emission_ns(),
        }
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn check(&self, bucket: &Bucket, now: u64, cost: u64) -> Decision {
        bucket_check(self.rate, self.emission_ns, *bucket, now, cost)
    }

    fn apply(&self, bucket: &mut Bucket, now: u64, cost: u64) {
        bucket_apply(bucket, now, cost, self.emission_ns);
    }

    fn standing(&self, bucket: &Bucket, now: u64) -> (u64, u64) {
        bucket_standing(self.rate, self.emission_ns, *bucket, now)
    }

    fn is_idle(&self, bucket: &Bucket, now: u64) -> bool {
        settle(*bucket, now, self.emission_ns).taken == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<TokenBucket>();
    }

    #[test]
    fn refills_one_whole_token_per_interval_and_keeps_the_partial_one() {
        let mut key = Key::<TokenBucket>::new("10/min");
        assert_eq!(key.drain(), 10);
        key.advance(9 * SECOND);
        let first = key.hit(1);
        assert!(first.allowed, "one token back after 6 s");
        assert_eq!(first.remaining, 0);
        let denied = key.hit(1);
        assert_eq!(denied.retry_after_ns, 3 * SECOND, "the 3 s already accrued carry over");
        key.advance(3 * SECOND);
        assert!(key.hit(1).allowed);
    }

    #[test]
    fn reports_time_until_full() {
        let mut key = Key::<TokenBucket>::new("10/min");
        assert_eq!(key.hit(1).reset_after_ns, 6 * SECOND);
        assert_eq!(key.hit(4).reset_after_ns, 30 * SECOND);
        key.advance(2 * SECOND);
        assert_eq!(key.algorithm.standing(&key.state, key.now), (5, 28 * SECOND));
    }
}
