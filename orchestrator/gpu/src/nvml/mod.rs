//! [`NvmlBackend`]: the GPU adapter over NVIDIA's NVML, loaded at run time.
//!
//! It owns library resolution (explicit path, `ORCH_NVML_LIBRARY`, the
//! system's `libnvidia-ml.so.1`), the translation of NVML answers into the
//! core's inventory model, the MIG create/destroy/mode sequences, and who
//! uses each GPU ([`processes`]). `nvml-wrapper` makes the calls it wraps
//! (the process lists and process utilisation among them); the GPU- and
//! compute-instance calls it does not wrap go through [`raw`].

mod processes;
mod raw;

use std::collections::BTreeMap;
use std::ffi::{CStr, OsString, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::{
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT, NVML_DEVICE_MIG_ENABLE, NVML_GPU_INSTANCE_PROFILE_COUNT,
    nvmlDevice_t, nvmlGpuInstance_t,
};
use orch_core::gpu::{GiProfile, GpuInfo, MigInstance, MigState};
use orch_core::units::ByteSize;

use self::raw::{Failure, Placement, Raw};
use crate::backend::{
    CreatedInstance, GpuBackend, GpuProcess, MigModeChange, ProcessUtilization, Telemetry,
};
use crate::error::{GpuError, code};

/// Environment variable naming the NVML library to load.
pub const LIBRARY_ENV: &str = "ORCH_NVML_LIBRARY";
/// What the dynamic loader is asked for when nothing else is configured.
pub const SYSTEM_LIBRARY: &str = "libnvidia-ml.so.1";

/// Where the NVML library path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    /// Passed to [`NvmlBackend::open`] (from the daemon's configuration).
    Explicit,
    /// `ORCH_NVML_LIBRARY`.
    Environment,
    /// The system's `libnvidia-ml.so.1`, found by the dynamic loader.
    System,
}

/// The library to load: `explicit`, else `ORCH_NVML_LIBRARY`, else the
/// system's `libnvidia-ml.so.1` (a bare name: the dynamic loader searches
/// `LD_LIBRARY_PATH`, its cache and the default directories).
pub fn resolve_library(explicit: Option<&Path>) -> (PathBuf, LibrarySource) {
    resolve_library_from(explicit, std::env::var_os(LIBRARY_ENV))
}

fn resolve_library_from(
    explicit: Option<&Path>,
    env: Option<OsString>,
) -> (PathBuf, LibrarySource) {
    if let Some(path) = explicit {
        return (path.to_path_buf(), LibrarySource::Explicit);
    }
    match env {
        Some(value) if !value.is_empty() => (PathBuf::from(value), LibrarySource::Environment),
        _ => (PathBuf::from(SYSTEM_LIBRARY), LibrarySource::System),
    }
}

/// The GPU adapter over NVML.
#[derive(Debug)]
pub struct NvmlBackend {
    nvml: Nvml,
    /// The file the loader opened (the resolved path when a bare name was asked for).
    library: PathBuf,
    source: LibrarySource,
    /// Serialises MIG changes made through this backend: each is a sequence
    /// of NVML calls (create GI, create CI, find its MIG device) and two
    /// interleaved sequences could pick up each other's MIG device.
    changes: Mutex<()>,
    /// UUID and name last seen per index, so a GPU that is lost later is
    /// still reported under its identity.
    known: Mutex<BTreeMap<u32, (String, String)>>,
}

impl NvmlBackend {
    /// Loads and initialises NVML from `library`, else `ORCH_NVML_LIBRARY`,
    /// else the system's `libnvidia-ml.so.1`.
    pub fn open(library: Option<&Path>) -> Result<Self, GpuError> {
        let (requested, source) = resolve_library(library);
        let nvml = Nvml::builder()
            .lib_path(requested.as_os_str())
            .init()
            .map_err(|e| init_error(&requested, e))?;
        if nvml.lib().nvmlShutdown.is_err() {
            // `Nvml`'s Drop calls nvmlShutdown through a helper that panics on
            // a missing symbol: never drop this one.
            std::mem::forget(nvml);
            return Err(GpuError::Init {
                path: requested,
                reason: "the library has no nvmlShutdown; it is not a complete NVML".into(),
            });
        }
        let library = loaded_file(&nvml).unwrap_or_else(|| requested.clone());
        tracing::info!(
            library = %library.display(),
            source = ?source,
            driver = nvml.sys_driver_version().ok().as_deref().unwrap_or("unknown"),
            "NVML loaded"
        );
        Ok(NvmlBackend {
            nvml,
            library,
            source,
            changes: Mutex::new(()),
            known: Mutex::new(BTreeMap::new()),
        })
    }

    /// Where the library path came from.
    pub fn library_source(&self) -> LibrarySource {
        self.source
    }

    fn raw(&self) -> Raw<'_> {
        Raw::new(self.nvml.lib())
    }

    fn lock_changes(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn device(&self, index: u32) -> Result<Device<'_>, GpuError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| into_error(None, Failure::wrapped("nvmlDeviceGetCount", e)))?;
        if index >= count {
            return Err(GpuError::NoSuchGpu { index, count });
        }
        self.nvml.device_by_index(index).map_err(|e| {
            into_error(
                Some(index),
                Failure::wrapped("nvmlDeviceGetHandleByIndex", e),
            )
        })
    }

    /// One GPU's inventory entry; a lost GPU surfaces as a GPU_IS_LOST failure.
    fn gpu_info(&self, index: u32) -> Result<GpuInfo, Failure> {
        let dev = self
            .nvml
            .device_by_index(index)
            .map_err(|e| Failure::wrapped("nvmlDeviceGetHandleByIndex", e))?;
        let uuid = dev
            .uuid()
            .map_err(|e| Failure::wrapped("nvmlDeviceGetUUID", e))?;
        let name = dev
            .name()
            .map_err(|e| Failure::wrapped("nvmlDeviceGetName", e))?;
        self.remember(index, &uuid, &name);
        let memory_total = dev
            .memory_info()
            .map_err(|e| Failure::wrapped("nvmlDeviceGetMemoryInfo_v2", e))?
            .total;
        let mig = match dev.mig_mode() {
            Ok(mode) if mode.current == NVML_DEVICE_MIG_ENABLE => {
                self.mig_layout(&dev, mode.pending != NVML_DEVICE_MIG_ENABLE, memory_total)?
            }
            Ok(mode) => MigState::Disabled {
                pending_enable: mode.pending == NVML_DEVICE_MIG_ENABLE,
            },
            Err(e) => {
                let f = Failure::wrapped("nvmlDeviceGetMigMode", e);
                if f.is_unsupported() {
                    MigState::Unsupported
                } else {
                    return Err(f);
                }
            }
        };
        Ok(GpuInfo {
            index,
            uuid,
            name,
            memory_total: ByteSize(memory_total),
            mig,
            lost: false,
            reserved: None,
        })
    }

    fn remember(&self, index: u32, uuid: &str, name: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(index, (uuid.to_owned(), name.to_owned()));
    }

    fn lost_entry(&self, index: u32) -> GpuInfo {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let (uuid, name) = known.get(&index).cloned().unwrap_or_default();
        GpuInfo {
            index,
            uuid,
            name,
            memory_total: ByteSize(0),
            mig: MigState::Unsupported,
            lost: true,
            reserved: None,
        }
    }

    /// Profiles, slice totals and instances of a GPU whose MIG mode is on.
    fn mig_layout(
        &self,
        dev: &Device<'_>,
        pending_disable: bool,
        memory_total: u64,
    ) -> Result<MigState, Failure> {
        let raw = self.raw();
        // SAFETY: the handle stays with the library it came from.
        let handle = unsafe { dev.handle() };
        let profiles = self.gi_profiles(handle, memory_total)?;
        let memory_slices = profiles
            .iter()
            .flat_map(|(_, p)| {
                p.placements
                    .iter()
                    .map(|s| u32::from(*s) + u32::from(p.memory_slices))
            })
            .max()
            .unwrap_or(0);
        let compute_slices = profiles
            .iter()
            .map(|(_, p)| p.compute_slices)
            .max()
            .unwrap_or(0);
        let devices = self.mig_devices(dev)?;
        let mut instances = Vec::new();
        for (capacity, profile) in &profiles {
            for gi in raw.gpu_instances(handle, profile.id, *capacity)? {
                let info = raw.gi_info(gi)?;
                let ci_id = self.compute_instance_ids(gi)?.first().copied();
                let device_uuid = ci_id.and_then(|ci| devices.get(&(info.id, ci)).cloned());
                instances.push(MigInstance {
                    gi_id: info.id,
                    profile_id: info.profile_id,
                    placement_start: small(info.start),
                    placement_size: small(info.size),
                    ci_id,
                    device_uuid,
                    owned: false,
                });
            }
        }
        instances.sort_by_key(|i| i.gi_id);
        Ok(MigState::Enabled {
            pending_disable,
            memory_slices: small(memory_slices),
            compute_slices,
            profiles: profiles.into_iter().map(|(_, p)| p).collect(),
            instances,
        })
    }

    /// The GPU-instance profiles the GPU offers, by iterating profile
    /// *indexes* (the ids they report are what every other call takes),
    /// with each profile's instance count for sizing list buffers.
    fn gi_profiles(
        &self,
        handle: nvmlDevice_t,
        memory_total: u64,
    ) -> Result<Vec<(u32, GiProfile)>, Failure> {
        let raw = self.raw();
        let mut profiles: Vec<(u32, GiProfile)> = Vec::new();
        for index in 0..NVML_GPU_INSTANCE_PROFILE_COUNT {
            let p = match raw.gi_profile(handle, index) {
                Ok(p) => p,
                // Indexes this GPU (or this driver) does not have.
                Err(f) if f.is(code::NOT_SUPPORTED) || f.is(code::INVALID_ARGUMENT) => continue,
                Err(f) => return Err(f),
            };
            if profiles.iter().any(|(_, q)| q.id == p.id) {
                continue;
            }
            let placements = match raw.placements(handle, p.id) {
                Ok(list) => list,
                Err(f) if f.is_unsupported() => Vec::new(),
                Err(f) => return Err(f),
            };
            let memory_slices = placements.first().map_or(0, |pl| small(pl.size));
            profiles.push((
                p.instances,
                GiProfile {
                    id: p.id,
                    name: p.name(index, memory_total),
                    compute_slices: small(p.slices),
                    memory_slices,
                    memory: ByteSize::mib(p.memory_mib),
                    max_instances: small(p.instances),
                    placements: placements.iter().map(|pl| small(pl.start)).collect(),
                },
            ));
        }
        Ok(profiles)
    }

    /// Ids of the compute instances inside a GPU instance, lowest first.
    fn compute_instance_ids(&self, gi: nvmlGpuInstance_t) -> Result<Vec<u32>, Failure> {
        let raw = self.raw();
        let mut ids = Vec::new();
        for (_, ci) in self.compute_instances(gi)? {
            ids.push(raw.ci_id(ci)?);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every compute instance inside a GPU instance, with its profile id.
    fn compute_instances(
        &self,
        gi: nvmlGpuInstance_t,
    ) -> Result<Vec<(u32, nvml_wrapper_sys::bindings::nvmlComputeInstance_t)>, Failure> {
        let raw = self.raw();
        let mut out = Vec::new();
        for profile in self.ci_profiles(gi)? {
            for ci in raw.compute_instances(gi, profile.id, profile.instances)? {
                out.push((profile.id, ci));
            }
        }
        Ok(out)
    }

    /// The compute-instance profiles a GPU instance offers.
    fn ci_profiles(&self, gi: nvmlGpuInstance_t) -> Result<Vec<raw::CiProfileRaw>, Failure> {
        let raw = self.raw();
        let mut out: Vec<raw::CiProfileRaw> = Vec::new();
        for index in 0..NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            match raw.ci_profile(gi, index) {
                Ok(p) if !out.iter().any(|q| q.id == p.id) => out.push(p),
                Ok(_) => {}
                Err(f) if f.is(code::NOT_SUPPORTED) || f.is(code::INVALID_ARGUMENT) => {}
                Err(f) => return Err(f),
            }
        }
        Ok(out)
    }

    /// MIG device UUIDs by (GPU-instance id, compute-instance id).
    fn mig_devices(&self, dev: &Device<'_>) -> Result<BTreeMap<(u32, u32), String>, Failure> {
        let raw = self.raw();
        let max = match dev.mig_device_count() {
            Ok(max) => max,
            Err(e) => {
                let f = Failure::wrapped("nvmlDeviceGetMaxMigDeviceCount", e);
                if f.is_unsupported() {
                    // No MIG device handles to read: instances are still
                    // listed, without their MIG UUIDs.
                    return Ok(BTreeMap::new());
                }
                return Err(f);
            }
        };
        let mut out = BTreeMap::new();
        for index in 0..max {
            let mig = match dev.mig_device_by_index(index) {
                Ok(mig) => mig,
                // No MIG device at this index; later ones may still exist.
                Err(NvmlError::NotFound) => continue,
                Err(NvmlError::InvalidArg) => break,
                Err(e) => return Err(Failure::wrapped("nvmlDeviceGetMigDeviceHandleByIndex", e)),
            };
            // SAFETY: the handle stays with the library it came from.
            let ids = raw.mig_ids(unsafe { mig.handle() })?;
            let uuid = mig
                .uuid()
                .map_err(|e| Failure::wrapped("nvmlDeviceGetUUID", e))?;
            out.insert(ids, uuid);
        }
        Ok(out)
    }

    /// Compute instance and MIG device for a fresh GPU instance.
    fn finish_instance(
        &self,
        gpu: u32,
        dev: &Device<'_>,
        gi: nvmlGpuInstance_t,
        gi_id: u32,
        slices: u32,
    ) -> Result<(u32, String), GpuError> {
        let raw = self.raw();
        let fail = |f: Failure| into_error(Some(gpu), f);
        let profile = self
            .ci_profiles(gi)
            .map_err(fail)?
            .into_iter()
            .find(|p| p.slices == slices)
            .ok_or_else(|| GpuError::NotSupported {
                gpu,
                what: format!("a compute instance spanning a {slices}-slice GPU instance"),
            })?;
        let ci = raw.create_ci(gi, profile.id).map_err(fail)?;
        let ci_id = raw.ci_id(ci).map_err(fail)?;
        let uuid = self
            .mig_devices(dev)
            .map_err(fail)?
            .remove(&(gi_id, ci_id))
            .ok_or_else(|| GpuError::Nvml {
                gpu: Some(gpu),
                call: "nvmlDeviceGetMigDeviceHandleByIndex",
                code: code::NOT_FOUND,
                message: format!(
                    "no MIG device for GPU instance {gi_id}, compute instance {ci_id}"
                ),
            })?;
        Ok((ci_id, uuid))
    }

    /// Destroys a GPU instance and everything in it. Used to undo a half
    /// made instance and by `destroy_instance`.
    fn teardown(&self, gpu: u32, gi: nvmlGpuInstance_t, gi_id: u32) -> Result<(), GpuError> {
        let raw = self.raw();
        let fail = |f: Failure| into_error(Some(gpu), f);
        for (_, ci) in self.compute_instances(gi).map_err(fail)? {
            let ci_id = raw.ci_id(ci).ok();
            raw.destroy_ci(ci).map_err(|f| {
                if f.is(code::IN_USE) {
                    GpuError::InUse {
                        gpu,
                        what: match ci_id {
                            Some(id) => format!("compute instance {id} of GPU instance {gi_id}"),
                            None => format!("a compute instance of GPU instance {gi_id}"),
                        },
                    }
                } else {
                    fail(f)
                }
            })?;
        }
        raw.destroy_gi(gi).map_err(|f| {
            if f.is(code::IN_USE) {
                GpuError::InUse {
                    gpu,
                    what: format!("GPU instance {gi_id}"),
                }
            } else {
                fail(f)
            }
        })
    }

    /// The profile with this id, its name and its placements.
    fn profile_by_id(
        &self,
        gpu: u32,
        handle: nvmlDevice_t,
        profile_id: u32,
        memory_total: u64,
    ) -> Result<(raw::GiProfileRaw, String, Vec<Placement>), GpuError> {
        let raw = self.raw();
        let fail = |f: Failure| into_error(Some(gpu), f);
        for index in 0..NVML_GPU_INSTANCE_PROFILE_COUNT {
            match raw.gi_profile(handle, index) {
                Ok(p) if p.id == profile_id => {
                    let name = p.name(index, memory_total);
                    let placements = raw.placements(handle, profile_id).map_err(fail)?;
                    return Ok((p, name, placements));
                }
                Ok(_) => {}
                Err(f) if f.is(code::NOT_SUPPORTED) || f.is(code::INVALID_ARGUMENT) => {}
                Err(f) => return Err(fail(f)),
            }
        }
        Err(GpuError::unknown_profile(gpu, profile_id))
    }

    /// Fails unless MIG mode is current on the GPU.
    fn require_mig(&self, gpu: u32, dev: &Device<'_>) -> Result<(), GpuError> {
        match dev.mig_mode() {
            Ok(mode) if mode.current == NVML_DEVICE_MIG_ENABLE => Ok(()),
            Ok(mode) => Err(GpuError::mig_not_current(
                gpu,
                mode.pending == NVML_DEVICE_MIG_ENABLE,
            )),
            Err(e) => {
                let f = Failure::wrapped("nvmlDeviceGetMigMode", e);
                if f.is_unsupported() {
                    Err(GpuError::mig_unsupported(gpu))
                } else {
                    Err(into_error(Some(gpu), f))
                }
            }
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn processes(&self, gpu_index: u32) -> Result<Vec<GpuProcess>, GpuError> {
        self.read_processes(gpu_index)
    }

    fn instance_processes(
        &self,
        gpu_index: u32,
        gi_id: u32,
        ci_id: u32,
    ) -> Result<Vec<GpuProcess>, GpuError> {
        self.read_instance_processes(gpu_index, gi_id, ci_id)
    }

    fn process_utilization(
        &self,
        gpu_index: u32,
        since_us: u64,
    ) -> Result<ProcessUtilization, GpuError> {
        self.read_process_utilization(gpu_index, since_us)
    }

    fn inventory(&self) -> Result<Vec<GpuInfo>, GpuError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| into_error(None, Failure::wrapped("nvmlDeviceGetCount", e)))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            match self.gpu_info(index) {
                Ok(info) => gpus.push(info),
                Err(f) if f.is(code::GPU_IS_LOST) => {
                    tracing::warn!(gpu = index, call = f.call, "GPU is lost");
                    gpus.push(self.lost_entry(index));
                }
                Err(f) => return Err(into_error(Some(index), f)),
            }
        }
        Ok(gpus)
    }

    fn telemetry(&self, index: u32) -> Result<Telemetry, GpuError> {
        let dev = self.device(index)?;
        let memory = reading(index, "nvmlDeviceGetMemoryInfo_v2", dev.memory_info())?;
        let util = reading(
            index,
            "nvmlDeviceGetUtilizationRates",
            dev.utilization_rates(),
        )?;
        let temperature = reading(
            index,
            "nvmlDeviceGetTemperature",
            dev.temperature(TemperatureSensor::Gpu),
        )?;
        let power = reading(index, "nvmlDeviceGetPowerUsage", dev.power_usage())?;
        Ok(Telemetry {
            memory_used: memory.map(|m| ByteSize(m.used)),
            gpu_utilization: util.as_ref().map(|u| u.gpu),
            memory_utilization: util.as_ref().map(|u| u.memory),
            temperature_c: temperature,
            power_mw: power,
        })
    }

    fn driver_version(&self) -> Result<String, GpuError> {
        self.nvml
            .sys_driver_version()
            .map_err(|e| into_error(None, Failure::wrapped("nvmlSystemGetDriverVersion", e)))
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
        let _changes = self.lock_changes();
        let gpu = gpu_index;
        let raw = self.raw();
        let fail = |f: Failure| into_error(Some(gpu), f);
        let dev = self.device(gpu)?;
        self.require_mig(gpu, &dev)?;
        let memory_total = dev
            .memory_info()
            .map_err(|e| fail(Failure::wrapped("nvmlDeviceGetMemoryInfo_v2", e)))?
            .total;
        // SAFETY: the handle stays with the library it came from.
        let handle = unsafe { dev.handle() };
        let (profile, name, placements) =
            self.profile_by_id(gpu, handle, profile_id, memory_total)?;
        let Some(placement) = placements
            .iter()
            .copied()
            .find(|p| p.start == u32::from(placement_start))
        else {
            let starts: Vec<u32> = placements.iter().map(|p| p.start).collect();
            return Err(GpuError::bad_placement(
                gpu,
                &name,
                placement_start,
                &starts,
            ));
        };
        let created = all_or_nothing(
            || {
                raw.create_gi(handle, profile_id, placement).map_err(|f| {
                    if f.is(code::INSUFFICIENT_RESOURCES) {
                        GpuError::InsufficientResources {
                            gpu,
                            profile: name.clone(),
                            placement: placement_start,
                        }
                    } else {
                        fail(f)
                    }
                })
            },
            |gi| {
                let gi_id = raw.gi_info(gi).map_err(fail)?.id;
                let (ci_id, device_uuid) =
                    self.finish_instance(gpu, &dev, gi, gi_id, profile.slices)?;
                Ok(CreatedInstance {
                    gi_id,
                    ci_id,
                    device_uuid,
                })
            },
            |gi| {
                let gi_id = raw.gi_info(gi).map(|i| i.id).unwrap_or(u32::MAX);
                self.teardown(gpu, gi, gi_id)
            },
        )?;
        tracing::info!(
            gpu,
            profile = %name,
            placement = placement_start,
            gi_id = created.gi_id,
            ci_id = created.ci_id,
            device_uuid = %created.device_uuid,
            "MIG instance created"
        );
        Ok(created)
    }

    fn destroy_instance(&self, gpu_index: u32, gi_id: u32) -> Result<(), GpuError> {
        let _changes = self.lock_changes();
        let gpu = gpu_index;
        let dev = self.device(gpu)?;
        self.require_mig(gpu, &dev)?;
        // SAFETY: the handle stays with the library it came from.
        let handle = unsafe { dev.handle() };
        let gi = self.raw().gi_by_id(handle, gi_id).map_err(|f| {
            if f.is(code::NOT_FOUND) || f.is(code::INVALID_ARGUMENT) {
                GpuError::NoSuchInstance { gpu, gi_id }
            } else {
                into_error(Some(gpu), f)
            }
        })?;
        self.teardown(gpu, gi, gi_id)?;
        tracing::info!(gpu, gi_id, "MIG instance destroyed");
        Ok(())
    }

    fn set_mig_mode(&self, gpu_index: u32, enable: bool) -> Result<MigModeChange, GpuError> {
        let _changes = self.lock_changes();
        let gpu = gpu_index;
        let dev = self.device(gpu)?;
        let status = dev.set_mig_mode(enable).map_err(|e| {
            let f = Failure::wrapped("nvmlDeviceSetMigMode", e);
            if f.is_unsupported() {
                GpuError::mig_unsupported(gpu)
            } else if f.is(code::IN_USE) {
                GpuError::InUse {
                    gpu,
                    what: "the GPU".to_owned(),
                }
            } else {
                into_error(Some(gpu), f)
            }
        })?;
        let mode = dev
            .mig_mode()
            .map_err(|e| into_error(Some(gpu), Failure::wrapped("nvmlDeviceGetMigMode", e)))?;
        let change = MigModeChange {
            current: mode.current == NVML_DEVICE_MIG_ENABLE,
            pending: mode.pending == NVML_DEVICE_MIG_ENABLE,
            reset_required: mode.current != mode.pending,
        };
        tracing::info!(
            gpu,
            enable,
            activation = %self.raw().error_string(status),
            current = change.current,
            pending = change.pending,
            "MIG mode change requested"
        );
        Ok(change)
    }
}

/// Makes a MIG instance in two steps (the GPU instance, then what goes in
/// it) and undoes the first when the second fails.
///
/// INVARIANT: nothing half made: a GPU instance without its compute
/// instance and MIG device is destroyed before the error is returned. A
/// failed undo is logged; the error returned is the one that made it
/// necessary.
fn all_or_nothing<G: Copy, T>(
    create: impl FnOnce() -> Result<G, GpuError>,
    finish: impl FnOnce(G) -> Result<T, GpuError>,
    undo: impl FnOnce(G) -> Result<(), GpuError>,
) -> Result<T, GpuError> {
    let made = create()?;
    match finish(made) {
        Ok(done) => Ok(done),
        Err(error) => {
            if let Err(undo_error) = undo(made) {
                tracing::error!(%error, %undo_error, "could not destroy a half made MIG instance");
            }
            Err(error)
        }
    }
}

/// A telemetry reading: `None` when the GPU does not offer it.
fn reading<T>(
    gpu: u32,
    call: &'static str,
    result: Result<T, NvmlError>,
) -> Result<Option<T>, GpuError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            let f = Failure::wrapped(call, e);
            if f.is_unsupported() {
                Ok(None)
            } else {
                Err(into_error(Some(gpu), f))
            }
        }
    }
}

/// The operator-facing error for a failed call.
fn into_error(gpu: Option<u32>, f: Failure) -> GpuError {
    match (gpu, f.code) {
        (Some(gpu), Some(code::GPU_IS_LOST)) => GpuError::GpuLost { gpu },
        (Some(gpu), Some(code::NO_PERMISSION)) => GpuError::NoPermission { gpu, call: f.call },
        (Some(gpu), Some(code::NOT_SUPPORTED)) => GpuError::NotSupported {
            gpu,
            what: f.call.to_owned(),
        },
        (Some(gpu), Some(code::IN_USE)) => GpuError::InUse {
            gpu,
            what: format!("the GPU ({})", f.call),
        },
        (gpu, code) => GpuError::Nvml {
            gpu,
            call: f.call,
            code: code.unwrap_or(code::FUNCTION_NOT_FOUND),
            message: f.message,
        },
    }
}

/// Why NVML could not be opened, in the operator's terms.
fn init_error(path: &Path, error: NvmlError) -> GpuError {
    let path = path.to_path_buf();
    match error {
        NvmlError::LibloadingError(e) => GpuError::NoLibrary {
            path,
            reason: e.to_string(),
        },
        NvmlError::FailedToLoadSymbol(e) => GpuError::NoLibrary {
            path,
            reason: format!("not an NVML library ({e})"),
        },
        NvmlError::DriverNotLoaded => GpuError::Init {
            path,
            reason: "the NVIDIA kernel driver is not loaded".into(),
        },
        NvmlError::NoPermission => GpuError::Init {
            path,
            reason: "no permission to talk to the NVIDIA driver".into(),
        },
        NvmlError::LibRmVersionMismatch => GpuError::Init {
            path,
            reason: "the NVML library and the kernel driver differ in version (reboot after a driver upgrade)".into(),
        },
        other => GpuError::Init {
            path,
            reason: other.to_string(),
        },
    }
}

/// The file the dynamic loader opened for NVML: when a bare name was asked
/// for, this is where the search found it.
fn loaded_file(nvml: &Nvml) -> Option<PathBuf> {
    let init = nvml.lib().nvmlInit_v2.as_ref().ok()?;
    let address = *init as *const c_void;
    // SAFETY: all-zero is a valid Dl_info (null pointers, zero addresses).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `address` is a function of a library that stays loaded while
    // `nvml` lives; dladdr only reads the loader's tables and fills `info`.
    let found = unsafe { libc::dladdr(address, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader,
    // valid while the library stays loaded; it is copied at once.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let text = name.to_str().ok()?;
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Slice counts, starts and sizes fit a byte on every GPU NVML knows;
/// saturate rather than wrap if a future one says otherwise.
fn small(value: u32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_resolution_order() {
        let explicit = Path::new("/opt/nvidia/libnvidia-ml.so.1");
        assert_eq!(
            resolve_library_from(Some(explicit), Some("/env/lib.so".into())),
            (explicit.to_path_buf(), LibrarySource::Explicit)
        );
        assert_eq!(
            resolve_library_from(None, Some("/env/lib.so".into())),
            (PathBuf::from("/env/lib.so"), LibrarySource::Environment)
        );
        assert_eq!(
            resolve_library_from(None, Some(OsString::new())),
            (PathBuf::from(SYSTEM_LIBRARY), LibrarySource::System),
            "an empty variable counts as unset"
        );
        assert_eq!(
            resolve_library_from(None, None),
            (PathBuf::from(SYSTEM_LIBRARY), LibrarySource::System)
        );
    }

    #[test]
    fn failures_become_operator_errors() {
        let f = |code| Failure {
            call: "nvmlSomething",
            code: Some(code),
            message: "text".into(),
        };
        assert_eq!(
            into_error(Some(2), f(code::GPU_IS_LOST)),
            GpuError::GpuLost { gpu: 2 }
        );
        assert_eq!(
            into_error(Some(2), f(code::NO_PERMISSION)),
            GpuError::NoPermission {
                gpu: 2,
                call: "nvmlSomething"
            }
        );
        assert_eq!(
            into_error(None, f(code::UNKNOWN)),
            GpuError::Nvml {
                gpu: None,
                call: "nvmlSomething",
                code: code::UNKNOWN,
                message: "text".into()
            }
        );
        let missing = Failure {
            call: "nvmlX",
            code: None,
            message: "gone".into(),
        };
        assert!(matches!(
            into_error(Some(0), missing),
            GpuError::Nvml {
                code: code::FUNCTION_NOT_FOUND,
                ..
            }
        ));
    }

    #[test]
    fn init_errors_say_what_to_do() {
        let e = init_error(Path::new("/x/lib.so"), NvmlError::DriverNotLoaded);
        let text = e.to_string();
        assert!(e.is_no_nvml());
        assert!(text.contains("kernel driver is not loaded"), "{text}");
        assert!(text.contains("GPU groups cannot start"), "{text}");
        assert!(text.contains("CPU-only groups can"), "{text}");
    }

    #[test]
    fn a_failed_second_step_is_undone() {
        use std::cell::RefCell;
        let log = RefCell::new(Vec::new());
        let lost = GpuError::GpuLost { gpu: 0 };
        let result: Result<(), GpuError> = all_or_nothing(
            || {
                log.borrow_mut().push("create gi");
                Ok(7)
            },
            |gi| {
                assert_eq!(gi, 7);
                log.borrow_mut().push("create ci");
                Err(lost.clone())
            },
            |gi| {
                assert_eq!(gi, 7);
                log.borrow_mut().push("destroy gi");
                Ok(())
            },
        );
        assert_eq!(result, Err(lost.clone()));
        assert_eq!(*log.borrow(), ["create gi", "create ci", "destroy gi"]);

        // A failed undo does not hide the error that made it necessary.
        let result: Result<(), GpuError> = all_or_nothing(
            || Ok(1),
            |_| Err(lost.clone()),
            |_| {
                Err(GpuError::InUse {
                    gpu: 0,
                    what: "GPU instance 1".into(),
                })
            },
        );
        assert_eq!(result, Err(lost.clone()));

        // Nothing to undo when the first step fails; nothing undone on success.
        log.borrow_mut().clear();
        let result: Result<u32, GpuError> = all_or_nothing(
            || Err::<u32, _>(lost.clone()),
            |_| {
                log.borrow_mut().push("finish");
                Ok(1)
            },
            |_| {
                log.borrow_mut().push("undo");
                Ok(())
            },
        );
        assert_eq!(result, Err(lost));
        let result = all_or_nothing(
            || Ok(1),
            |g| Ok(g + 1),
            |_| {
                log.borrow_mut().push("undo");
                Ok(())
            },
        );
        assert_eq!(result, Ok(2));
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn unsupported_readings_are_none() {
        assert_eq!(reading(0, "x", Ok::<u32, NvmlError>(5)), Ok(Some(5)));
        assert_eq!(
            reading::<u32>(0, "x", Err(NvmlError::NotSupported)),
            Ok(None)
        );
        assert_eq!(
            reading::<u32>(0, "x", Err(NvmlError::FailedToLoadSymbol("gone".into()))),
            Ok(None),
            "a driver without the call"
        );
        assert_eq!(
            reading::<u32>(3, "x", Err(NvmlError::GpuLost)),
            Err(GpuError::GpuLost { gpu: 3 })
        );
    }

    #[test]
    fn small_saturates() {
        assert_eq!(small(7), 7);
        assert_eq!(small(300), u8::MAX);
    }
}
