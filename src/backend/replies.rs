//! Reply producers: one producer socket per response topic, opened on first use within
//! `producer_connection_timeout`, closed after `producer_keep_alive` idle (0 = after each reply).
//!
//! The thread that has a reply writes it itself: a worker thread blocks on the write (without the GIL),
//! a tokio task awaits it. A small task per producer reads the broker's acks and retires idle producers.
//!
//! NOTE: writing on the worker thread saves waking a runtime thread per reply; on the shared 2-core machine
//! the call benchmark's noise (p50 0.45–1.1 ms between identical runs) hid the difference.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::protocol::dasf::Frames;
use crate::protocol::envelope::{ProducerAck, RECEIPTS_HEADER};
use crate::protocol::url::BrokerAddress;
use crate::transport::{self, ConnectOptions, SharedWriter, TransportError, WsReader};

const LOG: &str = "demessaging_rs.backend";

/// One open producer on a response topic.
struct Producer {
    writer: Arc<SharedWriter>,
    /// Frames written and not yet acked (counted only when every publish is acked: `keep_alive` 0).
    outstanding: AtomicUsize,
    /// Milliseconds since the router's epoch of the last write.
    last_used: AtomicU64,
    closed: CancellationToken,
}

/// Hands reply frames to per-topic producers.
pub struct ReplyRouter {
    address: BrokerAddress,
    connect: ConnectOptions,
    keep_alive: Duration,
    producers: Mutex<HashMap<String, Arc<Producer>>>,
    handle: Handle,
    epoch: Instant,
    /// Replies a failed connection could not write, to be sent again (by `resend_unsent`).
    unsent: tokio::sync::mpsc::Sender<(String, Vec<String>)>,
}

/// Frames of failed connections waiting to be sent again; beyond this they are reported lost.
const UNSENT_BATCHES: usize = 1024;

impl ReplyRouter {
    pub fn new(
        address: BrokerAddress,
        mut connect: ConnectOptions,
        connect_timeout: Duration,
        keep_alive: Duration,
        handle: Handle,
    ) -> Arc<Self> {
        connect.connect_timeout = connect_timeout;
        if !keep_alive.is_zero() {
            // a connection kept open needs no receipt of what went well: refusals are still answered
            connect = connect.with_header(RECEIPTS_HEADER, "errors");
        }
        let (unsent, rx) = tokio::sync::mpsc::channel(UNSENT_BATCHES);
        let router = Arc::new(Self {
            address,
            connect,
            keep_alive,
            producers: Mutex::new(HashMap::new()),
            handle,
            epoch: Instant::now(),
            unsent,
        });
        router.handle.spawn(resend_unsent(Arc::downgrade(&router), rx));
        router
    }

    /// Count `n` frames written on `p` whose receipts are to come (only with `keep_alive` 0: otherwise the
    /// broker is asked to answer refusals only, and the count is not needed).
    fn count_outstanding(&self, p: &Producer, n: usize) {
        if self.keep_alive.is_zero() {
            p.outstanding.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn existing(&self, topic: &str) -> Option<Arc<Producer>> {
        let producers = self.producers.lock().expect("producers lock");
        producers.get(topic).filter(|p| !p.closed.is_cancelled()).cloned()
    }

    /// The producer for `topic`, connected now if needed.
    async fn producer(self: &Arc<Self>, topic: &str) -> Result<Arc<Producer>, TransportError> {
        if let Some(p) = self.existing(topic) {
            return Ok(p);
        }
        let url = self.address.producer_url(topic);
        let ws = transport::connect(&url, &self.connect).await?;
        let (writer, reader) = transport::shared_writer(ws, &self.connect);
        let fresh = Arc::new(Producer {
            writer,
            outstanding: AtomicUsize::new(0),
            last_used: AtomicU64::new(self.now_ms()),
            closed: CancellationToken::new(),
        });
        let chosen = {
            let mut producers = self.producers.lock().expect("producers lock");
            match producers.get(topic).filter(|p| !p.closed.is_cancelled()) {
                Some(other) => other.clone(), // another thread connected meanwhile: use theirs
                None => {
                    producers.insert(topic.to_owned(), fresh.clone());
                    fresh.clone()
                }
            }
        };
        if Arc::ptr_eq(&chosen, &fresh) {
            // replies queued on this connection when it fails go out again on a new one
            let unsent = self.unsent.clone();
            let to = topic.to_owned();
            fresh.writer.on_unsent(move |msgs| {
                let frames: Vec<String> = msgs
                    .into_iter()
                    .filter_map(|m| m.into_text().ok().map(|t| t.as_str().to_owned()))
                    .collect();
                let n = frames.len();
                if unsent.try_send((to.clone(), frames)).is_err() {
                    Self::report_lost(&to, &TransportError::Ws(format!("{n} frames not sent")), Duration::ZERO);
                }
            });
            self.handle.spawn(watch(self.clone(), topic.to_owned(), fresh, reader));
        } else {
            fresh.closed.cancel();
            let w = fresh.writer.clone();
            self.handle.spawn(async move { w.close().await });
        }
        Ok(chosen)
    }

    fn forget(&self, topic: &str, p: &Arc<Producer>) {
        p.closed.cancel();
        let mut producers = self.producers.lock().expect("producers lock");
        if producers.get(topic).is_some_and(|q| Arc::ptr_eq(q, p)) {
            producers.remove(topic);
        }
    }

    fn report_lost(topic: &str, err: &TransportError, connect_timeout: Duration) {
        tracing::error!(
            target: LOG,
            "could not send a reply to {topic} (producer within {connect_timeout:?}): {err}; the reply is lost"
        );
    }

    /// Send frames to `topic` from a tokio task.
    pub async fn send(self: &Arc<Self>, topic: &str, frames: Vec<String>) {
        self.send_frames(topic, frames.into_iter().map(Utf8Bytes::from).collect())
            .await;
    }

    /// [`ReplyRouter::send`] of frames already in a websocket message's text type (cloned per attempt
    /// without copying).
    async fn send_frames(self: &Arc<Self>, topic: &str, frames: Vec<Utf8Bytes>) {
        let mut last_err = None;
        for _attempt in 0..3 {
            let p = match self.producer(topic).await {
                Ok(p) => p,
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            };
            self.count_outstanding(&p, frames.len());
            p.last_used.store(self.now_ms(), Ordering::Relaxed);
            match p.writer.send(frames.iter().cloned().map(WsMessage::Text)).await {
                Ok(()) => return,
                Err(e) => {
                    self.forget(topic, &p);
                    last_err = Some(e);
                }
            }
        }
        if let Some(e) = last_err {
            Self::report_lost(topic, &e, self.connect.connect_timeout);
        }
    }

    /// Send frames to `topic` from a plain (non-tokio) thread, e.g. a Python worker: the write happens
    /// on that thread.
    ///
    /// NOTE: on a live connection the frames are queued for its writer task, which writes whatever queued
    /// up with one flush (one run, 1000 calls in flight: backend CPU 25 -> 15 µs per call); frames a failing
    /// connection could not write are sent again through [`ReplyRouter::send`].
    ///
    /// NOTE: the frames are encoded as they are written (a large reply is never all encoded at once, and
    /// its first fragment leaves while the next is encoded); a retry encodes them again.
    pub fn send_blocking(self: &Arc<Self>, topic: &str, frames: Frames, busy: bool) {
        if let Some(p) = self.existing(topic) {
            self.count_outstanding(&p, frames.len());
            p.last_used.store(self.now_ms(), Ordering::Relaxed);
            let msgs = frames.clone().map(|f| WsMessage::Text(Utf8Bytes::from(f)));
            if p.writer.enqueue(msgs, !busy).is_ok() {
                return;
            }
            self.forget(topic, &p);
        }
        self.handle
            .block_on(self.send_frames(topic, frames.map(Utf8Bytes::from).collect()));
    }

    /// Close every producer (on shutdown, after the workers finished).
    pub fn close_all(&self) {
        let all: Vec<Arc<Producer>> = self
            .producers
            .lock()
            .expect("producers lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in all {
            p.closed.cancel();
        }
    }
}

/// Read a producer's acks (logging refusals) and retire it when idle for `keep_alive`, or right after its
/// last ack when `keep_alive` is 0.
async fn watch(router: Arc<ReplyRouter>, topic: String, p: Arc<Producer>, mut reader: WsReader) {
    let keep_alive = router.keep_alive;
    let tick = if keep_alive.is_zero() {
        Duration::from_millis(50)
    } else {
        (keep_alive / 4).max(Duration::from_millis(50))
    };
    loop {
        tokio::select! {
            _ = p.closed.cancelled() => break,
            t = transport::next_text(&mut reader) => match t {
                Some(Ok(text)) => {
                    // saturating: a receipt nobody counted (a refusal with `keep_alive` > 0) must not wrap
                    let left = p
                        .outstanding
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)))
                        .unwrap_or(0)
                        .saturating_sub(1);
                    match serde_json::from_str::<ProducerAck>(&text) {
                        Ok(ack) if !ack.is_ok() => tracing::error!(
                            target: LOG,
                            "broker rejected a reply to {topic}: {} {}",
                            ack.result,
                            ack.error_msg.unwrap_or_default()
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(target: LOG, "unreadable ack on {topic}: {e}"),
                    }
                    if keep_alive.is_zero() && left == 0 {
                        break;
                    }
                }
                Some(Err(TransportError::ClosedByPeer(why))) => {
                    // what it was sending is lost, e.g. a reply frame above the broker's limit
                    tracing::error!(
                        target: LOG,
                        "the broker closed the reply producer for {topic}: {why}; what it was sending is lost \
                         (a frame too big: set max_payload_size below the broker's frame limit)"
                    );
                    break;
                }
                Some(Err(_)) | None => {
                    tracing::debug!(target: LOG, "producer connection for {topic} closed");
                    break;
                }
            },
            _ = tokio::time::sleep(tick) => {
                let idle = router.now_ms().saturating_sub(p.last_used.load(Ordering::Relaxed));
                if p.outstanding.load(Ordering::Relaxed) == 0 && Duration::from_millis(idle) >= keep_alive {
                    break;
                }
            }
        }
    }
    router.forget(&topic, &p);
    p.writer.close().await;
}

/// Sends again what failed connections could not write (on new connections, with `send`'s retries).
async fn resend_unsent(
    router: std::sync::Weak<ReplyRouter>,
    mut rx: tokio::sync::mpsc::Receiver<(String, Vec<String>)>,
) {
    while let Some((topic, frames)) = rx.recv().await {
        let Some(router) = router.upgrade() else { return };
        router.send(&topic, frames).await;
    }
}
