//! The one place Rust errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::limiter::CostExceedsLimit;
use crate::rate::RateError;

create_exception!(
    ferrolimit,
    CostExceedsLimitError,
    PyValueError,
    "A request's cost is larger than the limit itself, so it could never pass."
);

pub enum Error {
    Rate(RateError),
    Cost(CostExceedsLimit),
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
            Error::Rate(error) => PyValueError::new_err(error.to_string()),
            Error::Cost(error) => CostExceedsLimitError::new_err(error.to_string()),
            Error::Value(message) => PyValueError::new_err(message),
            Error::Type(message) => PyTypeError::new_err(message),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
