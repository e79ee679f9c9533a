//! Response fields for a `Decision`, built once per response as ASGI-ready bytes.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use smallvec::SmallVec;

use super::errors::Error;
use super::Decision;
use crate::decision;
use crate::headers::{self, Field, Value};

/// One configured field: its lower-case name, and the last numeric pair built, reused while the value holds
/// (a limit's quota never changes, its reset second rarely does).
struct FieldSlot {
    field: Field,
    name: Py<PyBytes>,
    last: Mutex<Option<(u64, Py<PyTuple>)>>,
}

impl FieldSlot {
    fn pair<'py>(&self, py: Python<'py>, value: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                self.name.bind(py).clone().into_any(),
                PyBytes::new(py, value).into_any(),
            ],
        )
    }

    fn number<'py>(&self, py: Python<'py>, number: u64) -> PyResult<Bound<'py, PyTuple>> {
        if let Some((held, pair)) = &*self.last.lock() {
            if *held == number {
                return Ok(pair.bind(py).clone());
            }
        }
        let mut buffer = [0u8; 20];
        let pair = self.pair(py, headers::digits(number, &mut buffer))?;
        // Swapped out under the lock, dropped after it: no Python code runs while it is held.
        let previous = self.last.lock().replace((number, pair.clone().unbind()));
        drop(previous);
        Ok(pair)
    }
}

/// Renders the rate-limit fields of a decision under configured names.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct HeaderRenderer {
    slots: Vec<FieldSlot>,
    names: Vec<String>,
}

impl HeaderRenderer {
    /// The fields of `decision` (made at `now_ns`), ready for an ASGI message.
    pub(crate) fn fields<'py>(
        &self,
        py: Python<'py>,
        decision: &decision::Decision,
        now_ns: u64,
        policy: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut pairs: SmallVec<[Bound<'py, PyTuple>; 6]> = SmallVec::new();
        for slot in &self.slots {
            match headers::field_value(slot.field, decision, now_ns, policy) {
                Value::Number(number) => pairs.push(slot.number(py, number)?),
                Value::Text(text) => pairs.push(slot.pair(py, text.as_bytes())?),
                Value::Absent => {}
            }
        }
        // PyList_New with its final size and PyList_SetItem, which takes over each reference: the list is
        // built in one pass, with no growth and no per-item checks.
        let length = pairs.len() as pyo3::ffi::Py_ssize_t;
        // SAFETY: PyList_New returns a new reference or null with an exception set (checked by
        // from_owned_ptr_or_err); each index below is in 0..length, filled exactly once, and
        // PyList_SetItem steals the reference `into_ptr` hands it.
        unsafe {
            let list = Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyList_New(length))?;
            for (index, pair) in pairs.into_iter().enumerate() {
                pyo3::ffi::PyList_SetItem(list.as_ptr(), index as pyo3::ffi::Py_ssize_t, pair.into_ptr());
            }
            Ok(list.cast_into_unchecked())
        }
    }

    /// Holds `decision` (made at `now_ns`) in `pending`, with its fields rendered, unless the decision held
    /// there already binds at least as tightly. True when it is now the one held.
    pub(crate) fn offer_to(
        &self,
        pending: &Pending,
        py: Python<'_>,
        decision: &decision::Decision,
        now_ns: u64,
        policy: &str,
    ) -> PyResult<bool> {
        if let Some(held) = &*pending.held.lock() {
            if !decision.binds_tighter_than(&held.decision) {
                return Ok(false);
            }
        }
        let fields = self.fields(py, decision, now_ns, policy)?.unbind();
        let previous = pending.held.lock().replace(Held {
            decision: *decision,
            now_ns,
            fields,
        });
        // Dropped after the lock: no Python code runs while it is held.
        drop(previous);
        Ok(true)
    }
}

/// The decision that binds a request tightest so far, and its rendered fields.
struct Held {
    decision: decision::Decision,
    now_ns: u64,
    fields: Py<PyList>,
}

/// A request's pending rate-limit fields: those of the tightest decision offered so far (see
/// `HeaderRenderer.offer`), written on the response start by `send_with_headers`. One is made per request.
#[pyclass(module = "ferrolimit._core", frozen, freelist = 64)]
#[derive(Default)]
pub struct Pending {
    held: Mutex<Option<Held>>,
}

impl Pending {
    /// The fields to write, if a decision was offered.
    pub(crate) fn held_fields<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyList>> {
        self.held.lock().as_ref().map(|held| held.fields.bind(py).clone())
    }
}

#[pymethods]
impl Pending {
    #[new]
    fn py_new() -> Self {
        Pending::default()
    }

    /// The decision held, or None.
    #[getter]
    fn decision(&self) -> Option<Decision> {
        self.held
            .lock()
            .as_ref()
            .map(|held| Decision::from_core(held.decision, held.now_ns))
    }

    /// Its fields, `[(name, value), ...]` as lower-case bytes; empty when no decision was offered.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.held_fields(py).unwrap_or_else(|| PyList::empty(py))
    }

    fn __repr__(&self) -> String {
        match &*self.held.lock() {
            Some(held) => format!(
                "Pending(allowed={}, limit={}, remaining={})",
                if held.decision.allowed { "True" } else { "False" },
                held.decision.limit,
                held.decision.remaining
            ),
            None => "Pending(None)".to_owned(),
        }
    }
}

fn field_name(name: Option<&str>, what: &str) -> PyResult<Option<String>> {
    match name {
        None | Some("") => Ok(None),
        Some(name) if headers::is_field_name(name) => Ok(Some(name.to_owned())),
        Some(name) => Err(Error::Value(format!(
            "{what} header name {name:?} is not a valid field name; expected e.g. 'X-RateLimit-Limit', or None to leave it out"
        ))
        .into()),
    }
}

#[pymethods]
impl HeaderRenderer {
    #[new]
    #[pyo3(signature = (
        *,
        limit = Some("X-RateLimit-Limit"),
        remaining = Some("X-RateLimit-Remaining"),
        reset = Some("X-RateLimit-Reset"),
        retry_after = Some("Retry-After"),
        policy = None,
        ratelimit = None,
    ), text_signature = "(*, limit='X-RateLimit-Limit', remaining='X-RateLimit-Remaining', reset='X-RateLimit-Reset', retry_after='Retry-After', policy=None, ratelimit=None)")]
    fn py_new(
        py: Python<'_>,
        limit: Option<&str>,
        remaining: Option<&str>,
        reset: Option<&str>,
        retry_after: Option<&str>,
        policy: Option<&str>,
        ratelimit: Option<&str>,
    ) -> PyResult<Self> {
        let configured = [
            (Field::Limit, field_name(limit, "limit")?),
            (Field::Remaining, field_name(remaining, "remaining")?),
            (Field::Reset, field_name(reset, "reset")?),
            (Field::RetryAfter, field_name(retry_after, "retry_after")?),
            (Field::Policy, field_name(policy, "policy")?),
            (Field::RateLimit, field_name(ratelimit, "ratelimit")?),
        ];
        let mut slots = Vec::new();
        let mut names = Vec::new();
        for (field, name) in configured {
            if let Some(name) = name {
                slots.push(FieldSlot {
                    field,
                    name: PyBytes::new(py, name.to_ascii_lowercase().as_bytes()).unbind(),
                    last: Mutex::new(None),
                });
                names.push(name);
            }
        }
        Ok(HeaderRenderer { slots, names })
    }

    /// `[(name, value), ...]` as lower-case bytes for an ASGI message. `Retry-After` only on a denial;
    /// `policy` names the limit in the IETF fields.
    #[pyo3(signature = (decision, policy = "default"))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        decision: &Bound<'py, Decision>,
        policy: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let decision = decision.get();
        self.fields(py, &decision.core, decision.now_ns, policy)
    }

    /// Keeps `decision` in `pending`, with its fields rendered, unless the decision held there already binds
    /// at least as tightly (a denial, a longer wait, fewer left). True when it is now the one held.
    #[pyo3(signature = (pending, decision, policy = "default"))]
    fn offer(
        &self,
        py: Python<'_>,
        pending: &Bound<'_, Pending>,
        decision: &Bound<'_, Decision>,
        policy: &str,
    ) -> PyResult<bool> {
        let decision = decision.get();
        self.offer_to(pending.get(), py, &decision.core, decision.now_ns, policy)
    }

    /// The configured field names, as given.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn __len__(&self) -> usize {
        self.slots.len()
    }
}

/// `Retry-After` for a denial: whole seconds until a request of its cost could pass, rounded up, at least 1.
#[pyfunction]
pub fn retry_after_s(decision: &Bound<'_, Decision>) -> u64 {
    headers::retry_after_s(&decision.get().core)
}

/// `"Rate limit exceeded: 10 per 1 minute"`, naming the limit that bound the decision.
#[pyfunction]
pub fn exceeded_detail(decision: &Bound<'_, Decision>) -> String {
    headers::exceeded_detail(&decision.get().core)
}

/// The JSON body of a 429: `{"detail":"Rate limit exceeded: 10 per 1 minute","retry_after":60}`.
#[pyfunction]
pub fn denied_body<'py>(py: Python<'py>, decision: &Bound<'py, Decision>) -> Bound<'py, PyBytes> {
    PyBytes::new(py, headers::denied_body(&decision.get().core).as_bytes())
}

fn duration_ns(seconds: f64, what: &str) -> PyResult<u64> {
    if seconds.is_finite() && (0.0..1e10).contains(&seconds) {
        Ok((seconds * 1e9).ceil() as u64)
    } else {
        Err(Error::Value(format!(
            "{what} must be a number of seconds from 0 to 1e10, got {seconds}"
        ))
        .into())
    }
}

/// A `Decision` from numbers a limiter written in Python reported (a custom `backend=`), so it gets the
/// same headers and body. Times are seconds; `now` is seconds since the epoch; `index` is the position of
/// the limit it describes among the limits of the call.
#[pyfunction]
#[pyo3(signature = (*, allowed, limit, remaining, reset_after, retry_after, window, now, index = 0))]
#[allow(clippy::too_many_arguments)]
pub fn decision_from(
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_after: f64,
    retry_after: f64,
    window: f64,
    now: f64,
    index: usize,
) -> PyResult<Decision> {
    let core = decision::Decision {
        allowed,
        limit,
        remaining,
        reset_after_ns: duration_ns(reset_after, "reset_after")?,
        retry_after_ns: if allowed {
            0
        } else {
            duration_ns(retry_after, "retry_after")?
        },
        period_ns: duration_ns(window, "window")?,
        index,
    };
    Ok(Decision::from_core(core, duration_ns(now, "now")?))
}
