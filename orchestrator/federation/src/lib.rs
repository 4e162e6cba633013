//! The federation bus: how the daemons of a fleet see and act on each other
//! without a control-plane cluster. This is the only crate that knows
//! ZeroMQ.
//!
//! - [`keys`]: this host's CURVE secret key file and peers' public keys.
//! - [`wire`]: the closed, versioned message set, frame by frame (specified
//!   in `docs/federation.md`).
//! - [`membership`]: the failure detector and subscription leases, pure.
//! - [`Bus`]: what the daemon uses; [`ZmqBus`] for real, [`MemBus`] on a
//!   [`MemNetwork`] for in-process tests. Both run the same protocol core,
//!   so a daemon test on `MemBus` exercises the same detector, snapshot and
//!   request rules.
//!
//! # Transport
//!
//! Each daemon binds one ROUTER socket (a CURVE server) on `listen` and
//! connects one DEALER (a CURVE client that knows the peer's public key) to
//! each peer. A ZAP handler admits only the configured peers' public keys
//! (default deny) and names each connection after its peer, so a message's
//! claimed host is checked against the key it came with. A host subscribes
//! to a peer by sending heartbeats over its DEALER; the peer keeps a lease
//! per subscriber, renewed by each heartbeat and expiring after
//! `down_after` intervals, and streams its own heartbeats, snapshots and
//! events back over its ROUTER to every live lease. Requests go out over
//! the caller's DEALER; replies come back on it.
//!
//! Why this rather than PUB/SUB plus REQ/REP: one port per host; a peer
//! that restarts or reconnects resubscribes with its next heartbeat (and is
//! sent the current snapshot at once), so a partition heals by itself when
//! ZeroMQ reconnects; and a foreign client (pyzmq) needs only one DEALER to
//! follow a host and to send it commands.
//!
//! All sockets live on one thread (ZeroMQ sockets are not thread-safe).
//! The async side hands it commands over a channel and wakes it through an
//! inproc socket, so a snapshot leaves as soon as it is published rather
//! than at the next poll timeout. The thread sends heartbeats on its own
//! schedule: a busy daemon is never declared down because its owner task is
//! slow.
//!
//! # Failure detection
//!
//! Fixed-interval heartbeats with miss counters, not SWIM (`foca`): the
//! peer list is static and short (2 to ~10 hosts), every host already
//! talks to every other, so indirect probing and gossip dissemination buy
//! nothing, while a direct detector is a small pure state machine whose
//! every rule is a table test. Incarnations (the daemon's start time in
//! Unix milliseconds) recognise restarts; sequences discard stale
//! heartbeats.

pub mod bus;
mod front;
mod guard;
pub mod inbox;
pub mod keys;
#[cfg(any(test, feature = "fake"))]
pub mod mem;
pub mod membership;
mod node;
pub mod wire;
pub mod zmq_bus;

pub use bus::{
    BoxFuture, Bus, BusConfig, ConfigError, Limits, PeerConfig, PeerView, PublishError,
    ReconfigureError, RequestError, Role, Strangers, check_peers, incarnation_now,
};
pub use bytes::Bytes;
pub use inbox::{Inbound, Inbox, IncomingRequest};
pub use keys::{KeyError, PublicKey, SecretKey};
#[cfg(any(test, feature = "fake"))]
pub use mem::{MemBus, MemNetwork};
pub use membership::{Change, PeerState, Timing};
pub use wire::{DropKind, TraceContext};
pub use zmq_bus::{StartError, ZmqBus};
