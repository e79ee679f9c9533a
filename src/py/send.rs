//! The `send` of a response that carries rate-limit fields, and FastAPI's header layer that puts it in place.
//!
//! The `send` is a C function over `(send, pending)` that CPython calls with its one argument directly
//! (`METH_O`): no Python frame and no argument tuple per message. Every ASGI layer of ferrolimit that writes
//! fields wraps `send` with it, once per request (see `attach`).

use std::panic::AssertUnwindSafe;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};
use smallvec::SmallVec;

use super::asgi::{SCOPE_ENGINE, SCOPE_PENDING};
use super::headers::Pending;

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
        // A str name (not ASGI, but h11 takes it) as the bytes it stands for.
        let name = match name.cast::<PyString>() {
            Ok(text) => text.call_method1(intern!(py, "encode"), (intern!(py, "latin-1"),))?,
            Err(_) => name,
        };
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

/// The name of a `(name, value)` header pair, when it is bytes.
fn name_of<'py>(pair: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    let name = match pair.cast::<PyTuple>() {
        Ok(pair) => pair.get_borrowed_item(0).ok()?.to_owned(),
        Err(_) => pair.get_item(0).ok()?,
    };
    name.cast_into::<PyBytes>().ok()
}

/// Whether the response already carries a field of one of ours' names (in any case). True when it cannot
/// tell (headers that are not a list of byte pairs): `not_in` then checks the careful way.
fn carries_any(headers: &Bound<'_, PyAny>, fields: &Bound<'_, PyAny>) -> bool {
    let (Ok(headers), Ok(fields)) = (headers.cast::<PyList>(), fields.cast::<PyList>()) else {
        return true;
    };
    let ours: SmallVec<[Bound<'_, PyBytes>; 8]> = fields.iter().filter_map(|pair| name_of(&pair)).collect();
    if ours.len() != fields.len() {
        return true;
    }
    headers.iter().any(|pair| {
        name_of(&pair).is_none_or(|name| {
            let name = name.as_bytes();
            ours.iter().any(|field| field.as_bytes().eq_ignore_ascii_case(name))
        })
    })
}

/// `[*headers, *fields]`: the response's own fields, then ours.
fn concat<'py>(headers: &Bound<'py, PyAny>, fields: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let py = headers.py();
    if let (Ok(headers), Ok(fields)) = (headers.cast::<PyList>(), fields.cast::<PyList>()) {
        let (own, ours) = (headers.len(), fields.len());
        // SAFETY: PyList_New returns a new reference or null with an exception set; each index in
        // 0..own+ours is filled exactly once with a new reference, which PyList_SetItem steals. Neither
        // list can change meanwhile: no Python code runs between the reads and the writes.
        unsafe {
            let combined = Bound::from_owned_ptr_or_err(py, ffi::PyList_New((own + ours) as ffi::Py_ssize_t))?;
            for (index, pair) in headers.iter().chain(fields.iter()).enumerate() {
                ffi::PyList_SetItem(combined.as_ptr(), index as ffi::Py_ssize_t, pair.into_ptr());
            }
            return Ok(combined.cast_into_unchecked());
        }
    }
    // SAFETY: PySequence_List returns a new reference (a new list) or null with an exception set.
    let combined = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_List(headers.as_ptr()))? };
    let combined = combined.cast_into::<PyList>()?;
    for pair in fields.try_iter()? {
        combined.append(pair?)?;
    }
    Ok(combined)
}

/// Appends `pending`'s fields to `message` if it starts a response, then hands it to `send`.
fn forward<'py>(
    send: &Bound<'py, PyAny>,
    pending: &Pending,
    message: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = message.py();
    if starts_response(&message.get_item(intern!(py, "type"))?) {
        if let Some(fields) = pending.held_fields(py).filter(|fields| !fields.is_empty()) {
            let fields = fields.into_any();
            let name = intern!(py, "headers");
            match get(message, name)? {
                Some(headers) if headers.is_truthy()? => {
                    // A field the response sets itself (an error handler's, a proxied upstream's) is its own.
                    let fields = if carries_any(&headers, &fields) {
                        not_in(&fields, &headers)?.into_any()
                    } else {
                        fields
                    };
                    message.set_item(name, concat(&headers, &fields)?)?;
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

/// Runs `body` for a C entry point CPython calls attached to the interpreter: a result becomes a new
/// reference, an error or a panic an exception set and null.
fn enter(what: &str, body: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyAny>>) -> *mut ffi::PyObject {
    // SAFETY: only called from the entry points below, which CPython calls attached to the interpreter;
    // nothing made here outlives the call but the new reference handed back.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(result)) => result.into_ptr(),
        Ok(Err(error)) => {
            error.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PyRuntimeError::new_err(format!("ferrolimit: a panic in {what}")).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The state a native closure was made with (see `closure`): a tuple.
///
/// # Safety
/// `slf` must be the `self` CPython passes to a function made by `closure`, alive for the call.
unsafe fn state(py: Python<'_>, slf: *mut ffi::PyObject) -> PyResult<Bound<'_, PyTuple>> {
    // SAFETY: per the contract, `slf` is a live reference, borrowed for the call.
    Ok(unsafe { Bound::from_borrowed_ptr(py, slf) }.cast_into::<PyTuple>()?)
}

/// CPython's entry for `send_with_headers`: `slf` is `(send, pending)`, `message` borrowed for the call.
unsafe extern "C" fn send_entry(slf: *mut ffi::PyObject, message: *mut ffi::PyObject) -> *mut ffi::PyObject {
    enter("send_with_headers", |py| {
        // SAFETY: CPython passes the function's `self` and a borrowed argument, both alive for the call.
        let (slf, message) = unsafe { (state(py, slf)?, Bound::from_borrowed_ptr(py, message)) };
        forward(&slf.get_item(0)?, slf.get_item(1)?.cast::<Pending>()?.get(), &message)
    })
}

/// CPython's entry for a header layer: `slf` is `(app, holder)`, `holder` a one-item list of the limiter,
/// `args` the `nargs` arguments, borrowed for the call.
unsafe extern "C" fn layer_entry(
    slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    enter("the header layer", |py| {
        if nargs != 3 || args.is_null() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "an ASGI app takes (scope, receive, send), got {nargs} arguments"
            )));
        }
        // SAFETY: CPython passes the function's `self` and `nargs` (3) borrowed arguments at `args`.
        let (slf, scope, receive, send) = unsafe {
            (
                state(py, slf)?,
                Bound::from_borrowed_ptr(py, *args),
                Bound::from_borrowed_ptr(py, *args.add(1)),
                Bound::from_borrowed_ptr(py, *args.add(2)),
            )
        };
        let (app, limiter) = (slf.get_item(0)?, slf.get_item(1)?.get_item(0)?);
        let kind = scope.get_item(intern!(py, "type"))?;
        let kind = kind.cast::<PyString>().ok().and_then(|kind| kind.to_str().ok());
        let mut send = send;
        if matches!(kind, Some("http" | "websocket")) {
            scope.set_item(intern!(py, SCOPE_ENGINE), limiter)?;
        }
        if kind == Some("http") {
            send = attach(&scope, &send)?.1;
        }
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
    })
}

/// The method table entry of a native closure; CPython only reads it.
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

static HEADER_LAYER: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"ferrolimit_headers".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFast: layer_entry,
    },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"ASGI: puts the limiter in the scope and writes the pending rate-limit fields on the response.".as_ptr(),
});

/// A builtin function over `state` (a tuple): CPython calls it with no Python frame, and with no argument
/// tuple or parsing for `METH_O` and `METH_FASTCALL`.
fn closure<'py>(def: &'static MethodDef, state: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the definition is static; PyCMethod_New keeps its own reference to `state` and returns a
    // new reference or null with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            state.py(),
            ffi::PyCMethod_New(
                std::ptr::addr_of!(def.0).cast_mut(),
                state.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        )
    }
}

/// `send`, appending `pending`'s fields to the message that starts the response; a field the response
/// already carries (set by the app, an error handler or an upstream it relays) is not repeated.
pub(crate) fn wrap<'py>(send: &Bound<'py, PyAny>, pending: &Bound<'py, Pending>) -> PyResult<Bound<'py, PyAny>> {
    closure(
        &SEND_WITH_HEADERS,
        &PyTuple::new(send.py(), [send.clone(), pending.clone().into_any()])?,
    )
}

/// The request's pending fields and the `send` to pass on: both as they are when an outer layer made the
/// fields; otherwise new fields, kept in the scope, and `send` wrapped to write them.
pub(crate) fn attach<'py>(
    scope: &Bound<'py, PyAny>,
    send: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, Pending>, Bound<'py, PyAny>)> {
    let py = scope.py();
    let key = intern!(py, SCOPE_PENDING);
    let held = match scope.cast::<PyDict>() {
        Ok(scope) => scope.get_item(key)?,
        Err(_) => scope.get_item(key).ok(),
    };
    if let Some(pending) = held {
        return Ok((pending.cast_into::<Pending>()?, send.clone()));
    }
    let pending = Bound::new(py, Pending::default())?;
    scope.set_item(key, &pending)?;
    let wrapped = wrap(send, &pending)?;
    Ok((pending, wrapped))
}

/// `(pending, send)`: the request's pending fields, and the `send` to pass on, wrapped to write them unless an
/// outer layer made them (and writes them).
#[pyfunction(name = "attach")]
pub fn py_attach<'py>(
    scope: &Bound<'py, PyAny>,
    send: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, Pending>, Bound<'py, PyAny>)> {
    attach(scope, send)
}

/// `send`, writing `pending`'s fields (see `HeaderRenderer.offer`) on the
/// message that starts the response. A field the response already carries (set by the app, an error handler
/// or an upstream it relays) is not repeated.
#[pyfunction]
pub fn send_with_headers<'py>(send: &Bound<'py, PyAny>, pending: &Bound<'py, Pending>) -> PyResult<Bound<'py, PyAny>> {
    wrap(send, pending)
}

/// The ASGI layer `FastLimit.init_app` adds around `app`: puts the limiter `holder[0]` in the scope and, on
/// HTTP, writes the request's pending fields on the response start, whoever builds the response (the
/// handler, an exception handler, a streaming body). `holder` is a one-item list, so that a later
/// `init_app` on the same app (after it started, too) puts its own limiter there. A builtin function that
/// hands back the inner app's awaitable, so it belongs inside Starlette's middleware stack, never where a
/// server inspects the app.
#[pyfunction]
pub fn header_layer<'py>(app: &Bound<'py, PyAny>, holder: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyAny>> {
    if holder.len() != 1 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "holder must be a list of one limiter",
        ));
    }
    closure(&HEADER_LAYER, &PyTuple::new(app.py(), [app, holder.as_any()])?)
}
