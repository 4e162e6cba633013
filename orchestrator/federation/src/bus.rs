//! The interface the daemon uses: the [`Bus`] trait, what comes in
//! ([`Inbound`]), the per-peer view ([`PeerView`]) and the errors.
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
use tokio::sync::mpsc;

use crate::keys::{KeyFormatError, PublicKey};
use crate::membership::{Change, PeerState, Timing};
use crate::wire::{DropKind, EncodeError, TraceContext};

/// A boxed future, so that [`Bus`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One host's side of the federation.
///
/// Publishing never waits: it hands the message to the transport and
/// returns. Everything that arrives (peer snapshots, events, requests, peer
/// state changes) comes out of the [`Inbox`] returned with the bus.
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
    /// How many inbound items may wait for the daemon before more are
    /// dropped (and counted as [`DropKind::InboxFull`]).
    pub inbox_capacity: usize,
}

/// A peer as the bus needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub endpoint: String,
    pub public_key: PublicKey,
}

/// A config value the bus cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("peer `{peer}`: public key: {reason}")]
    PublicKey {
        peer: String,
        reason: KeyFormatError,
    },
    #[error("`federation.heartbeat` must be at least 1ms")]
    Heartbeat,
}

impl BusConfig {
    pub const DEFAULT_INBOX_CAPACITY: usize = 4096;

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
                Ok(PeerConfig {
                    name: p.name.clone(),
                    endpoint: p.endpoint.clone(),
                    public_key: p
                        .public_key
                        .parse()
                        .map_err(|reason| ConfigError::PublicKey {
                            peer: p.name.clone(),
                            reason,
                        })?,
                })
            })
            .collect::<Result<_, _>>()?;
        let heartbeat_ms = u64::try_from(federation.heartbeat.as_millis()).unwrap_or(u64::MAX);
        if heartbeat_ms == 0 {
            return Err(ConfigError::Heartbeat);
        }
        Ok(BusConfig {
            host: host.to_owned(),
            incarnation,
            listen: federation.listen.clone(),
            peers,
            timing: Timing {
                heartbeat_ms,
                suspect_after: federation.suspect_after,
                down_after: federation.down_after,
            },
            inbox_capacity: Self::DEFAULT_INBOX_CAPACITY,
        })
    }
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

/// Something that arrived for this host.
#[derive(Debug)]
pub enum Inbound {
    /// A peer's latest state.
    Snapshot {
        peer: String,
        incarnation: u64,
        sequence: u64,
        body: Bytes,
        trace: Option<TraceContext>,
    },
    /// A batch of a peer's events.
    Events {
        peer: String,
        batch: Bytes,
        trace: Option<TraceContext>,
    },
    /// A command from a peer; answer it with [`IncomingRequest::reply`].
    Request(IncomingRequest),
    /// A peer changed state, or restarted (a new incarnation while alive).
    PeerChanged(Change),
}

/// Sends a reply back the way its request came.
pub(crate) type Responder = Box<dyn FnOnce(Bytes) -> Result<(), PublishError> + Send>;

/// A request from a peer. Dropping it unanswered leaves the caller to its
/// timeout.
pub struct IncomingRequest {
    pub from: String,
    pub body: Bytes,
    pub trace: Option<TraceContext>,
    pub(crate) responder: Responder,
}

impl IncomingRequest {
    /// Sends `body` back to the caller.
    pub fn reply(self, body: Bytes) -> Result<(), PublishError> {
        (self.responder)(body)
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("from", &self.from)
            .field("body", &self.body)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// Where inbound items come out, in arrival order.
#[derive(Debug)]
pub struct Inbox(pub(crate) mpsc::Receiver<Inbound>);

impl Inbox {
    /// The next item; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Inbound> {
        self.0.recv().await
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        self.0.try_recv().ok()
    }
}

/// One peer as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub name: String,
    pub endpoint: String,
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
