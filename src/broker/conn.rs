//! One task per connection: the upgrade (with every refusal as an HTTP status), then the producer or
//! consumer loop.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::io::Conn;
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::auth::{Access, Denied};
use super::subscription::{Dispatch, SubType};
use super::topic::{Message, Subscription, Topic};
use super::State;
use crate::protocol::envelope::{
    check_payload, ConsumerCommand, DeliveryOut, ProducerAck, PublishFrame, RECEIPTS_HEADER,
};
use crate::protocol::url::{parse_endpoint, parse_query, Role};

use super::LOG;

// Error result codes of Pulsar's WebSocket proxy (`"send-error:" + WebSocketError code`).
/// The frame is not JSON.
const SEND_ERROR_JSON: &str = "send-error:3";
/// The payload is missing or not base64.
const SEND_ERROR_PAYLOAD: &str = "send-error:7";
/// The message could not be stored (e.g. subscriptions full).
const SEND_ERROR_UNKNOWN: &str = "send-error:8";

type Ws = WebSocketStream<Conn>;

/// What the upgrade accepted.
enum Endpoint {
    Producer {
        topic: Arc<Topic>,
        /// Whether successful publishes are answered (`x-dasf-receipts: all` or no header, Pulsar's
        /// behaviour) or only refused ones (`x-dasf-receipts: errors`).
        ok_receipts: bool,
    },
    Consumer {
        conn: ConsumerConn,
        id: u64,
        rx: mpsc::Receiver<Dispatch>,
    },
}

/// What a consumer task works with.
struct ConsumerConn {
    topic: Arc<Topic>,
    sub: Arc<Subscription>,
    opts: ConsumerOpts,
    /// Published to the subscription's stats.
    counter: Arc<AtomicUsize>,
}

/// Per-consumer options from the query string.
#[derive(Debug, Clone, Copy)]
struct ConsumerOpts {
    /// At most this many delivered-but-unacked messages (`receiverQueueSize`).
    window: usize,
    /// Redeliver messages not acked within this time (`ackTimeoutMillis`, 0 = never).
    ack_timeout: Option<Duration>,
    /// Delay before a negatively acked message is redelivered (`negativeAckRedeliveryDelay`).
    nack_delay: Duration,
}

/// Answer a connection over the limit with HTTP 503 and close it.
pub(super) async fn refuse_busy(conn: Conn) {
    super::http::reply(conn, "503 Service Unavailable", "text/plain", "too many connections").await;
}

/// An upgrade refused with an HTTP status and a reason (sent as the body).
struct Refusal(StatusCode, String);

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal(status, reason.into())
}

impl From<Refusal> for ErrorResponse {
    fn from(Refusal(status, reason): Refusal) -> Self {
        let mut resp = ErrorResponse::new(Some(reason));
        *resp.status_mut() = status;
        resp
    }
}

fn token_of(req: &Request, query: &[(String, String)]) -> Option<String> {
    token_from(req.headers().get("authorization").and_then(|v| v.to_str().ok()), query)
}

/// The HTTP refusal of a token: 401 without a (known) token, 403 when it may not do this.
fn denied(d: Denied) -> Refusal {
    match d {
        Denied::Missing => refuse(StatusCode::UNAUTHORIZED, "authentication required"),
        Denied::Unknown => refuse(StatusCode::UNAUTHORIZED, "invalid token"),
        Denied::Forbidden(why) => refuse(StatusCode::FORBIDDEN, why),
    }
}

/// The token of a request: `Authorization: Token|Bearer T` (or the bare value), else `?token=T`.
pub(super) fn token_from(authorization: Option<&str>, query: &[(String, String)]) -> Option<String> {
    if let Some(h) = authorization {
        let h = h.trim();
        for scheme in ["Token ", "Bearer ", "token ", "bearer "] {
            if let Some(t) = h.strip_prefix(scheme) {
                return Some(t.trim().to_owned());
            }
        }
        return Some(h.to_owned());
    }
    query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone())
}

/// Decide what a request may connect to. Runs inside the upgrade, so every refusal is an HTTP status.
fn admit(state: &State, req: &Request) -> Result<Endpoint, Refusal> {
    let path = req.uri().path();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let token = token_of(req, &query);
    if let Some(tokens) = &state.cfg.tokens {
        tokens.knows(token.as_deref()).map_err(denied)?;
    }
    let ep = parse_endpoint(path).map_err(|e| refuse(StatusCode::NOT_FOUND, e.to_string()))?;
    if let Some(tokens) = &state.cfg.tokens {
        let access = match ep.role {
            Role::Producer => Access::Produce,
            Role::Consumer | Role::Reader => Access::Consume,
        };
        tokens.check(token.as_deref(), access, &ep.topic).map_err(denied)?;
    }
    match ep.role {
        Role::Reader => Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "the reader endpoint is not supported by this broker",
        )),
        Role::Producer => {
            // NOTE: a header, not a query parameter: brokers that do not know it (Pulsar, dasf-broker-django)
            // certainly ignore it
            let ok_receipts = match req.headers().get(RECEIPTS_HEADER).map(|v| v.to_str().map(str::trim)) {
                None | Some(Ok("all")) => true,
                Some(Ok("errors")) => false,
                Some(other) => {
                    let shown = other.unwrap_or("(not text)");
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("invalid {RECEIPTS_HEADER} header {shown:?} (all or errors)"),
                    ));
                }
            };
            Ok(Endpoint::Producer {
                topic: state.registry.topic(&ep.topic, ep.persistent),
                ok_receipts,
            })
        }
        Role::Consumer => {
            let mut kind = SubType::Exclusive;
            let mut queue = state.cfg.receiver_queue_size;
            let mut ack_timeout = None;
            let mut nack_delay = Duration::from_secs(60);
            let millis = |k: &str, v: &str| {
                v.parse::<u64>()
                    .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("invalid {k} {v:?}")))
            };
            for (k, v) in &query {
                match k.as_str() {
                    "subscriptionType" => {
                        kind = match v.as_str() {
                            "Key_Shared" => {
                                return Err(refuse(
                                    StatusCode::NOT_IMPLEMENTED,
                                    "subscriptionType Key_Shared is not supported",
                                ))
                            }
                            other => SubType::parse(other).ok_or_else(|| {
                                refuse(StatusCode::BAD_REQUEST, format!("invalid subscriptionType {other:?}"))
                            })?,
                        }
                    }
                    "receiverQueueSize" => {
                        queue = v
                            .parse::<usize>()
                            .ok()
                            .filter(|q| *q > 0)
                            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("invalid receiverQueueSize {v:?}")))?
                            .min(state.cfg.receiver_queue_size.max(1000)); // Pulsar caps it at 1000
                    }
                    "ackTimeoutMillis" => {
                        let ms = millis(k, v)?;
                        ack_timeout = (ms > 0).then(|| Duration::from_millis(ms));
                    }
                    "negativeAckRedeliveryDelay" => nack_delay = Duration::from_millis(millis(k, v)?),
                    "pullMode" if v.eq_ignore_ascii_case("true") => {
                        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "pullMode is not supported"));
                    }
                    _ => {}
                }
            }
            let sub_name = ep.subscription.expect("consumer path has a subscription");
            let topic = state.registry.topic(&ep.topic, ep.persistent);
            let joined = match state.registry.join(&topic, &sub_name, kind, queue) {
                Ok(joined) => joined,
                Err(e) => {
                    state.registry.release(&topic);
                    return Err(refuse(StatusCode::CONFLICT, e.to_string()));
                }
            };
            let opts = ConsumerOpts {
                window: queue,
                ack_timeout,
                nack_delay,
            };
            Ok(Endpoint::Consumer {
                conn: ConsumerConn {
                    topic,
                    sub: joined.sub,
                    opts,
                    counter: joined.unacked,
                },
                id: joined.id,
                rx: joined.rx,
            })
        }
    }
}

pub(super) async fn run(mut stream: Conn, peer: SocketAddr, state: Arc<State>, cancel: CancellationToken) {
    let peeked = tokio::select! {
        _ = cancel.cancelled() => return,
        p = super::http::peek(&mut stream, state.cfg.handshake_timeout) => p,
    };
    match peeked {
        super::http::Peeked::Upgrade => {}
        super::http::Peeked::Gone => return,
        super::http::Peeked::Tls => {
            tracing::debug!(target: LOG, "{peer} started a TLS handshake, but this port has no TLS: closed");
            return;
        }
        super::http::Peeked::Plain {
            method,
            path,
            authorization,
        } => {
            super::http::respond(stream, &method, &path, authorization.as_deref(), &state).await;
            return;
        }
    }
    // NOTE: tungstenite's default 128 KiB read buffer per connection made 1000 idle connections cost
    // 128 MiB; 32 KiB keeps them near 35 MiB and still reads bursts in few syscalls.
    let config = WebSocketConfig::default()
        .read_buffer_size(32 * 1024)
        .max_message_size(Some(state.cfg.max_frame_size))
        .max_frame_size(Some(state.cfg.max_frame_size));
    let mut endpoint = None;
    // the callback's error type is fixed by tungstenite
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        endpoint = Some(admit(&state, req)?);
        Ok(resp)
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    // NOTE: shutdown does not wait for a handshake (it waits for every connection's task)
    let upgraded = tokio::select! {
        _ = cancel.cancelled() => None,
        u = tokio::time::timeout(state.cfg.handshake_timeout, upgrade) => Some(u),
    };
    let ws = match upgraded {
        Some(Ok(Ok(ws))) => ws,
        failed => {
            match failed {
                Some(Ok(Err(e))) => tracing::debug!(target: LOG, "upgrade from {peer} refused or failed: {e}"),
                Some(Err(_)) => tracing::debug!(target: LOG, "upgrade from {peer} timed out"),
                _ => tracing::debug!(target: LOG, "upgrade from {peer} abandoned: the broker stops"),
            }
            match endpoint {
                Some(Endpoint::Consumer { conn, id, .. }) => {
                    state.registry.leave(&conn.topic, &conn.sub, id, Vec::new());
                    state.registry.release(&conn.topic);
                }
                Some(Endpoint::Producer { topic, .. }) => state.registry.release(&topic),
                None => {}
            }
            return;
        }
    };
    match endpoint {
        Some(Endpoint::Producer { topic, ok_receipts }) => {
            tokio::select! {
                _ = producer(ws, &topic, ok_receipts, &state, &cancel) => {}
                _ = stopped_for_good(&cancel) => {}
            }
            state.registry.release(&topic);
        }
        Some(Endpoint::Consumer { conn, id, rx }) => {
            let unacked = tokio::select! {
                u = consumer(ws, rx, &conn, &state, &cancel) => u,
                _ = stopped_for_good(&cancel) => Vec::new(),
            };
            state.registry.leave(&conn.topic, &conn.sub, id, unacked);
            state.registry.release(&conn.topic);
        }
        None => {}
    }
}

/// How long a connection may take to close politely once the broker stops.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Completes [`CLOSE_GRACE`] after `cancel`: then a connection is dropped even if a write to a peer that
/// does not read still waits (shutdown waits for every connection's task).
async fn stopped_for_good(cancel: &CancellationToken) {
    cancel.cancelled().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

fn close_frame(code: CloseCode, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// What a read error means for the connection: the close frame to send, if any.
fn close_for(err: &WsError) -> Option<WsMessage> {
    match err {
        WsError::Capacity(e) => Some(close_frame(CloseCode::Size, &format!("frame too big: {e}"))),
        WsError::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8 in text frame")),
        WsError::Protocol(e) => Some(close_frame(CloseCode::Protocol, &e.to_string())),
        _ => None,
    }
}

/// Liveness: ping every interval; a peer silent for three intervals is dropped, and so is a peer that does
/// not take what is written to it for as long (a frozen process whose connection stays open).
struct Liveness {
    ticker: tokio::time::Interval,
    silent_ticks: u32,
    /// How long one write may wait for the peer to read.
    stall: Duration,
}

impl Liveness {
    fn new(every: Duration) -> Self {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            silent_ticks: 0,
            stall: every.saturating_mul(3),
        }
    }

    /// On a tick: ping the peer; `false` when it stayed silent too long, the socket failed, or the ping
    /// could not be written within the stall limit.
    async fn ping(&mut self, ws: &mut Ws) -> bool {
        self.silent_ticks += 1;
        self.silent_ticks <= 3
            && matches!(
                tokio::time::timeout(self.stall, ws.send(WsMessage::Ping(Default::default()))).await,
                Ok(Ok(()))
            )
    }

    /// Whether `write` succeeded within the stall limit.
    ///
    /// NOTE: a write to a peer that does not read waits for ever, and the connection's loop with it (no
    /// pings, no ack timeouts): its unacked messages would never go to another consumer.
    async fn written(&self, write: impl std::future::Future<Output = Result<(), WsError>>, topic: &Topic) -> bool {
        match tokio::time::timeout(self.stall, write).await {
            Ok(r) => r.is_ok(),
            Err(_) => {
                tracing::warn!(target: LOG, "a consumer on {} has not read for {:?}: dropped", topic.name, self.stall);
                false
            }
        }
    }
}

/// Per-producer scratch state, reused across messages to avoid allocations on the data path.
#[derive(Default)]
struct Scratch {
    /// `publishTime` of the last message and the millisecond it stands for.
    time: (u128, Arc<str>),
}

impl Scratch {
    fn publish_time(&mut self) -> Arc<str> {
        let now = SystemTime::now();
        let ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        if ms != self.time.0 || self.time.1.is_empty() {
            self.time = (ms, Arc::from(humantime::format_rfc3339_millis(now).to_string()));
        }
        self.time.1.clone()
    }
}

async fn producer(mut ws: Ws, topic: &Arc<Topic>, ok_receipts: bool, state: &State, cancel: &CancellationToken) {
    let mut live = Liveness::new(state.cfg.ping_interval);
    // a frame already read but not yet handled (the batch limit was reached)
    let mut carried = None;
    let mut scratch = Scratch::default();
    loop {
        let mut frame = if let Some(f) = carried.take() {
            f
        } else {
            tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.send(close_frame(CloseCode::Away, "broker shutting down")).await;
                return;
            }
            _ = live.ticker.tick() => {
                if !live.ping(&mut ws).await {
                    return;
                }
                continue;
            }
            f = ws.next() => f,
            }
        };
        live.silent_ticks = 0;
        // NOTE: acks are fed and flushed once no further frame is ready: one write per batch instead of one
        // per message doubled throughput (bench/bench_broker.py).
        for batch in 0..256 {
            let ack = match frame {
                None | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(WsMessage::Text(t))) => publish(t, topic, state, &mut scratch).await,
                Some(Ok(WsMessage::Binary(b))) => match Utf8Bytes::try_from(b) {
                    Ok(text) => publish(text, topic, state, &mut scratch).await,
                    Err(_) => ProducerAck::error(SEND_ERROR_JSON, "binary frame is not UTF-8 JSON", None),
                },
                Some(Ok(_)) => {
                    frame = match ws.next().now_or_never() {
                        Some(f) => f,
                        None => break,
                    };
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(target: LOG, "producer on {}: {e}", topic.name);
                    if let Some(close) = close_for(&e) {
                        let _ = ws.send(close).await;
                    }
                    return;
                }
            };
            if ok_receipts || !ack.is_ok() {
                let text = serde_json::to_string(&ack).expect("serializable");
                if ws.feed(WsMessage::text(text)).await.is_err() {
                    return;
                }
            }
            frame = match ws.next().now_or_never() {
                Some(f) => f,
                None => break,
            };
            if batch == 255 {
                carried = Some(frame);
                break;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// Payloads from this size on are kept as a slice of their publish frame.
const ZERO_COPY_PAYLOAD: usize = 64 * 1024;

async fn publish(text: Utf8Bytes, topic: &Arc<Topic>, state: &State, scratch: &mut Scratch) -> ProducerAck {
    let frame = match PublishFrame::parse(text.as_str()) {
        Ok(f) => f,
        Err(e) => return ProducerAck::error(SEND_ERROR_JSON, format!("Failed to deserialize from JSON: {e}"), None),
    };
    // a message without payload is an empty one (the reference client's `api_info` requests have none;
    // dasf-broker-django passes them on)
    let payload = match frame.payload {
        None => Utf8Bytes::default(),
        // NOTE: a large payload stays a slice of its frame (no copy of every fragment of a large message);
        // a small one is copied, so that a stored message does not pin the read buffer it arrived in
        Some(Cow::Borrowed(p)) if p.len() >= ZERO_COPY_PAYLOAD => {
            let whole: &Bytes = text.as_ref();
            Utf8Bytes::try_from(whole.slice_ref(p.as_bytes())).expect("a str slice is UTF-8")
        }
        Some(p) => Utf8Bytes::from(p.into_owned()),
    };
    if let Err(crate::protocol::error::ProtocolError::InvalidBase64(e)) = check_payload(&payload) {
        return ProducerAck::error(
            SEND_ERROR_PAYLOAD,
            format!("Invalid Base64 message-payload error=payload is not valid base64: {e}"),
            frame.context,
        );
    }
    let id: Arc<str> = Arc::from(state.next_message_id());
    let msg = Arc::new(Message {
        id: id.clone(),
        payload,
        properties: frame.properties,
        publish_time: scratch.publish_time(),
        key: frame.key,
    });
    match topic
        .publish(msg, state.cfg.publish_hold, state.cfg.backlog_limit())
        .await
    {
        Ok(()) => ProducerAck::ok(id.to_string(), frame.context),
        Err(e) => ProducerAck::error(SEND_ERROR_UNKNOWN, e.to_string(), frame.context),
    }
}

async fn send_json<T: serde::Serialize>(ws: &mut Ws, value: &T) -> Result<(), WsError> {
    let text = serde_json::to_string(value).expect("serializable");
    ws.send(WsMessage::text(text)).await
}

/// Run a consumer until it disconnects; returns the messages it had not acked (persistent topics).
///
/// Flow control: at most `opts.window` messages are out unacked; beyond that the consumer's queue fills,
/// which holds producers (see `Topic::publish`). Negatively acked messages, and messages not acked within
/// `ackTimeoutMillis`, go back to the subscription for redelivery.
async fn consumer(
    mut ws: Ws,
    mut rx: mpsc::Receiver<Dispatch>,
    conn: &ConsumerConn,
    state: &State,
    cancel: &CancellationToken,
) -> Vec<Dispatch> {
    let (topic, sub, opts, counter) = (&conn.topic, &conn.sub, conn.opts, &*conn.counter);
    let mut live = Liveness::new(state.cfg.ping_interval);
    // message id -> (delivery sequence, delivered at, message)
    let mut unacked: HashMap<Arc<str>, (u64, tokio::time::Instant, Dispatch)> = HashMap::new();
    let mut seq = 0u64;
    let started = tokio::time::Instant::now();
    let check_every = opts.ack_timeout.map(|t| (t / 4).max(Duration::from_millis(10)));
    let mut ack_ticker = tokio::time::interval(check_every.unwrap_or(Duration::from_secs(3600)));
    ack_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = unacked.len() < opts.window;
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.send(close_frame(CloseCode::Away, "broker shutting down")).await;
                break;
            }
            _ = live.ticker.tick() => {
                if !live.ping(&mut ws).await {
                    break;
                }
            }
            _ = ack_ticker.tick(), if opts.ack_timeout.is_some() => {
                let limit = opts.ack_timeout.unwrap_or_default();
                let now = tokio::time::Instant::now();
                let expired: Vec<Arc<str>> =
                    unacked.iter().filter(|(_, (_, at, _))| now.duration_since(*at) >= limit).map(|(k, _)| k.clone()).collect();
                for id in expired {
                    if let Some((_, _, d)) = unacked.remove(&id) {
                        sub.requeue(d, topic.persistent, state.cfg.backlog_limit());
                    }
                }
                counter.store(unacked.len(), Ordering::Relaxed);
            }
            d = rx.recv(), if room => {
                let Some(d) = d else { break };
                let m = &d.msg;
                let out = DeliveryOut {
                    message_id: &m.id,
                    payload: m.payload.as_str(),
                    properties: &m.properties,
                    publish_time: &m.publish_time,
                    redelivery_count: d.redelivery,
                    key: m.key.as_deref(),
                };
                let text = out.to_json();
                seq += 1;
                let at = if opts.ack_timeout.is_some() { tokio::time::Instant::now() } else { started };
                unacked.insert(d.msg.id.clone(), (seq, at, d));
                counter.store(unacked.len(), Ordering::Relaxed);
                // NOTE: feed, and flush only when no further delivery is queued, to batch under load
                if !live.written(ws.feed(WsMessage::text(text)), topic).await {
                    break;
                }
                topic.msg_out.fetch_add(1, Ordering::Relaxed);
                if (rx.is_empty() || unacked.len() >= opts.window) && !live.written(ws.flush(), topic).await {
                    break;
                }
            }
            f = ws.next() => {
                live.silent_ticks = 0;
                match f {
                    None | Some(Ok(WsMessage::Close(_))) => break,
                    Some(Ok(WsMessage::Text(t))) => {
                        let reply = command(t.as_str(), &mut unacked, topic, sub, opts, state);
                        counter.store(unacked.len(), Ordering::Relaxed);
                        sub.drain_backlog();
                        if let Some(reply) = reply {
                            if !live.written(send_json(&mut ws, &reply), topic).await {
                                break;
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if let Some(close) = close_for(&e) {
                            let _ = ws.send(close).await;
                        }
                        break;
                    }
                }
            }
        }
    }
    counter.store(0, Ordering::Relaxed);
    let mut rest: Vec<(u64, Dispatch)> = unacked.into_values().map(|(s, _, d)| (s, d)).collect();
    rest.sort_by_key(|(s, _)| *s);
    let mut rest: Vec<Dispatch> = rest.into_iter().map(|(_, d)| d).collect();
    // whatever was queued for this consumer but never written goes back too (not counted as a redelivery)
    rx.close();
    while let Ok(d) = rx.try_recv() {
        rest.push(Dispatch {
            msg: d.msg,
            redelivery: d.redelivery.saturating_sub(1),
        });
    }
    if !topic.persistent {
        rest.clear();
    }
    rest
}

/// Handle one consumer command; returns the frame to send back, if any.
///
/// As Pulsar's proxy, well-formed commands get no answer but `isEndOfTopic`'s: an ack or negative ack of
/// an id this consumer does not hold (acked twice, say) and a permit outside pull mode are ignored (a
/// debug line), since a client written for Pulsar takes every frame on this socket for a message or an
/// end-of-topic answer. Only a frame that is no command at all gets an error answer.
fn command(
    text: &str,
    unacked: &mut HashMap<Arc<str>, (u64, tokio::time::Instant, Dispatch)>,
    topic: &Arc<Topic>,
    sub: &Arc<Subscription>,
    opts: ConsumerOpts,
    state: &State,
) -> Option<CommandReply> {
    let ignored = |what: &str| {
        tracing::debug!(target: LOG, "consumer of {} on {}: {what}, ignored", sub.name, topic.name);
        None
    };
    match ConsumerCommand::parse(text) {
        Ok(ConsumerCommand::Ack(id)) => match unacked.remove(id.as_str()) {
            Some(_) => None,
            None => ignored(&format!("ack of unknown or already acknowledged messageId {id:?}")),
        },
        Ok(ConsumerCommand::NegativeAck(id)) => match unacked.remove(id.as_str()) {
            Some((_, _, d)) => {
                let (sub, persistent, max) = (sub.clone(), topic.persistent, state.cfg.backlog_limit());
                tokio::spawn(async move {
                    tokio::time::sleep(opts.nack_delay).await;
                    sub.requeue(d, persistent, max);
                });
                None
            }
            None => ignored(&format!("negative ack of unknown messageId {id:?}")),
        },
        Ok(ConsumerCommand::Permit(_)) => ignored("permit outside pull mode"),
        // topics are never terminated here
        Ok(ConsumerCommand::IsEndOfTopic) => Some(CommandReply::EndOfTopic { end_of_topic: false }),
        Err(e) => {
            tracing::debug!(target: LOG, "consumer on {}: {e}", topic.name);
            Some(CommandReply::Error(CommandError::new("invalid", e.to_string())))
        }
    }
}

/// What a consumer command is answered with.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum CommandReply {
    /// Pulsar's answer to `isEndOfTopic`.
    EndOfTopic {
        #[serde(rename = "endOfTopic")]
        end_of_topic: bool,
    },
    /// A frame that is no consumer command.
    Error(CommandError),
}

/// Error answer to a consumer frame the broker cannot read.
#[derive(Debug, serde::Serialize)]
struct CommandError {
    result: &'static str,
    command: String,
    #[serde(rename = "errorMsg")]
    error_msg: String,
}

impl CommandError {
    fn new(command: &str, msg: impl Into<String>) -> Self {
        Self {
            result: "error",
            command: command.to_owned(),
            error_msg: msg.into(),
        }
    }
}
