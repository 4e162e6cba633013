//! Requests for another host over the bus ([`BusRemote`]), and the
//! follower of that host's events ([`Follower`]): exact and in order,
//! from what the peer pushed and what is asked of it when a gap shows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use orch_api::{ApiError, Asked, Envelope, Event, Rejection, Reply, Request, Response};
use orch_federation::{Bus, RequestError, TraceContext};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument as _;

use super::codec;
use crate::event::{self, SubscribePeer};
use crate::service::Remote;
use crate::trace;

/// How long a request to another host may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A follower with nothing pushed for this long asks the peer whether it
/// missed anything.
pub const QUIET: Duration = Duration::from_secs(1);

/// Reaches other hosts over the bus.
#[derive(Debug, Clone)]
pub struct BusRemote {
    bus: Arc<dyn Bus>,
    feeds: event::Sender<SubscribePeer>,
}

impl BusRemote {
    pub fn new(bus: Arc<dyn Bus>, feeds: event::Sender<SubscribePeer>) -> Self {
        BusRemote { bus, feeds }
    }

    /// `host`'s events from `since` on, asked of it directly.
    async fn pull(&self, host: &str, since: u64) -> Result<Vec<Event>, ApiError> {
        let ask = Envelope::new(
            None,
            Request::Events {
                since,
                follow: false,
            },
        );
        match self.call(host, ask).await? {
            Response::Events(e) => Ok(e),
            other => Err(Rejection::WrongReply {
                host: host.to_string(),
                asked: Asked::Events,
                got: other.name().to_string(),
            }
            .into()),
        }
    }
}

#[async_trait]
impl Remote for BusRemote {
    async fn call(&self, host: &str, envelope: Envelope) -> Result<Response, ApiError> {
        let body = codec::encode_request(&envelope).map_err(|e| {
            ApiError::from(Rejection::NotEncoded {
                error: e.to_string(),
            })
        })?;
        // The peer's spans for this command continue this one's trace.
        let span = tracing::info_span!("remote_call", host = %host, op = envelope.request.name());
        let context = trace::traceparent(&span)
            .and_then(|(parent, state)| TraceContext::new(&parent, state.as_deref()).ok());
        let reply = self
            .bus
            .request(host, body.into(), context, REQUEST_TIMEOUT)
            .instrument(span)
            .await
            .map_err(|e| {
                ApiError::from(match e {
                    RequestError::UnknownPeer { .. } => Rejection::NotAPeer {
                        host: host.to_string(),
                    },
                    other => Rejection::Unreachable {
                        host: host.to_string(),
                        why: other.to_string(),
                    },
                })
            })?;
        let reply: Reply = codec::decode_reply(&reply).map_err(|e| {
            ApiError::from(Rejection::UnreadableReply {
                host: host.to_string(),
                error: e.to_string(),
            })
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
    ) -> Result<BoxStream<'static, Event>, ApiError> {
        let pulled = self.pull(host, since).await?;
        if !follow {
            return Ok(futures_util::stream::iter(pulled).boxed());
        }
        let (tx, rx) = oneshot::channel();
        let ask = SubscribePeer {
            peer: host.to_string(),
            since,
            reply: tx,
        };
        let gone = || ApiError::from(Rejection::ShuttingDown);
        self.feeds.send(ask).await.map_err(|_| gone())?;
        let (_, feed) = rx.await.map_err(|_| gone())?.ok_or_else(|| {
            ApiError::from(Rejection::NotFollowable {
                host: host.to_string(),
            })
        })?;
        let (out_tx, out_rx) = mpsc::channel::<Event>(1024);
        let follower = Follower::new(
            PullOver {
                remote: self.clone(),
                host: host.to_string(),
            },
            since,
        );
        tokio::spawn(follower.run(pulled, feed, out_tx));
        let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        });
        Ok(stream.boxed())
    }
}

/// Asks a peer for its events from a number on.
#[async_trait]
pub trait Pull: Send + Sync {
    async fn pull(&self, since: u64) -> Result<Vec<Event>, ApiError>;
}

/// [`Pull`] over the bus, from one host.
#[derive(Debug)]
struct PullOver {
    remote: BusRemote,
    host: String,
}

#[async_trait]
impl Pull for PullOver {
    async fn pull(&self, since: u64) -> Result<Vec<Event>, ApiError> {
        self.remote.pull(&self.host, since).await
    }
}

/// Follows one peer's events: each number once, in order, none missed
/// while the peer can still say it.
#[derive(Debug)]
pub struct Follower<P> {
    pull: P,
    /// The number of the next event to pass on.
    next: u64,
}

impl<P: Pull> Follower<P> {
    pub fn new(pull: P, since: u64) -> Self {
        Follower {
            pull,
            next: since.max(1),
        }
    }

    /// Passes `e` on if it is the next one; skips what was already passed.
    fn take(&mut self, e: Event) -> Option<Event> {
        if e.seq < self.next {
            return None;
        }
        self.next = e.seq + 1;
        Some(e)
    }

    /// Sends `backlog`, then what `feed` pushes, filling every gap (a
    /// pushed number past the next one, a lagging feed, a quiet
    /// [`QUIET`]) from the peer, until `out` or `feed` closes.
    pub async fn run(
        mut self,
        backlog: Vec<Event>,
        mut feed: broadcast::Receiver<Event>,
        out: mpsc::Sender<Event>,
    ) {
        for e in backlog {
            if let Some(e) = self.take(e)
                && out.send(e).await.is_err()
            {
                return;
            }
        }
        loop {
            let pushed = tokio::time::timeout(QUIET, feed.recv()).await;
            let gap = match &pushed {
                Ok(Ok(e)) => e.seq > self.next,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            };
            if gap && let Ok(missing) = self.pull.pull(self.next).await {
                for e in missing {
                    if let Some(e) = self.take(e)
                        && out.send(e).await.is_err()
                    {
                        return;
                    }
                }
            }
            if let Ok(Ok(e)) = pushed
                && e.seq == self.next
                && let Some(e) = self.take(e)
                && out.send(e).await.is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
