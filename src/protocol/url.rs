//! Topic URLs: building the URLs DASF clients connect to, and parsing the paths a broker serves.

use super::error::ProtocolError;

/// Connection role in a Pulsar WebSocket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes messages.
    Producer,
    /// Receives messages of a subscription.
    Consumer,
    /// Reads a topic without a subscription.
    Reader,
}

/// How a client addresses its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerAddress {
    /// A Pulsar-style broker: `ws://host:port/ws/v2/{role}/{persistence}/{tenant}/{namespace}/{topic}`
    /// (`wss://` with `tls`).
    Pulsar {
        /// Connect with TLS (`wss://`).
        tls: bool,
        /// Host name.
        host: String,
        /// Port.
        port: String,
        /// `persistent` or `non-persistent`.
        persistence: String,
        /// Tenant.
        tenant: String,
        /// Namespace.
        namespace: String,
    },
    /// A plain websocket base URL (dasf-broker-django): `{url}/{topic}[/{subscription}]`.
    Websocket {
        /// Base URL used for producers.
        producer_url: String,
        /// Base URL used for consumers.
        consumer_url: String,
    },
}

impl BrokerAddress {
    /// The URL of a producer on `topic`.
    pub fn producer_url(&self, topic: &str) -> String {
        match self {
            Self::Pulsar {
                tls,
                host,
                port,
                persistence,
                tenant,
                namespace,
            } => {
                let scheme = if *tls { "wss" } else { "ws" };
                format!("{scheme}://{host}:{port}/ws/v2/producer/{persistence}/{tenant}/{namespace}/{topic}")
            }
            Self::Websocket { producer_url, .. } => join(producer_url, topic),
        }
    }

    /// The URL of a consumer of `topic` on `subscription`, with optional query string (without `?`).
    pub fn consumer_url(&self, topic: &str, subscription: &str, query: &str) -> String {
        let base = match self {
            Self::Pulsar {
                tls,
                host,
                port,
                persistence,
                tenant,
                namespace,
            } => {
                let scheme = if *tls { "wss" } else { "ws" };
                format!(
                    "{scheme}://{host}:{port}/ws/v2/consumer/{persistence}/{tenant}/{namespace}/{topic}/{subscription}"
                )
            }
            Self::Websocket { consumer_url, .. } => join(&join(consumer_url, topic), subscription),
        };
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }
}

fn join(base: &str, part: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{part}")
    } else {
        format!("{base}/{part}")
    }
}

/// A path a broker serves, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPath {
    /// Connection role.
    pub role: Role,
    /// Fully qualified topic name, e.g. `non-persistent://public/default/t`.
    pub topic: String,
    /// Whether the topic is persistent.
    pub persistent: bool,
    /// Subscription name (consumers only).
    pub subscription: Option<String>,
}

/// Parse the path part (no query) of a broker URL. Accepts
/// `/ws/v2/{producer|consumer|reader}/{persistent|non-persistent}/{tenant}/{namespace}/{topic}[/{sub}]`
/// and the short form `/ws/{topic}[/{sub}]` (producer without, consumer with a subscription), which names
/// `non-persistent://public/default/{topic}`.
pub fn parse_endpoint(path: &str) -> Result<EndpointPath, ProtocolError> {
    let bad = |why: &str| ProtocolError::InvalidPath(format!("{path}: {why}"));
    let rest = path.strip_prefix("/ws/").ok_or_else(|| bad("expected /ws/..."))?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty path segment"));
    }
    if parts.first() == Some(&"v2") {
        let role = match parts.get(1) {
            Some(&"producer") => Role::Producer,
            Some(&"consumer") => Role::Consumer,
            Some(&"reader") => Role::Reader,
            _ => return Err(bad("expected producer, consumer or reader after /ws/v2/")),
        };
        let persistent = match parts.get(2) {
            Some(&"persistent") => true,
            Some(&"non-persistent") => false,
            _ => return Err(bad("expected persistent or non-persistent")),
        };
        let want = if role == Role::Consumer { 7 } else { 6 };
        if parts.len() != want {
            return Err(bad(match role {
                Role::Consumer => "expected .../{tenant}/{namespace}/{topic}/{subscription}",
                _ => "expected .../{tenant}/{namespace}/{topic}",
            }));
        }
        let scheme = if persistent { "persistent" } else { "non-persistent" };
        let topic = format!("{scheme}://{}/{}/{}", parts[3], parts[4], parts[5]);
        let subscription = (role == Role::Consumer).then(|| parts[6].to_owned());
        return Ok(EndpointPath {
            role,
            topic,
            persistent,
            subscription,
        });
    }
    match parts.as_slice() {
        [topic] => Ok(EndpointPath {
            role: Role::Producer,
            topic: format!("non-persistent://public/default/{topic}"),
            persistent: false,
            subscription: None,
        }),
        [topic, sub] => Ok(EndpointPath {
            role: Role::Consumer,
            topic: format!("non-persistent://public/default/{topic}"),
            persistent: false,
            subscription: Some((*sub).to_owned()),
        }),
        _ => Err(bad("expected /ws/{topic} or /ws/{topic}/{subscription}")),
    }
}

/// Split a query string into decoded key/value pairs.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulsar_urls() {
        let mut a = BrokerAddress::Pulsar {
            tls: false,
            host: "localhost".into(),
            port: "8080".into(),
            persistence: "non-persistent".into(),
            tenant: "public".into(),
            namespace: "default".into(),
        };
        assert_eq!(
            a.producer_url("t"),
            "ws://localhost:8080/ws/v2/producer/non-persistent/public/default/t"
        );
        assert_eq!(
            a.consumer_url("t", "s", "subscriptionType=Shared"),
            "ws://localhost:8080/ws/v2/consumer/non-persistent/public/default/t/s?subscriptionType=Shared"
        );
        if let BrokerAddress::Pulsar { tls, .. } = &mut a {
            *tls = true;
        }
        assert_eq!(
            a.producer_url("t"),
            "wss://localhost:8080/ws/v2/producer/non-persistent/public/default/t"
        );
        assert!(a
            .consumer_url("t", "s", "")
            .starts_with("wss://localhost:8080/ws/v2/consumer/"));
    }

    #[test]
    fn websocket_urls() {
        let a = BrokerAddress::Websocket {
            producer_url: "ws://h/ws".into(),
            consumer_url: "ws://h/ws/".into(),
        };
        assert_eq!(a.producer_url("t"), "ws://h/ws/t");
        assert_eq!(a.consumer_url("t", "s", ""), "ws://h/ws/t/s");
    }

    #[test]
    fn parse_paths() {
        let p = parse_endpoint("/ws/v2/consumer/persistent/public/default/t/sub").unwrap();
        assert_eq!(p.role, Role::Consumer);
        assert_eq!(p.topic, "persistent://public/default/t");
        assert!(p.persistent);
        assert_eq!(p.subscription.as_deref(), Some("sub"));
        let p = parse_endpoint("/ws/v2/producer/non-persistent/public/default/t").unwrap();
        assert_eq!(
            (p.role, p.topic.as_str()),
            (Role::Producer, "non-persistent://public/default/t")
        );
        let short = parse_endpoint("/ws/t").unwrap();
        assert_eq!(short.topic, "non-persistent://public/default/t");
        assert_eq!(short.role, Role::Producer);
        let short = parse_endpoint("/ws/t/s").unwrap();
        assert_eq!(short.role, Role::Consumer);
        for bad in [
            "/",
            "/ws/",
            "/ws/v2/producer/x/public/default/t",
            "/ws/v2/consumer/persistent/a/b/t",
            "/x/t",
            "/ws/a/b/c",
            "/ws//t",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query() {
        assert_eq!(
            parse_query("subscriptionType=Shared&token=a%20b&x"),
            vec![
                ("subscriptionType".to_string(), "Shared".to_string()),
                ("token".to_string(), "a b".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(
            parse_query("a=%zz&b=%4"),
            vec![
                ("a".to_string(), "%zz".to_string()),
                ("b".to_string(), "%4".to_string())
            ]
        );
    }
}
