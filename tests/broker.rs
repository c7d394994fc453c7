//! Broker semantics, driven by plain websocket clients against the embedded broker on 127.0.0.1:0.

use std::collections::HashSet;
use std::time::Duration;

use demessaging_rs::broker::{Broker, BrokerConfig, BrokerHandle, Tokens};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const T: Duration = Duration::from_secs(5);

async fn start(cfg: BrokerConfig) -> BrokerHandle {
    Broker::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
        .spawn()
        .unwrap()
}

fn url(b: &BrokerHandle, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", b.addr.port())
}

async fn try_ws(b: &BrokerHandle, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = url(b, path).into_client_request().unwrap();
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade in time")
        .map(|(ws, _)| ws)
}

async fn ws(b: &BrokerHandle, path: &str) -> Ws {
    try_ws(b, path, &[])
        .await
        .unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

fn http_status(e: WsError) -> u16 {
    match e {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn send_text(ws: &mut Ws, t: String) {
    ws.send(Message::text(t)).await.unwrap();
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next JSON text frame, or `None` if nothing arrives within `wait`.
async fn recv_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("read error {e}"),
        }
    }
}

async fn recv(ws: &mut Ws) -> Value {
    recv_within(ws, T).await.expect("a frame")
}

async fn publish(p: &mut Ws, payload: &str, props: Value, ctx: Value) -> Value {
    send(p, json!({"payload": payload, "properties": props, "context": ctx})).await;
    recv(p).await
}

async fn ack(c: &mut Ws, msg: &Value) {
    send(c, json!({"messageId": msg["messageId"]})).await;
}

const NP: &str = "/ws/v2/producer/non-persistent/public/default";
const NC: &str = "/ws/v2/consumer/non-persistent/public/default";
const PP: &str = "/ws/v2/producer/persistent/public/default";
const PC: &str = "/ws/v2/consumer/persistent/public/default";

#[tokio::test]
async fn short_and_long_paths_name_the_same_topic() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, "/ws/mixed/sub").await;
    let mut p = ws(&b, &format!("{NP}/mixed")).await;
    assert_eq!(publish(&mut p, "aGk=", json!({}), json!("1")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "aGk=");
    let mut c2 = ws(&b, &format!("{NC}/mixed2/s")).await;
    let mut p2 = ws(&b, "/ws/mixed2").await;
    assert_eq!(publish(&mut p2, "aGk=", json!({}), json!("1")).await["result"], "ok");
    assert_eq!(recv(&mut c2).await["payload"], "aGk=");
    b.shutdown().await;
}

#[tokio::test]
async fn ack_and_delivery_frames_look_like_pulsar() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/fields/s")).await;
    let mut p = ws(&b, &format!("{NP}/fields")).await;
    send(
        &mut p,
        json!({"payload": "aGk=", "properties": {"n": 3, "b": true, "s": "x"}, "context": 7, "key": "k1"}),
    )
    .await;
    let a = recv(&mut p).await;
    assert_eq!(a["result"], "ok");
    assert!(a["messageId"].is_string());
    assert_eq!(a["context"], "7", "context echoed as a string");
    let m = recv(&mut c).await;
    assert_eq!(m["messageId"], a["messageId"]);
    assert_eq!(m["payload"], "aGk=");
    assert_eq!(
        m["properties"],
        json!({"n": "3", "b": "true", "s": "x"}),
        "property values as strings"
    );
    assert!(m["publishTime"].as_str().unwrap().contains('T'));
    assert_eq!(m["redeliveryCount"], 0);
    assert_eq!(m["key"], "k1");
    b.shutdown().await;
}

#[tokio::test]
async fn one_copy_per_subscription_and_exclusive_refuses_a_second_consumer() {
    let b = start(BrokerConfig::default()).await;
    let mut a = ws(&b, &format!("{NC}/copies/a")).await;
    let mut bb = ws(&b, &format!("{NC}/copies/b")).await;
    let second = try_ws(&b, &format!("{NC}/copies/a"), &[]).await.unwrap_err();
    assert_eq!(http_status(second), 409);
    let mut p = ws(&b, &format!("{NP}/copies")).await;
    publish(&mut p, "MQ==", json!({}), json!("1")).await;
    assert_eq!(recv(&mut a).await["payload"], "MQ==");
    assert_eq!(recv(&mut bb).await["payload"], "MQ==");
    assert!(
        recv_within(&mut a, Duration::from_millis(200)).await.is_none(),
        "exactly one copy"
    );
    b.shutdown().await;
}

/// A broker with two consumers of Shared subscription `s` on non-persistent `topic` (joined in this order)
/// and a producer.
async fn shared_pair(topic: &str) -> (BrokerHandle, Ws, Ws, Ws) {
    let b = start(BrokerConfig::default()).await;
    let c1 = ws(&b, &format!("{NC}/{topic}/s?subscriptionType=Shared")).await;
    let c2 = ws(&b, &format!("{NC}/{topic}/s?subscriptionType=Shared")).await;
    let p = ws(&b, &format!("{NP}/{topic}")).await;
    (b, c1, c2, p)
}

#[tokio::test]
async fn shared_round_robin() {
    let (b, mut c1, mut c2, mut p) = shared_pair("rr").await;
    for i in 0..10 {
        publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
    }
    let mut seen = HashSet::new();
    for c in [&mut c1, &mut c2] {
        for _ in 0..5 {
            let m = recv(c).await;
            assert!(seen.insert(m["properties"]["i"].as_str().unwrap().to_owned()));
            ack(c, &m).await;
        }
        assert!(
            recv_within(c, Duration::from_millis(100)).await.is_none(),
            "an even split"
        );
    }
    assert_eq!(seen.len(), 10);
    b.shutdown().await;
}

#[tokio::test]
async fn shared_keeps_the_messages_of_one_key_with_one_consumer() {
    // the fragments of a DASF request share a key: only the replica that has them all can reassemble it
    let (b, mut c1, mut c2, mut p) = shared_pair("keys").await;
    for i in 0..12 {
        send(
            &mut p,
            json!({"payload": "eA==", "properties": {"i": i}, "context": i, "key": format!("k{}", i % 3)}),
        )
        .await;
        assert_eq!(recv(&mut p).await["result"], "ok");
    }
    let mut owner = std::collections::HashMap::new();
    let mut got = [0, 0];
    for (n, c) in [&mut c1, &mut c2].into_iter().enumerate() {
        while let Some(m) = recv_within(c, Duration::from_millis(200)).await {
            let key = m["key"].as_str().unwrap().to_owned();
            assert_eq!(
                *owner.entry(key.clone()).or_insert(n),
                n,
                "all of {key} with one consumer"
            );
            got[n] += 1;
            ack(c, &m).await;
        }
    }
    assert_eq!(got[0] + got[1], 12);
    assert!(
        got[0] > 0 && got[1] > 0,
        "keys are still spread over the consumers: {got:?}"
    );
    b.shutdown().await;
}

/// Until the stats endpoint counts `n` unacked messages on subscription `sub` of non-persistent `topic`.
async fn wait_unacked(b: &BrokerHandle, topic: &str, sub: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, body) = http_get(b, "/admin/v2/stats HTTP/1.1\r\nHost: x").await;
        let body: Value = serde_json::from_str(&body).unwrap();
        let topic = &body["topics"][format!("non-persistent://public/default/{topic}")];
        if topic["subscriptions"][sub]["unackedMessages"] == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not {n} unacked: {topic}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn shared_passes_over_a_consumer_that_holds_an_unacked_message() {
    // A replica that has not acked a request (a DASF backend acks when a worker takes it) is busy; while
    // another consumer holds nothing, everything goes there. Round-robin would hand the busy one every
    // other message.
    let (b, mut busy, mut free, mut p) = shared_pair("lb").await;
    publish(&mut p, "eA==", json!({"i": "first"}), json!("first")).await;
    let first = recv(&mut busy).await;
    for i in 0..6 {
        publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
        let m = recv(&mut free).await;
        assert_eq!(m["properties"]["i"], i.to_string());
        ack(&mut free, &m).await;
        // until the broker has the ack: only the busy one's message is out
        wait_unacked(&b, "lb", "s", 1).await;
    }
    assert!(recv_within(&mut busy, Duration::from_millis(100)).await.is_none());
    // once it has acked, it is as free as the other and gets its turn again
    ack(&mut busy, &first).await;
    wait_unacked(&b, "lb", "s", 0).await;
    for i in 0..2 {
        publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
    }
    let (a, b2) = (recv(&mut busy).await, recv(&mut free).await);
    assert_ne!(a["properties"]["i"], b2["properties"]["i"]);
    b.shutdown().await;
}

#[tokio::test]
async fn failover_uses_one_consumer_and_switches_when_it_leaves() {
    let b = start(BrokerConfig::default()).await;
    let mut c1 = ws(&b, &format!("{PC}/fo/s?subscriptionType=Failover")).await;
    let mut c2 = ws(&b, &format!("{PC}/fo/s?subscriptionType=Failover")).await;
    let mut p = ws(&b, &format!("{PP}/fo")).await;
    for i in 0..3 {
        publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
    }
    for _ in 0..3 {
        let m = recv(&mut c1).await;
        ack(&mut c1, &m).await;
    }
    assert!(recv_within(&mut c2, Duration::from_millis(100)).await.is_none());
    c1.close(None).await.unwrap();
    drop(c1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&mut p, "eQ==", json!({}), json!("x")).await;
    assert_eq!(recv(&mut c2).await["payload"], "eQ==");
    b.shutdown().await;
}

#[tokio::test]
async fn negative_ack_and_ack_timeout_redeliver() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(
        &b,
        &format!("{NC}/redeliver/s?negativeAckRedeliveryDelay=50&ackTimeoutMillis=300"),
    )
    .await;
    let mut p = ws(&b, &format!("{NP}/redeliver")).await;
    publish(&mut p, "bmFjaw==", json!({}), json!("1")).await;
    let m = recv(&mut c).await;
    send(
        &mut c,
        json!({"type": "negativeAcknowledge", "messageId": m["messageId"]}),
    )
    .await;
    let again = recv(&mut c).await;
    assert_eq!(again["messageId"], m["messageId"]);
    assert_eq!(again["redeliveryCount"], 1);
    // not acked within ackTimeoutMillis: delivered once more
    let third = recv(&mut c).await;
    assert_eq!(third["messageId"], m["messageId"]);
    assert_eq!(third["redeliveryCount"], 2);
    ack(&mut c, &third).await;
    assert!(
        recv_within(&mut c, Duration::from_millis(600)).await.is_none(),
        "acked: no more redelivery"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_consumer_that_never_reads() {
    let b = start(BrokerConfig::default()).await;
    // subscribed, then never read: deliveries fill its socket until the broker's writes wait
    let stuck = ws(&b, &format!("{NC}/stuck/s")).await;
    let mut p = ws(&b, &format!("{NP}/stuck")).await;
    let payload = "QUFB".repeat(16 * 1024); // 48 KiB a message
    for i in 0..600 {
        let frame = json!({"payload": payload, "properties": {}, "context": i}).to_string();
        p.send(Message::text(frame)).await.unwrap();
    }
    // every publish is acked: the broker took them all (600 × 64 KiB of frames is more than a socket holds)
    for _ in 0..600 {
        assert_eq!(recv(&mut p).await["result"], "ok");
    }
    tokio::time::timeout(Duration::from_secs(20), b.shutdown())
        .await
        .expect("the broker stops although a consumer does not read");
    drop(stuck);
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_dropped_and_its_messages_go_to_the_others() {
    let cfg = BrokerConfig {
        ping_interval: Duration::from_millis(200), // a write may wait 3 intervals for the peer to read
        ..BrokerConfig::default()
    };
    let b = start(cfg).await;
    let path = format!("{PC}/frozen/s?subscriptionType=Shared");
    let stuck = ws(&b, &path).await; // a frozen replica: connected, never reads again
    let live = ws(&b, &path).await;
    let total = 600;
    let reader = tokio::spawn(async move {
        let mut live = live;
        let mut seen = HashSet::new();
        while seen.len() < total {
            let Some(m) = recv_within(&mut live, Duration::from_secs(15)).await else {
                break;
            };
            seen.insert(m["properties"]["i"].as_str().unwrap().to_owned());
            ack(&mut live, &m).await;
        }
        seen.len()
    });
    let mut p = ws(&b, &format!("{PP}/frozen")).await;
    let payload = "QUFB".repeat(16 * 1024); // 48 KiB: half of them fill the frozen one's socket
    for i in 0..total {
        let frame = json!({"payload": payload, "properties": {"i": i}, "context": i}).to_string();
        p.send(Message::text(frame)).await.unwrap();
    }
    for _ in 0..total {
        assert_eq!(recv(&mut p).await["result"], "ok");
    }
    let received = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, total, "every message reached the consumer that reads");
    drop(stuck);
    b.shutdown().await;
}

#[tokio::test]
async fn non_persistent_drops_while_nobody_subscribes() {
    let b = start(BrokerConfig::default()).await;
    let mut p = ws(&b, &format!("{NP}/drop")).await;
    assert_eq!(publish(&mut p, "ZWFybHk=", json!({}), json!("1")).await["result"], "ok");
    let mut c = ws(&b, &format!("{NC}/drop/s")).await;
    publish(&mut p, "bGF0ZQ==", json!({}), json!("2")).await;
    assert_eq!(
        recv(&mut c).await["payload"],
        "bGF0ZQ==",
        "the early message was dropped"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn persistent_keeps_unacked_messages_for_the_next_consumer() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{PC}/keep/s")).await;
    let mut p = ws(&b, &format!("{PP}/keep")).await;
    publish(&mut p, "MA==", json!({}), json!("0")).await;
    let first = recv(&mut c).await; // delivered, never acked
    c.close(None).await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..4 {
        assert_eq!(publish(&mut p, "MQ==", json!({"i": i}), json!(i)).await["result"], "ok");
    }
    let mut c2 = ws(&b, &format!("{PC}/keep/s")).await;
    let m = recv(&mut c2).await;
    assert_eq!(m["messageId"], first["messageId"], "the unacked message comes first");
    assert_eq!(m["redeliveryCount"], 1);
    for i in 1..4 {
        let m = recv(&mut c2).await;
        assert_eq!(m["properties"]["i"], i.to_string(), "then the rest in publish order");
        ack(&mut c2, &m).await;
    }
    b.shutdown().await;
}

async fn subscription_stats(b: &BrokerHandle, topic: &str, sub: &str) -> Value {
    let (_, body) = http_get(b, "/admin/v2/stats HTTP/1.1\r\nHost: x").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    body["topics"][topic]["subscriptions"][sub].clone()
}

#[tokio::test]
async fn an_abandoned_persistent_subscription_drops_its_oldest_and_never_stops_the_topic() {
    let cfg = BrokerConfig {
        max_backlog: 5,
        max_backlog_bytes: 1 << 20,
        publish_hold: Duration::from_millis(300),
        ..BrokerConfig::default()
    };
    let b = start(cfg).await;
    // a subscription whose consumer went away for good (a backend restarted under a new name) ...
    let old = ws(&b, &format!("{PC}/abandon/old")).await;
    drop(old);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut live = ws(&b, &format!("{PC}/abandon/live")).await;
    let mut p = ws(&b, &format!("{PP}/abandon")).await;
    // ... does not stop the topic at its limit: every publish is accepted and the live one gets it all
    for i in 0..12 {
        let a = publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
        assert_eq!(a["result"], "ok", "publish {i}: {a}");
        let m = recv(&mut live).await;
        assert_eq!(m["properties"]["i"], i.to_string());
        ack(&mut live, &m).await;
    }
    let topic = "persistent://public/default/abandon";
    let st = subscription_stats(&b, topic, "old").await;
    assert_eq!(
        (st["msgBacklog"].as_u64(), st["msgEvicted"].as_u64()),
        (Some(5), Some(7)),
        "{st}"
    );
    assert_eq!(subscription_stats(&b, topic, "live").await["msgEvicted"], 0);

    // whoever comes back to it gets the newest five, in order; consuming slowly (one at a time, no acks),
    // it makes the subscription refuse publishes at the limit instead of dropping what it holds
    let mut back = ws(&b, &format!("{PC}/abandon/old?receiverQueueSize=1")).await;
    assert_eq!(recv(&mut back).await["properties"]["i"], "7");
    let mut refused = None;
    for i in 12..20 {
        let a = publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
        if a["result"] != "ok" {
            refused = Some(a);
            break;
        }
        let m = recv(&mut live).await;
        ack(&mut live, &m).await;
    }
    let a = refused.expect("a subscription with a consumer refuses at its limit");
    assert_eq!(a["result"], "send-error:8");
    assert!(
        a["errorMsg"]
            .as_str()
            .unwrap()
            .contains("backlog of subscription 'old' is full"),
        "{a}"
    );
    assert_eq!(
        subscription_stats(&b, topic, "old").await["msgEvicted"],
        7,
        "nothing more was dropped"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn an_abandoned_persistent_subscription_keeps_at_most_its_bytes() {
    // payloads of 8 bytes, room for 3 of them
    let cfg = BrokerConfig {
        max_backlog_bytes: 24,
        ..BrokerConfig::default()
    };
    let b = start(cfg).await;
    drop(ws(&b, &format!("{PC}/abytes/old")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = ws(&b, &format!("{PP}/abytes")).await;
    for i in 0..10 {
        assert_eq!(
            publish(&mut p, "eHh4eA==", json!({"i": i}), json!(i)).await["result"],
            "ok"
        );
    }
    let st = subscription_stats(&b, "persistent://public/default/abytes", "old").await;
    assert_eq!(
        (st["msgBacklog"].as_u64(), st["msgEvicted"].as_u64()),
        (Some(3), Some(7)),
        "{st}"
    );
    let mut back = ws(&b, &format!("{PC}/abytes/old")).await;
    for i in 7..10 {
        let m = recv(&mut back).await;
        assert_eq!(m["properties"]["i"], i.to_string());
        ack(&mut back, &m).await;
    }
    b.shutdown().await;
}

#[tokio::test]
async fn a_full_subscription_holds_the_producer_then_refuses_and_loses_nothing() {
    let cfg = BrokerConfig {
        publish_hold: Duration::from_millis(300),
        ..BrokerConfig::default()
    };
    let b = start(cfg).await;
    let mut c = ws(&b, &format!("{NC}/full/s?receiverQueueSize=2")).await;
    let mut p = ws(&b, &format!("{NP}/full")).await;
    let mut ok = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let t0 = std::time::Instant::now();
        let a = publish(&mut p, "eA==", json!({"i": i}), json!(i)).await;
        if a["result"] == "ok" {
            ok.push(i);
        } else {
            assert!(t0.elapsed() >= Duration::from_millis(250), "held before refusing");
            assert_eq!(a["result"], "send-error:8");
            assert!(a["errorMsg"].as_str().unwrap().contains("full"), "{a}");
            assert_eq!(a["context"], i.to_string());
            refused += 1;
        }
    }
    assert!(refused > 0, "a consumer that never acks fills up");
    // every message acked ok arrives once the consumer acks
    for i in &ok {
        let m = recv(&mut c).await;
        assert_eq!(m["properties"]["i"], i.to_string());
        ack(&mut c, &m).await;
    }
    assert!(recv_within(&mut c, Duration::from_millis(200)).await.is_none());
    b.shutdown().await;
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_others_are_unaffected() {
    let b = start(BrokerConfig {
        max_frame_size: 64 * 1024,
        ..BrokerConfig::default()
    })
    .await;
    let mut c = ws(&b, &format!("{NC}/size/s")).await;
    let mut other = ws(&b, &format!("{NP}/size")).await;
    let mut big = ws(&b, &format!("{NP}/size")).await;
    let _ = big
        .send(Message::text(format!("{{\"payload\":\"{}\"}}", "A".repeat(100 * 1024))))
        .await;
    let close = loop {
        match tokio::time::timeout(T, big.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.expect("close frame"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("too big"));
    assert_eq!(publish(&mut other, "b2s=", json!({}), json!("1")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "b2s=");
    b.shutdown().await;
}

#[tokio::test]
async fn connection_limit_answers_503() {
    let b = start(BrokerConfig {
        max_connections: 2,
        ..BrokerConfig::default()
    })
    .await;
    let _a = ws(&b, &format!("{NP}/lim")).await;
    let _b = ws(&b, &format!("{NP}/lim")).await;
    assert_eq!(
        http_status(try_ws(&b, &format!("{NP}/lim"), &[]).await.unwrap_err()),
        503
    );
    b.shutdown().await;
}

#[tokio::test]
async fn token_auth_accepts_token_bearer_and_query() {
    let tokens = Tokens::parse(["s3cret"]).unwrap();
    let b = start(BrokerConfig {
        tokens: Some(tokens),
        ..BrokerConfig::default()
    })
    .await;
    let path = format!("{NP}/auth");
    assert_eq!(http_status(try_ws(&b, &path, &[]).await.unwrap_err()), 401);
    assert_eq!(
        http_status(
            try_ws(&b, &path, &[("authorization", "Token wrong")])
                .await
                .unwrap_err()
        ),
        401
    );
    try_ws(&b, &path, &[("authorization", "Token s3cret")]).await.unwrap();
    try_ws(&b, &path, &[("authorization", "Bearer s3cret")]).await.unwrap();
    try_ws(&b, &format!("{path}?token=s3cret"), &[]).await.unwrap();
    b.shutdown().await;
}

/// Raw `GET` on the broker's port; returns the status line and the body.
async fn http_get(b: &BrokerHandle, path_and_headers: &str) -> (String, String) {
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.write_all(format!("GET {path_and_headers}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn refusal(e: WsError) -> (u16, String) {
    match e {
        WsError::Http(resp) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn tokens_limited_to_topics_and_roles_and_stats_need_a_token() {
    let tokens = Tokens::parse([
        "admin",
        "backend consume=hello produce=hello_*",
        "client produce=hello consume=hello_*",
    ])
    .unwrap();
    let b = start(BrokerConfig {
        tokens: Some(tokens),
        ..BrokerConfig::default()
    })
    .await;
    let auth = |t: &'static str| [("authorization", t)];
    // each token where it belongs (this consumer stays, so its topic is in the stats below)
    let _backend = try_ws(
        &b,
        &format!("{NC}/hello/s?subscriptionType=Shared"),
        &auth("Token backend"),
    )
    .await
    .unwrap();
    try_ws(&b, &format!("{NP}/hello_AbCdEfGh"), &auth("Token backend"))
        .await
        .unwrap();
    try_ws(&b, &format!("{NP}/hello"), &auth("Token client")).await.unwrap();
    try_ws(&b, &format!("{NC}/hello_AbCdEfGh/sub"), &auth("Token client"))
        .await
        .unwrap();
    try_ws(&b, &format!("{NC}/anything/s2"), &auth("Token admin"))
        .await
        .unwrap();
    // ... and nowhere else: 403 with the reason
    let (status, body) = refusal(
        try_ws(&b, &format!("{NC}/hello/s3"), &auth("Token client"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(
        body.contains("may not consume from topic non-persistent://public/default/hello"),
        "{body}"
    );
    let (status, body) = refusal(
        try_ws(&b, &format!("{NP}/other"), &auth("Token backend"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(body.contains("may not produce to"), "{body}");
    assert_eq!(
        http_status(try_ws(&b, &format!("{NP}/hello"), &[]).await.unwrap_err()),
        401
    );
    // stats: 401 without a valid token, 200 with one (header or query)
    let (status, body) = http_get(&b, "/admin/v2/stats HTTP/1.1\r\nHost: x").await;
    assert!(status.contains("401"), "{status}");
    assert!(body.contains("authentication required"), "{body}");
    let (status, _) = http_get(&b, "/admin/v2/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Token wrong").await;
    assert!(status.contains("401"), "{status}");
    let (status, body) = http_get(&b, "/admin/v2/stats HTTP/1.1\r\nHost: x\r\nauthorization: Token client").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("non-persistent://public/default/hello"), "{body}");
    let (status, _) = http_get(&b, "/admin/v2/stats?token=admin HTTP/1.1\r\nHost: x").await;
    assert!(status.contains("200"), "{status}");
    b.shutdown().await;
}

#[tokio::test]
async fn unsupported_features_answer_501() {
    let b = start(BrokerConfig::default()).await;
    for path in [
        "/ws/v2/reader/non-persistent/public/default/t".to_owned(),
        format!("{NC}/t/s?subscriptionType=Key_Shared"),
        format!("{NC}/t/s?pullMode=true"),
    ] {
        assert_eq!(http_status(try_ws(&b, &path, &[]).await.unwrap_err()), 501, "{path}");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn consumer_commands_are_answered_as_pulsar_answers_them() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/cmds/s")).await;
    let mut p = ws(&b, &format!("{NP}/cmds")).await;
    publish(&mut p, "MQ==", json!({"i": 1}), json!(1)).await;
    let m = recv(&mut c).await;
    // well-formed commands get no frame back (a client written for Pulsar would take it for a message):
    // an ack twice, a negative ack of an unknown id, a permit outside pull mode ...
    ack(&mut c, &m).await;
    ack(&mut c, &m).await;
    send(&mut c, json!({"type": "negativeAcknowledge", "messageId": "bm8="})).await;
    send(&mut c, json!({"type": "permit", "permitMessages": 5})).await;
    assert_eq!(recv_within(&mut c, Duration::from_millis(300)).await, None);
    // ... but for isEndOfTopic, which gets Pulsar's answer
    send(&mut c, json!({"type": "isEndOfTopic"})).await;
    assert_eq!(recv(&mut c).await, json!({"endOfTopic": false}));
    // a frame that is no command gets an error answer
    send_text(&mut c, "not json".into()).await;
    let e = recv(&mut c).await;
    assert_eq!(
        (&e["result"], &e["command"]),
        (&json!("error"), &json!("invalid")),
        "{e}"
    );
    // and messages still flow
    publish(&mut p, "Mg==", json!({"i": 2}), json!(2)).await;
    assert_eq!(recv(&mut c).await["properties"]["i"], "2");
    b.shutdown().await;
}

#[tokio::test]
async fn bad_paths_and_query_values_are_refused_at_the_upgrade() {
    let b = start(BrokerConfig::default()).await;
    for path in ["/nope", "/ws/v2/producer/sometimes/public/default/t", "/ws/a/b/c"] {
        assert_eq!(http_status(try_ws(&b, path, &[]).await.unwrap_err()), 404, "{path}");
    }
    for q in [
        "subscriptionType=Everyone",
        "receiverQueueSize=-1",
        "ackTimeoutMillis=soon",
    ] {
        let path = format!("{NC}/t/s?{q}");
        assert_eq!(http_status(try_ws(&b, &path, &[]).await.unwrap_err()), 400, "{path}");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_get_error_acks_and_the_broker_keeps_serving() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/bad/s")).await;
    let mut p = ws(&b, &format!("{NP}/bad")).await;
    p.send(Message::text("this is not json")).await.unwrap();
    let a = recv(&mut p).await;
    assert_eq!(a["result"], "send-error:3", "Pulsar's code for bad JSON");
    assert!(a["errorMsg"].as_str().unwrap().contains("JSON"), "{a}");
    // no payload: an empty message (as dasf-broker-django; the reference client's api_info requests)
    send(&mut p, json!({"properties": {"k": "v"}, "context": "nop"})).await;
    let a = recv(&mut p).await;
    assert_eq!(a["result"], "ok");
    assert_eq!(a["context"], "nop");
    let m = recv(&mut c).await;
    assert_eq!(m["payload"], "");
    assert_eq!(m["properties"]["k"], "v");
    send(&mut c, json!({"messageId": m["messageId"]})).await;
    send(&mut p, json!({"payload": "*not base64*", "context": "b64"})).await;
    let a = recv(&mut p).await;
    assert_eq!(a["result"], "send-error:7");
    assert!(a["errorMsg"].as_str().unwrap().contains("Base64"));
    // consumer side: unknown command type, garbage
    send(&mut c, json!({"type": "rewind", "messageId": "x"})).await;
    assert!(recv(&mut c).await["errorMsg"]
        .as_str()
        .unwrap()
        .contains("unknown command type"));
    send(&mut c, json!({"messageId": "no-such-id"})).await; // ignored, as Pulsar does
    c.send(Message::text("{{{")).await.unwrap();
    assert_eq!(recv(&mut c).await["result"], "error");
    // still serving on both sockets
    assert_eq!(publish(&mut p, "b2s=", json!({}), json!("1")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "b2s=");
    b.shutdown().await;
}

#[tokio::test]
async fn a_producer_asking_for_errors_only_gets_refusals_and_every_message_is_delivered() {
    let cfg = BrokerConfig {
        publish_hold: Duration::from_millis(200),
        ..BrokerConfig::default()
    };
    let b = start(cfg).await;
    let mut c = ws(&b, &format!("{NC}/quiet/s?receiverQueueSize=3")).await;
    let mut p = try_ws(&b, &format!("{NP}/quiet"), &[("x-dasf-receipts", "errors")])
        .await
        .unwrap();
    // a malformed publish gets its receipt; valid ones only when refused (the subscription fills up)
    send_text(&mut p, "this is not json".into()).await;
    let bad = recv(&mut p).await;
    assert_eq!(bad["result"], "send-error:3", "{bad}");
    for i in 0..9 {
        send(&mut p, json!({"payload": "eA==", "properties": {"i": i}, "context": i})).await;
    }
    let mut refused = HashSet::new();
    // (the broker answers a batch of publishes together, after the held ones)
    while let Some(r) = recv_within(&mut p, Duration::from_millis(1500)).await {
        assert_eq!(r["result"], "send-error:8", "only refusals are answered: {r}");
        refused.insert(r["context"].as_str().unwrap().parse::<i32>().unwrap());
    }
    assert!(!refused.is_empty(), "a consumer that does not ack fills up");
    for i in (0..9).filter(|i| !refused.contains(i)) {
        let m = recv(&mut c).await;
        assert_eq!(m["properties"]["i"], i.to_string(), "every unrefused message, in order");
        ack(&mut c, &m).await;
    }
    assert!(
        recv_within(&mut c, Duration::from_millis(200)).await.is_none(),
        "refused ones are not delivered"
    );
    // `all` is Pulsar's behaviour (the default); anything else is refused at the upgrade
    let mut all = try_ws(&b, &format!("{NP}/quiet"), &[("x-dasf-receipts", "all")])
        .await
        .unwrap();
    assert_eq!(publish(&mut all, "eA==", json!({}), json!("a")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "eA==");
    let e = try_ws(&b, &format!("{NP}/quiet"), &[("x-dasf-receipts", "some")])
        .await
        .unwrap_err();
    let (status, body) = refusal(e);
    assert_eq!(status, 400);
    assert!(body.contains("x-dasf-receipts"), "{body}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_client_vanishing_mid_frame_does_not_disturb_others() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/vanish/s")).await;
    // a raw client: upgrade by hand, then half a frame, then gone
    let mut raw = TcpStream::connect(b.addr).await.unwrap();
    let req = format!(
        "GET {NP}/vanish HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    // masked text frame header announcing 1000 bytes, followed by only 10
    raw.write_all(&[0x81, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]).await.unwrap();
    raw.write_all(&[0u8; 10]).await.unwrap();
    drop(raw);
    let mut p = ws(&b, &format!("{NP}/vanish")).await;
    assert_eq!(publish(&mut p, "b2s=", json!({}), json!("1")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "b2s=");
    b.shutdown().await;
}

#[tokio::test]
async fn stats_endpoint_reports_topics_and_subscriptions() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/stats/s?subscriptionType=Shared")).await;
    let mut p = ws(&b, &format!("{NP}/stats")).await;
    for i in 0..3 {
        publish(&mut p, "eA==", json!({}), json!(i)).await;
    }
    let m = recv(&mut c).await;
    ack(&mut c, &m).await;
    recv(&mut c).await;
    recv(&mut c).await; // two stay unacked
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = http_get(&b, "/admin/v2/stats HTTP/1.1\r\nHost: x").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let t = &body["topics"]["non-persistent://public/default/stats"];
    assert_eq!(t["msgInCounter"], 3);
    assert_eq!(t["msgOutCounter"], 3);
    assert!(t["msgRateIn"].is_number() && t["msgRateOut"].is_number());
    let sub = &t["subscriptions"]["s"];
    assert_eq!(sub["type"], "Shared");
    assert_eq!(sub["consumers"], 1);
    assert_eq!(sub["unackedMessages"], 2);
    assert_eq!(sub["msgBacklog"], 0);
    assert_eq!(sub["msgEvicted"], 0);
    b.shutdown().await;
}

#[tokio::test]
async fn topics_nobody_uses_any_more_are_forgotten() {
    let b = start(BrokerConfig::default()).await;
    for i in 0..20 {
        let mut c = ws(&b, &format!("{NC}/gone{i}/s")).await;
        let mut p = ws(&b, &format!("{NP}/gone{i}")).await;
        publish(&mut p, "eA==", json!({}), json!(i)).await;
        let m = recv(&mut c).await;
        ack(&mut c, &m).await;
        c.close(None).await.unwrap();
        p.close(None).await.unwrap();
    }
    // a persistent topic keeps its subscription (and so itself) for the next consumer
    drop(ws(&b, &format!("{PC}/kept/s")).await);
    let topics = || async {
        let (_, body) = http_get(&b, "/admin/v2/stats HTTP/1.1\r\nHost: x").await;
        let body: Value = serde_json::from_str(&body).unwrap();
        body["topics"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<String>>()
    };
    let deadline = tokio::time::Instant::now() + T;
    while topics().await != ["persistent://public/default/kept"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listed: {:?}",
            topics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and a topic used again is there again, working
    let mut c = ws(&b, &format!("{NC}/gone3/s")).await;
    let mut p = ws(&b, &format!("{NP}/gone3")).await;
    assert_eq!(publish(&mut p, "eQ==", json!({}), json!("again")).await["result"], "ok");
    assert_eq!(recv(&mut c).await["payload"], "eQ==");
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/bye/s")).await;
    let stop = tokio::spawn(b.shutdown());
    let close = loop {
        match tokio::time::timeout(T, c.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.expect("close frame"),
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001);
    drop(c);
    tokio::time::timeout(T, stop).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_are_all_acked_and_delivered_in_order() {
    // more frames in flight than one ack batch holds: none may be skipped between batches
    let b = start(BrokerConfig::default()).await;
    let mut c = ws(&b, &format!("{NC}/pipe/s")).await;
    let mut p = ws(&b, &format!("{NP}/pipe")).await;
    let n = 3000;
    for i in 0..n {
        p.feed(Message::text(
            json!({"payload": "eA==", "properties": {"i": i}, "context": i}).to_string(),
        ))
        .await
        .unwrap();
    }
    p.flush().await.unwrap();
    // the consumer acks as it goes (its window is 1000: without acks the producer would be held)
    let consumer = tokio::spawn(async move {
        for i in 0..n {
            let m = recv(&mut c).await;
            assert_eq!(m["properties"]["i"], i.to_string());
            ack(&mut c, &m).await;
        }
    });
    for i in 0..n {
        let a = recv(&mut p).await;
        assert_eq!(a["result"], "ok");
        assert_eq!(a["context"], i.to_string(), "acks in publish order");
    }
    consumer.await.unwrap();
    b.shutdown().await;
}

/// A valid publish frame with a few random bytes changed, inserted or removed (or pure noise).
fn mutated_frame(rng: &mut fastrand::Rng) -> String {
    const SEEDS: &[&str] = &[
        r#"{"payload":"aGk=","properties":{"messageType":"request","requestContext":"1"},"context":1}"#,
        r#"{"payload":"aGk=","properties":{"a":1,"b":null},"context":"x","key":"k"}"#,
        r#"{"properties":{},"context":2}"#,
        r#"{"type":"permit","permitMessages":3}"#,
        r#"{"messageId":"CAAQAA=="}"#,
    ];
    if rng.u8(..) < 32 {
        return (0..rng.usize(..64)).map(|_| char::from(rng.u8(32..127))).collect();
    }
    let mut v: Vec<char> = SEEDS[rng.usize(..SEEDS.len())].chars().collect();
    for _ in 0..rng.usize(1..5) {
        let at = rng.usize(..=v.len());
        match rng.u8(..3) {
            0 if at < v.len() => v[at] = ['{', '}', '"', ':', ',', '\\', '0', '=', 'é', '\u{0}'][rng.usize(..10)],
            1 => v.insert(at, char::from(rng.u8(32..127))),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    v.into_iter().collect()
}

#[tokio::test]
async fn random_frames_from_clients_get_answers_and_break_nothing() {
    let b = start(BrokerConfig::default()).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut producer = ws(&b, &format!("{NP}/fuzz")).await;
    let mut consumer = ws(&b, &format!("{NC}/fuzz/s")).await;
    // fewer frames than the consumer's window (1000), so unacked deliveries never hold the producer
    let frames = 500;
    for _ in 0..frames {
        send_text(&mut producer, mutated_frame(&mut rng)).await;
        // every text frame a producer sends gets an ack, ok or error; none is ignored
        let ack = recv_within(&mut producer, T).await.expect("an ack for every frame");
        assert!(ack["result"].is_string(), "{ack}");
        // consumers: random commands (acks of unknown ids, bad JSON) are answered or ignored, never fatal
        send_text(&mut consumer, mutated_frame(&mut rng)).await;
    }
    // the connections and the broker still work: a good message goes through
    while recv_within(&mut consumer, Duration::from_millis(200)).await.is_some() {}
    send(
        &mut producer,
        json!({"payload": "b2s=", "properties": {"k": "v"}, "context": "last"}),
    )
    .await;
    assert_eq!(recv_within(&mut producer, T).await.unwrap()["result"], "ok");
    let mut got = None;
    for _ in 0..100 {
        match recv_within(&mut consumer, T).await {
            Some(m) if m["payload"] == "b2s=" => {
                got = Some(m);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert_eq!(got.expect("delivered")["properties"]["k"], "v");
    b.shutdown().await;
}
