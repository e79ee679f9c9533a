//! In-process store: a sharded hash map from a keyed 128-bit hash of (key, rate) to algorithm state.
//!
//! - Atomicity: all shards a decision touches are locked (in index order, so two decisions never
//!   deadlock) while every limit is checked and, only if all pass, committed.
//! - Bounded memory: keys whose state equals a fresh key's are dropped by amortised sweeps, which never
//!   changes a decision. A hard cap on keys holds beyond that, split into per-shard shares that add up to
//!   it; when a key's shard is full of live keys, a new key is either let through untracked
//!   (`OnFull::Allow`) or refused (`OnFull::Deny`), and counted. A live counter is never dropped. Keys spread
//!   over the shards by their random digests, so the first shard fills somewhat before the store does.
//! - Keys are stored as SipHash-1-3 128-bit digests under a random per-store key: no per-key allocation,
//!   no way for a client to aim collisions.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};
use siphasher::sip128::{Hasher128, SipHasher13};
use smallvec::SmallVec;

use crate::algorithm::Algorithm;
use crate::decision::Decision;
use crate::rate::Rate;

const MAX_SHARDS: usize = 64;
const KEYS_PER_SHARD_HINT: usize = 1024;
const FIRST_SWEEP_AT: usize = 256;
/// Once a shard is full of live keys, it is swept again no sooner than this (clock time), so a flood of
/// new keys cannot make every request scan a shard.
const FULL_SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// What happens to a new key when the store already holds its maximum of live keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// Decide as for a fresh key without remembering it.
    Allow,
    /// Refuse the request.
    Deny,
}

/// A stored key: the 128-bit digest of (key, rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(u64, u64);

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The digest is already uniformly random: the map uses its first half as is.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Map<S> = HashMap<KeyHash, S, BuildHasherDefault<PassThrough>>;

struct Shard<S> {
    map: Map<S>,
    /// This shard's share of the store's `max_keys`; the shares add up to it exactly.
    cap: usize,
    sweep_at_len: usize,
    full_swept_at: Option<u64>,
}

/// One limit of a decision: whose key, under which algorithm (and so which rate), the units a request
/// takes from it, and the caller's position of the limit it checks (the decision's `index` when it binds).
pub struct Check<A> {
    pub key: KeyHash,
    pub algorithm: A,
    pub cost: u64,
    pub index: usize,
}

/// A shard's index and its held lock.
type Locked<'g, 'm, S> = (usize, &'g mut MutexGuard<'m, Shard<S>>);

pub struct MemoryStore<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    hash_keys: (u64, u64),
    max_keys: usize,
    on_full: OnFull,
    overflows: AtomicU64,
}

fn random_keys() -> (u64, u64) {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    let (first, second) = bytes.split_at(8);
    (
        u64::from_le_bytes(first.try_into().unwrap()),
        u64::from_le_bytes(second.try_into().unwrap()),
    )
}

impl<S: Default + Clone + Send> MemoryStore<S> {
    /// A store holding at most `max_keys` keys (at least one).
    pub fn new(max_keys: usize, on_full: OnFull) -> Self {
        let max_keys = max_keys.max(1);
        let shard_count = (max_keys / KEYS_PER_SHARD_HINT)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let shard_count = if shard_count > max_keys { 1 } else { shard_count };
        let shards = (0..shard_count)
            .map(|index| {
                let cap = max_keys / shard_count + usize::from(index < max_keys % shard_count);
                Mutex::new(Shard {
                    map: Map::default(),
                    cap,
                    sweep_at_len: FIRST_SWEEP_AT.min(cap),
                    full_swept_at: None,
                })
            })
            .collect();
        MemoryStore {
            shards,
            hash_keys: random_keys(),
            max_keys,
            on_full,
            overflows: AtomicU64::new(0),
        }
    }

    /// The stored digest of `key` under `rate`.
    pub fn key_hash(&self, key: &str, rate: Rate) -> KeyHash {
        self.key_digest(key, rate.limit(), rate.period_ns())
    }

    /// The stored digest of `key` under any two numbers that tell its limits apart.
    pub fn key_digest(&self, key: &str, first: u64, second: u64) -> KeyHash {
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        hasher.write(key.as_bytes());
        hasher.write_u8(0xff);
        hasher.write_u64(first);
        hasher.write_u64(second);
        let digest = hasher.finish128();
        KeyHash(digest.h1, digest.h2)
    }

    fn shard_of(&self, key: KeyHash) -> usize {
        (key.1 as usize) & (self.shards.len() - 1)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on keys, as configured: the shards' shares add up to it.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// New keys that found the store full of live keys.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Checks every limit and, if `commit` and all pass, applies them, atomically. Returns the decision of
    /// the limit that binds tightest (of equally tight ones, the first), carrying its check's `index`.
    /// `checks` must not be empty, and each check's cost fits its rate.
    pub fn decide<A: Algorithm<State = S>>(&self, checks: &[Check<A>], now: u64, commit: bool) -> Decision {
        if let [single] = checks {
            let mut shard = self.shards[self.shard_of(single.key)].lock();
            return self.decide_locked(&mut [(self.shard_of(single.key), &mut shard)], checks, now, commit);
        }
        let mut indices: SmallVec<[usize; 4]> = checks.iter().map(|check| self.shard_of(check.key)).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards: SmallVec<[MutexGuard<'_, Shard<S>>; 4]> =
            indices.iter().map(|&index| self.shards[index].lock()).collect();
        let mut locked: SmallVec<[Locked<'_, '_, S>; 4]> = indices.iter().copied().zip(guards.iter_mut()).collect();
        self.decide_locked(&mut locked, checks, now, commit)
    }

    fn decide_locked<A: Algorithm<State = S>>(
        &self,
        locked: &mut [(usize, &mut MutexGuard<'_, Shard<S>>)],
        checks: &[Check<A>],
        now: u64,
        commit: bool,
    ) -> Decision {
        let fresh = S::default();
        let mut decisions: SmallVec<[Decision; 4]> = SmallVec::new();
        let mut untracked: SmallVec<[bool; 4]> = smallvec::smallvec![false; checks.len()];
        let mut new_keys_per_shard = [0usize; MAX_SHARDS];
        for (position, check) in checks.iter().enumerate() {
            let shard_index = self.shard_of(check.key);
            let shard = Self::find(locked, shard_index);
            let stored = shard.map.get(&check.key);
            let mut decision = Decision {
                index: check.index,
                ..check.algorithm.check(stored.unwrap_or(&fresh), now, check.cost)
            };
            if stored.is_none() && commit && decision.allowed {
                new_keys_per_shard[shard_index] += 1;
                let algorithm = &check.algorithm;
                if !Self::make_room(shard, new_keys_per_shard[shard_index], now, |state| {
                    algorithm.is_idle(state, now)
                }) {
                    self.overflows.fetch_add(1, Ordering::Relaxed);
                    untracked[position] = true;
                    if self.on_full == OnFull::Deny {
                        let rate = check.algorithm.rate();
                        decision = Decision {
                            allowed: false,
                            remaining: 0,
                            retry_after_ns: rate.emission_ns(),
                            reset_after_ns: rate.emission_ns(),
                            ..decision
                        };
                    }
                }
            }
            decisions.push(decision);
        }
        let binding = match decisions.as_slice() {
            [only] => *only,
            _ => Decision::tightest(decisions).expect("a decision has at least one check"),
        };
        if commit && binding.allowed {
            for (position, check) in checks.iter().enumerate() {
                if untracked[position] {
                    continue;
                }
                let shard = Self::find(locked, self.shard_of(check.key));
                let state = shard.map.entry(check.key).or_default();
                check.algorithm.apply(state, now, check.cost);
            }
        }
        binding
    }

    fn find<'m>(locked: &'m mut [(usize, &mut MutexGuard<'_, Shard<S>>)], index: usize) -> &'m mut Shard<S> {
        let (_, guard) = locked
            .iter_mut()
            .find(|(locked_index, _)| *locked_index == index)
            .expect("shard is locked");
        guard
    }

    /// Whether `extra` new keys fit in `shard`, sweeping idle keys out when it is time to.
    fn make_room(shard: &mut Shard<S>, extra: usize, now: u64, is_idle: impl Fn(&S) -> bool) -> bool {
        let needed = shard.map.len() + extra;
        if needed > shard.sweep_at_len {
            let full = needed > shard.cap;
            let may_sweep = !full || shard.full_swept_at.is_none_or(|at| now >= at + FULL_SWEEP_INTERVAL_NS);
            if may_sweep {
                shard.map.retain(|_, state| !is_idle(state));
                shard.full_swept_at = if full { Some(now) } else { None };
                shard.sweep_at_len = (shard.map.len() * 2).max(FIRST_SWEEP_AT).min(shard.cap);
            }
        }
        shard.map.len() + extra <= shard.cap
    }

    /// Drops every idle key now; returns how many were dropped.
    pub fn sweep<A: Algorithm<State = S>>(&self, algorithm: &A, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock();
                let before = shard.map.len();
                shard.map.retain(|_, state| !algorithm.is_idle(state, now));
                if shard.map.capacity() > 4 * shard.map.len().max(FIRST_SWEEP_AT) {
                    shard.map.shrink_to_fit();
                }
                before - shard.map.len()
            })
            .sum()
    }

    /// The standing of one limit now, changing nothing.
    pub fn inspect<A: Algorithm<State = S>>(&self, check: &Check<A>, now: u64) -> Decision {
        let shard = self.shards[self.shard_of(check.key)].lock();
        let decision = match shard.map.get(&check.key) {
            Some(state) => check.algorithm.inspect(state, now),
            None => check.algorithm.inspect(&S::default(), now),
        };
        Decision {
            index: check.index,
            ..decision
        }
    }

    /// Forgets a key; it behaves as new afterwards.
    pub fn remove(&self, key: KeyHash) {
        self.shards[self.shard_of(key)].lock().map.remove(&key);
    }

    /// Runs `change` on the state of `key` under its shard's lock and drops the key if `is_idle` says it
    /// behaves as a fresh one afterwards. An absent key is changed from a fresh state; it is kept only when
    /// `create` is set and the store has room (swept as `decide` sweeps), else `change` gets `None` if
    /// `create` is set (the store is full, counted) and a throwaway fresh state if not.
    pub fn change<R>(
        &self,
        key: KeyHash,
        now: u64,
        create: bool,
        is_idle: impl Fn(&S) -> bool,
        change: impl FnOnce(Option<&mut S>) -> R,
    ) -> R {
        let mut shard = self.shards[self.shard_of(key)].lock();
        if !shard.map.contains_key(&key) {
            if !create {
                return change(Some(&mut S::default()));
            }
            if !Self::make_room(&mut shard, 1, now, &is_idle) {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                return change(None);
            }
        }
        let state = shard.map.entry(key).or_default();
        let result = change(Some(state));
        if is_idle(state) {
            shard.map.remove(&key);
        }
        result
    }

    /// Changes a stored key's state in place, dropping it once it is fresh again.
    pub fn update(&self, key: KeyHash, change: impl FnOnce(&mut S) -> bool) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        if let Some(state) = shard.map.get_mut(&key) {
            if change(state) {
                shard.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Gcra, TokenBucket};
    use crate::rate::parse_rates;
    use std::sync::Arc;

    const SECOND: u64 = 1_000_000_000;

    fn rate(text: &str) -> Rate {
        parse_rates(text).unwrap()[0]
    }

    /// The check of `key` under `rate_text` at `cost`, as the caller's limit number `index`.
    fn check<A: Algorithm>(
        store: &MemoryStore<A::State>,
        key: &str,
        rate_text: &str,
        cost: u64,
        index: usize,
    ) -> Check<A> {
        let rate = rate(rate_text);
        Check {
            key: store.key_hash(key, rate),
            algorithm: A::new(rate),
            cost,
            index,
        }
    }

    fn hit<A: Algorithm>(store: &MemoryStore<A::State>, key: &str, rate_text: &str, now: u64) -> Decision {
        store.decide(&[check::<A>(store, key, rate_text, 1, 0)], now, true)
    }

    #[test]
    fn several_limits_commit_only_when_all_pass() {
        let store = MemoryStore::<u64>::new(1000, OnFull::Allow);
        let checks = |store: &MemoryStore<u64>| {
            vec![
                check::<Gcra>(store, "ip:1", "2/min", 1, 0),
                check::<Gcra>(store, "user:7", "5/min", 1, 1),
            ]
        };
        assert_eq!(store.decide(&checks(&store), 0, true).remaining, 1);
        let second = store.decide(&checks(&store), 0, true);
        assert!(second.allowed);
        assert_eq!(
            (second.limit, second.remaining),
            (2, 0),
            "the tighter limit is reported"
        );
        let denied = store.decide(&checks(&store), 0, true);
        assert!(!denied.allowed);
        assert_eq!(denied.limit, 2);
        assert_eq!(
            hit::<Gcra>(&store, "user:7", "5/min", 0).remaining,
            2,
            "the denial took nothing from user:7"
        );
    }

    #[test]
    fn each_check_takes_its_own_cost() {
        let store = MemoryStore::<u64>::new(1000, OnFull::Allow);
        let checks = |store: &MemoryStore<u64>| {
            vec![
                check::<Gcra>(store, "global", "10/min", 1, 0),
                check::<Gcra>(store, "export", "100/min", 60, 1),
            ]
        };
        assert_eq!(store.decide(&checks(&store), 0, true).remaining, 9);
        let refused = store.decide(&checks(&store), 0, true);
        assert!(!refused.allowed);
        assert_eq!((refused.limit, refused.remaining), (100, 40));
        assert_eq!(
            hit::<Gcra>(&store, "global", "10/min", 0).remaining,
            8,
            "the refusal took nothing from global"
        );
    }

    #[test]
    fn threads_never_over_admit() {
        let store = Arc::new(MemoryStore::<u64>::new(1000, OnFull::Allow));
        let allowed: u64 = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter(|_| hit::<Gcra>(&store, "hot", "1000/hour", SECOND).allowed)
                        .count() as u64
                })
            })
            .map(|thread| thread.join().unwrap())
            .sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn idle_keys_are_swept_and_the_cap_never_drops_a_live_key() {
        let store = MemoryStore::<u64>::new(10_000, OnFull::Allow);
        for _ in 0..5 {
            hit::<Gcra>(&store, "victim", "5/hour", 0);
        }
        assert!(!hit::<Gcra>(&store, "victim", "5/hour", 0).allowed);
        for index in 0..200_000 {
            let decision = hit::<Gcra>(&store, &format!("k{index}"), "5/hour", 0);
            assert!(decision.allowed, "OnFull::Allow lets untracked keys through");
        }
        assert!(store.len() <= 10_000);
        assert!(store.overflows() > 0);
        assert!(
            !hit::<Gcra>(&store, "victim", "5/hour", 0).allowed,
            "a live key survived the flood"
        );

        // An hour on, every key is idle: new keys find room again.
        let later = 3_600 * SECOND;
        for index in 0..50_000 {
            hit::<Gcra>(&store, &format!("n{index}"), "5/hour", later);
        }
        assert!(store.len() <= 10_000);
        let overflows = store.overflows();
        hit::<Gcra>(
            &store,
            "fresh",
            "5/hour",
            later + FULL_SWEEP_INTERVAL_NS + 3_600 * SECOND,
        );
        assert_eq!(store.overflows(), overflows);
    }

    #[test]
    fn a_full_store_can_refuse_new_keys() {
        let store = MemoryStore::<crate::algorithm::token_bucket::Bucket>::new(4, OnFull::Deny);
        for index in 0..4 {
            assert!(hit::<TokenBucket>(&store, &format!("k{index}"), "5/hour", 0).allowed);
        }
        let refused = hit::<TokenBucket>(&store, "k4", "5/hour", 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ns, 720 * SECOND);
        assert_eq!(store.len(), 4);
        assert!(
            hit::<TokenBucket>(&store, "k0", "5/hour", 0).allowed,
            "known keys still work"
        );
    }

    #[test]
    fn the_shards_share_max_keys_exactly() {
        for max_keys in [1, 3, 1_000, 2_047, 65_536, 99_999, 100_000, 1_000_003] {
            let store = MemoryStore::<u64>::new(max_keys, OnFull::Deny);
            assert_eq!(store.max_keys(), max_keys);
            let caps: Vec<usize> = store.shards.iter().map(|shard| shard.lock().cap).collect();
            assert_eq!(caps.iter().sum::<usize>(), max_keys, "{max_keys}");
            assert!(caps.iter().max().unwrap() - caps.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn the_same_key_under_two_rates_is_two_counters() {
        let store = MemoryStore::<u64>::new(100, OnFull::Allow);
        assert_ne!(store.key_hash("a", rate("1/s")), store.key_hash("a", rate("1/min")));
        assert_ne!(store.key_hash("a", rate("1/s")), store.key_hash("b", rate("1/s")));
        assert_eq!(store.key_hash("a", rate("1/s")), store.key_hash("a", rate("1/second")));
    }
}
