//! DASF conventions on top of the Pulsar frames: property keys, message types, status values,
//! validation of incoming requests and construction of (possibly fragmented) reply frames.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::envelope::{encode_payload_into, Properties};
use super::error::ProtocolError;

/// Property key: the caller's request counter.
pub const REQUEST_CONTEXT: &str = "requestContext";
/// Property key: the topic the caller listens on.
pub const RESPONSE_TOPIC: &str = "response_topic";
/// Property key: the backend topic that produced a reply.
pub const SOURCE_TOPIC: &str = "source_topic";
/// Property key: the id of the request message.
pub const REQUEST_MESSAGEID: &str = "requestMessageId";
/// Property key: the DASF message type.
pub const MESSAGE_TYPE: &str = "messageType";
/// Property key: 0-based fragment index.
pub const FRAGMENT: &str = "fragment";
/// Property key: number of fragments.
pub const NUM_FRAGMENTS: &str = "num_fragments";
/// Property key: status of a reply.
pub const STATUS: &str = "status";

/// Error text sent when the request queue is full (exact string of the reference).
pub const QUEUE_OVERFLOW: &str = "request rejected due to queue overflow, try again later";

/// DASF message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Liveness probe.
    Ping,
    /// Answer to a ping.
    Pong,
    /// A call.
    Request,
    /// The answer to a call.
    Response,
    /// Log record.
    Log,
    /// Ask for the module's JSON schema.
    Info,
    /// Progress report of a running call.
    Progress,
    /// Ask for the module's API description.
    ApiInfo,
}

impl MessageType {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Request => "request",
            Self::Response => "response",
            Self::Log => "log",
            Self::Info => "info",
            Self::Progress => "progress",
            Self::ApiInfo => "api_info",
        }
    }

    /// Parse the wire string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            "request" => Self::Request,
            "response" => Self::Response,
            "log" => Self::Log,
            "info" => Self::Info,
            "progress" => Self::Progress,
            "api_info" => Self::ApiInfo,
            _ => return None,
        })
    }
}

/// Status of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The call succeeded.
    Success,
    /// The call failed; the payload is the error text.
    Error,
    /// Still running (progress reports).
    Running,
}

impl Status {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Running => "running",
        }
    }

    /// Parse the wire string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "success" => Self::Success,
            "error" => Self::Error,
            "running" => Self::Running,
            _ => return None,
        })
    }
}

/// What a backend needs to know about an incoming DASF message to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// Where replies go.
    pub response_topic: String,
    /// The caller's context, as a string.
    pub context: String,
    /// The raw message type string (may be unknown).
    pub message_type: String,
    /// `(fragment, num_fragments)` when the message is one fragment of several.
    pub fragment: Option<(u32, u32)>,
}

impl RequestMeta {
    /// Validate the properties of an incoming message. DASF requires non-empty `response_topic`,
    /// `requestContext` and `messageType`. The context may also come from the top-level `context`.
    /// On error, the response topic (if any) is returned too so the caller can still answer.
    pub fn from_properties(
        props: &Properties,
        top_context: Option<&str>,
    ) -> Result<Self, (ProtocolError, Option<String>)> {
        let non_empty = |k: &str| props.get(k).filter(|v| !v.is_empty()).map(str::to_owned);
        let response_topic = non_empty(RESPONSE_TOPIC);
        let context = non_empty(REQUEST_CONTEXT).or_else(|| top_context.filter(|c| !c.is_empty()).map(str::to_owned));
        let Some(rt) = response_topic else {
            return Err((ProtocolError::MissingProperty(RESPONSE_TOPIC), None));
        };
        let Some(context) = context else {
            return Err((ProtocolError::MissingProperty(REQUEST_CONTEXT), Some(rt)));
        };
        let Some(message_type) = non_empty(MESSAGE_TYPE) else {
            return Err((ProtocolError::MissingProperty(MESSAGE_TYPE), Some(rt)));
        };
        let fragment = parse_fragment(props).map_err(|e| (e, Some(rt.clone())))?;
        Ok(Self {
            response_topic: rt,
            context,
            message_type,
            fragment,
        })
    }
}

/// Read `fragment`/`num_fragments` (integers or their string form). Both absent → `None`.
pub fn parse_fragment(props: &Properties) -> Result<Option<(u32, u32)>, ProtocolError> {
    let parse = |key: &'static str| -> Result<Option<u32>, ProtocolError> {
        match props.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| Some(f as u32))
                .ok_or(ProtocolError::InvalidProperty {
                    key,
                    value: v.to_owned(),
                }),
        }
    };
    match (parse(FRAGMENT)?, parse(NUM_FRAGMENTS)?) {
        (None, None) => Ok(None),
        (Some(i), Some(n)) if n > 0 && i < n => Ok(Some((i, n))),
        (i, n) => Err(ProtocolError::Fragment(format!("inconsistent fragment {i:?} of {n:?}"))),
    }
}

/// The reference's `max_payload_size`: messages whose raw payload is larger are fragmented.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 512_000;

/// One outgoing DASF message, before it is cut into frames.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Properties in their wire form (strings, or integers for fragment counters).
    pub properties: Map<String, Value>,
    /// Raw (not yet base64-encoded) payload.
    pub payload: Bytes,
    /// Top-level context for the producer ack.
    pub context: String,
}

impl Outgoing {
    /// A reply to `meta` with the given type and status, as the reference backend shapes it.
    pub fn reply(meta: &RequestMeta, source_topic: &str, msg_type: MessageType, status: Option<Status>) -> Self {
        let mut properties = Map::new();
        if let Some(status) = status {
            properties.insert(STATUS.into(), Value::String(status.as_str().into()));
        }
        properties.insert(REQUEST_CONTEXT.into(), Value::String(meta.context.clone()));
        properties.insert(MESSAGE_TYPE.into(), Value::String(msg_type.as_str().into()));
        properties.insert(SOURCE_TOPIC.into(), Value::String(source_topic.into()));
        Self {
            properties,
            payload: Bytes::new(),
            context: meta.context.clone(),
        }
    }

    /// Serialize to one or more publish frames. Payloads whose raw size exceeds `max_payload_size`
    /// are cut into pieces of the whole payload's base64 text of at most `max_payload_size` characters
    /// (whole base64 quanta, so each piece is encoded on its own), each carrying `fragment` and
    /// `num_fragments` (as integers, like the reference backend).
    pub fn into_frames(self, max_payload_size: usize) -> Vec<String> {
        self.frames(max_payload_size).collect()
    }

    /// [`Outgoing::into_frames`], one frame at a time: a writer can send the first fragment of a large
    /// payload while the next is being encoded.
    pub fn frames(self, max_payload_size: usize) -> Frames {
        let max = max_payload_size.max(4);
        let (chunk, count) = if self.payload.len() <= max {
            (max, 1)
        } else {
            let chunk = max / 4 * 3;
            (chunk, self.payload.len().div_ceil(chunk))
        };
        // the fragments of one message share a message key, so that a broker can hand them to one consumer
        // of a Shared subscription (ours does: the replicas of a backend each reassemble what they get)
        let key = (count > 1).then(|| {
            let prop = |k: &str| self.properties.get(k).and_then(Value::as_str).unwrap_or_default();
            format!("{}/{}/{}", prop(RESPONSE_TOPIC), prop(REQUEST_CONTEXT), self.context)
        });
        Frames {
            out: self,
            chunk,
            count,
            next: 0,
            key,
        }
    }
}

/// The frames of one [`Outgoing`] message, encoded as they are taken.
#[derive(Debug, Clone)]
pub struct Frames {
    out: Outgoing,
    chunk: usize,
    count: usize,
    next: usize,
    /// Message key of every fragment.
    key: Option<String>,
}

impl Iterator for Frames {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let i = self.next;
        if i >= self.count {
            return None;
        }
        self.next += 1;
        let out = &mut self.out;
        if self.count == 1 {
            return Some(publish_frame(&out.payload, &out.properties, &out.context, None));
        }
        let raw = &out.payload[i * self.chunk..((i + 1) * self.chunk).min(out.payload.len())];
        out.properties.insert(FRAGMENT.into(), Value::from(i as u64));
        out.properties
            .insert(NUM_FRAGMENTS.into(), Value::from(self.count as u64));
        Some(publish_frame(raw, &out.properties, &out.context, self.key.as_deref()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Frames {}

/// One publish frame (`{"payload": …, "properties": …, "context": …}`) with `raw` base64-encoded straight
/// into the frame: base64 text never needs JSON escapes, so it is neither copied twice nor scanned.
fn publish_frame(raw: &[u8], properties: &Map<String, Value>, context: &str, key: Option<&str>) -> String {
    let mut buf = Vec::with_capacity(raw.len() / 3 * 4 + 160);
    buf.extend_from_slice(br#"{"payload":""#);
    encode_payload_into(raw, &mut buf);
    buf.extend_from_slice(br#"","properties":"#);
    serde_json::to_writer(&mut buf, properties).expect("properties serialize");
    buf.extend_from_slice(br#","context":"#);
    serde_json::to_writer(&mut buf, context).expect("context serializes");
    if let Some(key) = key {
        buf.extend_from_slice(br#","key":"#);
        serde_json::to_writer(&mut buf, key).expect("key serializes");
    }
    buf.push(b'}');
    String::from_utf8(buf).expect("JSON is UTF-8")
}

/// Cut ASCII text into pieces of at most `width` bytes.
pub fn split_ascii(text: &str, width: usize) -> Vec<&str> {
    debug_assert!(text.is_ascii());
    let width = width.max(1);
    text.as_bytes()
        .chunks(width)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::envelope::{decode_payload, PublishFrame};

    fn props(pairs: &[(&str, &str)]) -> Properties {
        Properties(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn message_type_roundtrip() {
        for t in [
            MessageType::Ping,
            MessageType::Pong,
            MessageType::Request,
            MessageType::Response,
            MessageType::Log,
            MessageType::Info,
            MessageType::Progress,
            MessageType::ApiInfo,
        ] {
            assert_eq!(MessageType::parse(t.as_str()), Some(t));
        }
        assert_eq!(MessageType::parse("bogus"), None);
        assert_eq!(Status::parse("error"), Some(Status::Error));
    }

    #[test]
    fn meta_requires_the_three_properties() {
        let ok = RequestMeta::from_properties(
            &props(&[
                ("response_topic", "r"),
                ("requestContext", "1"),
                ("messageType", "ping"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(ok.context, "1");
        let (err, rt) = RequestMeta::from_properties(&props(&[("requestContext", "1")]), None).unwrap_err();
        assert_eq!(err, ProtocolError::MissingProperty(RESPONSE_TOPIC));
        assert_eq!(rt, None);
        let (err, rt) = RequestMeta::from_properties(&props(&[("response_topic", "r")]), None).unwrap_err();
        assert_eq!(err, ProtocolError::MissingProperty(REQUEST_CONTEXT));
        assert_eq!(rt.as_deref(), Some("r"));
        // context from the top level
        let m = RequestMeta::from_properties(&props(&[("response_topic", "r"), ("messageType", "ping")]), Some("9"))
            .unwrap();
        assert_eq!(m.context, "9");
    }

    #[test]
    fn fragment_properties_accept_ints_and_strings() {
        assert_eq!(
            parse_fragment(&props(&[("fragment", "1"), ("num_fragments", "3")])).unwrap(),
            Some((1, 3))
        );
        assert_eq!(parse_fragment(&props(&[])).unwrap(), None);
        assert!(parse_fragment(&props(&[("fragment", "3"), ("num_fragments", "3")])).is_err());
        assert!(parse_fragment(&props(&[("fragment", "x"), ("num_fragments", "3")])).is_err());
        assert!(parse_fragment(&props(&[("fragment", "0")])).is_err());
    }

    #[test]
    fn small_reply_is_one_frame() {
        let meta = RequestMeta {
            response_topic: "r".into(),
            context: "4".into(),
            message_type: "request".into(),
            fragment: None,
        };
        let mut out = Outgoing::reply(&meta, "src", MessageType::Response, Some(Status::Success));
        out.payload = b"\"HelloWorld\"".to_vec().into();
        let frames = out.into_frames(512_000);
        assert_eq!(frames.len(), 1);
        let f = PublishFrame::parse(&frames[0]).unwrap();
        assert_eq!(f.context.as_deref(), Some("4"));
        assert_eq!(f.properties.get("status"), Some("success"));
        assert_eq!(f.properties.get("source_topic"), Some("src"));
        assert_eq!(f.properties.get("fragment"), None);
        assert_eq!(
            decode_payload(f.payload.as_deref().unwrap()).unwrap(),
            b"\"HelloWorld\""
        );
    }

    #[test]
    fn large_reply_is_fragmented_like_the_reference() {
        let meta = RequestMeta {
            response_topic: "r".into(),
            context: "4".into(),
            message_type: "request".into(),
            fragment: None,
        };
        let mut out = Outgoing::reply(&meta, "src", MessageType::Response, Some(Status::Success));
        out.payload = vec![b'a'; 1000].into();
        let frames = out.into_frames(300);
        // base64 of 1000 bytes is 1336 chars → 5 pieces of ≤300 chars
        assert_eq!(frames.len(), 5);
        let mut joined = String::new();
        for (i, text) in frames.iter().enumerate() {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["properties"]["fragment"], Value::from(i as u64));
            assert_eq!(v["properties"]["num_fragments"], Value::from(5u64));
            let piece = v["payload"].as_str().unwrap();
            assert!(piece.len() <= 300);
            joined.push_str(piece);
        }
        assert_eq!(decode_payload(&joined).unwrap(), vec![b'a'; 1000]);
    }
}
