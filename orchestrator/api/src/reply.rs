//! The replies of the control API, one type per kind of answer.

use serde::{Deserialize, Serialize};

use crate::wire::{GpuInfo, GpuWant, Health, Phase, PlanError, PlanNote, ReplicaRef, Slice};

/// A command was taken; `events_from` is the sequence number of the first
/// event it caused, so a client can follow its progress without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub message: String,
    pub groups: Vec<String>,
    pub events_from: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    /// Agents whose config changed (their containers are made anew when
    /// they next run).
    pub changed: Vec<String>,
    /// Of those, the ones recreated (or added, or removed) now: their
    /// group is started, or they still have containers.
    #[serde(default)]
    pub recreated: Vec<String>,
    /// Agents whose replica count changed with nothing recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rescaled: Vec<Rescaled>,
    pub warnings: Vec<String>,
    pub events_from: u64,
}

/// An agent's replica count changed by an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescaled {
    pub agent: String,
    pub from: u32,
    pub to: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub host: String,
    /// The number of the last event so far (0: none yet): a client that
    /// follows events knows it has seen everything up to this answer.
    #[serde(default)]
    pub last_event_seq: u64,
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub config_path: String,
    pub generation: u64,
    pub docker: DockerStatus,
    pub gpu: GpuSummary,
    pub groups: Vec<GroupStatus>,
    pub agents: AgentCounts,
    /// The state file: where, how the daemon started from it, whether it
    /// can be written now.
    #[serde(default)]
    pub state: StateFileStatus,
    /// Agents whose replica count was set at run time (`scale` or their
    /// autoscaler), overriding the config file's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaledAgent>,
}

/// An agent whose count overrides the config file's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaledAgent {
    pub group: String,
    pub agent: String,
    pub replicas: u32,
    pub file_replicas: u32,
    /// Set by its autoscaler rather than by `scale`.
    pub by_autoscaler: bool,
}

/// The state file as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileStatus {
    pub location: String,
    /// How this daemon started: `saved`, `missing`, `damaged`, `fresh`.
    pub origin: String,
    /// Why the last write failed, while writes fail.
    pub write_error: Option<String>,
    /// Failed writes since the daemon started.
    pub failed_writes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerStatus {
    pub connected: bool,
    pub endpoint: String,
    pub engine_version: Option<String>,
    pub api_version: Option<String>,
    pub gpu_injection: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    pub available: bool,
    /// Why GPUs cannot be used, when they cannot.
    pub reason: Option<String>,
    pub gpus: usize,
    pub slices: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupState {
    Stopped,
    Starting,
    Ready,
    /// Started, was ready, and some required agent is not healthy now.
    Degraded,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub description: Option<String>,
    pub started: bool,
    pub state: GroupState,
    pub wanted: usize,
    pub running: usize,
    pub healthy: usize,
    pub depends_on: Vec<String>,
    /// The group's agents, in config order.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Optional agents (`required: false`) of a started group that are
    /// not healthy yet: a ready group may still have these coming.
    #[serde(default)]
    pub optional_not_ready: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    pub wanted: usize,
    pub running: usize,
    pub healthy: usize,
    pub crashlooping: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub group: String,
    pub agent: String,
    pub replica: u32,
    pub phase: Phase,
    /// Why it is `pending`, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::wire::PendingReason>,
    pub health: Health,
    pub container: Option<String>,
    pub image: String,
    pub restarts: u64,
    pub crashloop: bool,
    /// False for an optional agent: nothing waits for it, and its group
    /// is ready without it.
    pub required: bool,
    pub slice: Option<Slice>,
    pub ports: Vec<String>,
    pub config_hash: Option<String>,
    /// The agent's replica count when it was set at run time (`scale`),
    /// with the config file's beside it; `None`: the file's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled: Option<Scaled>,
    /// The agent's `autoscale` bounds, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleRange>,
    /// Its cross-host dependencies (its own and its group's), each with
    /// its state: why it runs on while another host is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<RemoteDependency>,
    /// Its use of the GPUs, as last sampled (summed over GPUs); `None`:
    /// no process of its container holds GPU memory, or nothing sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_use: Option<AgentGpuUse>,
    /// Its container's CPU use between the last two readings of its
    /// cgroup, as a share of one core (100 = one core busy); `None` until
    /// two readings exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// The same as a share of the agent's `resources.cpus` (100 = all of
    /// them), where it sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_percent: Option<f64>,
}

/// A replica's GPU memory and utilisation, from NVML's process lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentGpuUse {
    pub memory_used_bytes: u64,
    /// What its slice holds (a MIG profile's memory, an MPS limit, a whole
    /// GPU less the driver's reserve); `None` for time slicing or no slice.
    pub memory_limit_bytes: Option<u64>,
    /// Used over limit (10 000 = all of it; more when over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_basis_points: Option<u32>,
    /// Share of the GPU it kept busy (10 000 = all): per process where
    /// NVML gives it, else its slice's GPU's (`per_process` false).
    pub utilization_basis_points: Option<u32>,
    pub per_process: bool,
}

/// A replica count set at run time, and the config file's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaled {
    pub replicas: u32,
    pub file_replicas: u32,
    /// Set by the agent's autoscaler rather than by `scale`.
    #[serde(default)]
    pub by_autoscaler: bool,
    /// Why the autoscaler chose it (unknown for a count set by the
    /// daemon's previous run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::wire::AutoscaleCause>,
}

/// An agent's `autoscale` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscaleRange {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    pub available: bool,
    pub reason: Option<String>,
    pub library: Option<String>,
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    pub info: GpuInfo,
    pub telemetry: Option<GpuTelemetry>,
    pub slices: Vec<SliceOwner>,
    pub free: FreeCapacity,
    /// The `gpus:` policy that applies to it; `None`: the planner's
    /// defaults (or a daemon too old to say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::wire::GpuPolicy>,
    /// Who uses the GPU: each replica with a process on it, as last sampled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<GpuUse>,
    /// Processes on it that belong to no agent of this host (a desktop
    /// session, a stray container): what else holds its memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unowned: Vec<UnownedProcess>,
}

/// One replica's use of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUse {
    pub replica: ReplicaRef,
    pub group: String,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Used over limit (10 000 = all of it; more when over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_basis_points: Option<u32>,
    pub utilization_basis_points: Option<u32>,
    pub per_process: bool,
    /// How many of its processes hold a context on the GPU.
    pub processes: u32,
}

/// A process on a GPU that is none of this host's agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnownedProcess {
    pub pid: u32,
    pub memory_used_bytes: Option<u64>,
    /// The Docker container it runs in (12 hex digits), when it runs in one.
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuTelemetry {
    pub memory_used_bytes: u64,
    /// Share of the last sample period the GPU was busy (10 000 = all).
    #[serde(default)]
    pub utilization_gpu_basis_points: u32,
    /// Share of it the memory was read or written.
    #[serde(default)]
    pub utilization_memory_basis_points: u32,
    #[serde(default, alias = "temperature_c")]
    pub temperature_celsius: u32,
    /// Milliwatts.
    pub power_mw: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOwner {
    pub replica: ReplicaRef,
    pub group: String,
    pub slice: Slice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeCapacity {
    /// The sharing mode the GPU is used in (`mig`, `mps`, `exclusive`, …).
    pub sharing: String,
    pub mps_memory_bytes: Option<u64>,
    pub mps_compute_basis_points: Option<u32>,
    pub mps_clients: Option<u32>,
    /// Free memory slices (MIG).
    pub mig_memory_slices: Option<u8>,
    pub mig_compute_slices: Option<u8>,
    pub whole_gpu_free: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    pub host: String,
    /// Where the inventory came from (`daemon`, or a library path).
    pub inventory_source: String,
    pub assignments: Vec<PlannedSlice>,
    pub mig_create: Vec<MigCreate>,
    pub mig_destroy: Vec<MigDestroy>,
    pub errors: Vec<PlanError>,
    pub notes: Vec<PlanNote>,
    /// With a running daemon: what applying the config would change.
    pub changes: Option<ConfigChanges>,
    /// With a running daemon: the same, field by field, with the counts
    /// set at run time that the apply keeps or replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::diff::DiffReport>,
    /// What the config's agents need on other hosts, and whether it is
    /// ready there now (as far as this host knows).
    #[serde(default)]
    pub remote: Vec<RemoteDependency>,
    /// With a running daemon: the config's images the Docker Engine does
    /// not have (`apply` refuses the file without `force`). Empty when
    /// none is missing or Docker could not be asked.
    #[serde(default)]
    pub missing_images: Vec<String>,
}

/// Where a config's GPU requests (or one agent's) would fit in the fleet
/// (`plan --all-hosts`): every host, this one from its live inventory and
/// its peers from their latest snapshots. Advice only: nothing moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPlan {
    /// The host that planned.
    pub planned_by: String,
    /// The config planned: its file name, or `running config`.
    pub file_name: String,
    /// The host the config is for: there it replaces what runs (as
    /// `apply` would); everywhere else it is added to what runs.
    pub config_host: String,
    /// `GROUP/AGENT` when only that agent's replicas were placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The replicas placed, with their requests, in priority order.
    pub requests: Vec<PlacementRequest>,
    /// This host first, then its peers by name.
    pub hosts: Vec<HostPlacement>,
}

impl FleetPlan {
    /// The hosts every replica asked about fits on (together).
    pub fn fits_on(&self) -> impl Iterator<Item = &HostPlacement> {
        self.hosts.iter().filter(|h| h.fits)
    }
}

/// One replica to place and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRequest {
    pub replica: ReplicaRef,
    pub group: String,
    /// The request and its fallbacks, in order.
    pub request: Vec<GpuWant>,
}

/// One host's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPlacement {
    pub host: String,
    pub state: PeerState,
    /// How old the GPU report planned on is (0 for this host).
    pub snapshot_age_ms: Option<u64>,
    /// The config's own host: its agents are replaced, not added to.
    pub own_host: bool,
    /// Every replica asked about fits here, together with what stays.
    pub fits: bool,
    /// Why the host could not be planned at all (then `replicas` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_planned: Option<NotPlanned>,
    /// One per replica asked about, in the order of `requests`.
    pub replicas: Vec<ReplicaPlacement>,
}

/// One replica on one host: the slice it would get, or why none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    pub replica: ReplicaRef,
    pub fit: ReplicaFit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fit")]
pub enum ReplicaFit {
    /// The slice it would get (MIG profile, MPS share or whole GPU);
    /// `fallback_depth` says which entry of its request.
    Fits {
        slice: Slice,
        fallback_depth: u8,
        /// It runs there now with this slice (the config's own host).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        kept: bool,
    },
    /// The planner's reasons, GPU by GPU.
    DoesNotFit { error: PlanError },
}

/// Why a host was not planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum NotPlanned {
    /// Nothing heard from it since this daemon started.
    NoSnapshot,
    /// Its daemon is down (its last GPU report is not planned on).
    HostDown,
    /// Its GPU inventory has not been taken yet.
    NoInventory,
    /// Its GPUs cannot be used (NVML is missing or failing).
    GpusUnavailable { reason: String },
}

/// A cross-host dependency of an agent, as a plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDependency {
    pub agent: String,
    pub on: crate::wire::Wait,
    pub state: RemoteReadiness,
}

/// Whether a cross-host dependency is met, as this host knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteReadiness {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
    #[serde(rename = "host down")]
    HostDown,
    #[serde(rename = "not heard from")]
    NotHeardFrom,
    /// Its host is down; its last known state is held for
    /// `federation.peer_grace`.
    #[serde(rename = "held, host down")]
    HeldForGrace,
    /// Its host is down; the agent answers this host's direct probe.
    #[serde(rename = "answers its probe, host down")]
    AnswersProbe,
    /// Planned without a daemon.
    #[serde(rename = "unknown")]
    Unknown,
}

impl RemoteReadiness {
    /// As on the wire (and as `plan` prints it).
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteReadiness::Ready => "ready",
            RemoteReadiness::NotReady => "not ready",
            RemoteReadiness::HostDown => "host down",
            RemoteReadiness::NotHeardFrom => "not heard from",
            RemoteReadiness::HeldForGrace => "held, host down",
            RemoteReadiness::AnswersProbe => "answers its probe, host down",
            RemoteReadiness::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSlice {
    pub replica: ReplicaRef,
    pub group: String,
    /// The request and its fallbacks, in order.
    pub request: Vec<GpuWant>,
    pub slice: Slice,
    pub fallback_depth: u8,
    /// Kept from the running assignment.
    pub kept: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub recreated: Vec<String>,
    /// Agents whose replica count changes, none recreated: replicas are
    /// started or stopped.
    #[serde(default)]
    pub scaled: Vec<String>,
    pub unchanged: usize,
}

/// A MIG instance a plan would create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigCreate {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub profile: String,
    pub placement_start: u8,
    pub replica: ReplicaRef,
}

/// One of our MIG instances a plan would destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigDestroy {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub gi_id: u32,
    pub placement_start: u8,
}

/// One line of a container's output, as `logs -o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub replica: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line without its newline (invalid UTF-8 replaced).
    pub line: String,
}

impl LogLine {
    /// A chunk of a replica's output as NDJSON, one object per line (a
    /// chunk's last line without a newline is a line too).
    pub fn ndjson(replica: u32, stream: &str, chunk: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(chunk);
        let mut out = Vec::new();
        for line in text.strip_suffix('\n').unwrap_or(&text).split('\n') {
            let l = LogLine {
                replica,
                stream: stream.to_string(),
                line: line.strip_suffix('\r').unwrap_or(line).to_string(),
            };
            if serde_json::to_writer(&mut out, &l).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }
}

/// A chunk of a container's output (for transports that cannot stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogText {
    /// The output, as text (invalid UTF-8 replaced).
    pub text: String,
}

/// A host's state as its peers see it: what it publishes to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub status: Status,
    pub agents: Vec<AgentStatus>,
    pub gpu: GpuReport,
    /// Its groups' SLO figures.
    #[serde(default)]
    pub slo: Option<SloReport>,
    /// Its agents' health endpoints published on its own ports, which
    /// peers probe directly while this host's daemon is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeEndpoint>,
}

/// One replica's HTTP health probe, reachable on a port its host
/// publishes (the agent's `ports:` map the probe's container port to it),
/// with the agent's probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeEndpoint {
    pub agent: String,
    pub replica: u32,
    /// The host port.
    pub port: u16,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Failures in a row before the agent counts as unhealthy.
    pub retries: u32,
}

/// How this host sees another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerState {
    /// This host itself.
    #[serde(rename = "self")]
    Local,
    /// Never heard from since this daemon started.
    Unknown,
    Alive,
    /// Heartbeats missed; not yet declared down.
    Suspect,
    Down,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Local => "self",
            PeerState::Unknown => "unknown",
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

/// One configured peer, as `peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub endpoint: String,
    pub state: PeerState,
    /// The peer's current run (its start time, Unix ms); changes when it restarts.
    pub incarnation: Option<u64>,
    /// Since its last heartbeat.
    pub last_heartbeat_age_ms: Option<u64>,
    /// Since its last snapshot.
    pub snapshot_age_ms: Option<u64>,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Frames from it that could not be read (dropped, never acted on).
    pub decode_errors: u64,
    /// What its key may do here: `peer` or `monitor`.
    #[serde(default)]
    pub role: String,
    /// Connections with its key refused or shut down (too many at once,
    /// over their byte budget).
    #[serde(default)]
    pub refused_connections: u64,
    /// Messages, snapshots or events from its key claiming another host.
    #[serde(default)]
    pub impostors: u64,
    /// Well-formed messages on a channel they do not belong to.
    #[serde(default)]
    pub unexpected: u64,
    /// Its items dropped because its share of the inbox was full.
    #[serde(default)]
    pub inbox_drops: u64,
    /// Messages or connections over a size budget.
    #[serde(default)]
    pub over_budget: u64,
    /// Requests refused by this host's rules for peers (role,
    /// `federation.remote_commands`, the operator).
    #[serde(default)]
    pub refused_commands: u64,
}

/// Every host of the federation, this one first: the latest snapshot of
/// each, with its age, and how this host sees it. A host that is down is
/// shown with its last known state, not hidden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub hosts: Vec<HostView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub state: PeerState,
    pub incarnation: Option<u64>,
    /// How old `snapshot` is (0 for this host).
    pub snapshot_age_ms: Option<u64>,
    pub snapshot: Option<HostSnapshot>,
}

/// SLO figures of one host (`slo`): every group with an `slo:`, or one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloReport {
    pub host: String,
    pub groups: Vec<SloGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloGroup {
    pub group: String,
    pub slis: Vec<SloSli>,
}

/// One SLI of a group: its objective and figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloSli {
    /// `availability`, `latency` or `error_rate`.
    pub slo: String,
    /// The share of good events aimed for (0.995).
    pub objective: f64,
    /// The share of bad events allowed (1 - objective).
    pub budget: f64,
    /// The latency threshold (latency only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_threshold_ms: Option<u64>,
    /// The SLO window, as written in the config (`30d`).
    pub slo_window: String,
    /// Every event since the series began, good and bad.
    pub events: u64,
    /// The bad ones among them.
    pub errors: u64,
    /// The share of the budget left over the SLO window; `None` without
    /// events. Negative once overspent.
    pub budget_remaining: Option<f64>,
    /// 5m, 30m, 1h, 6h, 1d, 3d, then the SLO window unless it is one of them.
    pub windows: Vec<SloWindow>,
}

/// One SLI over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloWindow {
    pub window: String,
    pub events: u64,
    pub errors: u64,
    /// errors / events; `None` without events.
    pub error_ratio: Option<f64>,
    /// error ratio / budget; `None` without events, and in JSON also when
    /// infinite (a zero budget with an error).
    pub burn_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::RemoteReadiness as R;

    #[test]
    fn remote_readiness_reads_on_the_wire_as_it_prints() {
        for r in [
            R::Ready,
            R::NotReady,
            R::HostDown,
            R::NotHeardFrom,
            R::HeldForGrace,
            R::AnswersProbe,
            R::Unknown,
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<R>(&json).unwrap(), r);
        }
    }
}

/// One config generation the daemon ran, as `history` lists it (newest
/// first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationView {
    pub generation: u64,
    /// When it was taken (Unix milliseconds).
    pub unix_ms: u64,
    /// Who applied it: the operator's user name (or `uid N`) when the
    /// request carried one, else `local`, `sighup` or `startup`.
    pub applied_by: String,
    pub source: GenerationSource,
    pub changes: GenerationChanges,
    pub outcome: GenerationOutcome,
}

/// How a generation came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GenerationSource {
    /// The config the daemon started with.
    Startup,
    /// A text sent by `apply`.
    Apply,
    /// The config file re-read (`reload`, SIGHUP).
    Reload,
    /// Taken back by the daemon itself: generation `from` failed, the text
    /// of `to` runs again.
    Rollback { from: u64, to: u64 },
    /// Taken back by an operator: `from` undone, the text of `to` again.
    Undo { from: u64, to: u64 },
}

/// What a generation changed against the one before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationChanges {
    /// Agents whose config changed, added or removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Of those, the ones recreated when it was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recreated: Vec<String>,
    /// Agents whose replica count changed with nothing recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rescaled: Vec<Rescaled>,
}

/// Where a generation's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationOutcome {
    /// Replicas are still being recreated.
    InProgress,
    Completed,
    Paused,
    RolledBack,
}

impl GenerationOutcome {
    /// The name as in the JSON.
    pub fn label(self) -> &'static str {
        match self {
            GenerationOutcome::InProgress => "in_progress",
            GenerationOutcome::Completed => "completed",
            GenerationOutcome::Paused => "paused",
            GenerationOutcome::RolledBack => "rolled_back",
        }
    }
}
