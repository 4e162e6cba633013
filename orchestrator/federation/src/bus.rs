//! The interface the daemon uses: the [`Bus`] trait, what comes in
//! ([`Inbound`](crate::Inbound)), the per-peer view ([`PeerView`]) and the errors.
//!
//! Bodies are JSON bytes here: their schema belongs to the control API,
//! and the daemon encodes and decodes them itself. The bus checks only
//! that they are well-formed (see [`crate::wire`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::keys::{KeyFormatError, PublicKey};
use crate::membership::{PeerState, Timing};
use crate::wire::{DropKind, EncodeError, TraceContext};

/// A boxed future, so that [`Bus`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One host's side of the federation.
///
/// Publishing never waits: it hands the message to the transport and
/// returns. Everything that arrives (peer snapshots, events, requests, peer
/// state changes) comes out of the [`Inbox`](crate::Inbox) returned with the bus.
pub trait Bus: Send + Sync + fmt::Debug {
    /// This host's name.
    fn host(&self) -> &str;

    /// This run's incarnation, as peers see it.
    fn incarnation(&self) -> u64;

    /// Replaces this host's snapshot: sent now to every subscribed peer,
    /// and to each peer that subscribes later.
    fn publish_snapshot(
        &self,
        body: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError>;

    /// Sends a batch of events (a JSON array) to every subscribed peer. Not kept: a peer
    /// that subscribes later sees only later batches.
    fn publish_events(&self, batch: Bytes, trace: Option<TraceContext>)
    -> Result<(), PublishError>;

    /// Sends a request to `peer` and waits up to `timeout` for its reply.
    fn request(
        &self,
        peer: &str,
        body: Bytes,
        trace: Option<TraceContext>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, RequestError>>;

    /// Every configured peer, in name order.
    fn peers(&self) -> Vec<PeerView>;

    /// What was refused that no configured peer can be blamed for.
    fn strangers(&self) -> Strangers;

    /// Takes a new peer list at run time (added, removed, re-keyed, a role
    /// changed), without a restart: a peer whose name, role, endpoint and
    /// keys are unchanged keeps its connection, state and counters, and is
    /// never seen down for it. Fails, changing nothing, on a list
    /// [`check_peers`] refuses.
    fn reconfigure(&self, peers: Vec<PeerConfig>) -> Result<(), ReconfigureError>;
}

/// Why a new peer list was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to peer `{peer}` at {endpoint}: {reason}")]
    Connect {
        peer: String,
        endpoint: String,
        reason: String,
    },
    #[error("the federation bus is stopped")]
    Closed,
}

/// Counts of refused connections tied to no configured peer, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strangers {
    /// CURVE clients whose key is not a configured peer's.
    pub unknown_keys: u64,
    /// Clients that did not speak CURVE.
    pub without_curve: u64,
    /// Connections closed while their handshake was pending, to keep their
    /// number under [`Limits::pending_connections`], or because the
    /// process ran out of file descriptors.
    pub evicted_handshakes: u64,
    /// Connections the listener could not accept (out of descriptors).
    pub accept_failures: u64,
    /// Connections shut over [`Limits::connection_budget`] before their
    /// first whole message: libzmq names a connection's key only with a
    /// message, so a flood that never ends its first one is counted here
    /// rather than against its peer.
    pub over_budget: u64,
}

/// What a bus needs to know: who this host is and who its peers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub host: String,
    /// Larger on every start of the daemon; see [`incarnation_now`].
    pub incarnation: u64,
    /// `tcp://HOST:PORT` to bind (unused by the in-memory bus).
    pub listen: String,
    pub peers: Vec<PeerConfig>,
    pub timing: Timing,
    pub limits: Limits,
}

/// What one peer, one connection or one message may cost this host. Every
/// bound is per peer or per connection, so one peer cannot use up another's
/// share. `docs/federation.md` says what happens past each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a peer's snapshots, events and requests waiting for the
    /// daemon (each item also costs [`Limits::ITEM_COST`]); past it, that
    /// peer's items are dropped and counted as [`DropKind::InboxFull`].
    /// Peer state changes are never dropped.
    pub inbox_bytes_per_peer: usize,
    /// A peer's requests being answered at once; one more is answered at
    /// once with an `unavailable` error.
    pub requests_in_flight: usize,
    /// Bytes a connection may have sent that the bus has not yet been
    /// handed as whole messages (a multipart message is held by libzmq
    /// until its last frame); past it the connection is shut down.
    pub connection_budget: usize,
    /// Connections from one key at once; a further one is shut down.
    pub connections_per_key: usize,
    /// Connections accepted that have not finished the CURVE handshake;
    /// past it the oldest is shut down.
    pub pending_connections: usize,
    /// How long a connection may take over its CURVE handshake.
    pub handshake_ms: u64,
}

impl Limits {
    /// What each inbox item costs beyond its body, so a flood of empty
    /// items is bounded too.
    pub const ITEM_COST: usize = 512;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbox_bytes_per_peer: 16 * 1024 * 1024,
            requests_in_flight: 4,
            connection_budget: 16 * 1024 * 1024,
            connections_per_key: 4,
            pending_connections: 64,
            handshake_ms: 3000,
        }
    }
}

/// What a key may do on this host's bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Role {
    /// A federated daemon: dialled, subscribed to, counted as a member;
    /// sends heartbeats, snapshots, events and requests.
    #[default]
    Peer,
    /// A reader (a dashboard, a script): may subscribe and send requests,
    /// which the daemon limits to reading; never dialled, never a member,
    /// never reported down.
    Monitor,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A peer as the bus needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    /// Where to dial it (unused for a monitor).
    pub endpoint: String,
    pub role: Role,
    /// Its public keys: one, or two while it changes keys (the old and the
    /// new; either is admitted, and both are dialled until one answers).
    pub public_keys: Vec<PublicKey>,
}

impl PeerConfig {
    /// A peer with one key.
    pub fn new(name: impl Into<String>, endpoint: impl Into<String>, key: PublicKey) -> Self {
        PeerConfig {
            name: name.into(),
            endpoint: endpoint.into(),
            role: Role::Peer,
            public_keys: vec![key],
        }
    }

    /// The same peer as a monitor.
    pub fn monitor(mut self) -> Self {
        self.role = Role::Monitor;
        self
    }
}

/// A config value the bus cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("peer `{peer}`: public key: {reason}")]
    PublicKey {
        peer: String,
        reason: KeyFormatError,
    },
    #[error("peer `{peer}` has no public key")]
    NoKey { peer: String },
    #[error("peers `{first}` and `{second}` have the same public key")]
    SharedKey { first: String, second: String },
    #[error("`federation.heartbeat` must be at least 1ms")]
    Heartbeat,
}

impl BusConfig {
    /// A config with the default [`Limits`].
    pub fn new(
        host: impl Into<String>,
        incarnation: u64,
        listen: impl Into<String>,
        peers: Vec<PeerConfig>,
        timing: Timing,
    ) -> Self {
        BusConfig {
            host: host.into(),
            incarnation,
            listen: listen.into(),
            peers,
            timing,
            limits: Limits::default(),
        }
    }

    /// The bus config for `host` from the config model.
    pub fn from_model(
        host: &str,
        federation: &orch_core::model::Federation,
        incarnation: u64,
    ) -> Result<Self, ConfigError> {
        let peers = federation
            .peers
            .iter()
            .map(|p| {
                let public_keys = p
                    .public_keys()
                    .map(|k| {
                        k.parse().map_err(|reason| ConfigError::PublicKey {
                            peer: p.name.clone(),
                            reason,
                        })
                    })
                    .collect::<Result<Vec<PublicKey>, _>>()?;
                Ok(PeerConfig {
                    name: p.name.clone(),
                    endpoint: p.endpoint.clone(),
                    role: match p.role {
                        orch_core::model::PeerRole::Peer => Role::Peer,
                        orch_core::model::PeerRole::Monitor => Role::Monitor,
                    },
                    public_keys,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_peers(&peers)?;
        let heartbeat_ms = u64::try_from(federation.heartbeat.as_millis()).unwrap_or(u64::MAX);
        if heartbeat_ms == 0 {
            return Err(ConfigError::Heartbeat);
        }
        Ok(BusConfig::new(
            host,
            incarnation,
            federation.listen.clone(),
            peers,
            Timing {
                heartbeat_ms,
                suspect_after: federation.suspect_after,
                down_after: federation.down_after,
            },
        ))
    }
}

/// Every peer has a key, and no key names two peers (a connection is
/// named after its key's peer).
pub fn check_peers(peers: &[PeerConfig]) -> Result<(), ConfigError> {
    let mut owners: BTreeMap<PublicKey, &str> = BTreeMap::new();
    for p in peers {
        if p.public_keys.is_empty() {
            return Err(ConfigError::NoKey {
                peer: p.name.clone(),
            });
        }
        for key in &p.public_keys {
            if let Some(first) = owners.insert(*key, &p.name)
                && first != p.name
            {
                return Err(ConfigError::SharedKey {
                    first: first.to_owned(),
                    second: p.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// An incarnation for a daemon starting now: Unix time in milliseconds,
/// so a restart gets a larger one as long as the clock does not go back
/// (and a peer that was seen down accepts a smaller one anyway).
pub fn incarnation_now() -> u64 {
    unix_ms()
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One peer as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub name: String,
    pub endpoint: String,
    pub role: Role,
    /// Always `unknown` for a monitor: it is no member.
    pub state: PeerState,
    pub incarnation: Option<u64>,
    /// Since its last fresh heartbeat.
    pub last_heartbeat_age: Option<Duration>,
    /// Since its last snapshot arrived.
    pub snapshot_age: Option<Duration>,
    /// Messages from it that decoded (including stale ones).
    pub messages_in: u64,
    /// Messages to it that the transport took.
    pub messages_out: u64,
    /// Refused input, by kind; kinds with none are absent.
    pub dropped: BTreeMap<DropKind, u64>,
    /// Connections with its key refused or shut down (over
    /// [`Limits::connections_per_key`] or over budget).
    pub refused_connections: u64,
}

impl PeerView {
    /// Messages from this peer that could not be decoded.
    pub fn decode_errors(&self) -> u64 {
        self.dropped
            .iter()
            .filter(|(k, _)| k.is_decode_error())
            .map(|(_, n)| n)
            .sum()
    }

    /// How many of its messages were refused as `kind`.
    pub fn dropped(&self, kind: DropKind) -> u64 {
        self.dropped.get(&kind).copied().unwrap_or(0)
    }

    /// Messages claiming another host than its key's.
    pub fn impostors(&self) -> u64 {
        self.dropped(DropKind::Impostor)
    }

    /// Well-formed messages on a channel they do not belong to.
    pub fn unexpected(&self) -> u64 {
        self.dropped(DropKind::Unexpected)
    }

    /// Its items dropped because its share of the inbox was full.
    pub fn inbox_drops(&self) -> u64 {
        self.dropped(DropKind::InboxFull)
    }

    /// Messages or connections over a size budget.
    pub fn over_budget(&self) -> u64 {
        self.dropped(DropKind::OverBudget) + self.dropped(DropKind::Oversized)
    }
}

/// Why a message could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("the federation bus is stopped")]
    Closed,
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("`{peer}` is not a configured peer")]
    UnknownPeer { peer: String },
    #[error(
        "peer `{peer}` is unreachable: not heard from since this host started, or no connection to it is up"
    )]
    Unreachable { peer: String },
    #[error("peer `{peer}` is down")]
    PeerDown { peer: String },
    #[error("peer `{peer}` did not reply within {}ms", after.as_millis())]
    Timeout { peer: String, after: Duration },
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    #[error("the federation bus is stopped")]
    Closed,
}
