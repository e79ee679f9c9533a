//! The one place Rust errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::limiter::CostExceedsLimit;
use crate::rate::RateError;

create_exception!(
    ferrolimit,
    CostExceedsLimitError,
    PyValueError,
    "A request's cost is larger than the limit itself, so it could never pass."
);

create_exception!(
    ferrolimit,
    ConcurrencyLimitExceeded,
    PyException,
    "Raised on entering a concurrency slot whose key has no free units; `decision` and `retry_after` say more."
);

pub enum Error {
    /// A slot could not be entered: the denied decision and its time.
    Exceeded(crate::decision::Decision, u64),
    Rate(RateError),
    Cost(CostExceedsLimit),
    /// A cost too large for a whole number of units, with the message naming it.
    CostTooLarge(String),
    Value(String),
    Type(String),
}

impl From<RateError> for Error {
    fn from(error: RateError) -> Self {
        Error::Rate(error)
    }
}

impl From<CostExceedsLimit> for Error {
    fn from(error: CostExceedsLimit) -> Self {
        Error::Cost(error)
    }
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        match error {
            Error::Exceeded(decision, now_ns) => exceeded(decision, now_ns),
            Error::Rate(error) => PyValueError::new_err(error.to_string()),
            Error::Cost(error) => CostExceedsLimitError::new_err(error.to_string()),
            Error::CostTooLarge(message) => CostExceedsLimitError::new_err(message),
            Error::Value(message) => PyValueError::new_err(message),
            Error::Type(message) => PyTypeError::new_err(message),
        }
    }
}

fn exceeded(decision: crate::decision::Decision, now_ns: u64) -> PyErr {
    let decision = super::Decision::from_core(decision, now_ns);
    let error = ConcurrencyLimitExceeded::new_err(format!(
        "all {} concurrency slots of this key are taken; retry in {} s",
        decision.limit, decision.retry_after
    ));
    Python::attach(|py| {
        let value = error.value(py);
        let retry_after = decision.retry_after;
        let attached = value
            .setattr("retry_after", retry_after)
            .and_then(|()| value.setattr("decision", Py::new(py, decision)?));
        match attached {
            Ok(()) => error,
            Err(failure) => failure,
        }
    })
}

pub type Result<T> = std::result::Result<T, Error>;
