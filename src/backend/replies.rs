//! Reply producers: one producer socket per response topic, opened on first use within
//! `producer_connection_timeout`, closed after `producer_keep_alive` idle (0 = after each reply).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::protocol::envelope::ProducerAck;
use crate::protocol::url::BrokerAddress;
use crate::transport::{self, ConnectOptions};

const LOG: &str = "demessaging_rs.backend";

/// Routes reply frames to per-topic producer tasks.
pub struct ReplyRouter {
    address: BrokerAddress,
    connect: ConnectOptions,
    keep_alive: Duration,
    producers: Mutex<HashMap<String, mpsc::Sender<String>>>,
    handle: Handle,
}

impl ReplyRouter {
    pub fn new(
        address: BrokerAddress,
        mut connect: ConnectOptions,
        connect_timeout: Duration,
        keep_alive: Duration,
        handle: Handle,
    ) -> Arc<Self> {
        connect.connect_timeout = connect_timeout;
        Arc::new(Self {
            address,
            connect,
            keep_alive,
            producers: Mutex::new(HashMap::new()),
            handle,
        })
    }

    fn sender(self: &Arc<Self>, topic: &str) -> mpsc::Sender<String> {
        let mut producers = self.producers.lock().expect("producers lock");
        if let Some(tx) = producers.get(topic) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(256);
        producers.insert(topic.to_owned(), tx.clone());
        self.handle
            .spawn(producer_task(self.clone(), topic.to_owned(), tx.downgrade(), rx));
        tx
    }

    /// Send frames to `topic` from a tokio task.
    pub async fn send(self: &Arc<Self>, topic: &str, frames: Vec<String>) {
        let mut frames = frames.into_iter().peekable();
        for _attempt in 0..3 {
            let tx = self.sender(topic);
            loop {
                let Some(f) = frames.peek().cloned() else { return };
                if tx.send(f).await.is_err() {
                    break; // the producer task ended meanwhile: retry with a fresh one
                }
                frames.next();
            }
        }
        tracing::error!(target: LOG, "could not hand a reply to the producer for topic {topic}");
    }

    /// Send frames to `topic` from a plain (non-tokio) thread, e.g. a Python worker.
    pub fn send_blocking(self: &Arc<Self>, topic: &str, frames: Vec<String>) {
        let mut frames = frames.into_iter().peekable();
        for _attempt in 0..3 {
            let tx = self.sender(topic);
            loop {
                let Some(f) = frames.peek().cloned() else { return };
                if tx.blocking_send(f).is_err() {
                    break;
                }
                frames.next();
            }
        }
        tracing::error!(target: LOG, "could not hand a reply to the producer for topic {topic}");
    }

    /// Close every producer (on shutdown, after the workers finished).
    pub fn close_all(&self) {
        self.producers.lock().expect("producers lock").clear();
    }
}

async fn producer_task(
    router: Arc<ReplyRouter>,
    topic: String,
    me: mpsc::WeakSender<String>,
    mut rx: mpsc::Receiver<String>,
) {
    let url = router.address.producer_url(&topic);
    let ws = match transport::connect(&url, &router.connect).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::error!(
                target: LOG,
                "failed to open a producer for response topic {topic} within {:?}: {e}; replies to it are lost",
                router.connect.connect_timeout
            );
            forget(&router, &topic, &me, &mut rx);
            // drain what was queued so senders are not blocked, and report it
            let mut lost = 0;
            while rx.try_recv().is_ok() {
                lost += 1;
            }
            if lost > 0 {
                tracing::error!(target: LOG, "{lost} reply frame(s) to {topic} could not be sent");
            }
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let keep_alive = router.keep_alive;
    let mut outstanding = 0usize;
    loop {
        let idle = if keep_alive.is_zero() && outstanding == 0 {
            Duration::from_millis(1)
        } else {
            keep_alive.max(Duration::from_millis(1))
        };
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { break };
                outstanding += 1;
                if sink.feed(WsMessage::text(f)).await.is_err() {
                    tracing::error!(target: LOG, "producer for {topic} lost while sending a reply");
                    break;
                }
                while let Ok(f) = rx.try_recv() {
                    outstanding += 1;
                    if sink.feed(WsMessage::text(f)).await.is_err() {
                        break;
                    }
                }
                if sink.flush().await.is_err() {
                    tracing::error!(target: LOG, "producer for {topic} lost while sending a reply");
                    break;
                }
            }
            m = stream.next() => match m {
                Some(Ok(WsMessage::Text(t))) => {
                    outstanding = outstanding.saturating_sub(1);
                    match serde_json::from_str::<ProducerAck>(t.as_str()) {
                        Ok(ack) if !ack.is_ok() => tracing::error!(
                            target: LOG,
                            "broker rejected a reply to {topic}: {} {}",
                            ack.result,
                            ack.error_msg.unwrap_or_default()
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(target: LOG, "unreadable ack on {topic}: {e}"),
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    tracing::debug!(target: LOG, "producer connection for {topic} closed by the broker");
                    break;
                }
            },
            _ = tokio::time::sleep(idle), if outstanding == 0 => {
                // idle: retire this producer unless something raced in
                let retire = {
                    let mut producers = router.producers.lock().expect("producers lock");
                    if rx.is_empty() {
                        let mine = me.upgrade();
                        if producers.get(&topic).is_some_and(|tx| mine.as_ref().is_some_and(|m| m.same_channel(tx))) {
                            producers.remove(&topic);
                        }
                        rx.close();
                        true
                    } else {
                        false
                    }
                };
                if retire {
                    // anything sent between the check and close() is still in rx: write it
                    while let Ok(f) = rx.try_recv() {
                        let _ = sink.send(WsMessage::text(f)).await;
                    }
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    }
    forget(&router, &topic, &me, &mut rx);
    let _ = sink.close().await;
}

fn forget(router: &ReplyRouter, topic: &str, me: &mpsc::WeakSender<String>, rx: &mut mpsc::Receiver<String>) {
    let mut producers = router.producers.lock().expect("producers lock");
    let mine = me.upgrade();
    if producers
        .get(topic)
        .is_some_and(|tx| mine.as_ref().is_some_and(|m| m.same_channel(tx)))
    {
        producers.remove(topic);
    }
    rx.close();
}
