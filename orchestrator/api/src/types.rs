//! Request, response and error types of the control API.

use orch_core::gpu::{GpuInfo, Slice};
use orch_core::supervise::{EventKind, Health, Phase};
use serde::{Deserialize, Serialize};

/// Why a request failed; `code` tells a script what kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// `file:line:column: message` lines for config errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotFound,
    /// The request conflicts with the current state (e.g. a group others need).
    Conflict,
    InvalidConfig,
    /// A dependency of the daemon (Docker, NVML) cannot do it right now.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidConfig => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAction {
    /// `stop`: also stop started groups that depend on this one.
    #[serde(default)]
    pub with_dependents: bool,
}

/// A command was taken; `events_from` is the sequence number of the first
/// event it caused, so a client can follow its progress without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub message: String,
    pub groups: Vec<String>,
    pub events_from: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The name the text is shown under in diagnostics.
    pub file_name: String,
    pub config_text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    /// Agents whose containers change (recreated, added or removed).
    pub changed: Vec<String>,
    pub warnings: Vec<String>,
    pub events_from: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigModeRequest {
    pub enable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub host: String,
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub config_path: String,
    pub generation: u64,
    pub docker: DockerStatus,
    pub gpu: GpuSummary,
    pub groups: Vec<GroupStatus>,
    pub agents: AgentCounts,
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
    pub health: Health,
    pub container: Option<String>,
    pub image: String,
    pub restarts: u64,
    pub crashloop: bool,
    pub slice: Option<Slice>,
    pub ports: Vec<String>,
    pub config_hash: Option<String>,
}

/// Something that happened, numbered so clients can resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
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
    pub telemetry: Option<Telemetry>,
    pub slices: Vec<SliceOwner>,
    pub free: FreeCapacity,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub memory_used_bytes: u64,
    pub utilization_gpu: u32,
    pub utilization_memory: u32,
    pub temperature_c: u32,
    pub power_mw: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOwner {
    pub replica: String,
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
    pub mig_create: Vec<String>,
    pub mig_destroy: Vec<String>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    /// With a running daemon: what applying the config would change.
    pub changes: Option<ConfigChanges>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSlice {
    pub replica: String,
    pub group: String,
    pub request: String,
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
    pub unchanged: usize,
}
