//! Frames of the Pulsar WebSocket API (v2): publish, producer ack, delivery, consumer commands.
//!
//! Incoming property values and `context` may be any JSON scalar (the reference client sends integers);
//! they are normalised to strings on the way in, as Pulsar's proxy does.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

use super::error::ProtocolError;

/// The base64 flavour used for payloads (standard alphabet, padded), SIMD-accelerated: payloads of
/// hundreds of megabytes pass through it several times per call.
pub const B64: base64_simd::Base64 = base64_simd::STANDARD;

/// Encode raw bytes as a base64 payload.
pub fn encode_payload(raw: &[u8]) -> String {
    B64.encode_to_string(raw)
}

/// Append the base64 text of `raw` to `out`.
pub fn encode_payload_into(raw: &[u8], out: &mut Vec<u8>) {
    B64.encode_append(raw, out);
}

/// The base64 text a payload carries: trailing line breaks are tolerated (some producers add one).
fn payload_text(payload: &str) -> &[u8] {
    payload.trim_end_matches(['\n', '\r']).as_bytes()
}

/// Decode a base64 payload into raw bytes.
pub fn decode_payload(payload: &str) -> Result<Vec<u8>, ProtocolError> {
    let text = payload_text(payload);
    B64.decode_to_vec(text)
        .map_err(|_| ProtocolError::InvalidBase64(describe_base64_error(text)))
}

/// Decode a base64 payload, appending the raw bytes to `out` (left as it was on error).
pub fn decode_payload_into(payload: &str, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let text = payload_text(payload);
    B64.decode_append(text, out)
        .map_err(|_| ProtocolError::InvalidBase64(describe_base64_error(text)))
}

/// Decode base64 text (whole quanta, nothing trimmed), appending the raw bytes to `out`.
pub fn decode_base64_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    B64.decode_append(text, out)
        .map_err(|_| ProtocolError::InvalidBase64(describe_base64_error(text)))
}

/// Check that `payload` is valid base64 without decoding it.
pub fn check_payload(payload: &str) -> Result<(), ProtocolError> {
    let text = payload_text(payload);
    B64.check(text)
        .map_err(|_| ProtocolError::InvalidBase64(describe_base64_error(text)))
}

/// What is wrong with base64 text the fast decoder refused (it does not say).
fn describe_base64_error(text: &[u8]) -> String {
    let data_len = text.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let is_alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    if let Some(i) = text[..data_len].iter().position(|&b| !is_alphabet(b)) {
        let b = text[i];
        return if b.is_ascii_graphic() {
            format!("invalid character '{}' at offset {i}", b as char)
        } else {
            format!("invalid byte {b:#04x} at offset {i}")
        };
    }
    if text.len() % 4 != 0 {
        return format!("length {} is not a multiple of 4", text.len());
    }
    if text.len() - data_len > 2 {
        return "too much padding".into();
    }
    "non-canonical trailing bits".into()
}

/// Message properties, normalised to string values. Kept as a small vector: DASF messages carry
/// fewer than ten properties, so a linear scan beats hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<(String, String)>);

impl Properties {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Set `key` to `value`, replacing an existing entry.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let idx = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(idx).1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A JSON scalar turned into the string Pulsar would forward (`null` becomes "").
fn scalar_to_string(value: serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Ok(String::new()),
        other => Err(format!("expected a JSON scalar, got {other}")),
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropsVisitor;
        impl<'de> Visitor<'de> for PropsVisitor {
            type Value = Properties;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of property names to scalar values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Properties, E> {
                Ok(Properties::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Properties, A::Error> {
                let mut out = Vec::with_capacity(access.size_hint().unwrap_or(8));
                while let Some((k, v)) = access.next_entry::<String, serde_json::Value>()? {
                    let v = scalar_to_string(v).map_err(|e| de::Error::custom(format!("property '{k}': {e}")))?;
                    out.push((k, v));
                }
                Ok(Properties(out))
            }
        }
        deserializer.deserialize_any(PropsVisitor)
    }
}

/// Deserialize an optional JSON scalar as an optional string (for `context`).
fn opt_scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value: Option<serde_json::Value> = Option::deserialize(deserializer)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => scalar_to_string(v).map(Some).map_err(de::Error::custom),
    }
}

/// Producer → broker: publish one message.
///
/// NOTE: the payload borrows from the frame's text unless it holds escapes (base64 never does): a large
/// message's fragments are not copied once more while parsed.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishFrame<'a> {
    /// Base64 payload; `None` when the field is missing (the broker delivers it as empty).
    #[serde(default, borrow)]
    pub payload: Option<Cow<'a, str>>,
    /// Message properties.
    #[serde(default)]
    pub properties: Properties,
    /// Opaque context echoed in the ack.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub context: Option<String>,
    /// Partition/ordering key.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub key: Option<String>,
}

impl<'a> PublishFrame<'a> {
    /// Parse a publish frame from text.
    pub fn parse(text: &'a str) -> Result<Self, ProtocolError> {
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidFrame(e.to_string()))
    }
}

/// Request header of a producer connection, an extension of ours that Pulsar and dasf-broker-django
/// ignore: `errors` asks the broker to answer only the publishes it refuses, `all` (the default) every one,
/// as Pulsar does. DASF callers read receipts only for refusals; the receipt of a successful publish cost
/// a frame, a read and often a wake-up per message for nothing.
pub const RECEIPTS_HEADER: &str = "x-dasf-receipts";

/// Broker → producer: the ack of one publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProducerAck {
    /// "ok" or an error code.
    pub result: String,
    /// The id given to the message (empty on errors).
    #[serde(rename = "messageId", default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Explanation of an error.
    #[serde(rename = "errorMsg", default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
    /// The producer's context, echoed as a string.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "opt_scalar")]
    pub context: Option<String>,
}

impl ProducerAck {
    /// A successful ack.
    pub fn ok(message_id: String, context: Option<String>) -> Self {
        Self {
            result: "ok".into(),
            message_id: Some(message_id),
            error_msg: None,
            context,
        }
    }

    /// An error ack with a Pulsar-style result code.
    pub fn error(code: &str, msg: impl Into<String>, context: Option<String>) -> Self {
        Self {
            result: code.into(),
            message_id: None,
            error_msg: Some(msg.into()),
            context,
        }
    }

    /// Whether this ack reports success.
    pub fn is_ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Broker → consumer: one delivered message.
/// The payload borrows from the frame's text like [`PublishFrame`]'s.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery<'a> {
    /// Opaque message id, used to ack.
    #[serde(rename = "messageId", deserialize_with = "scalar")]
    pub message_id: String,
    /// Base64 payload.
    #[serde(default, borrow)]
    pub payload: Cow<'a, str>,
    /// Message properties.
    #[serde(default)]
    pub properties: Properties,
    /// Top-level context (only some brokers forward it).
    #[serde(default, deserialize_with = "opt_scalar")]
    pub context: Option<String>,
}

fn scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    scalar_to_string(value).map_err(de::Error::custom)
}

impl<'a> Delivery<'a> {
    /// Parse a delivery frame from text.
    pub fn parse(text: &'a str) -> Result<Self, ProtocolError> {
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidFrame(e.to_string()))
    }
}

/// Outgoing delivery frame as the broker writes it.
#[derive(Debug)]
pub struct DeliveryOut<'a> {
    /// Opaque message id.
    pub message_id: &'a str,
    /// Base64 payload.
    pub payload: &'a str,
    /// Properties, values as strings.
    pub properties: &'a Properties,
    /// Publish time, ISO 8601.
    pub publish_time: &'a str,
    /// How often this message was delivered before.
    pub redelivery_count: u32,
    /// Key, when the producer set one.
    pub key: Option<&'a str>,
}

impl DeliveryOut<'_> {
    /// The frame's JSON text. A payload of plain base64 characters (what [`check_payload`] accepted,
    /// minus a trailing line break) is copied as it is, without the JSON escape scan.
    pub fn to_json(&self) -> String {
        // NOTE: a fold without early exit, so that it vectorizes (an `all` does not)
        let needs_escape = (self.payload.bytes()).fold(false, |acc, b| acc | (b == b'"') | (b == b'\\') | (b < 0x20));
        let raw_ok = !needs_escape;
        let mut buf = Vec::with_capacity(self.payload.len() + 200);
        buf.extend_from_slice(br#"{"messageId":"#);
        serde_json::to_writer(&mut buf, self.message_id).expect("serializes");
        buf.extend_from_slice(br#","payload":"#);
        if raw_ok {
            buf.push(b'"');
            buf.extend_from_slice(self.payload.as_bytes());
            buf.push(b'"');
        } else {
            serde_json::to_writer(&mut buf, self.payload).expect("serializes");
        }
        buf.extend_from_slice(br#","properties":"#);
        serde_json::to_writer(&mut buf, self.properties).expect("serializes");
        buf.extend_from_slice(br#","publishTime":"#);
        serde_json::to_writer(&mut buf, self.publish_time).expect("serializes");
        buf.extend_from_slice(format!(r#","redeliveryCount":{}"#, self.redelivery_count).as_bytes());
        if let Some(key) = self.key {
            buf.extend_from_slice(br#","key":"#);
            serde_json::to_writer(&mut buf, key).expect("serializes");
        }
        buf.push(b'}');
        String::from_utf8(buf).expect("JSON is UTF-8")
    }
}

/// Consumer → broker commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerCommand {
    /// Acknowledge a message.
    Ack(String),
    /// Negatively acknowledge a message (redeliver it).
    NegativeAck(String),
    /// Grant permits (pull mode).
    Permit(u64),
    /// Check whether the end of the topic is reached (reader semantic).
    IsEndOfTopic,
}

impl ConsumerCommand {
    /// The frame acknowledging `message_id`: `{"messageId": "<id>"}`.
    pub fn ack_frame(message_id: &str) -> String {
        serde_json::json!({ "messageId": message_id }).to_string()
    }
}

#[derive(Deserialize)]
struct RawCommand {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "messageId", default, deserialize_with = "opt_scalar")]
    message_id: Option<String>,
    #[serde(rename = "permitMessages", default)]
    permit_messages: Option<u64>,
}

impl ConsumerCommand {
    /// Parse a consumer command frame.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let raw: RawCommand = serde_json::from_str(text).map_err(|e| ProtocolError::InvalidFrame(e.to_string()))?;
        let need_id = |id: Option<String>| id.ok_or_else(|| ProtocolError::InvalidFrame("missing messageId".into()));
        match raw.kind.as_deref() {
            None | Some("") | Some("ack") => Ok(Self::Ack(need_id(raw.message_id)?)),
            Some("negativeAcknowledge") => Ok(Self::NegativeAck(need_id(raw.message_id)?)),
            Some("permit") => raw
                .permit_messages
                .map(Self::Permit)
                .ok_or_else(|| ProtocolError::InvalidFrame("missing permitMessages".into())),
            Some("isEndOfTopic") => Ok(Self::IsEndOfTopic),
            Some(other) => Err(ProtocolError::InvalidFrame(format!("unknown command type '{other}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_accepts_scalar_properties_and_context() {
        let f = PublishFrame::parse(
            r#"{"payload":"aGk=","properties":{"requestContext":3,"flag":true,"s":"x","n":null},"context":7}"#,
        )
        .unwrap();
        assert_eq!(f.properties.get("requestContext"), Some("3"));
        assert_eq!(f.properties.get("flag"), Some("true"));
        assert_eq!(f.properties.get("s"), Some("x"));
        assert_eq!(f.properties.get("n"), Some(""));
        assert_eq!(f.context.as_deref(), Some("7"));
        assert_eq!(f.payload.as_deref(), Some("aGk="));
    }

    #[test]
    fn publish_rejects_nested_property_values() {
        let err = PublishFrame::parse(r#"{"payload":"","properties":{"a":{"b":1}}}"#).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidFrame(m) if m.contains("property 'a'")));
    }

    #[test]
    fn publish_without_payload_parses_with_none() {
        let f = PublishFrame::parse(r#"{"properties":{}}"#).unwrap();
        assert!(f.payload.is_none());
        assert!(PublishFrame::parse("not json").is_err());
    }

    #[test]
    fn ack_roundtrip() {
        let ack = ProducerAck::ok("id1".into(), Some("5".into()));
        let text = serde_json::to_string(&ack).unwrap();
        assert_eq!(text, r#"{"result":"ok","messageId":"id1","context":"5"}"#);
        let back: ProducerAck = serde_json::from_str(r#"{"result":"ok","messageId":"x","context":5}"#).unwrap();
        assert_eq!(back.context.as_deref(), Some("5"));
        let err = ProducerAck::error("send-error", "boom", None);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"result":"send-error","errorMsg":"boom"}"#
        );
    }

    #[test]
    fn delivery_roundtrip() {
        let mut props = Properties::default();
        props.set("messageType", "request");
        let out = DeliveryOut {
            message_id: "m1",
            payload: "aGk=",
            properties: &props,
            publish_time: "2026-01-01T00:00:00.000Z",
            redelivery_count: 0,
            key: None,
        };
        let text = out.to_json();
        assert_eq!(
            text,
            r#"{"messageId":"m1","payload":"aGk=","properties":{"messageType":"request"},"publishTime":"2026-01-01T00:00:00.000Z","redeliveryCount":0}"#
        );
        let d = Delivery::parse(&text).unwrap();
        assert_eq!(d.message_id, "m1");
        assert_eq!(d.properties.get("messageType"), Some("request"));
        assert_eq!(decode_payload(&d.payload).unwrap(), b"hi");
        // a payload that needs escapes (a trailing line break) still makes valid JSON; so does a key
        let odd = DeliveryOut {
            payload: "aGk=\r\n",
            key: Some("k\"1"),
            redelivery_count: 2,
            ..out
        };
        let d: serde_json::Value = serde_json::from_str(&odd.to_json()).unwrap();
        assert_eq!(d["payload"], "aGk=\r\n");
        assert_eq!(d["key"], "k\"1");
        assert_eq!(d["redeliveryCount"], 2);
    }

    #[test]
    fn consumer_commands() {
        assert_eq!(
            ConsumerCommand::parse(r#"{"messageId":"a"}"#).unwrap(),
            ConsumerCommand::Ack("a".into())
        );
        assert_eq!(
            ConsumerCommand::parse(r#"{"type":"negativeAcknowledge","messageId":"a"}"#).unwrap(),
            ConsumerCommand::NegativeAck("a".into())
        );
        assert_eq!(
            ConsumerCommand::parse(r#"{"type":"permit","permitMessages":3}"#).unwrap(),
            ConsumerCommand::Permit(3)
        );
        assert!(ConsumerCommand::parse(r#"{"type":"bogus","messageId":"a"}"#).is_err());
        assert!(ConsumerCommand::parse(r#"{}"#).is_err());
        assert!(ConsumerCommand::parse("nope").is_err());
        let ack = ConsumerCommand::ack_frame("a\"b");
        assert_eq!(
            ConsumerCommand::parse(&ack).unwrap(),
            ConsumerCommand::Ack("a\"b".into())
        );
    }

    #[test]
    fn base64_errors_are_reported() {
        assert!(matches!(decode_payload("###"), Err(ProtocolError::InvalidBase64(_))));
        assert_eq!(decode_payload(&encode_payload(b"abc")).unwrap(), b"abc");
        let msg = |p: &str| match check_payload(p) {
            Err(ProtocolError::InvalidBase64(m)) => m,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(msg("ab#d"), "invalid character '#' at offset 2");
        assert_eq!(msg("ab\u{1}d"), "invalid byte 0x01 at offset 2");
        assert_eq!(msg("abcde"), "length 5 is not a multiple of 4");
        assert_eq!(msg("a==="), "too much padding");
        assert_eq!(msg("YR=="), "non-canonical trailing bits");
        assert!(check_payload("YQ==\n").is_ok());
        assert!(check_payload("").is_ok());
        let mut out = b"x".to_vec();
        decode_payload_into("YWJj", &mut out).unwrap();
        assert!(decode_payload_into("Y", &mut out).is_err());
        assert_eq!(out, b"xabc");
        let mut enc = b"<".to_vec();
        encode_payload_into(b"ab", &mut enc);
        assert_eq!(enc, b"<YWI=");
    }
}
