//! The executor: carries out the supervisor's actions (a task per Docker
//! operation, a task per watched container, the GPU worker for MIG and
//! MPS), keeps what it needs for that (operations in flight, probes, the
//! MPS control daemons it started and which of their GPUs are in an MPS
//! fault episode, the Docker engine it talks to, the latest GPU readings:
//! telemetry and the processes on each GPU), and turns Docker and GPU
//! news into supervisor input.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_core::container::{self, Injection};
use orch_core::gpu::{GpuInfo, ReplicaKey, Slice};
use orch_core::model::{GpuInjection, HostConfig};
use orch_core::supervise::{
    Action, ContainerFacts, ContainerStatus, Input, OpKind, Persisted, Supervisor,
};
use orch_docker::{ContainerRuntime, ContainerState, DockerEventKind, EngineInfo};
use tokio::task::JoinSet;

use crate::event::{self, DockerNews, GpuNews, HealthNews, OpDone, SliceReady};
use crate::gpu::{self, GpuWorker};
use crate::gpu_use::GpuReadings;
use crate::mps::FaultEpisodes;
use crate::ops::{self, Job, JobCtx, SpecInputs};
use crate::probe::{self, ProbeTarget, Prober};

/// What the executor acts through and reports with.
#[derive(Debug)]
pub(super) struct ExecDeps {
    pub rt: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub gpu: Option<GpuWorker>,
    pub docker_endpoint: String,
    /// Per-GPU MPS pipe and log directories are made under this one.
    pub mps_base: PathBuf,
    /// How many Docker operations may run at once.
    pub max_parallel_ops: usize,
    pub health: event::Sender<HealthNews>,
    pub ops_done: event::Sender<OpDone>,
    pub slice_ready: event::Sender<SliceReady>,
}

#[derive(Debug)]
pub(super) struct Executor {
    deps: ExecDeps,
    probes: HashMap<ReplicaKey, tokio::task::AbortHandle>,
    ops: JoinSet<()>,
    permits: Arc<tokio::sync::Semaphore>,
    engine: Option<EngineInfo>,
    /// GPUs whose MPS control daemon this daemon may have started.
    mps_running: BTreeSet<String>,
    /// The GPUs whose MPS servers the GPU worker was last told to read.
    mps_watched: BTreeSet<String>,
    /// The GPUs whose MPS server is in a fault episode.
    mps_faults: FaultEpisodes,
    /// Containers Docker reported OOM-killed; their `die` follows.
    oom_killed: BTreeSet<String>,
    last_inventory: Option<Vec<GpuInfo>>,
    readings: GpuReadings,
}

impl Executor {
    /// An executor resuming `persisted`: the MPS daemons of the agents a
    /// previous daemon left running are its to stop.
    pub(super) fn new(deps: ExecDeps, persisted: &Persisted) -> Self {
        let mps_running = persisted
            .slices
            .values()
            .filter_map(|s| match s {
                Slice::Mps { gpu_uuid, .. } => Some(gpu_uuid.clone()),
                _ => None,
            })
            .collect();
        let permits = Arc::new(tokio::sync::Semaphore::new(deps.max_parallel_ops.max(1)));
        let mut exec = Executor {
            deps,
            probes: HashMap::new(),
            ops: JoinSet::new(),
            permits,
            engine: None,
            mps_running,
            mps_watched: BTreeSet::new(),
            mps_faults: FaultEpisodes::default(),
            oom_killed: BTreeSet::new(),
            last_inventory: None,
            readings: GpuReadings::default(),
        };
        exec.sync_mps_watch();
        exec
    }

    /// Carries out `actions`; each Docker operation runs in `span_of` its
    /// replica and kind.
    pub(super) fn run(
        &mut self,
        sup: &Supervisor,
        actions: Vec<Action>,
        span_of: impl Fn(&ReplicaKey, OpKind) -> tracing::Span,
    ) {
        for action in actions {
            self.act(sup, action, &span_of);
        }
        self.stop_idle_mps(sup);
        self.sync_mps_watch();
    }

    /// Tells the GPU worker which GPUs' MPS servers to read for faults:
    /// those whose control daemon this daemon started.
    fn sync_mps_watch(&mut self) {
        let Some(gpu) = &self.deps.gpu else { return };
        if self.mps_watched == self.mps_running {
            return;
        }
        self.mps_watched = self.mps_running.clone();
        gpu.mps_watch(
            self.mps_running
                .iter()
                .map(|uuid| gpu::mps_gpu(&self.deps.mps_base, uuid))
                .collect(),
        );
    }

    fn act(
        &mut self,
        sup: &Supervisor,
        action: Action,
        span_of: &impl Fn(&ReplicaKey, OpKind) -> tracing::Span,
    ) {
        match action {
            Action::WatchHealth { key, id } => {
                let Some(agent) = sup.config().agent(&key.agent) else {
                    return;
                };
                let target = ProbeTarget {
                    key: key.clone(),
                    id,
                    network: sup.config().runtime.network.clone(),
                    check: agent.health.clone(),
                };
                let handle = tokio::spawn(probe::run(
                    target,
                    self.deps.prober.clone(),
                    self.deps.health.clone(),
                ));
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
                let Some(agent) = sup.config().agent(&key.agent) else {
                    return;
                };
                let stop_timeout = agent.stop_timeout.std();
                if let Some(Slice::Mps { gpu_uuid, .. }) = &slice {
                    self.mps_running.insert(gpu_uuid.clone());
                }
                let spec = SpecInputs {
                    config: sup.shared_config(),
                    agent: key.agent.clone(),
                    replica: key.replica,
                    hash: sup.config_hash(&key.agent).unwrap_or_default().to_string(),
                    generation,
                    injection: self.injection(sup.config()),
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
                let span = span_of(&key, op);
                self.spawn_op(sup, key, op, job, span);
            }
            Action::DestroyMig {
                gpu_index, gi_id, ..
            } => {
                if let Some(gpu) = &self.deps.gpu {
                    gpu.destroy(gpu_index, gi_id);
                }
            }
            Action::Start { key, id } => {
                let span = span_of(&key, OpKind::Start);
                self.spawn_op(sup, key, OpKind::Start, Job::Start { id }, span);
            }
            Action::Restart { key, id } => {
                let stop_timeout = stop_timeout(sup.config(), &key);
                let span = span_of(&key, OpKind::Restart);
                self.spawn_op(
                    sup,
                    key,
                    OpKind::Restart,
                    Job::Restart { id, stop_timeout },
                    span,
                );
            }
            Action::Stop { key, id } => {
                let stop_timeout = stop_timeout(sup.config(), &key);
                let span = span_of(&key, OpKind::Stop);
                self.spawn_op(sup, key, OpKind::Stop, Job::Stop { id, stop_timeout }, span);
            }
            Action::Remove { key, id } => {
                let span = span_of(&key, OpKind::Remove);
                self.spawn_op(sup, key, OpKind::Remove, Job::Remove { id }, span);
            }
        }
    }

    /// Stops MPS control daemons whose GPU has no client left.
    fn stop_idle_mps(&mut self, sup: &Supervisor) {
        let Some(gpu) = &self.deps.gpu else { return };
        let needed: BTreeSet<String> = sup
            .replicas()
            .filter(|r| r.container.is_some() || r.op.is_some() || sup.group_wanted(&r.group))
            .filter_map(|r| match &r.slice {
                Some(Slice::Mps { gpu_uuid, .. }) => Some(gpu_uuid.clone()),
                _ => None,
            })
            .collect();
        let idle: Vec<String> = self.mps_running.difference(&needed).cloned().collect();
        for uuid in idle {
            tracing::info!(gpu = %uuid, "no MPS client left; stopping its control daemon");
            gpu.mps_stop(gpu::mps_gpu(&self.deps.mps_base, &uuid));
            self.mps_running.remove(&uuid);
        }
    }

    fn spawn_op(
        &mut self,
        sup: &Supervisor,
        key: ReplicaKey,
        op: OpKind,
        job: Job,
        span: tracing::Span,
    ) {
        // The replica's slice: the one its container holds, except on a
        // replacement that moves it (a changed GPU request), where it is
        // already the new one; the old container's clients are then looked
        // for on the new GPU, not found, and the stop goes on as before.
        let mps = match sup.replica(&key).and_then(|r| r.slice.as_ref()) {
            Some(Slice::Mps { gpu_uuid, .. }) => Some(gpu::mps_gpu(&self.deps.mps_base, gpu_uuid)),
            _ => None,
        };
        let ctx = JobCtx {
            rt: self.deps.rt.clone(),
            gpu: self.deps.gpu.clone(),
            mps_base: self.deps.mps_base.clone(),
            slice_ready: self.deps.slice_ready.clone(),
            key: key.clone(),
            mps,
        };
        let done = self.deps.ops_done.clone();
        let permits = self.permits.clone();
        self.ops.spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permits.acquire_owned().await;
                let result = job.run(ctx).await;
                let _ = done.send(OpDone { key, op, result }).await;
            },
            span,
        ));
        // Reap finished tasks so the set does not grow.
        while self.ops.try_join_next().is_some() {}
    }

    /// Docker news as supervisor input (`None`: nothing for it).
    pub(super) fn docker(&mut self, news: DockerNews) -> Option<Input> {
        match news {
            DockerNews::Up { engine, containers } => {
                tracing::info!(version = %engine.engine_version, api = %engine.api_version, "connected to the Docker Engine");
                self.engine = Some(*engine);
                let listed = containers
                    .into_iter()
                    .filter_map(|o| {
                        let (key, group) = ops::replica_of(&o.summary.labels)?;
                        let facts = match &o.info {
                            Some(info) => ops::facts(info),
                            None => listed_facts(&o.summary),
                        };
                        Some((key, group, facts))
                    })
                    .collect();
                Some(Input::Resync { containers: listed })
            }
            DockerNews::Down { .. } => Some(Input::DockerDown),
            DockerNews::Event(ev) => {
                let (key, _) = ops::replica_of(&ev.labels)?;
                match ev.kind {
                    DockerEventKind::Start => Some(Input::ContainerStarted { key, id: ev.id }),
                    // Docker reports an OOM kill just before the `die`.
                    DockerEventKind::Oom => {
                        self.oom_killed.insert(ev.id);
                        None
                    }
                    DockerEventKind::Die { exit_code } => Some(Input::ContainerDied {
                        key,
                        oom: self.oom_killed.remove(&ev.id),
                        id: ev.id,
                        code: exit_code.unwrap_or(-1),
                        at_ms: u64::try_from(ev.time_ns / 1_000_000).unwrap_or(0),
                        // Set by the owner, which has the clock.
                        seen_late_ms: 0,
                    }),
                    DockerEventKind::Destroy => Some(Input::ContainerRemoved { key, id: ev.id }),
                    _ => None,
                }
            }
        }
    }

    /// GPU news as supervisor input: a changed inventory, a new reason why
    /// there is none (`gpu_unavailable`: the current one), or the start of
    /// an MPS server's fault episode.
    pub(super) fn gpu(&mut self, news: GpuNews, gpu_unavailable: Option<&str>) -> Vec<Input> {
        if let GpuNews::MpsServers { gpus } = &news {
            return self
                .mps_faults
                .take(gpus)
                .into_iter()
                .map(|fault| {
                    tracing::warn!(gpu = %fault.gpu_uuid, clients = fault.clients.len(), "MPS server fault");
                    Input::MpsServerFault(fault)
                })
                .collect();
        }
        self.gpu_reading(news, gpu_unavailable)
            .into_iter()
            .collect()
    }

    fn gpu_reading(&mut self, news: GpuNews, gpu_unavailable: Option<&str>) -> Option<Input> {
        match news {
            GpuNews::Processes { gpus } => {
                self.readings.processes = gpus;
                None
            }
            GpuNews::MpsServers { .. } => None,
            GpuNews::Reading { gpus, telemetry } => {
                self.readings.telemetry = telemetry;
                if self.last_inventory.as_ref() == Some(&gpus) {
                    return None;
                }
                self.last_inventory = Some(gpus.clone());
                Some(Input::Inventory { gpus })
            }
            GpuNews::Unavailable { reason } => {
                if gpu_unavailable == Some(reason.as_str()) {
                    return None;
                }
                tracing::warn!("GPUs unavailable: {reason}");
                self.last_inventory = None;
                self.readings = GpuReadings::default();
                Some(Input::GpuUnavailable { reason })
            }
        }
    }

    /// How GPUs are given to containers: as configured, or (`auto`) as the
    /// engine can.
    pub(super) fn injection(&self, config: &HostConfig) -> Injection {
        match config.runtime.gpu_injection {
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

    pub(super) fn engine(&self) -> Option<&EngineInfo> {
        self.engine.as_ref()
    }

    pub(super) fn docker_endpoint(&self) -> &str {
        &self.deps.docker_endpoint
    }

    pub(super) fn gpu_worker(&self) -> Option<&GpuWorker> {
        self.deps.gpu.as_ref()
    }

    /// The GPU worker's latest readings.
    pub(super) fn telemetry(&self) -> &GpuReadings {
        &self.readings
    }

    /// Nothing left running and nothing in flight (for `shutdown: stop`).
    pub(super) fn drained(sup: &Supervisor) -> bool {
        sup.replicas()
            .all(|r| r.container.is_none() && r.op.is_none())
    }

    /// Stops the probes and lets operations already running finish (a
    /// create half done is worse than a late exit), for at most `limit`.
    pub(super) async fn finish(&mut self, limit: Duration) {
        for (_, p) in self.probes.drain() {
            p.abort();
        }
        let wait = async { while self.ops.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// A listed container's facts: a listing has no exit code or start time
/// (stopped containers are inspected instead).
fn listed_facts(summary: &orch_docker::ContainerSummary) -> ContainerFacts {
    ContainerFacts {
        id: summary.id.clone(),
        config_hash: summary
            .labels
            .get(container::labels::CONFIG_HASH)
            .cloned()
            .unwrap_or_default(),
        status: if summary.state == ContainerState::Created {
            ContainerStatus::Created
        } else {
            ContainerStatus::Running
        },
        started_at_ms: 0,
        gpu_slice: summary.labels.get(container::labels::GPU_SLICE).cloned(),
    }
}

fn stop_timeout(config: &HostConfig, key: &ReplicaKey) -> Duration {
    config
        .agent(&key.agent)
        .map(|a| a.stop_timeout.std())
        .unwrap_or(Duration::from_secs(10))
}
