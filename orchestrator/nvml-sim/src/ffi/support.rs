//! Plumbing every export shares: the per-process runtime (the `nvmlInit`
//! reference count and the loaded simulator), the panic guard, checked access
//! to caller-supplied pointers, resolution of handles to simulator objects,
//! and the mapping of simulator errors to NVML return codes.

use std::ffi::{CStr, c_char, c_uint};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};

use super::handles::{self, HandleKey};
use super::types::*;
use crate::config::{GiProfileSpec, GpuConfig, MigSpec};
use crate::mig::{self, CiProfileView, MigError};
use crate::sim::{SimError, Simulator};
use crate::state::{CiState, GiState, GpuState};

/// Result of an export's body: the value, or the NVML code to return.
pub type Outcome<T> = Result<T, NvmlReturn>;

#[derive(Debug)]
struct Runtime {
    refcount: u32,
    sim: Option<Simulator>,
}

/// The library's state in this process. Every export holds the lock for the
/// whole call: calls are short, and serialising them keeps one consistent
/// view of the state file per call.
static RUNTIME: Mutex<Runtime> = Mutex::new(Runtime {
    refcount: 0,
    sim: None,
});

/// `nvmlInit*`: the first call loads the host description named by
/// `NVML_SIM_CONFIG`; later calls only count.
pub fn init() -> Outcome<()> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if runtime.refcount == 0 {
        match Simulator::from_env() {
            Ok(sim) => runtime.sim = Some(sim),
            Err(e) => {
                // The only channel to tell an operator why "the driver" is
                // missing; the real library logs to its debug file instead.
                eprintln!("nvml-sim: {e}");
                return Err(ERROR_DRIVER_NOT_LOADED);
            }
        }
    }
    runtime.refcount += 1;
    Ok(())
}

/// `nvmlShutdown`: the last matching call drops the simulator.
pub fn shutdown() -> Outcome<()> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if runtime.refcount == 0 {
        return Err(ERROR_UNINITIALIZED);
    }
    runtime.refcount -= 1;
    if runtime.refcount == 0 {
        runtime.sim = None;
    }
    Ok(())
}

/// Runs `f` with the simulator, or fails with `NVML_ERROR_UNINITIALIZED`.
pub fn with_sim<T>(f: impl FnOnce(&mut Simulator) -> Outcome<T>) -> Outcome<T> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if runtime.refcount == 0 {
        return Err(ERROR_UNINITIALIZED);
    }
    let sim = runtime.sim.as_mut().ok_or(ERROR_UNINITIALIZED)?;
    f(sim)
}

/// Runs an export body; a panic becomes `NVML_ERROR_UNKNOWN` instead of
/// unwinding into C.
pub fn guard(body: impl FnOnce() -> Outcome<()>) -> NvmlReturn {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => ERROR_UNKNOWN,
    }
}

/// The NVML code for a MIG refusal.
pub fn mig_code(e: MigError) -> NvmlReturn {
    match e {
        MigError::NotCapable | MigError::NotEnabled => ERROR_NOT_SUPPORTED,
        MigError::UnknownProfile | MigError::InvalidPlacement => ERROR_INVALID_ARGUMENT,
        MigError::InsufficientResources => ERROR_INSUFFICIENT_RESOURCES,
        MigError::NotFound => ERROR_NOT_FOUND,
        MigError::InUse | MigError::ProcessesRunning => ERROR_IN_USE,
    }
}

/// The NVML code for a simulator error.
pub fn sim_code(e: SimError) -> NvmlReturn {
    match e {
        SimError::Lost(_) => ERROR_GPU_IS_LOST,
        SimError::NoSuchGpu { .. } | SimError::Invalid(_) => ERROR_INVALID_ARGUMENT,
        SimError::Mig { reason, .. } => mig_code(reason),
        SimError::Process { .. } | SimError::NoSuchProcess(_) => ERROR_INVALID_ARGUMENT,
        SimError::NoConfig | SimError::Config(_) | SimError::State(_) => ERROR_UNKNOWN,
    }
}

/// Writes `value` to a caller's out-parameter.
///
/// # Safety
/// `out` is null or valid for writing one `T` (alignment not required).
pub unsafe fn write_out<T>(out: *mut T, value: T) -> Outcome<()> {
    if out.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and the caller guarantees it is writable for a T.
    unsafe { out.write_unaligned(value) };
    Ok(())
}

/// Reads a caller's in-parameter.
///
/// # Safety
/// `input` is null or valid for reading one `T` (alignment not required).
pub unsafe fn read_in<T: Copy>(input: *const T) -> Outcome<T> {
    if input.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and the caller guarantees it is readable for a T.
    Ok(unsafe { input.read_unaligned() })
}

/// Reads the `version` field every versioned NVML struct starts with.
///
/// # Safety
/// `info` is null or valid for reading at least one `u32`.
pub unsafe fn read_version<T>(info: *const T) -> Outcome<u32> {
    // SAFETY: forwarded contract: the struct starts with a readable u32.
    unsafe { read_in(info.cast::<u32>()) }
}

/// Copies `text` into a caller's buffer of `length` bytes, NUL-terminated.
///
/// # Safety
/// `buffer` is null or valid for writing `length` bytes.
pub unsafe fn write_c_string(buffer: *mut c_char, length: c_uint, text: &str) -> Outcome<()> {
    if buffer.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > length as usize {
        return Err(ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: the buffer holds `length` bytes and we write len + 1 <= length.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len());
        buffer.add(bytes.len()).write(0);
    }
    Ok(())
}

/// Reads a caller's NUL-terminated string.
///
/// # Safety
/// `text` is null or points to a NUL-terminated string that outlives `'a`.
pub unsafe fn read_c_string<'a>(text: *const c_char) -> Outcome<&'a str> {
    if text.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str().map_err(|_| ERROR_INVALID_ARGUMENT)
}

/// Writes `values` into a caller's array.
///
/// # Safety
/// `out` is valid for writing `values.len()` elements (checked by the caller
/// against the capacity the client declared).
pub unsafe fn write_array<T: Copy>(out: *mut T, values: &[T]) -> Outcome<()> {
    if out.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    for (i, value) in values.iter().enumerate() {
        // SAFETY: i < values.len(), within the caller's array.
        unsafe { out.add(i).write_unaligned(*value) };
    }
    Ok(())
}

/// What an `nvmlDevice_t` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A physical GPU.
    Gpu(u32),
    /// A MIG device.
    Mig {
        /// GPU index.
        gpu: u32,
        /// GPU-instance id.
        gi: u32,
        /// Compute-instance id.
        ci: u32,
    },
}

/// Resolves a device handle (not yet checked against the current state).
pub fn device_target(device: DeviceHandle) -> Outcome<Target> {
    match handles::resolve(device) {
        Some(HandleKey::Gpu(gpu)) => Ok(Target::Gpu(gpu)),
        Some(HandleKey::MigDevice { gpu, gi, ci }) => Ok(Target::Mig { gpu, gi, ci }),
        _ => Err(ERROR_INVALID_ARGUMENT),
    }
}

/// The handle of a physical GPU.
pub fn gpu_handle(index: u32) -> DeviceHandle {
    handles::handle(HandleKey::Gpu(index))
}

/// The handle of a MIG device.
pub fn mig_handle(gpu: u32, gi: u32, ci: u32) -> DeviceHandle {
    handles::handle(HandleKey::MigDevice { gpu, gi, ci })
}

/// The handle of a GPU instance.
pub fn gi_handle(gpu: u32, gi: u32) -> GpuInstanceHandle {
    handles::handle(HandleKey::GpuInstance { gpu, gi })
}

/// The handle of a compute instance.
pub fn ci_handle(gpu: u32, gi: u32, ci: u32) -> ComputeInstanceHandle {
    handles::handle(HandleKey::ComputeInstance { gpu, gi, ci })
}

/// A MIG device as it exists now.
#[derive(Debug)]
pub struct MigView<'a> {
    /// Its GPU instance.
    pub gi: &'a GiState,
    /// Its compute instance.
    pub ci: &'a CiState,
    /// The GPU instance's profile.
    pub gi_profile: &'a GiProfileSpec,
    /// The compute instance's profile.
    pub ci_profile: CiProfileView,
}

/// A device (physical or MIG) as it exists now.
#[derive(Debug)]
pub struct DeviceView<'a> {
    /// The physical GPU (the parent, for a MIG device).
    pub cfg: &'a GpuConfig,
    /// Its state.
    pub state: &'a GpuState,
    /// Set for MIG devices.
    pub mig: Option<MigView<'a>>,
    /// Whether the caller is privileged (see `Simulator::privileged`).
    pub privileged: bool,
}

impl DeviceView<'_> {
    /// Fails with `NVML_ERROR_NOT_SUPPORTED` for MIG devices, as real MIG
    /// handles do for telemetry (utilisation, temperature, power, clocks).
    pub fn physical_only(&self) -> Outcome<()> {
        if self.mig.is_some() {
            Err(ERROR_NOT_SUPPORTED)
        } else {
            Ok(())
        }
    }
}

fn find_mig<'a>(
    cfg: &'a GpuConfig,
    state: &'a GpuState,
    gi_id: u32,
    ci_id: u32,
) -> Option<MigView<'a>> {
    let spec = cfg.mig()?;
    if !state.mig_current {
        return None;
    }
    let gi = state.gi(gi_id)?;
    let ci = gi.compute_instances.iter().find(|c| c.id == ci_id)?;
    let gi_profile = spec.gi_profile_by_id(gi.profile_id)?;
    let ci_profile = mig::ci_profile_by_id(spec, gi_profile, ci.profile_id)?;
    Some(MigView {
        gi,
        ci,
        gi_profile,
        ci_profile,
    })
}

/// Runs `f` on the device a handle names, with the freshest state. A lost
/// GPU (or a MIG device on one) yields `NVML_ERROR_GPU_IS_LOST`; a MIG device
/// whose instance is gone yields `NVML_ERROR_INVALID_ARGUMENT`.
pub fn with_device<T>(
    device: DeviceHandle,
    f: impl FnOnce(&DeviceView<'_>) -> Outcome<T>,
) -> Outcome<T> {
    with_sim(|sim| {
        let target = device_target(device)?;
        let privileged = sim.privileged();
        let (config, state) = sim.snapshot().map_err(sim_code)?;
        let gpu_index = match target {
            Target::Gpu(gpu) | Target::Mig { gpu, .. } => gpu as usize,
        };
        let cfg = config.gpus.get(gpu_index).ok_or(ERROR_INVALID_ARGUMENT)?;
        let gpu_state = &state.gpus[gpu_index];
        if gpu_state.lost {
            return Err(ERROR_GPU_IS_LOST);
        }
        let mig = match target {
            Target::Gpu(_) => None,
            Target::Mig { gi, ci, .. } => {
                Some(find_mig(cfg, gpu_state, gi, ci).ok_or(ERROR_INVALID_ARGUMENT)?)
            }
        };
        f(&DeviceView {
            cfg,
            state: gpu_state,
            mig,
            privileged,
        })
    })
}

/// Runs `f` on a physical GPU; MIG device handles get `on_mig`.
pub fn with_gpu<T>(
    device: DeviceHandle,
    on_mig: NvmlReturn,
    f: impl FnOnce(&GpuConfig, &GpuState) -> Outcome<T>,
) -> Outcome<T> {
    with_device(device, |view| {
        if view.mig.is_some() {
            return Err(on_mig);
        }
        f(view.cfg, view.state)
    })
}

/// The GPU index of a physical-GPU handle (MIG handles get `on_mig`).
pub fn gpu_index_of(device: DeviceHandle, on_mig: NvmlReturn) -> Outcome<u32> {
    match device_target(device)? {
        Target::Gpu(gpu) => Ok(gpu),
        Target::Mig { .. } => Err(on_mig),
    }
}

/// `(gpu, gi)` named by a GPU-instance handle.
pub fn gi_target(gpu_instance: GpuInstanceHandle) -> Outcome<(u32, u32)> {
    match handles::resolve(gpu_instance) {
        Some(HandleKey::GpuInstance { gpu, gi }) => Ok((gpu, gi)),
        _ => Err(ERROR_INVALID_ARGUMENT),
    }
}

/// `(gpu, gi, ci)` named by a compute-instance handle.
pub fn ci_target(compute_instance: ComputeInstanceHandle) -> Outcome<(u32, u32, u32)> {
    match handles::resolve(compute_instance) {
        Some(HandleKey::ComputeInstance { gpu, gi, ci }) => Ok((gpu, gi, ci)),
        _ => Err(ERROR_INVALID_ARGUMENT),
    }
}

/// A GPU instance as it exists now.
#[derive(Debug)]
pub struct GiView<'a> {
    /// GPU index.
    pub gpu: u32,
    /// The GPU's state.
    pub state: &'a GpuState,
    /// MIG facts.
    pub spec: &'a MigSpec,
    /// The instance.
    pub gi: &'a GiState,
    /// Its profile.
    pub profile: &'a GiProfileSpec,
}

/// Runs `f` on the GPU instance a handle names; a destroyed instance yields
/// `NVML_ERROR_INVALID_ARGUMENT`.
pub fn with_gpu_instance<T>(
    gpu_instance: GpuInstanceHandle,
    f: impl FnOnce(&GiView<'_>) -> Outcome<T>,
) -> Outcome<T> {
    with_sim(|sim| {
        let (gpu, gi_id) = gi_target(gpu_instance)?;
        let (config, state) = sim.snapshot().map_err(sim_code)?;
        let cfg = config
            .gpus
            .get(gpu as usize)
            .ok_or(ERROR_INVALID_ARGUMENT)?;
        let gpu_state = &state.gpus[gpu as usize];
        if gpu_state.lost {
            return Err(ERROR_GPU_IS_LOST);
        }
        let spec = cfg.mig().ok_or(ERROR_INVALID_ARGUMENT)?;
        let gi = gpu_state
            .gi(gi_id)
            .filter(|_| gpu_state.mig_current)
            .ok_or(ERROR_INVALID_ARGUMENT)?;
        let profile = spec
            .gi_profile_by_id(gi.profile_id)
            .ok_or(ERROR_INVALID_ARGUMENT)?;
        f(&GiView {
            gpu,
            state: gpu_state,
            spec,
            gi,
            profile,
        })
    })
}

/// Writes an optional array of handles for `ids` the way NVML's list calls
/// do: `count` receives the number of entries.
///
/// # Safety
/// `out` is valid for writing `ids.len()` handles when non-null; `count` is
/// null or writable.
pub unsafe fn write_handle_list<H: Copy>(
    out: *mut H,
    count: *mut c_uint,
    handles: &[H],
) -> Outcome<()> {
    if count.is_null() || out.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: forwarded contract; NVML sizes these arrays by the profile's
    // instance count, which bounds `handles.len()`.
    unsafe {
        write_array(out, handles)?;
        write_out(count, handles.len() as c_uint)
    }
}

/// Answers a "possible placements" query: with a null array, only the
/// count; otherwise the array must hold `*count` entries.
///
/// # Safety
/// `count` is null or readable and writable; `out` is null or valid for
/// writing `*count` entries.
pub unsafe fn write_placements<P: Copy>(
    out: *mut P,
    count: *mut c_uint,
    placements: &[P],
) -> Outcome<()> {
    // SAFETY: forwarded contract on `count`.
    let capacity = unsafe { read_in(count)? } as usize;
    let needed = placements.len() as c_uint;
    if out.is_null() {
        // SAFETY: forwarded contract on `count`.
        return unsafe { write_out(count, needed) };
    }
    if capacity < placements.len() {
        // SAFETY: forwarded contract on `count`.
        unsafe { write_out(count, needed)? };
        return Err(ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: the caller declared room for `capacity >= len` entries.
    unsafe {
        write_array(out, placements)?;
        write_out(count, needed)
    }
}
