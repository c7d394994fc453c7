//! Plain HTTP on the broker's port: requests that are not WebSocket upgrades. Serves
//! `GET /admin/v2/stats`; everything else gets a 404 with a hint.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::State;

/// What the first bytes of a connection are.
pub(super) enum Peeked {
    /// A WebSocket upgrade: hand the stream to tungstenite untouched.
    Upgrade,
    /// A plain HTTP request with its method and path; the head was consumed.
    Plain { method: String, path: String },
    /// The peer sent nothing usable in time.
    Gone,
}

const MAX_HEAD: usize = 16 * 1024;

/// Look at the request head without consuming it (unless it is plain HTTP).
pub(super) async fn peek(stream: &mut TcpStream, limit: Duration) -> Peeked {
    let mut buf = vec![0u8; MAX_HEAD];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Peeked::Gone,
            Ok(Ok(n)) => n,
        };
        let head = &buf[..n];
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if n >= MAX_HEAD {
                return Peeked::Gone;
            }
            // partial head (rare): wait a moment for the rest
            tokio::time::sleep(Duration::from_millis(2)).await;
            if tokio::time::Instant::now() >= deadline {
                return Peeked::Gone;
            }
            continue;
        };
        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
        let upgrade = text
            .lines()
            .any(|l| l.starts_with("upgrade:") && l.contains("websocket"));
        if upgrade {
            return Peeked::Upgrade;
        }
        let original = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut first = original.lines().next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_owned();
        let path = first.next().unwrap_or("").to_owned();
        let mut consumed = vec![0u8; end + 4];
        if stream.read_exact(&mut consumed).await.is_err() {
            return Peeked::Gone;
        }
        return Peeked::Plain { method, path };
    }
}

/// Answer a plain HTTP request and close.
pub(super) async fn respond(mut stream: TcpStream, method: &str, path: &str, state: &State) {
    let path_only = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path_only) {
        ("GET", "/admin/v2/stats") => ("200 OK", stats_json(state)),
        ("GET", _) => (
            "404 Not Found",
            serde_json::json!({"error": format!("no such resource {path_only:?}; websocket endpoints live under /ws/")})
                .to_string(),
        ),
        _ => ("405 Method Not Allowed", serde_json::json!({"error": "only GET is served here"}).to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(resp.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn stats_json(state: &State) -> String {
    let mut topics = BTreeMap::new();
    for topic in state.registry.topics() {
        let (rate_in, rate_out) = topic.rates();
        let subs: BTreeMap<String, serde_json::Value> = topic
            .subs
            .lock()
            .expect("subs lock")
            .values()
            .map(|s| {
                (
                    s.name.clone(),
                    serde_json::to_value(s.stats()).expect("stats serialize"),
                )
            })
            .collect();
        topics.insert(
            topic.name.clone(),
            serde_json::json!({
                "msgRateIn": rate_in,
                "msgRateOut": rate_out,
                "msgInCounter": topic.msg_in.load(std::sync::atomic::Ordering::Relaxed),
                "msgOutCounter": topic.msg_out.load(std::sync::atomic::Ordering::Relaxed),
                "subscriptions": subs,
            }),
        );
    }
    let connections = state.cfg.max_connections - state.connections.available_permits();
    serde_json::json!({"topics": topics, "connections": connections}).to_string()
}
