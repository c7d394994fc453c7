//! Pure protocol types and algorithms: Pulsar WebSocket API frames, DASF properties and message types,
//! base64 payloads, fragmentation and reassembly, and URL building/parsing.
//!
//! This room does no IO and depends on no other room. Everything here is unit-tested beside the code.
#![deny(missing_docs)]

pub mod dasf;
pub mod envelope;
pub mod error;
pub mod fragment;
#[doc(hidden)]
pub mod fuzzing;
pub mod url;

pub use dasf::{MessageType, RequestMeta, Status};
pub use envelope::{Delivery, Properties, PublishFrame};
pub use error::ProtocolError;
pub use fragment::{Reassembler, ReassemblyLimits};
