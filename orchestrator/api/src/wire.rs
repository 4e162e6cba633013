//! The API's own data types: what crosses the control socket and the
//! federation bus. They mirror the core's internal types but are defined
//! here, so the core can change without breaking a peer or a script that
//! runs another version (`convert` maps between the two).
//!
//! Conventions: sizes are bytes (`*_bytes`), shares are basis points
//! (hundredths of a percent, `*_basis_points`), durations are
//! milliseconds (`*_ms`), times are Unix milliseconds. Enums are tagged
//! with a kebab-case name.

use serde::{Deserialize, Serialize};

/// One replica of an agent: `{agent, replica}`, shown as `Agent` or `Agent#1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaRef {
    pub agent: String,
    pub replica: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Not probed yet since the last start.
    Unknown,
    Healthy,
    Unhealthy,
}

/// Why the supervisor restarts a replica. Written as the metric label
/// of the same failure (`orchestrator_agent_failures_total{reason}`), so
/// a script matches one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// Its container exited, or a launch failed.
    Exited,
    /// It failed its health check.
    Unhealthy,
    /// Its GPU memory went over its limit (`gpu.over_limit: restart`).
    GpuMemoryExceeded,
}

/// What an agent does when its GPU memory goes over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverLimitAction {
    Warn,
    Restart,
}

/// What a held replica waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "on")]
pub enum Wait {
    /// A required agent it depends on is not ready.
    Agent { agent: String },
    /// A group its group depends on is not started or not ready.
    Group { group: String },
    /// The first GPU inventory has not been taken yet.
    GpuInventory,
    /// A required agent it needs is crash-looping: it was stopped and
    /// starts again once that agent is stable.
    CrashLooping { agent: String },
    /// An agent of another host is not ready (or that host is down).
    RemoteAgent { host: String, agent: String },
    /// A group of another host is not ready (or that host is down).
    RemoteGroup { host: String, group: String },
}

/// Why a replica is `pending` (wanted, not started, not held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PendingReason {
    /// Nothing is started while the Docker Engine is unreachable.
    DockerDown,
    /// Its group is not started (it is going away).
    GroupStopped,
    /// It waits for a GPU slice to be planned for it.
    GpuSlice,
    /// It is about to be started.
    Starting,
}

/// Where a replica is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    /// Wanted, not started yet.
    Pending,
    /// Held until what it waits for is ready.
    Held {
        waiting_for: Vec<Wait>,
    },
    /// A create or start is in flight.
    Starting,
    Running,
    /// Exited; restarted after the backoff.
    BackingOff {
        retry_in_ms: u64,
        exit_code: Option<i64>,
    },
    /// Exited and not restarted (its policy, or a clean exit under on-failure).
    Exited {
        code: i64,
    },
    /// The last launch failed; tried again after `retry_in_ms`.
    Failed {
        reason: FailReason,
        retry_in_ms: u64,
    },
    Stopping,
    Stopped,
}

impl Phase {
    /// The phase's name as a metric label value (`backing_off`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Held { .. } => "held",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::BackingOff { .. } => "backing_off",
            Phase::Exited { .. } => "exited",
            Phase::Failed { .. } => "failed",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

/// Why a replica failed to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum FailReason {
    /// The image is not on the host; images are never pulled.
    ImageMissing {
        image: String,
    },
    DockerUnreachable {
        detail: String,
    },
    /// Docker refused the request; `detail` is its message.
    DockerRefused {
        detail: String,
    },
    GpuDriverMissing {
        driver: String,
        detail: String,
    },
    InvalidSpec {
        detail: String,
    },
    /// Making the GPU slice real (a MIG instance, an MPS daemon) failed.
    GpuPrepare {
        gpu_index: u32,
        detail: String,
    },
    /// The host's GPUs cannot be used; `detail` says why (from NVML).
    GpuUnavailable {
        detail: String,
    },
    /// No GPU can take the agent's request or any of its fallbacks.
    NoGpuCapacity {
        error: Box<PlanError>,
    },
    /// The agent is no longer in the config.
    NotConfigured {
        agent: String,
    },
    /// The replica's container is not on the Docker host any more.
    ContainerGone {
        id: String,
    },
}

impl FailReason {
    /// A short, stable name for counting failures by kind.
    pub fn label(&self) -> &'static str {
        match self {
            FailReason::ImageMissing { .. } => "image_missing",
            FailReason::DockerUnreachable { .. } => "docker_unreachable",
            FailReason::DockerRefused { .. } => "docker_error",
            FailReason::GpuDriverMissing { .. } => "gpu_driver_missing",
            FailReason::InvalidSpec { .. } => "invalid_spec",
            FailReason::GpuPrepare { .. } => "gpu_prepare",
            FailReason::GpuUnavailable { .. } => "gpu_unavailable",
            FailReason::NoGpuCapacity { .. } => "gpu_no_capacity",
            FailReason::NotConfigured { .. } => "not_configured",
            FailReason::ContainerGone { .. } => "container_gone",
        }
    }
}

/// A slice of a GPU given to one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Slice {
    Mig {
        gpu_index: u32,
        gpu_uuid: String,
        profile: String,
        placement_start: u8,
        /// `MIG-<uuid>` of the MIG device, once the instance exists.
        device_uuid: Option<String>,
        /// Memory of the profile.
        memory_bytes: Option<u64>,
    },
    Mps {
        gpu_index: u32,
        gpu_uuid: String,
        memory_bytes: u64,
        compute_basis_points: u32,
    },
    Exclusive {
        gpu_index: u32,
        gpu_uuid: String,
    },
    TimeSlice {
        gpu_index: u32,
        gpu_uuid: String,
    },
}

impl Slice {
    pub fn gpu_index(&self) -> u32 {
        match self {
            Slice::Mig { gpu_index, .. }
            | Slice::Mps { gpu_index, .. }
            | Slice::Exclusive { gpu_index, .. }
            | Slice::TimeSlice { gpu_index, .. } => *gpu_index,
        }
    }

    pub fn gpu_uuid(&self) -> &str {
        match self {
            Slice::Mig { gpu_uuid, .. }
            | Slice::Mps { gpu_uuid, .. }
            | Slice::Exclusive { gpu_uuid, .. }
            | Slice::TimeSlice { gpu_uuid, .. } => gpu_uuid,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Slice::Mig { .. } => "mig",
            Slice::Mps { .. } => "mps",
            Slice::Exclusive { .. } => "exclusive",
            Slice::TimeSlice { .. } => "time-slice",
        }
    }
}

/// What a GPU request asks for (one entry of a request and its fallbacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum GpuWant {
    Mig {
        profile: String,
    },
    Mps {
        memory_bytes: u64,
        compute_basis_points: u32,
    },
    Exclusive,
    TimeSlice,
}

/// One physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_bytes: u64,
    pub mig: Mig,
    /// NVML reports the GPU lost; nothing is placed on it.
    pub lost: bool,
    /// Memory the driver and firmware keep for themselves, where NVML
    /// reports it (the planner estimates it otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_bytes: Option<u64>,
}

/// MIG mode and layout of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Mig {
    /// The GPU has no MIG.
    Unsupported,
    /// MIG capable and off; `pending_enable` when a reset turns it on.
    Disabled { pending_enable: bool },
    Enabled {
        pending_disable: bool,
        memory_slices: u8,
        compute_slices: u8,
        /// The profiles the GPU offers.
        profiles: Vec<MigProfile>,
        instances: Vec<MigInstance>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigProfile {
    pub id: u32,
    pub name: String,
    pub compute_slices: u8,
    pub memory_slices: u8,
    pub memory_bytes: u64,
    pub max_instances: u8,
    /// Where an instance of it may start, in memory slices (its size is
    /// `memory_slices`). Empty from a daemon too old to say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    pub gi_id: u32,
    pub profile_id: u32,
    /// The profile's name, when the GPU offers it.
    pub profile: Option<String>,
    pub placement_start: u8,
    pub placement_size: u8,
    pub ci_id: Option<u32>,
    pub device_uuid: Option<String>,
    /// Made by this orchestrator: the only instances it may destroy.
    pub owned: bool,
}

/// The `gpus:` policy that applies to one GPU, as its host's config says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuPolicy {
    /// The only sharing mode allowed (`mig`, `mps`, `exclusive`,
    /// `time-slice`); `None`: the planner picks.
    pub sharing: Option<String>,
    /// Memory kept free of MPS shares, besides the driver's own.
    pub reserve_bytes: u64,
    /// MPS memory shares may add up to more than the GPU has.
    pub oversubscribe: bool,
}

// ---------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------

/// Why a replica's GPU request (and each fallback) could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub replica: ReplicaRef,
    /// The request and each fallback, in the order tried.
    pub attempts: Vec<PlanAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAttempt {
    pub wanted: GpuWant,
    /// One per GPU of the host.
    pub refusals: Vec<Refusal>,
}

/// Why one GPU could not take one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub gpu_index: u32,
    pub gpu_name: String,
    pub why: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum RefusalReason {
    Lost,
    NoMig,
    MigOff {
        pending_enable: bool,
    },
    MigOn,
    NoSuchProfile {
        profile: String,
        offered: Vec<String>,
    },
    UnsupportedGeometry {
        memory_slices: u8,
    },
    Policy {
        sharing: String,
    },
    TimeSliceNeedsPolicy,
    MigMaxInstances {
        profile: String,
        max: u8,
    },
    MigComputeFull {
        profile: String,
        used: u8,
        total: u8,
        needed: u8,
    },
    MigNoPlacement {
        profile: String,
        occupants: Vec<Occupant>,
    },
    MpsClients {
        clients: u32,
        max: u32,
    },
    MpsMemory {
        used_bytes: u64,
        capacity_bytes: u64,
        reserve_bytes: u64,
        clients: u32,
        wanted_bytes: u64,
    },
    MpsCompute {
        used_basis_points: u32,
        clients: u32,
        wanted_basis_points: u32,
    },
    HeldExclusive {
        holder: ReplicaRef,
    },
    InUse {
        mps_clients: u32,
        time_slice_clients: u32,
    },
}

/// A MIG instance in the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    pub profile: String,
    pub placement_start: u8,
    /// The replica using it; none for an instance that is not ours.
    pub holder: Option<ReplicaRef>,
    pub gi_id: Option<u32>,
}

/// Something the operator should know about a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "note")]
pub enum PlanNote {
    GpuLost {
        gpu_index: u32,
        gpu_uuid: String,
        name: String,
    },
    MigModePending {
        gpu_index: u32,
        name: String,
        enable: bool,
    },
    PolicyUnusable {
        gpu_index: u32,
        name: String,
        sharing: String,
        mig_on: bool,
        mig_capable: bool,
    },
    Dropped {
        replica: ReplicaRef,
        slice: Slice,
        why: DropReason,
    },
    Reapplied {
        replica: ReplicaRef,
        gpu_index: u32,
        profile: String,
        placement_start: u8,
    },
    SearchCutShort {
        replica: ReplicaRef,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum DropReason {
    RequestChanged,
    GpuGone,
    InstanceGone,
    Refused { refusal: RefusalReason },
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// Something that happened on a host, numbered so clients can resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The host it happened on.
    pub host: String,
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why an autoscaler changed an agent's replica count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum AutoscaleCause {
    /// A signal held past its window. `value` and `target` are in the
    /// signal's unit: percent for `cpu` and `gpu-util`, the gauge for
    /// `metric` (summed over the replicas unless shared), the burn rate for
    /// `latency-slo`. `bounded`: `min` or `max` cut the `recommended` count.
    Signal {
        signal: String,
        value: f64,
        target: f64,
        recommended: u32,
        bounded: bool,
    },
    /// The count was below `autoscale.min`.
    BelowMin { min: u32 },
    /// The count was above `autoscale.max`.
    AboveMax { max: u32 },
}

/// Why the daemon restarted a running replica on its own (other than its
/// exit or failed health, which are `agent-restarting`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum RestartCause {
    /// Its GPU's MPS server faulted.
    MpsServerFault { gpu_uuid: String },
}

impl RestartCause {
    /// The reason's label, as in its JSON `reason`.
    pub fn label(&self) -> &'static str {
        match self {
            RestartCause::MpsServerFault { .. } => "mps_server_fault",
        }
    }
}

/// The faulting client of an MPS server: its pid, and its replica when it
/// runs in one of this host's containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpsFaultClient {
    pub pid: u32,
    pub replica: Option<ReplicaRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum EventKind {
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
        replica: ReplicaRef,
        group: String,
    },
    AgentRunning {
        replica: ReplicaRef,
        group: String,
    },
    AgentHealthy {
        replica: ReplicaRef,
        group: String,
    },
    AgentUnhealthy {
        replica: ReplicaRef,
        group: String,
    },
    AgentExited {
        replica: ReplicaRef,
        group: String,
        code: i64,
        oom: bool,
    },
    AgentRestarting {
        replica: ReplicaRef,
        group: String,
        in_ms: u64,
        attempt: u32,
        /// Why; `None` from a daemon that did not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<RestartReason>,
    },
    /// A replica's measured GPU memory went over what its slice holds on
    /// a GPU: once per episode (again only after it was seen back under).
    AgentGpuOverLimit {
        replica: ReplicaRef,
        group: String,
        gpu_index: u32,
        gpu_uuid: String,
        used_bytes: u64,
        limit_bytes: u64,
        /// The agent's `gpu.over_limit`: with `restart`, an
        /// `agent-restarting` with reason `gpu_memory_exceeded` follows
        /// (unless its restart policy is `never`).
        action: OverLimitAction,
    },
    AgentRestartRequested {
        replica: ReplicaRef,
        group: String,
    },
    /// A running replica restarted by the daemon for `reason`, not for a
    /// failure of its own (it counts towards neither its backoff nor its
    /// crash loop).
    AgentRestarted {
        replica: ReplicaRef,
        group: String,
        #[serde(flatten)]
        reason: RestartCause,
    },
    /// A GPU's MPS server was seen in `FAULT` (once per fault episode):
    /// every client of it was hit, and the running MPS replicas of that GPU
    /// (`restarting`) are restarted. `client`: the faulting client where it
    /// can be told (the server listed only it); `clients_listed`: how many
    /// clients the server listed when the fault was seen.
    MpsServerFault {
        gpu_index: Option<u32>,
        gpu_uuid: String,
        client: Option<MpsFaultClient>,
        clients_listed: u32,
        restarting: Vec<ReplicaRef>,
    },
    /// An operator set the agent's replica count (`scale`); `reset`: back
    /// to the file's count.
    AgentScaled {
        group: String,
        agent: String,
        from: u32,
        to: u32,
        #[serde(default)]
        reset: bool,
    },
    /// The agent's autoscaler set its replica count.
    AgentAutoscaled {
        group: String,
        agent: String,
        from: u32,
        to: u32,
        #[serde(flatten)]
        cause: AutoscaleCause,
    },
    /// The agent's autoscaler wanted more replicas than the host can place
    /// (said once per count wanted).
    AgentAutoscaleRefused {
        group: String,
        agent: String,
        from: u32,
        to: u32,
        #[serde(flatten)]
        cause: AutoscaleCause,
        /// The planner's reason.
        reason: String,
    },
    AgentCrashLoop {
        replica: ReplicaRef,
        group: String,
        restarts: u32,
        window_ms: u64,
    },
    AgentRecovered {
        replica: ReplicaRef,
        group: String,
    },
    AgentHeld {
        replica: ReplicaRef,
        group: String,
        waiting_for: Vec<Wait>,
    },
    AgentFailed {
        replica: ReplicaRef,
        group: String,
        reason: FailReason,
    },
    AgentStopped {
        replica: ReplicaRef,
        group: String,
    },
    AgentAdopted {
        replica: ReplicaRef,
        group: String,
        container: String,
    },
    DuplicateRemoved {
        replica: ReplicaRef,
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
        rollout: RolloutKind,
        previous: u64,
        agents: Vec<String>,
    },
    /// A step's new replica was healthy and watched through.
    RolloutStepDone {
        generation: u64,
        replica: ReplicaRef,
    },
    /// A step failed: the rollout rolls back to `rollback_to`, or (`None`)
    /// is paused.
    RolloutFailed {
        generation: u64,
        failure: StepFailure,
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
        rollout: RolloutKind,
    },
    DockerDown,
    DockerUp,
    SliceAssigned {
        replica: ReplicaRef,
        group: String,
        slice: Slice,
        fallback_depth: u8,
    },
    MigDestroyed {
        gpu_index: u32,
        gi_id: u32,
    },
    GpuNote {
        note: PlanNote,
    },
    GpuUnavailable {
        reason: String,
    },
    /// The state did not account for running containers; `groups` were
    /// marked started from them. `origin`: `saved`, `missing`, `damaged`.
    StateInferred {
        origin: String,
        adopted: u32,
        groups: Vec<String>,
        unconfigured: u32,
    },
    /// Started with `--fresh`: the running containers of ours are stopped.
    FreshStart {
        stopping: u32,
    },
    /// The state file could not be written; supervision goes on.
    StateWriteFailed {
        detail: String,
    },
    /// The state file was written again after failed writes.
    StateWritten,
    /// A wanted agent replica exited and its restart policy does not bring it
    /// back (a clean exit under `on-failure`, or `never`): it stays down
    /// until an operator acts.
    AgentStaysDown {
        replica: ReplicaRef,
        group: String,
        code: i64,
    },
    /// A peer host changed state as this host's failure detector sees it
    /// (alive, suspect, down), or restarted (a new incarnation).
    PeerChanged {
        peer: String,
        state: crate::PeerState,
        incarnation: u64,
    },
}

impl EventKind {
    /// The group an event is about, if any.
    pub fn group(&self) -> Option<&str> {
        use EventKind::*;
        match self {
            GroupStarting { group }
            | GroupReady { group }
            | GroupStopping { group }
            | GroupStopped { group }
            | AgentStarting { group, .. }
            | AgentRunning { group, .. }
            | AgentHealthy { group, .. }
            | AgentUnhealthy { group, .. }
            | AgentExited { group, .. }
            | AgentRestarting { group, .. }
            | AgentGpuOverLimit { group, .. }
            | AgentRestartRequested { group, .. }
            | AgentRestarted { group, .. }
            | AgentScaled { group, .. }
            | AgentAutoscaled { group, .. }
            | AgentAutoscaleRefused { group, .. }
            | AgentCrashLoop { group, .. }
            | AgentRecovered { group, .. }
            | AgentHeld { group, .. }
            | AgentFailed { group, .. }
            | AgentStopped { group, .. }
            | AgentAdopted { group, .. }
            | AgentStaysDown { group, .. }
            | SliceAssigned { group, .. } => Some(group),
            _ => None,
        }
    }

    /// The replica an event is about, if any.
    pub fn replica(&self) -> Option<&ReplicaRef> {
        use EventKind::*;
        match self {
            AgentStarting { replica, .. }
            | AgentRunning { replica, .. }
            | AgentHealthy { replica, .. }
            | AgentUnhealthy { replica, .. }
            | AgentExited { replica, .. }
            | AgentRestarting { replica, .. }
            | AgentGpuOverLimit { replica, .. }
            | AgentRestartRequested { replica, .. }
            | AgentRestarted { replica, .. }
            | AgentCrashLoop { replica, .. }
            | AgentRecovered { replica, .. }
            | AgentHeld { replica, .. }
            | AgentFailed { replica, .. }
            | AgentStopped { replica, .. }
            | AgentAdopted { replica, .. }
            | DuplicateRemoved { replica, .. }
            | RolloutStepDone { replica, .. }
            | AgentStaysDown { replica, .. }
            | SliceAssigned { replica, .. } => Some(replica),
            _ => None,
        }
    }

    /// The event's kebab-case name, as in its JSON `kind`.
    pub fn name(&self) -> &'static str {
        use EventKind::*;
        match self {
            GroupStarting { .. } => "group-starting",
            GroupReady { .. } => "group-ready",
            GroupStopping { .. } => "group-stopping",
            GroupStopped { .. } => "group-stopped",
            AgentStarting { .. } => "agent-starting",
            AgentRunning { .. } => "agent-running",
            AgentHealthy { .. } => "agent-healthy",
            AgentUnhealthy { .. } => "agent-unhealthy",
            AgentExited { .. } => "agent-exited",
            AgentRestarting { .. } => "agent-restarting",
            AgentGpuOverLimit { .. } => "agent-gpu-over-limit",
            AgentRestartRequested { .. } => "agent-restart-requested",
            AgentRestarted { .. } => "agent-restarted",
            MpsServerFault { .. } => "mps-server-fault",
            AgentScaled { .. } => "agent-scaled",
            AgentAutoscaled { .. } => "agent-autoscaled",
            AgentAutoscaleRefused { .. } => "agent-autoscale-refused",
            AgentCrashLoop { .. } => "agent-crash-loop",
            AgentRecovered { .. } => "agent-recovered",
            AgentHeld { .. } => "agent-held",
            AgentFailed { .. } => "agent-failed",
            AgentStopped { .. } => "agent-stopped",
            AgentAdopted { .. } => "agent-adopted",
            DuplicateRemoved { .. } => "duplicate-removed",
            ConfigApplied { .. } => "config-applied",
            RolloutStarted { .. } => "rollout-started",
            RolloutStepDone { .. } => "rollout-step-done",
            RolloutFailed { .. } => "rollout-failed",
            RolloutPaused { .. } => "rollout-paused",
            RolloutResumed { .. } => "rollout-resumed",
            RolloutCompleted { .. } => "rollout-completed",
            DockerDown => "docker-down",
            DockerUp => "docker-up",
            SliceAssigned { .. } => "slice-assigned",
            MigDestroyed { .. } => "mig-destroyed",
            GpuNote { .. } => "gpu-note",
            GpuUnavailable { .. } => "gpu-unavailable",
            StateInferred { .. } => "state-inferred",
            FreshStart { .. } => "fresh-start",
            StateWriteFailed { .. } => "state-write-failed",
            StateWritten => "state-written",
            AgentStaysDown { .. } => "agent-stays-down",
            PeerChanged { .. } => "peer-changed",
        }
    }
}

impl EventKind {
    /// Every event kind's name, as in its JSON `kind`.
    pub const NAMES: &'static [&'static str] = &[
        "group-starting",
        "group-ready",
        "group-stopping",
        "group-stopped",
        "agent-starting",
        "agent-running",
        "agent-healthy",
        "agent-unhealthy",
        "agent-exited",
        "agent-restarting",
        "agent-restart-requested",
        "agent-restarted",
        "mps-server-fault",
        "agent-crash-loop",
        "agent-recovered",
        "agent-held",
        "agent-failed",
        "agent-stopped",
        "agent-adopted",
        "duplicate-removed",
        "config-applied",
        "rollout-started",
        "rollout-step-done",
        "rollout-failed",
        "rollout-paused",
        "rollout-resumed",
        "rollout-completed",
        "docker-down",
        "docker-up",
        "slice-assigned",
        "mig-destroyed",
        "gpu-note",
        "gpu-unavailable",
        "state-inferred",
        "fresh-start",
        "state-write-failed",
        "state-written",
        "agent-stays-down",
        "peer-changed",
        "agent-gpu-over-limit",
    ];
}

/// Which events to show (`events --group --agent --kind`): an event is
/// shown when it matches every filter given. Applied by the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events about this group.
    pub group: Option<String>,
    /// Events about a replica of this agent (`AGENT` or `GROUP/AGENT`).
    pub agent: Option<String>,
    /// Events of one of these kinds (`agent-crash-loop`); a trailing `*`
    /// matches a prefix (`agent-*`).
    pub kinds: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(g) = &self.group
            && e.kind.group() != Some(g.as_str())
        {
            return false;
        }
        if let Some(a) = &self.agent {
            let (group, agent) = match a.split_once('/') {
                Some((g, a)) => (Some(g), a),
                None => (None, a.as_str()),
            };
            if e.kind.replica().map(|r| r.agent.as_str()) != Some(agent) {
                return false;
            }
            if group.is_some_and(|g| e.kind.group() != Some(g)) {
                return false;
            }
        }
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| match k.strip_suffix('*') {
                Some(prefix) => e.kind.name().starts_with(prefix),
                None => e.kind.name() == k,
            })
    }

    /// The first kind that names no event kind (a typo), if any.
    pub fn unknown_kind(&self) -> Option<&str> {
        self.kinds
            .iter()
            .find(|k| match k.strip_suffix('*') {
                Some(prefix) => !EventKind::NAMES.iter().any(|n| n.starts_with(prefix)),
                None => !EventKind::NAMES.contains(&k.as_str()),
            })
            .map(String::as_str)
    }
}

/// What `state export` writes and `state import` reads: the desired state
/// of one host, versioned. It holds group names, a generation and MIG
/// instance ids; nothing from the config, so no secret can be in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDocument {
    /// Always [`StateDocument::KIND`]: says what the file is.
    pub kind: String,
    /// The document's format; this program reads [`StateDocument::FORMAT`].
    pub format: u32,
    pub host: String,
    pub generation: u64,
    pub started_groups: Vec<String>,
    /// Groups an operator stopped (their leftovers are never adopted).
    #[serde(default)]
    pub stopped_groups: Vec<String>,
    /// MIG instances this orchestrator made: the only ones it may destroy.
    #[serde(default)]
    pub owned_mig: Vec<OwnedMigInstance>,
    /// Replica counts set at run time (`scale`), by agent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scale: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedMigInstance {
    pub gpu_uuid: String,
    pub gi_id: u32,
    pub profile_id: u32,
    pub placement_start: u8,
}

/// Why a state document cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDocumentError {
    #[error("not an orchestrator state export: {0}")]
    Syntax(String),
    #[error("not an orchestrator state export (kind `{0}`, expected `{kind}`)", kind = StateDocument::KIND)]
    Kind(String),
    #[error("state format {0} is not supported; this program reads format {format}", format = StateDocument::FORMAT)]
    Format(u32),
    #[error("the state export is for host `{file}`, this is `{this}`")]
    WrongHost { file: String, this: String },
}

impl StateDocument {
    pub const KIND: &'static str = "orchestrator-state";
    pub const FORMAT: u32 = 1;

    /// Reads and checks a document: its syntax (unknown fields refused),
    /// what it is, and its format. The host is checked where it is known.
    pub fn parse(text: &str) -> Result<Self, StateDocumentError> {
        // Kind and format first, so a newer format says so rather than
        // failing on a field this version does not know.
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StateDocumentError::Syntax(e.to_string()))?;
        let kind = head.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != Self::KIND {
            return Err(StateDocumentError::Kind(kind.to_string()));
        }
        match head.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(Self::FORMAT) => {}
            Some(f) => {
                return Err(StateDocumentError::Format(
                    u32::try_from(f).unwrap_or(u32::MAX),
                ));
            }
            None => return Err(StateDocumentError::Syntax("no `format` number".into())),
        }
        serde_json::from_value(head).map_err(|e| StateDocumentError::Syntax(e.to_string()))
    }

    /// Whether it may be imported on `host`.
    pub fn check(&self, host: &str) -> Result<(), StateDocumentError> {
        if self.kind != Self::KIND {
            return Err(StateDocumentError::Kind(self.kind.clone()));
        }
        if self.format != Self::FORMAT {
            return Err(StateDocumentError::Format(self.format));
        }
        if self.host != host {
            return Err(StateDocumentError::WrongHost {
                file: self.host.clone(),
                this: host.to_string(),
            });
        }
        Ok(())
    }
}

/// Why a generation rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RolloutKind {
    /// A new config (`apply`, `reload`).
    Apply,
    /// Back to generation `to`'s config after generation `from` failed.
    Rollback { from: u64, to: u64 },
    /// An operator's `rollout undo` to generation `to`'s config.
    Undo { to: u64 },
}

/// What failed a step, with its figure and threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "signal")]
pub enum RolloutSignal {
    /// The new container could not be made or started.
    NotLaunched {
        reason: FailReason,
    },
    NotHealthyInTime {
        deadline_ms: u64,
    },
    Exited {
        code: i64,
    },
    Unhealthy,
    CrashLoop {
        restarts: u32,
        window_ms: u64,
    },
    /// The replica's answers while watched burned the objective `sli`
    /// (`latency`, `error_rate`) at `burn` times its allowance, over
    /// `threshold`.
    SloBurn {
        sli: String,
        burn: f64,
        threshold: f64,
        requests: u64,
        bad: u64,
    },
}

/// A failed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    pub replica: ReplicaRef,
    pub group: String,
    #[serde(flatten)]
    pub signal: RolloutSignal,
}

#[cfg(test)]
mod event_filter_tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            host: "h".into(),
            seq: 1,
            time_ms: 0,
            kind,
        }
    }

    #[test]
    fn every_kind_is_named_once_and_filters_match_as_documented() {
        let mut names = EventKind::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::NAMES.len());
        assert!(EventKind::NAMES.contains(&EventKind::DockerUp.name()));

        let crash = ev(EventKind::AgentCrashLoop {
            replica: ReplicaRef {
                agent: "Mid".into(),
                replica: 0,
            },
            group: "base".into(),
            restarts: 3,
            window_ms: 1,
        });
        let ready = ev(EventKind::GroupReady {
            group: "base".into(),
        });
        let f = |group: Option<&str>, agent: Option<&str>, kinds: &[&str]| EventFilter {
            group: group.map(Into::into),
            agent: agent.map(Into::into),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        };
        let cases = [
            (f(None, None, &[]), true, true),
            (f(Some("base"), None, &[]), true, true),
            (f(Some("other"), None, &[]), false, false),
            (f(None, Some("Mid"), &[]), true, false),
            (f(None, Some("base/Mid"), &[]), true, false),
            (f(None, Some("other/Mid"), &[]), false, false),
            (f(None, None, &["agent-crash-loop"]), true, false),
            (f(None, None, &["group-*"]), false, true),
            (f(None, None, &["agent-*", "group-ready"]), true, true),
            (f(Some("base"), None, &["group-ready"]), false, true),
        ];
        for (filter, c, r) in cases {
            assert_eq!(
                (filter.matches(&crash), filter.matches(&ready)),
                (c, r),
                "{filter:?}"
            );
        }
        assert_eq!(
            f(None, None, &["agent-crashloop"]).unknown_kind(),
            Some("agent-crashloop")
        );
        assert_eq!(f(None, None, &["nope-*"]).unknown_kind(), Some("nope-*"));
        assert_eq!(
            f(None, None, &["agent-*", "docker-up"]).unknown_kind(),
            None
        );
    }
}

#[cfg(test)]
mod state_document_tests {
    use super::*;

    fn doc() -> StateDocument {
        StateDocument {
            kind: StateDocument::KIND.into(),
            format: StateDocument::FORMAT,
            host: "mainpc".into(),
            generation: 4,
            started_groups: vec!["infra_core".into()],
            stopped_groups: vec![],
            owned_mig: vec![],
            scale: Default::default(),
        }
    }

    #[test]
    fn a_document_round_trips_and_is_checked_for_its_host() {
        let text = serde_json::to_string_pretty(&doc()).unwrap();
        let back = StateDocument::parse(&text).unwrap();
        assert_eq!(back, doc());
        back.check("mainpc").unwrap();
        assert_eq!(
            back.check("pc2").unwrap_err().to_string(),
            "the state export is for host `mainpc`, this is `pc2`"
        );
    }

    #[test]
    fn what_is_not_a_state_export_says_so() {
        let cases = [
            (
                "{\"kind\": \"orchestrator-state\", \"format\": 1,",
                "not an orchestrator state export: EOF",
            ),
            (
                "{\"version\": 1}",
                "not an orchestrator state export (kind ``, expected `orchestrator-state`)",
            ),
            (
                "{\"kind\": \"orchestrator-state\", \"format\": 2, \"new_field\": true}",
                "state format 2 is not supported; this program reads format 1",
            ),
            (
                "{\"kind\": \"orchestrator-state\", \"format\": 1, \"host\": \"h\", \"generation\": 1, \"started_groups\": [], \"typo\": 1}",
                "not an orchestrator state export: unknown field `typo`",
            ),
        ];
        for (text, message) in cases {
            let err = StateDocument::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(message), "{text}: {err}");
        }
    }
}

#[cfg(test)]
mod autoscale_event_tests {
    use super::*;

    #[test]
    fn autoscale_events_flatten_their_cause_and_round_trip() {
        let e = Event {
            host: "mainpc".into(),
            seq: 7,
            time_ms: 1,
            kind: EventKind::AgentAutoscaled {
                group: "g".into(),
                agent: "Worker".into(),
                from: 1,
                to: 3,
                cause: AutoscaleCause::Signal {
                    signal: "cpu".into(),
                    value: 142.5,
                    target: 70.0,
                    recommended: 3,
                    bounded: false,
                },
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "agent-autoscaled");
        assert_eq!(v["cause"], "signal");
        assert_eq!(v["signal"], "cpu");
        assert_eq!(v["value"], 142.5);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            e.kind.to_string(),
            "g/Worker: autoscaled from 1 to 3 replica(s): cpu at 142.5% against a target of 70.0%"
        );

        let refused = EventKind::AgentAutoscaleRefused {
            group: "g".into(),
            agent: "Eyes".into(),
            from: 1,
            to: 4,
            cause: AutoscaleCause::AboveMax { max: 4 },
            reason: "no room".into(),
        };
        let v = serde_json::to_value(&refused).unwrap();
        assert_eq!(
            (v["cause"].as_str(), v["max"].as_u64()),
            (Some("above-max"), Some(4))
        );
        assert_eq!(serde_json::from_value::<EventKind>(v).unwrap(), refused);
    }
}
