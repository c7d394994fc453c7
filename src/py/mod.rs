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
        let logger = logger.filter(log::LevelFilter::Trace);
        let reset = logger.reset_handle();
        let (tx, rx) = std::sync::mpsc::sync_channel(LOG_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("dasf-log".into())
            .spawn(move || pass_on(&logger, rx));
        if spawned.is_ok() && log::set_boxed_logger(Box::new(QueuedLogger(tx))).is_ok() {
            let _ = LOG_RESET.set(reset);
            log::set_max_level(log::LevelFilter::Info);
        }
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

/// Records of the Rust core waiting for the GIL; beyond this many, new ones are dropped.
const LOG_QUEUE: usize = 4096;

/// A record of the Rust core on its way to Python `logging`, or a request to say when all before it went.
enum Queued {
    Record {
        level: log::Level,
        target: String,
        module_path: Option<String>,
        file: Option<String>,
        line: Option<u32>,
        message: String,
    },
    Flushed(std::sync::mpsc::SyncSender<()>),
}

/// Hands records to the `dasf-log` thread, which passes them to Python `logging` (pyo3-log) with the GIL.
///
/// NOTE: a thread that logs never waits for the GIL. Logging where it happens blocked a runtime thread
/// while a backend function held the GIL (one C call of 30 s: a ping took 32 s; a longer one let the broker
/// drop the backend's connection), and a record logged on the data path stalled every connection of that
/// thread for up to a GIL switch interval.
struct QueuedLogger(std::sync::mpsc::SyncSender<Queued>);

impl log::Log for QueuedLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        !runtime::finalizing()
    }

    fn log(&self, record: &log::Record<'_>) {
        if runtime::finalizing() {
            return;
        }
        let _ = self.0.try_send(Queued::Record {
            level: record.level(),
            target: record.target().to_owned(),
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
            line: record.line(),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {
        // from `runtime::finalize`, GIL released: until the records queued so far reached Python (bounded)
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.0.try_send(Queued::Flushed(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// The `dasf-log` thread: pass queued records to Python `logging`, each with the GIL (never once the
/// interpreter shuts down, see `runtime::attach`).
fn pass_on(logger: &pyo3_log::Logger, rx: std::sync::mpsc::Receiver<Queued>) {
    use log::Log;
    for queued in rx {
        match queued {
            Queued::Record {
                level,
                target,
                module_path,
                file,
                line,
                message,
            } => {
                let _ = runtime::attach(|_py| {
                    logger.log(
                        &log::Record::builder()
                            .args(format_args!("{message}"))
                            .level(level)
                            .target(&target)
                            .module_path(module_path.as_deref())
                            .file(file.as_deref())
                            .line(line)
                            .build(),
                    )
                });
            }
            Queued::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
}
