//! The process-wide tokio runtime, built lazily, shared with pyo3-async-runtimes, and the one helper
//! every blocking entry point uses to wait without holding the GIL.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime (started on first use).
pub(crate) fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
            .thread_name("demessaging-rs")
            .enable_all()
            .build()
            .expect("tokio runtime starts");
        rt
    })
}

/// Make sure pyo3-async-runtimes uses our runtime.
#[cfg(not(unix))]
pub(crate) fn init_async() -> &'static Runtime {
    let rt = get();
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt);
    });
    rt
}

/// Run `fut` on the runtime and wait for it detached from Python. Every 100 ms the GIL is taken briefly to
/// run signal handlers; if one raises (Ctrl-C), the future is dropped and the error returned.
pub(crate) fn wait<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let rt = get();
    let (tx, rx) = crossbeam_channel::bounded::<T>(1);
    let task = rt.spawn(async move {
        let out = fut.await;
        let _ = tx.send(out);
    });
    loop {
        match py.detach(|| {
            let r = rx.recv_timeout(Duration::from_millis(100));
            stay_detached_if_finalizing();
            r
        }) {
            Ok(v) => return Ok(v),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    task.abort();
                    return Err(e);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "internal task ended without a result",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------- exit
// A thread that takes the GIL while the interpreter finalizes is ended by CPython with `pthread_exit`,
// which unwinds through Rust frames and aborts the process. So from `finalize()` (an atexit hook, run
// before finalization) on, no thread of ours enters Python: `attach` refuses, waits end detached.

static FINALIZING: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run `f` with the GIL from a thread of ours, unless the interpreter is shutting down (then `None`).
pub(crate) fn attach<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    if FINALIZING.load(Ordering::SeqCst) {
        return None;
    }
    Some(Python::attach(f))
}

/// Whether the interpreter is shutting down.
pub(crate) fn finalizing() -> bool {
    FINALIZING.load(Ordering::SeqCst)
}

/// Call at the end of a detached section: once the interpreter shuts down, never return to Python (the
/// thread sleeps until the process ends, like any daemon thread).
pub(crate) fn stay_detached_if_finalizing() {
    if finalizing() {
        loop {
            std::thread::park();
        }
    }
}

/// The atexit hook: from now on no thread of ours enters Python; waits (GIL released, at most 5 s) for the
/// ones inside to leave. Also stops passing Rust log records to Python.
#[pyfunction]
pub(crate) fn finalize(py: Python<'_>) {
    // the core's records queued so far still reach Python logging (see `QueuedLogger`)
    py.detach(|| log::logger().flush());
    FINALIZING.store(true, Ordering::SeqCst);
    log::set_max_level(log::LevelFilter::Off);
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
