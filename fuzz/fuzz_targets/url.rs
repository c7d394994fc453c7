#![no_main]
//! See `demessaging_rs::protocol::fuzzing::url` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| demessaging_rs::protocol::fuzzing::url(data));
