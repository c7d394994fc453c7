//! demessaging-rs: the Rust core of a fast, wire-compatible successor of DASF's `demessaging`.
//!
//! Rooms depend one way: `py` → `backend`/`client`/`broker` → `transport` → `protocol`.

pub mod backend;
pub mod broker;
pub mod client;
pub mod protocol;
pub mod transport;

#[cfg(feature = "py")]
mod py;
