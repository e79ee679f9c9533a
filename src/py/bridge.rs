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

/// Runs `work` on the tokio runtime and returns an asyncio future of its result.
pub(super) fn spawn<F>(py: Python<'_>, work: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = Done> + Send + 'static,
{
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get_running_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?;
    let event_loop = get_running_loop.call0()?;
    match imp::completer_for(py, &event_loop)? {
        Some(completer) => imp::spawn(py, &event_loop, &completer, work),
        None => pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let done = work.await;
            Python::attach(|py| done.into_py(py))
        }),
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
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
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
