//! The bus over ZeroMQ with CURVE: one ROUTER on `listen`, one DEALER per
//! peer, a ZAP handler, all on one thread (see the crate doc for why).
//!
//! The thread owns every socket and the protocol [`Node`]. The async side
//! sends it [`Command`]s over a channel and wakes it through an inproc
//! PUSH/PULL pair; the thread's poll timeout is only its own schedule: the
//! next heartbeat, or the moment a silent peer's verdict falls due.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::{BoxFuture, Bus, BusConfig, Inbox, PeerView, PublishError, RequestError, unix_ms};
use crate::front::{Carrier, Command, Front, Inlet};
use crate::keys::{KEY_BYTES, PublicKey, SecretKey};
use crate::node::{self, Frames, Node, Out, PeerTable};
use crate::wire::{MAX_BODY, TraceContext};

/// The ZAP domain of the ROUTER socket.
const ZAP_DOMAIN: &str = "orchestrator";
/// Frames beyond the most any message has are drained, not kept.
const MAX_FRAMES: usize = 8;
/// Larger frames make libzmq drop the connection; between [`MAX_BODY`] and
/// this, they arrive and are counted as oversized.
const MAX_WIRE_FRAME: i64 = 2 * MAX_BODY as i64;
/// At most this many refused keys are remembered for logging, so a scan
/// with fresh keys cannot grow memory.
const MAX_LOGGED_REFUSALS: usize = 64;

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("this libzmq has no CURVE support; install Debian's libzmq5 (built with libsodium)")]
    NoCurve,
    #[error("cannot bind the federation listener on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot connect to peer `{peer}` at {endpoint}: {source}")]
    Connect {
        peer: String,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot set up a ZeroMQ socket: {0}")]
    Socket(#[from] zmq::Error),
    #[error("cannot start the federation thread: {0}")]
    Thread(std::io::Error),
}

/// What the bus thread is asked to do.
enum Order {
    Node(Command<Vec<u8>>),
    Stop,
}

/// Wakes the bus thread. A socket used from many tasks, hence the mutex;
/// each hold is one non-blocking send.
struct Waker(Mutex<zmq::Socket>);

impl Waker {
    fn wake(&self) {
        let socket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A full pipe means the thread has wake-ups queued already.
        let _ = socket.send(&b""[..], zmq::DONTWAIT);
    }
}

/// Sends orders to the thread and wakes it.
#[derive(Clone)]
struct Handle {
    orders: std_mpsc::Sender<Order>,
    waker: Arc<Waker>,
    start: Instant,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    fn order(&self, order: Order) -> Result<(), PublishError> {
        self.orders.send(order).map_err(|_| PublishError::Closed)?;
        self.waker.wake();
        Ok(())
    }
}

impl Carrier for Handle {
    type Route = Vec<u8>;

    fn send(&self, command: Command<Vec<u8>>) -> Result<(), PublishError> {
        self.order(Order::Node(command))
    }

    fn now(&self) -> u64 {
        millis_since(self.start)
    }
}

/// The federation bus over ZeroMQ. Dropping it stops its thread and closes
/// its sockets.
pub struct ZmqBus {
    front: Front<Handle>,
    local_endpoint: String,
    refused: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ZmqBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqBus")
            .field("host", &self.front.host)
            .field("incarnation", &self.front.incarnation)
            .field("local_endpoint", &self.local_endpoint)
            .finish_non_exhaustive()
    }
}

impl ZmqBus {
    /// Binds `config.listen`, connects to every peer and starts the bus
    /// thread. Must be called within a tokio runtime only for
    /// [`Bus::request`]'s timeout; the thread itself needs none.
    pub fn start(config: BusConfig, secret: &SecretKey) -> Result<(ZmqBus, Inbox), StartError> {
        if zmq::has("curve") != Some(true) {
            return Err(StartError::NoCurve);
        }
        let ctx = zmq::Context::new();
        // The ZAP handler must be bound before any CURVE socket accepts a
        // connection, or libzmq would admit every client key.
        let zap = ctx.socket(zmq::REP)?;
        zap.set_linger(0)?;
        zap.bind("inproc://zeromq.zap.01")?;

        let timing = config.timing;
        let hb = i32::try_from(timing.heartbeat_ms).unwrap_or(i32::MAX);
        let lease = i32::try_from(timing.lease_ms()).unwrap_or(i32::MAX);

        let router = ctx.socket(zmq::ROUTER)?;
        router.set_linger(0)?;
        router.set_curve_server(true)?;
        router.set_curve_secretkey(secret.secret_bytes())?;
        router.set_zap_domain(ZAP_DOMAIN)?;
        // Sends to a subscriber that went away fail instead of vanishing,
        // so its lease is dropped at once.
        router.set_router_mandatory(true)?;
        router.set_maxmsgsize(MAX_WIRE_FRAME)?;
        // ZMTP pings find dead TCP connections (a host that vanished
        // without closing them) so they are dropped and redialled.
        router.set_heartbeat_ivl(hb)?;
        router.set_heartbeat_timeout(lease)?;
        router
            .bind(&config.listen)
            .map_err(|source| StartError::Bind {
                endpoint: config.listen.clone(),
                source,
            })?;
        let local_endpoint = router
            .get_last_endpoint()?
            .unwrap_or_else(|_| config.listen.clone());

        let wake_rx = ctx.socket(zmq::PULL)?;
        wake_rx.set_linger(0)?;
        wake_rx.bind("inproc://federation-wake")?;
        let wake_tx = ctx.socket(zmq::PUSH)?;
        wake_tx.set_linger(0)?;
        wake_tx.connect("inproc://federation-wake")?;

        let mut dealers = Vec::with_capacity(config.peers.len());
        for peer in &config.peers {
            let dealer = ctx.socket(zmq::DEALER)?;
            dealer.set_linger(0)?;
            dealer.set_curve_serverkey(peer.public_key.as_bytes())?;
            dealer.set_curve_publickey(secret.public().as_bytes())?;
            dealer.set_curve_secretkey(secret.secret_bytes())?;
            // Nothing queues for a peer that is not connected: heartbeats
            // would be stale by then, and a request fails as unreachable.
            dealer.set_immediate(true)?;
            dealer.set_maxmsgsize(MAX_WIRE_FRAME)?;
            dealer.set_reconnect_ivl(100)?;
            dealer.set_reconnect_ivl_max(hb.clamp(100, 2000))?;
            dealer.set_heartbeat_ivl(hb)?;
            dealer.set_heartbeat_timeout(lease)?;
            dealer
                .connect(&peer.endpoint)
                .map_err(|source| StartError::Connect {
                    peer: peer.name.clone(),
                    endpoint: peer.endpoint.clone(),
                    source,
                })?;
            dealers.push((peer.name.clone(), dealer));
        }

        let peers: Vec<(String, String)> = config
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.endpoint.clone()))
            .collect();
        let node = Node::new(&config.host, config.incarnation, &peers, timing);
        let table = node.table();
        let (orders_tx, orders_rx) = std_mpsc::channel();
        let start = Instant::now();
        let handle = Handle {
            orders: orders_tx,
            waker: Arc::new(Waker(Mutex::new(wake_tx))),
            start,
        };
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let refused = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            node,
            table: Arc::clone(&table),
            allowed: config
                .peers
                .iter()
                .map(|p| (*p.public_key.as_bytes(), p.name.clone()))
                .collect(),
            refused: Arc::clone(&refused),
            logged_refusals: BTreeSet::new(),
            router,
            zap,
            wake: wake_rx,
            dealers,
            orders: orders_rx,
            inlet: Inlet::new(inbox_tx, Arc::clone(&table), handle.clone()),
            start,
            period: Duration::from_millis(timing.heartbeat_ms),
            _ctx: ctx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("federation-{}", config.host))
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        tracing::info!(host = %config.host, listen = %local_endpoint, peers = config.peers.len(), "federation bus started");
        let bus = ZmqBus {
            front: Front::new(config.host, config.incarnation, table, handle),
            local_endpoint,
            refused,
            thread: Some(thread),
        };
        Ok((bus, Inbox(inbox_rx)))
    }

    /// The endpoint actually bound (a `:0` port resolved).
    pub fn local_endpoint(&self) -> &str {
        &self.local_endpoint
    }

    /// Connections refused by the key allow-list since start.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ZmqBus {
    fn drop(&mut self) {
        let _ = self.front.carrier.order(Order::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Bus for ZmqBus {
    fn host(&self) -> &str {
        &self.front.host
    }

    fn incarnation(&self) -> u64 {
        self.front.incarnation
    }

    fn publish_snapshot(
        &self,
        body: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        self.front.publish_snapshot(body, trace)
    }

    fn publish_events(
        &self,
        batch: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), PublishError> {
        self.front.publish_events(batch, trace)
    }

    fn request(
        &self,
        peer: &str,
        body: Bytes,
        trace: Option<TraceContext>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, RequestError>> {
        let peer = peer.to_owned();
        Box::pin(async move { self.front.request(&peer, body, trace, timeout).await })
    }

    fn peers(&self) -> Vec<PeerView> {
        self.front.peers()
    }
}

/// The bus thread's state: every socket, and the protocol node.
struct Worker {
    node: Node<Vec<u8>>,
    table: Arc<Mutex<PeerTable>>,
    allowed: HashMap<[u8; KEY_BYTES], String>,
    refused: Arc<AtomicU64>,
    logged_refusals: BTreeSet<[u8; KEY_BYTES]>,
    router: zmq::Socket,
    zap: zmq::Socket,
    wake: zmq::Socket,
    dealers: Vec<(String, zmq::Socket)>,
    orders: std_mpsc::Receiver<Order>,
    inlet: Inlet<Handle>,
    start: Instant,
    period: Duration,
    // Dropped last: the sockets above belong to it.
    _ctx: zmq::Context,
}

impl Worker {
    fn run(mut self) {
        let mut next_beat = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_beat {
                let outs = self.node.tick(self.now(), unix_ms());
                self.carry(outs);
                next_beat += self.period;
                if next_beat <= now {
                    next_beat = now + self.period;
                }
            } else if self.node.next_check_at().is_some_and(|at| self.now() >= at) {
                let outs = self.node.check(self.now());
                self.carry(outs);
            }
            // Also wake when a silent peer's verdict is due: on the
            // heartbeat schedule alone it would come up to one interval
            // late, a quarter of the default time to `down`.
            let wake = match self.node.next_check_at() {
                Some(at) => next_beat.min(self.start + Duration::from_millis(at)),
                None => next_beat,
            };
            let wait = wake.saturating_duration_since(Instant::now());
            let timeout = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX) + 1;
            let readable = match self.poll(timeout) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "federation poll failed; stopping the bus thread");
                    return;
                }
            };
            if readable.zap {
                self.serve_zap();
            }
            if readable.wake {
                while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
            }
            // Commands are drained on every pass, not only when woken: a
            // wake-up lost to a full pipe must not strand one.
            loop {
                match self.orders.try_recv() {
                    Ok(Order::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => return,
                    Ok(Order::Node(command)) => {
                        let outs = self.node.command(self.now(), command);
                        self.carry(outs);
                    }
                    Err(std_mpsc::TryRecvError::Empty) => break,
                }
            }
            if readable.router {
                self.drain_router();
            }
            for i in readable.dealers {
                self.drain_dealer(i);
            }
        }
    }

    fn now(&self) -> u64 {
        millis_since(self.start)
    }

    fn poll(&self, timeout: i64) -> Result<Readable, zmq::Error> {
        let mut items = vec![
            self.router.as_poll_item(zmq::POLLIN),
            self.zap.as_poll_item(zmq::POLLIN),
            self.wake.as_poll_item(zmq::POLLIN),
        ];
        items.extend(
            self.dealers
                .iter()
                .map(|(_, d)| d.as_poll_item(zmq::POLLIN)),
        );
        zmq::poll(&mut items, timeout)?;
        Ok(Readable {
            router: items[0].is_readable(),
            zap: items[1].is_readable(),
            wake: items[2].is_readable(),
            dealers: (0..self.dealers.len())
                .filter(|i| items[3 + i].is_readable())
                .collect(),
        })
    }

    /// Answers ZAP requests (ZeroMQ RFC 27): a CURVE client whose key is a
    /// configured peer's is admitted under that peer's name; anything else
    /// is refused.
    fn serve_zap(&mut self) {
        while let Ok(request) = self.zap.recv_multipart(zmq::DONTWAIT) {
            // version, request id, domain, address, routing id, mechanism,
            // then the mechanism's credentials (CURVE: the client key).
            let request_id = request.get(1).cloned().unwrap_or_default();
            let key: Option<[u8; KEY_BYTES]> =
                (request.len() == 7 && request[0] == b"1.0" && request[5] == b"CURVE")
                    .then(|| request[6].as_slice().try_into().ok())
                    .flatten();
            let admitted = key.and_then(|k| self.allowed.get(&k).cloned());
            let reply: [&[u8]; 6] = match &admitted {
                Some(name) => [b"1.0", &request_id, b"200", b"OK", name.as_bytes(), b""],
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    self.log_refusal(key, request.get(3));
                    [b"1.0", &request_id, b"400", b"key not allowed", b"", b""]
                }
            };
            if let Err(e) = self.zap.send_multipart(reply, 0) {
                tracing::error!(error = %e, "cannot answer a ZAP request");
            }
        }
    }

    fn log_refusal(&mut self, key: Option<[u8; KEY_BYTES]>, address: Option<&Vec<u8>>) {
        let address = address
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        match key {
            Some(k)
                if self.logged_refusals.len() < MAX_LOGGED_REFUSALS
                    && self.logged_refusals.insert(k) =>
            {
                tracing::warn!(
                    key = %PublicKey::from_bytes(k),
                    %address,
                    "refused a federation connection: its key is not a configured peer's"
                );
            }
            Some(_) => {}
            None => tracing::debug!(%address, "refused a federation connection without CURVE"),
        }
    }

    fn carry(&mut self, outs: Vec<Out<Vec<u8>>>) {
        for out in outs {
            match out {
                Out::ToPeer {
                    peer,
                    frames,
                    request,
                } => {
                    if !self.send_to_peer(&peer, &frames)
                        && let Some(id) = request
                    {
                        self.node
                            .request_failed(id, RequestError::Unreachable { peer });
                    }
                }
                Out::ToSubscriber {
                    peer,
                    route,
                    frames,
                } => self.send_to_subscriber(&peer, &route, &frames),
                Out::Deliver(delivery) => self.inlet.deliver(delivery),
            }
        }
    }

    /// True when the peer's DEALER took the message.
    fn send_to_peer(&mut self, peer: &str, frames: &Frames) -> bool {
        let Some((_, dealer)) = self.dealers.iter().find(|(n, _)| n == peer) else {
            return false;
        };
        match dealer.send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT) {
            Ok(()) => {
                node::lock(&self.table).count_out(peer);
                true
            }
            // Not connected (or its queue is full): heartbeats are resent
            // anyway, and a request reports the peer unreachable.
            Err(_) => false,
        }
    }

    fn send_to_subscriber(&mut self, peer: &str, route: &[u8], frames: &Frames) {
        let sent = self
            .router
            .send(route, zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| {
                self.router
                    .send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT)
            });
        match sent {
            Ok(()) => node::lock(&self.table).count_out(peer),
            Err(zmq::Error::EHOSTUNREACH) => {
                tracing::debug!(peer, "a subscriber's connection is gone");
            }
            Err(e) => tracing::debug!(peer, error = %e, "a message to a subscriber was dropped"),
        }
    }

    fn drain_router(&mut self) {
        while let Some(mut frames) = recv_all(&self.router) {
            if frames.len() < 2 {
                continue;
            }
            // The ZAP handler named the connection after its peer.
            let Some(peer) = frames[1].gets("User-Id").map(str::to_owned) else {
                continue;
            };
            if !self.allowed.values().any(|n| *n == peer) {
                continue;
            }
            let route = frames[0].to_vec();
            let body: Vec<&[u8]> = frames[1..].iter().map(|m| &m[..]).collect();
            let outs = self.node.on_subscriber(self.now(), &peer, route, &body);
            self.carry(outs);
        }
    }

    fn drain_dealer(&mut self, i: usize) {
        loop {
            let Some(frames) = recv_all(&self.dealers[i].1) else {
                return;
            };
            let peer = self.dealers[i].0.clone();
            let body: Vec<&[u8]> = frames.iter().map(|m| &m[..]).collect();
            let outs = self.node.on_peer(self.now(), &peer, &body);
            self.carry(outs);
        }
    }
}

struct Readable {
    router: bool,
    zap: bool,
    wake: bool,
    dealers: Vec<usize>,
}

/// One whole multipart message, or `None` when none is waiting. Frames
/// past [`MAX_FRAMES`] are read and discarded (the message then fails to
/// decode for its frame count).
fn recv_all(socket: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let first = socket.recv_msg(zmq::DONTWAIT).ok()?;
    let mut more = first.get_more();
    let mut frames = vec![first];
    while more {
        let Ok(part) = socket.recv_msg(0) else {
            break;
        };
        more = part.get_more();
        if frames.len() < MAX_FRAMES {
            frames.push(part);
        }
    }
    Some(frames)
}
