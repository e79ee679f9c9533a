//! `Limiter` on Redis: construction from a storage URL, sync calls that release the GIL while they wait,
//! and the `*_async` methods, which return coroutines (a `Call` on Redis, an already-finished `Ready` in
//! memory).

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyTuple};

use super::bridge::{self, Done};
use super::errors::{Error, Result};
use super::runtime::runtime;
use super::{positive, Cost, Decision, Limiter};
use crate::limiter::{AlgorithmKind, AnyLimiter, Capacity, CostExceedsLimit, CostedLimit};
use crate::rate::Rate;
use crate::store::redis::{ConnectOptions, LimiterOptions, LogFn, Mode, OnBackendError, RedisLimiter, RedisStore};

/// Whether `storage` names Redis (`true`) or memory (`false`); any other scheme is refused.
pub(super) fn is_redis_url(storage: &str) -> Result<bool> {
    let scheme = storage
        .split_once("://")
        .map_or(storage, |(scheme, _)| scheme)
        .to_ascii_lowercase();
    match scheme.as_str() {
        "memory" => Ok(false),
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+unix" | "unix" => Ok(true),
        _ => Err(Error::Value(format!(
            "unknown storage {storage:?}; expected 'memory://' or a Redis URL such as 'redis://localhost:6379/0', \
             'rediss://host:6380', 'redis+cluster://h1:7000,h2:7000' or 'redis+unix:///run/redis.sock'"
        ))),
    }
}

/// The keyword arguments of `Limiter` that configure Redis.
pub(super) struct RedisSettings<'a> {
    pub key_prefix: &'a str,
    pub connect_timeout_ms: i64,
    pub timeout_ms: i64,
    pub on_backend_error: &'a str,
    pub breaker_failures: i64,
    pub breaker_cooldown_ms: i64,
    pub deny_cache_size: i64,
}

fn millis(value: i64, what: &str) -> Result<Duration> {
    Ok(Duration::from_millis(positive(value, what)?))
}

/// Lines go to the `ferrolimit` logger: warnings when Redis fails, info when it answers again. None once the
/// interpreter shuts down (a lease's last release failing as the process exits, say): there is no logger then.
fn python_log() -> LogFn {
    Arc::new(|warning, message| {
        Python::try_attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", ("ferrolimit",)))
                .and_then(|logger| logger.call_method1(if warning { "warning" } else { "info" }, (message,)));
            if let Err(error) = logged {
                error.write_unraisable(py, None);
            }
        });
    })
}

/// Validates the settings (always, so a typo fails even with memory storage) and, when `storage` is a Redis
/// URL, opens (or shares) its store.
pub(super) fn open_store(
    storage: &str,
    settings: &RedisSettings<'_>,
    use_local_clock: bool,
) -> Result<Option<(Arc<RedisStore>, LimiterOptions)>> {
    let on_backend_error = OnBackendError::parse(settings.on_backend_error).ok_or_else(|| {
        Error::Value(format!(
            "on_backend_error must be 'allow', 'deny' or 'memory', got {:?}",
            settings.on_backend_error
        ))
    })?;
    let connect = ConnectOptions {
        connect_timeout: millis(settings.connect_timeout_ms, "connect_timeout_ms")?,
        timeout: millis(settings.timeout_ms, "timeout_ms")?,
        breaker_failures: u32::try_from(positive(settings.breaker_failures, "breaker_failures")?).unwrap_or(u32::MAX),
        breaker_cooldown: millis(settings.breaker_cooldown_ms, "breaker_cooldown_ms")?,
    };
    let deny_cache_size = usize::try_from(settings.deny_cache_size).map_err(|_| {
        Error::Value(format!(
            "deny_cache_size must be 0 or more, got {}",
            settings.deny_cache_size
        ))
    })?;
    if !is_redis_url(storage)? {
        return Ok(None);
    }
    let store = RedisStore::shared(storage, &connect, python_log()).map_err(|error| Error::Value(error.to_string()))?;
    if store.is_cluster() && crate::store::redis::has_empty_hash_tag(settings.key_prefix) {
        return Err(Error::Value(format!(
            "key_prefix {:?} opens an empty hash tag \"{{}}\", which Redis Cluster reads as no tag at all: the keys of \
             one decision would land in different slots. Name the tag (\"{{myapp}}:\", every key in one slot) or \
             leave braces out",
            settings.key_prefix
        )));
    }
    let options = LimiterOptions {
        key_prefix: settings.key_prefix.to_owned(),
        on_backend_error,
        deny_cache_size,
        use_local_clock,
    };
    Ok(Some((store, options)))
}

/// Validates the settings (always, so a typo fails even with memory storage) and opens the Redis limiter
/// when `storage` is a Redis URL.
pub(super) fn open(
    storage: &str,
    kind: AlgorithmKind,
    settings: &RedisSettings<'_>,
    fallback: &Arc<AnyLimiter>,
    use_local_clock: bool,
) -> Result<Option<Arc<RedisLimiter>>> {
    Ok(open_store(storage, settings, use_local_clock)?
        .map(|(store, options)| Arc::new(RedisLimiter::new(store, kind, options, Arc::clone(fallback)))))
}

/// The limits of one call: each key with its rates and the units the call takes from them.
pub(super) type Limits = Vec<(String, Vec<Rate>, u64)>;

pub(super) fn borrowed(limits: &Limits) -> Vec<CostedLimit<'_>> {
    limits
        .iter()
        .map(|(key, rates, cost)| (key.as_str(), rates.as_slice(), *cost))
        .collect()
}

/// Decides on Redis, releasing the GIL while waiting.
pub(super) fn decide(py: Python<'_>, remote: &Arc<RedisLimiter>, limits: &Limits, mode: Mode) -> PyResult<Decision> {
    let outcome = py.detach(|| runtime().block_on(remote.decide(&borrowed(limits), mode)));
    let outcome = outcome.map_err(Error::from)?;
    Ok(Decision::from_core(outcome.decision, outcome.now_ns))
}

fn decide_later<'py>(
    py: Python<'py>,
    remote: &Arc<RedisLimiter>,
    limits: Limits,
    mode: Mode,
    as_bool: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let remote = Arc::clone(remote);
    bridge::spawn(py, async move {
        match remote.decide(&borrowed(&limits), mode).await {
            Ok(outcome) if as_bool => Done::Bool(outcome.decision.allowed),
            Ok(outcome) => Done::Decision(Decision::from_core(outcome.decision, outcome.now_ns)),
            Err(error) => Done::Failed(Error::from(error)),
        }
    })
}

pub(super) fn reset(py: Python<'_>, remote: &Arc<RedisLimiter>, key: &str, rates: &[Rate]) {
    py.detach(|| runtime().block_on(remote.reset(key, rates)));
}

/// Adds the Redis counts to `stats()`; `allowed` and `denied` count every decision, fallbacks included.
pub(super) fn add_stats(remote: &RedisLimiter, stats: &Bound<'_, PyDict>) -> PyResult<()> {
    let (allowed, denied) = remote.counts();
    stats.set_item("allowed", allowed)?;
    stats.set_item("denied", denied)?;
    add_store_stats(remote.store(), stats)
}

/// The counts of a Redis store, shared by the limiters on it.
pub(super) fn add_store_stats(store: &RedisStore, stats: &Bound<'_, PyDict>) -> PyResult<()> {
    let counts = store.counts();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    stats.set_item("redis_calls", load(&counts.redis_calls))?;
    stats.set_item("backend_errors", load(&counts.backend_errors))?;
    stats.set_item("timeouts", load(&counts.timeouts))?;
    stats.set_item("incidents", load(&counts.incidents))?;
    stats.set_item("fallbacks", load(&counts.fallbacks))?;
    stats.set_item("deny_cache_hits", load(&counts.deny_cache_hits))?;
    stats.set_item("breaker_open", u64::from(store.breaker_open()))?;
    Ok(())
}

/// An awaitable whose result is already known: `await` returns it without a trip through the event loop. A
/// coroutine to asyncio, as `Call` is.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct Ready {
    value: Py<PyAny>,
    /// Whether anyone awaited it (or closed it), as a collected coroutine's warning goes by.
    awaited: std::sync::atomic::AtomicBool,
}

impl Drop for Ready {
    fn drop(&mut self) {
        if !*self.awaited.get_mut() {
            bridge::warn_never_awaited("it was decided, and its result was dropped");
        }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        self.awaited.store(true, std::sync::atomic::Ordering::Relaxed);
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }

    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__(py)
    }

    /// Nothing is awaited: the exception goes back to the caller as it came.
    #[pyo3(signature = (kind, value=None, _traceback=None))]
    fn throw(
        &self,
        kind: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.awaited.store(true, std::sync::atomic::Ordering::Relaxed);
        Err(super::bridge::thrown(kind, value)?)
    }

    fn close(&self) {
        self.awaited.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(super) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(
        py,
        Ready {
            value: value.unbind(),
            awaited: std::sync::atomic::AtomicBool::new(false),
        },
    )?
    .into_any())
}

/// The cost an item of `hit_many` names as its third element.
fn item_cost(value: &Bound<'_, PyAny>, item: &Bound<'_, PyTuple>) -> PyResult<Cost> {
    let shown = || {
        item.repr()
            .map_or_else(|_| "a limit".to_owned(), |repr| repr.to_string())
    };
    if !value.is_instance_of::<PyInt>() {
        return Err(Error::Type(format!(
            "the cost in {} must be an int such as 1, not {}",
            shown(),
            value.get_type().name()?
        ))
        .into());
    }
    value.extract::<Cost>().map_err(|error| {
        if error.is_instance_of::<PyValueError>(value.py()) {
            Error::Value(format!("the cost in {}: {}", shown(), error.value(value.py()))).into()
        } else {
            error
        }
    })
}

impl Limiter {
    fn own_limits(&self, key: String, cost: Cost) -> Result<Limits> {
        Ok(vec![(key, self.quota.rates.clone(), self.own_units(cost)?)])
    }

    /// The limits of `hit_many`: `(key, rate)` items cost `cost`, `(key, rate, cost)` items their own.
    pub(super) fn parse_limits(&self, limits: Vec<Bound<'_, PyAny>>, cost: Cost) -> PyResult<Limits> {
        if limits.is_empty() {
            return Err(Error::Value("hit_many needs at least one (key, rate) pair".to_owned()).into());
        }
        // A call's cost too large for a u64 is refused against the first limit that takes it.
        let call_units = match cost {
            Cost::Units(units) => Ok(units),
            Cost::TooLarge(text) => Err(text),
        };
        limits
            .into_iter()
            .map(|item| {
                let item = item.cast::<PyTuple>().map_err(|_| {
                    Error::Type(format!(
                        "hit_many takes (key, rate) or (key, rate, cost) tuples, not {}",
                        item.get_type()
                            .name()
                            .map_or_else(|_| "this".to_owned(), |name| name.to_string())
                    ))
                })?;
                let (key, rate, own_cost) = match item.len() {
                    2 => (item.get_item(0)?, item.get_item(1)?, None),
                    3 => (item.get_item(0)?, item.get_item(1)?, Some(item.get_item(2)?)),
                    length => {
                        return Err(Error::Type(format!(
                            "a limit of hit_many is (key, rate) or (key, rate, cost), not a tuple of {length}: {}",
                            item.repr()?
                        ))
                        .into())
                    }
                };
                let key: String = key.extract()?;
                let rate = (!rate.is_none()).then_some(rate);
                let rates = self.rates_of(rate.as_ref(), true)?.into_owned();
                let units = match (own_cost, &call_units) {
                    (Some(value), _) => item_cost(&value, item)?.units(|| Capacity::Rate(rates[0]))?,
                    (None, Ok(units)) => *units,
                    (None, Err(text)) => {
                        return Err(
                            Error::CostTooLarge(CostExceedsLimit::describe(text, Capacity::Rate(rates[0]))).into(),
                        )
                    }
                };
                Ok((key, rates, units))
            })
            .collect()
    }

    fn decide_async<'py>(
        &self,
        py: Python<'py>,
        limits: Limits,
        mode: Mode,
        as_bool: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(remote) = &self.remote {
            return decide_later(py, remote, limits, mode, as_bool);
        }
        let limits = borrowed(&limits);
        let (decision, now_ns) = match mode {
            Mode::Hit => self.limiter.hit(&limits).map_err(Error::from)?,
            Mode::Test => self.limiter.test(&limits).map_err(Error::from)?,
            Mode::Peek => {
                let uncosted: Vec<(&str, &[Rate])> = limits.iter().map(|&(key, rates, _)| (key, rates)).collect();
                self.limiter.peek(&uncosted)
            }
        };
        if as_bool {
            return ready(py, decision.allowed.into_pyobject(py)?.to_owned().into_any());
        }
        ready(py, Bound::new(py, Decision::from_core(decision, now_ns))?.into_any())
    }
}

#[pymethods]
impl Limiter {
    /// Whether decisions are made by a remote store (Redis) rather than in this process.
    #[getter]
    fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// `hit` as an awaitable: on Redis the event loop stays free while the store answers.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn hit_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        self.decide_async(py, self.own_limits(key, cost)?, Mode::Hit, false)
    }

    /// `allow` as an awaitable.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn allow_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        self.decide_async(py, self.own_limits(key, cost)?, Mode::Hit, true)
    }

    /// `test` as an awaitable.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn test_async<'py>(&self, py: Python<'py>, key: String, cost: Cost) -> PyResult<Bound<'py, PyAny>> {
        self.decide_async(py, self.own_limits(key, cost)?, Mode::Test, false)
    }

    /// `peek` as an awaitable.
    #[pyo3(signature = (key, rate = None))]
    fn peek_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
        rate: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limits = vec![(key, self.rates_of(rate, true)?.into_owned(), 1)];
        self.decide_async(py, limits, Mode::Peek, false)
    }

    /// `hit_many` as an awaitable.
    #[pyo3(signature = (limits, cost = Cost::ONE), text_signature = "($self, limits, cost=1)")]
    fn hit_many_async<'py>(
        &self,
        py: Python<'py>,
        limits: Vec<Bound<'py, PyAny>>,
        cost: Cost,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limits = self.parse_limits(limits, cost)?;
        self.decide_async(py, limits, Mode::Hit, false)
    }

    /// One `PING` on this limiter's Redis connection (benchmarks: the floor of a decision's round trip).
    fn _ping(&self, py: Python<'_>) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        py.detach(|| runtime().block_on(remote.store().ping())).is_ok()
    }

    /// `_ping` as an awaitable.
    fn _ping_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(remote) = &self.remote else {
            return ready(py, false.into_pyobject(py)?.to_owned().into_any());
        };
        let remote = Arc::clone(remote);
        bridge::spawn(py, async move { Done::Bool(remote.store().ping().await.is_ok()) })
    }

    /// `reset` as an awaitable.
    #[pyo3(signature = (key, rate = None))]
    fn reset_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
        rate: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rates = self.rates_of(rate, false)?;
        let Some(remote) = &self.remote else {
            self.limiter.reset(&key, &rates);
            return ready(py, py.None().into_bound(py));
        };
        let remote = Arc::clone(remote);
        let rates = rates.into_owned();
        bridge::spawn(py, async move {
            remote.reset(&key, &rates).await;
            Done::Unit
        })
    }
}
