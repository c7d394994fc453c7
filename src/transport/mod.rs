//! WebSocket client connections (tokio-tungstenite): connect with headers and a timeout, reconnect with
//! capped exponential backoff and jitter, and a writer task fed by a bounded channel.
//!
//! Depends on `protocol` only. Used by `backend` and `client`; the broker accepts connections itself.

mod error;
pub mod tls;

pub use error::TransportError;
pub use tls::TlsOptions;

use std::time::Duration;

use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A connected client WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// The reading half of a connection.
pub type WsReader = SplitStream<WsStream>;

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Extra HTTP headers for the upgrade request (e.g. `authorization`).
    pub headers: Vec<(String, String)>,
    /// Time allowed for TCP connect plus WebSocket handshake.
    pub connect_timeout: Duration,
    /// Largest frame/message accepted from the peer.
    pub max_message_size: usize,
    /// Capacity of the writer queue.
    pub write_queue: usize,
    /// Interval of WebSocket pings sent while idle (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Certificate checks of `wss://` URLs.
    pub tls: TlsOptions,
}

impl ConnectOptions {
    /// These options with one more upgrade header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            write_queue: 1024,
            ping_interval: Some(Duration::from_secs(30)),
            tls: TlsOptions::default(),
        }
    }
}

/// Open one WebSocket connection to `url`.
pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<WsStream, TransportError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| TransportError::InvalidUrl(url.into(), e.to_string()))?;
    for (k, v) in &opts.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| TransportError::InvalidHeader(k.clone(), e.to_string()))?;
        let value = HeaderValue::from_str(v).map_err(|e| TransportError::InvalidHeader(k.clone(), e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    // NOTE: tungstenite's 128 KiB default read buffer per connection adds up in a backend with a reply
    // connection per caller (1000 callers: 128 MiB), and it is zeroed up to the read size before every read
    // (2-3% of the runtime threads' CPU on small messages). 32 KiB, as the broker: 100 MB echoes unchanged.
    let config = WebSocketConfig::default()
        .read_buffer_size(32 * 1024)
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size));
    let connector = if request.uri().scheme_str() == Some("wss") {
        tokio_tungstenite::Connector::Rustls(tls::client_config(&opts.tls)?)
    } else {
        tokio_tungstenite::Connector::Plain
    };
    let fut = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector));
    match tokio::time::timeout(opts.connect_timeout, fut).await {
        Err(_) => Err(TransportError::Timeout(url.into(), opts.connect_timeout)),
        Ok(Err(e)) => Err(TransportError::connect(url, e)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Give up after this many failed attempts (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 200 ms doubling to 2 s: a refused connect costs next to nothing, and a backend must be back on its
    /// topic soon after its broker (a restart should not leave it away for long).
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based), with ±25 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        base.mul_f64(jitter)
    }
}

/// Connect, retrying with `backoff` until success, cancellation or the attempt limit. Each failure is
/// logged once as a warning with the next delay, so a user sees why nothing happens.
pub async fn connect_with_backoff(
    url: &str,
    opts: &ConnectOptions,
    backoff: Backoff,
    cancel: &CancellationToken,
) -> Result<WsStream, TransportError> {
    let mut attempt = 0u32;
    loop {
        let err = tokio::select! {
            _ = cancel.cancelled() => return Err(TransportError::Cancelled),
            r = connect(url, opts) => match r {
                Ok(ws) => return Ok(ws),
                Err(e) => e,
            },
        };
        if !err.is_retryable() {
            return Err(err);
        }
        attempt += 1;
        if backoff.max_attempts.is_some_and(|m| attempt >= m) {
            return Err(err);
        }
        let delay = backoff.delay(attempt);
        tracing::warn!(target: "demessaging_rs.transport", "{err}; retrying in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = cancel.cancelled() => return Err(TransportError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Split `ws` and spawn a writer task that sends whatever arrives on the returned bounded channel and
/// pings while idle. With `batching`, text frames are held back for others (see [`AckBatching`]). The
/// writer ends when every sender is dropped or the socket fails; it closes the socket politely on the way
/// out, writing what it held back.
pub fn spawn_writer(
    ws: WsStream,
    opts: &ConnectOptions,
    batching: Option<AckBatching>,
) -> (mpsc::Sender<Message>, WsReader) {
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(opts.write_queue.max(1));
    let ping = opts.ping_interval;
    tokio::spawn(async move {
        let mut ticker = ping.map(|p| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // frames are held back (with `batching`) until `due`
        let mut holding = false;
        let due = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(due);
        loop {
            // NOTE: the queue is not watched while frames are held: a frame queued meanwhile wakes nobody
            // and leaves with the held ones
            let msg = tokio::select! {
                m = rx.recv(), if !holding => match m {
                    Some(m) => Some(m),
                    None => break,
                },
                _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    Some(Message::Ping(Default::default()))
                }
                // the held frames' time is up
                _ = &mut due, if holding => None,
            };
            // a text frame starts holding back (with `batching`); a ping or the end of holding flushes
            // (nothing is taken from the queue while holding, so no text frame arrives then)
            let hold = batching.filter(|_| matches!(msg, Some(Message::Text(_))));
            if let Some(m) = msg {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            // NOTE: feed + flush only when the queue is drained batches frames under load.
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            match hold {
                Some(b) => {
                    holding = true;
                    due.as_mut().reset(tokio::time::Instant::now() + b.delay);
                }
                None => {
                    holding = false;
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    (tx, stream)
}

/// How the writer of a consumer socket, which carries only acks, holds them back to write several at once.
///
/// NOTE: an ack written at once costs a wake-up of the writer task, a write, and a read and often a
/// wake-up of the broker, per message, for a frame nobody waits for. Held for up to `delay`, the acks
/// queued meanwhile leave with one write and wake nobody on the way (8 threads calling through our broker:
/// about 0.5 sendto and 0.35 recvfrom calls per call fewer, whole system). The broker's window
/// (`receiverQueueSize`, 1000 by default on Pulsar and on our broker) is far larger than what arrives in
/// `delay`, so it never stops delivering for want of an ack.
#[derive(Debug, Clone, Copy)]
pub struct AckBatching {
    /// Longest time an ack waits for others.
    pub delay: Duration,
}

impl Default for AckBatching {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(1),
        }
    }
}

/// A writer shared by several callers, who write themselves (no writer task in between). Async callers
/// use [`SharedWriter::send`]; plain threads use [`SharedWriter::send_blocking`], which performs the write
/// on the calling thread.
///
/// NOTE: a blocking caller writing its own frame saves waking a runtime thread per message. On the noisy
/// 2-core machine bench/bench_calls.py could not tell the difference (p50 0.41–0.62 ms both ways).
pub struct SharedWriter {
    sink: tokio::sync::Mutex<SplitSink<WsStream, Message>>,
    handle: tokio::runtime::Handle,
    /// Frames queued by [`SharedWriter::enqueue`], written in batches by one task.
    queue: std::sync::OnceLock<mpsc::Sender<Message>>,
    /// Set once a queued write failed: `enqueue` refuses from then on.
    broken: std::sync::atomic::AtomicBool,
    /// Where queued frames go that could not be written (see [`SharedWriter::on_unsent`]).
    unsent: std::sync::OnceLock<Box<dyn Fn(Vec<Message>) + Send + Sync>>,
}

/// Frames [`SharedWriter::enqueue`] may hold before callers write themselves.
const QUEUED_FRAMES: usize = 4096;

impl SharedWriter {
    /// Queue `msgs` for a background task that writes whatever has queued up with one flush, so that many
    /// callers in a burst share a write (one syscall for many frames). Never blocks for long: when the
    /// queue is full, the caller writes on its own thread like [`SharedWriter::send_blocking`].
    ///
    /// NOTE: one write per request cost the asyncio caller (and the broker it wakes) a syscall and a
    /// wake-up each; with 1000 calls in flight the requests of a loop iteration now leave together.
    ///
    /// With `direct_if_idle`, frames are written on the calling thread when nothing is queued and nobody
    /// writes (no hand-off for a lone message: its latency stays that of a direct write).
    pub fn enqueue(
        self: &Arc<Self>,
        msgs: impl IntoIterator<Item = Message>,
        direct_if_idle: bool,
    ) -> Result<(), TransportError> {
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            return Err(TransportError::Ws("the connection failed".into()));
        }
        // Frames queued before stay ahead: the direct path is only taken when the queue is empty while the
        // socket is held.
        let idle = |tx: Option<&mpsc::Sender<Message>>| tx.is_none_or(|tx| tx.capacity() == tx.max_capacity());
        if direct_if_idle && idle(self.queue.get()) {
            if let Ok(mut sink) = self.sink.try_lock() {
                if idle(self.queue.get()) {
                    return self.handle.block_on(async move {
                        for m in msgs {
                            sink.feed(m).await.map_err(|e| TransportError::Ws(e.to_string()))?;
                        }
                        sink.flush().await.map_err(|e| TransportError::Ws(e.to_string()))
                    });
                }
            }
        }
        let tx = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
            self.handle.spawn(drain_queue(Arc::downgrade(self), rx));
            tx
        });
        let mut rest = msgs.into_iter();
        for m in rest.by_ref() {
            if let Err(e) = tx.try_send(m) {
                let m = match e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                return self.send_blocking(std::iter::once(m).chain(rest));
            }
        }
        Ok(())
    }

    /// Write `msgs` and flush once.
    pub async fn send(&self, msgs: impl IntoIterator<Item = Message>) -> Result<(), TransportError> {
        let mut sink = self.sink.lock().await;
        for m in msgs {
            sink.feed(m).await.map_err(|e| TransportError::Ws(e.to_string()))?;
        }
        sink.flush().await.map_err(|e| TransportError::Ws(e.to_string()))
    }

    /// Write `msgs` from a plain thread (or a `spawn_blocking` one), on that thread.
    ///
    /// # Panics
    /// When called from an async context (a runtime worker), like every tokio `block_on`.
    pub fn send_blocking(&self, msgs: impl IntoIterator<Item = Message>) -> Result<(), TransportError> {
        self.handle.block_on(self.send(msgs))
    }

    /// Hand frames that [`SharedWriter::enqueue`] accepted but could not write (the connection failed) to
    /// `handler`, e.g. to send them again on a new connection. Set once, before the first `enqueue`.
    pub fn on_unsent(&self, handler: impl Fn(Vec<Message>) + Send + Sync + 'static) {
        let _ = self.unsent.set(Box::new(handler));
    }

    /// Close the socket politely.
    pub async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }
}

/// The task behind [`SharedWriter::enqueue`]: feeds every queued frame, then flushes once. When a write
/// fails, the frame and everything still queued go to the writer's `on_unsent` handler (or are reported).
async fn drain_queue(writer: std::sync::Weak<SharedWriter>, mut rx: mpsc::Receiver<Message>) {
    while let Some(first) = rx.recv().await {
        let Some(w) = writer.upgrade() else { return };
        let mut sink = w.sink.lock().await;
        let mut batch = Some(first);
        let mut failed = None;
        while let Some(m) = batch.take().or_else(|| rx.try_recv().ok()) {
            if let Err(e) = sink.feed(m.clone()).await {
                failed = Some((vec![m], e));
                break;
            }
        }
        if failed.is_none() {
            if let Err(e) = sink.flush().await {
                failed = Some((Vec::new(), e));
            }
        }
        let Some((mut unsent, e)) = failed else { continue };
        w.broken.store(true, std::sync::atomic::Ordering::Release);
        rx.close();
        while let Ok(m) = rx.try_recv() {
            unsent.push(m);
        }
        match w.unsent.get() {
            Some(handler) if !unsent.is_empty() => handler(unsent),
            _ if unsent.is_empty() => {}
            _ => {
                tracing::error!(target: "demessaging_rs.transport", "write failed ({e}); {} queued frames not sent", unsent.len())
            }
        }
        return;
    }
}

/// Split `ws` into a [`SharedWriter`] and its reader; a background task pings while the writer lives.
/// Must be called within the runtime.
pub fn shared_writer(ws: WsStream, opts: &ConnectOptions) -> (Arc<SharedWriter>, WsReader) {
    let (sink, stream) = ws.split();
    let writer = Arc::new(SharedWriter {
        sink: tokio::sync::Mutex::new(sink),
        handle: tokio::runtime::Handle::current(),
        queue: std::sync::OnceLock::new(),
        broken: std::sync::atomic::AtomicBool::new(false),
        unsent: std::sync::OnceLock::new(),
    });
    if let Some(every) = opts.ping_interval {
        let weak = Arc::downgrade(&writer);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticker.tick().await;
                let Some(w) = weak.upgrade() else { return };
                if w.send([Message::Ping(Default::default())]).await.is_err() {
                    return;
                }
            }
        });
    }
    (writer, stream)
}

/// Read the next text frame, skipping control frames. `None` when the connection is closed, an error when
/// it broke or the peer closed it with a reason ([`TransportError::ClosedByPeer`]).
///
/// NOTE: the frame as the websocket layer read it, not copied (a large message's fragments are big).
pub async fn next_text(reader: &mut WsReader) -> Option<Result<Utf8Bytes, TransportError>> {
    loop {
        match reader.next().await? {
            Ok(Message::Text(t)) => return Some(Ok(t)),
            Ok(Message::Binary(b)) => match Utf8Bytes::try_from(b) {
                Ok(t) => return Some(Ok(t)),
                Err(_) => return Some(Err(TransportError::Protocol("binary frame that is not UTF-8".into()))),
            },
            Ok(Message::Close(Some(frame))) if !frame.reason.is_empty() => {
                return Some(Err(TransportError::ClosedByPeer(frame.reason.to_string())))
            }
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(e) => return Some(Err(TransportError::Ws(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: None,
        };
        for attempt in 1..30 {
            let d = b.delay(attempt);
            assert!(d <= Duration::from_millis(1250), "{d:?}");
            assert!(d >= Duration::from_millis(75), "{d:?}");
        }
        assert!(b.delay(5) >= Duration::from_millis(750));
    }

    /// A server on a free loopback port that reads text frames until the client closes; returns them with
    /// the time each arrived.
    async fn recording_server() -> (String, tokio::task::JoinHandle<Vec<(String, tokio::time::Instant)>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut got = Vec::new();
            while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                match m {
                    Message::Text(t) => got.push((t.to_string(), tokio::time::Instant::now())),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            got
        });
        (url, server)
    }

    #[tokio::test]
    async fn held_acks_are_written_after_the_delay_in_order_and_before_the_close() {
        let (url, server) = recording_server().await;
        let ws = connect(&url, &ConnectOptions::default()).await.unwrap();
        let delay = Duration::from_millis(50);
        let (tx, _reader) = spawn_writer(ws, &ConnectOptions::default(), Some(AckBatching { delay }));
        let sent = tokio::time::Instant::now();
        for i in 0..3 {
            tx.send(Message::text(format!("ack {i}"))).await.unwrap();
        }
        // the writer ends once the channel is closed, after writing what it held
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server got the close")
            .unwrap();
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["ack 0", "ack 1", "ack 2"]);
        assert!(got[0].1 >= sent + delay, "the first ack was held for the delay");
    }
}
