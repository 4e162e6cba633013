//! What arrives for this host and where it comes out: the [`Inbound`]
//! items, the [`Inbox`] the daemon reads them from, and the shared counts
//! that bound each peer's share of it (bytes queued, requests in flight).
//! The transport's side that fills it is `front::Inlet`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use orch_api::{ApiError, ErrorCode};
use tokio::sync::{Notify, mpsc};

use crate::bus::{PublishError, Role};
use crate::membership::Change;
use crate::wire::TraceContext;

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

/// A request from a peer. Answer it with [`IncomingRequest::reply`]; one
/// dropped unanswered is answered with an `unavailable` error, so the
/// caller never waits for a reply that will not come. While it is
/// unanswered it counts against its peer's [`Limits::requests_in_flight`](crate::Limits::requests_in_flight).
pub struct IncomingRequest {
    pub from: String,
    /// What the sender's key may do here: the daemon decides by it which
    /// request kinds to accept.
    pub role: Role,
    pub body: Bytes,
    pub trace: Option<TraceContext>,
    pub(crate) responder: Option<Responder>,
    pub(crate) in_flight: Option<InFlight>,
}

impl IncomingRequest {
    /// Sends `body` (JSON) back to the caller. A body too large for one
    /// message is replaced by an error reply, so the caller hears at once,
    /// and the error is returned.
    pub fn reply(mut self, body: Bytes) -> Result<(), PublishError> {
        match self.responder.take() {
            Some(respond) => respond(body),
            None => Err(PublishError::Closed),
        }
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if let Some(respond) = self.responder.take() {
            let _ = respond(refusal(
                ErrorCode::Unavailable,
                "the host dropped the request without answering",
            ));
        }
        self.in_flight.take();
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("from", &self.from)
            .field("role", &self.role)
            .field("body", &self.body)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// Where inbound items come out. Peer state changes first and never
/// dropped (only the latest per peer is kept if several wait); then each
/// peer's items in its arrival order.
#[derive(Debug)]
pub struct Inbox(pub(crate) Outlet);

impl Inbox {
    /// The next item; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Inbound> {
        self.0.recv().await
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        self.0.try_recv()
    }
}

/// A control-API error reply (`orch_api::Reply::Err`), for the answers the
/// bus gives itself: a peer over its requests in flight, a reply too large
/// to send, a request dropped unanswered.
pub(crate) fn refusal(code: ErrorCode, message: impl Into<String>) -> Bytes {
    let reply = orch_api::Reply::Err(ApiError::new(code, message));
    match serde_json::to_vec(&reply) {
        Ok(body) => body.into(),
        // A struct of two strings always serialises; this keeps the
        // reply valid JSON all the same.
        Err(_) => Bytes::from_static(b"null"),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the inlet and the outlet share: each peer's bytes waiting and
/// requests in flight, and the peer state changes not yet taken. Every
/// hold is a few map updates.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) queued: Mutex<HashMap<String, usize>>,
    pub(crate) in_flight: Mutex<HashMap<String, usize>>,
    pub(crate) changes: Mutex<BTreeMap<String, Change>>,
    pub(crate) wake: Notify,
}

/// An inbox item, with the peer and the bytes it is charged to.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) peer: String,
    pub(crate) cost: usize,
    pub(crate) item: Inbound,
}

/// The daemon's end of the inbox.
#[derive(Debug)]
pub(crate) struct Outlet {
    pub(crate) rx: mpsc::UnboundedReceiver<Queued>,
    pub(crate) shared: Arc<Shared>,
}

impl Outlet {
    fn take_change(&self) -> Option<Inbound> {
        let mut changes = lock(&self.shared.changes);
        let peer = changes.keys().next()?.clone();
        changes.remove(&peer).map(Inbound::PeerChanged)
    }

    fn release(&self, queued: Queued) -> Inbound {
        if let Some(n) = lock(&self.shared.queued).get_mut(&queued.peer) {
            *n = n.saturating_sub(queued.cost);
        }
        queued.item
    }

    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        loop {
            if let Some(change) = self.take_change() {
                return Some(change);
            }
            tokio::select! {
                biased;
                () = self.shared.wake.notified() => {}
                item = self.rx.recv() => {
                    return match item {
                        Some(q) => Some(self.release(q)),
                        None => self.take_change(),
                    };
                }
            }
        }
    }

    pub(crate) fn try_recv(&mut self) -> Option<Inbound> {
        if let Some(change) = self.take_change() {
            return Some(change);
        }
        let q = self.rx.try_recv().ok()?;
        Some(self.release(q))
    }
}

/// A request being answered; counts against its peer's requests in
/// flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.shared.in_flight).get_mut(&self.peer) {
            *n = n.saturating_sub(1);
        }
    }
}
