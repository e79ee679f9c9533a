//! The outcome of a rate-limit check.

/// What a check decided. Times are nanoseconds relative to the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The quota of the limit that bound the decision.
    pub limit: u64,
    /// Whole units left after this request (never negative).
    pub remaining: u64,
    /// Until the quota is fully restored.
    pub reset_after_ns: u64,
    /// Until a request of this cost could pass; 0 when allowed.
    pub retry_after_ns: u64,
    /// The period of the limit that bound the decision.
    pub period_ns: u64,
    /// Which limit of the call bound the decision: its position in the limits the caller named (the first
    /// that named it, when one counter was named twice); 0 for a call of one limit.
    pub index: usize,
}

impl Decision {
    /// Whether `self` constrains the caller more than `other`: a denial over an allowance, a longer wait
    /// over a shorter one, then fewer units left, then a later reset.
    pub fn binds_tighter_than(&self, other: &Decision) -> bool {
        match (self.allowed, other.allowed) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.retry_after_ns > other.retry_after_ns,
            (true, true) => {
                (self.remaining, std::cmp::Reverse(self.reset_after_ns))
                    < (other.remaining, std::cmp::Reverse(other.reset_after_ns))
            }
        }
    }

    /// The decision that binds tightest among several limits' decisions; of equally tight ones, the first.
    pub fn tightest(decisions: impl IntoIterator<Item = Decision>) -> Option<Decision> {
        decisions.into_iter().reduce(|current, next| {
            if next.binds_tighter_than(&current) {
                next
            } else {
                current
            }
        })
    }
}
