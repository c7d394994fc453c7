//! Reassembly of fragmented messages.
//!
//! A fragmented message is the base64 text of the whole payload cut into `num_fragments` pieces; each
//! piece travels as its own message with `fragment` (0-based) and `num_fragments` properties. Pieces may
//! arrive out of order or twice. Memory is bounded (total buffered bytes and number of partial messages)
//! and so is time (partials older than `max_age` are dropped and reported by [`Reassembler::expire`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::envelope::decode_payload;
use super::error::ProtocolError;

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

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<String>>,
    received: u32,
    bytes: usize,
    started: Instant,
}

/// Outcome of feeding one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// More fragments are needed.
    Pending,
    /// The message is complete: its decoded payload.
    Complete(Vec<u8>),
}

/// Buffers fragments per key until each message is complete.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: HashMap<String, Partial>,
    bytes: usize,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            partials: HashMap::new(),
            bytes: 0,
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
    pub fn feed(
        &mut self,
        key: &str,
        index: u32,
        count: u32,
        piece: String,
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
        if self.bytes + piece.len() > self.limits.max_bytes {
            self.drop_key(key);
            return Err(ProtocolError::Fragment(format!(
                "reassembly buffer limit of {} bytes exceeded",
                self.limits.max_bytes
            )));
        }
        let partial = self.partials.entry(key.to_owned()).or_insert_with(|| Partial {
            parts: vec![None; count as usize],
            received: 0,
            bytes: 0,
            started: now,
        });
        if partial.parts.len() != count as usize {
            let announced = partial.parts.len();
            self.drop_key(key);
            return Err(ProtocolError::Fragment(format!(
                "fragment announces {count} fragments, earlier ones announced {announced}"
            )));
        }
        let slot = &mut partial.parts[index as usize];
        if slot.is_some() {
            return Ok(Fed::Pending);
        }
        partial.bytes += piece.len();
        self.bytes += piece.len();
        *slot = Some(piece);
        partial.received += 1;
        if partial.received < count {
            return Ok(Fed::Pending);
        }
        let partial = self.partials.remove(key).expect("present");
        self.bytes -= partial.bytes;
        let mut text = String::with_capacity(partial.bytes);
        for p in partial.parts.into_iter().flatten() {
            text.push_str(&p);
        }
        decode_payload(&text).map(Fed::Complete)
    }

    /// Drop every partial message started before `now - max_age`; returns their keys.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let max_age = self.limits.max_age;
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
            let fed = r.feed("k", i as u32, n, p, now).unwrap();
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
                r.feed("other", 0, 2, "QQ==".into(), now).unwrap();
                if let Fed::Complete(v) = r.feed("k", idx, n, ps[idx as usize].clone(), now).unwrap() {
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
        r.feed("k", 0, 3, "QUFB".into(), t0).unwrap();
        r.feed("k", 2, 3, "QUFB".into(), t0).unwrap();
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
        r.feed("a", 0, 2, "QUFB".into(), now).unwrap();
        assert!(r.feed("b", 0, 2, "QUFB".into(), now).is_err(), "second partial refused");
        assert!(r.feed("a", 1, 2, "QUFBQUFBQUFB".into(), now).is_err(), "byte limit");
        assert_eq!(r.buffered_bytes(), 0);
        assert!(r.feed("c", 3, 3, "x".into(), now).is_err());
        let mut r = Reassembler::new(ReassemblyLimits::default());
        r.feed("a", 0, 2, "QUFB".into(), now).unwrap();
        assert!(r.feed("a", 1, 3, "QUFB".into(), now).is_err(), "count mismatch");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn corrupt_base64_is_an_error_not_a_panic() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        r.feed("a", 0, 2, "QU".into(), now).unwrap();
        assert!(matches!(
            r.feed("a", 1, 2, "!!".into(), now),
            Err(ProtocolError::InvalidBase64(_))
        ));
    }
}
