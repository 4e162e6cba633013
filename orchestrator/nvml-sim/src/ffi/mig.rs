//! The MIG part of the C ABI: MIG mode, GPU-instance and compute-instance
//! profiles, placements, capacity, creation, listing, destruction, and MIG
//! device handles. The rules themselves live in [`crate::mig`]; this module
//! translates handles and structs and maps refusals to NVML codes.
//!
//! Profile *indexes* (`NVML_GPU_INSTANCE_PROFILE_1_SLICE` = 0, …) select a
//! profile in the `…ProfileInfo` calls; every other call takes the profile
//! *id* those calls return (19 for 1g.5gb on A100).

use std::ffi::c_uint;

use super::support::*;
use super::types::*;
use crate::config::{
    COMPUTE_INSTANCE_PROFILE_INDEX_COUNT, GPU_INSTANCE_PROFILE_INDEX_COUNT, GiProfileSpec,
};
use crate::mig::{self, CiProfileView, MigError, Placement};
use crate::sim::{Activation, SimError, profile_memory_mib};

// ---- MIG mode -------------------------------------------------------------

/// `nvmlDeviceGetMigMode`: NOT_SUPPORTED on GPUs without MIG.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: DeviceHandle,
    current_mode: *mut c_uint,
    pending_mode: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let (current, pending) = with_gpu(device, ERROR_NOT_SUPPORTED, |cfg, state| {
            cfg.mig().ok_or(ERROR_NOT_SUPPORTED)?;
            Ok((
                c_uint::from(state.mig_current),
                c_uint::from(state.mig_pending),
            ))
        })?;
        // SAFETY: NVML contract on both pointers.
        unsafe {
            write_out(current_mode, current)?;
            write_out(pending_mode, pending)
        }
    })
}

/// `nvmlDeviceSetMigMode`: sets the *pending* mode. The current mode changes
/// when the GPU is reset, so `activationStatus` is `NVML_ERROR_RESET_REQUIRED`
/// for a change and `NVML_SUCCESS` when the mode is already current.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceSetMigMode(
    device: DeviceHandle,
    mode: c_uint,
    activation_status: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let activation = with_sim(|sim| {
            if activation_status.is_null() {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            let enabled = match mode {
                MIG_ENABLE => true,
                MIG_DISABLE => false,
                _ => return Err(ERROR_INVALID_ARGUMENT),
            };
            let gpu = gpu_index_of(device, ERROR_NOT_SUPPORTED)?;
            sim.set_mig_mode(gpu, enabled).map_err(sim_code)
        })?;
        let status = match activation {
            Activation::AlreadyActive => SUCCESS,
            Activation::ResetRequired => ERROR_RESET_REQUIRED,
        };
        // SAFETY: NVML contract on `activation_status` (checked non-null).
        unsafe { write_out(activation_status, status) }
    })
}

// ---- GPU-instance profiles ------------------------------------------------

fn gi_info_v1(p: &GiProfileSpec) -> GpuInstanceProfileInfo {
    GpuInstanceProfileInfo {
        id: p.id,
        is_p2p_supported: c_uint::from(p.p2p),
        slice_count: p.slices,
        instance_count: p.instances,
        multiprocessor_count: p.sm_count,
        copy_engine_count: p.copy_engines,
        decoder_count: p.decoders,
        encoder_count: p.encoders,
        jpeg_count: p.jpeg,
        ofa_count: p.ofa,
        memory_size_mb: profile_memory_mib(p),
    }
}

fn gi_profile_by_index(device: DeviceHandle, index: c_uint) -> Outcome<GiProfileSpec> {
    with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, _| {
        let spec = cfg.mig().ok_or(ERROR_NOT_SUPPORTED)?;
        if index >= GPU_INSTANCE_PROFILE_INDEX_COUNT {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        spec.gi_profile_by_index(index)
            .cloned()
            .ok_or(ERROR_NOT_SUPPORTED)
    })
}

fn gi_profile_by_id(device: DeviceHandle, id: c_uint) -> Outcome<GiProfileSpec> {
    with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, _| {
        let spec = cfg.mig().ok_or(ERROR_NOT_SUPPORTED)?;
        spec.gi_profile_by_id(id)
            .cloned()
            .ok_or(ERROR_INVALID_ARGUMENT)
    })
}

/// Writes a v2 or v3 GPU-instance profile struct, as its version field asks.
///
/// # Safety
/// `info` is null or a readable, writable v2 or v3 struct (both are the same
/// size).
unsafe fn write_gi_info_versioned(
    info: *mut GpuInstanceProfileInfoV2,
    p: &GiProfileSpec,
) -> Outcome<()> {
    // SAFETY: forwarded contract.
    let version = unsafe { read_version(info) }?;
    let v1 = gi_info_v1(p);
    let name = format!("MIG {}", p.name);
    match version {
        GPU_INSTANCE_PROFILE_INFO_V2 => {
            let value = GpuInstanceProfileInfoV2 {
                version,
                id: v1.id,
                is_p2p_supported: v1.is_p2p_supported,
                slice_count: v1.slice_count,
                instance_count: v1.instance_count,
                multiprocessor_count: v1.multiprocessor_count,
                copy_engine_count: v1.copy_engine_count,
                decoder_count: v1.decoder_count,
                encoder_count: v1.encoder_count,
                jpeg_count: v1.jpeg_count,
                ofa_count: v1.ofa_count,
                memory_size_mb: v1.memory_size_mb,
                name: c_array(&name),
            };
            // SAFETY: forwarded contract; the version says it is a v2 struct.
            unsafe { write_out(info, value) }
        }
        GPU_INSTANCE_PROFILE_INFO_V3 => {
            let value = GpuInstanceProfileInfoV3 {
                version,
                id: v1.id,
                slice_count: v1.slice_count,
                instance_count: v1.instance_count,
                multiprocessor_count: v1.multiprocessor_count,
                copy_engine_count: v1.copy_engine_count,
                decoder_count: v1.decoder_count,
                encoder_count: v1.encoder_count,
                jpeg_count: v1.jpeg_count,
                ofa_count: v1.ofa_count,
                memory_size_mb: v1.memory_size_mb,
                name: c_array(&name),
                // No graphics (`+gfx`) profiles are modelled.
                capabilities: 0,
            };
            // SAFETY: forwarded contract; the version says it is a v3 struct.
            unsafe { write_out(info.cast::<GpuInstanceProfileInfoV3>(), value) }
        }
        _ => Err(ERROR_ARGUMENT_VERSION_MISMATCH),
    }
}

/// `nvmlDeviceGetGpuInstanceProfileInfo`: takes a profile *index*; works
/// whether or not MIG mode is enabled.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfo(
    device: DeviceHandle,
    profile: c_uint,
    info: *mut GpuInstanceProfileInfo,
) -> NvmlReturn {
    guard(|| {
        let p = gi_profile_by_index(device, profile)?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_out(info, gi_info_v1(&p)) }
    })
}

/// `nvmlDeviceGetGpuInstanceProfileInfoV`: v2 or v3 struct, with the name;
/// any other version is `NVML_ERROR_ARGUMENT_VERSION_MISMATCH`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoV(
    device: DeviceHandle,
    profile: c_uint,
    info: *mut GpuInstanceProfileInfoV2,
) -> NvmlReturn {
    guard(|| {
        let p = gi_profile_by_index(device, profile)?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_gi_info_versioned(info, &p) }
    })
}

/// `nvmlDeviceGetGpuInstanceProfileInfoByIdV`: like the `V` call, by id.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoByIdV(
    device: DeviceHandle,
    profile_id: c_uint,
    info: *mut GpuInstanceProfileInfoV2,
) -> NvmlReturn {
    guard(|| {
        let p = gi_profile_by_id(device, profile_id)?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_gi_info_versioned(info, &p) }
    })
}

/// `nvmlDeviceGetGpuInstancePossiblePlacements_v2`: every placement of the
/// profile, free or not, whether or not MIG mode is enabled.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    device: DeviceHandle,
    profile_id: c_uint,
    placements: *mut GpuInstancePlacement,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let p = gi_profile_by_id(device, profile_id)?;
        let list: Vec<GpuInstancePlacement> = mig::possible_placements(&p)
            .into_iter()
            .map(|Placement { start, size }| GpuInstancePlacement { start, size })
            .collect();
        // SAFETY: NVML contract on `placements` and `count`.
        unsafe { write_placements(placements, count, &list) }
    })
}

/// `nvmlDeviceGetGpuInstanceRemainingCapacity`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceRemainingCapacity(
    device: DeviceHandle,
    profile_id: c_uint,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let n = with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, state| {
            let spec = mig::require_enabled(cfg.mig(), state).map_err(mig_code)?;
            mig::gpu_instance_remaining_capacity(spec, state, profile_id).map_err(mig_code)
        })?;
        // SAFETY: NVML contract on `count`.
        unsafe { write_out(count, n) }
    })
}

// ---- GPU instances --------------------------------------------------------

/// # Safety
/// `gpu_instance` is null or writable.
unsafe fn create_gi(
    device: DeviceHandle,
    profile_id: c_uint,
    placement: Option<Placement>,
    gpu_instance: *mut GpuInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_sim(|sim| {
            if gpu_instance.is_null() {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            let gpu = gpu_index_of(device, ERROR_INVALID_ARGUMENT)?;
            let id = sim
                .create_gpu_instance(gpu, profile_id, placement, false)
                .map_err(sim_code)?;
            Ok(gi_handle(gpu, id))
        })?;
        // SAFETY: forwarded contract (checked non-null).
        unsafe { write_out(gpu_instance, handle) }
    })
}

/// `nvmlDeviceCreateGpuInstance`: needs MIG mode currently enabled
/// (NOT_SUPPORTED otherwise); INSUFFICIENT_RESOURCES when nothing fits.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstance(
    device: DeviceHandle,
    profile_id: c_uint,
    gpu_instance: *mut GpuInstanceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on `gpu_instance`.
    unsafe { create_gi(device, profile_id, None, gpu_instance) }
}

/// `nvmlDeviceCreateGpuInstanceWithPlacement`: INVALID_ARGUMENT for a
/// placement the profile does not allow, INSUFFICIENT_RESOURCES when it is taken.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstanceWithPlacement(
    device: DeviceHandle,
    profile_id: c_uint,
    placement: *const GpuInstancePlacement,
    gpu_instance: *mut GpuInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        with_sim(|_| Ok(()))?;
        // SAFETY: NVML contract on `placement`.
        let wanted = unsafe { read_in(placement) }?;
        let wanted = Placement {
            start: wanted.start,
            size: wanted.size,
        };
        // SAFETY: NVML contract on `gpu_instance`.
        match unsafe { create_gi(device, profile_id, Some(wanted), gpu_instance) } {
            SUCCESS => Ok(()),
            code => Err(code),
        }
    })
}

/// `nvmlDeviceGetGpuInstances`: the GPU instances of one profile. The array
/// must hold the profile's `instanceCount` handles.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstances(
    device: DeviceHandle,
    profile_id: c_uint,
    gpu_instances: *mut GpuInstanceHandle,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let handles = with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, state| {
            let spec = mig::require_enabled(cfg.mig(), state).map_err(mig_code)?;
            spec.gi_profile_by_id(profile_id)
                .ok_or(ERROR_INVALID_ARGUMENT)?;
            let mut ids: Vec<u32> = state
                .gpu_instances
                .iter()
                .filter(|gi| gi.profile_id == profile_id)
                .map(|gi| gi.id)
                .collect();
            ids.sort_unstable();
            Ok(ids
                .into_iter()
                .map(|id| gi_handle(cfg.index, id))
                .collect::<Vec<_>>())
        })?;
        // SAFETY: NVML contract on both pointers.
        unsafe { write_handle_list(gpu_instances, count, &handles) }
    })
}

/// `nvmlDeviceGetGpuInstanceById`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceById(
    device: DeviceHandle,
    id: c_uint,
    gpu_instance: *mut GpuInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, state| {
            mig::require_enabled(cfg.mig(), state).map_err(mig_code)?;
            state.gi(id).ok_or(ERROR_NOT_FOUND)?;
            Ok(gi_handle(cfg.index, id))
        })?;
        // SAFETY: NVML contract on `gpu_instance`.
        unsafe { write_out(gpu_instance, handle) }
    })
}

/// `nvmlGpuInstanceGetInfo`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetInfo(
    gpu_instance: GpuInstanceHandle,
    info: *mut GpuInstanceInfo,
) -> NvmlReturn {
    guard(|| {
        let value = with_gpu_instance(gpu_instance, |v| {
            Ok(GpuInstanceInfo {
                device: gpu_handle(v.gpu),
                id: v.gi.id,
                profile_id: v.gi.profile_id,
                placement: GpuInstancePlacement {
                    start: v.gi.start,
                    size: v.gi.size,
                },
            })
        })?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_out(info, value) }
    })
}

/// A destroyed instance's handle is invalid, not "not found".
fn stale_is_invalid(e: SimError) -> NvmlReturn {
    match e {
        SimError::Mig {
            reason: MigError::NotFound,
            ..
        } => ERROR_INVALID_ARGUMENT,
        other => sim_code(other),
    }
}

/// `nvmlGpuInstanceDestroy`: IN_USE while the instance has compute instances.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceDestroy(gpu_instance: GpuInstanceHandle) -> NvmlReturn {
    guard(|| {
        with_sim(|sim| {
            let (gpu, gi) = gi_target(gpu_instance)?;
            sim.destroy_gpu_instance(gpu, gi, false)
                .map_err(stale_is_invalid)
        })
    })
}

// ---- compute-instance profiles --------------------------------------------

fn ci_info_v1(view: &CiProfileView, gi: &GiProfileSpec) -> ComputeInstanceProfileInfo {
    ComputeInstanceProfileInfo {
        id: view.id,
        slice_count: view.slices,
        instance_count: view.instances,
        multiprocessor_count: view.sm_count,
        shared_copy_engine_count: gi.copy_engines,
        shared_decoder_count: gi.decoders,
        shared_encoder_count: gi.encoders,
        shared_jpeg_count: gi.jpeg,
        shared_ofa_count: gi.ofa,
    }
}

fn ci_profile_in(
    gpu_instance: GpuInstanceHandle,
    profile: c_uint,
    eng_profile: c_uint,
) -> Outcome<(CiProfileView, GiProfileSpec)> {
    with_gpu_instance(gpu_instance, |v| {
        if eng_profile != CI_ENGINE_PROFILE_SHARED
            || profile >= COMPUTE_INSTANCE_PROFILE_INDEX_COUNT
        {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let view =
            mig::ci_profile_by_index(v.spec, v.profile, profile).ok_or(ERROR_NOT_SUPPORTED)?;
        Ok((view, v.profile.clone()))
    })
}

/// `nvmlGpuInstanceGetComputeInstanceProfileInfo`: takes a compute-instance
/// profile *index* and `NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfo(
    gpu_instance: GpuInstanceHandle,
    profile: c_uint,
    eng_profile: c_uint,
    info: *mut ComputeInstanceProfileInfo,
) -> NvmlReturn {
    guard(|| {
        let (view, gi) = ci_profile_in(gpu_instance, profile, eng_profile)?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_out(info, ci_info_v1(&view, &gi)) }
    })
}

/// `nvmlGpuInstanceGetComputeInstanceProfileInfoV`: v2 or v3 struct, with
/// the name; any other version is `NVML_ERROR_ARGUMENT_VERSION_MISMATCH`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    gpu_instance: GpuInstanceHandle,
    profile: c_uint,
    eng_profile: c_uint,
    info: *mut ComputeInstanceProfileInfoV2,
) -> NvmlReturn {
    guard(|| {
        let (view, gi) = ci_profile_in(gpu_instance, profile, eng_profile)?;
        // SAFETY: NVML contract: `info` is null or a readable, writable struct.
        let version = unsafe { read_version(info) }?;
        let v1 = ci_info_v1(&view, &gi);
        let name = c_array(&format!("MIG {}", view.name));
        match version {
            COMPUTE_INSTANCE_PROFILE_INFO_V2 => {
                let value = ComputeInstanceProfileInfoV2 {
                    version,
                    id: v1.id,
                    slice_count: v1.slice_count,
                    instance_count: v1.instance_count,
                    multiprocessor_count: v1.multiprocessor_count,
                    shared_copy_engine_count: v1.shared_copy_engine_count,
                    shared_decoder_count: v1.shared_decoder_count,
                    shared_encoder_count: v1.shared_encoder_count,
                    shared_jpeg_count: v1.shared_jpeg_count,
                    shared_ofa_count: v1.shared_ofa_count,
                    name,
                };
                // SAFETY: as above; the version says it is a v2 struct.
                unsafe { write_out(info, value) }
            }
            COMPUTE_INSTANCE_PROFILE_INFO_V3 => {
                let value = ComputeInstanceProfileInfoV3 {
                    version,
                    id: v1.id,
                    slice_count: v1.slice_count,
                    instance_count: v1.instance_count,
                    multiprocessor_count: v1.multiprocessor_count,
                    shared_copy_engine_count: v1.shared_copy_engine_count,
                    shared_decoder_count: v1.shared_decoder_count,
                    shared_encoder_count: v1.shared_encoder_count,
                    shared_jpeg_count: v1.shared_jpeg_count,
                    shared_ofa_count: v1.shared_ofa_count,
                    name,
                    capabilities: 0,
                };
                // SAFETY: as above; the version says it is a v3 struct.
                unsafe { write_out(info.cast::<ComputeInstanceProfileInfoV3>(), value) }
            }
            _ => Err(ERROR_ARGUMENT_VERSION_MISMATCH),
        }
    })
}

/// `nvmlGpuInstanceGetComputeInstanceRemainingCapacity`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let n = with_gpu_instance(gpu_instance, |v| {
            mig::compute_instance_remaining_capacity(v.spec, v.state, v.gi.id, profile_id)
                .map_err(mig_code)
        })?;
        // SAFETY: NVML contract on `count`.
        unsafe { write_out(count, n) }
    })
}

/// `nvmlGpuInstanceGetComputeInstancePossiblePlacements`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstancePossiblePlacements(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    placements: *mut ComputeInstancePlacement,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let list = with_gpu_instance(gpu_instance, |v| {
            let view = mig::ci_profile_by_id(v.spec, v.profile, profile_id)
                .ok_or(ERROR_INVALID_ARGUMENT)?;
            Ok(mig::ci_possible_placements(v.profile.slices, view.slices)
                .into_iter()
                .map(|Placement { start, size }| ComputeInstancePlacement { start, size })
                .collect::<Vec<_>>())
        })?;
        // SAFETY: NVML contract on `placements` and `count`.
        unsafe { write_placements(placements, count, &list) }
    })
}

// ---- compute instances ----------------------------------------------------

/// # Safety
/// `compute_instance` is null or writable.
unsafe fn create_ci(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    placement: Option<Placement>,
    compute_instance: *mut ComputeInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_sim(|sim| {
            if compute_instance.is_null() {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            let (gpu, gi) = gi_target(gpu_instance)?;
            let ci = sim
                .update_gpu(gpu, |cfg, state| {
                    let mig_err = |reason| SimError::Mig { gpu, reason };
                    let spec = mig::require_enabled(cfg.mig(), state).map_err(mig_err)?;
                    if state.gi(gi).is_none() {
                        return Err(SimError::Invalid("stale GPU-instance handle".into()));
                    }
                    mig::create_compute_instance(spec, state, gi, profile_id, placement)
                        .map_err(mig_err)
                })
                .map_err(sim_code)?;
            Ok(ci_handle(gpu, gi, ci))
        })?;
        // SAFETY: forwarded contract (checked non-null).
        unsafe { write_out(compute_instance, handle) }
    })
}

/// `nvmlGpuInstanceCreateComputeInstance`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstance(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    compute_instance: *mut ComputeInstanceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on `compute_instance`.
    unsafe { create_ci(gpu_instance, profile_id, None, compute_instance) }
}

/// `nvmlGpuInstanceCreateComputeInstanceWithPlacement`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    placement: *const ComputeInstancePlacement,
    compute_instance: *mut ComputeInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        with_sim(|_| Ok(()))?;
        // SAFETY: NVML contract on `placement`.
        let wanted = unsafe { read_in(placement) }?;
        let wanted = Placement {
            start: wanted.start,
            size: wanted.size,
        };
        // SAFETY: NVML contract on `compute_instance`.
        match unsafe { create_ci(gpu_instance, profile_id, Some(wanted), compute_instance) } {
            SUCCESS => Ok(()),
            code => Err(code),
        }
    })
}

/// `nvmlGpuInstanceGetComputeInstances`: the compute instances of one
/// profile in a GPU instance.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstances(
    gpu_instance: GpuInstanceHandle,
    profile_id: c_uint,
    compute_instances: *mut ComputeInstanceHandle,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let handles = with_gpu_instance(gpu_instance, |v| {
            mig::ci_profile_by_id(v.spec, v.profile, profile_id).ok_or(ERROR_INVALID_ARGUMENT)?;
            let mut ids: Vec<u32> =
                v.gi.compute_instances
                    .iter()
                    .filter(|ci| ci.profile_id == profile_id)
                    .map(|ci| ci.id)
                    .collect();
            ids.sort_unstable();
            Ok(ids
                .into_iter()
                .map(|id| ci_handle(v.gpu, v.gi.id, id))
                .collect::<Vec<_>>())
        })?;
        // SAFETY: NVML contract on both pointers.
        unsafe { write_handle_list(compute_instances, count, &handles) }
    })
}

/// `nvmlGpuInstanceGetComputeInstanceById`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceById(
    gpu_instance: GpuInstanceHandle,
    id: c_uint,
    compute_instance: *mut ComputeInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_gpu_instance(gpu_instance, |v| {
            v.gi.compute_instances
                .iter()
                .find(|ci| ci.id == id)
                .ok_or(ERROR_NOT_FOUND)?;
            Ok(ci_handle(v.gpu, v.gi.id, id))
        })?;
        // SAFETY: NVML contract on `compute_instance`.
        unsafe { write_out(compute_instance, handle) }
    })
}

fn ci_info(compute_instance: ComputeInstanceHandle) -> Outcome<ComputeInstanceInfo> {
    with_sim(|_| Ok(()))?;
    let (gpu, gi, ci) = ci_target(compute_instance)?;
    with_gpu_instance(gi_handle(gpu, gi), |v| {
        let c =
            v.gi.compute_instances
                .iter()
                .find(|c| c.id == ci)
                .ok_or(ERROR_INVALID_ARGUMENT)?;
        Ok(ComputeInstanceInfo {
            device: gpu_handle(gpu),
            gpu_instance: gi_handle(gpu, gi),
            id: c.id,
            profile_id: c.profile_id,
            placement: ComputeInstancePlacement {
                start: c.start,
                size: c.size,
            },
        })
    })
}

/// `nvmlComputeInstanceGetInfo_v2`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo_v2(
    compute_instance: ComputeInstanceHandle,
    info: *mut ComputeInstanceInfo,
) -> NvmlReturn {
    guard(|| {
        let value = ci_info(compute_instance)?;
        // SAFETY: NVML contract on `info`.
        unsafe { write_out(info, value) }
    })
}

/// `nvmlComputeInstanceGetInfo`: the first struct, without the placement.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo(
    compute_instance: ComputeInstanceHandle,
    info: *mut ComputeInstanceInfoV1,
) -> NvmlReturn {
    guard(|| {
        let v2 = ci_info(compute_instance)?;
        let value = ComputeInstanceInfoV1 {
            device: v2.device,
            gpu_instance: v2.gpu_instance,
            id: v2.id,
            profile_id: v2.profile_id,
        };
        // SAFETY: NVML contract on `info`.
        unsafe { write_out(info, value) }
    })
}

/// `nvmlComputeInstanceDestroy`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceDestroy(
    compute_instance: ComputeInstanceHandle,
) -> NvmlReturn {
    guard(|| {
        with_sim(|sim| {
            let (gpu, gi, ci) = ci_target(compute_instance)?;
            sim.destroy_compute_instance(gpu, gi, ci)
                .map_err(stale_is_invalid)
        })
    })
}

// ---- MIG devices ----------------------------------------------------------

/// `nvmlDeviceGetMaxMigDeviceCount`: the compute-slice count while MIG mode
/// is enabled, zero otherwise (and on GPUs without MIG).
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: DeviceHandle,
    count: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let n = with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, state| {
            Ok(match cfg.mig() {
                Some(spec) if state.mig_current => spec.compute_slices,
                _ => 0,
            })
        })?;
        // SAFETY: NVML contract on `count`.
        unsafe { write_out(count, n) }
    })
}

/// `nvmlDeviceGetMigDeviceHandleByIndex`: MIG devices in GPU-instance id,
/// then compute-instance id order; NOT_FOUND past the last one.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: DeviceHandle,
    index: c_uint,
    mig_device: *mut DeviceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_gpu(device, ERROR_INVALID_ARGUMENT, |cfg, state| {
            let spec = mig::require_enabled(cfg.mig(), state).map_err(mig_code)?;
            if index >= spec.compute_slices {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            let (gi, ci) = *mig::mig_devices(state)
                .get(index as usize)
                .ok_or(ERROR_NOT_FOUND)?;
            Ok(mig_handle(cfg.index, gi, ci))
        })?;
        // SAFETY: NVML contract on `mig_device`.
        unsafe { write_out(mig_device, handle) }
    })
}

/// `nvmlDeviceIsMigDeviceHandle`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: DeviceHandle,
    is_mig_device: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let target = with_sim(|_| device_target(device))?;
        let value = c_uint::from(matches!(target, Target::Mig { .. }));
        // SAFETY: NVML contract on `is_mig_device`.
        unsafe { write_out(is_mig_device, value) }
    })
}

/// `nvmlDeviceGetDeviceHandleFromMigDeviceHandle`.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    mig_device: DeviceHandle,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    guard(|| {
        let handle = with_device(mig_device, |d| {
            d.mig.as_ref().ok_or(ERROR_INVALID_ARGUMENT)?;
            Ok(gpu_handle(d.cfg.index))
        })?;
        // SAFETY: NVML contract on `device`.
        unsafe { write_out(device, handle) }
    })
}

/// `nvmlDeviceGetGpuInstanceId`: NOT_SUPPORTED for physical GPUs.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(
    device: DeviceHandle,
    id: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let value = with_device(device, |d| {
            Ok(d.mig.as_ref().ok_or(ERROR_NOT_SUPPORTED)?.gi.id)
        })?;
        // SAFETY: NVML contract on `id`.
        unsafe { write_out(id, value) }
    })
}

/// `nvmlDeviceGetComputeInstanceId`: NOT_SUPPORTED for physical GPUs.
///
/// # Safety
/// See the module contract of [`super`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(
    device: DeviceHandle,
    id: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let value = with_device(device, |d| {
            Ok(d.mig.as_ref().ok_or(ERROR_NOT_SUPPORTED)?.ci.id)
        })?;
        // SAFETY: NVML contract on `id`.
        unsafe { write_out(id, value) }
    })
}
