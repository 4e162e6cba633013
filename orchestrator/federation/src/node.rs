//! What one host does with messages, whatever carries them: both buses
//! feed a [`Node`] frames and time, and carry out the [`Out`]s it returns.
//! It holds the detector, the subscriptions, the latest snapshot, the
//! requests waiting for replies and the per-peer counters; it does no I/O.
//!
//! Two channels exist between a host and each peer, named after the
//! ZeroMQ sockets that carry them: messages this host sends to a peer
//! ([`Out::ToPeer`], its DEALER) and messages to a subscriber
//! ([`Out::ToSubscriber`], its ROUTER). What may arrive on each is closed:
//! a subscriber sends heartbeats and requests; a peer streams heartbeats,
//! snapshots, events and replies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::bus::{PeerConfig, PeerView, RequestError, Role, Strangers};
use crate::inbox::Inbound;
use crate::membership::{Change, Heard, Leases, Membership, PeerState, Renewal, Timing};
use crate::wire::{self, DropKind, Envelope, Message, TraceContext};

pub(crate) type Frames = Arc<[Bytes]>;

/// What the daemon's side asks of the node.
#[derive(Debug)]
pub(crate) enum Command<R> {
    Snapshot(Frames),
    Events(Frames),
    Request {
        peer: String,
        id: u64,
        frames: Frames,
        reply: oneshot::Sender<Result<Bytes, RequestError>>,
    },
    Reply {
        peer: String,
        route: R,
        frames: Frames,
    },
}

/// What a node asks its bus to do.
#[derive(Debug)]
pub(crate) enum Out<R> {
    ToPeer {
        peer: String,
        frames: Frames,
        /// The request these frames carry: if the transport cannot take
        /// them, it fails the request at once ([`Node::request_failed`]).
        request: Option<u64>,
    },
    ToSubscriber {
        peer: String,
        route: R,
        frames: Frames,
    },
    Deliver(Delivery<R>),
}

/// Something for the daemon; the bus turns it into an [`Inbound`].
#[derive(Debug)]
pub(crate) enum Delivery<R> {
    Item {
        peer: String,
        item: Inbound,
    },
    Request {
        from: String,
        role: Role,
        route: R,
        id: u64,
        body: Bytes,
        trace: Option<TraceContext>,
    },
}

#[derive(Debug, Default)]
struct Stats {
    endpoint: String,
    role: Role,
    messages_in: u64,
    messages_out: u64,
    dropped: BTreeMap<DropKind, u64>,
    refused_connections: u64,
    log: LogLimit,
    /// Incarnation, sequence and arrival of the last accepted snapshot.
    snapshot: Option<(u64, u64, u64)>,
}

/// At most one log line a minute per key (or per peer): a broken or
/// hostile peer cannot flood the log, and is never silenced for good. The
/// next line says how many were held back; the counters keep the tally.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const PERIOD: Duration = Duration::from_secs(60);

    /// `Some(lines held back since the last one)` when a line may be
    /// written now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(at) if now.duration_since(at) < Self::PERIOD => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The detector and counters, shared with whoever asks for [`PeerView`]s.
#[derive(Debug)]
pub(crate) struct PeerTable {
    membership: Membership,
    stats: BTreeMap<String, Stats>,
    strangers: Strangers,
}

impl PeerTable {
    pub(crate) fn state(&self, peer: &str) -> Option<PeerState> {
        self.membership.state(peer)
    }

    pub(crate) fn role(&self, peer: &str) -> Option<Role> {
        self.stats.get(peer).map(|s| s.role)
    }

    /// Counts refused input from `peer`, with a rate-limited log line.
    pub(crate) fn drop_input(
        &mut self,
        peer: &str,
        kind: DropKind,
        detail: &dyn std::fmt::Display,
    ) {
        let Some(s) = self.stats.get_mut(peer) else {
            tracing::debug!(peer, %kind, %detail, "dropping a federation message from a peer no longer configured");
            return;
        };
        *s.dropped.entry(kind).or_default() += 1;
        if let Some(suppressed) = s.log.allow() {
            tracing::warn!(
                peer,
                %kind,
                %detail,
                suppressed,
                "dropping a federation message (at most one such line a minute per peer; `suppressed` counts those held back)"
            );
        }
    }

    /// Counts a connection with `peer`'s key that the transport refused or
    /// shut down.
    pub(crate) fn refuse_connection(&mut self, peer: &str, why: &dyn std::fmt::Display) {
        if let Some(s) = self.stats.get_mut(peer) {
            s.refused_connections += 1;
            if let Some(suppressed) = s.log.allow() {
                tracing::warn!(peer, %why, suppressed, "closed a federation connection");
            }
        }
    }

    /// What the transport counts of keys and connections tied to no peer.
    pub(crate) fn strangers_mut(&mut self) -> &mut Strangers {
        &mut self.strangers
    }

    pub(crate) fn count_out(&mut self, peer: &str) {
        if let Some(s) = self.stats.get_mut(peer) {
            s.messages_out += 1;
        }
    }

    fn count_in(&mut self, peer: &str) {
        if let Some(s) = self.stats.get_mut(peer) {
            s.messages_in += 1;
        }
    }

    pub(crate) fn views(&self, now: u64) -> Vec<PeerView> {
        let age = |at: u64| Duration::from_millis(now.saturating_sub(at));
        self.stats
            .iter()
            .map(|(name, s)| PeerView {
                name: name.clone(),
                endpoint: s.endpoint.clone(),
                role: s.role,
                state: self.membership.state(name).unwrap_or(PeerState::Unknown),
                incarnation: self.membership.incarnation(name),
                last_heartbeat_age: self.membership.last_heard(name).map(age),
                snapshot_age: s.snapshot.map(|(_, _, at)| age(at)),
                messages_in: s.messages_in,
                messages_out: s.messages_out,
                dropped: s.dropped.clone(),
                refused_connections: s.refused_connections,
            })
            .collect()
    }

    pub(crate) fn strangers(&self) -> Strangers {
        self.strangers
    }
}

/// Locks the table. Every hold is a few counter updates, never across an
/// `.await` or a socket call, so a std mutex is enough.
pub(crate) fn lock(table: &Mutex<PeerTable>) -> MutexGuard<'_, PeerTable> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Pending {
    peer: String,
    reply: oneshot::Sender<Result<Bytes, RequestError>>,
}

/// One host's protocol state; `R` is how the transport names a
/// subscriber's connection.
pub(crate) struct Node<R> {
    host: String,
    incarnation: u64,
    /// The peers this host dials and counts as members (role `peer`).
    members: Vec<String>,
    table: Arc<Mutex<PeerTable>>,
    leases: Leases<R>,
    snapshot: Option<Frames>,
    beats: u64,
    pending: HashMap<u64, Pending>,
}

impl<R> std::fmt::Debug for Node<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("host", &self.host)
            .field("incarnation", &self.incarnation)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<R: Clone + PartialEq> Node<R> {
    pub(crate) fn new(host: &str, incarnation: u64, peers: &[PeerConfig], timing: Timing) -> Self {
        let table = PeerTable {
            membership: Membership::new(Vec::<String>::new(), timing),
            stats: BTreeMap::new(),
            strangers: Strangers::default(),
        };
        let mut node = Node {
            host: host.to_owned(),
            incarnation,
            members: Vec::new(),
            table: Arc::new(Mutex::new(table)),
            leases: Leases::new(timing.lease_ms()),
            snapshot: None,
            beats: 0,
            pending: HashMap::new(),
        };
        node.reconfigure(peers);
        node
    }

    /// Takes a new peer list. A peer that stays a member keeps its state,
    /// counters and subscription; one that is gone (or became a monitor)
    /// leaves the detector, and its requests fail at once.
    pub(crate) fn reconfigure(&mut self, peers: &[PeerConfig]) {
        let mut table = lock(&self.table);
        let old: Vec<String> = table.stats.keys().cloned().collect();
        for name in &old {
            if !peers.iter().any(|p| &p.name == name) {
                table.stats.remove(name);
                table.membership.remove(name);
                self.leases.remove(name);
            }
        }
        for p in peers {
            let stats = table.stats.entry(p.name.clone()).or_default();
            stats.endpoint = p.endpoint.clone();
            stats.role = p.role;
            match p.role {
                Role::Peer => table.membership.add(&p.name),
                Role::Monitor => table.membership.remove(&p.name),
            }
        }
        drop(table);
        self.members = peers
            .iter()
            .filter(|p| p.role == Role::Peer)
            .map(|p| p.name.clone())
            .collect();
        let members = &self.members;
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !members.contains(&p.peer))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p
                    .reply
                    .send(Err(RequestError::UnknownPeer { peer: p.peer }));
            }
        }
    }

    pub(crate) fn table(&self) -> Arc<Mutex<PeerTable>> {
        Arc::clone(&self.table)
    }

    /// Sends this host's heartbeat to every peer and subscriber, and moves
    /// silent peers on.
    pub(crate) fn tick(&mut self, now: u64, unix_ms: u64) -> Vec<Out<R>> {
        self.beats += 1;
        let mut out = Vec::new();
        let heartbeat = Message::Heartbeat(wire::Heartbeat {
            host: self.host.clone(),
            incarnation: self.incarnation,
            sequence: self.beats,
            sent_at_ms: unix_ms,
        });
        if let Some(frames) = encode(None, heartbeat) {
            for peer in &self.members {
                out.push(Out::ToPeer {
                    peer: peer.clone(),
                    frames: Arc::clone(&frames),
                    request: None,
                });
            }
            out.extend(self.to_subscribers(now, &frames));
        }
        out.extend(self.check(now));
        self.leases.expire(now);
        // Callers that gave up (timed out) dropped their receivers.
        self.pending.retain(|_, p| !p.reply.is_closed());
        out
    }

    /// Moves silent peers on, without sending anything: for a bus that
    /// wakes at [`Node::next_check_at`] between heartbeats.
    pub(crate) fn check(&mut self, now: u64) -> Vec<Out<R>> {
        lock(&self.table)
            .membership
            .tick(now)
            .into_iter()
            .map(|change| {
                tracing::info!(peer = %change.peer, state = %change.state, incarnation = change.incarnation, "peer state");
                changed(change)
            })
            .collect()
    }

    /// When a silent peer is next due to become suspect or down.
    pub(crate) fn next_check_at(&self) -> Option<u64> {
        lock(&self.table).membership.next_change_at()
    }

    fn to_subscribers(&self, now: u64, frames: &Frames) -> Vec<Out<R>> {
        self.leases
            .live(now)
            .into_iter()
            .map(|(peer, route)| Out::ToSubscriber {
                peer,
                route,
                frames: Arc::clone(frames),
            })
            .collect()
    }

    /// Carries out what the daemon's side asked for.
    pub(crate) fn command(&mut self, now: u64, command: Command<R>) -> Vec<Out<R>> {
        match command {
            Command::Snapshot(frames) => {
                // Stored: a subscriber that comes later gets it at once.
                let out = self.to_subscribers(now, &frames);
                self.snapshot = Some(frames);
                out
            }
            Command::Events(frames) => self.to_subscribers(now, &frames),
            Command::Request {
                peer,
                id,
                frames,
                reply,
            } => {
                self.start_request(&peer, id, reply);
                if self.pending.contains_key(&id) {
                    vec![Out::ToPeer {
                        peer,
                        frames,
                        request: Some(id),
                    }]
                } else {
                    Vec::new()
                }
            }
            Command::Reply {
                peer,
                route,
                frames,
            } => vec![Out::ToSubscriber {
                peer,
                route,
                frames,
            }],
        }
    }

    /// Registers a request about to be sent to `peer`, or answers it at
    /// once when `peer` cannot be reached.
    fn start_request(
        &mut self,
        peer: &str,
        id: u64,
        reply: oneshot::Sender<Result<Bytes, RequestError>>,
    ) {
        let check = match lock(&self.table).state(peer) {
            None => Err(RequestError::UnknownPeer {
                peer: peer.to_owned(),
            }),
            Some(PeerState::Unknown) => Err(RequestError::Unreachable {
                peer: peer.to_owned(),
            }),
            Some(PeerState::Down) => Err(RequestError::PeerDown {
                peer: peer.to_owned(),
            }),
            Some(PeerState::Alive | PeerState::Suspect) => Ok(()),
        };
        match check {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        peer: peer.to_owned(),
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(crate) fn request_failed(&mut self, id: u64, error: RequestError) {
        if let Some(p) = self.pending.remove(&id) {
            let _ = p.reply.send(Err(error));
        }
    }

    /// Frames from `peer` on the subscriber channel (ROUTER side).
    pub(crate) fn on_subscriber(
        &mut self,
        now: u64,
        peer: &str,
        route: R,
        frames: &[impl AsRef<[u8]>],
    ) -> Vec<Out<R>> {
        let Some(envelope) = self.decode(peer, frames) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match envelope.message {
            Message::Heartbeat(h) => {
                // A monitor is no member: its beats only hold its lease.
                if self.members.iter().any(|m| m == peer) {
                    self.heard(now, peer, &h, &mut out);
                }
                let beat = (h.incarnation, h.sequence);
                if self.leases.renew(now, peer, route.clone(), beat) == Renewal::New
                    && let Some(snapshot) = &self.snapshot
                {
                    // A new subscriber gets the current state at once
                    // rather than at the next change.
                    out.push(Out::ToSubscriber {
                        peer: peer.to_owned(),
                        route,
                        frames: Arc::clone(snapshot),
                    });
                }
            }
            Message::Request(r) => out.push(Out::Deliver(Delivery::Request {
                from: peer.to_owned(),
                role: lock(&self.table).role(peer).unwrap_or(Role::Monitor),
                route,
                id: r.id,
                body: r.body,
                trace: envelope.trace,
            })),
            other => self.unexpected(peer, &other, "from a subscriber"),
        }
        out
    }

    /// Frames from `peer` on the peer channel (DEALER side).
    pub(crate) fn on_peer(
        &mut self,
        now: u64,
        peer: &str,
        frames: &[impl AsRef<[u8]>],
    ) -> Vec<Out<R>> {
        let Some(envelope) = self.decode(peer, frames) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let trace = envelope.trace;
        match envelope.message {
            Message::Heartbeat(h) => self.heard(now, peer, &h, &mut out),
            Message::Snapshot(s) => {
                if self.fresh_snapshot(now, peer, s.incarnation, s.sequence) {
                    out.push(Out::Deliver(Delivery::Item {
                        peer: peer.to_owned(),
                        item: Inbound::Snapshot {
                            peer: s.host,
                            incarnation: s.incarnation,
                            sequence: s.sequence,
                            body: s.body,
                            trace,
                        },
                    }));
                }
            }
            Message::Events(e) => out.push(Out::Deliver(Delivery::Item {
                peer: peer.to_owned(),
                item: Inbound::Events {
                    peer: e.host,
                    batch: e.batch,
                    trace,
                },
            })),
            Message::Reply(r) => match self.pending.remove(&r.id) {
                Some(p) if p.peer == peer => {
                    let _ = p.reply.send(Ok(r.body));
                }
                Some(p) => {
                    // A reply id only the right peer may answer.
                    self.pending.insert(r.id, p);
                    lock(&self.table).drop_input(
                        peer,
                        DropKind::Unexpected,
                        &"a reply to a request sent to another peer",
                    );
                }
                None => tracing::debug!(
                    peer,
                    id = r.id,
                    "a reply nobody waits for (late, after a timeout)"
                ),
            },
            other => self.unexpected(peer, &other, "from a peer"),
        }
        out
    }

    /// Decodes and authenticates: the host a message claims must be the
    /// peer whose key it came with.
    fn decode(&mut self, peer: &str, frames: &[impl AsRef<[u8]>]) -> Option<Envelope> {
        let mut table = lock(&self.table);
        match wire::decode(frames) {
            Err(e) => {
                table.drop_input(peer, e.kind(), &e);
                None
            }
            Ok(envelope) => match envelope.message.claimed_host() {
                Some(claimed) if claimed != peer => {
                    table.drop_input(
                        peer,
                        DropKind::Impostor,
                        &format!("claims to be `{claimed}`"),
                    );
                    None
                }
                _ => {
                    table.count_in(peer);
                    Some(envelope)
                }
            },
        }
    }

    fn unexpected(&self, peer: &str, message: &Message, channel: &str) {
        let detail = format!("a {:?} message {channel}", message.message_type());
        lock(&self.table).drop_input(peer, DropKind::Unexpected, &detail);
    }

    fn heard(&mut self, now: u64, peer: &str, h: &wire::Heartbeat, out: &mut Vec<Out<R>>) {
        let heard = lock(&self.table)
            .membership
            .heartbeat(now, peer, h.incarnation, h.sequence);
        if let Heard::Fresh(Some(change)) = heard {
            tracing::info!(peer, state = %change.state, incarnation = change.incarnation, "peer state");
            // A peer just came (back): subscribe to it now rather than at
            // the next beat, so nothing it publishes meanwhile is missed.
            let resubscribe =
                change.state == PeerState::Alive && self.members.iter().any(|p| p == peer);
            out.push(changed(change));
            if resubscribe {
                self.beats += 1;
                let heartbeat = Message::Heartbeat(wire::Heartbeat {
                    host: self.host.clone(),
                    incarnation: self.incarnation,
                    sequence: self.beats,
                    sent_at_ms: crate::bus::unix_ms(),
                });
                if let Some(frames) = encode(None, heartbeat) {
                    out.push(Out::ToPeer {
                        peer: peer.to_owned(),
                        frames,
                        request: None,
                    });
                }
            }
        }
    }

    /// A heartbeat for `peer` alone, now: for a connection that just
    /// came up, so the peer hears from it without waiting a beat.
    pub(crate) fn greet(&mut self, peer: &str, unix_ms: u64) -> Vec<Out<R>> {
        if !self.members.iter().any(|p| p == peer) {
            return Vec::new();
        }
        self.beats += 1;
        let heartbeat = Message::Heartbeat(wire::Heartbeat {
            host: self.host.clone(),
            incarnation: self.incarnation,
            sequence: self.beats,
            sent_at_ms: unix_ms,
        });
        encode(None, heartbeat)
            .map(|frames| {
                vec![Out::ToPeer {
                    peer: peer.to_owned(),
                    frames,
                    request: None,
                }]
            })
            .unwrap_or_default()
    }

    fn fresh_snapshot(&mut self, now: u64, peer: &str, incarnation: u64, sequence: u64) -> bool {
        let mut table = lock(&self.table);
        let current = table.membership.incarnation(peer);
        let Some(stats) = table.stats.get_mut(peer) else {
            return false;
        };
        let fresh = match stats.snapshot {
            None => true,
            Some((inc, seq, _)) => {
                incarnation > inc
                    || (incarnation == inc && sequence > seq)
                    // The detector took the peer back with a lower
                    // incarnation (it was down and its clock went back).
                    || (incarnation < inc && current == Some(incarnation))
            }
        };
        if fresh {
            stats.snapshot = Some((incarnation, sequence, now));
        }
        fresh
    }
}

fn changed<R>(change: Change) -> Out<R> {
    Out::Deliver(Delivery::Item {
        peer: change.peer.clone(),
        item: Inbound::PeerChanged(change),
    })
}

/// Frames of a message this node makes itself; those cannot be too large
/// (no body), so a failure is only logged.
fn encode(trace: Option<TraceContext>, message: Message) -> Option<Frames> {
    match wire::encode(&Envelope { trace, message }) {
        Ok(frames) => Some(frames.into()),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a heartbeat");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_a_minute_and_the_next_one_counts_those_held_back() {
        let mut limit = LogLimit::default();
        assert_eq!(limit.allow(), Some(0), "the first line is written");
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None, "held back within the minute");
        }
        // A minute later: written again, never silenced for good.
        limit.last = Instant::now().checked_sub(LogLimit::PERIOD);
        assert_eq!(limit.allow(), Some(1000));
        assert_eq!(limit.allow(), None);
    }
}
