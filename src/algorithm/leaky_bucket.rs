//! Leaky bucket as a meter: each request pours its cost into a bucket of `limit` units that leaks one
//! unit every `period / limit`; a request that would overflow is refused. The water level is exactly the
//! tokens a token bucket has handed out, so both share one piece of arithmetic; they differ in what they
//! report (level vs tokens) at the compatibility layer.

use super::token_bucket::{bucket_apply, bucket_check, bucket_standing, settle, Bucket};
use super::Algorithm;
use crate::decision::Decision;
use crate::rate::Rate;

#[derive(Clone, Copy, Debug)]
pub struct LeakyBucket {
    rate: Rate,
    emission_ns: u64,
}

impl LeakyBucket {
    /// The water level now, in units.
    pub fn level(&self, bucket: &Bucket, now: u64) -> u64 {
        settle(*bucket, now, self.emission_ns).taken
    }
}

impl Algorithm for LeakyBucket {
    /// `taken` is the water level.
    type State = Bucket;

    fn new(rate: Rate) -> Self {
        LeakyBucket {
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
        self.level(bucket, now) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testing::{boundary_contract, Key, SECOND};

    #[test]
    fn meets_the_boundary_contract() {
        boundary_contract::<LeakyBucket>();
    }

    #[test]
    fn leaks_one_unit_per_interval() {
        let mut key = Key::<LeakyBucket>::new("5/10s");
        assert_eq!(key.drain(), 5);
        assert_eq!(key.algorithm.level(&key.state, key.now), 5);
        key.advance(4 * SECOND + 1);
        assert_eq!(key.algorithm.level(&key.state, key.now), 3);
        assert_eq!(key.drain(), 2);
    }
}
