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
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Inbound, IncomingRequest, PeerView, PublishError, RequestError};
use crate::node::{self, Delivery, Frames, PeerTable};
use crate::wire::{self, DropKind, Envelope, Message, TraceContext};

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

/// How commands reach a node, and its clock.
pub(crate) trait Carrier: Clone + Send + Sync + 'static {
    /// How the transport names a subscriber's connection.
    type Route: Clone + PartialEq + Send + 'static;

    fn send(&self, command: Command<Self::Route>) -> Result<(), PublishError>;

    /// Milliseconds on the node's clock.
    fn now(&self) -> u64;
}

pub(crate) fn encode(
    trace: Option<TraceContext>,
    message: Message,
) -> Result<Frames, wire::EncodeError> {
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
}

/// Where the node's deliveries enter the daemon's inbox.
#[derive(Debug)]
pub(crate) struct Inlet<C> {
    tx: mpsc::Sender<Inbound>,
    table: Arc<Mutex<PeerTable>>,
    carrier: C,
}

impl<C: Carrier> Inlet<C> {
    pub(crate) fn new(tx: mpsc::Sender<Inbound>, table: Arc<Mutex<PeerTable>>, carrier: C) -> Self {
        Inlet { tx, table, carrier }
    }

    pub(crate) fn deliver(&self, delivery: Delivery<C::Route>) {
        let (peer, item) = match delivery {
            Delivery::Item { peer, item } => (peer, item),
            Delivery::Request {
                from,
                route,
                id,
                body,
                trace,
            } => {
                let carrier = self.carrier.clone();
                let to = from.clone();
                let responder = Box::new(move |body: Bytes| {
                    let frames = encode(None, Message::Reply(wire::Reply { id, body }))?;
                    carrier.send(Command::Reply {
                        peer: to,
                        route,
                        frames,
                    })
                });
                let request = IncomingRequest {
                    from: from.clone(),
                    body,
                    trace,
                    responder,
                };
                (from, Inbound::Request(request))
            }
        };
        if self.tx.try_send(item).is_err() {
            node::lock(&self.table).drop_input(&peer, DropKind::InboxFull, &"the inbox is full");
        }
    }
}
