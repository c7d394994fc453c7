//! Every limit of the embedded broker, in one place.

use std::time::Duration;

/// Broker configuration. Defaults suit one machine running DASF backends and clients.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest accepted WebSocket frame/message, in bytes. Larger frames close the connection with
    /// code 1009 (message too big), as Pulsar's proxy does. Default 5 MiB.
    pub max_frame_size: usize,
    /// Maximum simultaneous connections; further upgrades get HTTP 503. Default 10 000.
    pub max_connections: usize,
    /// Time a client has to complete the WebSocket upgrade. Default 10 s.
    pub handshake_timeout: Duration,
    /// Interval of WebSocket pings to idle peers; a peer silent for three intervals is dropped.
    /// Default 30 s.
    pub ping_interval: Duration,
    /// Default `receiverQueueSize`: messages buffered per consumer before producers are held. Default 1000.
    pub receiver_queue_size: usize,
    /// Maximum messages kept per subscription of a persistent topic for its consumers. Default 100 000.
    /// A subscription with consumers that reaches it (or `max_backlog_bytes`) refuses further publishes
    /// with an error ack; one without consumers drops its oldest messages instead, so that a subscription
    /// nobody reads any more (say, of a backend that restarted under a new name) cannot stop a topic.
    pub max_backlog: usize,
    /// Maximum payload bytes kept per subscription of a persistent topic (as `max_backlog`). Default
    /// 512 MiB.
    pub max_backlog_bytes: usize,
    /// How long a producer is held when every consumer queue is full before it gets an error ack.
    /// Default 10 s.
    pub publish_hold: Duration,
    /// Accepted tokens and what each may do (see [`super::Tokens`]); `None` disables authentication.
    pub tokens: Option<super::Tokens>,
    /// TLS identity; `None` serves plain `ws://` (see [`super::tls_server_config`]).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl BrokerConfig {
    /// What a persistent subscription keeps at most.
    pub fn backlog_limit(&self) -> super::subscription::BacklogLimit {
        super::subscription::BacklogLimit {
            messages: self.max_backlog,
            bytes: self.max_backlog_bytes,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 5 << 20,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            receiver_queue_size: 1000,
            max_backlog: 100_000,
            max_backlog_bytes: 512 << 20,
            publish_hold: Duration::from_secs(10),
            tokens: None,
            tls: None,
        }
    }
}
