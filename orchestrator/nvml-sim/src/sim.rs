//! The simulator as one object: a loaded host description plus the shared
//! state file, with the operations both the C ABI and `nvml-simctl` perform
//! (MIG mode changes, GPU resets, reboots, telemetry overrides, lost GPUs,
//! processes and MPS servers) and the status report `nvml-simctl status`
//! prints.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{ConfigError, GiProfileSpec, GpuConfig, SimConfig, digest128, uuid_body};
use crate::mig::{self, MigError, Placement};
use crate::process::{self, MpsStatus, NewProcess, ProcessError, ProcessStatus};
use crate::state::{
    CiState, GiState, GpuState, Overrides, SimState, StateError, StateStore, default_state_path,
};
use crate::telemetry::{self, Sample};
use crate::units::MIB;

/// Environment variable naming the host description.
pub const ENV_CONFIG: &str = "NVML_SIM_CONFIG";
/// Environment variable naming the shared state file.
pub const ENV_STATE: &str = "NVML_SIM_STATE";
/// Environment variable naming the simulated caller's privileges: `root`
/// or `user` (default: `root` when the effective uid is 0, else `user`).
pub const ENV_CALLER: &str = "NVML_SIM_CALLER";

/// What went wrong in a simulator operation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// `NVML_SIM_CONFIG` is not set.
    #[error(
        "{ENV_CONFIG} is not set: point it at a host description such as config/sim/lab-a100.yaml"
    )]
    NoConfig,
    /// The host or a card file is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state file could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// No GPU with that index.
    #[error("GPU {index} does not exist: the host has {count} GPU(s)")]
    NoSuchGpu {
        /// Requested index.
        index: u32,
        /// GPUs on the host.
        count: usize,
    },
    /// The GPU has fallen off the bus.
    #[error("GPU {0} is lost (use `nvml-simctl restore --gpu {0}`)")]
    Lost(u32),
    /// A MIG rule refused the operation.
    #[error("GPU {gpu}: {reason}")]
    Mig {
        /// GPU index.
        gpu: u32,
        /// The rule.
        reason: MigError,
    },
    /// A process rule refused the change.
    #[error("GPU {gpu}: {reason}")]
    Process {
        /// GPU index.
        gpu: u32,
        /// The rule.
        reason: ProcessError,
    },
    /// No simulated GPU has a context of this pid.
    #[error("pid {0} uses no simulated GPU here")]
    NoSuchProcess(u32),
    /// A request that makes no sense for this GPU.
    #[error("{0}")]
    Invalid(String),
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Memory figures as NVML reports them (`nvmlMemory_v2_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    /// Total memory.
    pub total: u64,
    /// Reserved by the driver.
    pub reserved: u64,
    /// Used by processes.
    pub used: u64,
    /// `total - reserved - used`.
    pub free: u64,
}

/// Memory of a whole GPU at a telemetry sample.
pub fn gpu_memory(gpu: &GpuConfig, sample: &Sample) -> MemoryInfo {
    let total = gpu.card.memory.total.bytes();
    let reserved = gpu.card.memory.reserved.bytes();
    MemoryInfo {
        total,
        reserved,
        used: sample.memory_used,
        free: total - reserved - sample.memory_used,
    }
}

/// Memory of a MIG device: its GPU instance's memory, `used` what the
/// processes in the GPU instance hold.
pub fn mig_memory(profile: &GiProfileSpec, gpu: &GpuState, gi: u32) -> MemoryInfo {
    let total = profile.memory.bytes();
    let used = process::process_memory(gpu, Some(gi)).min(total);
    MemoryInfo {
        total,
        reserved: 0,
        used,
        free: total - used,
    }
}

/// The memory of a GPU-instance profile in MiB, as NVML's `memorySizeMB`.
pub fn profile_memory_mib(profile: &GiProfileSpec) -> u64 {
    profile.memory.bytes() / MIB
}

/// `MIG-<uuid>` of the MIG device behind a compute instance; the same in
/// every process, and different for a re-created instance of another shape.
pub fn mig_device_uuid(gpu_uuid: &str, gi: &GiState, ci: &CiState) -> String {
    let parts = [
        gi.id.to_string(),
        gi.profile_id.to_string(),
        gi.start.to_string(),
        ci.id.to_string(),
        ci.profile_id.to_string(),
        ci.start.to_string(),
    ];
    let mut all: Vec<&str> = vec![gpu_uuid, "mig-device"];
    all.extend(parts.iter().map(String::as_str));
    format!("MIG-{}", uuid_body(digest128(&all)))
}

/// Result of a MIG mode request, as `nvmlDeviceSetMigMode` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The requested mode is already current.
    AlreadyActive,
    /// The mode is pending until the GPU is reset.
    ResetRequired,
}

/// Telemetry values to pin (`None` leaves a value as it is).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryUpdate {
    /// Drop every pinned value first.
    pub clear: bool,
    /// Memory used, bytes.
    pub memory_used: Option<u64>,
    /// GPU utilisation, percent.
    pub gpu_util: Option<u32>,
    /// Memory utilisation, percent.
    pub memory_util: Option<u32>,
    /// Temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power, milliwatts.
    pub power_mw: Option<u32>,
    /// Fan, percent.
    pub fan_percent: Option<u32>,
}

/// A loaded host description and its shared state.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    store: StateStore,
    privileged: bool,
}

fn gpu_index(config: &SimConfig, index: u32) -> Result<usize, SimError> {
    let i = index as usize;
    if i < config.gpus.len() {
        Ok(i)
    } else {
        Err(SimError::NoSuchGpu {
            index,
            count: config.gpus.len(),
        })
    }
}

/// Applies a reset to one GPU: the pending MIG mode becomes current and every
/// GPU and compute instance is gone.
fn reset_gpu_state(gpu: &mut GpuState) {
    gpu.mig_current = gpu.mig_pending;
    gpu.gpu_instances.clear();
    // A reset ends every context on the GPU.
    gpu.processes.clear();
    gpu.mps_server = None;
}

/// Whether the caller counts as privileged: `NVML_SIM_CALLER` when set,
/// else whether the effective uid is root, as the real library decides.
fn caller_privileged(value: Option<std::ffi::OsString>) -> Result<bool, SimError> {
    match value.as_deref().and_then(|v| v.to_str()) {
        None | Some("") => Ok(nix::unistd::geteuid().is_root()),
        Some("root") => Ok(true),
        Some("user") => Ok(false),
        Some(other) => Err(SimError::Invalid(format!(
            "{ENV_CALLER}={other}: use `root` or `user`"
        ))),
    }
}

impl Simulator {
    /// Opens the host description at `config_path` with the state file at
    /// `state_path` (or the default one derived from the config path).
    pub fn open(config_path: &Path, state_path: Option<PathBuf>) -> Result<Self, SimError> {
        let config = SimConfig::load(config_path)?;
        let state_path = state_path.unwrap_or_else(|| default_state_path(&config.path));
        Ok(Self {
            config,
            store: StateStore::new(state_path),
            privileged: caller_privileged(std::env::var_os(ENV_CALLER))?,
        })
    }

    /// Whether NVML answers this process as a privileged caller (see
    /// [`ENV_CALLER`]): on a MIG-enabled GPU only a privileged caller sees
    /// the parent device's per-process memory.
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Opens the simulator named by `NVML_SIM_CONFIG` / `NVML_SIM_STATE`.
    pub fn from_env() -> Result<Self, SimError> {
        let config = std::env::var_os(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .ok_or(SimError::NoConfig)?;
        let state = std::env::var_os(ENV_STATE)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::open(Path::new(&config), state)
    }

    /// The host description.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Path of the shared state file.
    pub fn state_path(&self) -> &Path {
        self.store.path()
    }

    /// The configuration and the freshest state, borrowed together.
    pub fn snapshot(&mut self) -> Result<(&SimConfig, &SimState), SimError> {
        let state = self.store.read(&self.config)?;
        Ok((&self.config, state))
    }

    /// Changes the shared state under the exclusive lock.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&SimConfig, &mut SimState) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let config = &self.config;
        self.store.update(config, |state| change(config, state))
    }

    /// Changes one GPU's state, refusing lost GPUs.
    pub fn update_gpu<T>(
        &mut self,
        index: u32,
        change: impl FnOnce(&GpuConfig, &mut GpuState) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        self.update(|config, state| {
            let i = gpu_index(config, index)?;
            let gpu = &mut state.gpus[i];
            if gpu.lost {
                return Err(SimError::Lost(index));
            }
            change(&config.gpus[i], gpu)
        })
    }

    /// Sets the pending MIG mode; it becomes current at the next reset.
    pub fn set_mig_mode(&mut self, index: u32, enabled: bool) -> Result<Activation, SimError> {
        self.update_gpu(index, |cfg, gpu| {
            if cfg.mig().is_none() {
                return Err(SimError::Mig {
                    gpu: index,
                    reason: MigError::NotCapable,
                });
            }
            gpu.mig_pending = enabled;
            Ok(if gpu.mig_current == enabled {
                Activation::AlreadyActive
            } else {
                Activation::ResetRequired
            })
        })
    }

    /// Creates a GPU instance (and, if `with_ci`, a compute instance spanning
    /// it, like `nvidia-smi mig -cgi … -C`). Returns the GPU-instance id.
    pub fn create_gpu_instance(
        &mut self,
        index: u32,
        profile_id: u32,
        placement: Option<Placement>,
        with_ci: bool,
    ) -> Result<u32, SimError> {
        self.update_gpu(index, |cfg, gpu| {
            let mig_err = |reason| SimError::Mig { gpu: index, reason };
            let spec = mig::require_enabled(cfg.mig(), gpu).map_err(mig_err)?;
            let gi = mig::create_gpu_instance(spec, gpu, profile_id, placement).map_err(mig_err)?;
            if with_ci {
                let profile = spec
                    .gi_profile_by_id(profile_id)
                    .ok_or(mig_err(MigError::UnknownProfile))?;
                let full =
                    mig::full_ci_profile(spec, profile).ok_or(mig_err(MigError::UnknownProfile))?;
                mig::create_compute_instance(spec, gpu, gi, full.id, None).map_err(mig_err)?;
            }
            Ok(gi)
        })
    }

    /// Creates a compute instance in a GPU instance; returns its id.
    pub fn create_compute_instance(
        &mut self,
        index: u32,
        gi_id: u32,
        ci_profile_id: u32,
    ) -> Result<u32, SimError> {
        self.update_gpu(index, |cfg, gpu| {
            let mig_err = |reason| SimError::Mig { gpu: index, reason };
            let spec = mig::require_enabled(cfg.mig(), gpu).map_err(mig_err)?;
            mig::create_compute_instance(spec, gpu, gi_id, ci_profile_id, None).map_err(mig_err)
        })
    }

    /// Destroys a GPU instance; with `with_cis`, its compute instances first.
    pub fn destroy_gpu_instance(
        &mut self,
        index: u32,
        gi_id: u32,
        with_cis: bool,
    ) -> Result<(), SimError> {
        self.update_gpu(index, |cfg, gpu| {
            let mig_err = |reason| SimError::Mig { gpu: index, reason };
            mig::require_enabled(cfg.mig(), gpu).map_err(mig_err)?;
            if with_cis {
                if gpu.processes.iter().any(|p| p.gpu_instance == Some(gi_id)) {
                    return Err(mig_err(MigError::ProcessesRunning));
                }
                if let Some(gi) = gpu.gpu_instances.iter_mut().find(|gi| gi.id == gi_id) {
                    gi.compute_instances.clear();
                }
            }
            mig::destroy_gpu_instance(gpu, gi_id).map_err(mig_err)
        })
    }

    /// Destroys a compute instance.
    pub fn destroy_compute_instance(
        &mut self,
        index: u32,
        gi_id: u32,
        ci_id: u32,
    ) -> Result<(), SimError> {
        self.update_gpu(index, |cfg, gpu| {
            let mig_err = |reason| SimError::Mig { gpu: index, reason };
            mig::require_enabled(cfg.mig(), gpu).map_err(mig_err)?;
            mig::destroy_compute_instance(gpu, gi_id, ci_id).map_err(mig_err)
        })
    }

    /// Resets one GPU (`nvidia-smi --gpu-reset`): the pending MIG mode is
    /// applied and the GPU-instance layout is lost.
    pub fn reset_gpu(&mut self, index: u32) -> Result<(), SimError> {
        self.update_gpu(index, |_, gpu| {
            reset_gpu_state(gpu);
            Ok(())
        })
    }

    /// Reboots the host: every GPU is reset and back on the bus. On GPUs
    /// whose MIG mode does not survive a reboot (Hopper and later) the mode
    /// itself is lost too; on Ampere the pending mode is applied.
    pub fn reboot(&mut self) -> Result<(), SimError> {
        self.update(|config, state| {
            for (cfg, gpu) in config.gpus.iter().zip(state.gpus.iter_mut()) {
                gpu.lost = false;
                reset_gpu_state(gpu);
                let survives = cfg.mig().is_some_and(|m| m.mode_survives_reboot);
                if !survives {
                    gpu.mig_current = false;
                    gpu.mig_pending = false;
                }
            }
            Ok(())
        })
    }

    /// Pins telemetry values.
    pub fn set_telemetry(&mut self, index: u32, update: &TelemetryUpdate) -> Result<(), SimError> {
        if update.gpu_util.is_some_and(|v| v > 100)
            || update.memory_util.is_some_and(|v| v > 100)
            || update.fan_percent.is_some_and(|v| v > 100)
        {
            return Err(SimError::Invalid("percentages must be 0..=100".into()));
        }
        self.update(|config, state| {
            let i = gpu_index(config, index)?;
            let card = &config.gpus[i].card;
            if let Some(used) = update.memory_used {
                let usable = card.memory.total.bytes() - card.memory.reserved.bytes();
                if used > usable {
                    return Err(SimError::Invalid(format!(
                        "GPU {index}: memory used {used} exceeds the usable {usable} bytes"
                    )));
                }
            }
            let o = &mut state.gpus[i].overrides;
            if update.clear {
                *o = Overrides::default();
            }
            let merge = |slot: &mut Option<u32>, value: Option<u32>| {
                if value.is_some() {
                    *slot = value;
                }
            };
            if update.memory_used.is_some() {
                o.memory_used = update.memory_used;
            }
            merge(&mut o.gpu_util, update.gpu_util);
            merge(&mut o.memory_util, update.memory_util);
            merge(&mut o.temperature_c, update.temperature_c);
            merge(&mut o.power_mw, update.power_mw);
            merge(&mut o.fan_percent, update.fan_percent);
            Ok(())
        })
    }

    /// Marks a GPU as fallen off the bus: every call on it returns
    /// `NVML_ERROR_GPU_IS_LOST`.
    pub fn lose(&mut self, index: u32) -> Result<(), SimError> {
        self.update(|config, state| {
            let i = gpu_index(config, index)?;
            state.gpus[i].lost = true;
            Ok(())
        })
    }

    /// Brings a lost GPU back. A GPU that comes back has been reset, so its
    /// layout is gone unless `keep_layout` asks to skip that.
    pub fn restore(&mut self, index: u32, keep_layout: bool) -> Result<(), SimError> {
        self.update(|config, state| {
            let i = gpu_index(config, index)?;
            let gpu = &mut state.gpus[i];
            gpu.lost = false;
            if !keep_layout {
                reset_gpu_state(gpu);
            }
            Ok(())
        })
    }

    /// Starts a process's context on a GPU (`nvml-simctl process add`).
    pub fn add_process(&mut self, index: u32, new: &NewProcess) -> Result<(), SimError> {
        let now = micros(SystemTime::now());
        self.update_gpu(index, |cfg, gpu| {
            process::add(cfg, gpu, new, now)
                .map_err(|reason| SimError::Process { gpu: index, reason })
        })
    }

    /// Ends a process's contexts on every GPU, or on one; returns the GPUs
    /// it left. Ending an MPS server ends its clients too.
    pub fn remove_process(&mut self, pid: u32, only: Option<u32>) -> Result<Vec<u32>, SimError> {
        self.update(|config, state| {
            if let Some(index) = only {
                gpu_index(config, index)?;
            }
            let left: Vec<u32> = state
                .gpus
                .iter_mut()
                .zip(0u32..)
                .filter(|(_, i)| only.is_none_or(|o| o == *i))
                .filter_map(|(gpu, i)| process::remove(gpu, pid).then_some(i))
                .collect();
            if left.is_empty() {
                return Err(SimError::NoSuchProcess(pid));
            }
            Ok(left)
        })
    }

    /// Every process of one GPU, its MPS server first.
    pub fn processes(&mut self, index: u32) -> Result<Vec<ProcessStatus>, SimError> {
        let (config, state) = self.snapshot()?;
        let i = gpu_index(config, index)?;
        Ok(process::statuses(&state.gpus[i]))
    }

    /// A fatal fault in the GPU's MPS server (`nvml-simctl mps fault`).
    pub fn mps_fault(&mut self, index: u32) -> Result<(), SimError> {
        self.update_gpu(index, |_, gpu| {
            process::fault(gpu).map_err(|reason| SimError::Process { gpu: index, reason })
        })
    }

    /// `terminate_client <server> <client>` on the GPU the server runs on.
    pub fn terminate_mps_client(&mut self, server: u32, client: u32) -> Result<u32, SimError> {
        self.update(|_, state| {
            let (gpu, index) = state
                .gpus
                .iter_mut()
                .zip(0u32..)
                .find(|(g, _)| g.mps_server.as_ref().is_some_and(|s| s.pid == server))
                .ok_or(SimError::NoSuchProcess(server))?;
            process::terminate_client(gpu, server, client)
                .map_err(|reason| SimError::Process { gpu: index, reason })?;
            Ok(index)
        })
    }

    /// The GPU's MPS server, if one runs.
    pub fn mps_status(&mut self, index: u32) -> Result<Option<MpsStatus>, SimError> {
        let (config, state) = self.snapshot()?;
        let i = gpu_index(config, index)?;
        Ok(process::mps_status(&state.gpus[i]))
    }

    /// What `nvml-simctl status` prints.
    pub fn status(&mut self, now: SystemTime) -> Result<Status, SimError> {
        let state_path = self.state_path().display().to_string();
        let (config, state) = self.snapshot()?;
        let gpus = config
            .gpus
            .iter()
            .zip(&state.gpus)
            .map(|(cfg, gpu)| gpu_status(cfg, gpu, now))
            .collect();
        Ok(Status {
            config: config.path.display().to_string(),
            state: state_path,
            host: config.host_name.clone(),
            driver_version: config.driver_version.clone(),
            cuda_driver_version: config.cuda_driver_version,
            gpus,
        })
    }
}

fn mode_name(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn gpu_status(cfg: &GpuConfig, gpu: &GpuState, now: SystemTime) -> GpuStatus {
    let sample = telemetry::sample_state(cfg, gpu, now);
    let mig = cfg.mig().map(|spec| {
        let devices = mig::mig_devices(gpu);
        MigStatus {
            current: mode_name(gpu.mig_current),
            pending: mode_name(gpu.mig_pending),
            gpu_instances: gpu
                .gpu_instances
                .iter()
                .map(|gi| {
                    let profile = spec.gi_profile_by_id(gi.profile_id);
                    GiStatus {
                        id: gi.id,
                        profile_id: gi.profile_id,
                        profile: profile.map(|p| p.name.clone()).unwrap_or_default(),
                        placement: PlacementStatus {
                            start: gi.start,
                            size: gi.size,
                        },
                        memory: profile.map_or(0, |p| p.memory.bytes()),
                        compute_instances: gi
                            .compute_instances
                            .iter()
                            .map(|ci| CiStatus {
                                id: ci.id,
                                profile_id: ci.profile_id,
                                profile: profile
                                    .and_then(|p| mig::ci_profile_by_id(spec, p, ci.profile_id))
                                    .map(|v| v.name)
                                    .unwrap_or_default(),
                                placement: PlacementStatus {
                                    start: ci.start,
                                    size: ci.size,
                                },
                                mig_index: devices
                                    .iter()
                                    .position(|&d| d == (gi.id, ci.id))
                                    .unwrap_or(0) as u32,
                                mig_uuid: mig_device_uuid(&cfg.uuid, gi, ci),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    });
    GpuStatus {
        index: cfg.index,
        uuid: cfg.uuid.clone(),
        name: cfg.card.name.clone(),
        pci_bus_id: cfg.pci.bus_id(),
        lost: gpu.lost,
        memory: gpu_memory(cfg, &sample),
        telemetry: sample,
        overrides: gpu.overrides.clone(),
        mig,
        processes: process::statuses(gpu),
        mps: process::mps_status(gpu),
    }
}

/// `nvml-simctl status` output.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Absolute host-description path.
    pub config: String,
    /// State-file path.
    pub state: String,
    /// Host name.
    pub host: String,
    /// Driver version.
    pub driver_version: String,
    /// CUDA driver version (e.g. 12080).
    pub cuda_driver_version: i32,
    /// GPUs in index order.
    pub gpus: Vec<GpuStatus>,
}

/// One GPU in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct GpuStatus {
    /// NVML index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// Whether the GPU is lost.
    pub lost: bool,
    /// Memory.
    pub memory: MemoryInfo,
    /// Telemetry now.
    pub telemetry: Sample,
    /// Pinned telemetry values.
    pub overrides: Overrides,
    /// MIG state; absent on GPUs without MIG.
    pub mig: Option<MigStatus>,
    /// Processes, the MPS server first.
    pub processes: Vec<ProcessStatus>,
    /// The MPS server; null when none runs.
    pub mps: Option<MpsStatus>,
}

/// MIG part of [`GpuStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct MigStatus {
    /// `enabled` / `disabled`.
    pub current: &'static str,
    /// `enabled` / `disabled`.
    pub pending: &'static str,
    /// GPU instances.
    pub gpu_instances: Vec<GiStatus>,
}

/// A placement in [`Status`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PlacementStatus {
    /// First slice.
    pub start: u32,
    /// Slices.
    pub size: u32,
}

/// A GPU instance in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct GiStatus {
    /// GPU-instance id.
    pub id: u32,
    /// Profile id.
    pub profile_id: u32,
    /// Profile name (`3g.20gb`).
    pub profile: String,
    /// Memory-slice placement.
    pub placement: PlacementStatus,
    /// Memory, bytes.
    pub memory: u64,
    /// Compute instances.
    pub compute_instances: Vec<CiStatus>,
}

/// A compute instance in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct CiStatus {
    /// Compute-instance id.
    pub id: u32,
    /// Profile id.
    pub profile_id: u32,
    /// Profile name (`1c.3g.20gb`, or `3g.20gb` when it spans the GI).
    pub profile: String,
    /// Compute-slice placement inside the GPU instance.
    pub placement: PlacementStatus,
    /// Index for `nvmlDeviceGetMigDeviceHandleByIndex`.
    pub mig_index: u32,
    /// `MIG-<uuid>` of the MIG device.
    pub mig_uuid: String,
}
