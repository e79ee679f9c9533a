//! Awaitables for Redis calls that finish on tokio threads without those threads ever taking the GIL.
//!
//! Each asyncio event loop gets one `Completer`: a queue of (asyncio future, result) pairs and a
//! nonblocking socket pair whose read end is registered with `loop.add_reader`. A finished tokio task
//! pushes its pair and, unless a wake-up is already pending, writes one byte; the loop then calls
//! `drain` on its own thread, where the GIL is held anyway, and completes every queued future in one
//! batch. On loops without `add_reader` (Windows' proactor) and on platforms without Unix sockets,
//! calls go through `pyo3_async_runtimes::tokio::future_into_py` as before.

use std::future::Future;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::concurrency::Lease;
use super::errors::Error;
use super::Decision;

/// What a Redis call produced, built on the tokio thread; turned into Python objects on the loop's thread.
pub(super) enum Done {
    Decision(Decision),
    Lease(Lease),
    Bool(bool),
    Unit,
    Failed(Error),
    /// The task panicked or was dropped before it finished (the runtime shutting down).
    Lost,
}

impl Done {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Done::Decision(decision) => Ok(Py::new(py, decision)?.into_any()),
            Done::Lease(lease) => Ok(Py::new(py, lease)?.into_any()),
            Done::Bool(value) => Ok(value.into_pyobject(py)?.to_owned().into_any().unbind()),
            Done::Unit => Ok(py.None()),
            Done::Failed(error) => Err(error.into()),
            Done::Lost => Err(PyRuntimeError::new_err(
                "ferrolimit: the Redis call stopped before it finished",
            )),
        }
    }
}

/// Runs `work` on the tokio runtime and returns a coroutine of its result (see `Call`).
pub(super) fn spawn<F>(py: Python<'_>, work: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = Done> + Send + 'static,
{
    static GET_EVENT_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let running = GET_EVENT_LOOP.import(py, "asyncio", "_get_running_loop")?.call0()?;
    let state = if running.is_none() {
        State::Unstarted(parking_lot::Mutex::new(Box::pin(work)))
    } else {
        State::Started(
            start(py, &running, work)?
                .call_method0(intern!(py, "__await__"))?
                .unbind(),
        )
    };
    Ok(Bound::new(py, Call { state, awaited: false })?.into_any())
}

/// Starts `work` for `event_loop` and returns the asyncio future of its result.
fn start<'py, F>(py: Python<'py>, event_loop: &Bound<'py, PyAny>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Done> + Send + 'static,
{
    match imp::completer_for(py, event_loop)? {
        Some(completer) => imp::spawn(py, event_loop, &completer, work),
        // pyo3-async-runtimes' own runtime, not this process's (see `runtime`): only loops that cannot watch a
        // file come here, Windows' proactor above all, where nothing forks.
        None => pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let done = work.await;
            Python::attach(|py| done.into_py(py))
        }),
    }
}

/// Warns, as CPython does for a coroutine, that an awaitable of ferrolimit's was collected without being
/// awaited: `what` says what was lost. Called from a destructor: an exception in flight is kept, and one the
/// warning raises (warnings as errors) is reported as unraisable.
pub(super) fn warn_never_awaited(what: &str) {
    Python::try_attach(|py| {
        let in_flight = PyErr::take(py);
        let message = format!("ferrolimit: an *_async call was never awaited: {what}");
        let warned = std::ffi::CString::new(message).map_err(|error| PyRuntimeError::new_err(error.to_string()));
        let warned = warned
            .and_then(|message| PyErr::warn(py, &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(), &message, 1));
        if let Err(error) = warned {
            error.write_unraisable(py, None);
        }
        if let Some(in_flight) = in_flight {
            in_flight.restore(py);
        }
    });
}

/// The exception `throw(kind, value)` raises: `kind` itself if it is one, else `kind(value)` or `kind()`.
pub(super) fn thrown(kind: &Bound<'_, PyAny>, value: Option<&Bound<'_, PyAny>>) -> PyResult<PyErr> {
    if kind.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return Ok(PyErr::from_value(kind.clone()));
    }
    Ok(PyErr::from_value(match value {
        Some(value) if !value.is_none() => kind.call1((value,))?,
        _ => kind.call0()?,
    }))
}

type Work = std::pin::Pin<Box<dyn Future<Output = Done> + Send>>;

enum State {
    /// Called with no event loop running: starts when first awaited, on the loop that awaits it. (In a
    /// mutex only to be `Sync`, as a Python object must: `&mut self` methods never wait on it.)
    Unstarted(parking_lot::Mutex<Work>),
    /// The iterator of the asyncio future it waits on.
    Started(Py<PyAny>),
    Finished,
}

/// What the `*_async` methods return for a Redis call: a coroutine, as an `async def` method's would be, so
/// `asyncio.run`, `asyncio.create_task` and task groups take it as well as `await` does. Called inside a
/// running event loop, the call is on its way to Redis already; called outside one (`asyncio.run(
/// limiter.hit_async(key))`), it starts when first awaited.
#[pyclass(module = "ferrolimit._core")]
pub struct Call {
    state: State,
    /// Whether anyone awaited it (or closed it), as a collected coroutine's warning goes by.
    awaited: bool,
}

impl Drop for Call {
    fn drop(&mut self) {
        match self.state {
            _ if self.awaited => {}
            State::Unstarted(_) => warn_never_awaited("made outside an event loop, it never ran"),
            State::Started(_) => warn_never_awaited("it was sent, and its result was dropped"),
            State::Finished => {}
        }
    }
}

#[pymethods]
impl Call {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.send(py, &py.None().into_bound(py))
    }

    fn send(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.awaited = true;
        let iterator = match std::mem::replace(&mut self.state, State::Finished) {
            State::Unstarted(work) => {
                let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
                start(py, &event_loop, work.into_inner())?
                    .call_method0(intern!(py, "__await__"))?
                    .unbind()
            }
            State::Started(iterator) => iterator,
            State::Finished => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse an already awaited ferrolimit call",
                ));
            }
        };
        let sent = iterator.bind(py).call_method1(intern!(py, "send"), (value,))?;
        self.state = State::Started(iterator);
        Ok(sent.unbind())
    }

    #[pyo3(signature = (kind, value=None, traceback=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        kind: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.awaited = true;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Started(iterator) => {
                // Only the arguments given: the three-argument form is deprecated from Python 3.12.
                let throw = iterator.bind(py).getattr(intern!(py, "throw"))?;
                let thrown = match (value, traceback) {
                    (None, None) => throw.call1((kind,))?,
                    (value, None) => throw.call1((kind, value))?,
                    (value, traceback) => throw.call1((kind, value, traceback))?,
                };
                self.state = State::Started(iterator);
                Ok(thrown.unbind())
            }
            // Never started: nothing to stop, the exception goes back to the caller as it came.
            _ => Err(thrown(kind, value)?),
        }
    }

    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.awaited = true;
        if let State::Started(iterator) = std::mem::replace(&mut self.state, State::Finished) {
            iterator.bind(py).call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }
}

#[cfg(unix)]
mod imp {
    use std::future::Future;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use parking_lot::Mutex;
    use pyo3::exceptions::PyNotImplementedError;
    use pyo3::intern;
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

    use super::super::runtime::runtime;
    use super::Done;

    type Queue = Vec<(Py<PyAny>, Done)>;

    /// What the tokio tasks of one event loop share with its `Completer`.
    struct Shared {
        queue: Mutex<Queue>,
        /// A wake-up byte is on its way (or the completer is gone): finished tasks only queue.
        signaled: AtomicBool,
        writer: UnixStream,
    }

    impl Shared {
        /// Called on a tokio thread: no GIL, no Python.
        fn complete(&self, future: Py<PyAny>, done: Done) {
            self.queue.lock().push((future, done));
            if !self.signaled.swap(true, Ordering::SeqCst) {
                // At most one byte is ever unread, so this never blocks; if the reader is gone, nobody waits.
                let _ = (&self.writer).write(&[1]);
            }
        }
    }

    /// Completes, on its event loop's thread, the futures whose Redis calls finished.
    #[pyclass(module = "ferrolimit._core", frozen)]
    pub struct Completer {
        shared: Arc<Shared>,
        reader: UnixStream,
        event_loop: Py<PyWeakrefReference>,
    }

    #[pymethods]
    impl Completer {
        /// The loop's reader callback: sets the result of every finished call whose future still waits.
        fn drain(&self, py: Python<'_>) {
            let mut bytes = [0_u8; 64];
            loop {
                match (&self.reader).read(&mut bytes) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // Before taking the queue: a task that queues after this store writes a new byte.
            self.shared.signaled.store(false, Ordering::SeqCst);
            let batch = std::mem::take(&mut *self.shared.queue.lock());
            for (future, done) in batch {
                if let Err(error) = settle(py, future.bind(py), done) {
                    error.write_unraisable(py, Some(future.bind(py)));
                }
            }
        }
    }

    fn settle(py: Python<'_>, future: &Bound<'_, PyAny>, done: Done) -> PyResult<()> {
        // A cancelled await leaves a done future: its late result is dropped here.
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match done.into_py(py) {
            Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
            Err(error) => future.call_method1(intern!(py, "set_exception"), (error.into_value(py),))?,
        };
        Ok(())
    }

    impl Drop for Completer {
        fn drop(&mut self) {
            // Late tasks only queue from now on; the sockets close with this struct and the last task.
            self.shared.signaled.store(true, Ordering::SeqCst);
            drop(std::mem::take(&mut *self.shared.queue.lock()));
        }
    }

    /// The completer of the loop that ran last, checked first.
    static LAST: Mutex<Option<Py<Completer>>> = Mutex::new(None);
    /// `weakref.WeakKeyDictionary`: loop -> its `Completer`, or `False` for a loop without `add_reader`.
    static BY_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

    fn owns(py: Python<'_>, completer: &Py<Completer>, event_loop: &Bound<'_, PyAny>) -> bool {
        completer
            .get()
            .event_loop
            .bind(py)
            .upgrade()
            .is_some_and(|known| known.is(event_loop))
    }

    /// This loop's completer, created and registered on first use; `None` when the loop cannot watch a file.
    pub(super) fn completer_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Py<Completer>>> {
        if let Some(last) = LAST.lock().as_ref() {
            if owns(py, last, event_loop) {
                return Ok(Some(last.clone_ref(py)));
            }
        }
        let by_loop = BY_LOOP
            .get_or_try_init(py, || -> PyResult<_> {
                Ok(py.import("weakref")?.call_method0("WeakKeyDictionary")?.unbind())
            })?
            .bind(py);
        let known = by_loop.call_method1(intern!(py, "get"), (event_loop,))?;
        let completer = if known.is_none() {
            let Some(completer) = register(py, event_loop)? else {
                by_loop.set_item(event_loop, false)?;
                return Ok(None);
            };
            by_loop.set_item(event_loop, completer.clone_ref(py))?;
            completer
        } else if let Ok(completer) = known.cast_into::<Completer>() {
            completer.unbind()
        } else {
            return Ok(None);
        };
        let previous = LAST.lock().replace(completer.clone_ref(py));
        drop(previous);
        Ok(Some(completer))
    }

    fn register(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Py<Completer>>> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let fd = reader.as_raw_fd();
        let completer = Py::new(
            py,
            Completer {
                shared: Arc::new(Shared {
                    queue: Mutex::new(Vec::new()),
                    signaled: AtomicBool::new(false),
                    writer,
                }),
                reader,
                event_loop: PyWeakrefReference::new(event_loop)?.unbind(),
            },
        )?;
        let drain = completer.getattr(py, intern!(py, "drain"))?;
        match event_loop.call_method1(intern!(py, "add_reader"), (fd, drain)) {
            Ok(_) => Ok(Some(completer)),
            Err(error) if error.is_instance_of::<PyNotImplementedError>(py) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Completes the future with `Done::Lost` if the task ends without a result (panic, runtime shutdown).
    struct Pending {
        shared: Arc<Shared>,
        future: Option<Py<PyAny>>,
    }

    impl Drop for Pending {
        fn drop(&mut self) {
            if let Some(future) = self.future.take() {
                self.shared.complete(future, Done::Lost);
            }
        }
    }

    pub(super) fn spawn<'py, F>(
        py: Python<'py>,
        event_loop: &Bound<'py, PyAny>,
        completer: &Py<Completer>,
        work: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let future = event_loop.call_method0(intern!(py, "create_future"))?;
        let mut pending = Pending {
            shared: Arc::clone(&completer.get().shared),
            future: Some(future.clone().unbind()),
        };
        runtime().spawn(async move {
            let done = work.await;
            if let Some(future) = pending.future.take() {
                pending.shared.complete(future, done);
            }
        });
        Ok(future)
    }
}

#[cfg(not(unix))]
mod imp {
    use std::future::Future;

    use pyo3::prelude::*;

    use super::Done;

    pub(super) enum Completer {}

    pub(super) fn completer_for(_py: Python<'_>, _event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Completer>> {
        Ok(None)
    }

    pub(super) fn spawn<'py, F>(
        _py: Python<'py>,
        _event_loop: &Bound<'py, PyAny>,
        completer: &Completer,
        _work: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = Done> + Send + 'static,
    {
        match *completer {}
    }
}
