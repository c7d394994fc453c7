#![no_main]
//! The broker's token file parser and its topic patterns: no panic, and a parsed file's decisions are
//! stable (asking twice gives the same answer).

use demessaging_rs::broker::{Access, Tokens};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let topic = lines.next().unwrap_or("");
    let rest: Vec<&str> = lines.collect();
    if let Ok(tokens) = Tokens::parse(rest.iter().copied()) {
        for line in &rest {
            let token = line.split_whitespace().next();
            for access in [Access::Produce, Access::Consume] {
                let first = tokens.check(token, access, topic);
                assert_eq!(first, tokens.check(token, access, topic));
            }
        }
    }
});
