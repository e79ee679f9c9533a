//! `ConcurrencyLimiter`, its `Lease`s and `Slot`s, in memory and on Redis.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::bridge::{self, Done};
use super::errors::{Error, Result};
use super::remote::{self, ready, RedisSettings};
use super::runtime::runtime;
use super::{make_clock, nanos, positive, Cost, Decision, FakeClock};
use crate::algorithm::Concurrency;
use crate::decision;
use crate::limiter::{Capacity, LeaseLimiter};
use crate::rate::MAX_PERIOD_NS;
use crate::store::redis::concurrency::{LeaseToken, OwnLeases, RedisConcurrency, Taken};

const DEFAULT_REDIS_LEASE_MS: u64 = 60_000;

/// Where the units are held.
#[derive(Clone)]
enum Backend {
    Memory(Arc<LeaseLimiter>),
    Redis(Arc<RedisConcurrency>),
}

fn block_on<F>(py: Python<'_>, work: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    py.detach(|| runtime().block_on(work))
}

impl Backend {
    fn taken_in_memory(limiter: &LeaseLimiter, key: &str, cost: u64) -> Result<Taken> {
        let acquired = limiter.acquire(key, cost)?;
        Ok(Taken {
            decision: acquired.decision,
            now_ns: acquired.now_ns,
            token: acquired.lease.map(LeaseToken::Memory),
        })
    }

    fn acquire(&self, py: Python<'_>, key: &str, cost: u64) -> Result<Taken> {
        match self {
            Backend::Memory(limiter) => Self::taken_in_memory(limiter, key, cost),
            Backend::Redis(remote) => Ok(block_on(py, remote.acquire(key, cost))?),
        }
    }

    async fn acquire_later(&self, key: &str, cost: u64) -> Result<Taken> {
        match self {
            Backend::Memory(limiter) => Self::taken_in_memory(limiter, key, cost),
            Backend::Redis(remote) => Ok(remote.acquire(key, cost).await?),
        }
    }

    fn release(&self, py: Python<'_>, key: &str, token: &LeaseToken, units: u64) {
        match (self, token) {
            (Backend::Memory(limiter), LeaseToken::Memory(id)) => {
                limiter.release(key, *id, units);
            }
            (Backend::Memory(_), _) => {}
            (Backend::Redis(_), token) => block_on(py, self.release_later(key, token, units)),
        }
    }

    async fn release_later(&self, key: &str, token: &LeaseToken, units: u64) {
        match (self, token) {
            (Backend::Memory(limiter), LeaseToken::Memory(id)) => {
                limiter.release(key, *id, units);
            }
            (Backend::Memory(_), _) => {}
            (Backend::Redis(remote), token) => {
                remote.release(key, token, units).await;
            }
        }
    }
}

/// One acquisition's lease: taken or not (`allowed`), released once.
pub struct Held {
    backend: Backend,
    key: String,
    cost: u64,
    decision: decision::Decision,
    now_ns: u64,
    /// `None` once released (or never allowed).
    token: Mutex<Option<LeaseToken>>,
    /// The process that acquired it: a process forked meanwhile holds a copy, not the slots.
    pid: u32,
}

impl Held {
    fn new(backend: Backend, key: String, cost: u64, taken: Taken) -> Arc<Held> {
        Arc::new(Held {
            backend,
            key,
            cost,
            decision: taken.decision,
            now_ns: taken.now_ns,
            token: Mutex::new(taken.token),
            pid: crate::process::id(),
        })
    }

    fn release(&self, py: Python<'_>) {
        if let Some(token) = self.token.lock().take() {
            self.backend.release(py, &self.key, &token, u64::MAX);
        }
    }

    fn release_later<'py>(self: &Arc<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Backend::Memory(_) = self.backend {
            self.release(py);
            return ready(py, py.None().into_bound(py));
        }
        // The token is taken in the task: if there is no event loop to await on, the lease stays held.
        let held = Arc::clone(self);
        bridge::spawn(py, async move {
            let token = held.token.lock().take();
            if let Some(token) = token {
                held.backend.release_later(&held.key, &token, u64::MAX).await;
            }
            Done::Unit
        })
    }
}

/// A lease nobody can release any more (its `Lease` collected, its await cancelled, its `Slot` dropped while
/// entered) gives its slots back rather than holding them until it expires; on Redis from a tokio task,
/// without the GIL, and only in the process that acquired it.
impl Drop for Held {
    fn drop(&mut self) {
        let Some(token) = self.token.get_mut().take() else {
            return;
        };
        match &self.backend {
            Backend::Memory(limiter) => {
                if let LeaseToken::Memory(id) = token {
                    limiter.release(&self.key, id, u64::MAX);
                }
            }
            // The copy a forked process inherited: the slots are its parent's, to release or to keep.
            Backend::Redis(_) if self.pid != crate::process::id() => {}
            Backend::Redis(remote) => {
                let (remote, key) = (Arc::clone(remote), std::mem::take(&mut self.key));
                runtime().spawn(async move {
                    remote.release(&key, &token, u64::MAX).await;
                });
            }
        }
    }
}

/// The slots one acquisition holds (when `allowed`) until `release()`, the end of a `with` block, the
/// lease's expiry, or the `Lease` being garbage-collected.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct Lease {
    held: Arc<Held>,
}

impl Lease {
    pub(super) fn new(held: Arc<Held>) -> Self {
        Lease { held }
    }
}

#[pymethods]
impl Lease {
    #[getter]
    fn allowed(&self) -> bool {
        self.held.decision.allowed
    }

    #[getter]
    fn decision(&self) -> Decision {
        Decision::from_core(self.held.decision, self.held.now_ns)
    }

    #[getter]
    fn key(&self) -> &str {
        &self.held.key
    }

    #[getter]
    fn cost(&self) -> u64 {
        self.held.cost
    }

    /// Whether the lease holds nothing any more: released, or never allowed.
    #[getter]
    fn released(&self) -> bool {
        self.held.token.lock().is_none()
    }

    /// Gives the slots back; a second call, or a call on a denied lease, does nothing.
    fn release(&self, py: Python<'_>) {
        self.held.release(py);
    }

    /// `release` as an awaitable.
    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.held.release_later(py)
    }

    fn __bool__(&self) -> bool {
        self.held.decision.allowed
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) {
        self.held.release(py);
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready(slf.py(), slf.clone().into_any())
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _kind: Option<&Bound<'py, PyAny>>,
        _value: Option<&Bound<'py, PyAny>>,
        _traceback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.held.release_later(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Lease(key={:?}, cost={}, allowed={}, released={})",
            self.held.key,
            self.held.cost,
            if self.allowed() { "True" } else { "False" },
            if self.released() { "True" } else { "False" },
        )
    }
}

/// `with` / `async with`: takes the slots on entry (or raises `ConcurrencyLimitExceeded`) and gives them
/// back on exit.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct Slot {
    backend: Backend,
    key: String,
    cost: u64,
    entered: Arc<Mutex<Entry>>,
}

/// Where a `Slot` is in its `with` block.
enum Entry {
    Free,
    /// Between the claim and the acquisition's answer, which on Redis (and with the GIL released) other
    /// threads and tasks can see: a second entry then is refused, rather than replacing this one's lease.
    Entering,
    Held(Arc<Held>),
}

impl Slot {
    fn claim(&self) -> PyResult<()> {
        let mut entry = self.entered.lock();
        if !matches!(*entry, Entry::Free) {
            return Err(PyRuntimeError::new_err(
                "this slot is held already: use one limiter.slot(...) per with block",
            ));
        }
        *entry = Entry::Entering;
        Ok(())
    }

    fn take(&self) -> Option<Arc<Held>> {
        let mut entry = self.entered.lock();
        match std::mem::replace(&mut *entry, Entry::Free) {
            Entry::Held(held) => Some(held),
            other => {
                *entry = other;
                None
            }
        }
    }
}

/// The end of an entry: the lease it holds, or the refusal (`Exceeded`, or the acquisition's error).
fn entered(slot: &Mutex<Entry>, taken: Result<Arc<Held>>) -> Result<Lease> {
    let mut entry = slot.lock();
    let held = match taken {
        Ok(held) if held.decision.allowed => held,
        Ok(held) => {
            *entry = Entry::Free;
            return Err(Error::Exceeded(held.decision, held.now_ns));
        }
        Err(error) => {
            *entry = Entry::Free;
            return Err(error);
        }
    };
    *entry = Entry::Held(Arc::clone(&held));
    Ok(Lease::new(held))
}

#[pymethods]
impl Slot {
    fn __enter__(&self, py: Python<'_>) -> PyResult<Lease> {
        self.claim()?;
        let taken = self.backend.acquire(py, &self.key, self.cost);
        let held = taken.map(|taken| Held::new(self.backend.clone(), self.key.clone(), self.cost, taken));
        Ok(entered(&self.entered, held)?)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) {
        if let Some(held) = self.take() {
            held.release(py);
        }
    }

    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.claim()?;
        if let Backend::Memory(_) = self.backend {
            let taken = self.backend.acquire(py, &self.key, self.cost);
            let held = taken.map(|taken| Held::new(self.backend.clone(), self.key.clone(), self.cost, taken));
            let lease = entered(&self.entered, held)?;
            return ready(py, Bound::new(py, lease)?.into_any());
        }
        let (backend, key, cost, slot) = (
            self.backend.clone(),
            self.key.clone(),
            self.cost,
            Arc::clone(&self.entered),
        );
        let call = bridge::spawn(py, async move {
            let taken = backend.acquire_later(&key, cost).await;
            let held = taken.map(|taken| Held::new(backend, key, cost, taken));
            match entered(&slot, held) {
                Ok(lease) => Done::Lease(lease),
                Err(error) => Done::Failed(error),
            }
        });
        if call.is_err() {
            *self.entered.lock() = Entry::Free;
        }
        call
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _kind: Option<&Bound<'py, PyAny>>,
        _value: Option<&Bound<'py, PyAny>>,
        _traceback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.take() {
            Some(held) => held.release_later(py),
            None => ready(py, py.None().into_bound(py)),
        }
    }

    fn __repr__(&self) -> String {
        format!("Slot(key={:?}, cost={})", self.key, self.cost)
    }
}

/// At most `limit` units in flight per key, in memory or on Redis.
#[pyclass(module = "ferrolimit._core", frozen, subclass)]
pub struct ConcurrencyLimiter {
    /// The memory store; with Redis, the fallback of `on_backend_error="memory"`.
    local: Arc<LeaseLimiter>,
    remote: Option<Arc<RedisConcurrency>>,
    /// Leases taken by `acquire`, for `release`.
    own: Arc<OwnLeases>,
}

impl ConcurrencyLimiter {
    /// The units of `cost`; a cost too large for any number of slots is refused as one above the limit.
    fn units(&self, cost: Cost) -> Result<u64> {
        cost.units(|| Capacity::Slots(self.local.slots()))
    }

    fn backend(&self) -> Backend {
        match &self.remote {
            Some(remote) => Backend::Redis(Arc::clone(remote)),
            None => Backend::Memory(Arc::clone(&self.local)),
        }
    }
}

/// Remembers a lease taken by `acquire`, so that `release(key, cost)` can give it back.
fn remember(own: &OwnLeases, local: &LeaseLimiter, key: &str, cost: u64, taken: &Taken) {
    if let Some(token) = &taken.token {
        let now_ns = local.now_ns();
        let expires_ns = now_ns.saturating_add(local.lease_ns().unwrap_or(u64::MAX));
        own.remember(key, token.clone(), cost, expires_ns, now_ns, local.max_keys());
    }
}

#[pymethods]
impl ConcurrencyLimiter {
    #[new]
    #[pyo3(signature = (
        limit, storage = "memory://", *, retry_after = 1.0, lease_ms = None, clock = None, max_keys = 1_000_000,
        key_prefix = "ferrolimit:", connect_timeout_ms = 1_000, timeout_ms = 250, on_backend_error = "allow",
        breaker_failures = 3, breaker_cooldown_ms = 1_000,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        limit: i64,
        storage: &str,
        retry_after: f64,
        lease_ms: Option<i64>,
        clock: Option<&Bound<'_, FakeClock>>,
        max_keys: i64,
        key_prefix: &str,
        connect_timeout_ms: i64,
        timeout_ms: i64,
        on_backend_error: &str,
        breaker_failures: i64,
        breaker_cooldown_ms: i64,
    ) -> PyResult<Self> {
        let limit = positive(limit, "limit")?;
        let retry_after_ns = nanos(retry_after, "retry_after")
            .ok()
            .filter(|&retry_after_ns| (1..=MAX_PERIOD_NS).contains(&retry_after_ns))
            .ok_or_else(|| {
                Error::Value(format!(
                    "retry_after must be a number of seconds above 0 and at most ten years (the wait suggested when a \
                     key's slots are all taken), got {retry_after}"
                ))
            })?;
        let max_keys = positive(max_keys, "max_keys")? as usize;
        let lease_ms = lease_ms.map(|lease_ms| positive(lease_ms, "lease_ms")).transpose()?;
        let settings = RedisSettings {
            key_prefix,
            connect_timeout_ms,
            timeout_ms,
            on_backend_error,
            breaker_failures,
            breaker_cooldown_ms,
            deny_cache_size: 0,
        };
        let opened = remote::open_store(storage, &settings, clock.is_some())?;
        let lease_ms = if opened.is_some() {
            Some(lease_ms.unwrap_or(DEFAULT_REDIS_LEASE_MS))
        } else {
            lease_ms
        };
        let lease_ns = lease_ms.map(|lease_ms| lease_ms.saturating_mul(1_000_000));
        let local = Arc::new(LeaseLimiter::new(
            Concurrency::new(limit, retry_after_ns),
            lease_ns,
            make_clock(clock),
            max_keys,
        ));
        let remote = opened.map(|(store, options)| Arc::new(RedisConcurrency::new(store, options, Arc::clone(&local))));
        Ok(ConcurrencyLimiter {
            local,
            remote,
            own: Arc::new(OwnLeases::default()),
        })
    }

    /// Takes `cost` slots for `key` if they are free. Give them back with `release`.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn acquire(&self, py: Python<'_>, key: &str, cost: Cost) -> PyResult<Decision> {
        let cost = self.units(cost)?;
        let taken = self.backend().acquire(py, key, cost)?;
        remember(&self.own, &self.local, key, cost, &taken);
        Ok(Decision::from_core(taken.decision, taken.now_ns))
    }

    /// `acquire` as an awaitable.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn acquire_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        let Some(remote) = &self.remote else {
            let decision = self.acquire(py, &key, cost)?;
            return ready(py, Bound::new(py, decision)?.into_any());
        };
        let cost = self.units(cost)?;
        let (remote, own) = (Arc::clone(remote), Arc::clone(&self.own));
        bridge::spawn(py, async move {
            match remote.acquire(&key, cost).await {
                Ok(taken) => {
                    remember(&own, remote.fallback(), &key, cost, &taken);
                    Done::Decision(Decision::from_core(taken.decision, taken.now_ns))
                }
                Err(error) => Done::Failed(Error::from(error)),
            }
        })
    }

    /// Gives back `cost` slots of `key` taken by `acquire`.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn release(&self, py: Python<'_>, key: &str, cost: Cost) {
        let cost = cost.units_at_most();
        let backend = self.backend();
        for (token, units) in self.own.take(key, cost, self.local.now_ns()) {
            backend.release(py, key, &token, units);
        }
    }

    /// `release` as an awaitable.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn release_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        if self.remote.is_none() {
            self.release(py, &key, cost);
            return ready(py, py.None().into_bound(py));
        }
        let cost = cost.units_at_most();
        let (now_ns, own, backend) = (self.local.now_ns(), Arc::clone(&self.own), self.backend());
        bridge::spawn(py, async move {
            let taken = own.take(&key, cost, now_ns);
            for (token, units) in taken {
                backend.release_later(&key, &token, units).await;
            }
            Done::Unit
        })
    }

    /// Takes `cost` slots for `key` if they are free, as a `Lease` that gives back exactly these slots.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn acquire_lease(&self, py: Python<'_>, key: String, cost: Cost) -> PyResult<Lease> {
        let cost = self.units(cost)?;
        let backend = self.backend();
        let taken = backend.acquire(py, &key, cost)?;
        Ok(Lease::new(Held::new(backend, key, cost, taken)))
    }

    /// `acquire_lease` as an awaitable.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn acquire_lease_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        if self.remote.is_none() {
            let lease = self.acquire_lease(py, key, cost)?;
            return ready(py, Bound::new(py, lease)?.into_any());
        }
        let cost = self.units(cost)?;
        let backend = self.backend();
        bridge::spawn(py, async move {
            match backend.acquire_later(&key, cost).await {
                Ok(taken) => Done::Lease(Lease::new(Held::new(backend, key, cost, taken))),
                Err(error) => Done::Failed(error),
            }
        })
    }

    /// A context manager (`with` and `async with`) holding `cost` slots of `key` for its block.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn slot(&self, key: String, cost: Cost) -> PyResult<Slot> {
        let cost = self.units(cost)?;
        self.local.check_cost(cost).map_err(Error::from)?;
        Ok(Slot {
            backend: self.backend(),
            key,
            cost,
            entered: Arc::new(Mutex::new(Entry::Free)),
        })
    }

    /// Slots in use and free for `key` now, as a Decision.
    fn peek(&self, py: Python<'_>, key: &str) -> Decision {
        match &self.remote {
            None => {
                let (decision, now_ns) = self.local.peek(key);
                Decision::from_core(decision, now_ns)
            }
            Some(remote) => {
                let taken = block_on(py, remote.peek(key));
                Decision::from_core(taken.decision, taken.now_ns)
            }
        }
    }

    /// `peek` as an awaitable.
    fn peek_async<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let Some(remote) = &self.remote else {
            return ready(py, Bound::new(py, self.peek(py, &key))?.into_any());
        };
        let remote = Arc::clone(remote);
        bridge::spawn(py, async move {
            let taken = remote.peek(&key).await;
            Done::Decision(Decision::from_core(taken.decision, taken.now_ns))
        })
    }

    /// Counts since creation; on Redis also the store's counts, as `Limiter.stats()`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (allowed, denied, overflowed) = self.local.counts();
        let stats = PyDict::new(py);
        stats.set_item("allowed", allowed)?;
        stats.set_item("denied", denied)?;
        stats.set_item("store_full", overflowed)?;
        stats.set_item("keys", self.local.len())?;
        if let Some(remote) = &self.remote {
            let (allowed, denied) = remote.counts();
            stats.set_item("allowed", allowed)?;
            stats.set_item("denied", denied)?;
            remote::add_store_stats(remote.store(), &stats)?;
        }
        Ok(stats)
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.local.slots()
    }

    /// Milliseconds a lease holds its slots unless released; `None` when held until released.
    #[getter]
    fn lease_ms(&self) -> Option<u64> {
        self.local.lease_ns().map(|lease_ns| lease_ns / 1_000_000)
    }

    #[getter]
    fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Keys held in this process's memory store (with Redis: the fallback's).
    fn __len__(&self) -> usize {
        self.local.len()
    }

    fn __repr__(&self) -> String {
        format!("ConcurrencyLimiter({})", self.limit())
    }
}
