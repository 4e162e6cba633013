//! What a container for one agent replica must look like, as plain data:
//! the agent contract's labels and environment, the GPU share, limits and
//! hardening. The Docker adapter turns a `ContainerSpec` into API calls; it
//! adds nothing of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{PortMapping, VolumeMount};
use crate::units::{ByteSize, Duration};

/// Label keys of the agent contract. Ownership and adoption are decided
/// from these labels, never from container names.
pub mod labels {
    pub const HOST: &str = "io.orchestrator.host";
    pub const GROUP: &str = "io.orchestrator.group";
    pub const AGENT: &str = "io.orchestrator.agent";
    pub const REPLICA: &str = "io.orchestrator.replica";
    pub const CONFIG_HASH: &str = "io.orchestrator.config-hash";
    pub const GENERATION: &str = "io.orchestrator.generation";
    /// The GPU slice the container was given (`Slice::describe`), so that a
    /// restarted daemon can rebuild its assignments from Docker alone.
    pub const GPU_SLICE: &str = "io.orchestrator.gpu-slice";
    /// Marks networks made by the orchestrator.
    pub const NETWORK: &str = "io.orchestrator.network";
}

/// How the GPU share reaches the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum GpuDevices {
    /// No devices (CPU agent, or a host injecting by environment only).
    #[default]
    None,
    /// Docker DeviceRequests with the nvidia driver (`GPU-…` / `MIG-…` ids).
    Nvidia { device_ids: Vec<String> },
    /// CDI device names, e.g. `nvidia.com/gpu=GPU-…`.
    Cdi { devices: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Docker container name (unique per Docker engine).
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The bridge network to attach to, and the names others reach it by.
    pub network: String,
    pub aliases: Vec<String>,
    pub hostname: Option<String>,
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<VolumeMount>,
    pub cpus: Option<f64>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u32>,
    /// Capabilities added back after dropping all of them.
    pub cap_add: Vec<String>,
    pub read_only_rootfs: bool,
    pub gpu: GpuDevices,
    /// MPS clients share the IPC namespace of the MPS server on the host.
    pub ipc_host: bool,
    pub stop_timeout: Duration,
}
