//! The daemon's side of the federation: what it knows of its peers (their
//! latest snapshots, their events, how the bus sees them), the bridge from
//! the bus's inbox to the owner and the [`Service`], and [`BusRemote`],
//! which carries requests for another host over the bus.
//!
//! Only `orch-federation` knows ZeroMQ; this module sees a [`Bus`] (the
//! real `ZmqBus`, or a `MemBus` in tests) and JSON bodies whose schema is
//! the control API's: a snapshot is an `orch_api::Snapshot`, an events
//! batch a list of `orch_api::Event`s, a request an `orch_api::Envelope`,
//! a reply an `orch_api::Reply`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use orch_api::{
    ApiError, Envelope, ErrorCode, Event as ApiEvent, PeerState, PeerStatus, Reply, Response,
    Snapshot,
};
use orch_federation::{Bus, Inbound, Inbox, RequestError, TraceContext};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::owner::Event;
use crate::service::{Remote, Service};
use crate::trace;

/// How long a request to another host may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many of a peer's events are kept for late followers.
const KEEP_EVENTS: usize = 5_000;

/// The bus and what arrives on it, as `run` takes them.
#[derive(Debug)]
pub struct FederationDeps {
    pub bus: Arc<dyn Bus>,
    pub inbox: Inbox,
}

/// What arrived from a peer, for the owner.
#[derive(Debug)]
pub enum PeerNews {
    Snapshot {
        peer: String,
        incarnation: u64,
        snapshot: Box<Snapshot>,
    },
    Events {
        peer: String,
        events: Vec<ApiEvent>,
    },
    State {
        peer: String,
        state: PeerState,
        incarnation: u64,
    },
}

pub fn peer_state(s: orch_federation::membership::PeerState) -> PeerState {
    use orch_federation::membership::PeerState as B;
    match s {
        B::Unknown => PeerState::Unknown,
        B::Alive => PeerState::Alive,
        B::Suspect => PeerState::Suspect,
        B::Down => PeerState::Down,
    }
}

/// One peer as the owner knows it.
#[derive(Debug)]
pub struct PeerRecord {
    pub state: PeerState,
    pub incarnation: Option<u64>,
    pub snapshot: Option<(Snapshot, Instant)>,
    events: VecDeque<ApiEvent>,
    feed: broadcast::Sender<ApiEvent>,
}

impl PeerRecord {
    fn new() -> Self {
        PeerRecord {
            state: PeerState::Unknown,
            incarnation: None,
            snapshot: None,
            events: VecDeque::new(),
            feed: broadcast::channel(1024).0,
        }
    }
}

/// Every configured peer, by name.
#[derive(Debug, Default)]
pub struct FleetBook {
    peers: BTreeMap<String, PeerRecord>,
}

impl FleetBook {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        FleetBook {
            peers: names
                .into_iter()
                .map(|n| (n.to_string(), PeerRecord::new()))
                .collect(),
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = (&String, &PeerRecord)> {
        self.peers.iter()
    }

    pub fn get(&self, name: &str) -> Option<&PeerRecord> {
        self.peers.get(name)
    }

    /// Takes news from the bus. A restarted peer (new incarnation) starts a
    /// new event history: its sequence numbers start again.
    pub fn take(&mut self, news: PeerNews) {
        match news {
            PeerNews::Snapshot {
                peer,
                incarnation,
                snapshot,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.incarnation.is_some_and(|i| i != incarnation) {
                        p.events.clear();
                    }
                    p.incarnation = Some(incarnation);
                    p.snapshot = Some((*snapshot, Instant::now()));
                }
            }
            PeerNews::Events { peer, events } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    for e in events {
                        if p.events.len() == KEEP_EVENTS {
                            p.events.pop_front();
                        }
                        p.events.push_back(e.clone());
                        let _ = p.feed.send(e);
                    }
                }
            }
            PeerNews::State {
                peer,
                state,
                incarnation,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.incarnation.is_some_and(|i| i != incarnation) {
                        p.events.clear();
                    }
                    p.state = state;
                    p.incarnation = Some(incarnation);
                }
            }
        }
    }

    /// A peer's events from `since` on, and a receiver for later ones.
    pub fn subscribe(
        &self,
        peer: &str,
        since: u64,
    ) -> Option<(Vec<ApiEvent>, broadcast::Receiver<ApiEvent>)> {
        let p = self.peers.get(peer)?;
        let backlog = p
            .events
            .iter()
            .filter(|e| e.seq >= since)
            .cloned()
            .collect();
        Some((backlog, p.feed.subscribe()))
    }
}

/// `peers` as the API shows it, from the bus's own view.
pub fn peer_status(bus: &dyn Bus) -> Vec<PeerStatus> {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    bus.peers()
        .into_iter()
        .map(|p| PeerStatus {
            decode_errors: p.decode_errors(),
            name: p.name,
            endpoint: p.endpoint,
            state: peer_state(p.state),
            incarnation: p.incarnation,
            last_heartbeat_age_ms: ms(p.last_heartbeat_age),
            snapshot_age_ms: ms(p.snapshot_age),
            messages_in: p.messages_in,
            messages_out: p.messages_out,
        })
        .collect()
}

/// Moves what arrives on the bus to the owner (news) and the service
/// (requests from peers, answered in their own tasks), until shutdown.
pub async fn bridge(
    mut inbox: Inbox,
    tx: mpsc::Sender<Event>,
    service: Service,
    shutdown: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = inbox.recv() => item,
        };
        let Some(item) = item else { return };
        let news = match item {
            Inbound::Snapshot {
                peer,
                incarnation,
                body,
                ..
            } => match serde_json::from_slice::<Snapshot>(&body) {
                Ok(snapshot) => PeerNews::Snapshot {
                    peer,
                    incarnation,
                    snapshot: Box::new(snapshot),
                },
                Err(e) => {
                    tracing::warn!(%peer, "a snapshot that does not read as one: {e}");
                    continue;
                }
            },
            Inbound::Events { peer, batch, .. } => {
                let events: Vec<ApiEvent> =
                    serde_json::from_slice::<Vec<serde_json::Value>>(&batch)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| serde_json::from_value(v).ok())
                        .collect();
                PeerNews::Events { peer, events }
            }
            Inbound::PeerChanged(c) => {
                tracing::info!(peer = %c.peer, incarnation = c.incarnation, "peer {}", c.state);
                PeerNews::State {
                    peer: c.peer,
                    state: peer_state(c.state),
                    incarnation: c.incarnation,
                }
            }
            Inbound::Request(req) => {
                let service = service.clone();
                let span = tracing::info_span!("remote_command", peer = %req.from);
                if let Some(tc) = &req.trace
                    && let Err(e) =
                        trace::set_remote_parent(&span, tc.traceparent(), tc.tracestate())
                {
                    tracing::debug!(peer = %req.from, "{e}");
                }
                tokio::spawn(
                    async move {
                        let from = req.from.clone();
                        let reply = answer(&service, &from, req.body.clone()).await;
                        let body = serde_json::to_vec(&Reply::from(reply)).unwrap_or_default();
                        if let Err(e) = req.reply(body.into()) {
                            tracing::warn!(peer = %from, "cannot reply: {e}");
                        }
                    }
                    .instrument(span),
                );
                continue;
            }
        };
        if tx.send(Event::Peer(news)).await.is_err() {
            return;
        }
    }
}

/// A peer's request, answered here: only requests for this host (a
/// request is never passed on, so it cannot go round).
async fn answer(
    service: &Service,
    from: &str,
    body: orch_federation::Bytes,
) -> Result<Response, ApiError> {
    let mut env: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("not a request: {e}")))?;
    match env.host.as_deref() {
        Some(h) if h != service.host() => {
            return Err(ApiError::new(
                ErrorCode::HostUnreachable,
                format!(
                    "{} does not pass requests on: ask host `{h}` directly",
                    service.host()
                ),
            ));
        }
        _ => env.host = None,
    }
    tracing::info!(peer = %from, op = env.request.name(), "request from a peer");
    service.call(env).await
}

/// Reaches other hosts over the bus.
#[derive(Debug)]
pub struct BusRemote {
    bus: Arc<dyn Bus>,
    tx: mpsc::Sender<Event>,
}

impl BusRemote {
    pub fn new(bus: Arc<dyn Bus>, tx: mpsc::Sender<Event>) -> Self {
        BusRemote { bus, tx }
    }
}

fn unreachable(host: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::HostUnreachable,
        format!("cannot reach host `{host}`: {why}"),
    )
}

#[async_trait]
impl Remote for BusRemote {
    async fn call(&self, host: &str, envelope: Envelope) -> Result<Response, ApiError> {
        let body = serde_json::to_vec(&envelope)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        // The peer's spans for this command continue this one's trace.
        let span = tracing::info_span!("remote_call", host = %host, op = envelope.request.name());
        let context = trace::traceparent(&span)
            .and_then(|(parent, state)| TraceContext::new(&parent, state.as_deref()).ok());
        let reply = self
            .bus
            .request(host, body.into(), context, REQUEST_TIMEOUT)
            .instrument(span)
            .await
            .map_err(|e| match e {
                RequestError::UnknownPeer { .. } => ApiError::new(
                    ErrorCode::HostUnreachable,
                    format!("no host `{host}` in this host's federation (`federation.peers`)"),
                ),
                other => unreachable(host, other),
            })?;
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("host `{host}` answered something unreadable: {e}"),
            )
        })?;
        reply.into()
    }

    /// A peer's events, exact and in order: what the peer pushed (kept by
    /// the owner) is used as it comes, and whatever is missing (before
    /// this host subscribed, or lost on a cut link) is asked of the peer
    /// itself, so a follower sees every number once.
    async fn events(
        &self,
        host: &str,
        since: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, ApiEvent>, ApiError> {
        // What the peer has now, asked of it directly.
        let pulled = match self
            .call(
                host,
                Envelope::new(
                    None,
                    orch_api::Request::Events {
                        since,
                        follow: false,
                    },
                ),
            )
            .await?
        {
            Response::Events(e) => e,
            other => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("host `{host}` answered events with {}", other.name()),
                ));
            }
        };
        if !follow {
            return Ok(futures_util::stream::iter(pulled).boxed());
        }
        let (tx, rx) = oneshot::channel();
        let ask = Event::SubscribePeer {
            peer: host.to_string(),
            since,
            reply: tx,
        };
        let gone = || ApiError::new(ErrorCode::Unavailable, "the daemon is shutting down");
        self.tx.send(ask).await.map_err(|_| gone())?;
        let (_, mut feed) = rx
            .await
            .map_err(|_| gone())?
            .ok_or_else(|| unreachable(host, "it is not a peer of this host"))?;
        let (out_tx, out_rx) = mpsc::channel::<ApiEvent>(1024);
        let remote = BusRemote {
            bus: self.bus.clone(),
            tx: self.tx.clone(),
        };
        let host = host.to_string();
        tokio::spawn(async move {
            let mut next = since.max(1);
            for e in pulled {
                next = e.seq + 1;
                if out_tx.send(e).await.is_err() {
                    return;
                }
            }
            loop {
                // A pushed event, or a quiet second: either way, fill any
                // gap from the peer before going on.
                let pushed = tokio::time::timeout(Duration::from_secs(1), feed.recv()).await;
                let want_pull = match &pushed {
                    Ok(Ok(e)) => e.seq > next,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => true,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return,
                };
                if want_pull {
                    let env = Envelope::new(
                        None,
                        orch_api::Request::Events {
                            since: next,
                            follow: false,
                        },
                    );
                    if let Ok(Response::Events(missing)) = remote.call(&host, env).await {
                        for e in missing {
                            if e.seq < next {
                                continue;
                            }
                            next = e.seq + 1;
                            if out_tx.send(e).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if let Ok(Ok(e)) = pushed
                    && e.seq == next
                {
                    next = e.seq + 1;
                    if out_tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        });
        Ok(stream.boxed())
    }
}
