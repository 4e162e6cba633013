//! Buses on loopback for the measurements: hosts with key files, a tap
//! that timestamps everything a bus delivers, and a TCP proxy whose stop
//! cuts a link.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use orch_federation::keys;
use orch_federation::{
    Bus, BusConfig, Change, Inbound, Inbox, PeerConfig, PeerState, PublicKey, Timing, ZmqBus,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::body;

static TIMING: OnceLock<Timing> = OnceLock::new();

/// The detector settings every bus of the run uses: the defaults unless
/// [`set_timing`] chose others.
pub fn timing() -> Timing {
    *TIMING.get_or_init(Timing::default)
}

/// Chooses the detector settings for the whole run; before any bus starts.
pub fn set_timing(timing: Timing) {
    let _ = TIMING.set(timing);
}

pub fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")
        .context("bind a probe socket")?
        .local_addr()?
        .port())
}

/// One host: a name, its key files (written as `orchestratorctl` would)
/// and a port.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub secret_file: PathBuf,
    pub public: PublicKey,
    pub port: u16,
}

impl Host {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let generated = keys::generate(dir, name).context("generate a key pair")?;
        Ok(Host {
            name: name.into(),
            secret_file: generated.secret_file,
            public: generated.public,
            port: free_port()?,
        })
    }

    pub fn listen(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// This host as a peer reaches it, through `port` (its own, or a
    /// proxy's).
    pub fn as_peer_at(&self, port: u16) -> PeerConfig {
        PeerConfig::new(
            self.name.clone(),
            format!("tcp://127.0.0.1:{port}"),
            self.public,
        )
    }

    pub fn as_peer(&self) -> PeerConfig {
        self.as_peer_at(self.port)
    }

    pub fn start(&self, incarnation: u64, peers: Vec<PeerConfig>) -> Result<(ZmqBus, Inbox)> {
        let secret = keys::load_secret(&self.secret_file)?;
        let config = BusConfig {
            host: self.name.clone(),
            incarnation,
            listen: self.listen(),
            peers,
            timing: timing(),
            limits: orch_federation::Limits::default(),
        };
        ZmqBus::start(config, &secret).with_context(|| format!("start bus `{}`", self.name))
    }
}

/// A state change and when the tap took it out of the inbox.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub change: Change,
}

/// What a tap counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub snapshots: AtomicU64,
    pub events: AtomicU64,
    /// Publish-to-receipt of every stamped snapshot, in ms.
    pub latencies_ms: Mutex<Vec<f64>>,
}

impl Counts {
    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Drains a bus's inbox as fast as it fills: state changes are kept with
/// their arrival time, snapshots are counted and timed.
#[derive(Debug)]
pub struct Tap {
    changes: mpsc::UnboundedReceiver<Seen>,
    /// Every change taken off `changes` so far, in arrival order.
    pub history: Vec<Seen>,
    cursor: usize,
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Tap {
    /// `base` is the instant the bodies' `sent_us` count from.
    pub fn spawn(mut inbox: Inbox, base: Instant) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            while let Some(item) = inbox.recv().await {
                let at = Instant::now();
                match item {
                    Inbound::PeerChanged(change) => {
                        let _ = tx.send(Seen { at, change });
                    }
                    Inbound::Snapshot { body, .. } => {
                        c.snapshots.fetch_add(1, Ordering::Relaxed);
                        if let Some(sent) = body::sent_us(&body) {
                            let now_us = at.saturating_duration_since(base).as_micros() as f64;
                            let ms = (now_us - sent as f64) / 1000.0;
                            c.latencies_ms
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(ms);
                        }
                    }
                    Inbound::Events { .. } => {
                        c.events.fetch_add(1, Ordering::Relaxed);
                    }
                    Inbound::Request(r) => {
                        let _ = r.reply(orch_federation::Bytes::from_static(b"null"));
                    }
                }
            }
        });
        Tap {
            changes,
            history: Vec::new(),
            cursor: 0,
            counts,
            task,
        }
    }

    /// Waits up to `patience` for `peer` to become `state` (a change not
    /// yet waited for), and returns when it was seen.
    pub async fn wait_for(
        &mut self,
        peer: &str,
        state: PeerState,
        patience: Duration,
    ) -> Option<Instant> {
        let matches = |s: &Seen| s.change.peer == peer && s.change.state == state;
        if let Some(i) = self.history[self.cursor..].iter().position(matches) {
            self.cursor += i + 1;
            return Some(self.history[self.cursor - 1].at);
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.changes.recv())
                .await
                .ok()??;
            let hit = matches(&seen);
            let at = seen.at;
            self.history.push(seen);
            if hit {
                self.cursor = self.history.len();
                return Some(at);
            }
        }
    }

    /// Moves every change that arrived into `history`.
    pub fn drain(&mut self) {
        while let Ok(seen) = self.changes.try_recv() {
            self.history.push(seen);
        }
    }

    /// Changes to `state` seen since `since`.
    pub fn count_since(&self, since: Instant, state: PeerState) -> usize {
        self.history
            .iter()
            .filter(|s| s.at >= since && s.change.state == state)
            .count()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP forwarder on its own port to `target`; stopping it closes every
/// connection through it and its listener, as a pulled cable followed by
/// refused reconnections would.
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    target: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub fn new(target: u16) -> Result<Self> {
        Ok(Proxy {
            port: free_port()?,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub async fn start(&self) -> Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("bind the proxy on {}", self.port))?;
        let target = self.target;
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(accept);
        Ok(())
    }

    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The largest `last_heartbeat_age` of any alive-or-worse peer of `bus`.
pub fn oldest_heartbeat(bus: &ZmqBus) -> Duration {
    bus.peers()
        .iter()
        .filter_map(|p| p.last_heartbeat_age)
        .max()
        .unwrap_or_default()
}
