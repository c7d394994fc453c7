//! The one mapping from Rust errors to Python exceptions. The exception classes live in
//! `demessaging_rs.exceptions` (they need several builtin bases, e.g. `CallTimeout(DemessagingError,
//! TimeoutError)`), and are looked up once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::backend::BackendError;
use crate::client::ClientError;
use crate::transport::TransportError;

fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("demessaging_rs.exceptions").map(Bound::unbind))?;
    Ok(m.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

fn make(name: &'static str, msg: String) -> PyErr {
    Python::attach(|py| match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    })
}

pub(crate) fn client_err(e: ClientError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClientError::Timeout { .. } => make("CallTimeout", msg),
        ClientError::Transport(t) => transport_err(t),
        ClientError::ConnectionLost | ClientError::Closed => make("BrokerConnectionError", msg),
        ClientError::Rejected(_) => make("RequestRejected", msg),
        ClientError::BadReply(_) => make("InvalidReply", msg),
    }
}

pub(crate) fn transport_err(e: TransportError) -> PyErr {
    let msg = e.to_string();
    match e {
        TransportError::InvalidUrl(..) | TransportError::InvalidHeader(..) => make("ConfigurationError", msg),
        _ => make("BrokerConnectionError", msg),
    }
}

pub(crate) fn backend_err(e: BackendError) -> PyErr {
    match e {
        BackendError::Transport(t) => transport_err(t),
        BackendError::Config(_) => make("ConfigurationError", e.to_string()),
        BackendError::Thread(_) => make("DemessagingError", e.to_string()),
    }
}

pub(crate) fn config_err(msg: impl Into<String>) -> PyErr {
    make("ConfigurationError", msg.into())
}
