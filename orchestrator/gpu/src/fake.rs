//! [`FakeGpu`]: an in-memory GPU host for tests of the crates above this
//! one. It is built from the core's catalog classes, applies the MIG rules
//! real GPUs apply (placements, memory-slice overlap, compute slices,
//! per-profile instance counts, mode changes pending until a reset), holds
//! the processes and per-process utilisation a test sets, can lose a GPU or
//! fail the next call on demand, and records every call in order so a test
//! can assert what the daemon asked for.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use orch_core::gpu::{CatalogProfile, GpuClass, GpuInfo, MigInstance, MigState};
use orch_core::units::ByteSize;

use crate::backend::{
    CreatedInstance, GpuBackend, GpuProcess, MigModeChange, ProcessSample, ProcessUtilization,
    Telemetry,
};
use crate::error::GpuError;

/// One call made on a [`FakeGpu`], as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuCall {
    Inventory,
    Telemetry {
        gpu: u32,
    },
    DriverVersion,
    CreateInstance {
        gpu: u32,
        profile_id: u32,
        placement_start: u8,
    },
    DestroyInstance {
        gpu: u32,
        gi_id: u32,
    },
    SetMigMode {
        gpu: u32,
        enable: bool,
    },
    Processes {
        gpu: u32,
    },
    InstanceProcesses {
        gpu: u32,
        gi_id: u32,
        ci_id: u32,
    },
    ProcessUtilization {
        gpu: u32,
        since_us: u64,
    },
}

impl GpuCall {
    fn op(&self) -> GpuOp {
        match self {
            GpuCall::Inventory => GpuOp::Inventory,
            GpuCall::Telemetry { .. } => GpuOp::Telemetry,
            GpuCall::DriverVersion => GpuOp::DriverVersion,
            GpuCall::CreateInstance { .. } => GpuOp::CreateInstance,
            GpuCall::DestroyInstance { .. } => GpuOp::DestroyInstance,
            GpuCall::SetMigMode { .. } => GpuOp::SetMigMode,
            GpuCall::Processes { .. } => GpuOp::Processes,
            GpuCall::InstanceProcesses { .. } => GpuOp::InstanceProcesses,
            GpuCall::ProcessUtilization { .. } => GpuOp::ProcessUtilization,
        }
    }
}

/// Which kind of call an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuOp {
    Inventory,
    Telemetry,
    DriverVersion,
    CreateInstance,
    DestroyInstance,
    SetMigMode,
    Processes,
    InstanceProcesses,
    ProcessUtilization,
}

#[derive(Debug)]
struct FakeInstance {
    gi_id: u32,
    profile: &'static CatalogProfile,
    start: u8,
    device_uuid: String,
}

#[derive(Debug)]
struct FakeDevice {
    uuid: String,
    class: &'static GpuClass,
    mig_current: bool,
    mig_pending: bool,
    instances: Vec<FakeInstance>,
    lost: bool,
    telemetry: Telemetry,
    processes: Vec<GpuProcess>,
    samples: Vec<ProcessSample>,
}

#[derive(Debug)]
struct State {
    gpus: Vec<FakeDevice>,
    calls: Vec<GpuCall>,
    failures: Vec<(GpuOp, GpuError)>,
    driver_version: String,
    /// Instances created so far: makes every MIG UUID unique, as a real
    /// driver's are across destroy and re-create.
    created: u64,
}

/// A recording, rule-checking stand-in for [`crate::NvmlBackend`].
#[derive(Debug)]
pub struct FakeGpu {
    // A std mutex held only for the length of one call, never across an await.
    state: Mutex<State>,
    library: PathBuf,
}

impl Default for FakeGpu {
    fn default() -> Self {
        Self::new()
    }
}

/// The telemetry of an idle GPU, until a test pins other values.
const IDLE: Telemetry = Telemetry {
    memory_used: Some(ByteSize(0)),
    gpu_utilization: Some(0),
    memory_utilization: Some(0),
    temperature_c: Some(35),
    power_mw: Some(30_000),
};

impl FakeGpu {
    /// A host without GPUs.
    pub fn new() -> Self {
        FakeGpu {
            state: Mutex::new(State {
                gpus: Vec::new(),
                calls: Vec::new(),
                failures: Vec::new(),
                driver_version: "570.133.20".to_owned(),
                created: 0,
            }),
            library: PathBuf::from("fake:libnvidia-ml.so.1"),
        }
    }

    /// Adds a GPU of `class` at the next index, with a UUID derived from the
    /// index. `mig_enabled` is ignored for classes without MIG.
    pub fn with_gpu(self, class: &'static GpuClass, mig_enabled: bool) -> Self {
        let index = self.lock().gpus.len();
        let uuid = format!("GPU-fa4e0000-0000-4000-8000-{index:012x}");
        self.with_gpu_uuid(class, &uuid, mig_enabled)
    }

    /// Adds a GPU of `class` with this UUID.
    pub fn with_gpu_uuid(self, class: &'static GpuClass, uuid: &str, mig_enabled: bool) -> Self {
        let mig = mig_enabled && class.mig.is_some();
        self.lock().gpus.push(FakeDevice {
            uuid: uuid.to_owned(),
            class,
            mig_current: mig,
            mig_pending: mig,
            instances: Vec::new(),
            lost: false,
            telemetry: IDLE,
            processes: Vec::new(),
            samples: Vec::new(),
        });
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<GpuCall> {
        self.lock().calls.clone()
    }

    /// Every call so far, in order; the record starts afresh.
    pub fn take_calls(&self) -> Vec<GpuCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next call of kind `op` fails with `error` (and changes nothing).
    /// Several failures for one kind are used in the order given.
    pub fn fail_next(&self, op: GpuOp, error: GpuError) {
        self.lock().failures.push((op, error));
    }

    /// Resets one GPU (or all): the pending MIG mode takes effect and every
    /// MIG instance is gone, as after `nvidia-smi -r`, and so is every
    /// process on it.
    pub fn reset(&self, gpu: Option<u32>) {
        let mut state = self.lock();
        for (index, dev) in state.gpus.iter_mut().enumerate() {
            if gpu.is_none_or(|g| g as usize == index) {
                dev.mig_current = dev.mig_pending;
                dev.instances.clear();
                dev.processes.clear();
                dev.samples.clear();
            }
        }
    }

    /// The GPU falls off the bus: every call on it answers `GpuLost`.
    pub fn lose(&self, gpu: u32) {
        if let Some(dev) = self.lock().gpus.get_mut(gpu as usize) {
            dev.lost = true;
        }
    }

    /// The GPU is back, reset (its MIG layout is gone).
    pub fn restore(&self, gpu: u32) {
        if let Some(dev) = self.lock().gpus.get_mut(gpu as usize) {
            dev.lost = false;
            dev.mig_current = dev.mig_pending;
            dev.instances.clear();
        }
    }

    /// Pins what `telemetry(gpu)` answers.
    pub fn set_telemetry(&self, gpu: u32, telemetry: Telemetry) {
        if let Some(dev) = self.lock().gpus.get_mut(gpu as usize) {
            dev.telemetry = telemetry;
        }
    }

    /// The processes `processes(gpu)` answers (and, for those with MIG ids,
    /// `instance_processes`). Like NVML, the fake lists them in this order.
    pub fn set_processes(&self, gpu: u32, processes: Vec<GpuProcess>) {
        if let Some(dev) = self.lock().gpus.get_mut(gpu as usize) {
            dev.processes = processes;
        }
    }

    /// The per-process utilisation the driver holds for `gpu`: a call with
    /// `since_us` answers the entries whose `newest_us` is later.
    pub fn set_process_utilization(&self, gpu: u32, samples: Vec<ProcessSample>) {
        if let Some(dev) = self.lock().gpus.get_mut(gpu as usize) {
            dev.samples = samples;
        }
    }

    /// Records `call` and returns the state, or the injected failure.
    fn begin(&self, call: GpuCall) -> Result<MutexGuard<'_, State>, GpuError> {
        let mut state = self.lock();
        let op = call.op();
        state.calls.push(call);
        if let Some(at) = state.failures.iter().position(|(o, _)| *o == op) {
            let (_, error) = state.failures.remove(at);
            return Err(error);
        }
        Ok(state)
    }
}

impl State {
    fn device(&mut self, gpu: u32) -> Result<&mut FakeDevice, GpuError> {
        let count = u32::try_from(self.gpus.len()).unwrap_or(u32::MAX);
        let dev = self
            .gpus
            .get_mut(gpu as usize)
            .ok_or(GpuError::NoSuchGpu { index: gpu, count })?;
        if dev.lost {
            return Err(GpuError::GpuLost { gpu });
        }
        Ok(dev)
    }
}

impl FakeDevice {
    fn info(&self, index: u32) -> GpuInfo {
        let mut info = GpuInfo::from_class(index, &self.uuid, self.class, self.mig_current);
        if self.lost {
            info.memory_total = ByteSize(0);
            info.mig = MigState::Unsupported;
            info.lost = true;
            return info;
        }
        match &mut info.mig {
            MigState::Unsupported => {}
            MigState::Disabled { pending_enable } => *pending_enable = self.mig_pending,
            MigState::Enabled {
                pending_disable,
                instances,
                ..
            } => {
                *pending_disable = !self.mig_pending;
                *instances = self
                    .instances
                    .iter()
                    .map(|i| MigInstance {
                        gi_id: i.gi_id,
                        profile_id: i.profile.id,
                        placement_start: i.start,
                        placement_size: i.profile.memory_slices,
                        ci_id: Some(0),
                        device_uuid: Some(i.device_uuid.clone()),
                        owned: false,
                    })
                    .collect();
            }
        }
        info
    }

    /// Checks the MIG rules and returns the new instance's id.
    fn admit(
        &self,
        gpu: u32,
        profile: &'static CatalogProfile,
        start: u8,
    ) -> Result<u32, GpuError> {
        let Some(mig) = &self.class.mig else {
            return Err(GpuError::mig_unsupported(gpu));
        };
        let full = || GpuError::InsufficientResources {
            gpu,
            profile: profile.name.to_owned(),
            placement: start,
        };
        let same_profile = self
            .instances
            .iter()
            .filter(|i| i.profile.id == profile.id)
            .count();
        if same_profile >= usize::from(profile.max_instances) {
            return Err(full());
        }
        let end = start + profile.memory_slices;
        let overlaps = self
            .instances
            .iter()
            .any(|i| start < i.start + i.profile.memory_slices && i.start < end);
        if overlaps {
            return Err(full());
        }
        let compute_used: u32 = self
            .instances
            .iter()
            .map(|i| u32::from(i.profile.compute_slices))
            .sum();
        if compute_used + u32::from(profile.compute_slices) > u32::from(mig.compute_slices) {
            return Err(full());
        }
        Ok(self.gi_id(mig.memory_slices, start, profile.memory_slices))
    }

    /// The driver numbers GPU instances by their node in the memory-slice
    /// tree (whole GPU 0, halves 1-2, quarters 3-6, eighths 7-14).
    fn gi_id(&self, memory_slices: u8, start: u8, size: u8) -> u32 {
        let taken = |id: u32| self.instances.iter().any(|i| i.gi_id == id);
        if size > 0 && memory_slices % size == 0 && start % size == 0 {
            let id = u32::from(memory_slices / size - 1) + u32::from(start / size);
            if !taken(id) {
                return id;
            }
        }
        (0..).find(|id| !taken(*id)).unwrap_or(u32::MAX)
    }
}

impl GpuBackend for FakeGpu {
    fn processes(&self, gpu_index: u32) -> Result<Vec<GpuProcess>, GpuError> {
        let mut state = self.begin(GpuCall::Processes { gpu: gpu_index })?;
        Ok(state.device(gpu_index)?.processes.clone())
    }

    fn instance_processes(
        &self,
        gpu_index: u32,
        gi_id: u32,
        ci_id: u32,
    ) -> Result<Vec<GpuProcess>, GpuError> {
        let gpu = gpu_index;
        let mut state = self.begin(GpuCall::InstanceProcesses { gpu, gi_id, ci_id })?;
        let dev = state.device(gpu)?;
        if dev.class.mig.is_none() {
            return Err(GpuError::mig_unsupported(gpu));
        }
        if !dev.mig_current {
            return Err(GpuError::mig_not_current(gpu, dev.mig_pending));
        }
        // The fake's instances each hold one compute instance, id 0.
        if ci_id != 0 || !dev.instances.iter().any(|i| i.gi_id == gi_id) {
            return Err(GpuError::NoSuchInstance { gpu, gi_id });
        }
        Ok(dev
            .processes
            .iter()
            .filter(|p| p.gpu_instance_id == Some(gi_id) && p.compute_instance_id == Some(ci_id))
            .cloned()
            .collect())
    }

    fn process_utilization(
        &self,
        gpu_index: u32,
        since_us: u64,
    ) -> Result<ProcessUtilization, GpuError> {
        let gpu = gpu_index;
        let mut state = self.begin(GpuCall::ProcessUtilization { gpu, since_us })?;
        let dev = state.device(gpu)?;
        if dev.mig_current {
            return Err(GpuError::NotSupported {
                gpu,
                what: "per-process utilisation".to_owned(),
            });
        }
        let processes: Vec<ProcessSample> = dev
            .samples
            .iter()
            .filter(|s| s.newest_us > since_us)
            .copied()
            .collect();
        let newest_us = processes.iter().map(|s| s.newest_us).max();
        Ok(ProcessUtilization {
            processes,
            newest_us,
        })
    }

    fn inventory(&self) -> Result<Vec<GpuInfo>, GpuError> {
        let state = self.begin(GpuCall::Inventory)?;
        Ok(state
            .gpus
            .iter()
            .zip(0u32..)
            .map(|(dev, index)| dev.info(index))
            .collect())
    }

    fn telemetry(&self, index: u32) -> Result<Telemetry, GpuError> {
        let mut state = self.begin(GpuCall::Telemetry { gpu: index })?;
        Ok(state.device(index)?.telemetry)
    }

    fn driver_version(&self) -> Result<String, GpuError> {
        let state = self.begin(GpuCall::DriverVersion)?;
        Ok(state.driver_version.clone())
    }

    fn library_path(&self) -> &Path {
        &self.library
    }

    fn create_instance(
        &self,
        gpu_index: u32,
        profile_id: u32,
        placement_start: u8,
    ) -> Result<CreatedInstance, GpuError> {
        let gpu = gpu_index;
        let mut state = self.begin(GpuCall::CreateInstance {
            gpu,
            profile_id,
            placement_start,
        })?;
        let serial = state.created;
        let dev = state.device(gpu)?;
        let Some(mig) = &dev.class.mig else {
            return Err(GpuError::mig_unsupported(gpu));
        };
        if !dev.mig_current {
            return Err(GpuError::mig_not_current(gpu, dev.mig_pending));
        }
        let profile = mig
            .profiles
            .iter()
            .find(|p| p.id == profile_id)
            .ok_or_else(|| GpuError::unknown_profile(gpu, profile_id))?;
        if !profile.placements.contains(&placement_start) {
            let starts: Vec<u32> = profile.placements.iter().map(|s| u32::from(*s)).collect();
            return Err(GpuError::bad_placement(
                gpu,
                profile.name,
                placement_start,
                &starts,
            ));
        }
        let gi_id = dev.admit(gpu, profile, placement_start)?;
        let device_uuid = mig_uuid(&dev.uuid, gi_id, serial);
        dev.instances.push(FakeInstance {
            gi_id,
            profile,
            start: placement_start,
            device_uuid: device_uuid.clone(),
        });
        dev.instances.sort_by_key(|i| i.gi_id);
        state.created += 1;
        Ok(CreatedInstance {
            gi_id,
            ci_id: 0,
            device_uuid,
        })
    }

    fn destroy_instance(&self, gpu_index: u32, gi_id: u32) -> Result<(), GpuError> {
        let gpu = gpu_index;
        let mut state = self.begin(GpuCall::DestroyInstance { gpu, gi_id })?;
        let dev = state.device(gpu)?;
        if dev.class.mig.is_none() {
            return Err(GpuError::mig_unsupported(gpu));
        }
        if !dev.mig_current {
            return Err(GpuError::mig_not_current(gpu, dev.mig_pending));
        }
        let at = dev
            .instances
            .iter()
            .position(|i| i.gi_id == gi_id)
            .ok_or(GpuError::NoSuchInstance { gpu, gi_id })?;
        dev.instances.remove(at);
        Ok(())
    }

    fn set_mig_mode(&self, gpu_index: u32, enable: bool) -> Result<MigModeChange, GpuError> {
        let gpu = gpu_index;
        let mut state = self.begin(GpuCall::SetMigMode { gpu, enable })?;
        let dev = state.device(gpu)?;
        if dev.class.mig.is_none() {
            return Err(GpuError::mig_unsupported(gpu));
        }
        dev.mig_pending = enable;
        Ok(MigModeChange {
            current: dev.mig_current,
            pending: dev.mig_pending,
            reset_required: dev.mig_current != dev.mig_pending,
        })
    }
}

/// A `MIG-` UUID, unique per GPU, instance id and creation.
fn mig_uuid(gpu_uuid: &str, gi_id: u32, serial: u64) -> String {
    let a = fnv1a(format!("{gpu_uuid}/{gi_id}/{serial}").as_bytes());
    let b = fnv1a(format!("{serial}/{gi_id}/{gpu_uuid}").as_bytes());
    format!(
        "MIG-{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mig_uuids_look_like_nvidias() {
        let u = mig_uuid("GPU-x", 2, 0);
        assert_eq!(u.len(), 40, "{u}");
        assert!(u.starts_with("MIG-"));
        assert_ne!(u, mig_uuid("GPU-x", 2, 1));
        assert_ne!(u, mig_uuid("GPU-y", 2, 0));
    }
}
