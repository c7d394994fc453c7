//! The only room that touches PyO3: the `demessaging_rs._core` extension module.
//!
//! GIL rules: Python is attached only to run user code, pydantic and conversions; every wait (network,
//! worker queues, shutdown) happens detached through [`runtime::wait`], which re-attaches every 100 ms
//! only to check for signals so Ctrl-C interrupts a blocked call.

#[cfg(unix)]
mod aio;
mod backend;
mod broker;
mod client;
mod errors;
mod runtime;

use pyo3::prelude::*;

/// The native core of demessaging-rs.
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::backend::{Backend, Responder};
    #[pymodule_export]
    use super::broker::Broker;
    #[pymodule_export]
    use super::client::Client;
    #[pymodule_export]
    use super::configure_rust_logging;
    #[pymodule_export]
    use super::runtime::finalize;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::init_logging(m.py());
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "build_profile",
            if cfg!(debug_assertions) { "debug" } else { "release" },
        )?;
        Ok(())
    }
}

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

fn init_logging(py: Python<'_>) {
    // NOTE: records below INFO never reach Python by default: each record takes the GIL, and the data path
    // logs at debug level. `configure_rust_logging` lowers the filter when a user asks for debug output.
    if let Ok(logger) = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels) {
        if let Ok(reset) = GuardedLogger(logger.filter(log::LevelFilter::Trace)).install() {
            let _ = LOG_RESET.set(reset);
        }
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Let records of the Rust core at `level` (a Python logging level) and above reach Python `logging`, and
/// forget the logger levels cached so far (call it after changing the logging configuration).
#[pyfunction]
fn configure_rust_logging(level: u32) {
    let filter = match level {
        0..=5 => log::LevelFilter::Trace,
        6..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
    if let Some(reset) = LOG_RESET.get() {
        reset.reset();
    }
}

/// pyo3-log's logger, entered only while the interpreter is not shutting down (see `runtime::finalize`).
struct GuardedLogger(pyo3_log::Logger);

impl GuardedLogger {
    fn install(self) -> Result<pyo3_log::ResetHandle, log::SetLoggerError> {
        let reset = self.0.reset_handle();
        log::set_boxed_logger(Box::new(self))?;
        Ok(reset)
    }
}

impl log::Log for GuardedLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !runtime::finalizing() && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        // pyo3-log takes the GIL itself; `attach` only brackets it so that finalize() can wait for it
        let _ = runtime::attach(|_py| self.0.log(record));
    }

    fn flush(&self) {}
}
