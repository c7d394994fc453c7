//! `Broker`: the embedded broker, started on the shared runtime.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use super::errors::config_err;
use super::runtime;
use crate::broker::{Broker as RsBroker, BrokerConfig};

/// A running embedded broker.
#[pyclass(frozen, module = "demessaging_rs._core")]
pub struct Broker {
    host: String,
    port: u16,
    /// `ws` or `wss`.
    scheme: &'static str,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A runtime of its own (`threads=` given), shut down with the broker.
    own_runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

#[pymethods]
impl Broker {
    /// Bind and start serving at once (port 0 picks a free port).
    #[new]
    #[pyo3(signature = (host="127.0.0.1", port=8080, *, max_frame_size=None, max_connections=None, tokens=None, receiver_queue_size=None, publish_hold=None, threads=None, tls_cert=None, tls_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        max_frame_size: Option<usize>,
        max_connections: Option<usize>,
        tokens: Option<Vec<String>>,
        receiver_queue_size: Option<usize>,
        publish_hold: Option<f64>,
        threads: Option<usize>,
        tls_cert: Option<std::path::PathBuf>,
        tls_key: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let tls = match (tls_cert, tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(crate::broker::tls_server_config(&cert, &key).map_err(config_err)?),
            _ => return Err(config_err("TLS needs both a certificate file and a key file")),
        };
        let mut cfg = BrokerConfig {
            tls,
            ..BrokerConfig::default()
        };
        let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
        if let Some(v) = max_frame_size {
            cfg.max_frame_size = v;
        }
        if let Some(v) = max_connections {
            cfg.max_connections = v;
        }
        if let Some(v) = receiver_queue_size {
            cfg.receiver_queue_size = v.max(1);
        }
        if let Some(v) = publish_hold {
            cfg.publish_hold = Duration::from_secs_f64(v.max(0.0));
        }
        cfg.tokens = tokens
            .map(|lines| crate::broker::Tokens::parse(lines.iter().map(String::as_str)))
            .transpose()
            .map_err(|e| config_err(format!("tokens: {e}")))?;
        let addr = format!("{host}:{port}");
        let sock: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| config_err(format!("cannot resolve {addr}: {e}")))?
            .next()
            .ok_or_else(|| config_err(format!("cannot resolve {addr}")))?;
        // NOTE: `threads=n` gives the broker its own runtime: the standalone broker is fastest with one
        // thread per two cores (bench/bench_broker.py); in-process brokers share the package's runtime.
        let own_runtime = match threads {
            None => None,
            Some(n) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n.clamp(1, 64))
                    .thread_name("dasf-broker")
                    .enable_all()
                    .build()
                    .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot start broker threads: {e}")))?,
            ),
        };
        let handle = own_runtime
            .as_ref()
            .map_or_else(|| runtime::get().handle().clone(), |rt| rt.handle().clone());
        let bind_handle = handle.clone();
        let bound = runtime::wait(py, async move {
            bind_handle
                .spawn(async move { RsBroker::bind(sock, cfg).await })
                .await
                .expect("bind task")
        })?
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot listen on {addr}: {e}")))?;
        let local = bound
            .local_addr()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        let cancel = CancellationToken::new();
        let task = handle.spawn(bound.serve(cancel.clone()));
        Ok(Self {
            host: local.ip().to_string(),
            port: local.port(),
            scheme,
            cancel,
            task: Mutex::new(Some(task)),
            own_runtime: Mutex::new(own_runtime),
        })
    }

    /// The bound host address.
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// `ws://host:port`.
    #[getter]
    fn url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// Whether the broker still serves.
    #[getter]
    fn running(&self) -> bool {
        !self.cancel.is_cancelled()
    }

    /// Stop: close every connection and wait for them (at most `timeout` seconds).
    #[pyo3(signature = (timeout=10.0))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        self.cancel.cancel();
        let task = self.task.lock().expect("broker lock").take();
        if let Some(task) = task {
            let limit = Duration::from_secs_f64(timeout.max(0.0));
            runtime::wait(py, async move {
                let _ = tokio::time::timeout(limit, task).await;
            })?;
        }
        if let Some(rt) = self.own_runtime.lock().expect("broker lock").take() {
            rt.shutdown_background();
        }
        Ok(())
    }

    /// Serve until Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the caller), then stop.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let cancel = self.cancel.clone();
        let r = runtime::wait(py, async move { cancel.cancelled().await });
        self.stop(py, 10.0)?;
        r
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.own_runtime.get_mut().ok().and_then(Option::take) {
            rt.shutdown_background();
        }
    }
}
