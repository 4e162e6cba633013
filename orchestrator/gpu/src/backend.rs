//! The one narrow interface through which the rest of the orchestrator sees
//! GPUs: inventory, telemetry and the MIG operations. NVML is behind it in
//! production ([`crate::NvmlBackend`]), a recording fake in tests
//! ([`crate::FakeGpu`]).
//!
//! Every method is synchronous: NVML calls are blocking FFI, and the daemon
//! calls them from `spawn_blocking`.

use std::fmt::Debug;
use std::path::Path;

use orch_core::gpu::GpuInfo;
use orch_core::units::ByteSize;
use serde::{Deserialize, Serialize};

use crate::GpuError;

/// The GPU adapter.
pub trait GpuBackend: Send + Sync + Debug {
    /// Every GPU of the host in NVML index order. A lost GPU is listed with
    /// `lost: true` instead of failing the whole inventory.
    fn inventory(&self) -> Result<Vec<GpuInfo>, GpuError>;

    /// Current readings of one GPU; readings the GPU does not offer are `None`.
    fn telemetry(&self, index: u32) -> Result<Telemetry, GpuError>;

    /// The driver version NVML reports (`570.133.20`).
    fn driver_version(&self) -> Result<String, GpuError>;

    /// The NVML library file in use.
    fn library_path(&self) -> &Path;

    /// Creates a MIG GPU instance of `profile_id` at `placement_start`
    /// (memory-slice units) and one compute instance spanning it. Either
    /// both exist afterwards or neither does.
    fn create_instance(
        &self,
        gpu_index: u32,
        profile_id: u32,
        placement_start: u8,
    ) -> Result<CreatedInstance, GpuError>;

    /// Destroys the compute instances of GPU instance `gi_id`, then the GPU
    /// instance itself.
    fn destroy_instance(&self, gpu_index: u32, gi_id: u32) -> Result<(), GpuError>;

    /// Requests MIG mode on or off. The change is pending until the GPU is
    /// reset; the answer says whether one is needed.
    fn set_mig_mode(&self, gpu_index: u32, enable: bool) -> Result<MigModeChange, GpuError>;
}

/// Readings of one GPU at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Device memory in use.
    pub memory_used: Option<ByteSize>,
    /// Percent of time a kernel ran in the last sample period.
    pub gpu_utilization: Option<u32>,
    /// Percent of time device memory was read or written.
    pub memory_utilization: Option<u32>,
    /// Core temperature, degrees Celsius.
    pub temperature_c: Option<u32>,
    /// Board power draw, milliwatts.
    pub power_mw: Option<u32>,
}

/// A MIG instance as created: the ids NVML assigned and the MIG device's
/// UUID, which is what a container gets as `NVIDIA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedInstance {
    pub gi_id: u32,
    pub ci_id: u32,
    /// `MIG-<uuid>`.
    pub device_uuid: String,
}

/// MIG mode after a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigModeChange {
    /// Mode in force now.
    pub current: bool,
    /// Mode after the next GPU reset.
    pub pending: bool,
    /// True while `current != pending`: the GPU must be reset (or the host
    /// rebooted) before the change takes effect.
    pub reset_required: bool,
}
