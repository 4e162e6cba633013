//! An in-memory federation for in-process daemon tests: buses join a
//! [`MemNetwork`], and [`MemNetwork::cut`] / [`MemNetwork::heal`] partition
//! them. Messages go through the same codec and the same [`Node`] (detector,
//! subscriptions, snapshots, requests) as over ZeroMQ; only the sockets are
//! replaced by function calls. Heartbeats run on tokio's clock, so a test
//! with a paused clock sees a peer go down without waiting.
//!
//! What it does not model: CURVE (a bus only hears buses that list it and
//! that it lists), queueing and reconnection delays.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::{
    BoxFuture, Bus, BusConfig, PeerConfig, PeerView, PublishError, ReconfigureError, RequestError,
    Strangers, check_peers, unix_ms,
};
use crate::front::{self, Carrier, Front, Inlet};
use crate::inbox::Inbox;
use crate::node::{self, Command, Node, Out, PeerTable};
use crate::wire::TraceContext;

/// The network several [`MemBus`]es join. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemNetwork {
    inner: Arc<NetInner>,
}

#[derive(Debug)]
struct NetInner {
    start: Instant,
    /// Short holds only (look-ups, cut checks), never while a node is
    /// locked or across an `.await`.
    state: Mutex<NetState>,
}

#[derive(Debug, Default)]
struct NetState {
    members: BTreeMap<String, Member>,
    cuts: BTreeSet<(String, String)>,
}

#[derive(Debug, Clone)]
struct Member {
    node: Arc<Mutex<Node<()>>>,
    inlet: Arc<Inlet<Link>>,
    table: Arc<Mutex<PeerTable>>,
    peers: BTreeSet<String>,
}

/// A member's way into the network: commands are carried out at once, in
/// the caller's task.
#[derive(Debug, Clone)]
struct Link {
    net: MemNetwork,
    host: String,
}

impl Carrier for Link {
    type Route = ();

    fn send(&self, command: Command<()>) -> Result<(), PublishError> {
        let member = self.net.member(&self.host).ok_or(PublishError::Closed)?;
        let outs = lock(&member.node).command(self.net.now(), command);
        self.net.carry(&self.host, outs);
        Ok(())
    }

    fn now(&self) -> u64 {
        self.net.now()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Default for MemNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemNetwork {
    pub fn new() -> Self {
        MemNetwork {
            inner: Arc::new(NetInner {
                start: Instant::now(),
                state: Mutex::new(NetState::default()),
            }),
        }
    }

    /// Adds a bus for `config.host` (replacing one of the same name, as a
    /// restarted daemon would). Must be called within a tokio runtime: the
    /// bus's heartbeats run as a task.
    pub fn join(&self, config: BusConfig) -> (MemBus, Inbox) {
        let node = Node::new(
            &config.host,
            config.incarnation,
            &config.peers,
            config.timing,
        );
        let table = node.table();
        let node = Arc::new(Mutex::new(node));
        let link = Link {
            net: self.clone(),
            host: config.host.clone(),
        };
        let (inlet, outlet) = front::inbox(Arc::clone(&table), link.clone(), config.limits);
        let member = Member {
            node: Arc::clone(&node),
            inlet: Arc::new(inlet),
            table: Arc::clone(&table),
            peers: config.peers.iter().map(|p| p.name.clone()).collect(),
        };
        lock(&self.inner.state)
            .members
            .insert(config.host.clone(), member);
        let net = self.clone();
        let host = config.host.clone();
        let period = Duration::from_millis(config.timing.heartbeat_ms);
        let beats = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(member) = net.member(&host) else {
                    return;
                };
                let outs = lock(&member.node).tick(net.now(), unix_ms());
                net.carry(&host, outs);
            }
        });
        let bus = MemBus {
            front: Front::new(config.host, config.incarnation, table, link),
            node,
            beats,
        };
        (bus, Inbox(outlet))
    }

    /// Stops all traffic between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        lock(&self.inner.state).cuts.insert(pair(a, b));
    }

    /// Lets traffic between `a` and `b` flow again.
    pub fn heal(&self, a: &str, b: &str) {
        lock(&self.inner.state).cuts.remove(&pair(a, b));
    }

    fn now(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn member(&self, host: &str) -> Option<Member> {
        lock(&self.inner.state).members.get(host).cloned()
    }

    /// The receiving member if a message from `from` can reach `to`: both
    /// joined, not cut, and each lists the other (CURVE would refuse
    /// anyone else).
    fn link(&self, from: &str, to: &str) -> Option<Member> {
        let state = lock(&self.inner.state);
        if state.cuts.contains(&pair(from, to)) {
            return None;
        }
        let sender = state.members.get(from)?;
        let receiver = state.members.get(to)?;
        (sender.peers.contains(to) && receiver.peers.contains(from)).then(|| receiver.clone())
    }

    /// Carries out what node `origin` asked for, and whatever that causes
    /// in turn, one node lock at a time.
    fn carry(&self, origin: &str, outs: Vec<Out<()>>) {
        let mut queue: VecDeque<(String, Out<()>)> =
            outs.into_iter().map(|o| (origin.to_owned(), o)).collect();
        while let Some((at, out)) = queue.pop_front() {
            match out {
                Out::ToPeer { peer, frames, .. } => {
                    let Some(to) = self.link(&at, &peer) else {
                        continue;
                    };
                    self.count_out(&at, &peer);
                    let more = lock(&to.node).on_subscriber(self.now(), &at, (), &frames);
                    queue.extend(more.into_iter().map(|o| (peer.clone(), o)));
                }
                Out::ToSubscriber { peer, frames, .. } => {
                    let Some(to) = self.link(&at, &peer) else {
                        continue;
                    };
                    self.count_out(&at, &peer);
                    let more = lock(&to.node).on_peer(self.now(), &at, &frames);
                    queue.extend(more.into_iter().map(|o| (peer.clone(), o)));
                }
                Out::Deliver(delivery) => self.deliver(&at, delivery),
            }
        }
    }

    fn count_out(&self, from: &str, to: &str) {
        if let Some(m) = self.member(from) {
            node::lock(&m.table).count_out(to);
        }
    }

    fn deliver(&self, at: &str, delivery: node::Delivery<()>) {
        if let Some(member) = self.member(at) {
            member.inlet.deliver(delivery);
        }
    }
}

/// A bus on a [`MemNetwork`]. Leaves the network when dropped.
#[derive(Debug)]
pub struct MemBus {
    front: Front<Link>,
    node: Arc<Mutex<Node<()>>>,
    beats: JoinHandle<()>,
}

impl Drop for MemBus {
    fn drop(&mut self) {
        self.beats.abort();
        let net = &self.front.carrier.net;
        let mut state = lock(&net.inner.state);
        // A restarted bus of the same name may already have replaced this one.
        if state
            .members
            .get(&self.front.host)
            .is_some_and(|m| Arc::ptr_eq(&m.node, &self.node))
        {
            state.members.remove(&self.front.host);
        }
    }
}

impl Bus for MemBus {
    fn host(&self) -> &str {
        &self.front.host
    }

    fn incarnation(&self) -> u64 {
        self.front.incarnation
    }

    fn publish_snapshot(
        &self,
        body: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        self.front.publish_snapshot(body, trace)
    }

    fn publish_events(
        &self,
        batch: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        self.front.publish_events(batch, trace)
    }

    fn request(
        &self,
        peer: &str,
        body: Bytes,
        trace: Option<TraceContext>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, RequestError>> {
        let peer = peer.to_owned();
        Box::pin(async move { self.front.request(&peer, body, trace, timeout).await })
    }

    fn peers(&self) -> Vec<PeerView> {
        self.front.peers()
    }

    fn strangers(&self) -> Strangers {
        self.front.strangers()
    }

    fn reconfigure(&self, peers: Vec<PeerConfig>) -> Result<(), ReconfigureError> {
        check_peers(&peers)?;
        let net = &self.front.carrier.net;
        if let Some(m) = lock(&net.inner.state).members.get_mut(&self.front.host) {
            m.peers = peers.iter().map(|p| p.name.clone()).collect();
        }
        lock(&self.node).reconfigure(&peers);
        Ok(())
    }
}
