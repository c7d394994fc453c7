//! Subscriptions: which consumer gets the next message, and what waits while nobody is connected.
//! The choice is a small pure policy (`pick`) with tests beside it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::topic::Message;

/// Subscription types of Pulsar's WebSocket API that we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    /// One consumer; a second is refused.
    Exclusive,
    /// To the consumer holding the fewest messages, round-robin among equals (see [`pick`]).
    Shared,
    /// One active consumer (the first connected), others stand by.
    Failover,
}

impl SubType {
    /// Parse the `subscriptionType` query value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Exclusive" => Some(Self::Exclusive),
            "Shared" => Some(Self::Shared),
            "Failover" => Some(Self::Failover),
            _ => None,
        }
    }

    /// The name as Pulsar spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exclusive => "Exclusive",
            Self::Shared => "Shared",
            Self::Failover => "Failover",
        }
    }
}

/// One message on its way to a consumer.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The message.
    pub msg: Arc<Message>,
    /// How often it was delivered before.
    pub redelivery: u32,
}

/// A connected consumer as a subscription sees it.
#[derive(Debug)]
pub struct ConsumerSlot {
    pub id: u64,
    pub tx: mpsc::Sender<Dispatch>,
    /// Messages delivered to this consumer and not yet acked (kept by the consumer's task).
    pub unacked: Arc<AtomicUsize>,
}

impl ConsumerSlot {
    /// `None` when its queue is full; else how many messages it holds: queued for it, or delivered and not
    /// yet acked.
    pub fn load(&self) -> Option<usize> {
        let free = self.tx.capacity();
        (free > 0).then(|| self.tx.max_capacity() - free + self.unacked.load(Ordering::Relaxed))
    }
}

/// Messages waiting for a consumer, with the bytes of their payloads counted.
#[derive(Debug, Default)]
pub struct Backlog {
    queue: VecDeque<Dispatch>,
    bytes: usize,
}

impl Backlog {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Payload bytes of the messages waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push_back(&mut self, d: Dispatch) {
        self.bytes += d.msg.payload.len();
        self.queue.push_back(d);
    }

    pub fn push_front(&mut self, d: Dispatch) {
        self.bytes += d.msg.payload.len();
        self.queue.push_front(d);
    }

    pub fn pop_front(&mut self) -> Option<Dispatch> {
        let d = self.queue.pop_front()?;
        self.bytes -= d.msg.payload.len();
        Some(d)
    }
}

/// How much a subscription keeps for consumers that are not there or cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimit {
    pub messages: usize,
    pub bytes: usize,
}

impl BacklogLimit {
    /// Would `backlog` be over the limit with one more message of `bytes`?
    pub fn exceeded_by(&self, backlog: &Backlog, bytes: usize) -> bool {
        backlog.len() >= self.messages || backlog.bytes() + bytes > self.bytes
    }
}

/// The consumers that recent message keys went to (at most [`Sticky::CAP`] keys, the oldest forgotten).
#[derive(Debug, Default)]
pub struct Sticky {
    to: HashMap<String, u64>,
    order: VecDeque<String>,
}

impl Sticky {
    pub const CAP: usize = 4096;

    /// The consumer id `key` went to.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.to.get(key).copied()
    }

    /// Remember that `key` goes to consumer `id`.
    pub fn set(&mut self, key: &str, id: u64) {
        if self.to.insert(key.to_owned(), id).is_none() {
            self.order.push_back(key.to_owned());
            if self.order.len() > Self::CAP {
                if let Some(oldest) = self.order.pop_front() {
                    self.to.remove(&oldest);
                }
            }
        }
    }
}

/// Mutable state of a subscription (behind the subscription's lock).
#[derive(Debug)]
pub struct SubState {
    pub kind: SubType,
    pub consumers: Vec<ConsumerSlot>,
    pub rr: usize,
    /// Messages waiting for a consumer (persistent topics only).
    pub backlog: Backlog,
    /// Messages dropped from the backlog of this subscription while it had no consumer (see
    /// `Topic::publish`).
    pub evicted: u64,
    /// Shared: the consumer each recent message key went to (see [`SubState::choose`]).
    pub sticky: Sticky,
}

impl SubState {
    /// Where a message with `key` goes. In a Shared subscription, messages with a key stay with the
    /// consumer that got the key's first one (while it is connected and the key is among the last
    /// [`Sticky::CAP`]): the fragments of one DASF request share a key, and only the replica that holds the
    /// others can put them together. Everything else by [`pick`].
    pub fn choose(&mut self, key: Option<&str>) -> Pick {
        let consumers = &self.consumers;
        let load = |i: usize| consumers[i].load();
        let Some(key) = key.filter(|_| self.kind == SubType::Shared) else {
            return pick(self.kind, consumers.len(), &mut self.rr, load);
        };
        if let Some(i) = self
            .sticky
            .get(key)
            .and_then(|id| consumers.iter().position(|c| c.id == id))
        {
            return if load(i).is_some() {
                Pick::Ready(i)
            } else {
                Pick::Wait(i)
            };
        }
        let chosen = pick(self.kind, consumers.len(), &mut self.rr, load);
        if let Pick::Ready(i) | Pick::Wait(i) = chosen {
            self.sticky.set(key, consumers[i].id);
        }
        chosen
    }
}

/// Where the next message goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// A consumer with free capacity: index into `consumers`.
    Ready(usize),
    /// All candidate queues are full: wait on this one.
    Wait(usize),
    /// No consumer connected.
    Nobody,
}

/// Choose a consumer. `load(i)` is `None` when consumer `i` cannot take a message now, else how many
/// messages it holds (see [`ConsumerSlot::load`]).
///
/// Shared goes to the least loaded consumer with room, round-robin among equals. A DASF backend acks a
/// request when a worker takes it, so what it holds is what waits for a worker: a replica whose workers are
/// all busy (a long computation) soon holds more than an idle one and is passed over, where plain
/// round-robin (Pulsar's) would keep handing it every n-th request to wait behind the long one.
pub fn pick(kind: SubType, n: usize, rr: &mut usize, load: impl Fn(usize) -> Option<usize>) -> Pick {
    if n == 0 {
        return Pick::Nobody;
    }
    match kind {
        // Exclusive has one consumer; Failover's active consumer is the oldest one.
        SubType::Exclusive | SubType::Failover => {
            if load(0).is_some() {
                Pick::Ready(0)
            } else {
                Pick::Wait(0)
            }
        }
        SubType::Shared => {
            let start = *rr % n;
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                let Some(held) = load(i) else { continue };
                if best.is_none_or(|(_, least)| held < least) {
                    best = Some((i, held));
                    if held == 0 {
                        break;
                    }
                }
            }
            match best {
                Some((i, _)) => {
                    *rr = i + 1;
                    Pick::Ready(i)
                }
                None => {
                    *rr = start + 1;
                    Pick::Wait(start)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_round_robin() {
        let mut rr = 0;
        let picks: Vec<Pick> = (0..6).map(|_| pick(SubType::Shared, 3, &mut rr, |_| Some(0))).collect();
        assert_eq!(
            picks,
            vec![
                Pick::Ready(0),
                Pick::Ready(1),
                Pick::Ready(2),
                Pick::Ready(0),
                Pick::Ready(1),
                Pick::Ready(2)
            ]
        );
    }

    #[test]
    fn shared_skips_full_consumers() {
        let mut rr = 0;
        let only_2 = |i: usize| (i == 2).then_some(0);
        assert_eq!(pick(SubType::Shared, 3, &mut rr, only_2), Pick::Ready(2));
        assert_eq!(pick(SubType::Shared, 3, &mut rr, only_2), Pick::Ready(2));
        assert_eq!(pick(SubType::Shared, 3, &mut rr, |_| None), Pick::Wait(0));
    }

    #[test]
    fn shared_prefers_the_least_loaded_and_round_robins_among_equals() {
        let mut rr = 0;
        // consumer 0 holds 2 (busy), 1 and 2 hold 1: never 0, alternately 1 and 2
        let loads = [2, 1, 1];
        let picks: Vec<Pick> = (0..4)
            .map(|_| pick(SubType::Shared, 3, &mut rr, |i| Some(loads[i])))
            .collect();
        assert_eq!(picks, [Pick::Ready(1), Pick::Ready(2), Pick::Ready(1), Pick::Ready(2)]);
        // a full consumer is passed over even when it holds the least
        let mut rr = 0;
        assert_eq!(
            pick(SubType::Shared, 2, &mut rr, |i| [None, Some(5)][i]),
            Pick::Ready(1)
        );
    }

    #[test]
    fn exclusive_and_failover_use_the_first() {
        let mut rr = 0;
        assert_eq!(pick(SubType::Failover, 2, &mut rr, |_| Some(7)), Pick::Ready(0));
        assert_eq!(pick(SubType::Failover, 2, &mut rr, |_| None), Pick::Wait(0));
        assert_eq!(pick(SubType::Exclusive, 0, &mut rr, |_| Some(0)), Pick::Nobody);
    }

    #[test]
    fn parse_types() {
        assert_eq!(SubType::parse("Shared"), Some(SubType::Shared));
        assert_eq!(SubType::parse("Key_Shared"), None);
        assert_eq!(SubType::Failover.as_str(), "Failover");
    }
}
