//! The owner task: the only holder of host state.
//!
//! Everything that can cause work arrives as one [`Event`]: requests from
//! a transport, Docker news, health results, finished operations, GPU
//! news, reloads. The owner feeds the pure [`Supervisor`] and executes the
//! actions it returns (`exec`), answers requests from read models
//! (`handlers`, over `crate::views`), and nothing else mutates host state.
//! No lock is held across an await.

mod exec;
mod federation;
mod handlers;
mod observe;

pub use observe::Observer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_api::{ApiError, Request, Response, Telemetry};
use orch_config::{LoadOptions, Loaded};
use orch_core::container::{self, Injection};
use orch_core::gpu::{GpuInfo, ReplicaKey, Slice};
use orch_core::model::{GpuInjection, HostConfig, ShutdownMode};
use orch_core::supervise::{
    ContainerFacts, Input, LaunchError, OpKind, OpSuccess, Persisted, StateOrigin, Supervisor,
};
use orch_docker::{
    ContainerEvent, ContainerRuntime, ContainerSummary, EngineInfo, EventKind as DockerEventKind,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::fleet::{FleetBook, PeerNews};
use crate::gpu::{Gpu, GpuNews};
use crate::ops;
use crate::probe::Prober;
use crate::store::StateStore;

/// A container as the watcher saw it at (re)connection.
#[derive(Debug)]
pub struct Observed {
    pub summary: ContainerSummary,
    /// Inspected when stopped, for its exit code.
    pub info: Option<orch_docker::ContainerInfo>,
}

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

/// The answer to a request.
pub type Reply = oneshot::Sender<Result<Response, ApiError>>;

/// Everything that makes the owner act.
#[derive(Debug)]
pub enum Event {
    /// A request from a transport (the control socket, a peer). `span` is
    /// the caller's: a command from a peer continues the peer's trace.
    Request {
        request: Request,
        reply: Reply,
        span: tracing::Span,
    },
    /// The events from `since` on, and a receiver for the ones after them
    /// (for event streams), taken together so none falls in between.
    Subscribe {
        since: u64,
        reply: oneshot::Sender<(Vec<orch_api::Event>, broadcast::Receiver<orch_api::Event>)>,
    },
    /// The container of a replica (for log streams).
    ContainerOf {
        group: String,
        agent: String,
        replica: u32,
        reply: oneshot::Sender<Result<String, ApiError>>,
    },
    Docker(DockerNews),
    Health {
        key: ReplicaKey,
        id: String,
        ok: bool,
        took: Duration,
    },
    Op {
        key: ReplicaKey,
        op: OpKind,
        result: Result<OpSuccess, LaunchError>,
    },
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Answered as soon as the owner gets to it: the watchdog's proof of life.
    Ping(oneshot::Sender<()>),
    Gpu(GpuNews),
    /// A launch made a replica's MIG instance.
    SliceReady {
        key: ReplicaKey,
        slice: Slice,
    },
    /// News from a peer host (federation).
    Peer(PeerNews),
    /// A peer's events from `since` on, and a receiver for later ones
    /// (for a `--host` wait); `None` when it is not a peer.
    SubscribePeer {
        peer: String,
        since: u64,
        reply: oneshot::Sender<Option<PeerFeed>>,
    },
    /// Metrics and SLO work (`crate::observe`).
    Observe(crate::observe::Tick),
}

/// A peer's event backlog and live feed.
pub type PeerFeed = (Vec<orch_api::Event>, broadcast::Receiver<orch_api::Event>);

/// What the owner needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    pub config_path: PathBuf,
    pub load_options: LoadOptions,
    pub docker_endpoint: String,
    /// How many Docker operations may run at once.
    pub max_parallel_ops: usize,
    /// Per-GPU MPS pipe and log directories are made under this one.
    pub mps_base: PathBuf,
    pub observe: crate::observe::ObserveSettings,
    /// Start from no started group, whatever the state says (`run --fresh`).
    pub fresh: bool,
}

/// The outside systems the owner acts through.
#[derive(Debug, Clone)]
pub struct OwnerDeps {
    pub rt: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub gpu: Option<Gpu>,
    /// The federation bus, when this host has peers.
    pub bus: Option<Arc<dyn orch_federation::Bus>>,
    pub slo_store: Arc<dyn crate::slo_store::SloStore>,
    pub fetcher: Arc<dyn crate::slo_scrape::MetricsFetcher>,
}

pub struct Owner {
    sup: Supervisor,
    settings: OwnerSettings,
    deps: OwnerDeps,
    log: EventLog,
    tx: mpsc::Sender<Event>,
    probes: HashMap<ReplicaKey, tokio::task::AbortHandle>,
    ops: JoinSet<()>,
    permits: Arc<tokio::sync::Semaphore>,
    /// The supervisor's clock starts here.
    epoch: Instant,
    engine: Option<EngineInfo>,
    /// The config as launch jobs see it (replaced whole on reload).
    config: Arc<HostConfig>,
    last_inventory: Option<Vec<GpuInfo>>,
    telemetry: BTreeMap<u32, Telemetry>,
    /// GPUs whose MPS control daemon this daemon may have started.
    mps_running: BTreeSet<String>,
    /// Containers Docker reported OOM-killed; their `die` follows.
    oom_killed: BTreeSet<String>,
    /// What this host knows of its peers.
    fleet: FleetBook,
    /// Something changed since the last snapshot was published.
    snapshot_dirty: bool,
    last_snapshot: Option<Instant>,
    /// Metrics counters, the SLO engine, published snapshots.
    obs: Observer,
    /// The state file's health, for `status`.
    state_file: orch_api::StateFileStatus,
    /// When to try again to write the state after a failed write.
    persist_retry: Option<Instant>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("host", &self.sup.config().host.name)
            .finish()
    }
}

/// The hash of every agent of a config.
pub fn hashes(config: &HostConfig) -> BTreeMap<String, String> {
    config
        .agents()
        .map(|a| (a.name.clone(), container::config_hash(a)))
        .collect()
}

impl Owner {
    pub fn new(
        loaded: Loaded,
        settings: OwnerSettings,
        deps: OwnerDeps,
        tx: mpsc::Sender<Event>,
    ) -> Result<Self, crate::DaemonError> {
        let (persisted, origin) =
            initial_state(&*deps.store, deps.clock.unix_ms(), settings.fresh)?;
        // MPS daemons of the agents a previous daemon left running.
        let mps_running = persisted
            .slices
            .values()
            .filter_map(|s| match s {
                Slice::Mps { gpu_uuid, .. } => Some(gpu_uuid.clone()),
                _ => None,
            })
            .collect();
        let config = Arc::new(loaded.config.clone());
        let fleet = FleetBook::new(
            loaded
                .config
                .federation
                .iter()
                .flat_map(|f| f.peers.iter().map(|p| p.name.as_str())),
        );
        let hashes = hashes(&loaded.config);
        let host = loaded.config.host.name.clone();
        let obs = Observer::new(
            &loaded.config,
            deps.slo_store.clone(),
            deps.fetcher.clone(),
            settings.observe.clone(),
        );
        let mut sup = Supervisor::new(loaded.config, hashes, persisted);
        sup.infer_intent(origin);
        let state_file = orch_api::StateFileStatus {
            location: deps.store.location(),
            origin: origin.label().to_string(),
            write_error: None,
            failed_writes: 0,
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(
            settings.max_parallel_ops.max(1),
        ));
        Ok(Owner {
            sup,
            settings,
            deps,
            log: EventLog::new(host),
            tx,
            probes: HashMap::new(),
            ops: JoinSet::new(),
            permits,
            epoch: Instant::now(),
            engine: None,
            config,
            last_inventory: None,
            telemetry: BTreeMap::new(),
            mps_running,
            oom_killed: BTreeSet::new(),
            fleet,
            snapshot_dirty: true,
            last_snapshot: None,
            obs,
            state_file,
            persist_retry: None,
        })
    }

    /// The supervisor's clock: milliseconds since the owner started.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The metrics snapshots the owner publishes.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<Arc<crate::metrics::Snapshot>> {
        self.obs.subscribe()
    }

    /// Runs until `shutdown` fires (and, with `shutdown: stop`, until every
    /// agent is stopped) or every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut stopping = false;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if stopping && self.drained() {
                break;
            }
            let deadline = self
                .sup
                .next_deadline()
                .map(|ms| self.epoch + Duration::from_millis(ms));
            let snapshot_due = self.snapshot_due();
            let deadline = match (deadline, self.persist_retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    match self.sup.config().runtime.shutdown {
                        ShutdownMode::Leave => {
                            tracing::info!("stopping; agents keep running (shutdown: leave)");
                            break;
                        }
                        ShutdownMode::Stop => {
                            tracing::info!("stopping every agent before exit (shutdown: stop)");
                            let out = self.sup.stop_all(self.now());
                            self.execute(out);
                            stop_deadline = Some(Instant::now() + Duration::from_secs(120));
                        }
                    }
                }
                () = sleep_until(stop_deadline) => {
                    tracing::warn!("agents did not all stop in time; exiting anyway");
                    break;
                }
                ev = rx.recv() => match ev {
                    Some(ev) => self.on(ev),
                    None => break,
                },
                () = sleep_until(deadline) => {
                    let began = std::time::Instant::now();
                    if self.persist_retry.is_some_and(|t| Instant::now() >= t) {
                        self.persist();
                    }
                    let out = self.sup.tick(self.now());
                    self.execute(out);
                    self.obs.reconciled(began);
                }
                () = sleep_until(snapshot_due) => self.publish_snapshot(),
            }
        }
        for (_, p) in self.probes.drain() {
            p.abort();
        }
        // Operations already running finish: a create half-done is worse than a late exit.
        let wait = async { while self.ops.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
        self.obs.save();
    }

    fn drained(&self) -> bool {
        self.sup
            .replicas()
            .all(|r| r.container.is_none() && r.op.is_none())
    }

    fn on(&mut self, ev: Event) {
        let now = self.now();
        // Reconcile time: every input but observability's own work.
        let began = std::time::Instant::now();
        match ev {
            Event::Request {
                request,
                reply,
                span,
            } => self.on_request(now, request, reply, &span),
            Event::Subscribe { since, reply } => {
                let _ = reply.send(self.log.subscribe(since));
            }
            Event::ContainerOf {
                group,
                agent,
                replica,
                reply,
            } => {
                let _ = reply.send(self.container_of(&group, &agent, replica));
            }
            Event::Docker(news) => self.on_docker(now, news),
            Event::Health { key, id, ok, took } => {
                self.observe_health(&key, took);
                let out = self.sup.handle(now, Input::Health { key, id, ok });
                self.execute(out);
            }
            Event::Op { key, op, result } => {
                if let Err(e) = &result {
                    let reason = orch_api::convert::fail_reason(
                        &orch_core::supervise::FailReason::Launch(e.clone()),
                    );
                    tracing::warn!(replica = %key, ?op, reason = reason.label(), "operation failed: {reason}");
                }
                let out = self.sup.handle(now, Input::OpFinished { key, op, result });
                self.execute(out);
            }
            Event::Reload => match self.reload(now, None) {
                Ok(a) => {
                    tracing::info!(generation = a.generation, changed = ?a.changed, "config reloaded")
                }
                Err(e) => {
                    tracing::error!("reload refused, the running config stays: {}", e.message)
                }
            },
            Event::Ping(tx) => {
                let _ = tx.send(());
            }
            Event::Gpu(GpuNews::Reading { gpus, telemetry }) => {
                self.telemetry = telemetry;
                if self.last_inventory.as_ref() != Some(&gpus) {
                    self.last_inventory = Some(gpus.clone());
                    let out = self.sup.handle(now, Input::Inventory { gpus });
                    self.execute(out);
                }
            }
            Event::Gpu(GpuNews::Unavailable { reason }) => {
                if self.sup.gpu_unavailable() != Some(reason.as_str()) {
                    tracing::warn!("GPUs unavailable: {reason}");
                    self.last_inventory = None;
                    let out = self.sup.handle(now, Input::GpuUnavailable { reason });
                    self.execute(out);
                }
            }
            Event::SliceReady { key, slice } => {
                let out = self.sup.handle(now, Input::SliceReady { key, slice });
                self.execute(out);
            }
            Event::Peer(news) => self.on_peer(news),
            Event::SubscribePeer { peer, since, reply } => {
                let _ = reply.send(self.fleet.subscribe(&peer, since));
            }
            Event::Observe(tick) => return self.on_observe(tick),
        }
        self.obs.reconciled(began);
    }

    fn on_docker(&mut self, now: u64, news: DockerNews) {
        match news {
            DockerNews::Up { engine, containers } => {
                tracing::info!(version = %engine.engine_version, api = %engine.api_version, "connected to the Docker Engine");
                self.engine = Some(*engine);
                let mut listed = Vec::new();
                for o in containers {
                    let Some((key, group)) = ops::replica_of(&o.summary.labels) else {
                        continue;
                    };
                    let facts = match &o.info {
                        Some(info) => ops::facts(info),
                        None => ContainerFacts {
                            id: o.summary.id.clone(),
                            config_hash: o
                                .summary
                                .labels
                                .get(container::labels::CONFIG_HASH)
                                .cloned()
                                .unwrap_or_default(),
                            status: if o.summary.state == orch_docker::ContainerState::Created {
                                orch_core::supervise::ContainerStatus::Created
                            } else {
                                orch_core::supervise::ContainerStatus::Running
                            },
                            started_at_ms: 0,
                            gpu_slice: o.summary.labels.get(container::labels::GPU_SLICE).cloned(),
                        },
                    };
                    listed.push((key, group, facts));
                }
                let out = self.sup.handle(now, Input::Resync { containers: listed });
                self.execute(out);
            }
            DockerNews::Down { .. } => {
                let out = self.sup.handle(now, Input::DockerDown);
                self.execute(out);
            }
            DockerNews::Event(ev) => {
                let Some((key, _)) = ops::replica_of(&ev.labels) else {
                    return;
                };
                let input = match ev.kind {
                    DockerEventKind::Start => Input::ContainerStarted { key, id: ev.id },
                    // Docker reports an OOM kill just before the `die`.
                    DockerEventKind::Oom => {
                        self.oom_killed.insert(ev.id);
                        return;
                    }
                    DockerEventKind::Die { exit_code } => Input::ContainerDied {
                        key,
                        oom: self.oom_killed.remove(&ev.id),
                        id: ev.id.clone(),
                        code: exit_code.unwrap_or(-1),
                        at_ms: u64::try_from(ev.time_ns / 1_000_000).unwrap_or(0),
                    },
                    DockerEventKind::Destroy => Input::ContainerRemoved { key, id: ev.id },
                    _ => return,
                };
                let out = self.sup.handle(now, input);
                self.execute(out);
            }
        }
    }

    fn injection(&self) -> Injection {
        match self.sup.config().runtime.gpu_injection {
            GpuInjection::Nvidia => Injection::Nvidia,
            GpuInjection::Cdi => Injection::Cdi,
            GpuInjection::Env => Injection::Env,
            GpuInjection::Auto => match &self.engine {
                Some(e) if e.nvidia_runtime => Injection::Nvidia,
                Some(e) if e.cdi_enabled => Injection::Cdi,
                _ => Injection::Env,
            },
        }
    }
}

/// The desired state to start from, and where it came from. A damaged
/// file is kept aside, never refused: the running containers say what was
/// wanted. `--fresh` starts from nothing started, keeping only the record
/// of which MIG instances are ours (a fact, not an intent).
fn initial_state(
    store: &dyn StateStore,
    now_unix_ms: u64,
    fresh: bool,
) -> Result<(Persisted, StateOrigin), crate::store::StoreError> {
    use crate::store::Loaded;
    let loaded = crate::store::load_or_keep_aside(store, now_unix_ms / 1000)?;
    if let Loaded::Damaged { reason, kept_as } = &loaded {
        tracing::warn!(
            kept_as = %kept_as,
            "the state file was damaged ({reason}); kept aside as {kept_as}; inferring started groups from the running agents"
        );
    }
    Ok(match (loaded, fresh) {
        (Loaded::Saved(p), true) => (
            Persisted {
                owned_mig: p.owned_mig,
                ..Persisted::default()
            },
            StateOrigin::Fresh,
        ),
        (_, true) => (Persisted::default(), StateOrigin::Fresh),
        (Loaded::Saved(p), false) => (p, StateOrigin::Saved),
        (Loaded::Missing, false) => {
            tracing::info!(state = %store.location(), "no saved state; inferring started groups from the running agents");
            (Persisted::default(), StateOrigin::Missing)
        }
        (Loaded::Damaged { .. }, false) => (Persisted::default(), StateOrigin::Damaged),
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
