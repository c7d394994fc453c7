//! End to end through the embedded broker on a loopback port: a Rust handler as backend, the Rust
//! client as caller. No Python involved.

use std::sync::Arc;
use std::time::Duration;

use demessaging_rs::backend::{self, BackendConfig, Handler, Replier, Request};
use demessaging_rs::broker::{Broker, BrokerConfig, BrokerHandle};
use demessaging_rs::client::{Client, ClientConfig, ClientError, Reply};
use demessaging_rs::protocol::dasf::MessageType;
use demessaging_rs::protocol::url::BrokerAddress;
use demessaging_rs::protocol::{ReassemblyLimits, Status};
use demessaging_rs::transport::{Backoff, ConnectOptions};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

struct Echo;

impl Handler for Echo {
    fn handle(&self, request: &Request, replier: &Replier) -> Option<Result<bytes::Bytes, String>> {
        if request.payload.contains("\"manual\"") {
            // the handler answers by itself: a progress report, then the response, then no automatic reply
            replier.send_blocking(
                MessageType::Progress,
                Some(Status::Running),
                b"{\"step\":1}".to_vec(),
                Vec::new(),
            );
            replier.send_blocking(
                MessageType::Response,
                Some(Status::Success),
                b"\"manual\"".to_vec(),
                Vec::new(),
            );
            return None;
        }
        Some(Echo::reply(request).map(bytes::Bytes::from))
    }
}

impl Echo {
    fn reply(request: &Request) -> Result<String, String> {
        let v: serde_json::Value =
            serde_json::from_str(&request.payload).map_err(|e| format!("error validating request: {e}"))?;
        match v["func_name"].as_str() {
            Some("echo") => Ok(serde_json::to_string(&v["data"]).unwrap()),
            Some("big") => Ok(format!("\"{}\"", "x".repeat(v["n"].as_u64().unwrap() as usize))),
            Some("sleep") => {
                std::thread::sleep(Duration::from_millis(v["ms"].as_u64().unwrap()));
                Ok("null".into())
            }
            _ => Err("error validating request: unknown func_name".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_may_send_its_own_replies() {
    let b = start_broker().await;
    let (cancel, be) = spawn_echo(backend_config(&b, "e2e-manual", 2, 8));
    let c = client(&b, "e2e-manual").await;
    wait_ready(&c).await;
    let (ptx, mut prx) = tokio::sync::mpsc::channel(4);
    let payload = call_json(serde_json::json!({"func_name": "manual"}));
    let r = c
        .call(
            MessageType::Request,
            payload,
            Duration::from_secs(10),
            "manual",
            Some(ptx),
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Success);
    assert_eq!(r.payload, br#""manual""#);
    let p = prx.try_recv().expect("the progress report arrived before the response");
    assert_eq!(p.payload, br#"{"step":1}"#);
    // exactly one response: a second call is answered normally, nothing stale is left over
    let r = echo(&c, serde_json::json!(7), Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.payload, b"7");
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), be).await;
    b.shutdown().await;
}

async fn start_broker() -> BrokerHandle {
    start_broker_with(BrokerConfig::default()).await
}

async fn start_broker_with(cfg: BrokerConfig) -> BrokerHandle {
    Broker::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
        .spawn()
        .unwrap()
}

fn address(b: &BrokerHandle) -> BrokerAddress {
    address_on(b.addr.port())
}

/// Our Pulsar-style address of a broker on 127.0.0.1:`port`.
fn address_on(port: u16) -> BrokerAddress {
    BrokerAddress::Pulsar {
        tls: false,
        host: "127.0.0.1".into(),
        port: port.to_string(),
        persistence: "non-persistent".into(),
        tenant: "public".into(),
        namespace: "default".into(),
    }
}

fn backend_config(b: &BrokerHandle, topic: &str, workers: usize, queue: usize) -> BackendConfig {
    BackendConfig {
        address: address(b),
        topic: topic.into(),
        subscription: "backend-module-test".into(),
        consumer_query: String::new(),
        connect: ConnectOptions::default(),
        backoff: Backoff {
            max_attempts: Some(50),
            ..Backoff::default()
        },
        max_workers: workers,
        queue_size: queue,
        overflow_replies: true,
        max_payload_size: 512_000,
        producer_keep_alive: Duration::from_secs(120),
        producer_connection_timeout: Duration::from_secs(5),
        info: Some("{\"title\":\"t\"}".into()),
        api_info: None,
        drain_timeout: Duration::from_secs(30),
        reassembly: ReassemblyLimits::default(),
    }
}

/// An `Echo` backend with `cfg`, running until the token is cancelled.
fn spawn_echo(
    cfg: BackendConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), demessaging_rs::backend::BackendError>>,
) {
    let cancel = CancellationToken::new();
    let be = tokio::spawn(backend::run(cfg, Arc::new(Echo), cancel.clone()));
    (cancel, be)
}

async fn client(b: &BrokerHandle, topic: &str) -> Client {
    Client::connect(ClientConfig {
        address: address(b),
        topic: topic.into(),
        connect: ConnectOptions::default(),
        max_payload_size: 512_000,
        reassembly: ReassemblyLimits::default(),
    })
    .await
    .unwrap()
}

/// Ping until pong: the backend's subscription exists once this returns.
async fn wait_ready(c: &Client) {
    for _ in 0..100 {
        if let Ok(r) = c
            .call(MessageType::Ping, Vec::new(), Duration::from_millis(100), "ping", None)
            .await
        {
            assert_eq!(r.message_type, "pong");
            return;
        }
    }
    panic!("backend never answered ping");
}

/// One `echo` call through `c`.
async fn echo(c: &Client, data: serde_json::Value, timeout: Duration) -> Result<Reply, ClientError> {
    let payload = call_json(serde_json::json!({"func_name": "echo", "data": data}));
    c.call(MessageType::Request, payload, timeout, "echo", None).await
}

fn call_json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_large_reply_and_bad_input() {
    let b = start_broker().await;
    let (cancel, be) = spawn_echo(backend_config(&b, "e2e", 2, 8));
    let c = client(&b, "e2e").await;
    wait_ready(&c).await;

    let t = Duration::from_secs(10);
    let r = echo(&c, serde_json::json!([1, "a"]), t).await.unwrap();
    assert_eq!(r.status, Status::Success);
    assert_eq!(r.payload, br#"[1,"a"]"#);

    // 2 MB reply: fragmented by the backend, reassembled by the client
    let n = 2_000_000u64;
    let r = c
        .call(
            MessageType::Request,
            call_json(serde_json::json!({"func_name": "big", "n": n})),
            t,
            "big",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.payload.len() as u64, n + 2);

    // 2 MB request: fragmented by the client, reassembled by the backend
    let data = "y".repeat(2_000_000);
    let r = echo(&c, serde_json::json!(data), t).await.unwrap();
    assert_eq!(r.payload.len(), 2_000_002);

    // handler error
    let r = c
        .call(
            MessageType::Request,
            call_json(serde_json::json!({"func_name": "nope"})),
            t,
            "nope",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Error);
    assert!(String::from_utf8(r.payload)
        .unwrap()
        .starts_with("error validating request"));

    // not UTF-8: answered by the backend without reaching the handler
    let r = c
        .call(MessageType::Request, vec![0xff, 0xfe, 0x00], t, "raw", None)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Error);
    assert!(String::from_utf8(r.payload).unwrap().contains("not valid UTF-8"));

    // unknown message type
    let r = c
        .call(MessageType::Log, Vec::new(), Duration::from_millis(300), "log", None)
        .await;
    assert!(
        matches!(r, Err(ClientError::Timeout { .. })) || r.is_ok(),
        "log messages are ignored: {r:?}"
    );

    // info
    let r = c.call(MessageType::Info, Vec::new(), t, "info", None).await.unwrap();
    assert_eq!(r.properties.get("info"), Some("{\"title\":\"t\"}"));

    // still serving
    let r = echo(&c, serde_json::json!(1), t).await.unwrap();
    assert_eq!(r.payload, b"1");

    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_malformed_frames_get_error_replies() {
    let b = start_broker().await;
    let (cancel, be) = spawn_echo(backend_config(&b, "raw", 1, 4));
    let c = client(&b, "raw").await;
    wait_ready(&c).await;
    let port = b.addr.port();
    let (mut cons, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/ws/v2/consumer/non-persistent/public/default/raw-replies/s"
    ))
    .await
    .unwrap();
    let (mut prod, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/ws/v2/producer/non-persistent/public/default/raw"
    ))
    .await
    .unwrap();
    let props = |ctx: &str, mt: &str| serde_json::json!({"response_topic": "raw-replies", "requestContext": ctx, "messageType": mt});
    let cases = [
        (
            serde_json::json!({"payload": "%%%notbase64", "properties": props("1", "request")}),
            "base64",
        ),
        (
            serde_json::json!({"payload": "", "properties": props("2", "bogus")}),
            "unsupported message type",
        ),
        (
            serde_json::json!({"payload": "bm90IGpzb24=", "properties": props("3", "request")}),
            "error validating request",
        ),
    ];
    for (frame, expect) in cases {
        prod.send(Message::text(frame.to_string())).await.unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(5), prod.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let ack: serde_json::Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
        if ack["result"] != "ok" {
            // the broker itself refuses invalid base64: that is the clear error for this case
            assert_eq!(expect, "base64", "{ack}");
            assert!(ack["errorMsg"].as_str().unwrap().contains("base64"));
            continue;
        }
        let msg = tokio::time::timeout(Duration::from_secs(5), cons.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let msg: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(msg["properties"]["status"], "error");
        let text = demessaging_rs::protocol::envelope::decode_payload(msg["payload"].as_str().unwrap()).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(expect), "{text}");
    }
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_rejected_not_lost() {
    let b = start_broker().await;
    let (cancel, be) = spawn_echo(backend_config(&b, "busy", 1, 1));
    let c = client(&b, "busy").await;
    wait_ready(&c).await;
    let t = Duration::from_secs(10);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.call(
                    MessageType::Request,
                    call_json(serde_json::json!({"func_name": "sleep", "ms": 1000})),
                    t,
                    "sleep",
                    None,
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut rejected = 0;
    for h in calls {
        let r = h.await.unwrap().unwrap();
        match r.status {
            Status::Success => ok += 1,
            _ => {
                assert_eq!(
                    String::from_utf8(r.payload).unwrap(),
                    "request rejected due to queue overflow, try again later"
                );
                rejected += 1;
            }
        }
    }
    assert_eq!(ok + rejected, 6, "every call answered");
    assert!(ok >= 1, "the call that got the worker succeeds");
    assert!(rejected >= 1, "a queue of one overflows");
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_broker_refuses_fails_the_call_with_the_reason() {
    // the client asks for receipts of refusals only: a refusal must still end the call, with its reason
    let b = start_broker_with(BrokerConfig {
        publish_hold: Duration::from_millis(100),
        ..BrokerConfig::default()
    })
    .await;
    // a stuck backend: subscribed with room for one message, never acks
    let sub = format!(
        "ws://127.0.0.1:{}/ws/v2/consumer/non-persistent/public/default/stuck/s?receiverQueueSize=1",
        b.addr.port()
    );
    let (_stuck, _) = tokio_tungstenite::connect_async(sub).await.unwrap();
    let c = client(&b, "stuck").await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5 {
        let c = c.clone();
        calls.spawn(async move { echo(&c, serde_json::json!(i), Duration::from_secs(20)).await });
    }
    // the first call to end is a refused one (the others were taken by the stuck backend and wait)
    let mut rejected = 0;
    match calls.join_next().await.unwrap().unwrap() {
        Err(ClientError::Rejected(why)) => {
            assert!(why.contains("send-error:8") && why.contains("full"), "{why}");
            rejected += 1;
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(rejected > 0, "a refusal reached the caller");
    c.close();
    b.shutdown().await;
}

/// The upgrade requests a client sends, as headers by path.
async fn recorded_upgrades(listener: tokio::net::TcpListener, n: usize) -> Vec<(String, Vec<(String, String)>)> {
    let mut seen = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..n {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut req_seen = None;
        // the callback's error type is fixed by tungstenite
        #[allow(clippy::result_large_err)]
        let ws = tokio_tungstenite::accept_hdr_async(
            tcp,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
             resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                req_seen = Some((req.uri().path().to_owned(), headers));
                Ok(resp)
            },
        )
        .await
        .unwrap();
        seen.push(req_seen.unwrap());
        keep.push(ws);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_clients_producer_asks_for_refusals_only() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(recorded_upgrades(listener, 2));
    let c = Client::connect(ClientConfig {
        address: address_on(port),
        topic: "hdr".into(),
        connect: ConnectOptions::default(),
        max_payload_size: 512_000,
        reassembly: ReassemblyLimits::default(),
    })
    .await
    .unwrap();
    let seen = server.await.unwrap();
    let receipts = |path_part: &str| {
        let (_, headers) = seen.iter().find(|(p, _)| p.contains(path_part)).expect("connected");
        headers
            .iter()
            .find(|(k, _)| k == "x-dasf-receipts")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(receipts("/producer/").as_deref(), Some("errors"));
    assert_eq!(receipts("/consumer/"), None);
    c.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_names_topic_and_function() {
    let b = start_broker().await;
    let c = client(&b, "nobody-listens").await;
    let err = c
        .call(
            MessageType::Request,
            b"{}".to_vec(),
            Duration::from_millis(200),
            "hello_world",
            None,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Timeout { .. }));
    assert!(
        text.contains("nobody-listens") && text.contains("hello_world"),
        "{text}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_calls_from_plain_threads() {
    let b = start_broker().await;
    let (cancel, be) = spawn_echo(backend_config(&b, "blocking", 2, 64));
    let c = client(&b, "blocking").await;
    wait_ready(&c).await;
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..50 {
                    let payload = call_json(serde_json::json!({"func_name": "echo", "data": [i, j]}));
                    let call = c
                        .start_blocking(MessageType::Request, payload, Duration::from_secs(10), "echo", false)
                        .unwrap();
                    let reply = loop {
                        match call.poll(Duration::from_millis(100)) {
                            demessaging_rs::client::Waited::Done(r) => break r.unwrap(),
                            _ => continue,
                        }
                    };
                    assert_eq!(
                        reply.payload,
                        format!("[{i},{j}]").into_bytes(),
                        "replies matched to their calls"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
    }
    // a blocking call that nobody answers ends at its deadline
    let c2 = client(&b, "nobody").await;
    let waited = tokio::task::spawn_blocking(move || {
        let call = c2
            .start_blocking(
                MessageType::Request,
                b"{}".to_vec(),
                Duration::from_millis(200),
                "f",
                false,
            )
            .unwrap();
        loop {
            if let demessaging_rs::client::Waited::Done(r) = call.poll(Duration::from_millis(50)) {
                break r;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(waited, Err(ClientError::Timeout { .. })));
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_producers_without_keep_alive_reconnect_per_reply() {
    let b = start_broker().await;
    let mut cfg = backend_config(&b, "no-keep-alive", 2, 8);
    cfg.producer_keep_alive = Duration::ZERO;
    let (cancel, be) = spawn_echo(cfg);
    let c = client(&b, "no-keep-alive").await;
    wait_ready(&c).await;
    for i in 0..20 {
        let r = echo(&c, serde_json::json!(i), Duration::from_secs(10)).await.unwrap();
        assert_eq!(r.payload, i.to_string().into_bytes());
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(120)).await; // let the producer retire in between
        }
    }
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_overflow_replies_a_saturated_backend_holds_deliveries_and_answers_all() {
    let b = start_broker().await;
    let mut cfg = backend_config(&b, "held", 1, 1);
    cfg.overflow_replies = false;
    let (cancel, be) = spawn_echo(cfg);
    let c = client(&b, "held").await;
    wait_ready(&c).await;
    // 40 calls of 10 ms against 1 worker and a queue of 1: none rejected, every one answered
    let calls = (0..40).map(|_| {
        let c = c.clone();
        async move {
            let payload = call_json(serde_json::json!({"func_name": "sleep", "ms": 10}));
            c.call(MessageType::Request, payload, Duration::from_secs(30), "sleep", None)
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    for r in replies {
        let r = r.unwrap();
        assert_eq!(r.status, Status::Success, "{:?}", String::from_utf8_lossy(&r.payload));
    }
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "dasf test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let files = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

async fn start_tls_broker(dir: &std::path::Path) -> (BrokerHandle, std::path::PathBuf) {
    let (ca, cert, key) = tls_files(dir);
    let cfg = BrokerConfig {
        tls: Some(demessaging_rs::broker::tls_server_config(&cert, &key).unwrap()),
        ..BrokerConfig::default()
    };
    let b = Broker::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
        .spawn()
        .unwrap();
    (b, ca)
}

fn tls_address(b: &BrokerHandle) -> BrokerAddress {
    match address(b) {
        BrokerAddress::Pulsar {
            host,
            port,
            persistence,
            tenant,
            namespace,
            ..
        } => BrokerAddress::Pulsar {
            tls: true,
            host,
            port,
            persistence,
            tenant,
            namespace,
        },
        other => other,
    }
}

fn trusting(ca: &std::path::Path) -> ConnectOptions {
    ConnectOptions {
        tls: demessaging_rs::transport::TlsOptions {
            ca_file: Some(ca.to_owned()),
            insecure_no_verify: false,
        },
        ..ConnectOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_end_to_end_and_what_a_tls_port_does_with_strangers() {
    let dir = std::env::temp_dir().join(format!("dasf-e2e-tls-{}", std::process::id()));
    let (b, ca) = start_tls_broker(&dir).await;
    let cfg = BackendConfig {
        address: tls_address(&b),
        connect: trusting(&ca),
        ..backend_config(&b, "tls", 2, 8)
    };
    let (cancel, be) = spawn_echo(cfg);
    let client_cfg = |connect: ConnectOptions| ClientConfig {
        address: tls_address(&b),
        topic: "tls".into(),
        connect,
        max_payload_size: 512_000,
        reassembly: ReassemblyLimits::default(),
    };
    let c = Client::connect(client_cfg(trusting(&ca))).await.unwrap();
    wait_ready(&c).await;

    // a call over wss, with a fragmented 2 MB request and reply
    let data = "z".repeat(2_000_000);
    let r = echo(&c, serde_json::json!(data), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(r.status, Status::Success);
    assert_eq!(r.payload.len(), 2_000_002);

    // a client that does not trust the CA (system roots only): a certificate error, not retried
    let e = Client::connect(client_cfg(ConnectOptions::default()))
        .await
        .err()
        .expect("untrusted");
    let text = e.to_string();
    assert!(text.contains("certificate") && text.contains("CA"), "{text}");

    // insecure mode connects (development only)
    let insecure = ConnectOptions {
        tls: demessaging_rs::transport::TlsOptions {
            ca_file: None,
            insecure_no_verify: true,
        },
        ..ConnectOptions::default()
    };
    let ci = Client::connect(client_cfg(insecure)).await.unwrap();
    wait_ready(&ci).await;

    // a plain ws:// client on the TLS port gets a 400 that says what to do
    let url = format!(
        "ws://127.0.0.1:{}/ws/v2/producer/non-persistent/public/default/tls",
        b.addr.port()
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("wss://"), "{body}");
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    // garbage that starts like a TLS record, and a peer that goes silent mid-handshake
    use tokio::io::AsyncWriteExt;
    let mut junk = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    junk.write_all(b"\x16\x03\x01\x00\x05garbagegarbage").await.unwrap();
    let _silent = tokio::net::TcpStream::connect(b.addr).await.unwrap();

    // ... and everyone else is still served
    let r = echo(&c, serde_json::json!(1), Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.payload, b"1");

    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), be).await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_client_on_a_plain_port_fails_at_once() {
    let b = start_broker().await;
    let cfg = ClientConfig {
        address: tls_address(&b),
        topic: "plain".into(),
        connect: ConnectOptions::default(),
        max_payload_size: 512_000,
        reassembly: ReassemblyLimits::default(),
    };
    // bounded: the broker closes a TLS hello on a plain port instead of waiting for an HTTP head
    let r = tokio::time::timeout(Duration::from_secs(30), Client::connect(cfg)).await;
    let e = r.expect("no hang").err().expect("must fail");
    assert!(e.to_string().contains("TLS"), "{e}");
    // the broker still serves plain clients
    let c = client(&b, "plain").await;
    drop(c);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_clear_errors_not_buffered() {
    let b = start_broker().await;
    let small = ReassemblyLimits {
        max_bytes: 1_000_000,
        ..ReassemblyLimits::default()
    };
    let cfg = BackendConfig {
        reassembly: small,
        ..backend_config(&b, "oversize", 2, 8)
    };
    let (cancel, be) = spawn_echo(cfg);
    let c = Client::connect(ClientConfig {
        address: address(&b),
        topic: "oversize".into(),
        connect: ConnectOptions::default(),
        max_payload_size: 100_000,
        reassembly: small,
    })
    .await
    .unwrap();
    wait_ready(&c).await;
    let t = Duration::from_secs(20);

    // a 2 MB reply to a client that reassembles at most ~1 MB: refused at its first fragment
    let e = c
        .call(
            MessageType::Request,
            call_json(serde_json::json!({"func_name": "big", "n": 2_000_000})),
            t,
            "big",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::BadReply(m) if m.contains("exceeds the reassembly limit")),
        "{e}"
    );

    // a 2 MB request to a backend that reassembles at most ~1 MB: one error reply, nothing buffered
    let data = "q".repeat(2_000_000);
    let r = echo(&c, serde_json::json!(data), t).await.unwrap();
    assert_eq!(r.status, Status::Error);
    let text = String::from_utf8_lossy(&r.payload).into_owned();
    assert!(text.contains("exceeds the reassembly limit"), "{text}");

    // both sides still serve
    let r = echo(&c, serde_json::json!("after"), t).await.unwrap();
    assert_eq!(r.payload, br#""after""#);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), be).await;
    b.shutdown().await;
}

/// The broker's `/admin/v2/stats`, parsed.
async fn broker_stats(b: &BrokerHandle) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    s.write_all(b"GET /admin/v2/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let (_, body) = resp.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

/// Unacked messages per subscription, over all topics.
fn unacked(stats: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (topic, t) in stats["topics"].as_object().unwrap() {
        for (sub, s) in t["subscriptions"].as_object().unwrap() {
            out.push((format!("{topic} {sub}"), s["unackedMessages"].as_u64().unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_acks_reach_the_broker_so_a_small_window_never_stalls() {
    // a window of 4 unacked messages per consumer: the backend and the client only get further deliveries
    // once the acks they hold back for a moment are written
    let b = start_broker_with(BrokerConfig {
        receiver_queue_size: 4,
        ..BrokerConfig::default()
    })
    .await;
    let (cancel, be) = spawn_echo(backend_config(&b, "small-window", 2, 64));
    let c = client(&b, "small-window").await;
    wait_ready(&c).await;
    for round in 0..10 {
        let calls = (0..16).map(|i| {
            let c = c.clone();
            async move { echo(&c, serde_json::json!([round, i]), Duration::from_secs(20)).await }
        });
        for (i, r) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
            let r = r.unwrap();
            assert_eq!(r.status, Status::Success);
            assert_eq!(r.payload, format!("[{round},{i}]").into_bytes());
        }
    }
    // every delivery, to the backend and to the client, was acked in the end
    let mut left = unacked(&broker_stats(&b).await);
    for _ in 0..100 {
        if left.iter().all(|(_, n)| *n == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = unacked(&broker_stats(&b).await);
    }
    assert!(
        left.len() >= 2,
        "the backend's and the client's subscriptions: {left:?}"
    );
    assert!(left.iter().all(|(_, n)| *n == 0), "{left:?}");
    cancel.cancel();
    be.await.unwrap().unwrap();
    b.shutdown().await;
}
