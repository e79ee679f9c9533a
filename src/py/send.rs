//! The `send` of a response that carries rate-limit fields.
//!
//! It is a C function over `(send, pending)` that CPython calls with its one argument directly (`METH_O`):
//! no Python frame and no argument tuple per message. Every ASGI layer of ferrolimit that writes fields
//! wraps `send` with it, once per request.

use std::panic::AssertUnwindSafe;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};

use super::asgi::{SCOPE_ENGINE, SCOPE_PENDING};

/// Messages that start a response and so carry its header fields.
fn starts_response(kind: &Bound<'_, PyAny>) -> bool {
    kind.cast::<PyString>().is_ok_and(|kind| {
        kind.to_str().is_ok_and(|kind| {
            matches!(
                kind,
                "http.response.start" | "websocket.accept" | "websocket.http.response.start"
            )
        })
    })
}

/// `message.get(name)`, for a dict or any other mapping.
fn get<'py>(message: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(dict) = message.cast::<PyDict>() {
        return dict.get_item(name);
    }
    let value = message.call_method1(intern!(message.py(), "get"), (name,))?;
    Ok(if value.is_none() { None } else { Some(value) })
}

/// The pending fields whose names the response does not already carry (an error handler may set its own).
fn not_in<'py>(fields: &Bound<'py, PyAny>, headers: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let py = fields.py();
    let present = PySet::empty(py)?;
    for pair in headers.try_iter()? {
        let name = pair?.get_item(0)?;
        present.add(
            py.get_type::<PyBytes>()
                .call1((name,))?
                .call_method0(intern!(py, "lower"))?,
        )?;
    }
    let kept = PyList::empty(py);
    for pair in fields.try_iter()? {
        let pair = pair?;
        if !present.contains(pair.get_item(0)?)? {
            kept.append(pair)?;
        }
    }
    Ok(kept)
}

/// Appends `pending`'s fields to `message` if it starts a response, then hands it to `send`.
fn forward<'py>(
    send: &Bound<'py, PyAny>,
    pending: &Bound<'py, PyList>,
    message: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = message.py();
    if starts_response(&message.get_item(intern!(py, "type"))?) {
        let fields = pending.get_item(1)?;
        if fields.is_truthy()? {
            let name = intern!(py, "headers");
            match get(message, name)? {
                Some(headers) if headers.is_truthy()? => {
                    let status = get(message, intern!(py, "status"))?;
                    let fields = match status {
                        Some(status) if status.ge(400)? => not_in(&fields, &headers)?.into_any(),
                        _ => fields,
                    };
                    // SAFETY: PySequence_List returns a new reference (a new list) or null with an
                    // exception set, which from_owned_ptr_or_err turns into the error.
                    let combined = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_List(headers.as_ptr()))? };
                    let combined = combined.cast_into::<PyList>()?;
                    for pair in fields.try_iter()? {
                        combined.append(pair?)?;
                    }
                    message.set_item(name, combined)?;
                }
                // Rendered for this response alone and never changed afterwards: the message may hold it.
                _ => message.set_item(name, fields)?,
            }
        }
    }
    // SAFETY: both pointers are live references held for the call; the argument list ends with null as
    // PyObject_CallFunctionObjArgs requires; it returns a new reference or null with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_CallFunctionObjArgs(send.as_ptr(), message.as_ptr(), std::ptr::null_mut::<ffi::PyObject>()),
        )
    }
}

/// CPython's entry: `slf` is the `(send, pending)` tuple the function was made with.
unsafe extern "C" fn send_entry(slf: *mut ffi::PyObject, message: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_O function attached to the interpreter, with `slf` the object given to
    // PyCMethod_New (kept alive by the function object) and `message` a borrowed reference for the call;
    // no reference made here outlives the call.
    let py = unsafe { Python::assume_attached() };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as above; `slf` is always the 2-tuple made in `wrap`.
        let (slf, message) = unsafe { (Bound::from_borrowed_ptr(py, slf), Bound::from_borrowed_ptr(py, message)) };
        let slf = slf.cast::<PyTuple>()?;
        let send = slf.get_item(0)?;
        let pending = slf.get_item(1)?;
        forward(&send, pending.cast::<PyList>()?, &message)
    }));
    match outcome {
        Ok(Ok(result)) => result.into_ptr(),
        Ok(Err(error)) => {
            error.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PyRuntimeError::new_err("ferrolimit: sending the response failed (a panic in send_with_headers)")
                .restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The method table entry of the function; CPython only reads it.
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is immutable and its pointers are to static C strings and a function.
unsafe impl Sync for MethodDef {}

static SEND_WITH_HEADERS: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"send_with_headers".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: send_entry,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"Appends the pending rate-limit fields to the message that starts the response, then sends it.".as_ptr(),
});

/// `send`, appending `pending`'s fields (`[decision or None, fields]`) to the message that starts the
/// response; a field the response already carries is not repeated on an error status (>= 400).
pub(crate) fn wrap<'py>(send: &Bound<'py, PyAny>, pending: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyAny>> {
    let py = send.py();
    let state = PyTuple::new(py, [send.clone(), pending.clone().into_any()])?;
    // SAFETY: the definition is static; PyCMethod_New keeps its own reference to `state` and returns a
    // new reference or null with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCMethod_New(
                std::ptr::addr_of!(SEND_WITH_HEADERS.0).cast_mut(),
                state.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        )
    }
}

/// `send`, writing `pending`'s fields (`[decision or None, fields]`, see `HeaderRenderer.offer`) on the
/// message that starts the response. A field the response already carries is not repeated when its
/// status is an error (an error handler may have set its own).
#[pyfunction]
pub fn send_with_headers<'py>(send: &Bound<'py, PyAny>, pending: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyAny>> {
    wrap(send, pending)
}

/// The ASGI layer `FastLimit.init_app` adds: makes the limiter reachable from the scope and, on HTTP, writes
/// the request's pending fields on the response start, whoever builds the response (the handler, an
/// exception handler, a streaming body). It sits inside Starlette's middleware stack, never where a server
/// inspects it, and hands back the inner app's awaitable.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct HeaderLayer {
    app: Py<PyAny>,
    limiter: Py<PyAny>,
}

#[pymethods]
impl HeaderLayer {
    #[new]
    #[pyo3(signature = (app, limiter))]
    fn py_new(app: Py<PyAny>, limiter: Py<PyAny>) -> Self {
        HeaderLayer { app, limiter }
    }

    fn __call__<'py>(
        &self,
        scope: &Bound<'py, PyAny>,
        receive: &Bound<'py, PyAny>,
        send: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = scope.py();
        let kind = scope.get_item(intern!(py, "type"))?;
        let kind = kind.cast::<PyString>().ok().and_then(|kind| kind.to_str().ok());
        let mut send = send.clone();
        if matches!(kind, Some("http" | "websocket")) {
            scope.set_item(intern!(py, SCOPE_ENGINE), self.limiter.bind(py))?;
        }
        if kind == Some("http") {
            let key = intern!(py, SCOPE_PENDING);
            if !scope.contains(key)? {
                let pending = PyList::new(py, [py.None().into_bound(py), PyTuple::empty(py).into_any()])?;
                scope.set_item(key, &pending)?;
                send = wrap(&send, &pending)?;
            }
        }
        let app = self.app.bind(py);
        // SAFETY: all pointers are live references held for the call; the argument list ends with null as
        // PyObject_CallFunctionObjArgs requires; it returns a new reference or null with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_CallFunctionObjArgs(
                    app.as_ptr(),
                    scope.as_ptr(),
                    receive.as_ptr(),
                    send.as_ptr(),
                    std::ptr::null_mut::<ffi::PyObject>(),
                ),
            )
        }
    }

    /// The app inside.
    #[getter]
    fn app(&self, py: Python<'_>) -> Py<PyAny> {
        self.app.clone_ref(py)
    }

    /// The `FastLimit` it serves.
    #[getter]
    fn limiter(&self, py: Python<'_>) -> Py<PyAny> {
        self.limiter.clone_ref(py)
    }
}
