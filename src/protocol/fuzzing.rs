//! Fuzz entry points: each takes arbitrary bytes, drives one decoder with them and checks its invariants
//! (no panic, round trips, limits). The `cargo fuzz` targets in `fuzz/` call them (libFuzzer, nightly
//! toolchain), and `tests/fuzz_smoke.rs` calls them with random and mutated inputs on the stable one, so
//! every CI run fuzzes a little.

use std::time::{Duration, Instant};

use super::dasf::{parse_fragment, RequestMeta};
use super::envelope::{
    check_payload, decode_payload, encode_payload, ConsumerCommand, Delivery, DeliveryOut, ProducerAck, PublishFrame,
};
use super::fragment::{Fed, Reassembler, ReassemblyLimits};
use super::url::{parse_endpoint, parse_query, BrokerAddress};

/// Frames a peer may send (publish, delivery, ack, consumer command) and the DASF properties in them.
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = PublishFrame::parse(text) {
        let payload = frame.payload.as_deref().unwrap_or("");
        if check_payload(payload).is_ok() {
            // what the broker accepts decodes, and encodes back to the same text
            let raw = decode_payload(payload).expect("checked payloads decode");
            assert_eq!(encode_payload(&raw), payload.trim_end_matches(['\n', '\r']));
        } else {
            assert!(decode_payload(payload).is_err(), "check and decode disagree");
        }
        let _ = RequestMeta::from_properties(&frame.properties, frame.context.as_deref());
        let _ = parse_fragment(&frame.properties);
    }
    if let Ok(d) = Delivery::parse(text) {
        // the broker's hand-written delivery JSON reads back as what was written
        let out = DeliveryOut {
            message_id: &d.message_id,
            payload: &d.payload,
            properties: &d.properties,
            publish_time: "2026-01-01T00:00:00.000Z",
            redelivery_count: 1,
            key: d.context.as_deref(),
        };
        let json = out.to_json();
        let back = Delivery::parse(&json).expect("our delivery JSON parses");
        assert_eq!(back.message_id, d.message_id);
        assert_eq!(back.payload, d.payload);
        assert_eq!(back.properties, d.properties);
        let _ = RequestMeta::from_properties(&d.properties, d.context.as_deref());
    }
    let _ = ConsumerCommand::parse(text);
    let _ = serde_json::from_str::<ProducerAck>(text);
}

/// Reassembly: the first bytes pick a payload and a piece width; valid pieces are fed in an order (with
/// duplicates) the rest of the bytes choose, between arbitrary fragments of other messages. The payload
/// must come out whole exactly once; the limits must hold throughout.
pub fn fragments(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let limits = ReassemblyLimits {
        max_bytes: 4096,
        max_partials: 4,
        max_fragments: 64,
        max_age: Duration::from_secs(60),
    };
    let mut r = Reassembler::new(limits);
    let now = Instant::now();
    let payload_len = usize::from(data[0]) % 200;
    let width = 1 + usize::from(data[1]) % 40;
    let payload: Vec<u8> = data.iter().cycle().skip(2).take(payload_len).copied().collect();
    let text = encode_payload(&payload);
    let pieces: Vec<String> = text
        .as_bytes()
        .chunks(width)
        .map(|c| String::from_utf8(c.to_vec()).expect("ascii"))
        .collect();
    let n = pieces.len().max(1) as u32;
    let pieces = if pieces.is_empty() { vec![String::new()] } else { pieces };
    let mut fed = vec![false; pieces.len()];
    let mut done = 0;
    let mut ops = data[2..].iter().copied();
    while let Some(op) = ops.next() {
        if op % 3 == 0 {
            // noise: an arbitrary fragment of another message
            let key = ["x", "y", "z"][usize::from(op / 3) % 3];
            let index = u32::from(ops.next().unwrap_or(0)) % 8;
            let count = u32::from(ops.next().unwrap_or(1)) % 8;
            let len = usize::from(ops.next().unwrap_or(0)) % 16;
            let piece: String = ops
                .by_ref()
                .take(len)
                .map(|b| char::from(b"AB+/=!\n"[usize::from(b) % 7]))
                .collect();
            let _ = r.feed(key, index, count, &piece, now);
        } else {
            let i = usize::from(op) % pieces.len();
            let out = r.feed("k", i as u32, n, &pieces[i], now);
            fed[i] = true;
            if let Ok(Fed::Complete(p)) = out {
                assert_eq!(p, payload, "reassembled payload differs");
                done += 1;
                fed.iter_mut().for_each(|f| *f = false);
            } else if let Err(e) = out {
                // only the limits may refuse a valid message
                assert!(matches!(e, super::ProtocolError::Fragment(_)), "{e}");
            }
        }
        assert!(r.buffered_bytes() <= limits.max_bytes);
        assert!(r.pending() <= limits.max_partials);
    }
    let _ = done;
}

/// Broker URL paths and query strings; valid topic names survive the round trip through a URL.
pub fn url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse_endpoint(&text);
    let _ = parse_query(&text);
    // a topic made of the bytes' safe characters: producer and consumer URLs parse back to it
    let topic: String = data
        .iter()
        .map(|b| char::from(b"abcXYZ019-_."[usize::from(*b) % 12]))
        .take(40)
        .collect();
    if topic.is_empty() {
        return;
    }
    let addr = BrokerAddress::Pulsar {
        tls: data[0] % 2 == 0,
        host: "h".into(),
        port: "1".into(),
        persistence: if data[0] % 3 == 0 {
            "persistent"
        } else {
            "non-persistent"
        }
        .into(),
        tenant: "public".into(),
        namespace: "default".into(),
    };
    let path = |url: String| {
        url.split_once("//h:1")
            .expect("host")
            .1
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let p = parse_endpoint(&path(addr.producer_url(&topic))).expect("our producer URL parses");
    assert!(
        p.topic.ends_with(&format!("/public/default/{topic}")),
        "{} vs {topic}",
        p.topic
    );
    let c = parse_endpoint(&path(addr.consumer_url(&topic, "sub", "subscriptionType=Shared"))).expect("consumer URL");
    assert_eq!(c.subscription.as_deref(), Some("sub"));
    assert_eq!(c.topic, p.topic);
}
