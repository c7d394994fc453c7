//! Topics and their subscriptions: the broker's shared state.
//!
//! NOTE: state is shared behind short, synchronous locks (never held across `.await`) rather than owned
//! by a router task: a router adds a channel hop to every message, and per-message latency is what DASF
//! calls feel. Locks are per topic and per subscription, so unrelated topics never contend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::subscription::{Backlog, BacklogLimit, ConsumerSlot, Dispatch, Pick, SubState, SubType};
use crate::protocol::Properties;

use super::LOG;

/// A published message, shared by every subscription that receives it.
#[derive(Debug)]
pub struct Message {
    /// Opaque id.
    pub id: Arc<str>,
    /// Base64 payload as published (a large one is a slice of the publish frame that carried it).
    pub payload: Utf8Bytes,
    /// Properties, values as strings.
    pub properties: Properties,
    /// Publish time, ISO 8601 (shared by messages of the same millisecond).
    pub publish_time: Arc<str>,
    /// Optional key.
    pub key: Option<String>,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// Consumers did not make room in time.
    #[error("subscription '{0}' is full: consumers did not keep up within {1:?}")]
    Full(String, Duration),
    /// The backlog of a persistent subscription whose consumers do not keep up is full.
    #[error("backlog of subscription '{sub}' is full (at most {} messages, {} bytes of payload)", limit.messages, limit.bytes)]
    BacklogFull { sub: String, limit: BacklogLimit },
}

/// Why a consumer could not join a subscription.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// Exclusive subscription already has a consumer.
    #[error("Exclusive consumer is already connected to subscription '{0}'")]
    Busy(String),
    /// The subscription exists with another type.
    #[error("subscription '{0}' is of type {1}, not {2}")]
    TypeMismatch(String, &'static str, &'static str),
}

/// One subscription of a topic.
#[derive(Debug)]
pub struct Subscription {
    pub name: String,
    pub state: Mutex<SubState>,
    /// Mirror of `state.backlog.len()`, readable without the lock.
    pub backlog_len: AtomicUsize,
}

impl Subscription {
    /// Hand waiting messages to consumers with room (called when room may have appeared).
    pub fn drain_backlog(&self) {
        if self.backlog_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut st = self.state.lock().expect("sub lock");
        redistribute(&mut st, &self.backlog_len);
    }

    /// Put a message back for redelivery (negative ack, ack timeout). Without consumers it waits in the
    /// backlog on persistent topics and is dropped on non-persistent ones.
    pub fn requeue(&self, mut d: Dispatch, persistent: bool, limit: BacklogLimit) -> bool {
        d.redelivery += 1;
        let mut st = self.state.lock().expect("sub lock");
        if st.consumers.is_empty() && !persistent {
            return false;
        }
        if limit.exceeded_by(&st.backlog, d.msg.payload.len()) {
            return false;
        }
        st.backlog.push_back(d);
        redistribute(&mut st, &self.backlog_len);
        true
    }
}

/// One topic.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub persistent: bool,
    pub subs: Mutex<HashMap<String, Arc<Subscription>>>,
    /// The values of `subs`, rebuilt when a subscription comes or goes, so `publish` takes a reference
    /// count instead of collecting a vector for every message.
    fanout: Mutex<Arc<[Arc<Subscription>]>>,
    pub msg_in: AtomicU64,
    pub msg_out: AtomicU64,
    rates: Mutex<Rates>,
    /// Connections (producers and consumers) that use it; changed under the registry's lock.
    users: AtomicUsize,
}

/// Message rates, sampled when stats are read (at most once per second).
#[derive(Debug)]
struct Rates {
    at: std::time::Instant,
    last_in: u64,
    last_out: u64,
    rate_in: f64,
    rate_out: f64,
}

impl Topic {
    /// Rebuild the publish fan-out from `subs` (called with the `subs` lock held).
    fn refresh_fanout(&self, subs: &HashMap<String, Arc<Subscription>>) {
        *self.fanout.lock().expect("fanout lock") = subs.values().cloned().collect();
    }

    /// Messages per second in and out, over the interval since the previous sample (≥ 1 s).
    pub fn rates(&self) -> (f64, f64) {
        let mut r = self.rates.lock().expect("rates lock");
        let now = std::time::Instant::now();
        let dt = now.duration_since(r.at).as_secs_f64();
        if dt >= 1.0 {
            let (cin, cout) = (
                self.msg_in.load(Ordering::Relaxed),
                self.msg_out.load(Ordering::Relaxed),
            );
            r.rate_in = (cin - r.last_in) as f64 / dt;
            r.rate_out = (cout - r.last_out) as f64 / dt;
            (r.last_in, r.last_out, r.at) = (cin, cout, now);
        }
        (r.rate_in, r.rate_out)
    }
}

/// A consumer that joined a subscription.
pub struct Joined {
    pub sub: Arc<Subscription>,
    pub id: u64,
    pub rx: mpsc::Receiver<Dispatch>,
    pub unacked: Arc<AtomicUsize>,
}

/// All topics.
#[derive(Debug, Default)]
pub struct Registry {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    next_consumer: AtomicU64,
}

impl Registry {
    /// The topic named `name`, created on first use, for one connection: hand it back with
    /// [`Registry::release`] when the connection ends.
    pub fn topic(&self, name: &str, persistent: bool) -> Arc<Topic> {
        let mut topics = self.topics.lock().expect("topics lock");
        let topic = topics
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    name: name.to_owned(),
                    persistent,
                    subs: Mutex::new(HashMap::new()),
                    fanout: Mutex::new(Arc::from(Vec::new())),
                    msg_in: AtomicU64::new(0),
                    msg_out: AtomicU64::new(0),
                    rates: Mutex::new(Rates {
                        at: std::time::Instant::now(),
                        last_in: 0,
                        last_out: 0,
                        rate_in: 0.0,
                        rate_out: 0.0,
                    }),
                    users: AtomicUsize::new(0),
                })
            })
            .clone();
        topic.users.fetch_add(1, Ordering::Relaxed);
        topic
    }

    /// A connection is done with `topic`. A topic nobody uses and without subscriptions is forgotten (a
    /// non-persistent subscription ends with its last consumer, a persistent one stays): every client
    /// process has a reply topic of its own, and a broker that runs for months must not keep them all.
    pub fn release(&self, topic: &Arc<Topic>) {
        let mut topics = self.topics.lock().expect("topics lock");
        if topic.users.fetch_sub(1, Ordering::Relaxed) == 1
            && topic.subs.lock().expect("subs lock").is_empty()
            && topics.get(&topic.name).is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            topics.remove(&topic.name);
        }
    }

    /// Snapshot of all topics.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.lock().expect("topics lock").values().cloned().collect()
    }

    /// Add a consumer to `topic`/`sub`, creating the subscription if needed.
    pub fn join(&self, topic: &Arc<Topic>, sub: &str, kind: SubType, queue: usize) -> Result<Joined, JoinError> {
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let subscription = {
            let mut subs = topic.subs.lock().expect("subs lock");
            match subs.get(sub) {
                Some(existing) => existing.clone(),
                None => {
                    let created = Arc::new(Subscription {
                        name: sub.to_owned(),
                        state: Mutex::new(SubState {
                            kind,
                            consumers: Vec::new(),
                            rr: 0,
                            backlog: Backlog::default(),
                            evicted: 0,
                            sticky: Default::default(),
                        }),
                        backlog_len: AtomicUsize::new(0),
                    });
                    subs.insert(sub.to_owned(), created.clone());
                    topic.refresh_fanout(&subs);
                    created
                }
            }
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        let mut st = subscription.state.lock().expect("sub lock");
        if !st.consumers.is_empty() {
            if st.kind != kind {
                return Err(JoinError::TypeMismatch(sub.to_owned(), st.kind.as_str(), kind.as_str()));
            }
            if kind == SubType::Exclusive {
                return Err(JoinError::Busy(sub.to_owned()));
            }
        }
        st.kind = kind;
        let unacked = Arc::new(AtomicUsize::new(0));
        st.consumers.push(ConsumerSlot {
            id,
            tx,
            unacked: unacked.clone(),
        });
        // hand over what waited for a consumer
        redistribute(&mut st, &subscription.backlog_len);
        drop(st);
        Ok(Joined {
            sub: subscription,
            id,
            rx,
            unacked,
        })
    }

    /// Remove consumer `id`; `unacked` messages go back to the subscription (persistent topics) in order.
    /// A non-persistent subscription disappears with its last consumer, as in Pulsar.
    pub fn leave(&self, topic: &Arc<Topic>, sub: &Arc<Subscription>, id: u64, unacked: Vec<Dispatch>) {
        let mut st = sub.state.lock().expect("sub lock");
        st.consumers.retain(|c| c.id != id);
        if topic.persistent {
            for mut d in unacked.into_iter().rev() {
                d.redelivery += 1;
                st.backlog.push_front(d);
            }
        }
        // hand the backlog to remaining consumers
        redistribute(&mut st, &sub.backlog_len);
        let empty = st.consumers.is_empty();
        drop(st);
        if empty && !topic.persistent {
            let mut subs = topic.subs.lock().expect("subs lock");
            if let Some(s) = subs.get(&sub.name) {
                if Arc::ptr_eq(s, sub) && s.state.lock().expect("sub lock").consumers.is_empty() {
                    subs.remove(&sub.name);
                    topic.refresh_fanout(&subs);
                }
            }
        }
    }
}

/// Hand backlog messages to consumers with room, in order, and refresh the lock-free backlog length.
fn redistribute(st: &mut SubState, backlog_len: &AtomicUsize) {
    hand_over(st);
    backlog_len.store(st.backlog.len(), Ordering::Relaxed);
}

fn hand_over(st: &mut SubState) {
    while let Some(d) = st.backlog.pop_front() {
        match st.choose(d.msg.key.as_deref()) {
            Pick::Ready(i) => {
                if let Err(e) = st.consumers[i].tx.try_send(d) {
                    st.backlog.push_front(e.into_inner());
                    return;
                }
            }
            _ => {
                st.backlog.push_front(d);
                return;
            }
        }
    }
}

impl Topic {
    /// Deliver `msg` to every subscription. Waits (bounded by `hold`) when a subscription's consumers are
    /// all full; returns an error rather than dropping anything it accepted.
    pub async fn publish(&self, msg: Arc<Message>, hold: Duration, limit: BacklogLimit) -> Result<(), PublishError> {
        self.msg_in.fetch_add(1, Ordering::Relaxed);
        let subs = self.fanout.lock().expect("fanout lock").clone();
        // no subscription: non-persistent drops the message (Pulsar semantics); persistent has nobody to
        // keep it for
        for sub in subs.iter() {
            let d = Dispatch {
                msg: msg.clone(),
                redelivery: 0,
            };
            let wait_on = {
                let mut guard = sub.state.lock().expect("sub lock");
                let st = &mut *guard;
                if !st.backlog.is_empty() {
                    // older messages wait: keep publish order by queueing behind them
                    self.keep(sub, st, d, limit)?;
                    continue;
                }
                match st.choose(msg.key.as_deref()) {
                    Pick::Ready(i) => match st.consumers[i].tx.try_send(d) {
                        Ok(()) => None,
                        Err(e) => Some((st.consumers[i].tx.clone(), e.into_inner())),
                    },
                    Pick::Wait(i) => Some((st.consumers[i].tx.clone(), d)),
                    Pick::Nobody => {
                        if self.persistent {
                            self.keep(sub, st, d, limit)?;
                        }
                        None
                    }
                }
            };
            if let Some((tx, d)) = wait_on {
                // the producer is held here: its socket is not read until there is room
                match tx.send_timeout(d, hold).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        return Err(PublishError::Full(sub.name.clone(), hold));
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(d)) => {
                        // the consumer left meanwhile: keep it for the subscription if persistent
                        if self.persistent {
                            let mut st = sub.state.lock().expect("sub lock");
                            self.keep(sub, &mut st, d, limit)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Topic {
    /// Queue `d` in the backlog of `sub`. At the limit, a subscription with consumers (that do not keep
    /// up) refuses it, and one without consumers drops its oldest messages to make room: nobody may read
    /// it again (a backend that restarts takes a subscription of a new name), and it must not stop the
    /// topic for the subscriptions that are read.
    fn keep(
        &self,
        sub: &Subscription,
        st: &mut SubState,
        d: Dispatch,
        limit: BacklogLimit,
    ) -> Result<(), PublishError> {
        let size = d.msg.payload.len();
        if limit.exceeded_by(&st.backlog, size) {
            if !st.consumers.is_empty() {
                return Err(PublishError::BacklogFull {
                    sub: sub.name.clone(),
                    limit,
                });
            }
            let before = st.evicted;
            while limit.exceeded_by(&st.backlog, size) && st.backlog.pop_front().is_some() {
                st.evicted += 1;
            }
            if before == 0 {
                tracing::warn!(
                    target: LOG,
                    "subscription '{}' of {} has no consumer and holds {} messages ({} bytes of payload): \
                     its oldest messages are dropped from now on (msgEvicted in /admin/v2/stats)",
                    sub.name,
                    self.name,
                    st.backlog.len(),
                    st.backlog.bytes()
                );
            }
        }
        st.backlog.push_back(d);
        redistribute(st, &sub.backlog_len);
        Ok(())
    }
}

/// Statistics of one subscription, as `GET /admin/v2/stats` reports them.
#[derive(Debug, serde::Serialize)]
pub struct SubStats {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub consumers: usize,
    /// Messages waiting: in the backlog and in consumer queues, not yet written to a consumer.
    #[serde(rename = "msgBacklog")]
    pub backlog: usize,
    /// Messages written to consumers and not yet acked.
    #[serde(rename = "unackedMessages")]
    pub unacked: usize,
    /// Messages dropped from the backlog while no consumer was connected (see `Topic::keep`).
    #[serde(rename = "msgEvicted")]
    pub evicted: u64,
}

impl Subscription {
    /// Current statistics.
    pub fn stats(&self) -> SubStats {
        let st = self.state.lock().expect("sub lock");
        let queued: usize = st.consumers.iter().map(|c| c.tx.max_capacity() - c.tx.capacity()).sum();
        SubStats {
            kind: st.kind.as_str(),
            consumers: st.consumers.len(),
            backlog: st.backlog.len() + queued,
            unacked: st.consumers.iter().map(|c| c.unacked.load(Ordering::Relaxed)).sum(),
            evicted: st.evicted,
        }
    }
}
