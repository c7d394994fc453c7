//! The process-wide tokio runtime, built lazily, shared with pyo3-async-runtimes, and the one helper
//! every blocking entry point uses to wait without holding the GIL.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

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
        match py.detach(|| rx.recv_timeout(Duration::from_millis(100))) {
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
