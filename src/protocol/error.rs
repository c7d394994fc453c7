//! Errors raised while reading protocol frames.

/// Everything that can be wrong with a frame or payload on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame is not valid JSON or misses a required field.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The payload is not valid base64.
    #[error("payload is not valid base64: {0}")]
    InvalidBase64(String),
    /// The decoded payload is not valid UTF-8.
    #[error("payload is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    /// A property required by DASF is missing or empty.
    #[error("missing or empty property '{0}'")]
    MissingProperty(&'static str),
    /// A property has a value that cannot be interpreted.
    #[error("invalid value for property '{key}': {value:?}")]
    InvalidProperty {
        /// The property key.
        key: &'static str,
        /// The offending value.
        value: String,
    },
    /// A fragment does not fit the announced fragment count, or reassembly exceeded a limit.
    #[error("fragment error: {0}")]
    Fragment(String),
    /// A URL path does not name a known endpoint.
    #[error("invalid path: {0}")]
    InvalidPath(String),
}
