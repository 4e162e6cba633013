//! The daemon's side of a bus, the same over ZeroMQ and in memory: it
//! numbers and encodes what the daemon publishes, hands it to the
//! transport as a [`Command`], and turns what the [`Node`] delivers into
//! [`Inbound`] items. A transport is a [`Carrier`]: how a command reaches
//! the node (a channel to the bus thread, or a function call) and which
//! clock the node runs on.
//!
//! [`Node`]: crate::node::Node

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use orch_api::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Limits, PeerView, PublishError, RequestError, Strangers};
use crate::inbox::{
    InFlight, Inbound, IncomingRequest, Outlet, Queued, Responder, Shared, lock, refusal,
};
use crate::node::{self, Command, Delivery, Frames, PeerTable};
use crate::wire::{self, DropKind, EncodeError, Envelope, MAX_BODY, Message, TraceContext};

/// How commands reach a node, and its clock.
pub(crate) trait Carrier: Clone + Send + Sync + 'static {
    /// How the transport names a subscriber's connection.
    type Route: Clone + PartialEq + Send + 'static;

    fn send(&self, command: Command<Self::Route>) -> Result<(), PublishError>;

    /// Milliseconds on the node's clock.
    fn now(&self) -> u64;
}

pub(crate) fn encode(trace: Option<TraceContext>, message: Message) -> Result<Frames, EncodeError> {
    wire::encode(&Envelope { trace, message }).map(Frames::from)
}

/// Everything of [`crate::Bus`] that does not depend on the transport.
#[derive(Debug)]
pub(crate) struct Front<C> {
    pub(crate) host: String,
    pub(crate) incarnation: u64,
    pub(crate) table: Arc<Mutex<PeerTable>>,
    pub(crate) carrier: C,
    next_id: AtomicU64,
    snapshot_seq: AtomicU64,
}

impl<C: Carrier> Front<C> {
    pub(crate) fn new(
        host: String,
        incarnation: u64,
        table: Arc<Mutex<PeerTable>>,
        carrier: C,
    ) -> Self {
        Front {
            host,
            incarnation,
            table,
            carrier,
            next_id: AtomicU64::new(1),
            snapshot_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn publish_snapshot(
        &self,
        body: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        let sequence = self.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let frames = encode(
            trace,
            Message::Snapshot(wire::Snapshot {
                host: self.host.clone(),
                incarnation: self.incarnation,
                sequence,
                body,
            }),
        )?;
        self.carrier.send(Command::Snapshot(frames))
    }

    pub(crate) fn publish_events(
        &self,
        batch: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        let frames = encode(
            trace,
            Message::Events(wire::Events {
                host: self.host.clone(),
                batch,
            }),
        )?;
        self.carrier.send(Command::Events(frames))
    }

    pub(crate) async fn request(
        &self,
        peer: &str,
        body: Bytes,
        trace: Option<TraceContext>,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frames = encode(
            trace,
            Message::Request(wire::Request {
                id,
                from: self.host.clone(),
                body,
            }),
        )?;
        let (tx, rx) = oneshot::channel();
        self.carrier
            .send(Command::Request {
                peer: peer.to_owned(),
                id,
                frames,
                reply: tx,
            })
            .map_err(|_| RequestError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::Timeout {
                peer: peer.to_owned(),
                after: timeout,
            }),
        }
    }

    pub(crate) fn peers(&self) -> Vec<PeerView> {
        node::lock(&self.table).views(self.carrier.now())
    }

    pub(crate) fn strangers(&self) -> Strangers {
        node::lock(&self.table).strangers()
    }
}

/// Where the node's deliveries enter the daemon's inbox, each peer within
/// its share ([`Limits`]).
#[derive(Debug)]
pub(crate) struct Inlet<C> {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
    table: Arc<Mutex<PeerTable>>,
    carrier: C,
    limits: Limits,
}

/// The two ends of an inbox.
pub(crate) fn inbox<C: Carrier>(
    table: Arc<Mutex<PeerTable>>,
    carrier: C,
    limits: Limits,
) -> (Inlet<C>, Outlet) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    let inlet = Inlet {
        tx,
        shared: Arc::clone(&shared),
        table,
        carrier,
        limits,
    };
    (inlet, Outlet { rx, shared })
}

impl<C: Carrier> Inlet<C> {
    pub(crate) fn deliver(&self, delivery: Delivery<C::Route>) {
        match delivery {
            Delivery::Item {
                item: Inbound::PeerChanged(change),
                ..
            } => {
                // Never dropped; a newer change of the same peer replaces
                // one not yet taken, so they cannot pile up.
                lock(&self.shared.changes).insert(change.peer.clone(), change);
                self.shared.wake.notify_one();
            }
            Delivery::Item { peer, item } => {
                let cost = match &item {
                    Inbound::Snapshot { body, .. } => body.len(),
                    Inbound::Events { batch, .. } => batch.len(),
                    Inbound::Request(r) => r.body.len(),
                    Inbound::PeerChanged(_) => 0,
                } + Limits::ITEM_COST;
                if self.charge(&peer, cost) {
                    self.queue(peer, cost, item);
                }
            }
            Delivery::Request {
                from,
                role,
                route,
                id,
                body,
                trace,
            } => {
                let responder = self.responder(from.clone(), route, id);
                let admitted = {
                    let mut in_flight = lock(&self.shared.in_flight);
                    let n = in_flight.entry(from.clone()).or_default();
                    let free = *n < self.limits.requests_in_flight;
                    if free {
                        *n += 1;
                    }
                    free
                };
                if !admitted {
                    node::lock(&self.table).drop_input(
                        &from,
                        DropKind::Busy,
                        &"a request beyond its requests in flight",
                    );
                    // Answered at once: the caller does not wait out its
                    // timeout for a request this host will not take.
                    let _ = responder(refusal(
                        ErrorCode::Unavailable,
                        format!(
                            "this host is answering {} requests from `{from}` already; try again when one is done",
                            self.limits.requests_in_flight
                        ),
                    ));
                    return;
                }
                let in_flight = InFlight {
                    shared: Arc::clone(&self.shared),
                    peer: from.clone(),
                };
                let cost = body.len() + Limits::ITEM_COST;
                let request = IncomingRequest {
                    from: from.clone(),
                    role,
                    body,
                    trace,
                    responder: Some(responder),
                    in_flight: Some(in_flight),
                };
                if self.charge(&from, cost) {
                    self.queue(from, cost, Inbound::Request(request));
                }
                // Otherwise dropping `request` answers it with an error.
            }
        }
    }

    /// Charges `cost` bytes to `peer`'s share, or counts a drop.
    fn charge(&self, peer: &str, cost: usize) -> bool {
        let mut queued = lock(&self.shared.queued);
        let used = queued.entry(peer.to_owned()).or_default();
        if *used + cost > self.limits.inbox_bytes_per_peer {
            drop(queued);
            node::lock(&self.table).drop_input(
                peer,
                DropKind::InboxFull,
                &"its share of the inbox is full",
            );
            return false;
        }
        *used += cost;
        true
    }

    fn queue(&self, peer: String, cost: usize, item: Inbound) {
        let queued = Queued { peer, cost, item };
        if let Err(mpsc::error::SendError(q)) = self.tx.send(queued) {
            // The daemon is gone; nothing waits for this.
            if let Some(n) = lock(&self.shared.queued).get_mut(&q.peer) {
                *n = n.saturating_sub(q.cost);
            }
        }
    }

    /// Sends a reply to request `id` back over `route`. A body too large
    /// for one message is replaced by an error the caller gets at once.
    fn responder(&self, peer: String, route: C::Route, id: u64) -> Responder {
        let carrier = self.carrier.clone();
        Box::new(move |body: Bytes| {
            let (frames, outcome) = match encode(None, Message::Reply(wire::Reply { id, body })) {
                Ok(frames) => (frames, Ok(())),
                Err(e) => {
                    let message = match &e {
                        EncodeError::TooLarge { len } => format!(
                            "the reply is {len} bytes, more than the {MAX_BODY} one federation message carries; ask for less"
                        ),
                        other => format!("the host could not encode its reply: {other}"),
                    };
                    let body = refusal(ErrorCode::Internal, message);
                    (
                        encode(None, Message::Reply(wire::Reply { id, body }))?,
                        Err(PublishError::Encode(e)),
                    )
                }
            };
            carrier.send(Command::Reply {
                peer,
                route,
                frames,
            })?;
            outcome
        })
    }
}
