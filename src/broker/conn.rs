//! One task per connection: the upgrade (with every refusal as an HTTP status), then the producer or
//! consumer loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::subscription::{Dispatch, SubType};
use super::topic::{Message, Subscription, Topic};
use super::State;
use crate::protocol::envelope::{decode_payload, ConsumerCommand, DeliveryOut, ProducerAck, PublishFrame};
use crate::protocol::url::{parse_endpoint, parse_query, Role};

const LOG: &str = "demessaging_rs.broker";

type Ws = WebSocketStream<TcpStream>;

/// What the upgrade accepted.
enum Endpoint {
    Producer {
        topic: Arc<Topic>,
    },
    Consumer {
        topic: Arc<Topic>,
        sub: Arc<Subscription>,
        id: u64,
        rx: mpsc::Receiver<Dispatch>,
    },
}

/// Answer a connection over the limit with HTTP 503 and close it.
pub(super) async fn refuse_busy(mut stream: TcpStream) {
    let body = "too many connections";
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
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
    if let Some(h) = req.headers().get("authorization").and_then(|v| v.to_str().ok()) {
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
    if let Some(tokens) = &state.cfg.tokens {
        match token_of(req, &query) {
            Some(t) if tokens.contains(&t) => {}
            Some(_) => return Err(refuse(StatusCode::UNAUTHORIZED, "invalid token")),
            None => return Err(refuse(StatusCode::UNAUTHORIZED, "authentication required")),
        }
    }
    let ep = parse_endpoint(path).map_err(|e| refuse(StatusCode::NOT_FOUND, e.to_string()))?;
    match ep.role {
        Role::Reader => Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "the reader endpoint is not supported by this broker",
        )),
        Role::Producer => Ok(Endpoint::Producer {
            topic: state.registry.topic(&ep.topic, ep.persistent),
        }),
        Role::Consumer => {
            let mut kind = SubType::Exclusive;
            let mut queue = state.cfg.receiver_queue_size;
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
                            .min(state.cfg.receiver_queue_size.max(1) * 10);
                    }
                    "pullMode" if v.eq_ignore_ascii_case("true") => {
                        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "pullMode is not supported"));
                    }
                    _ => {}
                }
            }
            let sub_name = ep.subscription.expect("consumer path has a subscription");
            let topic = state.registry.topic(&ep.topic, ep.persistent);
            let (sub, id, rx) = state
                .registry
                .join(&topic, &sub_name, kind, queue)
                .map_err(|e| refuse(StatusCode::CONFLICT, e.to_string()))?;
            Ok(Endpoint::Consumer { topic, sub, id, rx })
        }
    }
}

pub(super) async fn run(stream: TcpStream, peer: SocketAddr, state: Arc<State>, cancel: CancellationToken) {
    let config = WebSocketConfig::default()
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
    let ws = match tokio::time::timeout(state.cfg.handshake_timeout, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(target: LOG, "upgrade from {peer} refused or failed: {e}");
            if let Some(Endpoint::Consumer { topic, sub, id, .. }) = endpoint {
                state.registry.leave(&topic, &sub, id, Vec::new());
            }
            return;
        }
        Err(_) => {
            tracing::debug!(target: LOG, "upgrade from {peer} timed out");
            if let Some(Endpoint::Consumer { topic, sub, id, .. }) = endpoint {
                state.registry.leave(&topic, &sub, id, Vec::new());
            }
            return;
        }
    };
    match endpoint {
        Some(Endpoint::Producer { topic }) => producer(ws, &topic, &state, &cancel).await,
        Some(Endpoint::Consumer { topic, sub, id, rx }) => {
            let unacked = consumer(ws, rx, &topic, &state, &cancel).await;
            state.registry.leave(&topic, &sub, id, unacked);
        }
        None => {}
    }
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

/// Liveness: ping every interval; a peer silent for three intervals is dropped.
struct Liveness {
    ticker: tokio::time::Interval,
    silent_ticks: u32,
}

impl Liveness {
    fn new(every: Duration) -> Self {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            silent_ticks: 0,
        }
    }
}

fn publish_time() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

async fn producer(mut ws: Ws, topic: &Arc<Topic>, state: &State, cancel: &CancellationToken) {
    let mut live = Liveness::new(state.cfg.ping_interval);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.send(close_frame(CloseCode::Away, "broker shutting down")).await;
                return;
            }
            _ = live.ticker.tick() => {
                live.silent_ticks += 1;
                if live.silent_ticks > 3 || ws.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            }
            f = ws.next() => f,
        };
        live.silent_ticks = 0;
        let text = match frame {
            None | Some(Ok(WsMessage::Close(_))) => return,
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Binary(b))) => match String::from_utf8(b.to_vec()) {
                Ok(s) => s.into(),
                Err(_) => {
                    let ack = ProducerAck::error("send-error", "binary frame is not UTF-8 JSON", None);
                    if send_json(&mut ws, &ack).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(target: LOG, "producer on {}: {e}", topic.name);
                if let Some(close) = close_for(&e) {
                    let _ = ws.send(close).await;
                }
                return;
            }
        };
        let ack = publish(text.as_str(), topic, state).await;
        if send_json(&mut ws, &ack).await.is_err() {
            return;
        }
    }
}

async fn publish(text: &str, topic: &Arc<Topic>, state: &State) -> ProducerAck {
    let frame = match PublishFrame::parse(text) {
        Ok(f) => f,
        Err(e) => return ProducerAck::error("send-error", format!("Failed to deserialize from JSON: {e}"), None),
    };
    let Some(payload) = frame.payload else {
        return ProducerAck::error("send-error", "the message has no payload", frame.context);
    };
    if let Err(e) = decode_payload(&payload) {
        return ProducerAck::error("send-error", e.to_string(), frame.context);
    }
    let id = state.next_message_id();
    let msg = Arc::new(Message {
        id: id.clone(),
        payload,
        properties: frame.properties,
        publish_time: publish_time(),
        key: frame.key,
    });
    match topic.publish(msg, state.cfg.publish_hold, state.cfg.max_backlog).await {
        Ok(()) => ProducerAck::ok(id, frame.context),
        Err(e) => ProducerAck::error("send-error", e.to_string(), frame.context),
    }
}

async fn send_json<T: serde::Serialize>(ws: &mut Ws, value: &T) -> Result<(), WsError> {
    let text = serde_json::to_string(value).expect("serializable");
    ws.send(WsMessage::text(text)).await
}

/// Run a consumer until it disconnects; returns the messages it had not acked (persistent topics).
async fn consumer(
    mut ws: Ws,
    mut rx: mpsc::Receiver<Dispatch>,
    topic: &Arc<Topic>,
    state: &State,
    cancel: &CancellationToken,
) -> Vec<Dispatch> {
    let mut live = Liveness::new(state.cfg.ping_interval);
    // insertion order matters for redelivery: keep a sequence number with each entry
    let mut unacked: HashMap<String, (u64, Dispatch)> = HashMap::new();
    let mut seq = 0u64;
    let track = topic.persistent;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.send(close_frame(CloseCode::Away, "broker shutting down")).await;
                break;
            }
            _ = live.ticker.tick() => {
                live.silent_ticks += 1;
                if live.silent_ticks > 3 || ws.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            d = rx.recv() => {
                let Some(d) = d else { break };
                let m = &d.msg;
                let out = DeliveryOut {
                    message_id: &m.id,
                    payload: &m.payload,
                    properties: &m.properties,
                    publish_time: &m.publish_time,
                    redelivery_count: d.redelivery,
                    key: m.key.as_deref(),
                };
                let text = serde_json::to_string(&out).expect("serializable");
                if track {
                    seq += 1;
                    unacked.insert(m.id.clone(), (seq, d.clone()));
                }
                // NOTE: feed, and flush only when no further delivery is queued, to batch under load
                if ws.feed(WsMessage::text(text)).await.is_err() {
                    break;
                }
                topic.msg_out.fetch_add(1, Ordering::Relaxed);
                if rx.is_empty() && ws.flush().await.is_err() {
                    break;
                }
            }
            f = ws.next() => {
                live.silent_ticks = 0;
                match f {
                    None | Some(Ok(WsMessage::Close(_))) => break,
                    Some(Ok(WsMessage::Text(t))) => match ConsumerCommand::parse(t.as_str()) {
                        Ok(ConsumerCommand::Ack(id)) => {
                            unacked.remove(&id);
                        }
                        // TODO(#11): redeliver after negativeAckRedeliveryDelay; until then a nacked message
                        // stays unacked and is redelivered when this consumer goes away.
                        Ok(ConsumerCommand::NegativeAck(_)) => {}
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(target: LOG, "consumer on {}: {e}", topic.name);
                        }
                    },
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
    let mut rest: Vec<(u64, Dispatch)> = unacked.into_values().collect();
    rest.sort_by_key(|(s, _)| *s);
    let mut rest: Vec<Dispatch> = rest.into_iter().map(|(_, d)| d).collect();
    // whatever was queued for this consumer but never written goes back too
    rx.close();
    while let Ok(d) = rx.try_recv() {
        if track {
            rest.push(Dispatch {
                msg: d.msg,
                redelivery: d.redelivery.saturating_sub(1),
            });
        }
    }
    rest
}
