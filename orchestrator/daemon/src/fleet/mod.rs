//! The daemon's side of the federation, typed from end to end:
//!
//! - [`codec`]: the bodies daemons send each other (snapshot, events
//!   batch, request envelope, reply), one encode and one decode each,
//!   refusing what a peer may not say;
//! - [`book`]: what this host knows of its peers ([`FleetBook`], pure);
//! - [`remote`]: requests for another host ([`BusRemote`]) and the
//!   follower of its events;
//! - [`bridge`] (here): what arrives on the bus, decoded, to the owner
//!   (news) and to the [`Service`] (requests from peers).
//!
//! Only `orch-federation` knows ZeroMQ; this module sees a [`Bus`] (the
//! real `ZmqBus`, or a `MemBus` in tests), which carries these bodies as
//! bytes.

pub mod book;
pub mod codec;
pub mod remote;

use std::sync::Arc;

use orch_api::{ApiError, Rejection, Reply, Response};
use orch_federation::{Bus, Inbound, Inbox};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use book::FleetBook;
pub use remote::BusRemote;

use crate::event::{self, PeerNews};
use crate::service::Service;
use crate::trace;

/// The bus and what arrives on it, as `run` takes them.
#[derive(Debug)]
pub struct FederationDeps {
    pub bus: Arc<dyn Bus>,
    pub inbox: Inbox,
}

/// Moves what arrives on the bus to the owner (news, decoded and checked)
/// and the service (requests from peers, answered in their own tasks),
/// until shutdown.
pub async fn bridge(
    mut inbox: Inbox,
    news: event::Sender<PeerNews>,
    service: Service,
    shutdown: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = inbox.recv() => item,
        };
        let Some(item) = item else { return };
        let taken = match item {
            Inbound::Snapshot {
                peer,
                incarnation,
                body,
                ..
            } => match codec::decode_snapshot(&peer, &body) {
                Ok(snapshot) => vec![PeerNews::Snapshot {
                    peer,
                    incarnation,
                    snapshot: Box::new(snapshot),
                }],
                Err(e) => {
                    tracing::warn!(%peer, "snapshot refused: {e}");
                    vec![PeerNews::Refused { peer, bodies: 1 }]
                }
            },
            Inbound::Events { peer, batch, .. } => {
                let decoded = codec::decode_events(&peer, &batch);
                let mut taken = Vec::new();
                if let Some(first) = decoded.refused.first() {
                    tracing::warn!(%peer, refused = decoded.refused.len(), "events refused: {first}");
                    taken.push(PeerNews::Refused {
                        peer: peer.clone(),
                        bodies: decoded.refused.len() as u64,
                    });
                }
                taken.push(PeerNews::Events {
                    peer,
                    events: decoded.events,
                });
                taken
            }
            Inbound::PeerChanged(c) => {
                tracing::info!(peer = %c.peer, incarnation = c.incarnation, "peer {}", c.state);
                vec![PeerNews::State {
                    peer: c.peer,
                    state: book::peer_state(c.state),
                    incarnation: c.incarnation,
                }]
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
                        let reply = Reply::from(answer(&service, &from, &req.body).await);
                        let body = match codec::encode_reply(&reply) {
                            Ok(body) => body,
                            Err(e) => {
                                tracing::error!(peer = %from, "{e}");
                                return;
                            }
                        };
                        if let Err(e) = req.reply(body.into()) {
                            tracing::warn!(peer = %from, "cannot reply: {e}");
                        }
                    }
                    .instrument(span),
                );
                continue;
            }
        };
        for n in taken {
            if news.send(n).await.is_err() {
                return;
            }
        }
    }
}

/// A peer's request, answered here: only requests for this host (a
/// request is never passed on, so it cannot go round).
async fn answer(service: &Service, from: &str, body: &[u8]) -> Result<Response, ApiError> {
    let mut env = codec::decode_request(body)
        .map_err(|e| ApiError::from(Rejection::NotARequest { error: e.detail() }))?;
    match env.host.as_deref() {
        Some(h) if h != service.host() => {
            return Err(Rejection::NotPassedOn {
                this_host: service.host().to_string(),
                host: h.to_string(),
            }
            .into());
        }
        _ => env.host = None,
    }
    tracing::info!(peer = %from, op = env.request.name(), "request from a peer");
    service.call(env).await
}
