//! `Client`: calls a backend topic. One instance keeps one connection pair and multiplexes calls; it
//! reconnects on the next call after a lost connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use serde::Deserialize;

use super::errors::{client_err, config_err};
use super::runtime;
use crate::client::{Client as RsClient, ClientConfig, ClientError, Reply, Waited};
use crate::protocol::dasf::MessageType;
use crate::protocol::url::BrokerAddress;
use crate::protocol::{Properties, ReassemblyLimits};
use crate::transport::{ConnectOptions, TlsOptions};

/// Connection settings shared by `Client` and `Backend`, as the Python config dumps them.
#[derive(Debug, Deserialize)]
pub(crate) struct ConnSpec {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<serde_json::Value>,
    #[serde(default)]
    pub persistent: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub websocket_url: Option<String>,
    #[serde(default)]
    pub producer_url: Option<String>,
    #[serde(default)]
    pub consumer_url: Option<String>,
    #[serde(default)]
    pub header: HashMap<String, serde_json::Value>,
    #[serde(default)]
    pub max_payload_size: Option<usize>,
    #[serde(default)]
    pub connect_timeout: Option<f64>,
    #[serde(default)]
    pub max_message_size: Option<usize>,
    /// Largest fragmented message reassembled, in bytes of payload.
    #[serde(default)]
    pub max_reassembly_size: Option<usize>,
    /// `wss://` for host/port settings.
    #[serde(default)]
    pub ssl: bool,
    #[serde(default)]
    pub ssl_ca_file: Option<String>,
    #[serde(default)]
    pub ssl_insecure_no_verify: bool,
}

impl ConnSpec {
    /// Reassembly limits: the default, or `max_reassembly_size` bytes of payload (base64: 4/3 of it).
    pub(crate) fn reassembly(&self) -> ReassemblyLimits {
        let defaults = ReassemblyLimits::default();
        match self.max_reassembly_size {
            None => defaults,
            Some(n) => ReassemblyLimits {
                max_bytes: n.saturating_add(2) / 3 * 4,
                ..defaults
            },
        }
    }

    pub(crate) fn from_py(spec: &Bound<'_, PyDict>) -> PyResult<Self> {
        pythonize::depythonize(spec.as_any()).map_err(|e| config_err(format!("invalid connection settings: {e}")))
    }

    pub(crate) fn address(&self) -> PyResult<BrokerAddress> {
        let ws = self.websocket_url.clone().filter(|s| !s.is_empty());
        let pu = self.producer_url.clone().filter(|s| !s.is_empty());
        let cu = self.consumer_url.clone().filter(|s| !s.is_empty());
        if ws.is_some() || (pu.is_some() && cu.is_some()) {
            let base = ws.unwrap_or_default();
            return Ok(BrokerAddress::Websocket {
                producer_url: pu.unwrap_or_else(|| base.clone()),
                consumer_url: cu.unwrap_or(base),
            });
        }
        let port = match &self.port {
            None => "8080".to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => return Err(config_err(format!("invalid port {other}"))),
        };
        Ok(BrokerAddress::Pulsar {
            tls: self.ssl,
            host: self.host.clone().unwrap_or_else(|| "localhost".into()),
            port,
            persistence: self.persistent.clone().unwrap_or_else(|| "non-persistent".into()),
            tenant: self.tenant.clone().unwrap_or_else(|| "public".into()),
            namespace: self.namespace.clone().unwrap_or_else(|| "default".into()),
        })
    }

    pub(crate) fn connect_options(&self) -> ConnectOptions {
        let defaults = ConnectOptions::default();
        let headers = self
            .header
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        ConnectOptions {
            headers,
            connect_timeout: self
                .connect_timeout
                .map_or(defaults.connect_timeout, |t| Duration::from_secs_f64(t.max(0.001))),
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            tls: TlsOptions {
                ca_file: self.ssl_ca_file.clone().filter(|f| !f.is_empty()).map(Into::into),
                insecure_no_verify: self.ssl_insecure_no_verify,
            },
            ..defaults
        }
    }
}

/// A client of one backend topic.
#[pyclass(frozen, module = "demessaging_rs._core")]
pub struct Client {
    cfg: ClientConfig,
    conn: Arc<tokio::sync::Mutex<Option<RsClient>>>,
}

fn message_type(s: &str) -> PyResult<MessageType> {
    MessageType::parse(s).ok_or_else(|| config_err(format!("unknown message type {s:?}")))
}

/// The bytes of a `str` (UTF-8) or bytes-like payload, without copying a `str` or `bytes`: the result
/// keeps the Python object alive and reads its buffer (payloads may be hundreds of megabytes).
/// `PyBackedStr`: borrowing a `str`'s UTF-8 needs the limited API of 3.10, and the extension is built for
/// the stable ABI of 3.9 (one wheel for every Python); on 3.9 it holds a UTF-8 copy.
pub(crate) fn payload_bytes(payload: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    // NOTE: type checks first: a failed extract builds an exception (bytes are the common case now)
    if let Ok(b) = payload.cast::<PyBytes>() {
        Ok(Bytes::from_owner(pyo3::pybacked::PyBackedBytes::from(b.clone())))
    } else if let Ok(s) = payload.cast::<PyString>() {
        Ok(Bytes::from_owner(pyo3::pybacked::PyBackedStr::try_from(s.clone())?))
    } else {
        Ok(payload.extract::<Vec<u8>>()?.into())
    }
}

fn props_to_py<'py>(py: Python<'py>, props: Properties) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in props.0 {
        d.set_item(k, v)?;
    }
    Ok(d)
}

type PyReply = (String, Py<PyBytes>, Py<PyDict>);

/// `(status, payload, None)`: a reply without its properties (cheaper when the caller ignores them).
pub(crate) fn reply_to_py_bare(py: Python<'_>, r: Reply) -> PyResult<Py<PyAny>> {
    let t = (r.status.as_str(), PyBytes::new(py, &r.payload), py.None()).into_pyobject(py)?;
    Ok(t.into_any().unbind())
}

pub(crate) fn reply_to_py(py: Python<'_>, r: Reply) -> PyResult<PyReply> {
    let props = props_to_py(py, r.properties)?;
    Ok((
        r.status.as_str().to_owned(),
        PyBytes::new(py, &r.payload).unbind(),
        props.unbind(),
    ))
}

/// The shared connection, opened (again) when missing or lost. Concurrent first calls share one connect.
async fn connection(cfg: &ClientConfig, slot: &tokio::sync::Mutex<Option<RsClient>>) -> Result<RsClient, ClientError> {
    let mut guard = slot.lock().await;
    if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
        return Ok(c.clone());
    }
    let lost = guard.is_some(); // a closed client stays in the slot until a new one replaces it
    let c = RsClient::connect(cfg.clone()).await?;
    if lost {
        // the connection was lost (e.g. the broker restarted): the backend may not be subscribed again
        // yet, and a request published before it is would be dropped; wait for a pong (bounded: a
        // backend that does not answer pings just gets the request after the wait)
        let limit = cfg.connect.connect_timeout;
        if !c.await_backend(limit, Duration::from_millis(250)).await? {
            tracing::info!(target: "demessaging_rs.client", "no pong from {} within {limit:?} after reconnecting", cfg.topic);
        }
    }
    *guard = Some(c.clone());
    Ok(c)
}

/// [`connection`] within a call's `timeout`: connecting, and the wait for a pong after a lost connection,
/// count against it. Returns the connection and the time left for the call.
async fn connection_within(
    cfg: &ClientConfig,
    slot: &tokio::sync::Mutex<Option<RsClient>>,
    timeout: Duration,
    label: &str,
) -> Result<(RsClient, Duration), ClientError> {
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, connection(cfg, slot)).await {
        Ok(c) => Ok((c?, timeout.saturating_sub(started.elapsed()))),
        Err(_) => Err(ClientError::Timeout {
            topic: cfg.topic.clone(),
            label: label.to_owned(),
            timeout,
        }),
    }
}

impl Client {
    /// The live connection if there is one (never waits).
    fn live(&self) -> Option<RsClient> {
        let guard = self.conn.try_lock().ok()?;
        guard.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// The live connection; opened (again) here when missing or lost, within `timeout` (see
    /// [`connection_within`]). Returns it and the time left for the call.
    fn connected(&self, py: Python<'_>, timeout: Duration, label: &str) -> PyResult<(RsClient, Duration)> {
        if let Some(c) = self.live() {
            return Ok((c, timeout));
        }
        let (cfg, slot, label) = (self.cfg.clone(), self.conn.clone(), label.to_owned());
        runtime::wait(py, async move { connection_within(&cfg, &slot, timeout, &label).await })?.map_err(client_err)
    }
}

#[pymethods]
impl Client {
    /// `Client(topic, connection)`: `connection` holds host/port/... or websocket_url, header,
    /// max_payload_size and connect_timeout.
    #[new]
    fn new(topic: String, connection: &Bound<'_, PyDict>) -> PyResult<Self> {
        let spec = ConnSpec::from_py(connection)?;
        let cfg = ClientConfig {
            address: spec.address()?,
            topic,
            connect: spec.connect_options(),
            max_payload_size: spec
                .max_payload_size
                .unwrap_or(crate::protocol::dasf::DEFAULT_MAX_PAYLOAD_SIZE),
            reassembly: spec.reassembly(),
        };
        Ok(Self {
            cfg,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The topic this client calls.
    #[getter]
    fn topic(&self) -> &str {
        &self.cfg.topic
    }

    /// Open the connections now (otherwise the first call does).
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        let (cfg, slot) = (self.cfg.clone(), self.conn.clone());
        runtime::wait(py, async move { connection(&cfg, &slot).await.map(|_| ()) })?.map_err(client_err)
    }

    /// Send a message and wait for the reply: returns `(status, payload, properties)`.
    /// `on_progress(payload: bytes, properties: dict)` is called for progress reports, in this thread.
    /// With `properties=False` the third item is `None` (no dict built per call).
    #[allow(clippy::too_many_arguments)] // the Python signature
    #[pyo3(signature = (message_type, payload, timeout, label, on_progress=None, properties=true))]
    fn call(
        &self,
        py: Python<'_>,
        message_type: &str,
        payload: &Bound<'_, PyAny>,
        timeout: f64,
        label: &str,
        on_progress: Option<Py<PyAny>>,
        properties: bool,
    ) -> PyResult<Py<PyAny>> {
        let mt = self::message_type(message_type)?;
        let payload = payload_bytes(payload)?;
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        let (client, timeout) = self.connected(py, timeout, label)?;
        let with_progress = on_progress.is_some();
        let slice = Duration::from_millis(100);
        // the request is written on this thread, and the first wait follows, in one stretch without the GIL
        // NOTE: one release and one re-acquisition of the GIL per call instead of two: with 8 threads
        // calling, every hand-over of the GIL wakes a thread
        let (call, mut waited) = py
            .detach(|| {
                let call = client.start_blocking(mt, payload, timeout, label, with_progress)?;
                let w = call.poll(slice);
                runtime::stay_detached_if_finalizing();
                Ok((call, w))
            })
            .map_err(client_err)?;
        loop {
            match waited {
                Waited::Done(r) => {
                    let r = r.map_err(client_err)?;
                    return if properties {
                        Ok(reply_to_py(py, r)?.into_pyobject(py)?.into_any().unbind())
                    } else {
                        reply_to_py_bare(py, r)
                    };
                }
                Waited::Progress(p) => {
                    if let Some(cb) = &on_progress {
                        let props = props_to_py(py, p.properties)?;
                        cb.call1(py, (PyBytes::new(py, &p.payload), props))?;
                    }
                }
                Waited::Pending => py.check_signals()?,
            }
            waited = py.detach(|| {
                let w = call.poll(slice);
                runtime::stay_detached_if_finalizing();
                w
            });
        }
    }

    /// Async variant of `call` (no progress callback): an asyncio future of the running loop resolving to
    /// the same tuple (with `properties=False`, `None` in place of the properties). Cancelling it forgets the
    /// call.
    #[pyo3(signature = (message_type, payload, timeout, label, properties=true))]
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        message_type: &str,
        payload: &Bound<'py, PyAny>,
        timeout: f64,
        label: String,
        properties: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mt = self::message_type(message_type)?;
        let payload = payload_bytes(payload)?;
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        #[cfg(unix)]
        if let Some(c) = self.live() {
            // connected: no task for this call, the request is written here and the reply completes the
            // future from the reader task through the loop's completer
            return super::aio::start_for_loop(
                py,
                move |on_done| c.start_with_callback(mt, payload, timeout, &label, on_done),
                properties,
            );
        }
        let (cfg, slot) = (self.cfg.clone(), self.conn.clone());
        let work = async move {
            let (c, left) = connection_within(&cfg, &slot, timeout, &label).await?;
            c.call(mt, payload, left, &label, None).await
        };
        #[cfg(unix)]
        {
            super::aio::spawn_for_loop(py, work, properties)
        }
        #[cfg(not(unix))]
        {
            runtime::init_async();
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let r = work.await.map_err(client_err)?;
                Python::attach(|py| reply_to_py(py, r))
            })
        }
    }

    /// Close the connections; waiting calls fail with `BrokerConnectionError`.
    fn close(&self) {
        if let Ok(mut guard) = self.conn.try_lock() {
            if let Some(c) = guard.take() {
                let _rt = runtime::get().enter();
                c.close();
            }
        }
    }
}
