//! What makes the owner act: one closed enum, [`OwnerEvent`], and the news
//! type each worker sends.
//!
//! This module is the bottom of the daemon: workers (the Docker watcher,
//! probes, the GPU poller, operation tasks, the ticker, agent scrapes, the
//! federation bridge) import it and nothing of the owner, and the owner
//! imports them. A worker gets a [`Sender`] of its own news type only, so
//! it can say nothing else to the owner.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use orch_api::{ApiError, GpuTelemetry, HostSnapshot, PeerState, Request, Response};
use orch_core::gpu::{GpuInfo, ReplicaKey, Slice};
use orch_core::slo::AgentScrape;
use orch_core::supervise::{LaunchError, OpKind, OpSuccess};
use orch_docker::{ContainerEvent, ContainerInfo, ContainerSummary, EngineInfo};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Everything that makes the owner act. Every trigger of work is one arm
/// of the owner's loop.
#[derive(Debug)]
pub enum OwnerEvent {
    /// A request from a transport (the control socket, a peer).
    Request(Asked),
    /// The events from `since` on, and a receiver for the ones after them.
    Subscribe(Subscribe),
    /// The container of a replica (for log streams).
    ContainerOf(ContainerOf),
    Docker(DockerNews),
    Health(HealthNews),
    Op(OpDone),
    /// A launch made a replica's MIG instance.
    SliceReady(SliceReady),
    Gpu(GpuNews),
    /// News from a peer host (federation).
    Peer(PeerNews),
    /// A peer's events from `since` on, and a receiver for later ones.
    SubscribePeer(SubscribePeer),
    /// A direct probe of another host's agent, while that host is down.
    RemoteProbe(RemoteProbeNews),
    /// Metrics and SLO work (`crate::observe`).
    Observe(Tick),
    /// An agent's metrics, scraped.
    Scraped(Scraped),
    /// The CPU time of autoscaled replicas, read from Docker.
    CpuRead(CpuRead),
    /// The CPU time of every container, read from its cgroup.
    CpuUse(CpuUseRead),
    /// Re-read the config file (SIGHUP).
    Reload(Reload),
    /// Answered as soon as the owner gets to it: the watchdog's proof of life.
    Ping(Ping),
}

/// Where the answer to a request goes.
pub type Responder = oneshot::Sender<Result<Response, ApiError>>;

/// A request and where its answer goes. `span` is the caller's: a command
/// from a peer continues the peer's trace.
#[derive(Debug)]
pub struct Asked {
    pub request: Request,
    /// The config text of an `apply` or `plan`, parsed and validated
    /// before the owner saw the request (`Service::call`): the owner does
    /// no parsing.
    pub config: Option<Box<orch_config::Loaded>>,
    pub responder: Responder,
    pub span: tracing::Span,
    /// Who asked, when the transport knows (`Envelope::operator`).
    pub operator: Option<orch_api::Operator>,
}

/// A backlog of events and a receiver for the ones after it.
pub type Feed = (Vec<orch_api::Event>, broadcast::Receiver<orch_api::Event>);

#[derive(Debug)]
pub struct Subscribe {
    pub since: u64,
    pub reply: oneshot::Sender<Feed>,
}

#[derive(Debug)]
pub struct ContainerOf {
    pub group: String,
    pub agent: String,
    pub replica: u32,
    pub reply: oneshot::Sender<Result<String, ApiError>>,
}

/// `None` when the host is not a peer.
#[derive(Debug)]
pub struct SubscribePeer {
    pub peer: String,
    pub since: u64,
    pub reply: oneshot::Sender<Option<Feed>>,
}

/// A container as the watcher saw it at (re)connection.
#[derive(Debug)]
pub struct Observed {
    pub summary: ContainerSummary,
    /// Inspected unless only created: its exit code, its start time.
    pub info: Option<ContainerInfo>,
}

/// What the Docker watcher reports.
#[derive(Debug)]
pub enum DockerNews {
    Up {
        engine: Box<EngineInfo>,
        containers: Vec<Observed>,
    },
    Down {
        reason: String,
    },
    Event(ContainerEvent),
}

/// One probe's result and how long it took.
#[derive(Debug)]
pub struct HealthNews {
    pub key: ReplicaKey,
    pub id: String,
    pub ok: bool,
    pub took: Duration,
    /// A probe that got no answer from a replica that had answered
    /// before: the time it stands for (requests sent meanwhile would have
    /// gone unanswered too).
    pub unanswered_for: Option<Duration>,
}

/// A Docker operation finished.
#[derive(Debug)]
pub struct OpDone {
    pub key: ReplicaKey,
    pub op: OpKind,
    pub result: Result<OpSuccess, JobFailure>,
}

/// How a job failed, as the supervisor must hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// A replacement's new container could not be made; the container it
    /// was to replace was not touched and runs on.
    ReplacementNotMade(LaunchError),
    /// Anything else (for a replacement: once the old container was
    /// touched).
    Failed(LaunchError),
}

impl From<LaunchError> for JobFailure {
    fn from(e: LaunchError) -> Self {
        JobFailure::Failed(e)
    }
}

#[derive(Debug)]
pub struct SliceReady {
    pub key: ReplicaKey,
    pub slice: Slice,
}

/// What the GPU poller reports.
#[derive(Debug)]
pub enum GpuNews {
    Reading {
        gpus: Vec<GpuInfo>,
        telemetry: BTreeMap<u32, GpuTelemetry>,
    },
    Unavailable {
        reason: String,
    },
    /// The processes on each GPU (by index), with their containers.
    Processes {
        gpus: BTreeMap<u32, GpuProcesses>,
    },
    /// The MPS servers of each GPU whose control daemon this daemon
    /// started (by GPU UUID), read at the process interval.
    MpsServers {
        gpus: BTreeMap<String, MpsSeen>,
    },
}

/// What the GPU worker read of one GPU's MPS servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpsSeen {
    /// The servers of its running control daemon.
    Servers(Vec<SeenMpsServer>),
    /// No control daemon runs for the GPU: no server, so no fault.
    NoDaemon,
    /// The control daemon could not be asked (what went wrong): nothing
    /// is known, nothing changes.
    Unreadable(String),
}

/// One MPS server: whether it is in `FAULT`, and its clients (the
/// container of each read only for a faulted server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMpsServer {
    pub pid: u32,
    pub fault: bool,
    pub clients: Vec<orch_core::supervise::MpsFaultClient>,
}

/// The processes the GPU worker found on one GPU and its MIG instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuProcesses {
    /// At most `gpu::MAX_PROCESSES_PER_GPU`, in NVML's order.
    pub processes: Vec<SeenProcess>,
    /// How many more NVML listed, not taken.
    pub dropped: usize,
    /// NVML gave per-process utilisation for this GPU (`sm_percent` is
    /// then set on every process); else only the GPU's own is known.
    pub per_process: bool,
}

/// One process on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenProcess {
    pub pid: u32,
    /// Device memory it holds, where NVML tells.
    pub memory_bytes: Option<u64>,
    /// The MIG GPU instance it runs in.
    pub gpu_instance_id: Option<u32>,
    /// The Docker containers it runs in (`None`: none, or its cgroup file
    /// could not be read).
    pub container: Option<orch_docker::cgroup::DockerCgroup>,
    /// SM utilisation, percent, where NVML gives it per process.
    pub sm_percent: Option<u32>,
}

/// What arrived from a peer, decoded and checked (`crate::fleet`).
#[derive(Debug)]
pub enum PeerNews {
    Snapshot {
        peer: String,
        incarnation: u64,
        snapshot: Box<HostSnapshot>,
    },
    /// Each event with its size on the wire.
    Events {
        peer: String,
        events: Vec<(orch_api::Event, usize)>,
    },
    State {
        peer: String,
        state: PeerState,
        incarnation: u64,
    },
    /// The peer sent bodies that were refused (see `crate::fleet::codec`
    /// and `crate::fleet::trust`).
    Refused {
        peer: String,
        reason: Refused,
        bodies: u64,
    },
}

/// What the direct probes of another host's agent found
/// (`crate::fleet::probes`): healthy, or unhealthy after its `retries`.
#[derive(Debug)]
pub struct RemoteProbeNews {
    pub host: String,
    pub agent: String,
    pub healthy: bool,
}

/// Observability work for the owner.
#[derive(Debug)]
pub enum Tick {
    /// Publish a fresh metrics snapshot if anything changed.
    Publish,
    /// Record one availability sample of every group with an SLO.
    Sample,
    /// Start a round of agent scrapes (unless one is still running).
    Scrape,
    /// Write the SLO history.
    Save,
    /// Ask every autoscaler, and start a round of CPU readings.
    Autoscale,
}

/// The CPU time of one replica's container, read at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReading {
    pub key: ReplicaKey,
    pub container: String,
    /// Nanoseconds used since the container started; `None` when Docker
    /// could not say (it is retried at the next round).
    pub used_ns: Option<u64>,
    pub at: tokio::time::Instant,
}

/// One round of CPU readings.
#[derive(Debug)]
pub struct CpuRead(pub Vec<CpuReading>);

/// One round of cgroup CPU counters (`crate::cpu_use`): nanoseconds used
/// by container id, read at `at`.
#[derive(Debug)]
pub struct CpuUseRead {
    pub at: tokio::time::Instant,
    pub used: BTreeMap<String, u64>,
}

/// One agent's scrape, reduced to what the SLOs need (or why not).
#[derive(Debug)]
pub struct Scraped {
    pub key: ReplicaKey,
    pub group: String,
    pub result: Result<AgentScrape, ScrapeError>,
    /// The autoscaler's gauge, when one was asked for and found.
    pub gauge: Option<f64>,
}

/// Why a scrape gave nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("no address on network {0}")]
    NoAddress(String),
    #[error("{0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("not an HTTP answer")]
    Malformed,
    #[error(transparent)]
    Text(#[from] orch_core::slo::promtext::ParseError),
    #[error(transparent)]
    Series(#[from] orch_core::slo::ExtractError),
}

/// Re-read the config file.
#[derive(Debug)]
pub struct Reload;

/// The watchdog's question; the owner answers by dropping nothing but
/// sending `()`.
#[derive(Debug)]
pub struct Ping(pub oneshot::Sender<()>);

macro_rules! news {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for OwnerEvent {
            fn from(n: $ty) -> OwnerEvent {
                OwnerEvent::$variant(n)
            }
        })*
    };
}

news!(
    Request(Asked),
    Subscribe(Subscribe),
    ContainerOf(ContainerOf),
    Docker(DockerNews),
    Health(HealthNews),
    Op(OpDone),
    SliceReady(SliceReady),
    Gpu(GpuNews),
    Peer(PeerNews),
    SubscribePeer(SubscribePeer),
    RemoteProbe(RemoteProbeNews),
    Observe(Tick),
    Scraped(Scraped),
    CpuRead(CpuRead),
    CpuUse(CpuUseRead),
    Reload(Reload),
    Ping(Ping),
);

/// The owner is gone (the daemon is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the owner task has stopped")]
pub struct Closed;

/// A sender of one kind of news to the owner: what a worker is given
/// instead of the owner's whole inbox.
pub struct Sender<T> {
    tx: mpsc::Sender<OwnerEvent>,
    kind: PhantomData<fn(T)>,
}

impl<T> Sender<T> {
    pub fn new(tx: mpsc::Sender<OwnerEvent>) -> Self {
        Sender {
            tx,
            kind: PhantomData,
        }
    }
}

impl<T: Into<OwnerEvent>> Sender<T> {
    /// Waits for room in the owner's inbox.
    pub async fn send(&self, news: T) -> Result<(), Closed> {
        self.tx.send(news.into()).await.map_err(|_| Closed)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender::new(self.tx.clone())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("news", &std::any::type_name::<T>())
            .finish()
    }
}

/// Why the daemon refused a body from a peer (the bus refuses frames
/// for its own reasons, counted in its `PeerView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// Not a body of its kind.
    Undecodable,
    /// A snapshot or event of another host than its sender's.
    Impostor,
    /// An event over `crate::fleet::codec::MAX_EVENT_BYTES`, a snapshot
    /// over the bounds of its health endpoints.
    Oversized,
    /// A request its sender may not make here (`crate::fleet::trust`).
    Command,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Refused::Undecodable,
        Refused::Impostor,
        Refused::Oversized,
        Refused::Command,
    ];

    /// The `reason` label of `orchestrator_federation_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Undecodable => "undecodable",
            Refused::Impostor => "impostor",
            Refused::Oversized => "over_budget",
            Refused::Command => "command",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_narrow_sender_reaches_the_owner_as_its_own_variant() {
        let (tx, mut rx) = mpsc::channel(4);
        let ticks: Sender<Tick> = Sender::new(tx);
        ticks.send(Tick::Save).await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Some(OwnerEvent::Observe(Tick::Save))
        ));
        drop(rx);
        assert_eq!(ticks.send(Tick::Save).await, Err(Closed));
    }
}
