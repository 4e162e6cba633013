//! The daemon's side of the federation, typed from end to end:
//!
//! - [`codec`]: the bodies daemons send each other (snapshot, events
//!   batch, request envelope, reply), one encode and one decode each,
//!   refusing what a peer may not say;
//! - [`book`]: what this host knows of its peers ([`FleetBook`], pure);
//! - [`remote`]: requests for another host ([`BusRemote`]) and the
//!   follower of its events;
//! - [`probes`]: the health endpoints this host publishes, and direct
//!   probes of a down peer's agents through them;
//! - [`trust`]: who may ask what of this host (roles, remote commands,
//!   the operator's identity), request bounds by kind, and the audit line;
//! - [`bridge`] (here): what arrives on the bus, decoded, to the owner
//!   (news) and to the [`Service`] (requests from peers).
//!
//! Only `orch-federation` knows ZeroMQ; this module sees a [`Bus`] (the
//! real `ZmqBus`, or a `MemBus` in tests), which carries these bodies as
//! bytes.

pub mod book;
pub mod codec;
pub mod probes;
pub mod remote;
pub mod trust;

use std::sync::Arc;

use orch_api::{ApiError, Rejection, Reply, Response};
use orch_federation::{Bus, Bytes, Inbound, Inbox, Role};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use book::{FleetBook, Refused};
pub use remote::BusRemote;
pub use trust::Trust;

use crate::event::{self, PeerNews};
use crate::peer::Policy;
use crate::service::Service;
use crate::trace;
use orch_core::model::RemoteCommands;

/// The bus and what arrives on it, as `run` takes them.
#[derive(Debug)]
pub struct FederationDeps {
    pub bus: Arc<dyn Bus>,
    pub inbox: Inbox,
}

/// Moves what arrives on the bus to the owner (news, decoded and checked)
/// and the service (requests from peers, checked against `trust` and
/// answered in their own tasks), until shutdown. Refusals are counted
/// (the owner's book) and logged at a limited rate.
pub async fn bridge(
    mut inbox: Inbox,
    news: event::Sender<PeerNews>,
    service: Service,
    remote_commands: watch::Receiver<RemoteCommands>,
    policy: Policy,
    shutdown: CancellationToken,
) {
    let mut log = trust::RateLimitedLog::default();
    // Refused commands are answered in their own tasks.
    let command_log = Arc::new(std::sync::Mutex::new(trust::RateLimitedLog::default()));
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
                    let reason = Refused::of(&e);
                    if let Some(held) = log.admit(
                        &peer,
                        reason.label(),
                        tokio::time::Instant::now().into_std(),
                    ) {
                        tracing::warn!(%peer, held_back = held, "snapshot refused: {e}");
                    }
                    vec![PeerNews::Refused {
                        peer,
                        reason,
                        bodies: 1,
                    }]
                }
            },
            Inbound::Events { peer, batch, .. } => {
                let decoded = codec::decode_events(&peer, &batch);
                let mut taken = Vec::new();
                if let Some(first) = decoded.refused.first() {
                    let reason = Refused::of(first);
                    if let Some(held) = log.admit(
                        &peer,
                        reason.label(),
                        tokio::time::Instant::now().into_std(),
                    ) {
                        tracing::warn!(%peer, refused = decoded.refused.len(), held_back = held, "events refused: {first}");
                    }
                }
                let mut counts: std::collections::BTreeMap<Refused, u64> = Default::default();
                for e in &decoded.refused {
                    *counts.entry(Refused::of(e)).or_default() += 1;
                }
                for (reason, bodies) in counts {
                    taken.push(PeerNews::Refused {
                        peer: peer.clone(),
                        reason,
                        bodies,
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
                let trust = Trust {
                    remote_commands: *remote_commands.borrow(),
                    policy,
                };
                let news = news.clone();
                let command_log = command_log.clone();
                tokio::spawn(
                    async move {
                        let from = req.from.clone();
                        let answered = answer(
                            &service,
                            &from,
                            req.role,
                            req.body.clone(),
                            trust,
                            &command_log,
                        )
                        .await;
                        if let Some(reason) = answered.refused
                            && news
                                .send(PeerNews::Refused {
                                    peer: from.clone(),
                                    reason,
                                    bodies: 1,
                                })
                                .await
                                .is_err()
                        {
                            return;
                        }
                        let reply = Reply::from(answered.reply);
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

/// Whether a change of the `federation` section needs a restart: one
/// added or removed, or a change of where this host listens, its key
/// file or its timing. Peers (added, removed, re-keyed, their roles) and
/// `remote_commands` are taken by `reload`.
pub fn restart_only(
    old: Option<&orch_core::model::Federation>,
    new: Option<&orch_core::model::Federation>,
) -> bool {
    match (old, new) {
        (None, None) => false,
        (Some(o), Some(n)) => {
            // Every field named: a new one needs a decision here.
            let orch_core::model::Federation {
                listen,
                peers: _,
                secret_key_file,
                heartbeat,
                suspect_after,
                down_after,
                remote_commands: _,
                peer_grace: _,
            } = o;
            *listen != n.listen
                || *secret_key_file != n.secret_key_file
                || *heartbeat != n.heartbeat
                || *suspect_after != n.suspect_after
                || *down_after != n.down_after
        }
        _ => true,
    }
}

/// A peer's answered request, and why it was refused if it was refused
/// unread, over its bound or by the rules of [`trust`] (counted against
/// the peer).
struct Answered {
    reply: Result<Response, ApiError>,
    refused: Option<Refused>,
}

/// A peer's request, answered here: only requests for this host (a
/// request is never passed on, so it cannot go round), within the bound
/// of its kind, and only what the sender's role, `remote_commands` and
/// the operator's identity allow. Every state-changing one is audited.
async fn answer(
    service: &Service,
    from: &str,
    role: Role,
    body: Bytes,
    trust: Trust,
    log: &std::sync::Mutex<trust::RateLimitedLog>,
) -> Answered {
    let plain = |reply| Answered {
        reply,
        refused: None,
    };
    let refused = |reason, e: Rejection| Answered {
        reply: Err(e.into()),
        refused: Some(reason),
    };
    // The largest kind's bound first, before the body is decoded.
    if body.len() > trust::CONFIG_BODY_LIMIT {
        return refused(Refused::Oversized, trust::BodyKind::Config.too_large());
    }
    let mut env = match codec::decode_request(&body) {
        Ok(env) => env,
        Err(e) => {
            let e = Rejection::NotARequest { error: e.detail() };
            return refused(Refused::Undecodable, e);
        }
    };
    let kind = trust::BodyKind::of(&env.request);
    if body.len() > kind.limit() {
        return refused(Refused::Oversized, kind.too_large());
    }
    match env.host.as_deref() {
        Some(h) if h != service.host() => {
            return plain(Err(Rejection::NotPassedOn {
                this_host: service.host().to_string(),
                host: h.to_string(),
            }
            .into()));
        }
        _ => env.host = None,
    }
    let audit = trust::Audit::of(from, role, &env);
    if let Err(refusal) = trust.check(service.host(), from, role, &env) {
        let e = ApiError::from(refusal);
        // A flood of refused commands is logged at a limited rate, with
        // the number held back; each is counted all the same.
        let admitted = log
            .lock()
            .map(|mut l| {
                l.admit(
                    from,
                    Refused::Command.label(),
                    tokio::time::Instant::now().into_std(),
                )
            })
            .unwrap_or(Some(0));
        if let (Some(a), Some(held)) = (&audit, admitted) {
            a.refused(&e.message, held);
        }
        return Answered {
            reply: Err(e),
            refused: Some(Refused::Command),
        };
    }
    tracing::info!(peer = %from, op = env.request.name(), "request from a peer");
    let reply = service.call(env).await;
    if let Some(a) = &audit {
        a.answered(reply.as_ref().err().map(|e| e.message.as_str()));
    }
    plain(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orch_core::model::{Federation, RemoteCommands};

    use super::restart_only;

    fn fed() -> Federation {
        Federation {
            listen: "tcp://0.0.0.0:7100".into(),
            peers: Vec::new(),
            secret_key_file: None,
            heartbeat: Federation::DEFAULT_HEARTBEAT,
            suspect_after: 2,
            down_after: 3,
            remote_commands: RemoteCommands::Operate,
            peer_grace: Federation::DEFAULT_PEER_GRACE,
        }
    }

    #[test]
    fn peers_remote_commands_and_peer_grace_are_reloaded_the_rest_waits_for_a_restart() {
        let old = fed();
        let mut new = fed();
        new.remote_commands = RemoteCommands::Admin;
        new.peer_grace = std::time::Duration::from_secs(30).into();
        new.peers.push(orch_core::model::Peer {
            name: "pc2".into(),
            endpoint: "tcp://pc2:7100".into(),
            public_key: "k".into(),
            next_public_key: Some("n".into()),
            role: orch_core::model::PeerRole::Monitor,
            probe_address: None,
        });
        assert!(!restart_only(Some(&old), Some(&new)));
        assert!(!restart_only(None, None));
        assert!(restart_only(None, Some(&new)));
        assert!(restart_only(Some(&old), None));
        let changes: [fn(&mut Federation); 5] = [
            |f| f.listen = "tcp://0.0.0.0:7200".into(),
            |f| f.secret_key_file = Some("/k".into()),
            |f| f.heartbeat = std::time::Duration::from_secs(1).into(),
            |f| f.suspect_after = 5,
            |f| f.down_after = 9,
        ];
        for change in changes {
            let mut new = fed();
            change(&mut new);
            assert!(restart_only(Some(&old), Some(&new)), "{new:?}");
        }
    }
}
