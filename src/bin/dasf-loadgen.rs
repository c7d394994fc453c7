//! Native load generator for Pulsar-WebSocket-API brokers, and a bare relay (the transport floor).
//!
//! ```text
//! dasf-loadgen throughput --producer URL --consumer URL [--messages N] [--window W] [--size BYTES]
//! dasf-loadgen roundtrip  --base URL [--messages N] [--tag T]  # topics rt-a-T, rt-b-T under URL
//! dasf-loadgen idle       --base URL [--connections N]  # hold N idle consumers until stdin closes
//! dasf-loadgen relay      --port P                      # forward frames, ack with {"result":"ok"}
//! dasf-loadgen backend    --port P --topic T [--workers W]  # a hello_world backend of the library's, until
//!                                                           # stdin closes
//! dasf-loadgen calls      --port P --topic T [--threads N] [--per-thread C]  # N plain threads calling it
//! ```
//!
//! `backend` and `calls` are the library's backend and blocking client with a Rust handler: the 8-thread
//! workload of bench/bench_calls.py without Python, i.e. what our transport costs on its own.
//! Each prints one JSON line with its figures. Every loop is bounded in count and time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demessaging_rs::backend::{self, BackendConfig, Handler, Replier, Request};
use demessaging_rs::client::{Client, ClientConfig, Waited};
use demessaging_rs::protocol::dasf::MessageType;
use demessaging_rs::protocol::url::BrokerAddress;
use demessaging_rs::protocol::ReassemblyLimits;
use demessaging_rs::transport::{Backoff, ConnectOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const LIMIT: Duration = Duration::from_secs(120);

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name} expects a number"))
    })
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|_| panic!("connect {url}: timeout"))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

fn payload(size: usize) -> String {
    demessaging_rs::protocol::envelope::encode_payload(&vec![b'x'; size])
}

async fn throughput(args: &[String]) {
    let producer_url = arg(args, "--producer").expect("--producer URL");
    let consumer_url = arg(args, "--consumer").expect("--consumer URL");
    let total = num(args, "--messages", 100_000);
    let window = num(args, "--window", 1000);
    let body = payload(num(args, "--size", 100) as usize);

    let consumer = connect(&consumer_url).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the subscription settle
    let producer = connect(&producer_url).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let (mut csink, mut cstream) = consumer.split();
    let (d2, dup2) = (delivered.clone(), duplicates.clone());
    let reader = tokio::spawn(async move {
        let mut seen = vec![false; total as usize];
        let deadline = Instant::now() + LIMIT;
        let mut last = Instant::now();
        while d2.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_secs(5), cstream.next()).await;
            let Ok(Some(Ok(Message::Text(t)))) = next else {
                if next.is_err() {
                    break; // nothing for 5 s: whatever is missing is lost
                }
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
            let Some(seq) = v["properties"]["seq"]
                .as_str()
                .and_then(|s| s.parse::<usize>().ok())
                .or_else(|| v["properties"]["seq"].as_u64().map(|n| n as usize))
            else {
                continue; // not ours (e.g. a broker's own status message)
            };
            if let Some(id) = v.get("messageId") {
                let _ = csink.send(Message::text(json!({"messageId": id}).to_string())).await;
            }
            if seq < seen.len() && !seen[seq] {
                seen[seq] = true;
                d2.fetch_add(1, Ordering::Relaxed);
                last = Instant::now();
            } else {
                dup2.fetch_add(1, Ordering::Relaxed);
            }
        }
        last
    });

    let (mut psink, mut pstream) = producer.split();
    let acked_ok = Arc::new(AtomicU64::new(0));
    let acked_err = Arc::new(AtomicU64::new(0));
    let (permits_tx, mut permits_rx) = mpsc::channel::<()>(window as usize);
    for _ in 0..window {
        permits_tx.try_send(()).unwrap();
    }
    let (ok2, err2) = (acked_ok.clone(), acked_err.clone());
    let acks = tokio::spawn(async move {
        let deadline = Instant::now() + LIMIT;
        while ok2.load(Ordering::Relaxed) + err2.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), pstream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["result"] == "ok" {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    } else {
                        err2.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = permits_tx.try_send(());
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
    });
    let start = Instant::now();
    for seq in 0..total {
        if tokio::time::timeout(Duration::from_secs(30), permits_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            break;
        }
        let frame = format!(r#"{{"payload":"{body}","properties":{{"seq":"{seq}"}},"context":"{seq}"}}"#);
        if psink.feed(Message::text(frame)).await.is_err() {
            break;
        }
        if permits_rx.is_empty() && psink.flush().await.is_err() {
            break;
        }
    }
    let _ = psink.flush().await;
    let _ = acks.await;
    let last = reader.await.unwrap_or_else(|_| Instant::now());
    let elapsed = last.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let ok = acked_ok.load(Ordering::Relaxed);
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "messages": total,
            "acked_ok": ok,
            "acked_error": acked_err.load(Ordering::Relaxed),
            "delivered": got,
            "duplicates": duplicates.load(Ordering::Relaxed),
            "lost": ok.saturating_sub(got),
            "seconds": elapsed,
            "msg_per_s": got as f64 / elapsed,
        })
    );
}

async fn roundtrip(args: &[String]) {
    let base = arg(args, "--base").expect("--base URL (e.g. ws://127.0.0.1:8080/ws)");
    let n = num(args, "--messages", 2000);
    let tag = arg(args, "--tag").unwrap_or_else(|| std::process::id().to_string());
    let (a, b) = (format!("rt-a-{tag}"), format!("rt-b-{tag}"));
    // echo: consume A, republish to B
    let echo_in = connect(&format!("{base}/{a}/echo")).await;
    let mut echo_out = connect(&format!("{base}/{b}")).await;
    let mut result_in = connect(&format!("{base}/{b}/sink")).await;
    let mut producer = connect(&format!("{base}/{a}")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::spawn(async move {
        let (mut sink, mut stream) = echo_in.split();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(LIMIT, stream.next()).await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
            if v["properties"]["seq"].is_null() {
                continue;
            }
            if let Some(id) = v.get("messageId") {
                let _ = sink.send(Message::text(json!({"messageId": id}).to_string())).await;
            }
            let fwd = json!({"payload": v["payload"], "properties": v["properties"], "context": "e"});
            if echo_out.send(Message::text(fwd.to_string())).await.is_err() {
                break;
            }
            // drain the echo producer's ack
            let _ = tokio::time::timeout(Duration::from_secs(5), echo_out.next()).await;
        }
    });
    let body = payload(100);
    let mut times = Vec::with_capacity(n as usize);
    let deadline = Instant::now() + LIMIT;
    for seq in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let t0 = Instant::now();
        let frame = format!(r#"{{"payload":"{body}","properties":{{"seq":"{seq}"}},"context":"{seq}"}}"#);
        producer.send(Message::text(frame)).await.unwrap();
        let mut got = false;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), result_in.next()).await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
            if let Some(id) = v.get("messageId") {
                let _ = result_in
                    .send(Message::text(json!({"messageId": id}).to_string()))
                    .await;
            }
            if v["properties"]["seq"] == json!(seq.to_string()) {
                got = true;
                break;
            }
        }
        if !got {
            break;
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        // the producer's ack
        let _ = tokio::time::timeout(Duration::from_secs(5), producer.next()).await;
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
    };
    println!(
        "{}",
        json!({"messages": times.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99)})
    );
}

async fn idle(args: &[String]) {
    let base = arg(args, "--base").expect("--base URL");
    let n = num(args, "--connections", 1000);
    let mut conns = Vec::with_capacity(n as usize);
    for i in 0..n {
        conns.push(connect(&format!("{base}/idle-{}-{i}/s", std::process::id())).await);
    }
    println!("{}", json!({"connections": conns.len()}));
    // hold them until stdin closes (bounded)
    stdin_closed().await;
}

/// Until stdin closes or a line arrives (at most [`LIMIT`]).
async fn stdin_closed() {
    let _ = tokio::time::timeout(
        LIMIT,
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }),
    )
    .await;
}

/// A relay with no broker semantics: a frame on `/ws/<topic>` goes verbatim to every connection on
/// `/ws/<topic>/<anything>`; the producer gets `{"result":"ok"}`. Consumers' frames are ignored.
async fn relay(args: &[String]) {
    let port = num(args, "--port", 0) as u16;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("{}", json!({"port": listener.local_addr().unwrap().port()}));
    type Subs = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Message>>>>>;
    let subs: Subs = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let subs = subs.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            #[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
            let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                path = req.uri().path().to_owned();
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                return;
            };
            let parts: Vec<String> = path.trim_start_matches("/ws/").split('/').map(str::to_owned).collect();
            let (mut sink, mut stream) = ws.split();
            if parts.len() >= 2 {
                let (tx, mut rx) = mpsc::channel::<Message>(1024);
                subs.lock().unwrap().entry(parts[0].clone()).or_default().push(tx);
                tokio::spawn(async move { while stream.next().await.is_some() {} });
                while let Some(m) = rx.recv().await {
                    if sink.feed(m).await.is_err() {
                        break;
                    }
                    if rx.is_empty() && sink.flush().await.is_err() {
                        break;
                    }
                }
            } else {
                let topic = parts[0].clone();
                while let Some(Ok(m)) = stream.next().await {
                    if !m.is_text() {
                        continue;
                    }
                    let targets: Vec<_> = subs.lock().unwrap().get(&topic).cloned().unwrap_or_default();
                    for t in targets {
                        let _ = t.send(m.clone()).await;
                    }
                    if sink.send(Message::text(r#"{"result":"ok"}"#)).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

fn pulsar_at(args: &[String]) -> BrokerAddress {
    BrokerAddress::Pulsar {
        tls: false,
        host: "127.0.0.1".into(),
        port: arg(args, "--port").expect("--port P"),
        persistence: "non-persistent".into(),
        tenant: "public".into(),
        namespace: "default".into(),
    }
}

/// `hello_world(name)` in Rust: parses the request, answers `"Hello, " + name`.
struct Hello;

impl Handler for Hello {
    fn handle(&self, request: &Request, _replier: &Replier) -> Option<Result<bytes::Bytes, String>> {
        let reply = serde_json::from_str::<Value>(&request.payload)
            .map_err(|e| e.to_string())
            .map(|v| {
                json!(format!("Hello, {}", v["name"].as_str().unwrap_or("")))
                    .to_string()
                    .into()
            });
        Some(reply)
    }
}

async fn backend(args: &[String]) {
    let workers = num(args, "--workers", 6) as usize;
    let cfg = BackendConfig {
        address: pulsar_at(args),
        topic: arg(args, "--topic").expect("--topic T"),
        subscription: "loadgen".into(),
        consumer_query: String::new(),
        connect: ConnectOptions::default(),
        backoff: Backoff::default(),
        max_workers: workers,
        queue_size: workers,
        overflow_replies: false,
        max_payload_size: 512_000,
        producer_keep_alive: Duration::from_secs(120),
        producer_connection_timeout: Duration::from_secs(10),
        info: None,
        api_info: None,
        drain_timeout: Duration::from_secs(30),
        reassembly: ReassemblyLimits::default(),
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        stdin_closed().await;
        stop.cancel();
    });
    println!("{}", json!({"ready": true}));
    backend::run(cfg, Arc::new(Hello), cancel).await.expect("backend runs");
}

/// utime + stime of this process in seconds (Linux).
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn calls(args: &[String]) {
    let threads = num(args, "--threads", 8);
    let per_thread = num(args, "--per-thread", 2000);
    let client = Client::connect(ClientConfig {
        address: pulsar_at(args),
        topic: arg(args, "--topic").expect("--topic T"),
        connect: ConnectOptions::default(),
        max_payload_size: 512_000,
        reassembly: ReassemblyLimits::default(),
    })
    .await
    .expect("client connects");
    assert!(
        client
            .await_backend(Duration::from_secs(30), Duration::from_millis(200))
            .await
            .expect("ping"),
        "the backend never answered a ping"
    );
    let request = bytes::Bytes::from_static(br#"{"func_name":"hello_world","name":"x"}"#);
    let run = |n: u64| {
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (client, request) = (client.clone(), request.clone());
                std::thread::spawn(move || {
                    for _ in 0..n {
                        let call = client
                            .start_blocking(
                                MessageType::Request,
                                request.clone(),
                                Duration::from_secs(30),
                                "hello_world",
                                false,
                            )
                            .expect("call starts");
                        let reply = loop {
                            match call.poll(Duration::from_secs(1)) {
                                Waited::Done(r) => break r.expect("call answered"),
                                Waited::Pending | Waited::Progress(_) => continue,
                            }
                        };
                        assert_eq!(&reply.payload[..], br#""Hello, x""#);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("caller thread");
        }
        started.elapsed().as_secs_f64()
    };
    let _ = tokio::task::block_in_place(|| run(per_thread / 10 + 1)); // warm-up
    let cpu0 = own_cpu();
    let wall = tokio::task::block_in_place(|| run(per_thread));
    let total = (threads * per_thread) as f64;
    println!(
        "{}",
        json!({"calls": total, "rate": total / wall, "client_cpu_us": (own_cpu() - cpu0) / total * 1e6})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("throughput") => throughput(&args).await,
            Some("roundtrip") => roundtrip(&args).await,
            Some("idle") => idle(&args).await,
            Some("relay") => relay(&args).await,
            Some("backend") => backend(&args).await,
            Some("calls") => calls(&args).await,
            _ => eprintln!(
                "usage: dasf-loadgen throughput|roundtrip|idle|relay|backend|calls [options] (see the file header)"
            ),
        }
    });
}
