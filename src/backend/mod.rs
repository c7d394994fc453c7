//! The serving side of a DASF backend module: a consumer subscription on the module's topic, dispatch by
//! `messageType`, a bounded pool of worker threads that run the handler (Python, supplied by `py`), and
//! reply producers per response topic.
//!
//! `ping`, `info` and `api_info` are answered on the tokio side without touching the handler. Requests are
//! decoded (base64, UTF-8, reassembly of fragments) before they reach a worker; anything malformed gets an
//! error reply when a response topic is known and a warning otherwise. Every delivery is acked, so a
//! persistent topic never redelivers a poison message forever. A request is acked when a worker takes it,
//! not when it arrives: a replica that dies leaves the requests it had not started unacked, and the broker
//! hands them to the other consumers (persistent Shared topics); only what was running is lost, and the
//! fragments received of a request that was still arriving (they are acked on arrival). A request
//! whose connection was lost before a worker took it is left to that redelivery (persistent topics only),
//! so nothing runs twice.
//!
//! Depends on `transport` and `protocol`. Never on Python.

mod error;
mod pool;
mod replies;

pub use error::BackendError;
pub use pool::WorkerPool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::protocol::dasf::{Frames, MessageType, Outgoing, RequestMeta, Status, QUEUE_OVERFLOW};
use crate::protocol::envelope::{decode_payload, ConsumerCommand, Delivery};
use crate::protocol::fragment::{Fed, Reassembler, ReassemblyLimits};
use crate::protocol::url::BrokerAddress;
use crate::transport::{self, Backoff, ConnectOptions};
use replies::ReplyRouter;

const LOG: &str = "demessaging_rs.backend";

/// The error reply to a request still running when a backend's shutdown gave up waiting for it.
pub const SHUTDOWN_TEXT: &str = "error executing request: cancelled, the backend is shutting down";

/// Everything a backend needs to serve.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Where the broker is.
    pub address: BrokerAddress,
    /// The module's topic.
    pub topic: String,
    /// Subscription name.
    pub subscription: String,
    /// Query string for the consumer URL (e.g. `subscriptionType=Shared`), without `?`.
    pub consumer_query: String,
    /// Connection options (headers, frame limits).
    pub connect: ConnectOptions,
    /// Reconnect policy of the consumer.
    pub backoff: Backoff,
    /// Worker threads.
    pub max_workers: usize,
    /// Requests that may wait for a worker.
    pub queue_size: usize,
    /// What happens beyond `queue_size` waiting requests: `true` rejects them at once with the reference's
    /// overflow reply (an explicit `queue_size`); `false` stops taking deliveries until a worker is free,
    /// so the broker's flow control holds the rest (the reference's default of an unbounded queue,
    /// without unbounded memory).
    pub overflow_replies: bool,
    /// Replies larger than this (raw bytes) are fragmented.
    pub max_payload_size: usize,
    /// Idle time after which a reply producer is closed (0: after each reply).
    pub producer_keep_alive: Duration,
    /// Time allowed to open a reply producer.
    pub producer_connection_timeout: Duration,
    /// JSON schema of the module (`info` replies).
    pub info: Option<String>,
    /// API description (`api_info` replies).
    pub api_info: Option<String>,
    /// At shutdown, how long running requests get to finish; callers of those that outlast it get an error
    /// reply ([`SHUTDOWN_TEXT`]).
    pub drain_timeout: Duration,
    /// Bounds for reassembling fragmented requests.
    pub reassembly: ReassemblyLimits,
}

impl BackendConfig {
    /// Whether the consumer asks for a Shared subscription (replicas splitting the requests).
    pub fn is_shared(&self) -> bool {
        self.consumer_query.split('&').any(|kv| kv == "subscriptionType=Shared")
    }
}

/// A decoded request handed to the handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request JSON (valid UTF-8).
    pub payload: String,
    /// Routing data of the request.
    pub meta: RequestMeta,
    /// The broker's id of the (last) request message.
    pub message_id: String,
}

/// Runs one request. Called on a worker thread; may block.
pub trait Handler: Send + Sync + 'static {
    /// Compute the reply payload (`Some(Ok)`, e.g. JSON text) or the full error text (`Some(Err)`, e.g.
    /// "error executing request: …"); `None` when the handler has sent every reply itself through `replier`.
    fn handle(&self, request: &Request, replier: &Replier) -> Option<Result<Bytes, String>>;

    /// Run a worker thread's whole job loop; override to set up per-thread state once.
    fn worker_scope(&self, body: &mut (dyn FnMut() + Send)) {
        body()
    }

    /// Called once on shutdown after the workers finished and before the reply producers close: finish (or
    /// fail) requests the handler still answers by itself (e.g. ones running on an event loop). May block.
    fn drain(&self) {}
}

/// Sends messages back to the caller of one request (replies and progress reports).
#[derive(Clone)]
pub struct Replier {
    router: Arc<ReplyRouter>,
    meta: RequestMeta,
    source_topic: Arc<str>,
    max_payload_size: usize,
    /// Requests inside the backend (queued or running): with others around, replies are batched.
    load: Arc<std::sync::atomic::AtomicUsize>,
}

impl Replier {
    /// The request this replier answers.
    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }

    fn frames(
        &self,
        msg_type: MessageType,
        status: Option<Status>,
        payload: Bytes,
        extra: Vec<(String, Value)>,
    ) -> Frames {
        let mut out = Outgoing::reply(&self.meta, &self.source_topic, msg_type, status);
        for (k, v) in extra {
            out.properties.insert(k, v);
        }
        out.payload = payload;
        out.frames(self.max_payload_size)
    }

    /// Send a message to the caller from a worker thread: the write happens on that thread (blocking).
    pub fn send_blocking(
        &self,
        msg_type: MessageType,
        status: Option<Status>,
        payload: impl Into<Bytes>,
        extra: Vec<(String, Value)>,
    ) {
        let frames = self.frames(msg_type, status, payload.into(), extra);
        // alone: write now (latency); with other requests in the backend: queue for a batched write
        let busy = self.load.load(std::sync::atomic::Ordering::Relaxed) > 1;
        self.router.send_blocking(&self.meta.response_topic, frames, busy);
    }

    /// Send a message to the caller from a tokio task.
    pub async fn send(
        &self,
        msg_type: MessageType,
        status: Option<Status>,
        payload: impl Into<Bytes>,
        extra: Vec<(String, Value)>,
    ) {
        let frames = self.frames(msg_type, status, payload.into(), extra);
        self.router.send(&self.meta.response_topic, frames.collect()).await;
    }
}

/// Serve until `cancel` fires; then stop consuming, let running requests finish and send their replies.
pub async fn run(cfg: BackendConfig, handler: Arc<dyn Handler>, cancel: CancellationToken) -> Result<(), BackendError> {
    if cfg.max_workers == 0 || cfg.queue_size == 0 {
        return Err(BackendError::Config(
            "max_workers and queue_size must be positive".into(),
        ));
    }
    let scoped = handler.clone();
    let scope: Arc<pool::ThreadScope> = Arc::new(move |body: &mut (dyn FnMut() + Send)| scoped.worker_scope(body));
    // with slots, a job may still sit in the queue while its worker is between jobs: room for every slot
    let capacity = if cfg.overflow_replies {
        cfg.queue_size
    } else {
        cfg.queue_size + cfg.max_workers
    };
    let pool = WorkerPool::start_scoped("dasf-worker", cfg.max_workers, capacity, scope)
        .map_err(|e| BackendError::Thread(e.to_string()))?;
    let router = ReplyRouter::new(
        cfg.address.clone(),
        cfg.connect.clone(),
        cfg.producer_connection_timeout,
        cfg.producer_keep_alive,
        tokio::runtime::Handle::current(),
    );
    let ctx = Dispatcher {
        load: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_workers + cfg.queue_size)),
        source_topic: Arc::from(cfg.topic.as_str()),
        router: router.clone(),
        handler,
        pool,
        reassembly: Reassembler::new(cfg.reassembly),
        persistent: matches!(&cfg.address, BrokerAddress::Pulsar { persistence, .. } if persistence == "persistent"),
        running: Arc::default(),
        cfg,
    };
    let result = consume(ctx, &cancel).await;
    router.close_all();
    result
}

struct Dispatcher {
    cfg: BackendConfig,
    /// Requests handed to the pool and not finished yet.
    load: Arc<std::sync::atomic::AtomicUsize>,
    /// One permit per request inside the backend (running or queued) when deliveries wait for room.
    slots: Arc<tokio::sync::Semaphore>,
    source_topic: Arc<str>,
    router: Arc<ReplyRouter>,
    handler: Arc<dyn Handler>,
    pool: WorkerPool,
    reassembly: Reassembler,
    /// Whether the topic is persistent (a broker redelivers what a lost consumer had not acked).
    persistent: bool,
    /// Requests a worker is running, to be told at shutdown if they outlast the drain timeout.
    running: Arc<Running>,
}

/// The requests workers are running, each with its replier; whoever takes one out answers it.
#[derive(Default)]
struct Running {
    next: std::sync::atomic::AtomicU64,
    // NOTE: a BTreeMap: ids only grow and few are in at once, so no hashing per request
    by_id: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<Replier>>>,
}

impl Running {
    fn start(&self, replier: &Arc<Replier>) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.by_id.lock().expect("running lock").insert(id, replier.clone());
        id
    }

    /// Whether request `id` is still to be answered by its worker (false once shutdown answered it).
    fn finish(&self, id: u64) -> bool {
        self.by_id.lock().expect("running lock").remove(&id).is_some()
    }

    fn take_all(&self) -> Vec<Arc<Replier>> {
        std::mem::take(&mut *self.by_id.lock().expect("running lock"))
            .into_values()
            .collect()
    }
}

/// Acks of one delivered request, sent when a worker takes it, on the connection that delivered it.
struct Acker {
    tx: mpsc::Sender<WsMessage>,
    /// False once that connection is gone.
    alive: Arc<std::sync::atomic::AtomicBool>,
    ids: Vec<String>,
}

impl Acker {
    /// An acker of no message on the same connection.
    fn same_connection(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            alive: self.alive.clone(),
            ids: Vec::new(),
        }
    }

    /// Send the acks from a plain thread (a worker).
    fn send_blocking(self) {
        for id in self.ids {
            let frame = WsMessage::text(ConsumerCommand::ack_frame(&id));
            if let Err(mpsc::error::TrySendError::Full(frame)) = self.tx.try_send(frame) {
                let _ = self.tx.blocking_send(frame);
            }
        }
    }

    /// Send the acks from a task.
    async fn send(self) {
        for id in self.ids {
            let _ = self.tx.send(WsMessage::text(ConsumerCommand::ack_frame(&id))).await;
        }
    }
}

async fn consume(mut d: Dispatcher, cancel: &CancellationToken) -> Result<(), BackendError> {
    let url = d
        .cfg
        .address
        .consumer_url(&d.cfg.topic, &d.cfg.subscription, &d.cfg.consumer_query);
    let outcome = loop {
        let ws = match transport::connect_with_backoff(&url, &d.cfg.connect, d.cfg.backoff, cancel).await {
            Ok(ws) => ws,
            Err(transport::TransportError::Cancelled) => break Ok(()),
            Err(e) => break Err(BackendError::Transport(e)),
        };
        tracing::info!(target: LOG, "listening on topic {} (subscription {})", d.cfg.topic, d.cfg.subscription);
        // acks wait for each other, except on persistent topics: there an ack says a worker started the
        // request, and one held back would let the broker hand a running request to another consumer. And
        // not on a Shared subscription: the broker hands a request to the replica holding the fewest, so a
        // held ack makes a free replica look busy. (Measured, 2 replicas of one worker, one busy for 3 s,
        // two threads calling without pause: with held acks 4 of their 100 calls were served meanwhile,
        // both threads soon waiting behind the busy one; acked at once, 50. Light calls on Shared replicas
        // cost about 5% more for it.)
        let batching = (!d.persistent && !d.cfg.is_shared()).then(transport::AckBatching::default);
        let (acks, mut reader) = transport::spawn_writer(ws, &d.cfg.connect, batching);
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let _lost = SetFalseOnDrop(alive.clone());
        loop {
            if acks.is_closed() {
                // a write failed: the broker is gone. What the socket still holds is not read: on a
                // persistent topic the broker hands it out again, on a non-persistent one its callers lost
                // their own connections to that broker (a backlog of them kept this backend busy for
                // half a minute after a broker restart before it answered anyone again)
                tracing::warn!(target: LOG, "consumer connection on {} lost; reconnecting", d.cfg.topic);
                break;
            }
            let text = tokio::select! {
                _ = cancel.cancelled() => break,
                t = transport::next_text(&mut reader) => t,
            };
            match text {
                Some(Ok(t)) => d.on_frame(&t, &acks, &alive).await,
                Some(Err(e)) => {
                    tracing::warn!(target: LOG, "consumer connection on {} failed: {e}; reconnecting", d.cfg.topic);
                    break;
                }
                None => {
                    tracing::warn!(target: LOG, "consumer connection on {} closed by the broker; reconnecting", d.cfg.topic);
                    break;
                }
            }
        }
        if cancel.is_cancelled() {
            break Ok(());
        }
    };
    // let queued and running requests finish (up to the drain timeout); their replies go out through the
    // still running router
    let pool = d.pool;
    let limit = d.cfg.drain_timeout;
    if tokio::time::timeout(limit, tokio::task::spawn_blocking(move || pool.join()))
        .await
        .is_err()
    {
        // a request that outlasts it would leave its caller waiting out its own timeout
        let left = d.running.take_all();
        if !left.is_empty() {
            tracing::warn!(target: LOG, "{} requests still running after {limit:?} at shutdown: their callers get an error", left.len());
        }
        for r in left {
            r.send(MessageType::Response, Some(Status::Error), SHUTDOWN_TEXT, Vec::new())
                .await;
        }
    }
    let handler = d.handler.clone();
    let _ = tokio::time::timeout(limit, tokio::task::spawn_blocking(move || handler.drain())).await;
    outcome
}

/// Marks a consumer connection as gone when its read loop ends.
struct SetFalseOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetFalseOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Dispatcher {
    fn replier(&self, meta: RequestMeta) -> Replier {
        Replier {
            router: self.router.clone(),
            meta,
            source_topic: self.source_topic.clone(),
            max_payload_size: self.cfg.max_payload_size,
            load: self.load.clone(),
        }
    }

    async fn error_reply(&self, meta: RequestMeta, text: String) {
        tracing::info!(target: LOG, "sending error to {}: {text}", meta.response_topic);
        self.replier(meta)
            .send(
                MessageType::Response,
                Some(Status::Error),
                text.into_bytes(),
                Vec::new(),
            )
            .await;
    }

    async fn on_frame(
        &mut self,
        text: &str,
        acks: &mpsc::Sender<WsMessage>,
        alive: &Arc<std::sync::atomic::AtomicBool>,
    ) {
        let delivery = match Delivery::parse(text) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(target: LOG, "unreadable message on {} dropped: {e}", self.cfg.topic);
                return;
            }
        };
        let acker = Acker {
            tx: acks.clone(),
            alive: alive.clone(),
            ids: vec![delivery.message_id.clone()],
        };
        let is_request =
            delivery.properties.get(crate::protocol::dasf::MESSAGE_TYPE) == Some(MessageType::Request.as_str());
        if is_request {
            // acked by the worker that takes it (or once it turns out malformed)
            return self.dispatch(delivery, acker).await;
        }
        // everything else is answered here at once: acked on arrival
        let acked = acker.same_connection();
        acker.send().await;
        self.dispatch(delivery, acked).await;
    }

    /// Handle one delivery. A request comes with its `acker`, which goes to the worker that takes it
    /// (for anything else it holds no id any more).
    async fn dispatch(&mut self, delivery: Delivery<'_>, acker: Acker) {
        let meta = match RequestMeta::from_properties(&delivery.properties, delivery.context.as_deref()) {
            Ok(m) => m,
            Err((e, rt)) => {
                acker.send().await;
                let Some(rt) = rt else {
                    tracing::warn!(target: LOG, "message with unsupported structure on {} ignored: {e}", self.cfg.topic);
                    return;
                };
                let meta = RequestMeta {
                    response_topic: rt,
                    context: delivery
                        .properties
                        .get(crate::protocol::dasf::REQUEST_CONTEXT)
                        .unwrap_or("")
                        .to_owned(),
                    message_type: String::new(),
                    fragment: None,
                };
                self.error_reply(meta, format!("error processing request: invalid message: {e}"))
                    .await;
                return;
            }
        };
        match MessageType::parse(&meta.message_type) {
            Some(MessageType::Ping) => {
                self.replier(meta)
                    .send(MessageType::Pong, None, Bytes::new(), Vec::new())
                    .await;
            }
            Some(MessageType::Info) => {
                let info = self
                    .cfg
                    .info
                    .clone()
                    .unwrap_or_else(|| "This module does not provide capability information.".into());
                self.replier(meta)
                    .send(
                        MessageType::Response,
                        None,
                        Bytes::new(),
                        vec![("info".into(), Value::String(info))],
                    )
                    .await;
            }
            Some(MessageType::ApiInfo) => {
                let (key, val) = match self.cfg.api_info.clone() {
                    Some(a) => ("api_info", a),
                    None => ("info", "This module does not provide api information.".to_owned()),
                };
                self.replier(meta)
                    .send(
                        MessageType::Response,
                        None,
                        Bytes::new(),
                        vec![(key.into(), Value::String(val))],
                    )
                    .await;
            }
            Some(MessageType::Request) => self.on_request(meta, delivery, acker).await,
            Some(MessageType::Pong)
            | Some(MessageType::Response)
            | Some(MessageType::Progress)
            | Some(MessageType::Log) => {
                tracing::debug!(target: LOG, "ignoring {} message on {}", meta.message_type, self.cfg.topic);
            }
            None => {
                let text = format!(
                    "error processing request: unsupported message type {:?}",
                    meta.message_type
                );
                tracing::warn!(target: LOG, "{text}");
                self.error_reply(meta, text).await;
            }
        }
    }

    async fn on_request(&mut self, meta: RequestMeta, delivery: Delivery<'_>, mut acker: Acker) {
        let raw = match meta.fragment {
            None => decode_payload(&delivery.payload),
            Some((i, n)) => {
                let key = format!("{}\u{0}{}", meta.response_topic, meta.context);
                let now = Instant::now();
                for k in self.reassembly.expire(now) {
                    tracing::warn!(target: LOG, "fragmented request {k:?} never completed; dropped");
                }
                // NOTE: every fragment but the last is acked on arrival, the last as any request (when a
                // worker takes it). Held until the request was complete, the fragments of partial requests
                // (a killed uploader's, or one of over 1000 pieces) filled the broker's window of 1000
                // unacked messages, and the backend never got another message.
                match self.reassembly.feed(&key, i, n, &delivery.payload, now) {
                    Ok(Fed::Pending) | Ok(Fed::Discarded) => {
                        acker.send().await;
                        return;
                    }
                    Ok(Fed::Complete(raw)) => Ok(raw),
                    Err(e) => Err(e),
                }
            }
        };
        let payload = match raw
            .and_then(|r| String::from_utf8(r).map_err(|e| crate::protocol::ProtocolError::InvalidUtf8(e.to_string())))
        {
            Ok(p) => p,
            Err(e) => {
                acker.send().await;
                self.error_reply(meta, format!("error processing request: {e}")).await;
                return;
            }
        };
        let request = Request {
            payload,
            meta: meta.clone(),
            message_id: delivery.message_id,
        };
        let replier = Arc::new(self.replier(meta.clone()));
        let running = self.running.clone();
        let handler = self.handler.clone();
        // NOTE: waiting here stops reading the consumer socket: the broker's flow control holds the rest.
        let slot = if self.cfg.overflow_replies {
            None
        } else if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            Some(slot)
        } else {
            tokio::select! {
                biased;
                _ = acker.tx.closed() => {
                    // the connection broke meanwhile (see `consume`)
                    tracing::info!(target: LOG, "request {} not run: its connection was lost", request.message_id);
                    return;
                }
                slot = self.slots.clone().acquire_owned() => slot.ok(),
            }
        };
        if !self.pool.has_room() {
            // only with an explicit queue_size (otherwise the slot above guarantees room): the reference's reply
            acker.send().await;
            self.error_reply(meta, QUEUE_OVERFLOW.to_owned()).await;
            return;
        }
        let load = self.load.clone();
        load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let persistent = self.persistent;
        let alive = acker.alive.clone();
        // A request an idle worker takes at once is acked from here: the ack joins the others this task
        // writes, instead of a worker waking the connection's writer once per request. A queued one is
        // acked by the worker that takes it.
        let worker_acker = (!self.pool.has_idle_worker()).then(|| Acker {
            ids: std::mem::take(&mut acker.ids),
            ..acker.same_connection()
        });
        let job = Box::new(move || {
            let _slot = slot;
            if persistent && !alive.load(std::sync::atomic::Ordering::Acquire) {
                // the connection that delivered it is gone, so the broker hands it out again: not run here
                tracing::info!(target: LOG, "request {} left for redelivery (its connection was lost before it started)", request.message_id);
                replier.load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            if let Some(acker) = worker_acker {
                acker.send_blocking();
            }
            let id = running.start(&replier);
            let outcome = match handler.handle(&request, &replier) {
                Some(Ok(body)) => Some((Status::Success, body)),
                Some(Err(text)) => Some((Status::Error, Bytes::from(text))),
                None => None,
            };
            // not when shutdown has answered it meanwhile
            if let (true, Some((status, body))) = (running.finish(id), outcome) {
                replier.send_blocking(MessageType::Response, Some(status), body, Vec::new());
            }
            replier.load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        // only this task submits, so the room seen above is still there (workers only take jobs out)
        if self.pool.try_submit(job).is_err() {
            load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(target: LOG, "request not run: the worker pool is closed");
        }
        acker.send().await;
    }
}
