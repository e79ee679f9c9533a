//! Response fields for a `Decision`, built once per response as ASGI-ready bytes.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::errors::Error;
use super::Decision;
use crate::decision;
use crate::headers::{self, Field};

/// Renders the rate-limit fields of a decision under configured names.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct HeaderRenderer {
    fields: Vec<(Field, Py<PyBytes>)>,
    names: Vec<String>,
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
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for (field, name) in configured {
            if let Some(name) = name {
                fields.push((field, PyBytes::new(py, name.to_ascii_lowercase().as_bytes()).unbind()));
                names.push(name);
            }
        }
        Ok(HeaderRenderer { fields, names })
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
        let list = PyList::empty(py);
        for (field, name) in &self.fields {
            if let Some(value) = headers::value(*field, &decision.core, decision.now_ns, policy) {
                let pair = PyTuple::new(
                    py,
                    [
                        name.bind(py).clone().into_any(),
                        PyBytes::new(py, value.as_bytes()).into_any(),
                    ],
                )?;
                list.append(pair)?;
            }
        }
        Ok(list)
    }

    /// The configured field names, as given.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn __len__(&self) -> usize {
        self.fields.len()
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
/// same headers and body. Times are seconds; `now` is seconds since the epoch.
#[pyfunction]
#[pyo3(signature = (*, allowed, limit, remaining, reset_after, retry_after, window, now))]
#[allow(clippy::too_many_arguments)]
pub fn decision_from(
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_after: f64,
    retry_after: f64,
    window: f64,
    now: f64,
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
    };
    Ok(Decision::from_core(core, duration_ns(now, "now")?))
}
