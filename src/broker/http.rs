//! Plain HTTP on the broker's port: requests that are not WebSocket upgrades. Serves
//! `GET /admin/v2/stats`; everything else gets a 404 with a hint.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::io::Conn;
use super::State;

/// What the first bytes of a connection are.
pub(super) enum Peeked {
    /// A WebSocket upgrade: the head stays buffered for tungstenite.
    Upgrade,
    /// A plain HTTP request with its method, path and `Authorization` header; the head was consumed.
    Plain {
        method: String,
        path: String,
        authorization: Option<String>,
    },
    /// A TLS handshake on a port without TLS.
    Tls,
    /// The peer sent nothing usable in time.
    Gone,
}

const MAX_HEAD: usize = 16 * 1024;

/// Read the request head (kept buffered in `conn` unless it is plain HTTP, which is answered here).
pub(super) async fn peek(conn: &mut Conn, limit: Duration) -> Peeked {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let head = conn.buffered();
        if head.first() == Some(&0x16) {
            return Peeked::Tls; // a TLS ClientHello record
        }
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() >= MAX_HEAD {
                return Peeked::Gone;
            }
            match tokio::time::timeout_at(deadline, conn.fill(MAX_HEAD)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return Peeked::Gone,
            }
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
        let authorization = original.lines().skip(1).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        });
        conn.consume(end + 4);
        return Peeked::Plain {
            method,
            path,
            authorization,
        };
    }
}

/// Answer with a plain HTTP response and close.
pub(super) async fn reply(mut stream: impl AsyncWrite + Unpin, status: &str, content_type: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Answer a plain HTTP request and close.
/// With tokens configured, the stats (topic names included) need a valid token, as the websocket routes do.
pub(super) async fn respond(conn: Conn, method: &str, path: &str, authorization: Option<&str>, state: &State) {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let allowed = match &state.cfg.tokens {
        None => Ok(()),
        Some(tokens) => {
            let token = super::conn::token_from(authorization, &crate::protocol::url::parse_query(query));
            tokens.knows(token.as_deref())
        }
    };
    let (status, body) = match (method, path_only) {
        ("GET", "/admin/v2/stats") if allowed.is_err() => (
            "401 Unauthorized",
            serde_json::json!({"error": match allowed {
                Err(super::Denied::Missing) => "authentication required",
                _ => "invalid token",
            }})
            .to_string(),
        ),
        ("GET", "/admin/v2/stats") => ("200 OK", stats_json(state)),
        ("GET", _) => (
            "404 Not Found",
            serde_json::json!({"error": format!("no such resource {path_only:?}; websocket endpoints live under /ws/")})
                .to_string(),
        ),
        _ => ("405 Method Not Allowed", serde_json::json!({"error": "only GET is served here"}).to_string()),
    };
    reply(conn, status, "application/json", &body).await;
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
