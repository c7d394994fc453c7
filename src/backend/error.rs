//! Backend errors.

use crate::transport::TransportError;

/// Why a backend stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The configuration cannot work.
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// The consumer connection failed for good.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A worker thread could not be started.
    #[error("could not start worker thread: {0}")]
    Thread(String),
}
