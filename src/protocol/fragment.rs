//! Reassembly of fragmented messages.
//!
//! A fragmented message is the base64 text of the whole payload cut into `num_fragments` pieces; each
//! piece travels as its own message with `fragment` (0-based) and `num_fragments` properties. Pieces may
//! arrive out of order or twice. Memory is bounded (total buffered bytes and number of partial messages)
//! and so is time (partials older than `max_age` are dropped and reported by [`Reassembler::expire`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::envelope::{decode_base64_into, decode_payload_into};
use super::error::ProtocolError;

/// Most bytes reserved for a message's payload when its first piece arrives (it grows from there).
const RESERVE_CAP: usize = 16 << 20;

/// Bounds of a [`Reassembler`].
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Maximum base64 bytes buffered across all partial messages.
    pub max_bytes: usize,
    /// Maximum number of partial messages at once.
    pub max_partials: usize,
    /// Maximum number of fragments one message may announce.
    pub max_fragments: u32,
    /// A partial message older than this is dropped.
    pub max_age: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_partials: 1_000,
            max_fragments: 100_000,
            max_age: Duration::from_secs(300),
        }
    }
}

/// One message being reassembled. Pieces are decoded as soon as all earlier ones are in, so a message
/// arriving in order is never held as text; pieces that arrive early wait for their turn.
#[derive(Debug)]
struct Partial {
    /// The number of pieces the message announced.
    count: u32,
    /// Pieces that arrived before their turn, by index (only those: a message that merely announces many
    /// pieces costs nothing until they come).
    early: HashMap<u32, String>,
    /// Index of the next piece to decode (all before it are decoded).
    next: u32,
    /// The payload decoded so far.
    raw: Vec<u8>,
    /// Base64 characters of decoded pieces that did not fill a quantum of 4 (another producer may cut
    /// the text anywhere); decoded with the next piece.
    carry: Vec<u8>,
    received: u32,
    bytes: usize,
    started: Instant,
}

impl Partial {
    /// Decode piece `next` (and any early pieces it unblocks); `Ok(true)` when the message is complete.
    fn advance(&mut self, piece: &str) -> Result<bool, ProtocolError> {
        self.decode(piece)?;
        while let Some(p) = self.early.remove(&self.next) {
            self.decode(&p)?;
        }
        Ok(self.next == self.count)
    }

    fn decode(&mut self, piece: &str) -> Result<(), ProtocolError> {
        self.next += 1;
        let last = self.next == self.count;
        let joined;
        let text: &[u8] = if self.carry.is_empty() {
            piece.as_bytes()
        } else {
            self.carry.extend_from_slice(piece.as_bytes());
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        if last {
            let text = std::str::from_utf8(text).map_err(|e| ProtocolError::InvalidBase64(e.to_string()))?;
            return decode_payload_into(text, &mut self.raw);
        }
        let whole = text.len() - text.len() % 4;
        let (now, later) = text.split_at(whole);
        if now.last() == Some(&b'=') {
            return Err(ProtocolError::InvalidBase64(
                "padding before the end of the payload".into(),
            ));
        }
        decode_base64_into(now, &mut self.raw)?;
        self.carry = later.to_vec();
        Ok(())
    }
}

/// Outcome of feeding one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// More fragments are needed.
    Pending,
    /// The message is complete: its decoded payload.
    Complete(Vec<u8>),
    /// The fragment belongs to a message that already failed (reported once, by the error that ended
    /// it); it is dropped.
    Discarded,
}

/// Buffers fragments per key until each message is complete.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: HashMap<String, Partial>,
    bytes: usize,
    /// Messages that failed, and when: their later fragments are dropped without another error.
    failed: HashMap<String, Instant>,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            partials: HashMap::new(),
            bytes: 0,
            failed: HashMap::new(),
        }
    }

    /// Bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of partial messages.
    pub fn pending(&self) -> usize {
        self.partials.len()
    }

    /// Feed fragment `index` of `count` for message `key`. Duplicates are ignored; a fragment that
    /// contradicts the announced count or breaks a limit is an error, and the partial is dropped.
    pub fn feed(&mut self, key: &str, index: u32, count: u32, piece: &str, now: Instant) -> Result<Fed, ProtocolError> {
        if self.failed.contains_key(key) {
            return Ok(Fed::Discarded);
        }
        let fed = self.feed_checked(key, index, count, piece, now);
        if fed.is_err() {
            // remember it (bounded like the partials): its other fragments must not start it over
            if self.failed.len() >= self.limits.max_partials {
                let max_age = self.limits.max_age;
                self.failed
                    .retain(|_, at| now.saturating_duration_since(*at) <= max_age);
                if self.failed.len() >= self.limits.max_partials {
                    self.failed.clear();
                }
            }
            self.failed.insert(key.to_owned(), now);
        }
        fed
    }

    fn feed_checked(
        &mut self,
        key: &str,
        index: u32,
        count: u32,
        piece: &str,
        now: Instant,
    ) -> Result<Fed, ProtocolError> {
        if count == 0 || index >= count {
            return Err(ProtocolError::Fragment(format!(
                "fragment {index} of {count} is out of range"
            )));
        }
        if count > self.limits.max_fragments {
            return Err(ProtocolError::Fragment(format!(
                "{count} fragments announced, at most {} allowed",
                self.limits.max_fragments
            )));
        }
        if !self.partials.contains_key(key) && self.partials.len() >= self.limits.max_partials {
            return Err(ProtocolError::Fragment(format!(
                "too many incomplete messages ({}), fragment dropped",
                self.limits.max_partials
            )));
        }
        // a message that cannot fit is refused at its first fragment, not after buffering up to the limit
        // (the least it can be: this piece's size for every fragment but a one-character last one)
        let least = (piece.len() as u64)
            .saturating_mul(u64::from(count - 1))
            .saturating_add(1);
        if index + 1 < count && least > self.limits.max_bytes as u64 {
            self.drop_key(key);
            let mb = |b: u64| b as f64 * 0.75 / 1e6;
            return Err(ProtocolError::Fragment(format!(
                "message of at least {:.1} MB ({count} fragments) exceeds the reassembly limit of {:.1} MB \
                 (max_reassembly_size)",
                mb(least),
                mb(self.limits.max_bytes as u64)
            )));
        }
        if self.bytes + piece.len() > self.limits.max_bytes {
            self.drop_key(key);
            return Err(ProtocolError::Fragment(format!(
                "the messages being reassembled at once exceed the reassembly limit of {:.1} MB \
                 (max_reassembly_size, shared by all of them)",
                self.limits.max_bytes as f64 * 0.75 / 1e6
            )));
        }
        let partial = self.partials.entry(key.to_owned()).or_insert_with(|| Partial {
            count,
            early: HashMap::new(),
            next: 0,
            raw: Vec::new(),
            carry: Vec::new(),
            received: 0,
            bytes: 0,
            started: now,
        });
        if partial.count != count {
            let announced = partial.count;
            self.drop_key(key);
            return Err(ProtocolError::Fragment(format!(
                "fragment announces {count} fragments, earlier ones announced {announced}"
            )));
        }
        if index < partial.next || partial.early.contains_key(&index) {
            return Ok(Fed::Pending); // a duplicate
        }
        partial.bytes += piece.len();
        self.bytes += piece.len();
        partial.received += 1;
        if index > partial.next {
            partial.early.insert(index, piece.to_owned());
            return Ok(Fed::Pending);
        }
        if partial.raw.capacity() == 0 {
            // room for the whole message as announced, up to a cap: an announcement costs no more than that
            // until its pieces arrive
            partial
                .raw
                .reserve((piece.len() / 4 * 3).saturating_mul(count as usize).min(RESERVE_CAP));
        }
        match partial.advance(piece) {
            Ok(false) => Ok(Fed::Pending),
            Ok(true) => {
                let partial = self.partials.remove(key).expect("present");
                self.bytes -= partial.bytes;
                Ok(Fed::Complete(partial.raw))
            }
            Err(e) => {
                self.drop_key(key);
                Err(e)
            }
        }
    }

    /// Drop every partial message started before `now - max_age`; returns their keys.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let max_age = self.limits.max_age;
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) <= max_age);
        let old: Vec<String> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.started) > max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.drop_key(k);
        }
        old
    }

    /// Forget a partial message (e.g. when its call timed out).
    pub fn drop_key(&mut self, key: &str) {
        if let Some(p) = self.partials.remove(key) {
            self.bytes -= p.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::dasf::split_ascii;
    use crate::protocol::envelope::encode_payload;

    fn pieces(data: &[u8], width: usize) -> Vec<String> {
        split_ascii(&encode_payload(data), width)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn in_order() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let ps = pieces(&data, 1000);
        let n = ps.len() as u32;
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        for (i, p) in ps.into_iter().enumerate() {
            let fed = r.feed("k", i as u32, n, &p, now).unwrap();
            if (i as u32) < n - 1 {
                assert_eq!(fed, Fed::Pending);
            } else {
                assert_eq!(fed, Fed::Complete(data.clone()));
            }
        }
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn pieces_cut_inside_base64_quanta() {
        // another producer may cut the text anywhere: the pieces are joined before decoding
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
        for width in [1, 5, 7, 998, 1001] {
            let ps = pieces(&data, width);
            let n = ps.len() as u32;
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let now = Instant::now();
            let mut out = None;
            for (i, p) in ps.into_iter().enumerate().rev() {
                if let Fed::Complete(v) = r.feed("k", i as u32, n, &p, now).unwrap() {
                    out = Some(v);
                }
            }
            assert_eq!(out.as_deref(), Some(&data[..]), "width {width}");
        }
    }

    #[test]
    fn shuffled_with_duplicates_many_seeds() {
        // a small deterministic property test: many permutations, with duplicates, interleaved keys
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let ps = pieces(&data, 300);
        let n = ps.len() as u32;
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut order: Vec<u32> = (0..n).collect();
            rng.shuffle(&mut order);
            // add some duplicates
            for _ in 0..5 {
                let d = order[rng.usize(..order.len())];
                let at = rng.usize(..order.len());
                order.insert(at, d);
            }
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let now = Instant::now();
            let mut done = None;
            for idx in order {
                // interleave with another message that never completes
                r.feed("other", 0, 2, "QUJD", now).unwrap();
                if let Fed::Complete(v) = r.feed("k", idx, n, &ps[idx as usize], now).unwrap() {
                    assert!(done.is_none(), "completed twice");
                    done = Some(v);
                }
            }
            assert_eq!(done.as_deref(), Some(&data[..]), "seed {seed}");
            // "other" stays pending; a late duplicate of "k" may open a partial that only expiry removes
            assert!(r.pending() == 1 || r.pending() == 2);
        }
    }

    #[test]
    fn gap_expires() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_age: Duration::from_secs(1),
            ..Default::default()
        });
        let t0 = Instant::now();
        r.feed("k", 0, 3, "QUFB", t0).unwrap();
        r.feed("k", 2, 3, "QUFB", t0).unwrap();
        assert!(r.expire(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), vec!["k".to_string()]);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn limits_are_enforced() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_bytes: 10,
            max_partials: 1,
            ..Default::default()
        });
        let now = Instant::now();
        r.feed("a", 0, 2, "QUFB", now).unwrap();
        assert!(r.feed("b", 0, 2, "QUFB", now).is_err(), "second partial refused");
        assert!(r.feed("a", 1, 2, "QUFBQUFBQUFB", now).is_err(), "byte limit");
        assert_eq!(r.buffered_bytes(), 0);
        assert!(r.feed("c", 3, 3, "x", now).is_err());
        let mut r = Reassembler::new(ReassemblyLimits::default());
        r.feed("a", 0, 2, "QUFB", now).unwrap();
        assert!(r.feed("a", 1, 3, "QUFB", now).is_err(), "count mismatch");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn an_oversize_message_is_refused_at_once_and_its_other_fragments_dropped() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_bytes: 4_000_000,
            ..Default::default()
        });
        let now = Instant::now();
        let piece = "QUFB".repeat(250_000); // 1 MB of base64
        match r.feed("big", 0, 8, &piece, now) {
            Err(ProtocolError::Fragment(m)) => assert!(m.contains("exceeds the reassembly limit of 3.0 MB"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
        for i in 1..8 {
            assert_eq!(r.feed("big", i, 8, &piece, now).unwrap(), Fed::Discarded);
        }
        assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
        // others are unaffected; the failure is forgotten after max_age
        assert_eq!(
            r.feed("small", 0, 1, "QUFB", now).unwrap(),
            Fed::Complete(b"AAA".to_vec())
        );
        r.expire(now + Duration::from_secs(3600));
        assert!(r.feed("big", 0, 8, &piece, now + Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn corrupt_base64_is_an_error_not_a_panic() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        r.feed("a", 0, 2, "QU", now).unwrap();
        assert!(matches!(
            r.feed("a", 1, 2, "!!", now),
            Err(ProtocolError::InvalidBase64(_))
        ));
        // found in the middle: the message is dropped at once, nothing stays buffered
        r.feed("b", 2, 3, "QUJD", now).unwrap();
        assert!(matches!(
            r.feed("b", 0, 3, "QQ==", now),
            Err(ProtocolError::InvalidBase64(m)) if m.contains("padding")
        ));
        assert!(matches!(
            r.feed("c", 0, 3, "QU#D", now),
            Err(ProtocolError::InvalidBase64(m)) if m.contains("'#' at offset 2")
        ));
        assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
    }
}
