//! The owner task: the only holder of host state.
//!
//! Everything that can cause work arrives as one [`Event`]: API requests,
//! Docker news, health results, finished operations, reloads, shutdown.
//! The owner feeds the pure [`Supervisor`] and executes the actions it
//! returns by spawning tasks, which report back as events. No lock is held
//! across an await; nothing else mutates host state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orch_api::{
    Accepted, AgentCounts, AgentStatus, ApiError, Applied, ApplyRequest, ConfigChanges,
    DockerStatus, ErrorCode, Event as ApiEvent, GpuReport, GpuStatus, GpuSummary, GroupState,
    GroupStatus, PlanReport, SliceOwner, Status, Telemetry,
};
use orch_config::{ConfigError, LoadOptions, Loaded};
use orch_core::container::{self, Injection};
use orch_core::gpu::ReplicaKey;
use orch_core::gpu::{GpuInfo, Slice};
use orch_core::model::{GpuInjection, HostConfig, ShutdownMode};
use orch_core::supervise::{
    Action, CommandError, ContainerFacts, EventKind, Input, OpKind, OpSuccess, Outcome, Supervisor,
};
use orch_docker::{
    ContainerEvent, ContainerRuntime, ContainerSummary, EngineInfo, EventKind as DockerEventKind,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::gpu::{Gpu, GpuNews};
use crate::ops::{self, Job, JobCtx, SpecInputs};
use crate::probe::{self, ProbeJob};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupVerb {
    Start,
    Stop,
    Restart,
}

pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

#[derive(Debug)]
pub enum ApiCall {
    Status(oneshot::Sender<Status>),
    Groups(oneshot::Sender<Vec<GroupStatus>>),
    Agents(oneshot::Sender<Vec<AgentStatus>>),
    Group {
        name: String,
        verb: GroupVerb,
        with_dependents: bool,
        reply: Reply<Accepted>,
    },
    AgentRestart {
        group: String,
        agent: String,
        reply: Reply<Accepted>,
    },
    Subscribe {
        since: u64,
        reply: oneshot::Sender<(Vec<ApiEvent>, broadcast::Receiver<ApiEvent>)>,
    },
    Gpu(oneshot::Sender<GpuReport>),
    /// Plan a config against the live inventory and assignments.
    Plan {
        request: ApplyRequest,
        reply: Reply<PlanReport>,
    },
    MigMode {
        gpu: u32,
        enable: bool,
        reply: Reply<Accepted>,
    },
    /// The container of a replica, for logs.
    Container {
        group: String,
        agent: String,
        replica: u32,
        reply: Reply<String>,
    },
}

/// Everything that makes the owner act.
#[derive(Debug)]
pub enum Event {
    Api(ApiCall),
    Docker(DockerNews),
    Health {
        key: ReplicaKey,
        id: String,
        ok: bool,
    },
    Op {
        key: ReplicaKey,
        op: OpKind,
        result: Result<OpSuccess, String>,
    },
    /// Re-read the config file (SIGHUP, `reload`), or take a new text (`apply`).
    Reload {
        text: Option<(String, String)>,
        reply: Option<Reply<Applied>>,
    },
    /// Answered as soon as the owner gets to it: the watchdog's proof of life.
    Ping(oneshot::Sender<()>),
    Gpu(GpuNews),
    /// A launch made a replica's MIG instance.
    SliceReady {
        key: ReplicaKey,
        slice: Slice,
    },
}

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
}

pub struct Owner {
    sup: Supervisor,
    settings: OwnerSettings,
    rt: Arc<dyn ContainerRuntime>,
    store: StateStore,
    log: EventLog,
    tx: mpsc::Sender<Event>,
    probes: HashMap<ReplicaKey, tokio::task::AbortHandle>,
    ops: JoinSet<()>,
    permits: Arc<tokio::sync::Semaphore>,
    clock: Instant,
    engine: Option<EngineInfo>,
    ever_ready: BTreeSet<String>,
    started_at: Instant,
    /// The config as launch jobs see it (replaced whole on reload).
    config: Arc<HostConfig>,
    gpu: Option<Gpu>,
    last_inventory: Option<Vec<GpuInfo>>,
    telemetry: BTreeMap<u32, Telemetry>,
    /// GPUs whose MPS control daemon this daemon may have started.
    mps_running: BTreeSet<String>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("host", &self.sup.config().host.name)
            .finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The hash of every agent of a config.
pub fn hashes(config: &HostConfig) -> BTreeMap<String, String> {
    config
        .agents()
        .map(|a| (a.name.clone(), container::config_hash(a)))
        .collect()
}

fn command_error(e: CommandError) -> ApiError {
    let code = match &e {
        CommandError::UnknownGroup(_) | CommandError::UnknownAgent { .. } => ErrorCode::NotFound,
        CommandError::NeededBy { .. } => ErrorCode::Conflict,
        CommandError::WrongHost { .. } => ErrorCode::InvalidConfig,
    };
    ApiError::new(code, e.to_string())
}

fn config_error(e: ConfigError) -> ApiError {
    let mut details = Vec::new();
    for d in e.diagnostics() {
        details.push(d.headline());
        if let Some(help) = &d.help {
            details.push(format!("  = help: {help}"));
        }
    }
    let code = match e {
        ConfigError::Io { .. } => ErrorCode::NotFound,
        _ => ErrorCode::InvalidConfig,
    };
    ApiError {
        code,
        message: e.to_string(),
        details,
    }
}

impl Owner {
    pub fn new(
        loaded: Loaded,
        settings: OwnerSettings,
        rt: Arc<dyn ContainerRuntime>,
        store: StateStore,
        tx: mpsc::Sender<Event>,
        gpu: Option<Gpu>,
    ) -> Result<Self, crate::DaemonError> {
        let persisted = store.load()?;
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
        let hashes = hashes(&loaded.config);
        let sup = Supervisor::new(loaded.config, hashes, persisted);
        let permits = Arc::new(tokio::sync::Semaphore::new(
            settings.max_parallel_ops.max(1),
        ));
        Ok(Owner {
            sup,
            settings,
            rt,
            store,
            log: EventLog::new(),
            tx,
            probes: HashMap::new(),
            ops: JoinSet::new(),
            permits,
            clock: Instant::now(),
            engine: None,
            ever_ready: BTreeSet::new(),
            started_at: Instant::now(),
            config,
            gpu,
            last_inventory: None,
            telemetry: BTreeMap::new(),
            mps_running,
        })
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Runs until `shutdown` fires (and, with `shutdown: stop`, until every
    /// agent is stopped) or every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut stopping = false;
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        loop {
            if stopping && self.drained() {
                break;
            }
            let deadline = self
                .sup
                .next_deadline()
                .map(|ms| tokio::time::Instant::from_std(self.clock + Duration::from_millis(ms)));
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
                            stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(120));
                        }
                    }
                }
                () = async { if let Some(d) = stop_deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => {
                    tracing::warn!("agents did not all stop in time; exiting anyway");
                    break;
                }
                ev = rx.recv() => match ev {
                    Some(ev) => self.on(ev),
                    None => break,
                },
                () = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => {
                    let out = self.sup.tick(self.now());
                    self.execute(out);
                }
            }
        }
        for (_, p) in self.probes.drain() {
            p.abort();
        }
        // Operations already running finish: a create half-done is worse than a late exit.
        let wait = async { while self.ops.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
    }

    fn drained(&self) -> bool {
        self.sup
            .replicas()
            .all(|r| r.container.is_none() && r.op.is_none())
    }

    fn on(&mut self, ev: Event) {
        let now = self.now();
        match ev {
            Event::Api(call) => self.on_api(call),
            Event::Docker(news) => self.on_docker(now, news),
            Event::Health { key, id, ok } => {
                let out = self.sup.handle(now, Input::Health { key, id, ok });
                self.execute(out);
            }
            Event::Op { key, op, result } => {
                if let Err(e) = &result {
                    tracing::warn!(replica = %key, ?op, error = %e, "operation failed");
                }
                let out = self.sup.handle(now, Input::OpFinished { key, op, result });
                self.execute(out);
            }
            Event::Reload { text, reply } => {
                let r = self.reload(now, text);
                match (&r, reply) {
                    (_, Some(tx)) => {
                        let _ = tx.send(r);
                    }
                    (Err(e), None) => {
                        tracing::error!("reload refused, the running config stays: {}", e.message)
                    }
                    (Ok(a), None) => {
                        tracing::info!(generation = a.generation, changed = ?a.changed, "config reloaded")
                    }
                }
            }
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
        }
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
                    DockerEventKind::Die { exit_code } => Input::ContainerDied {
                        key,
                        id: ev.id.clone(),
                        code: exit_code.unwrap_or(-1),
                        oom: false,
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

    /// Records events and runs actions.
    fn execute(&mut self, out: Outcome) {
        let time = unix_ms();
        for e in out.events {
            match &e {
                EventKind::GroupReady { group } => {
                    self.ever_ready.insert(group.clone());
                }
                EventKind::GroupStarting { group } | EventKind::GroupStopping { group } => {
                    self.ever_ready.remove(group);
                }
                _ => {}
            }
            tracing::info!(target: "orchestrator::events", "{}", serde_json::to_string(&e).unwrap_or_default());
            self.log.push(e, time);
        }
        for action in out.actions {
            self.act(action);
        }
        self.stop_idle_mps();
    }

    /// Stops MPS control daemons whose GPU has no client left.
    fn stop_idle_mps(&mut self) {
        let Some(gpu) = &self.gpu else { return };
        let needed: BTreeSet<String> = self
            .sup
            .replicas()
            .filter(|r| r.container.is_some() || r.op.is_some() || self.sup.group_wanted(&r.group))
            .filter_map(|r| match &r.slice {
                Some(Slice::Mps { gpu_uuid, .. }) => Some(gpu_uuid.clone()),
                _ => None,
            })
            .collect();
        let idle: Vec<String> = self.mps_running.difference(&needed).cloned().collect();
        for uuid in idle {
            tracing::info!(gpu = %uuid, "no MPS client left; stopping its control daemon");
            gpu.mps_stop(crate::gpu::mps_gpu(&self.settings.mps_base, &uuid));
            self.mps_running.remove(&uuid);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Persist => {
                if let Err(e) = self.store.save(&self.sup.persisted()) {
                    tracing::error!("{e}");
                }
            }
            Action::WatchHealth { key, id } => {
                let Some(agent) = self.sup.config().agent(&key.agent) else {
                    return;
                };
                let job = ProbeJob {
                    key: key.clone(),
                    id,
                    network: self.sup.config().runtime.network.clone(),
                    check: agent.health.clone(),
                };
                let handle = tokio::spawn(probe::run(job, self.rt.clone(), self.tx.clone()));
                if let Some(old) = self.probes.insert(key, handle.abort_handle()) {
                    old.abort();
                }
            }
            Action::UnwatchHealth { key } => {
                if let Some(p) = self.probes.remove(&key) {
                    p.abort();
                }
            }
            Action::Launch {
                key,
                replace,
                slice,
                generation,
                start,
                ..
            } => {
                let Some(agent) = self.config.agent(&key.agent) else {
                    return;
                };
                let stop_timeout = agent.stop_timeout.std();
                if let Some(Slice::Mps { gpu_uuid, .. }) = &slice {
                    self.mps_running.insert(gpu_uuid.clone());
                }
                let spec = SpecInputs {
                    config: self.config.clone(),
                    agent: key.agent.clone(),
                    replica: key.replica,
                    hash: self
                        .sup
                        .config_hash(&key.agent)
                        .unwrap_or_default()
                        .to_string(),
                    generation,
                    injection: self.injection(),
                };
                let op = match (&replace, start) {
                    (Some(_), _) => OpKind::Recreate,
                    (None, true) => OpKind::Launch,
                    (None, false) => OpKind::Create,
                };
                let job = Job::Launch {
                    spec: Box::new(spec),
                    replace,
                    slice,
                    stop_timeout,
                    start,
                };
                self.spawn_op(key, op, job);
            }
            Action::DestroyMig {
                gpu_index, gi_id, ..
            } => {
                if let Some(gpu) = &self.gpu {
                    gpu.destroy(gpu_index, gi_id);
                }
            }
            Action::Start { key, id } => self.spawn_op(key, OpKind::Start, Job::Start { id }),
            Action::Restart { key, id } => {
                let stop_timeout = self.stop_timeout(&key);
                self.spawn_op(key, OpKind::Restart, Job::Restart { id, stop_timeout });
            }
            Action::Stop { key, id } => {
                let stop_timeout = self.stop_timeout(&key);
                self.spawn_op(key, OpKind::Stop, Job::Stop { id, stop_timeout });
            }
            Action::Remove { key, id } => self.spawn_op(key, OpKind::Remove, Job::Remove { id }),
        }
    }

    fn stop_timeout(&self, key: &ReplicaKey) -> Duration {
        self.sup
            .config()
            .agent(&key.agent)
            .map(|a| a.stop_timeout.std())
            .unwrap_or(Duration::from_secs(10))
    }

    fn spawn_op(&mut self, key: ReplicaKey, op: OpKind, job: Job) {
        let ctx = JobCtx {
            rt: self.rt.clone(),
            gpu: self.gpu.clone(),
            mps_base: self.settings.mps_base.clone(),
            tx: self.tx.clone(),
            key: key.clone(),
        };
        let tx = self.tx.clone();
        let permits = self.permits.clone();
        self.ops.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = job.run(ctx).await;
            let _ = tx.send(Event::Op { key, op, result }).await;
        });
        // Reap finished tasks so the set does not grow.
        while self.ops.try_join_next().is_some() {}
    }

    fn reload(&mut self, now: u64, text: Option<(String, String)>) -> Result<Applied, ApiError> {
        let loaded = match &text {
            None => orch_config::load_file(&self.settings.config_path, &self.settings.load_options)
                .map_err(config_error)?,
            Some((name, text)) => orch_config::load_str(name, text, &self.settings.load_options)
                .map_err(config_error)?,
        };
        if loaded.config.host.name != self.sup.config().host.name {
            return Err(command_error(CommandError::WrongHost {
                current: self.sup.config().host.name.clone(),
                new: loaded.config.host.name,
            }));
        }
        // `apply`: the new text becomes the config file, then takes effect.
        if let Some((_, text)) = &text {
            write_atomic(&self.settings.config_path, text).map_err(|e| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!(
                        "cannot write {}: {e}; nothing was applied",
                        self.settings.config_path.display()
                    ),
                )
            })?;
        }
        let warnings = loaded.warnings.iter().map(|w| w.headline()).collect();
        let events_from = self.log.next_seq();
        let hashes = hashes(&loaded.config);
        let new_config = Arc::new(loaded.config.clone());
        let out = self
            .sup
            .reload(now, loaded.config, hashes)
            .map_err(command_error)?;
        self.config = new_config;
        let changed = out
            .events
            .iter()
            .find_map(|e| match e {
                EventKind::ConfigApplied { changed, .. } => Some(changed.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.execute(out);
        Ok(Applied {
            generation: self.sup.generation(),
            changed,
            warnings,
            events_from,
        })
    }

    fn on_api(&mut self, call: ApiCall) {
        let now = self.now();
        match call {
            ApiCall::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ApiCall::Groups(tx) => {
                let _ = tx.send(self.groups());
            }
            ApiCall::Agents(tx) => {
                let _ = tx.send(self.agents());
            }
            ApiCall::Group {
                name,
                verb,
                with_dependents,
                reply,
            } => {
                let events_from = self.log.next_seq();
                let before: BTreeSet<String> = self.sup.started_groups().clone();
                let r = match verb {
                    GroupVerb::Start => self.sup.start_group(now, &name),
                    GroupVerb::Stop => self.sup.stop_group(now, &name, with_dependents),
                    GroupVerb::Restart => self.sup.restart_group(now, &name),
                };
                let answer = r.map_err(command_error).map(|out| {
                    self.execute(out);
                    let after = self.sup.started_groups();
                    let mut groups: Vec<String> =
                        after.symmetric_difference(&before).cloned().collect();
                    if groups.is_empty() {
                        groups.push(name.clone());
                    }
                    let message = match verb {
                        GroupVerb::Start => format!("starting {}", groups.join(", ")),
                        GroupVerb::Stop => format!("stopping {}", groups.join(", ")),
                        GroupVerb::Restart => format!("restarting {name}"),
                    };
                    Accepted {
                        message,
                        groups,
                        events_from,
                    }
                });
                let _ = reply.send(answer);
            }
            ApiCall::AgentRestart {
                group,
                agent,
                reply,
            } => {
                let events_from = self.log.next_seq();
                let answer = self
                    .sup
                    .restart_agent(now, &group, &agent)
                    .map_err(command_error)
                    .map(|out| {
                        self.execute(out);
                        Accepted {
                            message: format!("restarting {group}/{agent}"),
                            groups: vec![group.clone()],
                            events_from,
                        }
                    });
                let _ = reply.send(answer);
            }
            ApiCall::Gpu(tx) => {
                let _ = tx.send(self.gpu_report());
            }
            ApiCall::Plan { request, reply } => {
                let _ = reply.send(self.plan(&request));
            }
            ApiCall::MigMode { gpu, enable, reply } => self.mig_mode(gpu, enable, reply),
            ApiCall::Subscribe { since, reply } => {
                let _ = reply.send(self.log.subscribe(since));
            }
            ApiCall::Container {
                group,
                agent,
                replica,
                reply,
            } => {
                let key = ReplicaKey::new(&agent, replica);
                let answer = match self.sup.config().agent(&agent) {
                    Some(a) if a.group == group => self
                        .sup
                        .replica(&key)
                        .and_then(|r| r.container.as_ref().map(|c| c.id.clone()))
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::NotFound,
                                format!("{group}/{key} has no container (is its group started?)"),
                            )
                        }),
                    _ => Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!("no agent `{agent}` in group `{group}`"),
                    )),
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn group_state(&self, name: &str) -> GroupState {
        let (_, running, _) = self.sup.group_counts(name);
        let active = self
            .sup
            .replicas()
            .any(|r| r.group == name && (r.container.is_some() || r.op.is_some()));
        if !self.sup.group_wanted(name) {
            if self.sup.started_groups().contains(name) || active {
                GroupState::Stopping
            } else {
                let _ = running;
                GroupState::Stopped
            }
        } else if self.sup.group_ready(name) {
            GroupState::Ready
        } else if self.ever_ready.contains(name) {
            GroupState::Degraded
        } else {
            GroupState::Starting
        }
    }

    fn groups(&self) -> Vec<GroupStatus> {
        let graph = orch_core::graph::group_graph(self.sup.config());
        self.sup
            .config()
            .groups
            .iter()
            .map(|g| {
                let (wanted, running, healthy) = self.sup.group_counts(&g.name);
                GroupStatus {
                    name: g.name.clone(),
                    description: g.description.clone(),
                    started: self.sup.started_groups().contains(&g.name),
                    state: self.group_state(&g.name),
                    wanted,
                    running,
                    healthy,
                    depends_on: graph.deps_of(&g.name).to_vec(),
                }
            })
            .collect()
    }

    fn agents(&self) -> Vec<AgentStatus> {
        let config = self.sup.config();
        let mut out: Vec<AgentStatus> = self
            .sup
            .replicas()
            .map(|r| {
                let agent = config.agent(&r.key.agent);
                AgentStatus {
                    group: r.group.clone(),
                    agent: r.key.agent.clone(),
                    replica: r.key.replica,
                    phase: r.phase.clone(),
                    health: r.health,
                    container: r
                        .container
                        .as_ref()
                        .map(|c| c.id.chars().take(12).collect()),
                    image: agent.map(|a| a.image.clone()).unwrap_or_default(),
                    restarts: r.restarts_total,
                    crashloop: r.crashloop,
                    slice: r.slice.clone(),
                    ports: agent
                        .map(|a| a.ports.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    config_hash: r.container.as_ref().map(|c| c.config_hash.clone()),
                }
            })
            .collect();
        let order: Vec<&str> = config.agents().map(|a| a.name.as_str()).collect();
        out.sort_by_key(|a| {
            (
                order
                    .iter()
                    .position(|n| *n == a.agent)
                    .unwrap_or(usize::MAX),
                a.replica,
            )
        });
        out
    }

    fn status(&self) -> Status {
        let groups = self.groups();
        let mut counts = AgentCounts::default();
        for r in self.sup.replicas() {
            if self.sup.group_wanted(&r.group) {
                counts.wanted += 1;
            }
            if r.is_running() {
                counts.running += 1;
            }
            if r.is_running() && r.health == orch_core::supervise::Health::Healthy {
                counts.healthy += 1;
            }
            if r.crashloop {
                counts.crashlooping += 1;
            }
        }
        Status {
            host: self.sup.config().host.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_ms: self.started_at.elapsed().as_millis() as u64,
            config_path: self.settings.config_path.display().to_string(),
            generation: self.sup.generation(),
            docker: DockerStatus {
                connected: self.sup.docker_up(),
                endpoint: self.settings.docker_endpoint.clone(),
                engine_version: self.engine.as_ref().map(|e| e.engine_version.clone()),
                api_version: self.engine.as_ref().map(|e| e.api_version.clone()),
                gpu_injection: match self.injection() {
                    Injection::Nvidia => "nvidia",
                    Injection::Cdi => "cdi",
                    Injection::Env => "env",
                }
                .to_string(),
            },
            gpu: GpuSummary {
                available: self.sup.inventory().is_some(),
                reason: self.sup.gpu_unavailable().map(str::to_string),
                gpus: self.sup.inventory().map(<[GpuInfo]>::len).unwrap_or(0),
                slices: self.sup.replicas().filter(|r| r.slice.is_some()).count(),
            },
            groups,
            agents: counts,
        }
    }
}

impl Owner {
    fn slice_owners(&self) -> Vec<SliceOwner> {
        self.sup
            .replicas()
            .filter_map(|r| {
                r.slice.clone().map(|slice| SliceOwner {
                    replica: r.key.to_string(),
                    group: r.group.clone(),
                    slice,
                })
            })
            .collect()
    }

    fn gpu_report(&self) -> GpuReport {
        let owners = self.slice_owners();
        let gpus = self.sup.inventory_with_ownership().unwrap_or_default();
        GpuReport {
            available: self.sup.inventory().is_some(),
            reason: self.sup.gpu_unavailable().map(str::to_string),
            library: self.gpu.as_ref().map(|g| g.library.display().to_string()),
            driver_version: self.gpu.as_ref().and_then(|g| g.driver_version.clone()),
            gpus: gpus
                .iter()
                .map(|info| {
                    let slices: Vec<SliceOwner> = owners
                        .iter()
                        .filter(|o| o.slice.gpu_uuid() == info.uuid)
                        .cloned()
                        .collect();
                    GpuStatus {
                        free: orch_api::report::free_capacity(
                            info,
                            &slices,
                            &self.sup.config().gpus,
                        ),
                        telemetry: self.telemetry.get(&info.index).copied(),
                        info: info.clone(),
                        slices,
                    }
                })
                .collect(),
        }
    }

    /// Plans `request`'s config on the live inventory, keeping the slices
    /// of running replicas whose request the new config leaves unchanged.
    fn plan(&self, request: &ApplyRequest) -> Result<PlanReport, ApiError> {
        let loaded = orch_config::load_str(
            &request.file_name,
            &request.config_text,
            &self.settings.load_options,
        )
        .map_err(config_error)?;
        let new = &loaded.config;
        let gpus = self.sup.inventory_with_ownership().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "no GPU inventory on this host: {}",
                    self.sup.gpu_unavailable().unwrap_or("not taken yet")
                ),
            )
        })?;
        let requests = orch_core::planner::config_requests(new);
        let current: Vec<orch_core::gpu::Assignment> = self
            .sup
            .replicas()
            .filter(|r| {
                r.container.is_some()
                    && new.agent(&r.key.agent).map(|a| &a.gpu)
                        == self.sup.config().agent(&r.key.agent).map(|a| &a.gpu)
            })
            .filter_map(|r| {
                r.slice.clone().map(|slice| orch_core::gpu::Assignment {
                    replica: r.key.clone(),
                    slice,
                    fallback_depth: r.slice_depth,
                })
            })
            .collect();
        let plan = orch_core::planner::plan(&orch_core::planner::PlanInput {
            gpus: &gpus,
            policies: &new.gpus,
            requests: &requests,
            current: &current,
            settings: Default::default(),
        });
        let mut report = orch_api::report::plan_report(new, &plan, &requests, &current, "daemon");
        let new_hashes = hashes(new);
        let mut changes = ConfigChanges::default();
        for (agent, h) in &new_hashes {
            match self.sup.config_hash(agent) {
                None => changes.added.push(agent.clone()),
                Some(old) if old != h => changes.recreated.push(agent.clone()),
                Some(_) => changes.unchanged += 1,
            }
        }
        for a in self.sup.config().agents() {
            if !new_hashes.contains_key(&a.name) {
                changes.removed.push(a.name.clone());
            }
        }
        report.changes = Some(changes);
        Ok(report)
    }

    /// MIG mode changes are never made by the daemon on its own: only on
    /// request, refused while agents hold slices of the GPU, and pending
    /// until the GPU is reset.
    fn mig_mode(&self, index: u32, enable: bool, reply: Reply<Accepted>) {
        let Some(gpu) = self.gpu.clone() else {
            let _ = reply.send(Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "no GPUs: {}",
                    self.sup.gpu_unavailable().unwrap_or("NVML is not loaded")
                ),
            )));
            return;
        };
        let Some(info) = self
            .sup
            .inventory()
            .and_then(|g| g.iter().find(|g| g.index == index))
            .cloned()
        else {
            let _ = reply.send(Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no GPU {index} on this host"),
            )));
            return;
        };
        let holders: Vec<String> = self
            .sup
            .replicas()
            .filter(|r| r.slice.as_ref().is_some_and(|s| s.gpu_uuid() == info.uuid))
            .map(|r| r.key.to_string())
            .collect();
        if !holders.is_empty() {
            let _ = reply.send(Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "GPU {index} has slices held by {}; stop their groups before changing its MIG mode",
                    holders.join(", ")
                ),
            )));
            return;
        }
        let events_from = self.log.next_seq();
        tokio::spawn(async move {
            let answer = gpu
                .set_mig_mode(index, enable)
                .await
                .map(|c| Accepted {
                    message: mig_message(index, &info.name, enable, c.reset_required),
                    groups: Vec::new(),
                    events_from,
                })
                .map_err(|e| {
                    let code = match e {
                        orch_gpu::GpuError::NotSupported { .. } => ErrorCode::Conflict,
                        orch_gpu::GpuError::NoSuchGpu { .. } => ErrorCode::NotFound,
                        _ => ErrorCode::Unavailable,
                    };
                    ApiError::new(code, e.to_string())
                });
            let _ = reply.send(answer);
        });
    }
}

/// What an operator is told after a MIG mode request.
pub fn mig_message(index: u32, name: &str, enable: bool, reset_required: bool) -> String {
    let what = if enable { "enabled" } else { "disabled" };
    if reset_required {
        format!(
            "MIG mode will be {what} on GPU {index} ({name}) after a GPU reset (`nvidia-smi -r -i {index}`) or a reboot; nothing changes until then"
        )
    } else {
        format!("MIG mode is {what} on GPU {index} ({name})")
    }
}

/// Writes a file so that a reader sees the old or the new content, whole.
fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
