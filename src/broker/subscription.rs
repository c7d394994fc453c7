//! Subscriptions: which consumer gets the next message, and what waits while nobody is connected.
//! The choice is a small pure policy (`pick`) with tests beside it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::topic::Message;

/// Subscription types of Pulsar's WebSocket API that we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    /// One consumer; a second is refused.
    Exclusive,
    /// Round-robin over consumers.
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

/// Mutable state of a subscription (behind the subscription's lock).
#[derive(Debug)]
pub struct SubState {
    pub kind: SubType,
    pub consumers: Vec<ConsumerSlot>,
    pub rr: usize,
    /// Messages waiting for a consumer (persistent topics only).
    pub backlog: VecDeque<Dispatch>,
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

/// Choose a consumer. `has_room(i)` tells whether consumer `i` can take a message now.
pub fn pick(kind: SubType, n: usize, rr: &mut usize, has_room: impl Fn(usize) -> bool) -> Pick {
    if n == 0 {
        return Pick::Nobody;
    }
    match kind {
        // Exclusive has one consumer; Failover's active consumer is the oldest one.
        SubType::Exclusive | SubType::Failover => {
            if has_room(0) {
                Pick::Ready(0)
            } else {
                Pick::Wait(0)
            }
        }
        SubType::Shared => {
            let start = *rr % n;
            for k in 0..n {
                let i = (start + k) % n;
                if has_room(i) {
                    *rr = i + 1;
                    return Pick::Ready(i);
                }
            }
            *rr = start + 1;
            Pick::Wait(start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_round_robin() {
        let mut rr = 0;
        let picks: Vec<Pick> = (0..6).map(|_| pick(SubType::Shared, 3, &mut rr, |_| true)).collect();
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
        assert_eq!(pick(SubType::Shared, 3, &mut rr, |i| i == 2), Pick::Ready(2));
        assert_eq!(pick(SubType::Shared, 3, &mut rr, |i| i == 2), Pick::Ready(2));
        assert_eq!(pick(SubType::Shared, 3, &mut rr, |_| false), Pick::Wait(0));
    }

    #[test]
    fn exclusive_and_failover_use_the_first() {
        let mut rr = 0;
        assert_eq!(pick(SubType::Failover, 2, &mut rr, |_| true), Pick::Ready(0));
        assert_eq!(pick(SubType::Failover, 2, &mut rr, |_| false), Pick::Wait(0));
        assert_eq!(pick(SubType::Exclusive, 0, &mut rr, |_| true), Pick::Nobody);
    }

    #[test]
    fn parse_types() {
        assert_eq!(SubType::parse("Shared"), Some(SubType::Shared));
        assert_eq!(SubType::parse("Key_Shared"), None);
        assert_eq!(SubType::Failover.as_str(), "Failover");
    }
}
