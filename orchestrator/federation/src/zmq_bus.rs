//! The bus over ZeroMQ with CURVE: one ROUTER on `listen`, one DEALER per
//! peer, a ZAP handler, all on one thread (see the crate doc for why).
//!
//! The thread owns every socket and the protocol [`Node`]. The async side
//! sends it [`Command`]s over a channel and wakes it through an inproc
//! PUSH/PULL pair; the thread's poll timeout is its own schedule: the next
//! heartbeat, the moment a silent peer's verdict falls due, or the next
//! check of what each connection holds ([`guard`]). That check runs when
//! bytes arrive on a connection ([`guard::Arrivals`]) and, while one
//! holds much, on a short timer: a quiet bus does not wake for it.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bus::{
    BoxFuture, Bus, BusConfig, Limits, PeerConfig, PeerView, PublishError, ReconfigureError,
    RequestError, Role, Strangers, check_peers, unix_ms,
};
use crate::front::{self, Carrier, Front, Inlet};
use crate::guard::{self, Arrivals, Ledger, SocketEvent, Verdict};
use crate::inbox::Inbox;
use crate::keys::{KEY_BYTES, PublicKey, SecretKey};
use crate::membership::Timing;
use crate::node::{self, Command, Frames, LogLimit, Node, Out, PeerTable};
use crate::wire::{DropKind, MAX_BODY, TraceContext};

/// The ZAP domain of the ROUTER socket.
const ZAP_DOMAIN: &str = "orchestrator";
/// Frames beyond the most any message has are drained, not kept.
const MAX_FRAMES: usize = 8;
/// Larger frames make libzmq drop the connection; between [`MAX_BODY`] and
/// this, they arrive and are counted as oversized.
const MAX_WIRE_FRAME: i64 = MAX_BODY as i64 + 64 * 1024;
/// How often each connection's held bytes are checked against its budget
/// while one holds more than [`QUIET`], and at most how often bytes
/// arriving make a check: at the few hundred MB/s one libzmq I/O thread
/// decrypts, a connection gains at most some MB between two checks. While
/// nothing arrives nothing is checked: what a connection holds grows only
/// with what arrives on it.
const CHECK_BUSY: Duration = Duration::from_millis(20);
/// What a connection may hold and still count as quiet.
const QUIET: u64 = 1024 * 1024;
/// Distinct unknown keys whose refusals are rate-limited one by one; a
/// scan with fresh keys beyond it shares one limit.
const MAX_LOGGED_KEYS: usize = 256;

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
    #[error(transparent)]
    Config(#[from] crate::bus::ConfigError),
    #[error("cannot set up a ZeroMQ socket: {0}")]
    Socket(#[from] zmq::Error),
    #[error("cannot start the federation thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot watch the federation connections: {0}")]
    Watch(std::io::Error),
}

/// What the bus thread is asked to do.
enum Order {
    Node(Command<Vec<u8>>),
    Reconfigure {
        peers: Vec<PeerConfig>,
        done: std_mpsc::Sender<Result<(), ReconfigureError>>,
    },
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

/// A socket's monitor: a PAIR receiving its connection events.
fn monitor(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    name: &str,
) -> Result<zmq::Socket, zmq::Error> {
    let endpoint = format!("inproc://federation-monitor-{name}");
    socket.monitor(&endpoint, guard::EVENTS)?;
    let pair = ctx.socket(zmq::PAIR)?;
    pair.set_linger(0)?;
    pair.connect(&endpoint)?;
    Ok(pair)
}

/// One dialled key of a peer: a DEALER, its monitor and its ledger.
struct Dealer {
    peer: String,
    endpoint: String,
    key: PublicKey,
    socket: zmq::Socket,
    monitor: zmq::Socket,
    ledger: Ledger,
}

/// How often libzmq pings a connection (ZMTP PING, answered by a PONG),
/// each end on its own: once a lease. The bus's own heartbeats say whether
/// a peer is alive, every `heartbeat`; the pings only find a TCP
/// connection that died without closing (a host that vanished, a cut
/// link), which then gets no answer within `heartbeat_timeout` (a lease)
/// and is dropped and redialled: within two leases (3 s by default; a
/// ping every heartbeat took a heartbeat and a lease, 2 s, for
/// `down_after` times the frames, each encrypted and each waking both
/// ends' bus threads on a quiet link).
fn zmtp_ping_ms(timing: &Timing) -> i32 {
    i32::try_from(timing.lease_ms().max(timing.heartbeat_ms)).unwrap_or(i32::MAX)
}

struct Dialer {
    ctx: zmq::Context,
    secret: SecretKey,
    timing: Timing,
    next: u64,
}

impl Dialer {
    fn dial(&mut self, peer: &PeerConfig, key: PublicKey) -> Result<Dealer, StartError> {
        let hb = i32::try_from(self.timing.heartbeat_ms).unwrap_or(i32::MAX);
        let lease = i32::try_from(self.timing.lease_ms()).unwrap_or(i32::MAX);
        let ping = zmtp_ping_ms(&self.timing);
        let dealer = self.ctx.socket(zmq::DEALER)?;
        dealer.set_linger(0)?;
        dealer.set_curve_serverkey(key.as_bytes())?;
        dealer.set_curve_publickey(self.secret.public().as_bytes())?;
        dealer.set_curve_secretkey(self.secret.secret_bytes())?;
        // Nothing queues for a peer that is not connected: heartbeats
        // would be stale by then, and a request fails as unreachable.
        dealer.set_immediate(true)?;
        dealer.set_maxmsgsize(MAX_WIRE_FRAME)?;
        dealer.set_reconnect_ivl(100)?;
        dealer.set_reconnect_ivl_max(hb.clamp(100, 2000))?;
        dealer.set_heartbeat_ivl(ping)?;
        dealer.set_heartbeat_timeout(lease)?;
        self.next += 1;
        let monitor = monitor(&self.ctx, &dealer, &format!("dealer-{}", self.next))?;
        dealer
            .connect(&peer.endpoint)
            .map_err(|source| StartError::Connect {
                peer: peer.name.clone(),
                endpoint: peer.endpoint.clone(),
                source,
            })?;
        Ok(Dealer {
            peer: peer.name.clone(),
            endpoint: peer.endpoint.clone(),
            key,
            socket: dealer,
            monitor,
            ledger: Ledger::default(),
        })
    }
}

/// Raises this process's open-file limit to its hard limit: the bus holds
/// one descriptor per connection, and libzmq's listener retries a failed
/// accept at once, so running out is to be kept far away.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
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
        check_peers(&config.peers)?;
        raise_fd_limit();
        let ctx = zmq::Context::new();
        // The ZAP handler must be bound before any CURVE socket accepts a
        // connection, or libzmq would admit every client key.
        let zap = ctx.socket(zmq::REP)?;
        zap.set_linger(0)?;
        zap.bind("inproc://zeromq.zap.01")?;

        let timing = config.timing;
        let limits = config.limits;
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
        // A connection that does not finish its handshake soon is closed
        // by libzmq itself (the default is 30 s).
        router.set_handshake_ivl(i32::try_from(limits.handshake_ms).unwrap_or(i32::MAX))?;
        // ZMTP pings find dead TCP connections (a host that vanished
        // without closing them) so they are dropped and redialled.
        router.set_heartbeat_ivl(zmtp_ping_ms(&timing))?;
        router.set_heartbeat_timeout(lease)?;
        let router_monitor = monitor(&ctx, &router, "router")?;
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

        let mut dialer = Dialer {
            ctx: ctx.clone(),
            secret: secret.clone(),
            timing,
            next: 0,
        };
        let mut dealers = Vec::new();
        for peer in config.peers.iter().filter(|p| p.role == Role::Peer) {
            for key in &peer.public_keys {
                dealers.push(dialer.dial(peer, *key)?);
            }
        }

        let node = Node::new(&config.host, config.incarnation, &config.peers, timing);
        let table = node.table();
        let (orders_tx, orders_rx) = std_mpsc::channel();
        let start = Instant::now();
        let handle = Handle {
            orders: orders_tx,
            waker: Arc::new(Waker(Mutex::new(wake_tx))),
            start,
        };
        let (inlet, outlet) = front::inbox(Arc::clone(&table), handle.clone(), limits);
        let worker = Worker {
            arrivals: Arrivals::new().map_err(StartError::Watch)?,
            check_soon: true,
            node,
            table: Arc::clone(&table),
            allowed: allowed(&config.peers),
            refusals: HashMap::new(),
            fd_log: LogLimit::default(),
            router,
            router_monitor,
            router_ledger: Ledger::default(),
            zap,
            wake: wake_rx,
            dealers,
            dialer,
            peers: config.peers.clone(),
            orders: orders_rx,
            inlet,
            limits,
            start,
            period: Duration::from_millis(timing.heartbeat_ms),
        };
        let thread = std::thread::Builder::new()
            .name(format!("federation-{}", config.host))
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        tracing::info!(host = %config.host, listen = %local_endpoint, peers = config.peers.len(), "federation bus started");
        let bus = ZmqBus {
            front: Front::new(config.host, config.incarnation, table, handle),
            local_endpoint,
            thread: Some(thread),
        };
        Ok((bus, Inbox(outlet)))
    }

    /// The endpoint actually bound (a `:0` port resolved).
    pub fn local_endpoint(&self) -> &str {
        &self.local_endpoint
    }

    /// Connections refused by the key allow-list since start.
    pub fn refused_connections(&self) -> u64 {
        let s = self.front.strangers();
        s.unknown_keys + s.without_curve
    }
}

fn allowed(peers: &[PeerConfig]) -> HashMap<[u8; KEY_BYTES], String> {
    peers
        .iter()
        .flat_map(|p| {
            p.public_keys
                .iter()
                .map(|k| (*k.as_bytes(), p.name.clone()))
        })
        .collect()
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

    fn strangers(&self) -> Strangers {
        self.front.strangers()
    }

    fn reconfigure(&self, peers: Vec<PeerConfig>) -> Result<(), ReconfigureError> {
        check_peers(&peers)?;
        let (done, result) = std_mpsc::channel();
        self.front
            .carrier
            .order(Order::Reconfigure { peers, done })
            .map_err(|_| ReconfigureError::Closed)?;
        result.recv().map_err(|_| ReconfigureError::Closed)?
    }
}

/// The bus thread's state: every socket, and the protocol node.
struct Worker {
    /// Reports bytes arriving on the ledgers' connections.
    arrivals: Arrivals,
    /// A connection opened since the last check (pending handshakes are
    /// capped there).
    check_soon: bool,
    node: Node<Vec<u8>>,
    table: Arc<Mutex<PeerTable>>,
    /// Admitted keys, all roles, and the peer each names.
    allowed: HashMap<[u8; KEY_BYTES], String>,
    /// Log limits of refused unknown keys (at most [`MAX_LOGGED_KEYS`]).
    refusals: HashMap<Option<[u8; KEY_BYTES]>, LogLimit>,
    fd_log: LogLimit,
    router: zmq::Socket,
    router_monitor: zmq::Socket,
    router_ledger: Ledger,
    zap: zmq::Socket,
    wake: zmq::Socket,
    dealers: Vec<Dealer>,
    dialer: Dialer,
    peers: Vec<PeerConfig>,
    orders: std_mpsc::Receiver<Order>,
    inlet: Inlet<Handle>,
    limits: Limits,
    start: Instant,
    period: Duration,
}

impl Worker {
    fn run(mut self) {
        let mut next_beat = Instant::now();
        let mut last_check = Instant::now();
        // `None`: no check due until something arrives.
        let mut next_check: Option<Instant> = Some(last_check);
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
            if std::mem::take(&mut self.check_soon) && next_check.is_none() {
                next_check = Some(now.max(last_check + CHECK_BUSY));
            }
            if next_check.is_some_and(|at| now >= at) {
                let busy = self.check_connections();
                last_check = now;
                // INVARIANT: a connection holding more than QUIET is
                // checked on the timer; below it, bytes arriving make the
                // next check, so the bound holds with no check while quiet.
                next_check = busy.then(|| now + CHECK_BUSY);
            }
            // Also wake when a silent peer's verdict is due: on the
            // heartbeat schedule alone it would come up to one interval
            // late, a quarter of the default time to `down`.
            let mut wake = next_beat;
            if let Some(at) = self.node.next_check_at() {
                wake = wake.min(self.start + Duration::from_millis(at));
            }
            if let Some(at) = next_check {
                wake = wake.min(at);
            }
            let wait = wake.saturating_duration_since(Instant::now());
            let timeout = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX) + 1;
            // While a check is due anyway, arrivals need not wake the
            // thread (a flood would wake it for every packet).
            let readable = match self.poll(timeout, next_check.is_none()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "federation poll failed; stopping the bus thread");
                    return;
                }
            };
            if readable.monitors {
                self.read_monitors();
            }
            if readable.arrivals && self.arrivals.drain() && next_check.is_none() {
                next_check = Some(Instant::now().max(last_check + CHECK_BUSY));
            }
            if readable.zap {
                self.serve_zap();
            }
            if readable.wake {
                while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
            }
            // Orders are drained on every pass, not only when woken: a
            // wake-up lost to a full pipe must not strand one.
            loop {
                match self.orders.try_recv() {
                    Ok(Order::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => return,
                    Ok(Order::Node(command)) => {
                        let outs = self.node.command(self.now(), command);
                        self.carry(outs);
                    }
                    Ok(Order::Reconfigure { peers, done }) => {
                        let _ = done.send(self.reconfigure(peers));
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

    fn poll(&self, timeout: i64, arrivals: bool) -> Result<Readable, zmq::Error> {
        let mut items = vec![
            self.router.as_poll_item(zmq::POLLIN),
            self.zap.as_poll_item(zmq::POLLIN),
            self.wake.as_poll_item(zmq::POLLIN),
            self.router_monitor.as_poll_item(zmq::POLLIN),
        ];
        items.extend(
            self.dealers
                .iter()
                .map(|d| d.socket.as_poll_item(zmq::POLLIN)),
        );
        items.extend(
            self.dealers
                .iter()
                .map(|d| d.monitor.as_poll_item(zmq::POLLIN)),
        );
        if arrivals {
            items.push(zmq::PollItem::from_fd(self.arrivals.fd(), zmq::POLLIN));
        }
        zmq::poll(&mut items, timeout)?;
        let n = self.dealers.len();
        Ok(Readable {
            arrivals: arrivals && items[4 + 2 * n].is_readable(),
            router: items[0].is_readable(),
            zap: items[1].is_readable(),
            wake: items[2].is_readable(),
            monitors: items[3].is_readable() || (0..n).any(|i| items[4 + n + i].is_readable()),
            dealers: (0..n).filter(|i| items[4 + i].is_readable()).collect(),
        })
    }

    /// Takes a new peer list: new keys dialled, dropped ones closed,
    /// unchanged ones left alone.
    fn reconfigure(&mut self, peers: Vec<PeerConfig>) -> Result<(), ReconfigureError> {
        let wanted: Vec<(&PeerConfig, PublicKey)> = peers
            .iter()
            .filter(|p| p.role == Role::Peer)
            .flat_map(|p| p.public_keys.iter().map(move |k| (p, *k)))
            .collect();
        let mut fresh = Vec::new();
        for (peer, key) in &wanted {
            let kept = self
                .dealers
                .iter()
                .any(|d| d.peer == peer.name && d.key == *key && d.endpoint == peer.endpoint);
            if !kept {
                let dealer =
                    self.dialer
                        .dial(peer, *key)
                        .map_err(|e| ReconfigureError::Connect {
                            peer: peer.name.clone(),
                            endpoint: peer.endpoint.clone(),
                            reason: e.to_string(),
                        })?;
                fresh.push(dealer);
            }
        }
        // Nothing failed: apply.
        self.dealers.retain(|d| {
            wanted
                .iter()
                .any(|(p, k)| d.peer == p.name && d.key == *k && d.endpoint == p.endpoint)
        });
        self.dealers.extend(fresh);
        self.allowed = allowed(&peers);
        self.node.reconfigure(&peers);
        tracing::info!(peers = peers.len(), "federation peers reconfigured");
        self.peers = peers;
        Ok(())
    }

    fn read_monitors(&mut self) {
        let mut out_of_fds = false;
        while let Ok(frames) = self.router_monitor.recv_multipart(zmq::DONTWAIT) {
            let event = frames
                .first()
                .map_or(SocketEvent::Other, |f| guard::parse_event(f));
            if let SocketEvent::AcceptFailed(errno) = event {
                self.table_strangers(|s| s.accept_failures += 1);
                out_of_fds |= errno == libc::EMFILE || errno == libc::ENFILE;
            }
            self.watch(event);
            self.router_ledger.event(event);
        }
        if out_of_fds {
            // Out of descriptors: free them from connections whose
            // handshakes are pending (after the whole queue of events, so
            // none of them is closed already), or the listener would retry
            // its accept at once, forever.
            let shut = self.router_ledger.evict(0);
            for fd in &shut {
                guard::shut(*fd);
            }
            let n = shut.len() as u64;
            self.table_strangers(|s| s.evicted_handshakes += n);
            if let Some(suppressed) = self.fd_log.allow() {
                tracing::warn!(
                    evicted = n,
                    suppressed,
                    "the federation listener ran out of file descriptors; closed connections still in their handshake (at most one line a minute)"
                );
            }
        }
        let mut greet = Vec::new();
        for d in &mut self.dealers {
            while let Ok(frames) = d.monitor.recv_multipart(zmq::DONTWAIT) {
                let event = frames
                    .first()
                    .map_or(SocketEvent::Other, |f| guard::parse_event(f));
                if event == SocketEvent::HandshakeSucceeded {
                    greet.push(d.peer.clone());
                }
                watch(&self.arrivals, &mut self.check_soon, event);
                d.ledger.event(event);
            }
        }
        // A fresh connection to a peer gets a heartbeat at once: its first
        // message, which also tells the peer's ledger it is no stranger.
        for peer in greet {
            let outs = self.node.greet(&peer, unix_ms());
            self.carry(outs);
        }
    }

    fn watch(&mut self, event: SocketEvent) {
        watch(&self.arrivals, &mut self.check_soon, event);
    }

    fn table_strangers(&self, f: impl FnOnce(&mut Strangers)) {
        f(node::lock(&self.table).strangers_mut());
    }

    /// Shuts connections that hold too much, or wait in their handshake
    /// while too many do. True when one kept holds more than [`QUIET`].
    fn check_connections(&mut self) -> bool {
        // libzmq reports a connection's end on the monitor before it
        // closes the descriptor, so after this drain every descriptor in
        // the ledgers is still the connection it was recorded for, not a
        // reused number.
        self.read_monitors();
        let budget = self.limits.connection_budget as u64;
        let mut verdicts = self.router_ledger.check(
            budget,
            self.limits.pending_connections,
            guard::bytes_received,
        );
        for d in &mut self.dealers {
            // A dealer's one connection is never a pending stranger.
            let shut = d.ledger.check(budget, usize::MAX, guard::bytes_received);
            verdicts.extend(shut.into_iter().map(|(fd, v)| match v {
                Verdict::OverBudget { held, .. } => (
                    fd,
                    Verdict::OverBudget {
                        peer: Some(d.peer.clone()),
                        held,
                    },
                ),
                other => (fd, other),
            }));
        }
        for (fd, verdict) in verdicts {
            self.apply(fd, verdict);
        }
        self.router_ledger.max_held() > QUIET
            || self.dealers.iter().any(|d| d.ledger.max_held() > QUIET)
    }

    fn apply(&mut self, fd: RawFd, verdict: Verdict) {
        guard::shut(fd);
        let mut table = node::lock(&self.table);
        match verdict {
            Verdict::OverBudget {
                peer: Some(peer),
                held,
            } => {
                let why = format!(
                    "it held {held} bytes without completing a message, more than the {} allowed",
                    self.limits.connection_budget
                );
                table.drop_input(&peer, DropKind::OverBudget, &why);
                table.refuse_connection(&peer, &why);
            }
            Verdict::OverBudget { peer: None, held } => {
                table.strangers_mut().over_budget += 1;
                if let Some(suppressed) = self.fd_log.allow() {
                    tracing::warn!(
                        held,
                        suppressed,
                        "closed a federation connection over its budget before its first message (at most one line a minute)"
                    );
                }
            }
            Verdict::TooManyForKey { peer } => {
                let why = format!(
                    "more than {} connections with its key",
                    self.limits.connections_per_key
                );
                table.refuse_connection(&peer, &why);
            }
            Verdict::Evicted => table.strangers_mut().evicted_handshakes += 1,
        }
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
                    self.table_strangers(|s| match key {
                        Some(_) => s.unknown_keys += 1,
                        None => s.without_curve += 1,
                    });
                    self.log_refusal(key, request.get(3));
                    [b"1.0", &request_id, b"400", b"key not allowed", b"", b""]
                }
            };
            if let Err(e) = self.zap.send_multipart(reply, 0) {
                tracing::error!(error = %e, "cannot answer a ZAP request");
            }
        }
    }

    /// At most one line a minute per refused key, saying how many were
    /// held back; past [`MAX_LOGGED_KEYS`] distinct keys, new ones share
    /// one limit, so a scan with fresh keys is still seen, never silenced.
    fn log_refusal(&mut self, key: Option<[u8; KEY_BYTES]>, address: Option<&Vec<u8>>) {
        let address = address
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        let slot = if self.refusals.contains_key(&key) || self.refusals.len() < MAX_LOGGED_KEYS {
            key
        } else {
            // The shared slot for keys beyond the limit.
            Some([0; KEY_BYTES])
        };
        let Some(suppressed) = self.refusals.entry(slot).or_default().allow() else {
            return;
        };
        match key {
            Some(k) => tracing::warn!(
                key = %PublicKey::from_bytes(k),
                %address,
                suppressed,
                "refused a federation connection: its key is not a configured peer's (at most one line a minute per key)"
            ),
            None => tracing::warn!(
                %address,
                suppressed,
                "refused a federation connection without CURVE (at most one line a minute)"
            ),
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

    /// True when one of the peer's DEALERs (one per listed key) took the
    /// message: only a connected one does.
    fn send_to_peer(&mut self, peer: &str, frames: &Frames) -> bool {
        for d in self.dealers.iter().filter(|d| d.peer == peer) {
            if d.socket
                .send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT)
                .is_ok()
            {
                node::lock(&self.table).count_out(peer);
                return true;
            }
        }
        // Not connected (or its queue is full): heartbeats are resent
        // anyway, and a request reports the peer unreachable.
        false
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
        loop {
            let Some(frames) = recv_all(&mut self.router, &mut self.router_ledger, &self.limits)
            else {
                return;
            };
            if let Some((fd, verdict)) = frames.verdict {
                // As in `check_connections`: only a descriptor still open.
                self.read_monitors();
                if self.router_ledger.contains(fd) {
                    self.apply(fd, verdict);
                }
                continue;
            }
            if frames.frames.len() < 2 {
                continue;
            }
            // The ZAP handler named the connection after its peer.
            let Some(peer) = frames.user else {
                continue;
            };
            if !self.allowed.values().any(|n| *n == peer) {
                continue;
            }
            let route = frames.frames[0].to_vec();
            let outs = self
                .node
                .on_subscriber(self.now(), &peer, route, &frames.frames[1..]);
            self.carry(outs);
        }
    }

    fn drain_dealer(&mut self, i: usize) {
        loop {
            let d = &mut self.dealers[i];
            let Some(frames) = recv_all(&mut d.socket, &mut d.ledger, &self.limits) else {
                return;
            };
            let peer = self.dealers[i].peer.clone();
            let outs = self.node.on_peer(self.now(), &peer, &frames.frames);
            self.carry(outs);
        }
    }
}

/// Keeps the arrivals set to the ledgers' connections; a new one is
/// checked soon.
fn watch(arrivals: &Arrivals, check_soon: &mut bool, event: SocketEvent) {
    match event {
        SocketEvent::Opened(fd) => {
            arrivals.watch(fd);
            *check_soon = true;
        }
        SocketEvent::Closed(fd) => arrivals.unwatch(fd),
        SocketEvent::AcceptFailed(_) | SocketEvent::HandshakeSucceeded | SocketEvent::Other => {}
    }
}

struct Readable {
    arrivals: bool,
    router: bool,
    zap: bool,
    wake: bool,
    monitors: bool,
    dealers: Vec<usize>,
}

/// One whole multipart message, as received.
struct Received {
    frames: Vec<Bytes>,
    user: Option<String>,
    /// Its connection is one too many for its key.
    verdict: Option<(RawFd, Verdict)>,
}

/// One whole multipart message, or `None` when none is waiting. Frames
/// past [`MAX_FRAMES`] are read and discarded (the message then fails to
/// decode for its frame count). Every frame is credited to its
/// connection in `ledger`.
fn recv_all(socket: &mut zmq::Socket, ledger: &mut Ledger, limits: &Limits) -> Option<Received> {
    let first = guard::recv_frame(socket, zmq::DONTWAIT).ok()?;
    let mut received = Received {
        frames: Vec::new(),
        user: None,
        verdict: None,
    };
    let mut frame = first;
    loop {
        if let Some(fd) = frame.fd {
            let verdict = ledger.delivered(
                fd,
                frame.user.as_deref(),
                frame.data.len(),
                limits.connections_per_key,
            );
            received.verdict = received.verdict.or(verdict);
        }
        if received.user.is_none() {
            received.user = frame.user.take();
        }
        let more = frame.more;
        if received.frames.len() < MAX_FRAMES {
            received.frames.push(frame.data);
        }
        if !more {
            return Some(received);
        }
        // The rest of a message is already here: libzmq hands over only
        // whole messages.
        match guard::recv_frame(socket, 0) {
            Ok(next) => frame = next,
            Err(_) => return Some(received),
        }
    }
}
