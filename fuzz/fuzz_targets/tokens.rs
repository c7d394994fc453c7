#![no_main]
//! See `demessaging_rs::broker::fuzz_tokens` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| demessaging_rs::broker::fuzz_tokens(data));
