//! Completing asyncio futures from the Rust core in batches, without taking the GIL off the event loop.
//!
//! Each event loop gets one [`Completer`] (stored on the loop object). A finished call pushes its outcome
//! onto the completer's queue; the first push after a drain writes one byte to a socket pair whose reading
//! end the loop watches (`loop.add_reader`). The loop then runs [`Completer::drain`] once, with the GIL it
//! already holds, and completes every future that is ready. So a batch of N results costs one wake-up and
//! no GIL acquisition on our threads (pyo3-async-runtimes takes the GIL and calls `call_soon_threadsafe`
//! per future) — and no thread of ours touches Python while the interpreter finalizes.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{PyTraverseError, PyVisit};

use super::errors::client_err;
use crate::client::{ClientError, Reply};

/// The attribute of the event loop object that holds its completer.
const LOOP_ATTR: &str = "_demessaging_rs_completer";

/// The outcome of a call, converted to Python on the loop.
pub(crate) type Outcome = Result<Reply, ClientError>;

/// What a finished call hands to the loop: its future and how to complete it.
struct Done {
    future: Py<PyAny>,
    outcome: Outcome,
    /// Whether the result carries the reply's properties (a dict) or `None` in their place.
    properties: bool,
}

/// The part of a completer that other threads use: plain Rust, no Python references (a future travels
/// into the queue and is only touched again, and dropped, on the loop).
pub(crate) struct Shared {
    queue: Mutex<Vec<Done>>,
    scheduled: AtomicBool,
    wake_tx: UnixStream,
}

impl Shared {
    /// Queue the outcome of `future`; wakes the loop if it is not already due to drain. Any thread, no GIL.
    pub(crate) fn push(&self, future: Py<PyAny>, outcome: Outcome, properties: bool) {
        self.queue.lock().expect("completer queue").push(Done {
            future,
            outcome,
            properties,
        });
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            // a full socket buffer means a wake-up is pending anyway
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

/// Receives outcomes from any thread and completes their futures on one event loop.
#[pyclass(frozen, module = "demessaging_rs._core")]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    event_loop: Mutex<Option<Py<PyAny>>>,
}

impl Completer {
    /// The completer of the running loop of this thread (created and registered on first use).
    pub(crate) fn of_running_loop<'py>(py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, Completer>)> {
        static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let get = GET_RUNNING_LOOP.get_or_try_init(py, || {
            py.import("asyncio")?.getattr("get_running_loop").map(Bound::unbind)
        })?;
        let event_loop = get.bind(py).call0()?;
        if let Ok(found) = event_loop.getattr(LOOP_ATTR) {
            if let Ok(c) = found.cast_into::<Completer>() {
                return Ok((event_loop, c));
            }
        }
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let fd = wake_rx.as_raw_fd();
        let completer = Bound::new(
            py,
            Completer {
                shared: Arc::new(Shared {
                    queue: Mutex::new(Vec::new()),
                    scheduled: AtomicBool::new(false),
                    wake_tx,
                }),
                wake_rx,
                event_loop: Mutex::new(Some(event_loop.clone().unbind())),
            },
        )?;
        event_loop.call_method1("add_reader", (fd, completer.getattr("drain")?))?;
        event_loop.setattr(LOOP_ATTR, &completer)?;
        Ok((event_loop, completer))
    }
}

#[pymethods]
impl Completer {
    /// Complete every future whose outcome arrived (runs on the event loop).
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut sink = [0u8; 256];
        loop {
            match (&self.wake_rx).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: nothing more to read
            }
        }
        // clear before taking, so a push after the take wakes the loop again
        self.shared.scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *self.shared.queue.lock().expect("completer queue"));
        for done in batch {
            let fut = done.future.bind(py);
            if fut.call_method0("done")?.is_truthy()? {
                continue; // cancelled meanwhile
            }
            let reply = done.outcome.map_err(client_err).and_then(|r| {
                if done.properties {
                    super::client::reply_to_py(py, r)?
                        .into_pyobject(py)
                        .map(|t| t.into_any().unbind())
                } else {
                    super::client::reply_to_py_bare(py, r)
                }
            });
            match reply {
                Ok(reply) => fut.call_method1("set_result", (reply,))?,
                Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
            };
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(l) = self.event_loop.try_lock() {
            if let Some(l) = l.as_ref() {
                visit.call(l)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Ok(mut l) = self.event_loop.try_lock() {
            l.take();
        }
    }
}

/// Aborts the Rust side of a call when its asyncio future is cancelled (a done callback).
#[pyclass(frozen, module = "demessaging_rs._core")]
pub(crate) struct AbortOnCancel {
    pub(crate) task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
        }
        Ok(())
    }
}

/// Start `work` on the runtime and return an asyncio future of the running loop that resolves to its
/// outcome; cancelling the future drops `work`.
pub(crate) fn spawn_for_loop<'py, F>(py: Python<'py>, work: F, properties: bool) -> PyResult<Bound<'py, PyAny>>
where
    F: std::future::Future<Output = Outcome> + Send + 'static,
{
    let (event_loop, completer) = Completer::of_running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let shared = completer.get().shared.clone();
    let target = future.clone().unbind();
    let task = super::runtime::get().spawn(async move {
        let outcome = work.await;
        shared.push(target, outcome, properties);
    });
    let abort = AbortOnCancel {
        task: task.abort_handle(),
    };
    future.call_method1("add_done_callback", (abort,))?;
    Ok(future)
}

/// Start a call with `start(on_done)` (which writes the request, GIL released) and return an asyncio future
/// of the running loop that `on_done` completes through the loop's completer.
pub(crate) fn start_for_loop<'py, F>(py: Python<'py>, start: F, properties: bool) -> PyResult<Bound<'py, PyAny>>
where
    F: FnOnce(crate::client::OnDone) -> Result<(), ClientError> + Send,
{
    let (event_loop, completer) = Completer::of_running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let shared = completer.get().shared.clone();
    let target = future.clone().unbind();
    let on_done: crate::client::OnDone = Box::new(move |outcome| shared.push(target, outcome, properties));
    py.detach(|| start(on_done)).map_err(client_err)?;
    Ok(future)
}
