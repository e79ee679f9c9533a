//! ferrolimit: rate-limiting algorithms and stores, with Python bindings in `py`.

pub mod algorithm;
pub mod client;
pub mod clock;
pub mod decision;
pub mod headers;
pub mod limiter;
pub mod process;
pub mod rate;
pub mod store;

mod py;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::py::{
        __version__, _call_floor, parse_rates, py_attach, AddressSet, Charge, ClientResolver, ConcurrencyLimiter,
        Counts, Decision, FakeClock, Lease, Limiter, Pending, Quota, RouteCharges, Slot,
    };

    #[pymodule_export]
    use crate::py::{
        decision_from, denied_body, exceeded_detail, header_layer, retry_after_s, send_with_headers, HeaderRenderer,
    };

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::py::init_module(module)
    }
}
