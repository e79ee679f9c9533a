//! Python bindings: the only code besides `lib.rs` that uses pyo3.

mod asgi;
mod bridge;
mod concurrency;
mod errors;
mod headers;
mod remote;
mod runtime;
mod send;

use std::borrow::Cow;
use std::sync::Arc;

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::clock::{self, Clock};
use crate::decision;
use crate::limiter::{AlgorithmKind, AnyLimiter, Capacity, CostExceedsLimit};
use crate::rate::{self, Rate};
use crate::store::memory::OnFull;
use crate::store::redis::{Mode, RedisLimiter};

pub use asgi::{AddressSet, Charge, ClientResolver, Counts, RouteCharges};
pub use concurrency::{ConcurrencyLimiter, Lease, Slot};
pub use errors::{ConcurrencyLimitExceeded, CostExceedsLimitError};
use errors::{Error, Result};
pub use headers::{decision_from, denied_body, exceeded_detail, retry_after_s, HeaderRenderer, Pending};
pub use send::{header_layer, py_attach, send_with_headers};

const NANOS: f64 = 1e9;

/// Adds what `#[pymodule_export]` cannot: exception types.
pub fn init_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // The fork handler that keeps the cached process id true, in place at import, before any fork.
    crate::process::id();
    module.add("CostExceedsLimitError", module.py().get_type::<CostExceedsLimitError>())?;
    module.add(
        "ConcurrencyLimitExceeded",
        module.py().get_type::<ConcurrencyLimitExceeded>(),
    )?;
    // asyncio.run, create_task and task groups take only coroutines; these are, in all but their type.
    let coroutine = module.py().import("collections.abc")?.getattr("Coroutine")?;
    coroutine.call_method1("register", (module.py().get_type::<bridge::Call>(),))?;
    coroutine.call_method1("register", (module.py().get_type::<remote::Ready>(),))?;
    module.add("_SCOPE_PENDING", asgi::SCOPE_PENDING)?;
    module.add("_SCOPE_ENGINE", asgi::SCOPE_ENGINE)?;
    Ok(())
}

#[pyfunction]
pub fn __version__() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / NANOS
}

fn nanos(seconds: f64, what: &str) -> Result<u64> {
    if (0.0..1e10).contains(&seconds) {
        Ok((seconds * NANOS).round() as u64)
    } else {
        Err(Error::Value(format!(
            "{what} must be a number of seconds from 0 to 1e10, got {seconds}"
        )))
    }
}

fn positive(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value)
        .ok()
        .filter(|&value| value > 0)
        .ok_or_else(|| not_positive(&value, what))
}

/// A request's cost as Python gave it. Any int is taken: one below 1 is refused here, and one too large for a
/// `u64` is kept as its text, so that the error it meets names it as given.
#[derive(Clone, Debug)]
pub enum Cost {
    Units(u64),
    TooLarge(String),
}

impl Cost {
    pub const ONE: Cost = Cost::Units(1);

    /// The units of a cost measured against `limit` (the first limit a cost too large for any fails).
    pub fn units(self, limit: impl FnOnce() -> Capacity) -> Result<u64> {
        match self {
            Cost::Units(units) => Ok(units),
            Cost::TooLarge(text) => Err(Error::CostTooLarge(CostExceedsLimit::describe(&text, limit()))),
        }
    }

    /// The units of a cost that only bounds what is given back: a cost too large is as good as all.
    pub fn units_at_most(self) -> u64 {
        match self {
            Cost::Units(units) => units,
            Cost::TooLarge(_) => u64::MAX,
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for Cost {
    type Error = PyErr;

    fn extract(value: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match value.extract::<i64>() {
            Ok(units) if units > 0 => Ok(Cost::Units(units as u64)),
            Ok(units) => Err(not_positive(&units, "cost").into()),
            Err(error) if error.is_instance_of::<PyOverflowError>(value.py()) => {
                if value.lt(0)? {
                    Err(not_positive(&value.str()?, "cost").into())
                } else {
                    Ok(Cost::TooLarge(value.str()?.to_str()?.to_owned()))
                }
            }
            Err(error) => Err(error),
        }
    }
}

fn not_positive(value: &dyn std::fmt::Display, what: &str) -> Error {
    Error::Value(format!("{what} must be a positive whole number, got {value}"))
}

/// Does nothing with one str: the cost of calling into the extension, the floor for benchmarks.
#[pyfunction]
pub fn _call_floor(key: &str) -> bool {
    key.is_empty()
}

/// Parses a rate string into `(limit, period_seconds)` pairs.
#[pyfunction]
pub fn parse_rates(text: &str) -> PyResult<Vec<(u64, f64)>> {
    Ok(rate::parse_rates(text)
        .map_err(Error::from)?
        .iter()
        .map(|rate| (rate.limit(), seconds(rate.period_ns())))
        .collect())
}

/// One or more rates that apply together.
#[pyclass(module = "ferrolimit._core", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    rates: Vec<Rate>,
}

#[pymethods]
impl Quota {
    #[new]
    fn py_new(rates: &str) -> PyResult<Self> {
        Ok(Quota {
            rates: rate::parse_rates(rates).map_err(Error::from)?,
        })
    }

    /// `limit` units per `period` seconds.
    #[staticmethod]
    fn per(limit: i64, period: f64) -> PyResult<Self> {
        let limit = positive(limit, "limit")?;
        let period_ns = nanos(period, "period")?;
        let rate = Rate::from_nanos(limit, period_ns).ok_or_else(|| {
            Error::Value(format!(
                "a limit of {limit} per {period} seconds is not a usable rate: the period must hold at least one nanosecond per unit and be at most ten years"
            ))
        })?;
        Ok(Quota { rates: vec![rate] })
    }

    #[getter]
    fn rates(&self) -> Vec<(u64, f64)> {
        self.rates
            .iter()
            .map(|rate| (rate.limit(), seconds(rate.period_ns())))
            .collect()
    }

    /// The smallest limit among the rates.
    #[getter]
    fn limit(&self) -> u64 {
        self.rates.iter().map(Rate::limit).min().unwrap_or(0)
    }

    fn __len__(&self) -> usize {
        self.rates.len()
    }

    fn __str__(&self) -> String {
        self.rates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn __repr__(&self) -> String {
        format!("Quota({:?})", self.__str__())
    }
}

/// What a limit check decided. One is made per request: a free list keeps their memory.
#[pyclass(module = "ferrolimit._core", frozen, freelist = 64)]
pub struct Decision {
    #[pyo3(get)]
    allowed: bool,
    #[pyo3(get)]
    limit: u64,
    #[pyo3(get)]
    remaining: u64,
    #[pyo3(get)]
    reset_after: f64,
    #[pyo3(get)]
    retry_after: f64,
    #[pyo3(get)]
    window: f64,
    #[pyo3(get)]
    reset_at: f64,
    /// Kept in nanoseconds so headers round exactly.
    core: decision::Decision,
    now_ns: u64,
}

impl Decision {
    fn from_core(decision: decision::Decision, now_ns: u64) -> Self {
        Decision {
            allowed: decision.allowed,
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: seconds(decision.reset_after_ns),
            retry_after: seconds(decision.retry_after_ns),
            window: seconds(decision.period_ns),
            reset_at: seconds(now_ns + decision.reset_after_ns),
            core: decision,
            now_ns,
        }
    }
}

#[pymethods]
impl Decision {
    /// The position, among the limits of the call, of the limit that bound the decision.
    #[getter]
    fn index(&self) -> usize {
        self.core.index
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, limit={}, remaining={}, reset_after={}, retry_after={}, index={})",
            if self.allowed { "True" } else { "False" },
            self.limit,
            self.remaining,
            self.reset_after,
            self.retry_after,
            self.core.index
        )
    }
}

/// A clock that moves only when told to, for tests. Starts at `start` seconds since the Unix epoch.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct FakeClock {
    clock: clock::FakeClock,
}

#[pymethods]
impl FakeClock {
    #[new]
    #[pyo3(signature = (start = 1_700_000_000.0))]
    fn py_new(start: f64) -> PyResult<Self> {
        Ok(FakeClock {
            clock: clock::FakeClock::new(nanos(start, "start")?),
        })
    }

    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.clock.advance_ns(nanos(seconds, "seconds")?);
        Ok(())
    }

    fn set(&self, now: f64) -> PyResult<()> {
        if self.clock.set_ns(nanos(now, "now")?) {
            Ok(())
        } else {
            Err(Error::Value(format!("a clock never goes back: {now} is before {}", self.now())).into())
        }
    }

    fn now(&self) -> f64 {
        seconds(self.clock.now_ns())
    }
}

fn quota_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<Rate>> {
    if let Ok(quota) = value.cast::<Quota>() {
        return Ok(quota.get().rates.clone());
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(rate::parse_rates(text.to_str()?).map_err(Error::from)?);
    }
    Err(Error::Type(format!(
        "a rate must be a str such as '10/min' or a Quota, not {}",
        value.get_type().name()?
    ))
    .into())
}

/// Refuses a rate that `kind` cannot enforce in the chosen store.
fn usable(kind: AlgorithmKind, rates: &[Rate], on_redis: bool) -> Result<()> {
    match rates.iter().find_map(|&rate| kind.unusable(rate, on_redis)) {
        Some(reason) => Err(Error::Value(reason)),
        None => Ok(()),
    }
}

fn make_clock(clock: Option<&Bound<'_, FakeClock>>) -> Clock {
    clock.map_or_else(Clock::monotonic, |fake| Clock::Fake(fake.get().clock.clone()))
}

fn on_full_of(on_full: &str) -> Result<OnFull> {
    match on_full {
        "allow" => Ok(OnFull::Allow),
        "deny" => Ok(OnFull::Deny),
        other => Err(Error::Value(format!(
            "on_full must be 'allow' or 'deny', got {other:?}"
        ))),
    }
}

/// A rate limiter: one or more rates, an algorithm and a store.
#[pyclass(module = "ferrolimit._core", frozen, subclass)]
#[allow(clippy::struct_field_names)]
pub struct Limiter {
    /// The memory store; with Redis, the fallback of `on_backend_error="memory"`.
    limiter: Arc<AnyLimiter>,
    quota: Quota,
    remote: Option<Arc<RedisLimiter>>,
}

impl Limiter {
    /// The rates a call names: `rate` (a str or a Quota), or this limiter's own for None. With `enforced`, a
    /// rate this limiter's algorithm and store cannot enforce is refused (see `AlgorithmKind::unusable`).
    fn rates_of(&self, rate: Option<&Bound<'_, PyAny>>, enforced: bool) -> PyResult<Cow<'_, [Rate]>> {
        let Some(rate) = rate else {
            return Ok(Cow::Borrowed(&self.quota.rates));
        };
        let rates = quota_of(rate)?;
        if enforced {
            usable(self.limiter.kind(), &rates, self.remote.is_some())?;
        }
        Ok(Cow::Owned(rates))
    }

    /// The units of `cost` against this limiter's own rates.
    fn own_units(&self, cost: Cost) -> Result<u64> {
        cost.units(|| Capacity::Rate(self.quota.rates[0]))
    }

    fn decide(&self, py: Python<'_>, key: &str, cost: Cost, commit: bool) -> PyResult<Decision> {
        let cost = self.own_units(cost)?;
        if let Some(remote) = &self.remote {
            let mode = if commit { Mode::Hit } else { Mode::Test };
            return remote::decide(
                py,
                remote,
                &vec![(key.to_owned(), self.quota.rates.clone(), cost)],
                mode,
            );
        }
        let limits = [(key, self.quota.rates.as_slice(), cost)];
        let decided = if commit {
            self.limiter.hit(&limits)
        } else {
            self.limiter.test(&limits)
        };
        let (decision, now_ns) = decided.map_err(Error::from)?;
        Ok(Decision::from_core(decision, now_ns))
    }
}

#[pymethods]
impl Limiter {
    #[new]
    #[pyo3(signature = (
        rate, algorithm = "gcra", storage = "memory://", *, clock = None, max_keys = 1_000_000, on_full = "allow",
        key_prefix = "ferrolimit:", connect_timeout_ms = 1_000, timeout_ms = 250, on_backend_error = "allow",
        breaker_failures = 3, breaker_cooldown_ms = 1_000, deny_cache_size = 0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        rate: &Bound<'_, PyAny>,
        algorithm: &str,
        storage: &str,
        clock: Option<&Bound<'_, FakeClock>>,
        max_keys: i64,
        on_full: &str,
        key_prefix: &str,
        connect_timeout_ms: i64,
        timeout_ms: i64,
        on_backend_error: &str,
        breaker_failures: i64,
        breaker_cooldown_ms: i64,
        deny_cache_size: i64,
    ) -> PyResult<Self> {
        let rates = quota_of(rate)?;
        let kind = AlgorithmKind::parse(algorithm).ok_or_else(|| {
            Error::Value(format!(
                "unknown algorithm {algorithm:?}; expected one of {}",
                AlgorithmKind::NAMES
            ))
        })?;
        usable(kind, &rates, remote::is_redis_url(storage)?)?;
        let max_keys = positive(max_keys, "max_keys")? as usize;
        let limiter = Arc::new(AnyLimiter::new(kind, make_clock(clock), max_keys, on_full_of(on_full)?));
        let settings = remote::RedisSettings {
            key_prefix,
            connect_timeout_ms,
            timeout_ms,
            on_backend_error,
            breaker_failures,
            breaker_cooldown_ms,
            deny_cache_size,
        };
        let remote = remote::open(storage, kind, &settings, &limiter, clock.is_some())?;
        Ok(Limiter {
            limiter,
            quota: Quota { rates },
            remote,
        })
    }

    /// Takes `cost` units from every rate of `key` if all have room; a denied request takes nothing.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn hit(&self, py: Python<'_>, key: &str, cost: Cost) -> PyResult<Decision> {
        self.decide(py, key, cost, true)
    }

    /// `hit(key, cost).allowed`, without building a Decision.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn allow(&self, py: Python<'_>, key: &str, cost: Cost) -> PyResult<bool> {
        if self.remote.is_some() {
            return Ok(self.decide(py, key, cost, true)?.allowed);
        }
        let cost = self.own_units(cost)?;
        Ok(self
            .limiter
            .hit(&[(key, self.quota.rates.as_slice(), cost)])
            .map_err(Error::from)?
            .0
            .allowed)
    }

    /// What `hit(key, cost)` would decide now, without taking anything.
    #[pyo3(signature = (key, cost = Cost::ONE), text_signature = "($self, key, cost=1)")]
    fn test(&self, py: Python<'_>, key: &str, cost: Cost) -> PyResult<Decision> {
        self.decide(py, key, cost, false)
    }

    /// The standing of `key` under `rate` (None: this limiter's own rates) now: units left, time to full
    /// reset, and whether one more unit would pass.
    #[pyo3(signature = (key, rate = None))]
    fn peek(&self, py: Python<'_>, key: &str, rate: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
        let rates = self.rates_of(rate, true)?;
        if let Some(remote) = &self.remote {
            return remote::decide(py, remote, &vec![(key.to_owned(), rates.into_owned(), 1)], Mode::Peek);
        }
        let (decision, now_ns) = self.limiter.peek(&[(key, &rates)]);
        Ok(Decision::from_core(decision, now_ns))
    }

    /// Raises ValueError if this limiter's algorithm and store cannot enforce `rate` (a str or a Quota) as
    /// written, as `hit_many` would when given it; touches no key and no store.
    fn check_rate(&self, rate: &Bound<'_, PyAny>) -> PyResult<()> {
        self.rates_of(Some(rate), true).map(drop)
    }

    /// Forgets `key` under `rate` (None: this limiter's own rates): its next request is treated as its first.
    #[pyo3(signature = (key, rate = None))]
    fn reset(&self, py: Python<'_>, key: &str, rate: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let rates = self.rates_of(rate, false)?;
        if let Some(remote) = &self.remote {
            remote::reset(py, remote, key, &rates);
        } else {
            self.limiter.reset(key, &rates);
        }
        Ok(())
    }

    /// Checks several (key, rate) or (key, rate, cost) limits as one request: all are charged, each its own
    /// cost (`cost` where the item names none), only if all pass. A rate of `None` means this limiter's own.
    #[pyo3(signature = (limits, cost = Cost::ONE), text_signature = "($self, limits, cost=1)")]
    fn hit_many(&self, py: Python<'_>, limits: Vec<Bound<'_, PyAny>>, cost: Cost) -> PyResult<Decision> {
        let parsed = self.parse_limits(limits, cost)?;
        if let Some(remote) = &self.remote {
            return remote::decide(py, remote, &parsed, Mode::Hit);
        }
        let (decision, now_ns) = self.limiter.hit(&remote::borrowed(&parsed)).map_err(Error::from)?;
        Ok(Decision::from_core(decision, now_ns))
    }

    /// Drops every key whose state is that of a fresh key; returns how many. Happens on its own as keys arrive.
    fn sweep(&self) -> usize {
        self.limiter.sweep(&self.quota.rates)
    }

    /// Seconds since the Unix epoch on this limiter's clock.
    fn now(&self) -> f64 {
        seconds(self.limiter.now_ns())
    }

    /// Counts since creation: allowed, denied, and new keys that found the store full.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (allowed, denied, overflowed) = self.limiter.counts();
        let stats = PyDict::new(py);
        stats.set_item("allowed", allowed)?;
        stats.set_item("denied", denied)?;
        stats.set_item("store_full", overflowed)?;
        stats.set_item("keys", self.limiter.len())?;
        if let Some(remote) = &self.remote {
            remote::add_stats(remote, &stats)?;
        }
        Ok(stats)
    }

    #[getter]
    fn quota(&self) -> Quota {
        self.quota.clone()
    }

    #[getter]
    fn algorithm(&self) -> &'static str {
        self.limiter.kind().name()
    }

    #[getter]
    fn max_keys(&self) -> usize {
        self.limiter.max_keys()
    }

    /// Keys held in the store now.
    fn __len__(&self) -> usize {
        self.limiter.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Limiter({:?}, algorithm={:?})",
            self.quota.__str__(),
            self.limiter.kind().name()
        )
    }
}
