//! A short fuzz run on the stable toolchain (every `cargo test`): the entry points of
//! `protocol::fuzzing` and `broker::fuzz_tokens` (shared with the `cargo fuzz` targets in `fuzz/`) fed with random bytes and with
//! mutations of valid frames. `FUZZ_SMOKE_ITERATIONS` sets the number of inputs per target (default 20 000).

use demessaging_rs::protocol::fuzzing;

fn iterations() -> usize {
    std::env::var("FUZZ_SMOKE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

const SEEDS: &[&str] = &[
    r#"{"payload":"aGk=","properties":{"messageType":"request","response_topic":"t_AbCdEfGh","requestContext":"1"},"context":1}"#,
    r#"{"payload":"aGk=","properties":{"fragment":0,"num_fragments":2,"response_topic":"r","requestContext":"c"},"context":"c"}"#,
    r#"{"messageId":"CAAQAA==","payload":"eyJhIjoxfQ==","properties":{"messageType":"response","status":"success"},"publishTime":"2026-01-01T00:00:00.000Z","redeliveryCount":0}"#,
    r#"{"type":"negativeAcknowledge","messageId":"CAAQAA=="}"#,
    r#"{"type":"permit","permitMessages":10}"#,
    r#"{"result":"ok","messageId":"CAAQAA==","context":"5"}"#,
    "/ws/v2/consumer/persistent/public/default/topic/sub?subscriptionType=Shared&receiverQueueSize=10",
    "/ws/v2/producer/non-persistent/public/default/t",
    "hello_AbCdEfGh\nadmin\nbackend consume=hello produce=hello_*\nteam produce=public/default/* consume=a,b",
];

/// Random bytes, or a seed with a few bytes replaced, inserted or removed.
fn input(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.u8(..) < 64 {
        let n = rng.usize(..256);
        return (0..n).map(|_| rng.u8(..)).collect();
    }
    let mut v = SEEDS[rng.usize(..SEEDS.len())].as_bytes().to_vec();
    for _ in 0..rng.usize(1..6) {
        let at = rng.usize(..=v.len());
        match rng.u8(..3) {
            0 if at < v.len() => v[at] = b"{}[]\":,\\0aZ=+/\n\x00\xff"[rng.usize(..17)],
            1 => v.insert(at, rng.u8(..)),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    v
}

fn run(name: &str, target: fn(&[u8])) {
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ name.len() as u64);
    for i in 0..iterations() {
        let data = input(&mut rng);
        let caught = std::panic::catch_unwind(|| target(&data));
        assert!(
            caught.is_ok(),
            "{name}: input {i} panicked: {:?}",
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn fuzz_envelope() {
    run("envelope", fuzzing::envelope);
}

#[test]
fn fuzz_fragments() {
    run("fragments", fuzzing::fragments);
}

#[test]
fn fuzz_url() {
    run("url", fuzzing::url);
}

#[test]
fn fuzz_tokens() {
    run("tokens", demessaging_rs::broker::fuzz_tokens);
}
