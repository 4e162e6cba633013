//! Types of the supervision state machine and its transitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::gpu::{GpuInfo, ReplicaKey, Slice};
use crate::graph::{Graph, agent_graph, group_graph};
use crate::model::{Agent, HostConfig, RestartMode};

/// Milliseconds on a monotonic clock the caller owns.
pub type Millis = u64;

/// How long a replica that could not get a GPU slice waits before the
/// host is planned again for it.
pub const GPU_RETRY: Millis = 30_000;

/// What the caller knows about one container of ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    pub id: String,
    pub config_hash: String,
    pub status: ContainerStatus,
    /// When Docker last started it (Unix ms, Docker's clock; 0 if unknown).
    #[serde(default)]
    pub started_at_ms: u64,
    /// The GPU slice it was given, as its label describes it
    /// (`Slice::describe`): read back when the state has no record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_slice: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum ContainerStatus {
    /// Created but never started (e.g. the daemon died between the two calls).
    Created,
    Running,
    Exited {
        code: i64,
        oom: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Not probed yet since the last start.
    Unknown,
    Healthy,
    Unhealthy,
}

/// Where a replica is in its life, for people and for the decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Wanted, not started yet (about to start, or held).
    Pending,
    /// Held until these are ready.
    Held {
        waiting_for: Vec<Wait>,
    },
    /// A create/start is in flight.
    Starting,
    Running,
    /// Exited; a restart is due at `until`.
    BackingOff {
        until: Millis,
        exit_code: Option<i64>,
    },
    /// Exited and not to be restarted (policy, or a clean exit under on-failure).
    Exited {
        code: i64,
    },
    /// The last launch failed (image missing, Docker refused, no GPU slice).
    Failed {
        reason: FailReason,
        retry_at: Millis,
    },
    Stopping,
    /// Not wanted any more and gone; kept only until removed from the table.
    Stopped,
}

/// What a held replica waits for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wait {
    /// A required agent it depends on is not ready.
    Agent(String),
    /// A group named in its group's `depends_on` is not started or not ready.
    Group(String),
    /// GPU agents wait for the first GPU inventory.
    GpuInventory,
    /// A required agent it needs (directly or not) is crash-looping: it
    /// was stopped, and starts again once that agent is stable.
    CrashLoop(String),
    /// An agent of another host (`depends_on: [HOST/AGENT]`) is not ready.
    RemoteAgent { host: String, agent: String },
    /// A group of another host (`depends_on: [HOST/group:NAME]`) is not ready.
    RemoteGroup { host: String, group: String },
}

/// What this host knows of another host, for cross-host dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RemoteHost {
    /// Not heard from since this daemon started: its dependents are not
    /// started, and running ones are left alone (a restarted daemon must
    /// not stop them before it has heard).
    #[default]
    Unknown,
    /// Declared down: its dependents are stopped and held.
    Down,
    /// Alive, with what is ready on it.
    Up(RemoteView),
}

/// The agents and groups of another host that are ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteView {
    pub ready_agents: BTreeSet<String>,
    pub ready_groups: BTreeSet<String>,
    /// Agents whose replicas all run there but are not probed yet since
    /// they were started or adopted (a restarted daemon's first word): not
    /// ready for new dependents, not failed for running ones.
    pub pending_agents: BTreeSet<String>,
}

/// Why a launch (or start) of a container failed, as the daemon's
/// executor reports it. Typed so that metrics can count by reason and the
/// edge (CLI, logs) can say it in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The image is not on the host (images are never pulled).
    ImageMissing { image: String },
    /// Docker could not be reached during the operation.
    DockerUnreachable { detail: String },
    /// Docker refused the request.
    DockerRefused { detail: String },
    /// The engine cannot provide GPU devices through this driver.
    GpuDriverMissing { driver: String, detail: String },
    /// The container spec cannot be expressed as a Docker request.
    InvalidSpec { detail: String },
    /// Making the GPU side of the slice real failed (a MIG instance, an MPS daemon).
    GpuPrepare { gpu_index: u32, detail: String },
    /// The host has no usable NVML, so no slice can be made.
    NoGpuAccess,
    /// The agent is no longer in the config.
    NotConfigured { agent: String },
    /// The replica's container is not on the Docker host any more
    /// (removed behind the supervisor's back, or by a failed replacement).
    ContainerGone { id: String },
}

/// Why a replica is `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    Launch(LaunchError),
    /// The planner could place none of the agent's GPU requests.
    NoSlice(Box<crate::planner::PlanError>),
    /// The host has no usable GPUs (no NVML, or it failed); `detail` is
    /// what the GPU adapter said.
    GpuUnavailable {
        detail: String,
    },
}

impl FailReason {
    /// A short, stable name for counting failures by kind (a metric label).
    pub fn label(&self) -> &'static str {
        match self {
            FailReason::Launch(e) => match e {
                LaunchError::ImageMissing { .. } => "image_missing",
                LaunchError::DockerUnreachable { .. } => "docker_unreachable",
                LaunchError::DockerRefused { .. } => "docker_error",
                LaunchError::GpuDriverMissing { .. } => "gpu_driver_missing",
                LaunchError::InvalidSpec { .. } => "invalid_spec",
                LaunchError::GpuPrepare { .. } => "gpu_prepare",
                LaunchError::NoGpuAccess => "gpu_unavailable",
                LaunchError::NotConfigured { .. } => "not_configured",
                LaunchError::ContainerGone { .. } => "container_gone",
            },
            FailReason::NoSlice(_) => "gpu_no_capacity",
            FailReason::GpuUnavailable { .. } => "gpu_unavailable",
        }
    }
}

/// Why a replica is restarted by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Its container exited (or a launch failed) and its policy restarts it.
    Exited,
    /// It failed its health check `retries` times in a row.
    Unhealthy,
    /// Its measured GPU memory went over what its slice holds, and its
    /// agent says `gpu.over_limit: restart`.
    GpuMemoryExceeded,
}

impl RestartReason {
    /// A short, stable name (a metric label, the wire form).
    pub fn label(self) -> &'static str {
        match self {
            RestartReason::Exited => "exited",
            RestartReason::Unhealthy => "unhealthy",
            RestartReason::GpuMemoryExceeded => "gpu_memory_exceeded",
        }
    }
}

/// Where a group is, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    Stopped,
    Starting,
    Ready,
    /// Started, was ready, and some required agent is not healthy now.
    Degraded,
    Stopping,
}

/// An operation the caller runs and reports back with `Input::OpFinished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Create (if no container exists) and start.
    Launch,
    /// Create without starting: a held replica is made ready ahead of its
    /// dependencies, so only `docker start` is left when they are.
    Create,
    /// `docker start` of the existing container.
    Start,
    /// Stop (with the agent's grace period) and start again.
    Restart,
    /// Remove the old container, create a new one from the current spec, start it.
    Recreate,
    /// Stop and remove.
    Stop,
    /// Remove a container that is not running.
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub key: ReplicaKey,
    pub group: String,
    pub container: Option<ContainerFacts>,
    pub phase: Phase,
    pub health: Health,
    pub probe_failures: u32,
    /// When the current container last started (our clock).
    pub started_at: Option<Millis>,
    pub healthy_since: Option<Millis>,
    /// Adopted running at a resync: how long its container had run by
    /// then (`started_at`), from Docker's `StartedAt`.
    pub up_before_adoption: Option<Millis>,
    /// Time that counts towards `min_healthy` before `healthy_since`: a
    /// container adopted running whose first probe passed is taken as
    /// healthy for as long as it had run (it ran before the daemon saw it).
    pub healthy_credit: Millis,
    /// The operation in flight, if any.
    pub op: Option<OpKind>,
    /// Restarts since the replica was last stable; drives the backoff.
    pub failures: u32,
    /// Times of recent restarts, for crash-loop detection.
    pub restart_times: VecDeque<Millis>,
    pub crashloop: bool,
    /// Set by `agent restart`; cleared when the restart is issued.
    pub restart_requested: bool,
    /// Its GPU memory went over its limit under `gpu.over_limit: restart`;
    /// cleared when the restart is issued (or the container is gone).
    pub over_limit_restart: bool,
    /// Stopped because a dependency is crash-looping; started again when it recovers.
    pub held_by_crashloop: bool,
    pub slice: Option<Slice>,
    /// Which entry of the agent's request chain the slice meets.
    pub slice_depth: u8,
    /// The last GPU planning failure reported for this replica.
    pub plan_error: Option<FailReason>,
    /// Total restarts done by the supervisor (for status and metrics).
    pub restarts_total: u64,
    /// An exit reported while an operation was in flight, settled when it ends
    /// (the event can overtake the operation's own report).
    pub early_exit: Option<EarlyExit>,
    /// A replacement whose new container could not be made is tried again
    /// no sooner than this (the old container runs meanwhile).
    pub replace_after: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyExit {
    pub id: String,
    pub code: i64,
    pub oom: bool,
    /// Unix ms on Docker's clock.
    pub at_ms: u64,
}

impl Replica {
    pub(crate) fn new(key: ReplicaKey, group: &str) -> Self {
        Replica {
            key,
            group: group.to_string(),
            container: None,
            phase: Phase::Pending,
            health: Health::Unknown,
            probe_failures: 0,
            started_at: None,
            healthy_since: None,
            up_before_adoption: None,
            healthy_credit: 0,
            op: None,
            failures: 0,
            restart_times: VecDeque::new(),
            crashloop: false,
            restart_requested: false,
            over_limit_restart: false,
            held_by_crashloop: false,
            slice: None,
            slice_depth: 0,
            plan_error: None,
            restarts_total: 0,
            early_exit: None,
            replace_after: 0,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.container.as_ref().map(|c| c.status),
            Some(ContainerStatus::Running)
        )
    }
}

/// Things that happened, reported by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A full listing of our containers (at start, and after Docker came back).
    Resync {
        containers: Vec<(ReplicaKey, String, ContainerFacts)>,
    },
    ContainerStarted {
        key: ReplicaKey,
        id: String,
    },
    ContainerDied {
        key: ReplicaKey,
        id: String,
        code: i64,
        oom: bool,
        /// When it died: Unix ms on Docker's clock.
        at_ms: u64,
        /// How long after `at_ms` the daemon got the news (its own Unix
        /// time then, less `at_ms`; 0 when unknown or Docker's clock is
        /// ahead). A restart's backoff counts from the death, as Docker's
        /// own restart policy does, not from the event's arrival.
        seen_late_ms: u64,
    },
    ContainerRemoved {
        key: ReplicaKey,
        id: String,
    },
    Health {
        key: ReplicaKey,
        id: String,
        ok: bool,
    },
    OpFinished {
        key: ReplicaKey,
        op: OpKind,
        result: Result<OpSuccess, LaunchError>,
    },
    /// A replacement's new container could not be created; the old one
    /// was not touched and runs on (it is stopped only once its
    /// replacement exists).
    ReplacementNotMade {
        key: ReplicaKey,
        error: LaunchError,
    },
    DockerDown,
    /// The replicas' measured GPU memory on the GPUs whose processes were
    /// read (`over_limit`): a GPU absent decides nothing.
    GpuMemory {
        gpus: Vec<crate::over_limit::GpuMemory>,
    },
    /// A fresh GPU inventory (at start, and whenever it changes).
    Inventory {
        gpus: Vec<GpuInfo>,
    },
    /// The host has no usable NVML: GPU agents cannot start, CPU ones can.
    GpuUnavailable {
        reason: String,
    },
    /// A launch completed a replica's slice (e.g. created its MIG instance).
    SliceReady {
        key: ReplicaKey,
        slice: Slice,
    },
    /// What is known of another host changed.
    Remote {
        host: String,
        state: RemoteHost,
    },
    /// A direct probe of another host's agent, asked for by
    /// [`Supervisor::remote_probes`] while that host is down: `healthy`
    /// false only once the agent's `retries` failed in a row.
    RemoteProbe {
        host: String,
        agent: String,
        healthy: bool,
    },
    /// A GPU's MPS server was seen in `FAULT`, once per fault episode:
    /// its running MPS replicas are restarted (`supervise::mps`).
    MpsServerFault(super::mps::MpsFault),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpSuccess {
    /// The container the operation left in place (none after Stop/Remove).
    pub container: Option<ContainerFacts>,
    /// The slice as the operation completed it (a created MIG device).
    pub slice: Option<Slice>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    Launch {
        key: ReplicaKey,
        group: String,
        /// The container this one replaces (recreate): stopped and removed
        /// only once the new one is created; if it cannot be, the executor
        /// answers `Input::ReplacementNotMade` and the old one runs on.
        replace: Option<String>,
        slice: Option<Slice>,
        generation: u64,
        /// False: create the container and leave it stopped.
        start: bool,
    },
    Start {
        key: ReplicaKey,
        id: String,
    },
    Restart {
        key: ReplicaKey,
        id: String,
    },
    Stop {
        key: ReplicaKey,
        id: String,
    },
    Remove {
        key: ReplicaKey,
        id: String,
    },
    /// Probe this container until told otherwise.
    WatchHealth {
        key: ReplicaKey,
        id: String,
    },
    UnwatchHealth {
        key: ReplicaKey,
    },
    /// Destroy a MIG instance this orchestrator created and nobody uses.
    DestroyMig {
        gpu_index: u32,
        gpu_uuid: String,
        gi_id: u32,
    },
}

/// What operators see happen. The control API has its own wire form of
/// these (`orch_api::EventKind`); this one may change freely.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorEvent {
    GroupStarting {
        group: String,
    },
    GroupReady {
        group: String,
    },
    GroupStopping {
        group: String,
    },
    GroupStopped {
        group: String,
    },
    AgentStarting {
        replica: ReplicaKey,
        group: String,
    },
    AgentRunning {
        replica: ReplicaKey,
        group: String,
    },
    AgentHealthy {
        replica: ReplicaKey,
        group: String,
    },
    AgentUnhealthy {
        replica: ReplicaKey,
        group: String,
    },
    AgentExited {
        replica: ReplicaKey,
        group: String,
        code: i64,
        oom: bool,
    },
    AgentRestarting {
        replica: ReplicaKey,
        group: String,
        in_ms: u64,
        attempt: u32,
        reason: RestartReason,
    },
    /// A replica's measured GPU memory went over its limit on a GPU (once
    /// per episode: again only after it was seen back under); `action`
    /// is its agent's `gpu.over_limit`.
    AgentGpuOverLimit {
        replica: ReplicaKey,
        group: String,
        gpu_index: u32,
        gpu_uuid: String,
        used_bytes: u64,
        limit_bytes: u64,
        action: crate::model::OverLimit,
    },
    /// A wanted replica exited and its restart policy does not bring it
    /// back (a clean exit under `on-failure`, or `never`): it stays down
    /// until an operator acts.
    AgentStaysDown {
        replica: ReplicaKey,
        group: String,
        code: i64,
    },
    AgentCrashLoop {
        replica: ReplicaKey,
        group: String,
        restarts: u32,
        window_ms: u64,
    },
    AgentRecovered {
        replica: ReplicaKey,
        group: String,
    },
    AgentHeld {
        replica: ReplicaKey,
        group: String,
        waiting_for: Vec<Wait>,
    },
    AgentFailed {
        replica: ReplicaKey,
        group: String,
        reason: FailReason,
    },
    /// An operator set the agent's replica count (`scale`); `reset`: back
    /// to the file's count.
    AgentScaled {
        agent: String,
        group: String,
        from: u32,
        to: u32,
        reset: bool,
    },
    /// The agent's autoscaler set its replica count.
    AgentAutoscaled {
        agent: String,
        group: String,
        from: u32,
        to: u32,
        cause: crate::autoscale::Cause,
    },
    /// An operator asked for a restart (`agent restart`).
    AgentRestartRequested {
        replica: ReplicaKey,
        group: String,
    },
    /// A running replica restarted by the supervisor for `reason`, not
    /// for a failure of its own.
    AgentRestarted {
        replica: ReplicaKey,
        group: String,
        reason: super::mps::RestartCause,
    },
    /// A GPU's MPS server faulted (once per fault episode); its running
    /// MPS replicas (`restarting`) are restarted. `client`: the faulting
    /// client where it can be told; `clients_listed`: how many clients the
    /// server listed when the fault was seen.
    MpsServerFault {
        gpu_index: Option<u32>,
        gpu_uuid: String,
        client: Option<super::mps::FaultingClient>,
        clients_listed: u32,
        restarting: Vec<ReplicaKey>,
    },
    AgentStopped {
        replica: ReplicaKey,
        group: String,
    },
    AgentAdopted {
        replica: ReplicaKey,
        group: String,
        container: String,
    },
    DuplicateRemoved {
        replica: ReplicaKey,
        container: String,
    },
    ConfigApplied {
        generation: u64,
        changed: Vec<String>,
    },
    /// A config's rollout began: `agents` are replaced step by step;
    /// `previous` is the generation a failed step goes back to.
    RolloutStarted {
        generation: u64,
        kind: super::rollout::RolloutKind,
        previous: u64,
        agents: Vec<String>,
    },
    /// A step's new replica was healthy and watched through.
    RolloutStepDone {
        generation: u64,
        replica: ReplicaKey,
    },
    /// A step failed; `rollback_to` names the generation going back in,
    /// `None` when the rollout is paused instead.
    RolloutFailed {
        generation: u64,
        failure: super::rollout::StepFailure,
        rollback_to: Option<u64>,
    },
    RolloutPaused {
        generation: u64,
    },
    RolloutResumed {
        generation: u64,
    },
    RolloutCompleted {
        generation: u64,
        kind: super::rollout::RolloutKind,
    },
    DockerDown,
    DockerUp,
    SliceAssigned {
        replica: ReplicaKey,
        group: String,
        slice: Slice,
        fallback_depth: u8,
    },
    MigDestroyed {
        gpu_index: u32,
        gi_id: u32,
    },
    GpuNote {
        note: crate::planner::PlanNote,
    },
    GpuUnavailable {
        reason: String,
    },
    /// The state did not account for running containers: these groups
    /// were marked started from them (see `infer`).
    StateInferred {
        origin: StateOrigin,
        adopted: u32,
        groups: Vec<String>,
        unconfigured: u32,
    },
    /// Started with `--fresh`: every running container of ours is stopped.
    FreshStart {
        stopping: u32,
    },
    /// The state could not be written; supervision goes on from memory.
    StateWriteFailed {
        detail: String,
    },
    /// The state was written again after failed writes.
    StateWritten,
}

/// What one decision asks of the caller.
///
/// "Desired state is written before it is acted on" is a property of this
/// type, not of the order of a list: a decision that changed desired state
/// says so in `persist`, and the caller writes
/// [`Supervisor::persisted`] before it carries out any of `actions`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Desired state changed: write it first.
    pub persist: bool,
    pub actions: Vec<Action>,
    pub events: Vec<SupervisorEvent>,
    /// A rollout step failed and its group rolls back by itself: the
    /// caller installs this earlier generation's config.
    pub rollback: Option<super::rollout::RollbackAsk>,
}

impl Outcome {
    pub(crate) fn persist(&mut self) {
        self.persist = true;
    }
}

/// An operator command's outcome, with what the command changed, so the
/// caller answers from it instead of reading it back from the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Commanded<T> {
    pub outcome: Outcome,
    pub changed: T,
}

impl<T> From<Commanded<T>> for Outcome {
    fn from(c: Commanded<T>) -> Outcome {
        c.outcome
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation now running.
    pub generation: u64,
    /// Agents whose config hash changed, added or removed.
    pub changed: Vec<String>,
    /// Of those, the ones acted on now: their group is started, or they
    /// still have a container or an operation in flight.
    pub recreated: Vec<String>,
    /// Agents whose replica count changed (agent, from, to) and nothing
    /// else that recreates them: replicas start or stop.
    pub rescaled: Vec<(String, u32, u32)>,
}

/// Where the desired state the daemon started with came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOrigin {
    /// Read from the state file: only groups it does not mention are inferred.
    Saved,
    /// There was no state file.
    Missing,
    /// The state file could not be read and was kept aside.
    Damaged,
    /// The operator asked to start from no started group (`run --fresh`).
    Fresh,
}

impl StateOrigin {
    /// A short, stable name (a log field, the wire form).
    pub fn label(self) -> &'static str {
        match self {
            StateOrigin::Saved => "saved",
            StateOrigin::Missing => "missing",
            StateOrigin::Damaged => "damaged",
            StateOrigin::Fresh => "fresh",
        }
    }
}

/// Why an operator command was refused. Nothing changes when it is.
/// Typed: its words are `orch_api::text`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    UnknownGroup(String),
    UnknownAgent {
        group: String,
        agent: String,
    },
    /// Started groups depend on `group`.
    NeededBy {
        group: String,
        needed_by: Vec<String>,
        /// The refused command was a restart (not a stop).
        restart: bool,
    },
    /// A config for another host.
    WrongHost {
        current: String,
        new: String,
    },
    /// A state names groups this host does not have.
    UnknownGroups(Vec<String>),
    /// A replica count the agent cannot run with.
    Scale {
        group: String,
        agent: String,
        asked: u32,
        why: ScaleRefusal,
    },
}

/// Why a `scale` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleRefusal {
    /// Outside the agent's `autoscale` bounds.
    OutOfBounds { min: u32, max: u32 },
    /// Above the most replicas any agent may have.
    TooMany { max: u32 },
    /// A fixed host port can be published by one replica only.
    FixedHostPort { port: u16 },
    /// The host port range has fewer ports than replicas.
    PortRangeTooSmall { first: u16, last: u16 },
}

/// The desired state that survives restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub started_groups: BTreeSet<String>,
    /// Groups an operator stopped: running containers of these are the
    /// rest of a stop, never evidence that they are wanted.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub stopped_groups: BTreeSet<String>,
    pub generation: u64,
    /// GPU slices by replica (`agent#replica`), kept across restarts.
    pub slices: BTreeMap<String, Slice>,
    /// MIG instances this orchestrator created: the only ones it may destroy.
    #[serde(default)]
    pub owned_mig: Vec<OwnedMig>,
    /// Restarts done by the supervisor, by replica (`agent#replica`):
    /// state, written whenever one is counted, so a restarted daemon
    /// reports exactly what the last one counted. (Files written before
    /// it existed load with none.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<String, u64>,
    /// Replica counts set at run time (`scale`), by agent: they override
    /// the file's until reset or until an apply changes that agent's
    /// `replicas`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale: BTreeMap<String, u32>,
    /// Agents of `scale` whose count their autoscaler set.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub autoscaled: BTreeSet<String>,
}

/// A MIG GPU instance made by this orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnedMig {
    pub gpu_uuid: String,
    pub gi_id: u32,
    pub profile_id: u32,
    pub placement_start: u8,
}

/// The supervision state of one host.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// Shared with whoever builds containers from it (launch jobs): one
    /// copy, replaced whole on reload.
    pub(crate) config: std::sync::Arc<HostConfig>,
    pub(crate) agents: BTreeMap<String, Agent>,
    pub(crate) hashes: BTreeMap<String, String>,
    pub(crate) agent_graph: Graph,
    pub(crate) group_graph: Graph,
    pub(crate) started: BTreeSet<String>,
    /// Groups an operator stopped (see `Persisted::stopped_groups`).
    pub(crate) stopped: BTreeSet<String>,
    /// Replica counts set at run time, by agent (see `Persisted::scale`);
    /// `agents` holds them as the agents' `replicas`.
    pub(crate) scale: BTreeMap<String, u32>,
    /// Agents of `scale` whose count their autoscaler set, with its last
    /// decision (`None` when set by a previous run).
    pub(crate) autoscaled: BTreeMap<String, Option<crate::autoscale::Decision>>,
    /// Armed by `infer_intent`, used once on the first listing of Docker.
    pub(crate) inference: Option<StateOrigin>,
    /// Groups being restarted: held down until fully stopped, then started.
    pub(crate) restarting: BTreeSet<String>,
    pub(crate) generation: u64,
    pub(crate) replicas: BTreeMap<ReplicaKey, Replica>,
    pub(crate) docker_up: bool,
    /// Groups that are ready now (their `GroupReady` was reported).
    pub(crate) ready_groups: BTreeSet<String>,
    /// Groups that have been ready since they were last started: one that
    /// is not ready now is degraded rather than starting.
    pub(crate) ever_ready: BTreeSet<String>,
    /// The last GPU inventory; `None` until the first one (or without NVML).
    pub(crate) inventory: Option<Vec<GpuInfo>>,
    pub(crate) gpu_unavailable: Option<String>,
    pub(crate) owned_mig: Vec<OwnedMig>,
    /// Restart counts of replicas restored from the state that are not in
    /// the table (their group is stopped): given back when they return.
    pub(crate) restart_counts: BTreeMap<ReplicaKey, u64>,
    /// Other hosts, as far as cross-host dependencies need them.
    pub(crate) remote: BTreeMap<String, RemoteHost>,
    /// Hosts that are down but whose last view is held, until when.
    pub(crate) remote_held: BTreeMap<String, Millis>,
    /// Agents of hosts that are down whose direct probe passes (`remote`).
    pub(crate) remote_probes: BTreeMap<String, BTreeSet<String>>,
    /// Agents in start order (the agent graph's waves), kept with the
    /// graph: every decision pass walks it.
    pub(crate) agent_order: Vec<String>,
    /// The wall clock (Unix ms) at this supervisor's time zero; 0 when
    /// unknown. Dates adopted containers from Docker's `StartedAt`.
    pub(crate) wall_origin: u64,
    /// GPU memory episodes in progress, by replica and the start of its
    /// container's run (not persisted: a daemon that restarts reports a
    /// replica still over once more).
    pub(crate) over_limits: crate::over_limit::OverLimits<(ReplicaKey, Millis)>,
    /// The last rollout since this supervisor was made (`rollout`).
    pub(crate) rollout: Option<super::rollout::Rollout>,
    /// Replicas visited by the decision passes. Tests compare it across
    /// host sizes: a pass that grows worse than linearly with replicas
    /// fails on the count, never on a timing.
    #[cfg(test)]
    pub(crate) visits: std::cell::Cell<u64>,
}

/// The label value of a replica's key in persisted slices.
pub fn slice_key(key: &ReplicaKey) -> String {
    format!("{}#{}", key.agent, key.replica)
}

impl Supervisor {
    /// A supervisor for `config`, with hashes from `hash_of`, resuming
    /// `persisted`. Docker is assumed unreachable until the first `Resync`.
    pub fn new(config: HostConfig, hashes: BTreeMap<String, String>, persisted: Persisted) -> Self {
        let mut s = Supervisor {
            agents: BTreeMap::new(),
            hashes,
            agent_graph: agent_graph(&config),
            group_graph: group_graph(&config),
            config: std::sync::Arc::new(config),
            started: BTreeSet::new(),
            stopped: BTreeSet::new(),
            scale: BTreeMap::new(),
            autoscaled: BTreeMap::new(),
            inference: None,
            restarting: BTreeSet::new(),
            generation: persisted.generation,
            replicas: BTreeMap::new(),
            docker_up: false,
            ready_groups: BTreeSet::new(),
            ever_ready: BTreeSet::new(),
            inventory: None,
            gpu_unavailable: None,
            owned_mig: persisted.owned_mig.clone(),
            restart_counts: BTreeMap::new(),
            remote: BTreeMap::new(),
            remote_held: BTreeMap::new(),
            remote_probes: BTreeMap::new(),
            agent_order: Vec::new(),
            wall_origin: 0,
            over_limits: Default::default(),
            rollout: None,
            #[cfg(test)]
            visits: std::cell::Cell::new(0),
        };
        s.agent_order = s.agent_graph.waves().into_iter().flatten().collect();
        s.agents = s
            .config
            .agents()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        s.started = persisted
            .started_groups
            .into_iter()
            .filter(|g| s.config.group(g).is_some())
            .collect();
        for (agent, n) in persisted.scale {
            if let Some(a) = s.agents.get_mut(&agent) {
                a.replicas = n;
                s.scale.insert(agent, n);
            }
        }
        s.autoscaled = persisted
            .autoscaled
            .into_iter()
            .filter(|a| s.scale.contains_key(a))
            .map(|a| (a, None))
            .collect();
        s.stopped = persisted
            .stopped_groups
            .into_iter()
            .filter(|g| s.config.group(g).is_some() && !s.started.contains(g))
            .collect();
        s.sync_replica_table();
        for (k, slice) in persisted.slices {
            if let Some((agent, n)) = k.rsplit_once('#')
                && let Ok(n) = n.parse()
                && let Some(r) = s.replicas.get_mut(&ReplicaKey::new(agent, n))
            {
                r.slice = Some(slice);
            }
        }
        s.restore_slice_depths();
        for (k, n) in persisted.restarts {
            if let Some((agent, i)) = k.rsplit_once('#')
                && let Ok(i) = i.parse()
                && s.agents.contains_key(agent)
            {
                let key = ReplicaKey::new(agent, i);
                // Kept for a replica not in the table yet (its group is
                // not started): it gets its count back when it is.
                s.restart_counts.insert(key.clone(), n);
                if let Some(r) = s.replicas.get_mut(&key) {
                    r.restarts_total = n;
                }
            }
        }
        s
    }

    /// Which entry of its agent's request chain each restored slice
    /// meets: the state keeps the slice, not the depth, and a fallback
    /// slice checked against the first entry would look changed.
    fn restore_slice_depths(&mut self) {
        for r in self.replicas.values_mut() {
            let (Some(slice), Some(req)) = (
                r.slice.as_ref(),
                self.agents.get(&r.key.agent).and_then(|a| a.gpu.as_ref()),
            ) else {
                continue;
            };
            if let Some(depth) = req
                .chain()
                .position(|q| crate::planner::slice_matches(&q.kind, slice))
            {
                r.slice_depth = u8::try_from(depth).unwrap_or(u8::MAX);
            }
        }
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The config, to share (a launch builds its container from it).
    pub fn shared_config(&self) -> std::sync::Arc<HostConfig> {
        self.config.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn docker_up(&self) -> bool {
        self.docker_up
    }

    pub fn started_groups(&self) -> &BTreeSet<String> {
        &self.started
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    pub fn replica(&self, key: &ReplicaKey) -> Option<&Replica> {
        self.replicas.get(key)
    }

    /// The replicas of one agent: a range of the table (keys sort by
    /// agent, then replica), not a scan of it.
    pub(crate) fn replicas_of<'a>(&'a self, agent: &str) -> impl Iterator<Item = &'a Replica> {
        self.replicas
            .range(ReplicaKey::new(agent, 0)..=ReplicaKey::new(agent, u32::MAX))
            .map(|(_, r)| r)
            .inspect(|_| self.visited(1))
    }

    /// Every replica, for a decision pass (counted in tests).
    pub(crate) fn scan(&self) -> impl Iterator<Item = &Replica> {
        self.visited(self.replicas.len());
        self.replicas.values()
    }

    /// Counts replicas a pass looked at (tests only; nothing otherwise).
    #[inline]
    pub(crate) fn visited(&self, _n: usize) {
        #[cfg(test)]
        self.visits.set(self.visits.get() + _n as u64);
    }

    /// Groups with a replica that still has a container or an operation
    /// in flight, in one pass over the table.
    pub(crate) fn active_groups(&self) -> BTreeSet<&str> {
        self.scan()
            .filter(|r| r.container.is_some() || r.op.is_some())
            .map(|r| r.group.as_str())
            .collect()
    }

    pub fn inventory(&self) -> Option<&[GpuInfo]> {
        self.inventory.as_deref()
    }

    pub fn gpu_unavailable(&self) -> Option<&str> {
        self.gpu_unavailable.as_deref()
    }

    pub fn owned_mig(&self) -> &[OwnedMig] {
        &self.owned_mig
    }

    /// What is known of another host.
    pub fn remote(&self, host: &str) -> &RemoteHost {
        static UNKNOWN: RemoteHost = RemoteHost::Unknown;
        self.remote.get(host).unwrap_or(&UNKNOWN)
    }

    /// The cross-host dependencies of an agent (its own and its group's),
    /// each with whether it is met now.
    pub fn remote_dependencies(&self, agent: &str) -> Vec<(Wait, bool)> {
        let Some(a) = self.agents.get(agent) else {
            return Vec::new();
        };
        let group_deps = self
            .config
            .group(&a.group)
            .map(|g| g.depends_on.as_slice())
            .unwrap_or_default();
        a.depends_on
            .iter()
            .chain(group_deps)
            .filter_map(|d| match crate::model::Dep::parse(d) {
                Ok(crate::model::Dep::RemoteAgent { host, agent }) => {
                    let met = matches!(self.remote(host), RemoteHost::Up(v) if v.ready_agents.contains(agent));
                    Some((
                        Wait::RemoteAgent {
                            host: host.to_string(),
                            agent: agent.to_string(),
                        },
                        met,
                    ))
                }
                Ok(crate::model::Dep::RemoteGroup { host, group }) => {
                    let met = matches!(self.remote(host), RemoteHost::Up(v) if v.ready_groups.contains(group));
                    Some((
                        Wait::RemoteGroup {
                            host: host.to_string(),
                            group: group.to_string(),
                        },
                        met,
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether a cross-host dependency of `agent` has failed: its host is
    /// down, or it is heard from and the dependency is not ready. (A host
    /// not heard from yet has not failed anything.)
    pub(crate) fn remote_failed(&self, agent: &str) -> bool {
        self.remote_dependencies(agent).iter().any(|(w, met)| {
            !met && match w {
                Wait::RemoteAgent { host, agent } => match self.remote(host) {
                    RemoteHost::Unknown => false,
                    RemoteHost::Up(v) => !v.pending_agents.contains(agent),
                    RemoteHost::Down => true,
                },
                Wait::RemoteGroup { host, .. } => !matches!(self.remote(host), RemoteHost::Unknown),
                _ => false,
            }
        })
    }

    /// The inventory with the instances this orchestrator made marked owned.
    pub fn inventory_with_ownership(&self) -> Option<Vec<GpuInfo>> {
        let mut gpus = self.inventory.clone()?;
        for g in &mut gpus {
            if let crate::gpu::MigState::Enabled { instances, .. } = &mut g.mig {
                for i in instances {
                    i.owned = self.owned_mig.iter().any(|o| {
                        o.gpu_uuid == g.uuid
                            && o.gi_id == i.gi_id
                            && o.profile_id == i.profile_id
                            && o.placement_start == i.placement_start
                    });
                }
            }
        }
        Some(gpus)
    }

    pub fn config_hash(&self, agent: &str) -> Option<&str> {
        self.hashes.get(agent).map(String::as_str)
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            started_groups: self.started.clone(),
            stopped_groups: self.stopped.clone(),
            generation: self.generation,
            slices: self
                .replicas
                .values()
                .filter_map(|r| r.slice.clone().map(|s| (slice_key(&r.key), s)))
                .collect(),
            owned_mig: self.owned_mig.clone(),
            restarts: self
                .restart_counts
                .iter()
                .map(|(k, n)| (slice_key(k), *n))
                .chain(
                    self.replicas
                        .values()
                        .map(|r| (slice_key(&r.key), r.restarts_total)),
                )
                .filter(|(_, n)| *n > 0)
                .collect(),
            scale: self.scale.clone(),
            autoscaled: self.autoscaled.keys().cloned().collect(),
        }
    }

    /// The replica count an agent runs with: the file's, or the one set
    /// at run time.
    pub fn replica_count(&self, agent: &str) -> u32 {
        self.agents.get(agent).map_or(0, |a| a.replicas)
    }

    /// The count set at run time for `agent`, if any (`scale`).
    pub fn scaled(&self, agent: &str) -> Option<u32> {
        self.scale.get(agent).copied()
    }

    /// Whether `agent`'s count was set by its autoscaler, and its last
    /// decision when this run made it.
    pub fn autoscaled(&self, agent: &str) -> Option<Option<&crate::autoscale::Decision>> {
        self.autoscaled.get(agent).map(Option::as_ref)
    }

    /// Tells the supervisor the wall clock (Unix ms) at its time zero, so
    /// that a container adopted running is dated from Docker's `StartedAt`
    /// (for `min_healthy`). Without it an adopted container is dated from
    /// its first passing probe.
    pub fn set_wall_origin(&mut self, unix_ms_at_zero: u64) {
        self.wall_origin = unix_ms_at_zero;
    }

    /// Whether a group is wanted (started and not mid-restart).
    pub fn group_wanted(&self, group: &str) -> bool {
        self.started.contains(group) && !self.restarting.contains(group)
    }

    /// Whether a replica is wanted right now.
    pub(crate) fn wanted(&self, key: &ReplicaKey) -> bool {
        match self.agents.get(&key.agent) {
            Some(a) => {
                key.replica < a.replicas + self.surge_of(&key.agent) && self.group_wanted(&a.group)
            }
            None => false,
        }
    }

    /// A group is ready when every replica of its required agents runs
    /// healthy and has done so for the group's `min_healthy`. This is the
    /// readiness the last decision pass reported (`GroupReady`), so every
    /// view agrees with the events.
    pub fn group_ready(&self, group: &str) -> bool {
        self.group_wanted(group) && self.ready_groups.contains(group)
    }

    /// Every replica of the group's required agents runs healthy (with or
    /// without `min_healthy` behind it).
    pub(crate) fn group_healthy(&self, group: &str) -> bool {
        let Some(g) = self.config.group(group) else {
            return false;
        };
        g.agents
            .iter()
            .filter(|a| a.required)
            .all(|a| self.agent_ready(&a.name))
    }

    /// When a healthy group has been healthy for its `min_healthy`: the
    /// latest moment one of its required replicas has been healthy that
    /// long. `None` when some required replica is not healthy.
    pub(crate) fn group_ready_at(&self, group: &str) -> Option<Millis> {
        let g = self.config.group(group)?;
        if !self.group_healthy(group) {
            return None;
        }
        let min_healthy = g.min_healthy.as_millis() as Millis;
        let mut latest: Millis = 0;
        for a in g.agents.iter().filter(|a| a.required) {
            let replicas = self.agents.get(&a.name).map_or(0, |a| a.replicas);
            for i in 0..replicas {
                let r = self.replicas.get(&ReplicaKey::new(&a.name, i))?;
                // No probe: healthy from its start.
                let since = r.healthy_since.or(r.started_at).unwrap_or(0);
                let at = since
                    .saturating_add(min_healthy)
                    .saturating_sub(r.healthy_credit);
                latest = latest.max(at);
            }
        }
        Some(latest)
    }

    /// Where a group is: stopped, starting, ready, degraded or stopping.
    pub fn group_phase(&self, group: &str) -> GroupPhase {
        if !self.group_wanted(group) {
            let active = self
                .scan()
                .any(|r| r.group == group && (r.container.is_some() || r.op.is_some()));
            if self.started.contains(group) || active {
                GroupPhase::Stopping
            } else {
                GroupPhase::Stopped
            }
        } else if self.group_ready(group) {
            GroupPhase::Ready
        } else if self.ever_ready.contains(group) {
            GroupPhase::Degraded
        } else {
            GroupPhase::Starting
        }
    }

    /// Counts for a group: (wanted replicas, running, healthy).
    pub fn group_counts(&self, group: &str) -> (usize, usize, usize) {
        let mut wanted = 0;
        let mut running = 0;
        let mut healthy = 0;
        for r in self.replicas.values().filter(|r| r.group == group) {
            if self.wanted(&r.key) {
                wanted += 1;
            }
            if r.is_running() {
                running += 1;
                if self.replica_healthy(r) {
                    healthy += 1;
                }
            }
        }
        (wanted, running, healthy)
    }

    /// The one definition of a healthy replica: its container runs, and its
    /// probe passed (or it has no probe and nothing is in flight).
    pub fn replica_healthy(&self, r: &Replica) -> bool {
        let has_probe = self
            .agents
            .get(&r.key.agent)
            .is_some_and(|a| a.health.probe != crate::model::Probe::None);
        r.is_running() && (r.health == Health::Healthy || (!has_probe && r.op.is_none()))
    }

    /// Every wanted replica of the agent is running and healthy (and current).
    pub(crate) fn agent_ready(&self, agent: &str) -> bool {
        let Some(a) = self.agents.get(agent) else {
            return false;
        };
        if !self.group_wanted(&a.group) {
            return false;
        }
        (0..a.replicas).all(|i| {
            self.visited(1);
            self.replicas
                .get(&ReplicaKey::new(agent, i))
                .is_some_and(|r| self.replica_healthy(r) && !r.crashloop)
        })
    }

    /// Makes the replica table hold every wanted replica (and keeps the
    /// ones with containers, which may need stopping).
    pub(crate) fn sync_replica_table(&mut self) {
        let mut wanted = Vec::new();
        for a in self.config.agents() {
            if self.group_wanted(&a.group) {
                for i in 0..self.replica_count(&a.name) + self.surge_of(&a.name) {
                    wanted.push((ReplicaKey::new(&a.name, i), a.group.clone()));
                }
            }
        }
        // A set, not a list: the retain below looks every key up in it.
        let mut wanted_keys = BTreeSet::new();
        for (key, group) in wanted {
            let counts = &mut self.restart_counts;
            self.replicas.entry(key.clone()).or_insert_with(|| {
                let mut r = Replica::new(key.clone(), &group);
                r.restarts_total = counts.remove(&key).unwrap_or(0);
                r
            });
            wanted_keys.insert(key);
        }
        // Forget replicas that are unwanted, have no container and nothing in flight.
        self.visited(self.replicas.len());
        let counts = &mut self.restart_counts;
        self.replicas.retain(|k, r| {
            let keep = wanted_keys.contains(k) || r.container.is_some() || r.op.is_some();
            if !keep && r.restarts_total > 0 {
                counts.insert(k.clone(), r.restarts_total);
            }
            keep
        });
    }

    /// How long a replica of `agent` must stay healthy to be stable again
    /// (its backoff resets, a crash loop ends).
    pub fn stable_after(&self, agent: &str) -> Millis {
        self.agents
            .get(agent)
            .map(|a| a.restart.stable_after().as_millis() as Millis)
            .unwrap_or(10_000)
    }

    /// Restart delay after `failures` consecutive failures, with a jitter
    /// derived from the key so that replicas spread out deterministically.
    pub fn backoff_delay(&self, key: &ReplicaKey, failures: u32) -> Millis {
        let Some(a) = self.agents.get(&key.agent) else {
            return 1000;
        };
        let b = &a.restart.backoff;
        let initial = b.initial.as_millis() as f64;
        let max = b.max.as_millis() as f64;
        let exp = failures.saturating_sub(1).min(64) as i32;
        let base = (initial * b.multiplier.powi(exp)).min(max);
        let spread = b.jitter.fraction() * base;
        // FNV-1a over the key and attempt: a fixed pseudo-random in [-1, 1].
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key
            .agent
            .bytes()
            .chain(key.replica.to_le_bytes())
            .chain(failures.to_le_bytes())
        {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let unit = (h % 20_001) as f64 / 10_000.0 - 1.0;
        (base + unit * spread).clamp(1.0, max.max(1.0)).round() as Millis
    }

    /// Restart policy verdict for an exit.
    pub(crate) fn should_restart(&self, key: &ReplicaKey, code: i64, oom: bool) -> bool {
        self.agents
            .get(&key.agent)
            .is_some_and(|a| restart_wanted(a.restart.policy, code, oom))
    }
}

/// The restart policy, the one place it is decided: `always` restarts any
/// exit, `on-failure` a non-zero exit or an out-of-memory kill (which can
/// exit 0 from the process's point of view), `never` nothing.
pub fn restart_wanted(policy: RestartMode, code: i64, oom: bool) -> bool {
    match policy {
        RestartMode::Always => true,
        RestartMode::OnFailure => code != 0 || oom,
        RestartMode::Never => false,
    }
}
