//! The concurrency limit on Redis. Each acquisition is a lease: an id (unique per process and call), the
//! units it holds and an expiry on the script's clock. Per key, a ZSET `…:leases` (id -> expiry in µs)
//! and a HASH `…:costs` (id -> units, `n` -> units held by all leases) under the key's hash tag, so both
//! live in one cluster slot. The script (`lua/concurrency.lua`) purges expired leases before it counts, and
//! sets both keys to expire with the last lease. One `EVALSHA` per acquire, release or peek.
//!
//! When Redis fails, acquisitions follow `on_backend_error` (allow: untracked, deny, memory: a lease in the
//! local limiter, released there). An acquisition sent but not answered is cancelled, and a whole lease's
//! release that failed is sent again, by a task that tries until Redis answers or the lease would have
//! expired (`cancel_later`). A partial release that failed is dropped: its lease frees its units when it
//! expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{RedisError, Script};

use super::{
    tagged_key, Admit, BackendError, LimiterOptions, OnBackendError, ProbeGuard, RedisStore, Unanswered,
    NANOS_PER_MICRO,
};
use crate::algorithm::Concurrency;
use crate::decision::Decision;
use crate::limiter::{CostExceedsLimit, LeaseLimiter};

const ACQUIRE: u8 = 1;
const PEEK: u8 = 2;
const RELEASE: u8 = 3;
const CANCEL: u8 = 4;
/// The first wait before a cancel is tried again; it doubles up to `CANCEL_MAX_WAIT`.
const CANCEL_FIRST_WAIT: Duration = Duration::from_millis(50);
const CANCEL_MAX_WAIT: Duration = Duration::from_secs(1);

/// What gives an acquisition back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseToken {
    /// A lease in Redis, by id.
    Redis(String),
    /// A lease in the local memory limiter: memory storage, or `on_backend_error="memory"` during an outage.
    Memory(u64),
    /// Let through by `on_backend_error="allow"` during an outage: nothing is held.
    Untracked,
}

/// An acquisition's (or a peek's) decision, its time (Redis time, or the local clock on fallback), and
/// what releases it when allowed.
#[derive(Clone, Debug)]
pub struct Taken {
    pub decision: Decision,
    pub now_ns: u64,
    pub token: Option<LeaseToken>,
}

struct Reply {
    now_ns: u64,
    allowed: bool,
    in_flight: u64,
    released: u64,
}

struct Held {
    token: LeaseToken,
    units: u64,
    expires_ns: u64,
}

/// Leases taken by a limiter's `acquire(key, cost)`, which names no lease: its `release(key, cost)` gives
/// back these, newest first, and never a lease taken otherwise or by another process. Leases past their
/// expiry are forgotten.
#[derive(Default)]
pub struct OwnLeases {
    held: Mutex<HashMap<String, Vec<Held>>>,
}

impl OwnLeases {
    /// Remembers a lease of `key` for `take`. At most `max_keys` keys are held: when full of live leases a
    /// new key's lease is not remembered, and expires instead of being given back by `release(key, cost)`.
    pub fn remember(&self, key: &str, token: LeaseToken, units: u64, expires_ns: u64, now_ns: u64, max_keys: usize) {
        let mut held = self.held.lock();
        if held.len() >= max_keys && !held.contains_key(key) {
            held.retain(|_, leases| {
                leases.retain(|lease| lease.expires_ns > now_ns);
                !leases.is_empty()
            });
            if held.len() >= max_keys {
                return;
            }
        }
        held.entry(key.to_owned()).or_default().push(Held {
            token,
            units,
            expires_ns,
        });
    }

    /// Takes up to `units` from `key`'s newest live leases: the (lease, units to give back) pairs.
    pub fn take(&self, key: &str, units: u64, now_ns: u64) -> Vec<(LeaseToken, u64)> {
        let mut held = self.held.lock();
        let Some(leases) = held.get_mut(key) else {
            return Vec::new();
        };
        leases.retain(|lease| lease.expires_ns > now_ns);
        let mut taken = Vec::new();
        let mut left = units;
        while left > 0 {
            let Some(newest) = leases.last_mut() else {
                break;
            };
            let part = left.min(newest.units);
            taken.push((newest.token.clone(), part));
            newest.units -= part;
            left -= part;
            if newest.units == 0 {
                leases.pop();
            }
        }
        if leases.is_empty() {
            held.remove(key);
        }
        taken
    }

    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lease ids: a random prefix and a count. A process forked from the one that made the limiter (gunicorn
/// `--preload`) draws a prefix of its own on its first lease: with the inherited prefix and count, every
/// worker would name its leases as its siblings do, and one worker's release would free another's lease.
struct LeaseIds {
    pid: u32,
    prefix: String,
    next: u64,
}

impl LeaseIds {
    fn new() -> LeaseIds {
        let mut random = [0_u8; 8];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        LeaseIds {
            pid: crate::process::id(),
            prefix: format!("{:016x}", u64::from_le_bytes(random)),
            next: 1,
        }
    }

    fn next(&mut self) -> String {
        if self.pid != crate::process::id() {
            *self = LeaseIds::new();
        }
        let id = format!("{}{:x}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

/// A concurrency limiter on Redis (see the module docs), with the local limiter as its fallback.
pub struct RedisConcurrency {
    store: Arc<RedisStore>,
    script: Script,
    options: LimiterOptions,
    fallback: Arc<LeaseLimiter>,
    algorithm: Concurrency,
    lease_us: u64,
    ids: Mutex<LeaseIds>,
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl RedisConcurrency {
    /// `fallback` sets the limit, the wait suggested when full and the lease duration, which must be set.
    pub fn new(store: Arc<RedisStore>, options: LimiterOptions, fallback: Arc<LeaseLimiter>) -> Self {
        let lease_ns = fallback.lease_ns().expect("leases on Redis expire");
        RedisConcurrency {
            store,
            script: Script::new(
                &[
                    include_str!("../lua/prelude.lua"),
                    include_str!("../lua/concurrency.lua"),
                ]
                .concat(),
            ),
            options,
            algorithm: fallback.algorithm(),
            fallback,
            lease_us: (lease_ns / NANOS_PER_MICRO).max(1),
            ids: Mutex::new(LeaseIds::new()),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    pub fn fallback(&self) -> &Arc<LeaseLimiter> {
        &self.fallback
    }

    /// (allowed, denied) acquisitions, fallbacks included.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        )
    }

    /// The two Redis keys of `key`: `{prefix}concurrency:{{key}}:{limit}:leases` and `…:costs`.
    pub fn key_names(&self, key: &str) -> [String; 2] {
        let base = format!(
            "{}:{}",
            tagged_key(&self.options.key_prefix, "concurrency", key),
            self.algorithm.slots()
        );
        [format!("{base}:leases"), format!("{base}:costs")]
    }

    async fn call(&self, key: &str, units: u64, mode: u8, id: &str) -> Result<Reply, Unanswered> {
        let refused = || Unanswered {
            error: BackendError::Breaker,
            sent: false,
        };
        let names = self.key_names(key);
        let zone = self.store.zone(&names[0]);
        let admit = self.store.admit(zone);
        if matches!(admit, Admit::No) {
            return Err(refused());
        }
        let _probe = ProbeGuard {
            store: &self.store,
            zone,
            armed: matches!(admit, Admit::Probe),
        };
        // A cancel in the background never probes (the guard hands the probe back): a request does, and its
        // caller waits on it anyway.
        if mode == CANCEL && matches!(admit, Admit::Probe) {
            return Err(refused());
        }
        let now_arg = if self.options.use_local_clock {
            (self.fallback.now_ns() / NANOS_PER_MICRO).to_string()
        } else {
            String::new()
        };
        let args = [
            now_arg,
            units.to_string(),
            mode.to_string(),
            self.algorithm.slots().to_string(),
            self.lease_us.to_string(),
            id.to_owned(),
        ];
        let result = self
            .store
            .eval_sent(&self.script, &names, &args, self.store.deadline())
            .await;
        let reply = match result {
            Ok(reply) if reply.len() == 4 => reply,
            Ok(_) => {
                return Err(Unanswered {
                    error: BackendError::Redis(RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "the concurrency script answered with the wrong number of values",
                    ))),
                    sent: true,
                })
            }
            Err(error) => return Err(error),
        };
        self.store.succeeded(zone);
        let whole = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(Reply {
            now_ns: whole(reply[0]).saturating_mul(NANOS_PER_MICRO),
            allowed: reply[1] == 1,
            in_flight: whole(reply[2]),
            released: whole(reply[3]),
        })
    }

    fn failed(&self, key: &str, error: &BackendError) {
        if !matches!(error, BackendError::Breaker) {
            let zone = self.store.zone(&self.key_names(key)[0]);
            self.store.failed(zone, error, self.options.on_backend_error);
        }
    }

    fn count(&self, allowed: bool) {
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `cost` units of `key` under a new lease if they are free. A Redis failure is decided by the
    /// policy, never returned; only a cost larger than the limit is.
    pub async fn acquire(self: &Arc<Self>, key: &str, cost: u64) -> Result<Taken, CostExceedsLimit> {
        self.fallback.check_cost(cost)?;
        let id = self.ids.lock().next();
        let taken = match self.call(key, cost, ACQUIRE, &id).await {
            Ok(reply) => {
                let decision = Decision {
                    allowed: reply.allowed,
                    ..self.algorithm.check(reply.in_flight, cost)
                };
                Taken {
                    decision,
                    now_ns: reply.now_ns,
                    token: reply.allowed.then_some(LeaseToken::Redis(id)),
                }
            }
            Err(Unanswered { error, sent }) => {
                self.failed(key, &error);
                // Sent but unanswered (a timeout, a dropped connection): Redis may run it yet, or have run it.
                // (Refused by the breaker, or no connection made in time: it never left.)
                if sent {
                    self.cancel_later(key, id);
                }
                self.store.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.fall_back(key, cost, true)
            }
        };
        self.count(taken.decision.allowed);
        Ok(taken)
    }

    /// Units free and in use on `key` now, and whether one more would pass.
    pub async fn peek(&self, key: &str) -> Taken {
        match self.call(key, 1, PEEK, "").await {
            Ok(reply) => Taken {
                decision: self.algorithm.inspect(reply.in_flight),
                now_ns: reply.now_ns,
                token: None,
            },
            Err(Unanswered { error, .. }) => {
                self.failed(key, &error);
                self.store.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.fall_back(key, 1, false)
            }
        }
    }

    /// Gives back up to `units` of the lease `token` on `key`; returns the units freed (0 for a lease
    /// released already, expired, untracked, or when Redis cannot be reached: the lease then expires).
    pub async fn release(self: &Arc<Self>, key: &str, token: &LeaseToken, units: u64) -> u64 {
        match token {
            LeaseToken::Redis(id) => match self.call(key, units, RELEASE, id).await {
                Ok(reply) => reply.released,
                Err(Unanswered { error, .. }) => {
                    self.failed(key, &error);
                    // A whole lease is given back once Redis answers again; a part of one could be given twice.
                    if units == u64::MAX {
                        self.cancel_later(key, id.clone());
                    }
                    0
                }
            },
            LeaseToken::Memory(id) => self.fallback.release(key, *id, units),
            LeaseToken::Untracked => 0,
        }
    }

    /// Gives back lease `id` of `key` from a task, tried until Redis answers or the lease would have expired:
    /// an acquisition or a release whose answer never came must not hold its units until then (a stalled
    /// Redis runs the commands it was sent when it resumes). A lease that was never taken is refused when its
    /// acquisition arrives later.
    fn cancel_later(self: &Arc<Self>, key: &str, id: String) {
        let (limiter, key) = (Arc::clone(self), key.to_owned());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_micros(limiter.lease_us);
            let mut wait = CANCEL_FIRST_WAIT;
            while limiter.call(&key, u64::MAX, CANCEL, &id).await.is_err() && Instant::now() < deadline {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CANCEL_MAX_WAIT);
            }
        });
    }

    fn fall_back(&self, key: &str, cost: u64, acquire: bool) -> Taken {
        let limit = self.algorithm.slots();
        let (decision, now_ns, token) = match self.options.on_backend_error {
            OnBackendError::Memory if acquire => {
                let taken = self.fallback.acquire(key, cost).expect("cost checked");
                (taken.decision, taken.now_ns, taken.lease.map(LeaseToken::Memory))
            }
            OnBackendError::Memory => {
                let (decision, now_ns) = self.fallback.peek(key);
                (decision, now_ns, None)
            }
            OnBackendError::Allow => (
                Decision {
                    allowed: true,
                    remaining: limit - if acquire { cost } else { 0 },
                    ..self.algorithm.check(0, cost)
                },
                self.fallback.now_ns(),
                acquire.then_some(LeaseToken::Untracked),
            ),
            OnBackendError::Deny => (
                Decision {
                    retry_after_ns: self.store.deny_retry_after_ns(),
                    reset_after_ns: self.store.deny_retry_after_ns(),
                    ..self.fallback.full(cost)
                },
                self.fallback.now_ns(),
                None,
            ),
        };
        Taken {
            decision,
            now_ns,
            token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_leases_give_back_the_newest_first_and_forget_expired_ones() {
        let own = OwnLeases::default();
        own.remember("k", LeaseToken::Redis("a".into()), 2, 100, 0, 10);
        own.remember("k", LeaseToken::Memory(7), 1, 200, 0, 10);
        assert_eq!(
            own.take("k", 2, 50),
            vec![(LeaseToken::Memory(7), 1), (LeaseToken::Redis("a".into()), 1)]
        );
        assert_eq!(own.take("k", 5, 50), vec![(LeaseToken::Redis("a".into()), 1)]);
        assert!(own.take("k", 1, 50).is_empty(), "a second release finds nothing");
        assert!(own.is_empty());

        own.remember("k", LeaseToken::Redis("old".into()), 1, 100, 0, 10);
        assert!(own.take("k", 1, 100).is_empty(), "an expired lease is not given back");
        own.remember("x", LeaseToken::Untracked, 1, 100, 0, 1);
        own.remember("y", LeaseToken::Untracked, 1, 300, 150, 1);
        assert_eq!(own.len(), 1, "a full table drops expired leases first");
        own.remember("z", LeaseToken::Untracked, 1, 300, 150, 1);
        assert!(
            own.take("z", 1, 150).is_empty(),
            "and beyond max_keys live keys remembers nothing"
        );
        assert_eq!(own.take("y", 1, 150), vec![(LeaseToken::Untracked, 1)]);
    }

    #[test]
    fn keys_share_the_hash_tag_and_name_the_limit() {
        let store = RedisStore::shared(
            "redis://127.0.0.1:1",
            &super::super::ConnectOptions::default(),
            Arc::new(|_, _| {}),
        )
        .unwrap();
        let fallback = Arc::new(LeaseLimiter::new(
            Concurrency::new(5, 1_000_000_000),
            Some(60_000_000_000),
            crate::clock::Clock::monotonic(),
            10,
        ));
        let options = LimiterOptions {
            key_prefix: "p:".to_owned(),
            on_backend_error: OnBackendError::Allow,
            deny_cache_size: 0,
            use_local_clock: false,
        };
        let limiter = RedisConcurrency::new(store, options, fallback);
        let [leases, costs] = limiter.key_names("GET /users/{id}");
        assert_eq!(leases, "p:concurrency:{GET /users/%7Bid%7D}:5:leases");
        assert_eq!(costs, "p:concurrency:{GET /users/%7Bid%7D}:5:costs");
        assert_eq!(super::super::cluster_slot(&leases), super::super::cluster_slot(&costs));
    }
}
