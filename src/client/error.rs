//! Client errors.

use std::time::Duration;

use crate::transport::TransportError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No reply in time.
    #[error("no response from topic '{topic}' for '{label}' within {:.1} s", timeout.as_secs_f64())]
    Timeout {
        /// The backend topic.
        topic: String,
        /// What was called.
        label: String,
        /// The limit.
        timeout: Duration,
    },
    /// A socket to the broker was lost while waiting.
    #[error("connection to the message broker was lost")]
    ConnectionLost,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The broker refused the request.
    #[error("the message broker rejected the request: {0}")]
    Rejected(String),
    /// The reply could not be read.
    #[error("invalid reply: {0}")]
    BadReply(String),
}
