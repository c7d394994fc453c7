//! The embedded broker: a small server speaking Apache Pulsar's WebSocket API (v2), enough for DASF and
//! for any client written against Pulsar's proxy.
//!
//! Flow: the accept loop (`serve`) takes a TCP connection, checks limits, and runs the WebSocket upgrade
//! under a timeout. The upgrade callback parses the path (`protocol::url`), the query and the token and
//! either refuses with an HTTP status (400/401/404/409/501/503) or records the endpoint. Then one task per
//! connection runs `conn::producer` or `conn::consumer`. Producers publish into a `Topic`, which hands each
//! message to every subscription; a subscription picks a consumer (`subscription::pick`) and pushes into
//! that consumer's bounded queue. When all queues are full the producer task waits (its socket is not
//! read) for at most `publish_hold`, then acks with an error: nothing acked `ok` is dropped by the broker.
//!
//! With a TLS identity configured (`BrokerConfig::tls`), every connection first completes a TLS handshake
//! (bounded by the handshake timeout); a plain HTTP request on such a port gets a 400 that says so.
//!
//! Depends on `protocol` (and `transport::tls` for certificate files). Never on Python.

mod auth;
mod config;
mod conn;
mod http;
mod io;
mod subscription;
mod topic;

pub use auth::{fuzz_tokens, Access, Denied, Tokens};
pub use config::BrokerConfig;
pub use io::tls_server_config;
pub use subscription::SubType;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use topic::Registry;

/// The target of the broker's log records.
const LOG: &str = "demessaging_rs.broker";

/// Shared state of a running broker.
#[derive(Debug)]
pub(crate) struct State {
    pub cfg: BrokerConfig,
    pub registry: Registry,
    pub next_message: AtomicU64,
    pub connections: Arc<Semaphore>,
}

impl State {
    fn next_message_id(&self) -> String {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        crate::protocol::envelope::encode_payload(&n.to_be_bytes())
    }
}

/// A bound, not yet serving broker.
pub struct Broker {
    listener: TcpListener,
    state: Arc<State>,
}

impl Broker {
    /// Bind to `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, cfg: BrokerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let connections = Arc::new(Semaphore::new(cfg.max_connections));
        let state = Arc::new(State {
            cfg,
            registry: Registry::default(),
            next_message: AtomicU64::new(1),
            connections,
        });
        Ok(Self { listener, state })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `cancel` fires, then close every connection and wait for their tasks.
    pub async fn serve(self, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = self.state.clone();
                    let cancel = cancel.clone();
                    tracker.spawn(handle(stream, peer, state, cancel));
                }
                Err(e) => {
                    tracing::warn!(target: LOG, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Spawn [`Broker::serve`] on the current runtime.
    pub fn spawn(self) -> std::io::Result<BrokerHandle> {
        let addr = self.local_addr()?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(self.serve(cancel.clone()));
        Ok(BrokerHandle { addr, cancel, task })
    }
}

/// A running broker.
pub struct BrokerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl BrokerHandle {
    /// Stop accepting, close every connection and wait until all connection tasks ended.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// A token that stops the broker when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, state: Arc<State>, cancel: CancellationToken) {
    let io = match state.cfg.tls.clone() {
        None => io::Io::Plain(stream),
        Some(tls) => {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => None,
                io = accept_tls(stream, peer, tls, &state) => io,
            };
            match accepted {
                Some(io) => io,
                None => return,
            }
        }
    };
    let conn = io::Conn::new(io);
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        conn::refuse_busy(conn).await;
        return;
    };
    conn::run(conn, peer, state, cancel).await;
    drop(permit);
}

/// The TLS handshake of one connection; `None` (logged) when the peer does not complete it.
async fn accept_tls(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    state: &State,
) -> Option<io::Io> {
    let limit = state.cfg.handshake_timeout;
    // a TLS ClientHello record starts with 0x16; anything else is most likely a plain ws:// client
    let mut first = [0u8; 1];
    match tokio::time::timeout(limit, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            tracing::debug!(target: LOG, "{peer} sent plain text to the TLS port");
            let body = "this broker only accepts TLS connections: use wss:// (or https://)";
            http::reply(stream, "400 Bad Request", "text/plain", body).await;
            return None;
        }
        _ => return None,
    }
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(limit, accept).await {
        Ok(Ok(s)) => Some(io::Io::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(target: LOG, "TLS handshake from {peer} failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(target: LOG, "TLS handshake from {peer} timed out");
            None
        }
    }
}
