//! Transport errors.

use std::time::Duration;

use tokio_tungstenite::tungstenite;

/// Why a connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL cannot be parsed.
    #[error("invalid websocket URL {0:?}: {1}")]
    InvalidUrl(String, String),
    /// A header name or value is invalid.
    #[error("invalid header {0:?}: {1}")]
    InvalidHeader(String, String),
    /// TCP connect or handshake took too long.
    #[error("could not connect to {0} within {1:?}")]
    Timeout(String, Duration),
    /// Nobody listens at the address (or it is unreachable).
    #[error("could not connect to {0}: {1}")]
    Unreachable(String, String),
    /// The broker answered the upgrade with an HTTP error.
    #[error("broker refused {url}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(" ({})", .body) })]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Response body, if any.
        body: String,
    },
    /// Any other WebSocket failure.
    #[error("websocket error: {0}")]
    Ws(String),
    /// The peer violated the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// TLS could not be set up (a CA file that is missing or not PEM, no system roots).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The TLS handshake failed, e.g. the broker's certificate is not trusted.
    #[error("TLS handshake with {0} failed: {1}")]
    Handshake(String, String),
    /// The operation was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The peer closed the connection and said why (e.g. a frame above its limit).
    #[error("the message broker closed the connection: {0}")]
    ClosedByPeer(String),
}

impl TransportError {
    pub(crate) fn connect(url: &str, e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Self::Refused {
                    url: url.into(),
                    status: resp.status().as_u16(),
                    body,
                }
            }
            // tokio-rustls reports handshake failures as I/O errors around the rustls error
            tungstenite::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
                Self::handshake(url, io.to_string())
            }
            tungstenite::Error::Io(io) if url.starts_with("wss:") && io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Self::handshake(
                    url,
                    "the broker closed the connection during the TLS handshake (does this port serve TLS?)".into(),
                )
            }
            tungstenite::Error::Io(io) => Self::Unreachable(url.into(), io.to_string()),
            tungstenite::Error::Url(u) => Self::InvalidUrl(url.into(), u.to_string()),
            tungstenite::Error::Tls(t) => Self::handshake(url, t.to_string()),
            other => Self::Ws(other.to_string()),
        }
    }

    fn handshake(url: &str, text: String) -> Self {
        let hint = if text.contains("certificate") {
            " (the broker's certificate is not trusted: pass its CA with --ssl-ca-file / ssl_ca_file or SSL_CERT_FILE)"
        } else {
            ""
        };
        Self::Handshake(url.into(), format!("{text}{hint}"))
    }

    /// Whether retrying the same connect may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            // a certificate stays untrusted however often we ask; a torn handshake may not
            Self::Handshake(_, text) => !text.contains("certificate"),
            Self::Timeout(..) | Self::Unreachable(..) | Self::Ws(_) => true,
            // 5xx and 409 (exclusive subscription still held by a vanished consumer) may clear up
            Self::Refused { status, .. } => *status >= 500 || *status == 409,
            _ => false,
        }
    }
}
