//! `Backend`: serves a module topic, running requests through a Python callable on worker threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyDict, PyString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::client::ConnSpec;
use super::errors::{backend_err, config_err};
use super::runtime;
use crate::backend::{self, BackendConfig, Handler, Replier, Request};
use crate::protocol::dasf::{MessageType, Status};
use crate::transport::Backoff;

#[derive(Debug, Deserialize)]
struct ServeSpec {
    topic: String,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    subscription_type: Option<String>,
    #[serde(default)]
    max_workers: Option<usize>,
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    producer_keep_alive: Option<f64>,
    #[serde(default)]
    producer_connection_timeout: Option<f64>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    api_info: Option<String>,
    #[serde(default)]
    max_connect_attempts: Option<u32>,
}

struct PyHandler {
    func: Py<PyAny>,
    on_drain: Option<Py<PyAny>>,
}

impl Handler for PyHandler {
    fn handle(&self, request: &Request, replier: &Replier) -> Option<Result<Bytes, String>> {
        // None while the interpreter shuts down: no reply then (the caller's timeout ends its wait)
        runtime::attach(|py| {
            let responder = Responder {
                replier: replier.clone(),
                message_id: request.message_id.clone(),
            };
            let result = self
                .func
                .call1(py, (PyString::new(py, &request.payload), responder))
                .and_then(|r| r.extract::<Option<(bool, Bound<'_, PyAny>)>>(py));
            match result {
                // NOTE: the reply is not copied (kept alive until it is sent): the JSON bytes pydantic wrote
                // (no decode into a str on the way), or a str
                Ok(Some((true, body))) => Some(match body.cast::<PyBytes>() {
                    Ok(b) => Ok(Bytes::from_owner(PyBackedBytes::from(b.clone()))),
                    Err(_) => body
                        .extract::<PyBackedStr>()
                        .map(Bytes::from_owner)
                        .map_err(|e| format!("error executing request: {e}")),
                }),
                Ok(Some((false, text))) => Some(Err(text.to_string())),
                // the handler sent its replies itself (the reference's `MessageConsumer` style)
                Ok(None) => None,
                Err(e) => Some(Err(format!("error executing request: {e}"))),
            }
        })
        .flatten()
    }

    // NOTE: the worker thread keeps one Python thread state for its lifetime (attached once, detached while
    // it waits for jobs); attaching per job would create and destroy a thread state every request.
    fn drain(&self) {
        if let Some(f) = &self.on_drain {
            runtime::attach(|py| {
                if let Err(e) = f.call0(py) {
                    e.print(py);
                }
            });
        }
    }

    fn worker_scope(&self, body: &mut (dyn FnMut() + Send)) {
        runtime::attach(|py| {
            py.detach(|| {
                body();
                runtime::stay_detached_if_finalizing();
            })
        });
    }
}

/// Lets Python code send extra messages (progress reports) to the caller of the running request.
#[pyclass(frozen, module = "demessaging_rs._core")]
pub struct Responder {
    replier: Replier,
    message_id: String,
}

#[pymethods]
impl Responder {
    /// The caller's context.
    #[getter]
    fn request_context(&self) -> &str {
        &self.replier.meta().context
    }

    /// The topic replies go to.
    #[getter]
    fn response_topic(&self) -> &str {
        &self.replier.meta().response_topic
    }

    /// The broker's id of the request message.
    #[getter]
    fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Send a message of `message_type` (e.g. "progress") with optional `status`, payload and extra
    /// properties to the caller. Blocks only while the reply producer's queue is full; with `wait=False`
    /// it never blocks (for an event loop: the message is queued behind those sent before).
    #[pyo3(signature = (message_type, payload, status=None, properties=None, wait=true))]
    fn send(
        &self,
        py: Python<'_>,
        message_type: &str,
        payload: &Bound<'_, PyAny>,
        status: Option<&str>,
        properties: Option<&Bound<'_, PyDict>>,
        wait: bool,
    ) -> PyResult<()> {
        let mt = MessageType::parse(message_type)
            .ok_or_else(|| config_err(format!("unknown message type {message_type:?}")))?;
        let status = match status {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| config_err(format!("unknown status {s:?}")))?),
        };
        let payload = super::client::payload_bytes(payload)?;
        let mut extra = Vec::new();
        if let Some(p) = properties {
            for (k, v) in p.iter() {
                let v: serde_json::Value = pythonize::depythonize(&v).map_err(|e| config_err(e.to_string()))?;
                extra.push((k.extract::<String>()?, v));
            }
        }
        let replier = self.replier.clone();
        if wait {
            py.detach(move || replier.send_blocking(mt, status, payload, extra));
        } else {
            runtime::get().spawn(async move { replier.send(mt, status, payload, extra).await });
        }
        Ok(())
    }
}

/// A backend module serving one topic.
#[pyclass(frozen, module = "demessaging_rs._core")]
pub struct Backend {
    cfg: BackendConfig,
    handler: Arc<PyHandler>,
    cancel: CancellationToken,
    running: Mutex<bool>,
}

#[pymethods]
impl Backend {
    /// `Backend(connection, serve, handler, on_drain=None)`. `handler(payload: str, responder) -> (ok: bool,
    /// text: str)` runs on a worker thread for every request; a handler returning `None` replies through
    /// `responder` itself (now or later). `on_drain()` runs once at shutdown after the workers finished
    /// and before the reply connections close.
    #[new]
    #[pyo3(signature = (connection, serve, handler, on_drain=None))]
    fn new(
        connection: &Bound<'_, PyDict>,
        serve: &Bound<'_, PyDict>,
        handler: Py<PyAny>,
        on_drain: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let conn = ConnSpec::from_py(connection)?;
        let spec: ServeSpec =
            pythonize::depythonize(serve.as_any()).map_err(|e| config_err(format!("invalid backend settings: {e}")))?;
        let max_workers = spec
            .max_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get() + 4).min(32));
        // no queue_size (the reference's default, unbounded): a small internal queue, and deliveries wait
        // for room instead of being rejected (see BackendConfig::overflow_replies)
        let overflow_replies = spec.queue_size.is_some();
        let queue_size = spec.queue_size.unwrap_or(max_workers.max(1));
        if queue_size < max_workers {
            return Err(config_err(format!(
                "queue_size ({queue_size}) needs to be larger than or equal to max_workers ({max_workers})"
            )));
        }
        let kind = match spec.subscription_type.as_deref() {
            None | Some("") => None,
            Some(t @ ("Exclusive" | "Shared" | "Failover")) => Some(t),
            Some(other) => {
                return Err(config_err(format!(
                    "unsupported subscription type {other:?} (Exclusive, Shared or Failover)"
                )))
            }
        };
        // named by the Python layer when the user did not (`messaging.consumer.default_subscription`)
        let subscription = spec
            .subscription
            .clone()
            .ok_or_else(|| config_err("serve needs a subscription name"))?;
        let consumer_query = kind.map(|t| format!("subscriptionType={t}")).unwrap_or_default();
        let backoff = Backoff {
            max_attempts: spec.max_connect_attempts,
            ..Backoff::default()
        };
        let cfg = BackendConfig {
            address: conn.address()?,
            topic: spec.topic,
            subscription,
            consumer_query,
            connect: conn.connect_options(),
            backoff,
            max_workers,
            queue_size,
            overflow_replies,
            max_payload_size: conn
                .max_payload_size
                .unwrap_or(crate::protocol::dasf::DEFAULT_MAX_PAYLOAD_SIZE),
            producer_keep_alive: Duration::from_secs_f64(spec.producer_keep_alive.unwrap_or(120.0).max(0.0)),
            producer_connection_timeout: Duration::from_secs_f64(
                spec.producer_connection_timeout.unwrap_or(30.0).max(0.001),
            ),
            info: spec.info,
            api_info: spec.api_info,
            drain_timeout: Duration::from_secs(30),
            reassembly: conn.reassembly(),
        };
        Ok(Self {
            cfg,
            handler: Arc::new(PyHandler {
                func: handler,
                on_drain,
            }),
            cancel: CancellationToken::new(),
            running: Mutex::new(false),
        })
    }

    /// The subscription name in use.
    #[getter]
    fn subscription(&self) -> &str {
        &self.cfg.subscription
    }

    /// Worker threads.
    #[getter]
    fn max_workers(&self) -> usize {
        self.cfg.max_workers
    }

    /// Queue size.
    #[getter]
    fn queue_size(&self) -> usize {
        self.cfg.queue_size
    }

    /// Serve until `stop()` or Ctrl-C. On Ctrl-C, running requests finish (up to `drain_timeout` seconds)
    /// and their replies are sent before `KeyboardInterrupt` propagates.
    #[pyo3(signature = (drain_timeout=30.0))]
    fn run(&self, py: Python<'_>, drain_timeout: f64) -> PyResult<()> {
        {
            let mut running = self.running.lock().expect("backend lock");
            if *running {
                return Err(config_err("this backend is already running"));
            }
            *running = true;
        }
        let handler: Arc<dyn Handler> = self.handler.clone();
        let cancel = self.cancel.clone();
        let limit = Duration::from_secs_f64(drain_timeout.max(0.0));
        let cfg = BackendConfig {
            drain_timeout: limit,
            ..self.cfg.clone()
        };
        let task = runtime::get().spawn(backend::run(cfg, handler, cancel.clone()));
        let state = Arc::new(tokio::sync::Mutex::new(task));
        let st = state.clone();
        let waited = runtime::wait(py, async move {
            let mut t = st.lock().await;
            (&mut *t).await
        });
        let outcome = match waited {
            Ok(joined) => joined
                .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?
                .map_err(backend_err),
            Err(interrupt) => {
                // Ctrl-C: stop consuming, drain (the workers, then the handler's own, each within `limit`;
                // requests that outlast it are answered with an error), then re-raise
                cancel.cancel();
                let _ = runtime::wait(py, async move {
                    let mut t = state.lock().await;
                    let _ = tokio::time::timeout(limit * 2 + Duration::from_secs(5), &mut *t).await;
                });
                Err(interrupt)
            }
        };
        *self.running.lock().expect("backend lock") = false;
        outcome
    }

    /// Ask a running backend to stop (from another thread).
    fn stop(&self) {
        self.cancel.cancel();
    }
}
